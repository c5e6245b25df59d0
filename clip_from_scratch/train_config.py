"""Every setting of a pre-training run, and the presets sized for the hardware learners have.

    >>> TrainConfig().data, TrainConfig().steps              # the offline default: shapes, 2 min on a CPU
    ('shapes', 2000)
    >>> config = TrainConfig.for_data("coco", preset="cpu")   # COCO, a few minutes on a laptop
    >>> config.image_resolution, config.num_images
    (32, 10000)

Presets (``PRESETS``) only change defaults: any setting can still be given
on top (``TrainConfig.for_data("coco", "gpu", steps=500)``). Why the COCO
presets look the way they do: 118k images is *small* data for CLIP, and
small data favours small models, few image tokens and strong augmentation
(REFERENCE.md: below tens of millions of pairs, open_clip's ResNets beat its
ViTs, and a COCO-only RN50 reaches 2.6% on CIFAR-100). CIFAR's images are
32 px, so a model trained at 32-64 px sees test images close to its
training resolution.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields

from .errors import ConfigError
from .model import CLIPConfig

#: Changes from the defaults per COCO preset. Times: see the README (measured where we could).
PRESETS: dict[str, dict] = {
    # A laptop CPU, a few minutes: 10k images at 32 px in a 4 x 4 grid of patches.
    "cpu": dict(num_images=10_000, eval_images=1_000, image_resolution=32, vision_patch_size=8,
                vision_width=96, vision_layers=3, vision_heads=2,
                transformer_width=96, transformer_layers=3, transformer_heads=2, embed_dim=96,
                context_length=32, bpe_merges=2_000, steps=1_000, batch_size=128, lr=1e-3, warmup_steps=100,
                crop_scale=0.8, eval_every=0, log_every=25),
    # A free Colab T4 (16 GB, fp16), under an hour: all of train2017 at 64 px.
    "t4": dict(num_images=None, eval_images=5_000, image_resolution=64, vision_patch_size=8,
               vision_width=256, vision_layers=6, vision_heads=4,
               transformer_width=256, transformer_layers=6, transformer_heads=4, embed_dim=256,
               context_length=40, bpe_merges=8_000, steps=9_000, batch_size=256, lr=5e-4, warmup_steps=500,
               crop_scale=0.6, eval_every=3_000, log_every=50),
    # One H100-class GPU, about 10 minutes: bigger batch, bigger model, ~35 epochs.
    "gpu": dict(num_images=None, eval_images=5_000, image_resolution=64, vision_patch_size=8,
                vision_width=384, vision_layers=6, vision_heads=6,
                transformer_width=384, transformer_layers=6, transformer_heads=6, embed_dim=384,
                context_length=40, bpe_merges=8_000, steps=4_000, batch_size=1024, lr=1e-3, warmup_steps=400,
                crop_scale=0.6, eval_every=1_000, log_every=50),
}

#: What ``max_shapes=2`` changes (chapter 09's recipe): two shapes need 32 px to stay legible (each
#: 8-13 px across; at 16 px a small triangle and a small diamond are the same blob), and 8 px patches
#: keep the 4 x 4 grid of image tokens, so a step costs what a one-shape step costs.
TWO_OBJECTS = dict(image_resolution=32, vision_patch_size=8)

#: A run in fast mode (``CLIP_FAST=1``): the same code paths, a fraction of the work.
FAST_COCO = dict(num_images=256, eval_images=64, steps=20, batch_size=32, warmup_steps=2, bpe_merges=200,
                 log_every=5)


@dataclass
class TrainConfig:
    """Every setting of a run. The defaults train the shapes CLIP on a 2-core laptop CPU in about 2 minutes."""
    out_dir: str = "runs/shapes"      # checkpoint.pt, metrics.json, loss_curve.png go here
    data: str = "shapes"              # shapes (offline, drawn on the fly) | coco (train2017, downloaded once)
    num_images: int | None = 40_000   # training images (COCO: the first N of train2017; None: all)
    image_resolution: int = 16        # shapes need no more; COCO images are cached at this size
    crop_scale: float = 1.0           # random resized crop keeps this much of the area at least (1: no crop)
    # shapes only
    max_shapes: int = 1               # >1: scenes with several shapes ("a red circle and a blue square.")
    spread: float = 0.25              # how far from the centre shapes may sit (0 centred .. 1 anywhere)
    partial_captions: float = 0.3     # captions naming only the colour or only the shape ("a circle.")
    heldout: str = "pairs"            # captions: held-out pairs drawn but never named as a pair; pairs: never drawn
    shape_only: float = 0.5           # scenes shown as a shape in an unnamed colour, captioned "a circle."
    colour_only: float = 0.25         # scenes blurred past recognition, captioned "a red shape."
    zeroshot_images: int = 600        # held-out colour x shape pairs for the zero-shot score
    hard_negatives: bool = False      # NegCLIP: a false caption per caption joins the text side (needs 2 shapes)
    negative_kinds: str = "attribute_swap,relation_swap,word_order"   # perturbations the false captions use
    # COCO only
    eval_images: int | None = 5_000   # val2017 images for retrieval (None: all 5,000)
    cifar: bool = True                # also CIFAR-10/100 zero-shot at the end, when CIFAR is on disk
    bpe_merges: int = 100             # the run's own tokenizer: 512 bytes + merges + 2 specials
    # model: CLIPConfig's names (model.py), one meaning each
    image_encoder: str = "vit"        # vit (a Vision Transformer) | resnet (CLIP's modified ResNet)
    vision_patch_size: int = 4        # ViT: 16 px / 4 = a 4 x 4 grid, 16 image tokens (a ResNet has none)
    vision_width: int = 64            # ViT: its width; ResNet: the stem's (the attention pool is 32x wider)
    vision_layers: int = 2            # ViT: its depth; ResNet: bottleneck blocks in each of its four stages
    vision_heads: int = 2             # ViT only (a ResNet's attention pool has width * 32 // 64)
    transformer_width: int = 64       # the text transformer
    transformer_layers: int = 2
    transformer_heads: int = 2
    embed_dim: int = 64               # the shared space both towers project into
    context_length: int = 32          # longer captions are cut (their end-of-text token kept)
    # optimisation
    steps: int = 2_000
    batch_size: int = 128             # global batch (split across processes under torchrun)
    lr: float = 2e-3
    warmup_steps: int = 100           # capped at a tenth of the steps, so short runs still get a schedule
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.98
    eps: float = 1e-6
    grad_clip: float = 1.0
    amp: str = "auto"                 # auto | bf16 | fp16 | off  (auto: bf16/fp16 on GPU, off on CPU)
    compile: bool = False             # torch.compile the model (GPU; worth it for long runs)
    # bookkeeping
    seed: int = 0
    device: str = "auto"              # auto | cpu | cuda | cuda:1 | mps
    eval_every: int = 250             # evaluate every N steps (0: only at the end)
    checkpoint_every: int = 250       # and a checkpoint every N steps (and at the end, and on Ctrl-C)
    log_every: int = 10               # read the loss from the device every N steps (each read waits for it)
    progress: bool = True             # tqdm progress bar
    stop_after: int | None = None     # stop (and save) after this step, as if interrupted; None: run to the end

    # Settings that define the run: a resumed run must agree on all of these.
    RUN_DEFINING = ("data", "num_images", "image_resolution", "crop_scale", "max_shapes", "spread",
                    "partial_captions", "heldout", "shape_only", "colour_only", "zeroshot_images", "hard_negatives",
                    "negative_kinds",
                    "eval_images", "bpe_merges", "image_encoder", "vision_patch_size", "vision_width",
                    "vision_layers", "vision_heads", "transformer_width", "transformer_layers", "transformer_heads",
                    "embed_dim",
                    "context_length", "steps", "batch_size", "lr", "warmup_steps", "weight_decay", "beta1",
                    "beta2", "eps", "grad_clip", "seed")

    def __post_init__(self):
        self._check_scenes()
        problems = []
        if self.data not in ("shapes", "coco"):
            problems.append(f"data must be 'shapes' or 'coco' (got {self.data!r})")
        if self.steps < 1:
            problems.append(f"steps must be at least 1 (got {self.steps})")
        if self.batch_size < 2:
            problems.append(f"batch_size must be at least 2 (got {self.batch_size}): a contrastive loss "
                            "needs other pairs in the batch to contrast against")
        if self.num_images is not None and self.num_images < self.batch_size:
            problems.append(f"num_images ({self.num_images}) must be at least batch_size ({self.batch_size})")
        if self.num_images is None and self.data == "shapes":
            problems.append("num_images must be a number for shapes (they are drawn, not downloaded)")
        if not self.lr > 0:
            problems.append(f"lr must be positive (got {self.lr})")
        if self.image_encoder not in ("vit", "resnet"):
            problems.append(f"image_encoder must be 'vit' or 'resnet' (got {self.image_encoder!r})")
        elif self.image_encoder == "resnet" and self.image_resolution % 32:
            problems.append(f"image_resolution ({self.image_resolution}) must be a multiple of 32 for a ResNet "
                            f"image encoder, which halves the image five times (try --resolution 32)")
        elif self.image_encoder == "vit" and self.image_resolution % self.vision_patch_size:
            problems.append(f"image_resolution ({self.image_resolution}) must be a multiple of "
                            f"vision_patch_size ({self.vision_patch_size})")
        elif self.image_encoder == "resnet" and self.vision_width % 2:
            problems.append(f"a ResNet's vision_width (its stem) must be even (got {self.vision_width})")
        for tower, heads in (("vision", self.vision_heads), ("transformer", self.transformer_heads)):
            width = getattr(self, f"{tower}_width")
            if (tower == "transformer" or self.image_encoder == "vit") and (heads < 1 or width % heads):
                problems.append(f"{tower}_width ({width}) must be divisible by {tower}_heads ({heads})")
        if self.heldout not in ("pairs", "captions"):
            problems.append(f"heldout must be 'pairs' or 'captions' (got {self.heldout!r})")
        if not (0 <= self.shape_only and 0 <= self.colour_only and self.shape_only + self.colour_only <= 1):
            problems.append(f"shape_only and colour_only are fractions of the training scenes: each at least 0, "
                            f"together at most 1 (got {self.shape_only} and {self.colour_only})")
        if not 0.05 <= self.crop_scale <= 1:
            problems.append(f"crop_scale is the smallest fraction of the image a crop keeps: between 0.05 "
                            f"and 1 (got {self.crop_scale})")
        if self.amp not in ("auto", "bf16", "fp16", "off"):
            problems.append(f"amp must be one of auto, bf16, fp16, off (got {self.amp!r})")
        for name in ("eval_every", "checkpoint_every", "weight_decay", "grad_clip", "bpe_merges", "warmup_steps",
                     "seed"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must not be negative (got {getattr(self, name)})")
        if self.log_every < 1:
            problems.append(f"log_every must be at least 1 (got {self.log_every})")
        if self.stop_after is not None and self.stop_after < 1:
            problems.append(f"stop_after must be at least 1 (got {self.stop_after})")
        if self.zeroshot_images < 1:
            problems.append(f"zeroshot_images must be at least 1 (got {self.zeroshot_images})")
        if self.eval_images is not None and self.eval_images < 2:
            problems.append(f"eval_images must be at least 2 (got {self.eval_images})")
        if problems:
            raise ConfigError("impossible training settings:\n  " + "\n  ".join(problems))

    def _check_scenes(self) -> None:
        """The two-object settings, each refused in one line that says what would work."""
        if self.hard_negatives and self.data != "shapes":
            raise ConfigError(f"--hard-negatives needs scenes to perturb (which shape has which colour, where): "
                              f"the shapes world has them, {self.data} captions do not; use --data shapes "
                              f"--max-shapes 2")
        if not 1 <= self.max_shapes <= 2:
            raise ConfigError(f"--max-shapes must be 1 or 2 (got {self.max_shapes}): a scene holds one shape, or "
                              f"two, one per half of the picture, as large as they can be and still be told apart")
        kinds = self.negative_kinds.split(",")
        known = ("attribute_swap", "relation_swap", "word_order")
        if not kinds or any(k not in known for k in kinds):
            raise ConfigError(f"negative_kinds must be a comma-separated list of {', '.join(known)} "
                              f"(got {self.negative_kinds!r})")

    def model_config(self, vocab_size: int) -> CLIPConfig:
        """The architecture this run trains (``vocab_size``: its own tokenizer's).

        >>> TrainConfig().model_config(vocab_size=614).vision_patch_size
        4
        >>> TrainConfig(image_encoder="resnet", image_resolution=32, vision_width=16,
        ...             vision_layers=1).model_config(614).vision_layers     # blocks in each of 4 stages
        (1, 1, 1, 1)
        """
        resnet = self.image_encoder == "resnet"
        return CLIPConfig(embed_dim=self.embed_dim, image_resolution=self.image_resolution,
                          vision_layers=(self.vision_layers,) * 4 if resnet else self.vision_layers,
                          vision_width=self.vision_width,
                          vision_patch_size=None if resnet else self.vision_patch_size,
                          context_length=self.context_length, vocab_size=vocab_size,
                          transformer_width=self.transformer_width, transformer_heads=self.transformer_heads,
                          transformer_layers=self.transformer_layers,
                          vision_heads=None if resnet else self.vision_heads)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict, **changes) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{**{k: v for k, v in d.items() if k in known}, **changes})

    @classmethod
    def for_data(cls, data: str = "shapes", preset: str | None = None, fast: bool = False,
                 **changes) -> "TrainConfig":
        """The defaults for ``data`` (and, for COCO, a hardware ``preset``), then ``changes`` on top.

        ``preset=None`` for COCO picks ``"cpu"``; ``fast=True`` shrinks a COCO
        run to a smoke test (what ``CLIP_FAST=1`` notebooks use).
        """
        if data == "shapes":
            if preset not in (None, "shapes"):
                raise ConfigError(f"--preset {preset} is for --data coco; shapes runs have their own defaults")
            two_objects = TWO_OBJECTS if changes.get("max_shapes", 1) == 2 else {}
            return cls(**{**two_objects, **changes})
        if data != "coco":
            raise ConfigError(f"data must be 'shapes' or 'coco' (got {data!r})")
        preset = preset or "cpu"
        if preset not in PRESETS:
            raise ConfigError(f"unknown preset {preset!r}: choose one of {', '.join(PRESETS)}")
        settings = dict(data="coco", out_dir="runs/coco", **PRESETS[preset])
        if fast:
            settings.update(FAST_COCO)
        return cls(**{**settings, **changes})


def available_memory_bytes() -> int | None:
    """Free physical memory where the OS tells it cheaply (Linux, macOS); None elsewhere."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None

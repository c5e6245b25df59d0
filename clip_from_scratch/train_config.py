"""Every setting of a pre-training run, and the presets sized for the hardware learners have.

    >>> TrainConfig().data, TrainConfig().steps              # the offline default: shapes, 2 min on a CPU
    ('shapes', 2000)
    >>> config = TrainConfig.for_data("coco", preset="cpu")   # COCO, a few minutes on a laptop
    >>> config.image_resolution, config.num_images
    (32, 10000)

Presets (``COCO_PRESETS``) only change defaults: any setting can still be given
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
from dataclasses import asdict, dataclass, field, fields

from .errors import ConfigError
from .model import CLIPConfig
from .objectives import OBJECTIVES

#: Changes from the defaults per COCO preset. Times: see the README (measured where we could).
COCO_PRESETS: dict[str, dict] = {
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
#: keep the 4 x 4 grid of image tokens, so a step costs what a one-shape step costs. Binding is learnt
#: late: with hard negatives, relations were near chance at 3,000 steps and at 98% at 5,000 (README).
TWO_OBJECTS = dict(image_resolution=32, vision_patch_size=8, steps=5_000)

#: A run in fast mode (``CLIP_FAST=1``): the same code paths, a fraction of the work.
FAST_SHAPES = dict(num_images=2048, steps=300, batch_size=64, warmup_steps=30, zeroshot_images=120, eval_every=100,
                   checkpoint_every=100)
FAST_COCO = dict(num_images=256, eval_images=64, steps=20, batch_size=32, warmup_steps=2, bpe_merges=200,
                 log_every=5)


def setting(default, help: str, *, flag: str | None = None, may_change_on_resume: bool = False,
            choices: tuple | None = None, type=None):
    """A TrainConfig field and everything said about it, once: its default, its ``--help`` text, its
    command-line flag (default: ``--`` + the name with dashes), and whether a resumed run may change it.

    >>> setting(10, "evaluate every N steps", may_change_on_resume=True).metadata["flag"] is None
    True
    """
    return field(default=default, metadata=dict(help=help, flag=flag, may_change_on_resume=may_change_on_resume,
                                                choices=choices, type=type))


@dataclass
class TrainConfig:
    """Every setting of a run. The defaults train the shapes CLIP on a 2-core laptop CPU in about 2 minutes.

    Each field carries its own help text and flag (:func:`setting`): the
    ``pretrain`` command's options are generated from them (``cli.py``), and
    a resumed run must agree on every field not marked ``may_change_on_resume``.
    A new setting is one field here, nothing else.
    """
    out_dir: str = setting("runs/shapes", "folder for checkpoint.pt, metrics.json and loss_curve.png "
                           "(default: runs/shapes or runs/coco)", flag="--out", may_change_on_resume=True)
    data: str = setting("shapes", "shapes (offline stand-in for COCO; the default) or coco (train2017 captions)",
                        choices=("shapes", "coco"))
    num_images: int | None = setting(40_000, "training images (shapes: drawn; COCO: the first N of train2017; "
                                     "all of it when not given for the t4/gpu presets)", type=int)
    image_resolution: int = setting(16, "image size in pixels (COCO images are cached at this size)",
                                    flag="--resolution")
    crop_scale: float = setting(1.0, "random resized crop: smallest fraction of the area kept (1: no crop)")
    # shapes only
    max_shapes: int = setting(1, "shapes: 1, or 2 for scenes of one or two shapes whose captions bind colours to "
                              "shapes and name relations ('a red circle to the left of a blue square.'); 2 also "
                              "picks 32 px images and 5,000 steps unless given (chapter 09)")
    spread: float = setting(0.25, "shapes: how far from the centre shapes may sit (0 centred .. 1 anywhere)")
    partial_captions: float = setting(0.3, "shapes: fraction of captions naming only the colour or only the "
                                      "shape ('a circle.')")
    heldout: str = setting("pairs", "shapes: how the zero-shot colour x shape pairs are kept out of training: "
                           "'pairs' = their images never appear (strict), 'captions' = their images appear but "
                           "no caption names both attributes together", choices=("pairs", "captions"))
    shape_only: float = setting(0.5, "shapes: fraction of scenes shown as a shape in an unnamed colour, "
                                "captioned with the shape alone ('a circle.')")
    colour_only: float = setting(0.25, "shapes: fraction of scenes blurred past recognition, captioned with the "
                                 "colour alone ('a red shape.')")
    zeroshot_images: int = setting(600, "shapes: held-out colour x shape images for the zero-shot score")
    hard_negatives: bool = setting(False, "shapes: NegCLIP's fix for bag-of-words behaviour: each caption's false "
                                   "twin (its colours or its two objects swapped) joins the batch as a negative "
                                   "(chapter 09)")
    negative_kinds: str = setting("attribute_swap,relation_swap",
                                  "shapes: the perturbations --hard-negatives draws from, comma-separated: "
                                  "attribute_swap, relation_swap, word_order (shuffles are spotted without the "
                                  "picture, so they teach grammar, not binding: off by default)")
    # COCO only
    eval_images: int | None = setting(5_000, "COCO: val2017 images for retrieval (all 5,000 when not given)",
                                      type=int)
    data_root: str | None = setting(None, "where COCO and CIFAR live (default: $CLIP_DATA or data/)", type=str,
                                    may_change_on_resume=True)
    cifar: bool = setting(True, "COCO: skip the CIFAR-10/100 zero-shot evaluation at the end", flag="--no-cifar",
                          may_change_on_resume=True)
    bpe_merges: int = setting(100, "merges of the run's own byte-level BPE tokenizer (512 bytes + merges + 2 "
                              "specials)")
    # model: CLIPConfig's names (model.py), one meaning each
    image_encoder: str = setting("vit", "vit (a Vision Transformer) or resnet (CLIP's modified ResNet; needs a "
                                 "resolution that is a multiple of 32)", choices=("vit", "resnet"))
    vision_patch_size: int = setting(4, "ViT patch size in pixels (16 px / 4 = a 4 x 4 grid, 16 image tokens)")
    vision_width: int = setting(64, "ViT width; for a ResNet, its stem's (the attention pool is 32x wider)")
    vision_layers: int = setting(2, "ViT depth; for a ResNet, bottleneck blocks in each of its 4 stages")
    vision_heads: int = setting(2, "ViT attention heads (a ResNet's attention pool has width * 32 // 64)")
    transformer_width: int = setting(64, "width of the text transformer")
    transformer_layers: int = setting(2, "layers of the text transformer")
    transformer_heads: int = setting(2, "attention heads of the text transformer")
    embed_dim: int = setting(64, "width of the shared embedding space both towers project into")
    context_length: int = setting(32, "caption tokens (longer captions are cut, their end-of-text token kept)")
    # what the image encoder learns from (chapter 08; objectives.py)
    objective: str = setting("contrastive", "what the image encoder learns from: contrastive (CLIP: which caption "
                             "in the batch is this image's), bow (predict the caption's bag of words) or captioning "
                             "(predict the caption token by token); bow and captioning: shapes only",
                             choices=OBJECTIVES)
    # optimisation
    steps: int = setting(2_000, "optimisation steps (the learning-rate schedule spans them)")
    batch_size: int = setting(128, "image-caption pairs per step, at least 2 (under torchrun, the global batch, "
                              "split evenly across processes)")
    lr: float = setting(2e-3, "peak learning rate")
    warmup_steps: int = setting(100, "linear warm-up steps before the cosine decay (at most a tenth of the steps)")
    weight_decay: float = setting(0.1, "AdamW weight decay (none on gains, biases, embeddings, logit scale)")
    beta1: float = setting(0.9, "AdamW beta1 (momentum of the gradient's running mean)")
    beta2: float = setting(0.98, "AdamW beta2 (CLIP's 0.98, not the usual 0.999: steadier with large batches)")
    eps: float = setting(1e-6, "AdamW epsilon")
    grad_clip: float = setting(1.0, "clip the gradients' global norm at this (0: no clipping)")
    amp: str = setting("auto", "mixed precision: auto = bf16 (or fp16 with loss scaling) on a GPU, off on the CPU",
                       choices=("auto", "bf16", "fp16", "off"), may_change_on_resume=True)
    compile: bool = setting(False, "torch.compile the model (GPU; worth it for long runs)",
                            may_change_on_resume=True)
    # bookkeeping
    seed: int = setting(0, "seed for the data, the model's initial weights and the data order")
    device: str = setting("auto", "auto (cuda, then mps, then cpu), cpu, cuda, cuda:1, mps",
                          may_change_on_resume=True)
    eval_every: int = setting(250, "evaluate every N steps (0: only at the end)", may_change_on_resume=True)
    checkpoint_every: int = setting(250, "save a checkpoint every N steps, also at the end and on Ctrl-C",
                                    may_change_on_resume=True)
    log_every: int = setting(10, "read the loss from the device every N steps (each read waits for it)",
                             may_change_on_resume=True)
    progress: bool = setting(True, "no progress bar (for logs)", flag="--no-progress", may_change_on_resume=True)
    stop_after: int | None = setting(None, "stop (and save) after this step, as if interrupted", type=int,
                                     may_change_on_resume=True)

    @classmethod
    def run_defining(cls) -> list[str]:
        """The settings a resumed run must keep: every field not marked ``may_change_on_resume``.

        >>> "lr" in TrainConfig.run_defining(), "device" in TrainConfig.run_defining()
        (True, False)
        """
        return [f.name for f in fields(cls) if not f.metadata.get("may_change_on_resume")]

    def __post_init__(self):
        self._check_scenes()
        problems = [f"{f.name} must be one of {', '.join(f.metadata['choices'])} (got {getattr(self, f.name)!r})"
                    for f in fields(self) if f.metadata.get("choices")
                    and getattr(self, f.name) not in f.metadata["choices"]]
        if self.objective != "contrastive" and self.data != "shapes":
            problems.append(f"objective {self.objective!r} is scored by zero-shot on shapes; COCO's retrieval "
                            f"needs a text encoder, which only the contrastive objective trains: use --data shapes")
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
        if self.image_encoder in ("vit", "resnet"):
            try:   # the model's own shape checks: widths and heads, patches and resolution
                self.model_config(vocab_size=2)
            except ValueError as err:
                problems.append(str(err))
        if not (0 <= self.shape_only and 0 <= self.colour_only and self.shape_only + self.colour_only <= 1):
            problems.append(f"shape_only and colour_only are fractions of the training scenes: each at least 0, "
                            f"together at most 1 (got {self.shape_only} and {self.colour_only})")
        if not 0.05 <= self.crop_scale <= 1:
            problems.append(f"crop_scale is the smallest fraction of the image a crop keeps: between 0.05 "
                            f"and 1 (got {self.crop_scale})")
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
        if self.hard_negatives and self.objective != "contrastive":
            raise ConfigError(f"--hard-negatives adds false captions to a contrastive batch; --objective "
                              f"{self.objective} compares no captions: leave out one of the two")
        if not 1 <= self.max_shapes <= 2:
            raise ConfigError(f"--max-shapes must be 1 or 2 (got {self.max_shapes}): a scene holds one shape, or "
                              f"two, one per half of the picture, as large as they can be and still be told apart")
        known = ("attribute_swap", "relation_swap", "word_order")
        if any(kind not in known for kind in self.negative_kinds.split(",")):
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

        ``preset=None`` for COCO picks ``"cpu"``; ``fast=True`` shrinks either
        run to a smoke test (what ``CLIP_FAST=1`` notebooks use)::

            >>> TrainConfig.for_data("shapes", fast=True).steps, TrainConfig.for_data("coco", fast=True).steps
            (300, 20)
        """
        if data == "shapes":
            if preset not in (None, "shapes"):
                raise ConfigError(f"--preset {preset} is for --data coco; shapes runs have their own defaults")
            two_objects = TWO_OBJECTS if changes.get("max_shapes", 1) == 2 else {}
            return cls(**{**two_objects, **(FAST_SHAPES if fast else {}), **changes})
        if data != "coco":
            raise ConfigError(f"data must be one of shapes, coco (got {data!r})")
        preset = preset or "cpu"
        if preset not in COCO_PRESETS:
            raise ConfigError(f"unknown preset {preset!r}: choose one of {', '.join(COCO_PRESETS)}")
        settings = dict(data="coco", out_dir="runs/coco", **COCO_PRESETS[preset])
        if fast:
            settings.update(FAST_COCO)
        return cls(**{**settings, **changes})


def available_memory_bytes() -> int | None:
    """Memory a run may use: psutil's "available" where psutil is installed; else an estimate; None if unknown.

    Without psutil: Linux's free pages (``SC_AVPHYS_PAGES``, which leaves out
    the page cache, so it errs low); where that does not exist (macOS), half
    of the physical memory (``SC_PHYS_PAGES``), a margin for the system and
    the other programs that a laptop runs. Never None on Linux or macOS, so
    the memory check is never silently off there.
    """
    try:
        import psutil
        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    for pages, share in (("SC_AVPHYS_PAGES", 1.0), ("SC_PHYS_PAGES", 0.5)):
        try:
            return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf(pages) * share)
        except (ValueError, OSError, AttributeError):
            continue
    return None

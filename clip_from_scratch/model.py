"""CLIP: an image encoder and a text encoder that meet in one embedding space.

    >>> model = CLIP(CLIPConfig.preset("tiny"))
    >>> images = torch.randn(2, 3, 64, 64)                              # [batch, 3, res, res]
    >>> text = torch.tensor([[49406, 320, 49407], [49406, 321, 49407]])  # [batch, length]
    >>> logits_per_image, logits_per_text = model(images, text)
    >>> logits_per_image.shape                                          # [images, texts]
    torch.Size([2, 2])

``logits_per_image[i, j]`` is ``logit_scale.exp()`` times the cosine
similarity of image i and caption j; training pushes the diagonal up.

The image tower is a Vision Transformer, or CLIP's ResNet when
``vision_layers`` is a tuple of four block counts (``CLIP("RN50")``,
``CLIP("tiny-resnet")``). The module tree copies OpenAI's checkpoints, so
``state_dict()`` keys are theirs (``visual.conv1.weight``, ``transformer.resblocks.0.attn.in_proj_weight``,
``logit_scale``, ...): the text tower's tensors sit at the top level, the image tower's under ``visual.``.
Every hyper-parameter can be read back off the tensor shapes:
``CLIPConfig.from_state_dict(state_dict)``.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Mapping, Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from .errors import ArchitectureMismatchError
from .resnet_encoder import TOTAL_STRIDE, ResNetEncoder
from .text_encoder import TextEncoder, encode_tokens
from .vision_encoder import VisionEncoder

# Entries of OpenAI's files that are not parameters (plain numbers kept beside the tensors).
NON_PARAMETER_KEYS = ("input_resolution", "context_length", "vocab_size")


@dataclass
class CLIPConfig:
    """Every number that shapes a CLIP model, with openai/clip's ``build_model`` names.

    The image encoder is a Vision Transformer when ``vision_layers`` is one
    number (its depth) and CLIP's ResNet when it is four (blocks per stage,
    RN50: ``(3, 4, 6, 3)``); a ResNet has no patches (``vision_patch_size``
    is None) and its ``vision_width`` is the stem's width (RN50: 64).
    ``vision_heads`` defaults to CLIP's 64 channels a head: ``vision_width // 64``
    (at least 1) for a ViT, ``32 * vision_width // 64`` for a ResNet's
    attention pool. ``image_resolution`` is the one name for the input size
    (``TrainConfig`` uses it too); ``model.visual.input_resolution`` holds the
    same number under openai/clip's attribute name, which user code reads.
    ``CLIPConfig.preset("RN50")`` gives a released
    architecture, ``CLIPConfig.preset("tiny", vocab_size=300)`` a course one with changes.
    """
    embed_dim: int = 512
    # vision
    image_resolution: int = 224
    vision_layers: Union[int, tuple[int, int, int, int]] = 12
    vision_width: int = 768
    vision_patch_size: Optional[int] = 32
    # text
    context_length: int = 77
    vocab_size: int = 49408
    transformer_width: int = 512
    transformer_heads: int = 8
    transformer_layers: int = 12
    vision_heads: Optional[int] = None

    def __post_init__(self):
        if isinstance(self.vision_layers, (tuple, list)):
            self.vision_layers = tuple(int(n) for n in self.vision_layers)  # a JSON round trip makes a list
            if len(self.vision_layers) != 4:
                raise ValueError(f"a ResNet image encoder has four stages: vision_layers must be four block "
                                 f"counts such as (3, 4, 6, 3), got {self.vision_layers}")
            self.vision_patch_size = None
        if self.vision_heads is None:
            self.vision_heads = max(1, self.vision_width * 32 // 64 if self.is_resnet else self.vision_width // 64)
        attention_width = ("vision_width", 32 * self.vision_width if self.is_resnet else self.vision_width)
        for (name, width), heads in ((attention_width, self.vision_heads),
                                     (("transformer_width", self.transformer_width), self.transformer_heads)):
            if width % heads:
                what = (f"32 * vision_width = {width}" if self.is_resnet and name == "vision_width"
                        else f"{name} ({width})")
                raise ValueError(f"{what} must be divisible by its number of heads ({heads})")
        if self.is_resnet:
            if self.vision_width % 2:
                raise ValueError(f"a ResNet's vision_width (its stem) must be even (got {self.vision_width})")
            if self.image_resolution % TOTAL_STRIDE:
                raise ValueError(f"image_resolution={self.image_resolution}: a ResNet image encoder halves the "
                                 f"image five times, so the resolution must be a multiple of {TOTAL_STRIDE}")
        elif not self.vision_patch_size:
            raise ValueError(f"vision_layers={self.vision_layers} (one number) is a Vision Transformer, which needs "
                             f"a vision_patch_size; for a ResNet give four block counts, such as (1, 1, 1, 1)")
        elif self.image_resolution % self.vision_patch_size:
            raise ValueError(f"image_resolution={self.image_resolution} must be a multiple of "
                             f"vision_patch_size={self.vision_patch_size}")

    @property
    def is_resnet(self) -> bool:
        """True for CLIP's ResNet image encoder (RN50, ...), False for a Vision Transformer."""
        return isinstance(self.vision_layers, tuple)

    @property
    def grid_size(self) -> int:
        """Patches per side: 224 px in 32 px patches -> a 7 x 7 grid (a ResNet's final grid: res / 32)."""
        return self.image_resolution // (TOTAL_STRIDE if self.is_resnet else self.vision_patch_size)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> "CLIPConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    @classmethod
    def preset(cls, name: str, **changes) -> "CLIPConfig":
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; presets are: {', '.join(PRESETS)}")
        if "vision_width" in changes:
            changes.setdefault("vision_heads", None)  # recomputed as width // 64 unless given
        return replace(PRESETS[name], **changes)

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, torch.Tensor]) -> "CLIPConfig":
        """Read the architecture off the tensor shapes (as openai/clip's ``build_model`` does).

        A ViT image encoder has ``visual.proj`` and ``visual.transformer.*``;
        a ResNet has ``visual.layer1.*`` .. ``visual.layer4.*`` and
        ``visual.attnpool.*``. Head counts are not stored in the shapes; CLIP
        always used 64 channels a head.
        """
        vit_keys = [k for k in state_dict if k == "visual.proj" or k.startswith("visual.transformer.")]
        resnet_keys = [k for k in state_dict if k.startswith(("visual.layer", "visual.attnpool."))]
        if vit_keys and resnet_keys:
            raise ValueError(f"this state dict mixes the tensors of two image encoders: a Vision Transformer's "
                             f"({vit_keys[0]!r}, ...) and a ResNet's ({resnet_keys[0]!r}, ...). A CLIP checkpoint "
                             f"has one; was it merged from two files? Load each file on its own.")
        if not (vit_keys or resnet_keys):
            raise ValueError("this does not look like a CLIP checkpoint: it has neither 'visual.proj' (a ViT image "
                             "encoder) nor 'visual.attnpool.*' (a ResNet one). "
                             f"Its first keys are {list(state_dict)[:5]}")
        try:
            if resnet_keys:
                pool_tokens = state_dict["visual.attnpool.positional_embedding"].shape[0]  # grid*grid + 1
                grid = round((pool_tokens - 1) ** 0.5)
                if grid * grid + 1 != pool_tokens:
                    raise ValueError(f"visual.attnpool.positional_embedding has {pool_tokens} rows, "
                                     f"not a square grid plus one")
                vision = dict(image_resolution=grid * TOTAL_STRIDE,
                              vision_layers=tuple(_count_layers(state_dict, f"visual.layer{stage}.")
                                                  for stage in (1, 2, 3, 4)),
                              vision_width=state_dict["visual.layer1.0.conv1.weight"].shape[0],
                              vision_patch_size=None)
            else:
                conv = state_dict["visual.conv1.weight"]  # [vision_width, 3, patch, patch]
                grid = round((state_dict["visual.positional_embedding"].shape[0] - 1) ** 0.5)
                vision = dict(image_resolution=conv.shape[-1] * grid,
                              vision_layers=_count_layers(state_dict, "visual.transformer.resblocks."),
                              vision_width=conv.shape[0], vision_patch_size=conv.shape[-1])
            text_width = state_dict["ln_final.weight"].shape[0]
            return cls(
                embed_dim=state_dict["text_projection"].shape[1],
                **vision,
                context_length=state_dict["positional_embedding"].shape[0],
                vocab_size=state_dict["token_embedding.weight"].shape[0],
                transformer_width=text_width,
                transformer_heads=max(1, text_width // 64),
                transformer_layers=_count_layers(state_dict, "transformer.resblocks."),
            )
        except KeyError as err:
            raise ValueError(f"this CLIP checkpoint lacks the tensor {err.args[0]!r}; "
                             f"it is incomplete or from another model family") from None


def _count_layers(state_dict: Mapping, prefix: str) -> int:
    return len({k[len(prefix):].split(".")[0] for k in state_dict if k.startswith(prefix)})


PRESETS: dict[str, CLIPConfig] = {
    # OpenAI's released ResNet models: blocks per stage, stem width 64/80/96/128 (REFERENCE.md)
    "RN50": CLIPConfig(1024, 224, (3, 4, 6, 3), 64, None, 77, 49408, 512, 8, 12),
    "RN101": CLIPConfig(512, 224, (3, 4, 23, 3), 64, None, 77, 49408, 512, 8, 12),
    "RN50x4": CLIPConfig(640, 288, (4, 6, 10, 6), 80, None, 77, 49408, 640, 10, 12),
    "RN50x16": CLIPConfig(768, 384, (6, 8, 18, 8), 96, None, 77, 49408, 768, 12, 12),
    "RN50x64": CLIPConfig(1024, 448, (3, 15, 36, 10), 128, None, 77, 49408, 1024, 16, 12),
    # OpenAI's released Vision Transformer models
    "ViT-B/32": CLIPConfig(512, 224, 12, 768, 32, 77, 49408, 512, 8, 12),
    "ViT-B/16": CLIPConfig(512, 224, 12, 768, 16, 77, 49408, 512, 8, 12),
    "ViT-L/14": CLIPConfig(768, 224, 24, 1024, 14, 77, 49408, 768, 12, 12),
    "ViT-L/14@336px": CLIPConfig(768, 336, 24, 1024, 14, 77, 49408, 768, 12, 12),
    # Course models that train on a laptop CPU. Few image tokens (a coarse 4 x 4
    # grid) and narrow, shallow towers; pass vocab_size= for a course tokenizer.
    "tiny": CLIPConfig(embed_dim=128, image_resolution=64, vision_layers=2, vision_width=128,
                       vision_patch_size=16, context_length=77, vocab_size=49408,
                       transformer_width=128, transformer_heads=2, transformer_layers=2),
    "small": CLIPConfig(embed_dim=256, image_resolution=96, vision_layers=4, vision_width=256,
                        vision_patch_size=16, context_length=77, vocab_size=49408,
                        transformer_width=256, transformer_heads=4, transformer_layers=4),
    # The same text towers with a ResNet image tower: one (tiny) or two (small) blocks per stage.
    # 64 px -> a 2 x 2 final grid, 96 px -> 3 x 3; the attention pool is 32 * width wide.
    "tiny-resnet": CLIPConfig(embed_dim=128, image_resolution=64, vision_layers=(1, 1, 1, 1), vision_width=16,
                              vision_patch_size=None, context_length=77, vocab_size=49408,
                              transformer_width=128, transformer_heads=2, transformer_layers=2),
    "small-resnet": CLIPConfig(embed_dim=256, image_resolution=96, vision_layers=(2, 2, 2, 2), vision_width=32,
                               vision_patch_size=None, context_length=77, vocab_size=49408,
                               transformer_width=256, transformer_heads=4, transformer_layers=4),
}


class CLIP(nn.Module):
    """CLIP: an image encoder (``self.visual``: a ViT, or a ResNet when
    ``config.vision_layers`` is a tuple) and a text encoder, meeting in one space.

    Attributes mirror openai/clip's model: ``visual``, ``transformer``,
    ``token_embedding``, ``positional_embedding``, ``ln_final``,
    ``text_projection``, ``logit_scale``, ``context_length``, ``vocab_size``,
    ``dtype``; plus ``config``.
    """

    def __init__(self, config: CLIPConfig | str = "ViT-B/32"):
        super().__init__()
        if isinstance(config, str):
            config = CLIPConfig.preset(config)
        self.config = config
        self.context_length, self.vocab_size = config.context_length, config.vocab_size
        text = TextEncoder(context_length=config.context_length, vocab_size=config.vocab_size,
                           width=config.transformer_width, heads=config.transformer_heads,
                           layers=config.transformer_layers, embed_dim=config.embed_dim)
        if config.is_resnet:
            self.visual = ResNetEncoder(layers=config.vision_layers, width=config.vision_width,
                                        heads=config.vision_heads, embed_dim=config.embed_dim,
                                        image_resolution=config.image_resolution)
        else:
            self.visual = VisionEncoder(image_resolution=config.image_resolution,
                                        patch_size=config.vision_patch_size, width=config.vision_width,
                                        layers=config.vision_layers, heads=config.vision_heads,
                                        embed_dim=config.embed_dim)
        # The text tower's parts sit on the model itself, not under a "text." prefix, because
        # that is where OpenAI's checkpoints keep them (token_embedding.weight, transformer.resblocks.0...).
        # Assigned in the checkpoints' order: parameters positional_embedding, text_projection,
        # logit_scale; then modules visual, transformer, token_embedding, ln_final.
        self.transformer = text.transformer
        self.token_embedding = text.token_embedding
        self.positional_embedding = text.positional_embedding
        self.ln_final = text.ln_final
        self.text_projection = text.text_projection
        # The logit scale (1 / temperature), learned in log space so it stays positive: exp(ln(1/0.07)) = 14.3 at start.
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    @property
    def dtype(self) -> torch.dtype:
        return self.visual.conv1.weight.dtype

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        """Images ``[batch, 3, res, res]`` (from ``preprocess``) -> features ``[batch, embed_dim]``."""
        return self.visual(image)

    def encode_text(self, text: torch.Tensor, eot_index: torch.Tensor | None = None) -> torch.Tensor:
        """Token ids ``[batch, length]`` -> features ``[batch, embed_dim]`` (see ``TextEncoder.encode_text``)."""
        return encode_tokens(self, text, eot_index)

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        image_features = F.normalize(self.encode_image(image), dim=-1)  # [images, embed_dim]
        text_features = F.normalize(self.encode_text(text), dim=-1)     # [texts, embed_dim]
        logits_per_image = self.logit_scale.exp() * image_features @ text_features.t()  # [images, texts]
        return logits_per_image, logits_per_image.t()

    def load_state_dict(self, state_dict: Mapping[str, torch.Tensor], strict: bool = True, assign: bool = False):
        """``nn.Module.load_state_dict`` that accepts OpenAI's files and explains mismatches.

        Drops the non-tensor entries OpenAI's files carry (``input_resolution``,
        ``context_length``, ``vocab_size``); with ``strict=True``, raises
        :class:`ArchitectureMismatchError` naming the missing and unexpected
        tensors and every shape that differs. Tensors of another dtype (fp16)
        are converted to the model's.
        """
        state_dict = {k: v for k, v in state_dict.items() if k not in NON_PARAMETER_KEYS}
        for name in self.state_dict(keep_vars=True):
            # A batch norm's step counter matters only to momentum=None training; files may lack it.
            if name.endswith(".num_batches_tracked") and name not in state_dict:
                state_dict[name] = torch.tensor(0, dtype=torch.long)
        if strict:
            check_state_dict(self, state_dict)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)


def check_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Raise :class:`ArchitectureMismatchError` unless ``state_dict`` fits ``model`` exactly."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)]
    if not (missing or unexpected or shapes):
        return

    def listing(title, items, limit=8):
        more = f"\n    ... and {len(items) - limit} more" if len(items) > limit else ""
        return f"\n  {title} ({len(items)}):\n    " + "\n    ".join(items[:limit]) + more

    message = "the checkpoint does not fit this model's architecture."
    if missing:
        message += listing("missing from the checkpoint", missing)
    if unexpected:
        message += listing("unexpected in the checkpoint", unexpected)
    if shapes:
        message += listing("shape mismatches", shapes)
    try:
        message += f"\n  The checkpoint's own architecture is {CLIPConfig.from_state_dict(state_dict)}."
    except ValueError:
        pass
    message += ("\n  Build the model from the file instead: CLIP(CLIPConfig.from_state_dict(state_dict)), "
                "or use clip_from_scratch.load(path), which does that for you.")
    raise ArchitectureMismatchError(message)

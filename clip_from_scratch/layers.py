"""The transformer pieces both of CLIP's encoders are built from.

CLIP's text and image towers are the same pre-LN transformer, fed different
tokens. Four parts, each named the way OpenAI's checkpoints name their
tensors, so a released state dict loads with no renaming::

    Transformer.resblocks.N               one ResidualAttentionBlock per layer
      .ln_1, .ln_2                        LayerNorm (computed in fp32)
      .attn.in_proj_weight / in_proj_bias query, key and value projections, stacked
      .attn.out_proj                      back to the model width
      .mlp.c_fc -> QuickGELU -> .mlp.c_proj  (GELU for LAION's models: activation="gelu")

A tiny worked example::

    >>> block = ResidualAttentionBlock(width=64, heads=2)
    >>> x = torch.randn(3, 5, 64)          # [batch, tokens, width]
    >>> block(x).shape
    torch.Size([3, 5, 64])
    >>> sorted(block.state_dict())[:3]
    ['attn.in_proj_bias', 'attn.in_proj_weight', 'attn.out_proj.bias']

Everything is batch-first (``[batch, tokens, width]``). OpenAI's code is
sequence-first because ``nn.MultiheadAttention`` was, in 2021; the tensors are
the same either way.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn


class LayerNorm(nn.LayerNorm):
    """LayerNorm that always computes in float32, then returns the input's dtype.

    Released checkpoints are float16; the mean and variance of a 768-wide
    vector overflow or lose precision in half precision, so OpenAI normalises
    in float32. (Under ``torch.autocast`` PyTorch does this already.)
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The weights are cast too: after model.half() they are float16, and float32
        # activations cannot meet float16 weights in one kernel.
        weight = self.weight.float() if self.weight is not None else None
        bias = self.bias.float() if self.bias is not None else None
        return F.layer_norm(x.float(), self.normalized_shape, weight, bias, self.eps).to(x.dtype)


class QuickGELU(nn.Module):
    """``x * sigmoid(1.702 x)``: the fast GELU approximation CLIP was trained with.

    It is close to ``nn.GELU`` but not equal, and a trained model is tuned to
    the one it saw: swapping them changes a released model's outputs.

    >>> QuickGELU()(torch.tensor([0.0, 1.0])).round(decimals=4)
    tensor([0.0000, 0.8458])
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


# OpenAI's CLIP uses QuickGELU; many later CLIPs (LAION's open_clip models) use the exact GELU.
ACTIVATIONS = {"quick_gelu": QuickGELU, "gelu": nn.GELU}


class Attention(nn.Module):
    """Multi-head self-attention through ``F.scaled_dot_product_attention``.

    The parameters carry ``nn.MultiheadAttention``'s names (the ones in the
    checkpoints): ``in_proj_weight`` is the query, key and value matrices
    stacked into one ``[3 * width, width]`` tensor, so one matmul makes all
    three; ``out_proj`` mixes the heads back together.

    ``causal=True`` lets token i attend only to tokens 0..i (the text encoder).
    """

    def __init__(self, width: int, heads: int):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} must be divisible by the number of heads {heads}")
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.randn(3 * width, width) * width ** -0.5)
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: torch.Tensor, causal: bool = False) -> torch.Tensor:
        batch, tokens, width = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)  # [batch, tokens, 3 * width]
        # Split into query/key/value and heads: [3, batch, heads, tokens, head_width]
        qkv = qkv.view(batch, tokens, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        # softmax(q k^T / sqrt(head_width)) v, in one fused kernel
        out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)  # [batch, heads, tokens, head_width]
        out = out.transpose(1, 2).reshape(batch, tokens, width)  # heads side by side again
        return self.out_proj(out)


class ResidualAttentionBlock(nn.Module):
    """One pre-LN transformer layer: ``x + attn(ln_1(x))``, then ``x + mlp(ln_2(x))``.

    Normalising *before* each sub-layer (pre-LN) keeps the residual stream an
    untouched sum, which is what lets deep stacks train without warm-up tricks.
    """

    def __init__(self, width: int, heads: int, causal: bool = False, activation: str = "quick_gelu"):
        super().__init__()
        self.causal = causal
        self.attn = Attention(width, heads)
        self.ln_1 = LayerNorm(width)
        self.mlp = nn.Sequential(OrderedDict([
            ("c_fc", nn.Linear(width, 4 * width)),    # expand 4x ...
            ("gelu", ACTIVATIONS[activation]()),      # the checkpoints' name for it, whichever it is
            ("c_proj", nn.Linear(4 * width, width)),  # ... and back
        ]))
        self.ln_2 = LayerNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [batch, tokens, width]
        x = x + self.attn(self.ln_1(x), causal=self.causal)
        x = x + self.mlp(self.ln_2(x))
        return x


class Transformer(nn.Module):
    """A stack of ``layers`` residual blocks, kept in ``resblocks`` (the checkpoint's name).

    ``init_weights()`` applies CLIP's initialisation: attention in-projection
    std ``width**-0.5``; the two projections that write into the residual
    stream (``attn.out_proj``, ``mlp.c_proj``) ``width**-0.5 * (2*layers)**-0.5``,
    smaller in deeper stacks so the sum of 2*layers updates keeps its scale;
    ``mlp.c_fc`` ``(2*width)**-0.5``.
    """

    def __init__(self, width: int, layers: int, heads: int, causal: bool = False, activation: str = "quick_gelu"):
        super().__init__()
        self.width = width
        self.layers = layers
        self.resblocks = nn.Sequential(*[ResidualAttentionBlock(width, heads, causal, activation)
                                         for _ in range(layers)])
        self.init_weights()

    def init_weights(self) -> None:
        attn_std = self.width ** -0.5
        proj_std = self.width ** -0.5 * (2 * self.layers) ** -0.5
        fc_std = (2 * self.width) ** -0.5
        for block in self.resblocks:
            nn.init.normal_(block.attn.in_proj_weight, std=attn_std)
            nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
            nn.init.normal_(block.mlp.c_fc.weight, std=fc_std)
            nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [batch, tokens, width]
        return self.resblocks(x)


def check_images(images: torch.Tensor, resolution: int) -> None:
    """Both image encoders take ``[batch, 3, resolution, resolution]`` floats: say so, in the user's terms."""
    if (not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3
            or images.shape[2] != resolution or images.shape[3] != resolution):
        got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"this model takes images of shape [batch, 3, {resolution}, {resolution}], got {got}. "
                         f"Use the preprocess transform that load() returns (it resizes, crops to "
                         f"{resolution} px and converts to RGB), and stack the results into a batch.")
    if not images.is_floating_point():
        raise TypeError(f"images must be float tensors (normalised by preprocess), got {images.dtype}")

"""CLIP's other image encoder: a ResNet-50 with three changes (RN50, RN101, RN50x4, ...).

    images [batch, 3, res, res]
      -> stem: three 3x3 convs (stride 2, 1, 1), then a 2x2 average pool
                                                 [batch, width, res/4, res/4]
      -> layer1 .. layer4: bottleneck blocks; layers 2-4 halve the grid
                                                 [batch, 32*width, res/32, res/32]
      -> attnpool: the mean of the grid asks one attention question of the grid
                                                 [batch, embed_dim]

What CLIP changed in torchvision's ResNet-50, and why:

1. **The stem** is three 3x3 convolutions instead of one 7x7 (the same
   receptive field for fewer weights, with two more non-linearities), and
   an *average* pool instead of a max pool.
2. **Anti-aliased downsampling.** Where a block halves the grid, its 3x3 conv
   keeps stride 1 and a 2x2 average pool follows; the shortcut averages before
   its 1x1 conv. A strided conv only looks at every other pixel, so a pattern
   finer than the stride aliases into a false coarse one; averaging first
   blurs it away (Zhang 2019, "Making Convolutional Networks Shift-Invariant Again").
3. **Attention pooling** instead of global average pooling: the average of
   the grid becomes one extra token, every token gets a position embedding,
   and one multi-head attention with that token as the *only query* reads
   the grid. It is the ViT's class token, done once at the end.

A tiny one (one block per stage, 64 px images -> a 2 x 2 grid)::

    >>> resnet = ResNetEncoder(layers=(1, 1, 1, 1), width=16, heads=8, embed_dim=32, image_resolution=64)
    >>> resnet(torch.randn(2, 3, 64, 64)).shape
    torch.Size([2, 32])

Module names are the tensor names of OpenAI's checkpoints under ``visual.``
(``layer1.0.downsample.0.weight``, ``attnpool.q_proj.weight``, ...), so their
RN50 files load into this class unchanged. The initialisation is OpenAI's:
PyTorch's default for convolutions and batch norms, std ``(32*width)**-0.5``
for the attention-pool projections, and a zero gain on the last batch norm of
every block, so each block starts as the identity (Goyal et al. 2017).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .layers import check_images

# The stem divides the side by 4, layers 2-4 by 2 each: 224 px -> a 7 x 7 grid.
TOTAL_STRIDE = 32


class Bottleneck(nn.Module):
    """1x1 conv (narrow) -> 3x3 conv -> [2x2 average pool] -> 1x1 conv (4x wider), plus a shortcut.

    ``planes`` is the narrow width; the block outputs ``4 * planes`` channels.
    With ``stride=2`` the grid halves: the 3x3 conv keeps stride 1 and an
    average pool follows it (anti-aliasing); the shortcut pools, then a 1x1
    conv and a batch norm make its width match.
    """
    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int = 1):
        super().__init__()
        out_channels = planes * self.expansion
        self.conv1 = nn.Conv2d(in_channels, planes, kernel_size=1, bias=False)  # no bias: the batch norm has one
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.avgpool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.conv3 = nn.Conv2d(planes, out_channels, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        # Gain 0: the residual branch starts silent and the block passes its shortcut through
        # (x + 0), so a deep stack starts out training like a shallow one.
        nn.init.zeros_(self.bn3.weight)
        self.downsample = None
        if stride > 1 or in_channels != out_channels:
            # The keys "0" and "1" are the names in OpenAI's files (downsample.0.weight, downsample.1.running_mean).
            self.downsample = nn.Sequential(OrderedDict([
                ("pool", nn.AvgPool2d(stride) if stride > 1 else nn.Identity()),
                ("0", nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False)),
                ("1", nn.BatchNorm2d(out_channels)),
            ]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [batch, in_channels, side, side]
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)    # [batch, planes, side, side]
        out = F.relu(self.bn2(self.conv2(out)), inplace=True)  # [batch, planes, side, side]
        out = self.avgpool(out)                                # [batch, planes, side/stride, side/stride]
        out = self.bn3(self.conv3(out))                        # [batch, 4*planes, side/stride, side/stride]
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(out + shortcut, inplace=True)


class AttentionPool2d(nn.Module):
    """Pool a grid of features into one vector with a single attention query.

    The query is the mean of the grid (what global average pooling would have
    returned); keys and values are the mean token and every grid cell, each
    with its own position embedding. So the pooled vector is a weighted
    average of the cells, weights chosen per head by content and position.

        >>> pool = AttentionPool2d(grid_size=2, width=128, heads=2, output_dim=16)
        >>> pool(torch.randn(3, 128, 2, 2)).shape     # [batch, width, grid, grid] -> [batch, output_dim]
        torch.Size([3, 16])
    """

    def __init__(self, grid_size: int, width: int, heads: int, output_dim: int):
        super().__init__()
        if width % heads:
            raise ValueError(f"the attention pool's width {width} must be divisible by its number of heads {heads}")
        self.heads = heads
        # One position per grid cell, plus one for the mean token (first).
        self.positional_embedding = nn.Parameter(torch.randn(grid_size ** 2 + 1, width) / width ** 0.5)
        self.k_proj = nn.Linear(width, width)
        self.q_proj = nn.Linear(width, width)
        self.v_proj = nn.Linear(width, width)
        self.c_proj = nn.Linear(width, output_dim)
        for projection in (self.q_proj, self.k_proj, self.v_proj, self.c_proj):
            nn.init.normal_(projection.weight, std=width ** -0.5)  # OpenAI's; biases keep PyTorch's default

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, width = x.shape[:2]
        x = x.flatten(2).transpose(1, 2)                      # [batch, grid*grid, width]
        x = torch.cat([x.mean(dim=1, keepdim=True), x], 1)    # [batch, grid*grid + 1, width] mean token first
        x = x + self.positional_embedding.to(x.dtype)

        def split_heads(t):  # [batch, tokens, width] -> [batch, heads, tokens, head_width]
            return t.unflatten(-1, (self.heads, -1)).transpose(1, 2)

        query = split_heads(self.q_proj(x[:, :1]))            # [batch, heads, 1, head_width] the mean token only
        key, value = split_heads(self.k_proj(x)), split_heads(self.v_proj(x))  # [batch, heads, tokens, head_width]
        out = F.scaled_dot_product_attention(query, key, value)  # [batch, heads, 1, head_width]
        out = out.transpose(1, 2).reshape(batch, width)       # [batch, width] heads side by side
        return self.c_proj(out)                               # [batch, output_dim]


class ResNetEncoder(nn.Module):
    """CLIP's modified ResNet image encoder (``ModifiedResNet`` in openai/clip).

    ``layers`` is the number of bottleneck blocks in each of the four stages
    (RN50: ``(3, 4, 6, 3)``); ``width`` the stem's output width (RN50: 64),
    doubled by every stage, times 4 inside each block: the final grid has
    ``32 * width`` channels. ``heads`` is the attention pool's head count
    (CLIP: ``32 * width // 64``, 64 channels a head).
    """

    def __init__(self, layers: Sequence[int], width: int, heads: int, embed_dim: int, image_resolution: int):
        super().__init__()
        if len(layers) != 4 or any(int(n) < 1 for n in layers):
            raise ValueError(f"layers must be four block counts of at least 1, one per stage, "
                             f"such as (3, 4, 6, 3) for RN50; got {tuple(layers)}")
        if image_resolution % TOTAL_STRIDE:
            raise ValueError(f"a ResNet image encoder needs an image_resolution divisible by {TOTAL_STRIDE} "
                             f"(its total stride), got {image_resolution}; try "
                             f"{max(TOTAL_STRIDE, round(image_resolution / TOTAL_STRIDE) * TOTAL_STRIDE)}")
        self.input_resolution = image_resolution
        self.grid_size = image_resolution // TOTAL_STRIDE
        self.output_dim = embed_dim

        # The stem: 3 -> width/2 -> width/2 -> width channels; side / 2 (conv1), then / 2 (avgpool).
        self.conv1 = nn.Conv2d(3, width // 2, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width // 2)
        self.conv2 = nn.Conv2d(width // 2, width // 2, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width // 2)
        self.conv3 = nn.Conv2d(width // 2, width, kernel_size=3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.avgpool = nn.AvgPool2d(2)

        # Four stages; each block's narrow width doubles per stage, its output is 4x that.
        in_channels = width
        for stage, (blocks, stride) in enumerate(zip(layers, (1, 2, 2, 2)), start=1):
            planes = width * 2 ** (stage - 1)
            stage_blocks = [Bottleneck(in_channels, planes, stride)]
            in_channels = planes * Bottleneck.expansion
            stage_blocks += [Bottleneck(in_channels, planes) for _ in range(int(blocks) - 1)]
            setattr(self, f"layer{stage}", nn.Sequential(*stage_blocks))

        self.attnpool = AttentionPool2d(self.grid_size, in_channels, heads, embed_dim)  # in_channels = 32 * width

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        check_images(images, self.input_resolution)
        x = images.to(self.conv1.weight.dtype)            # [batch, 3, res, res]
        x = F.relu(self.bn1(self.conv1(x)), inplace=True)  # [batch, width/2, res/2, res/2]
        x = F.relu(self.bn2(self.conv2(x)), inplace=True)  # [batch, width/2, res/2, res/2]
        x = F.relu(self.bn3(self.conv3(x)), inplace=True)  # [batch, width, res/2, res/2]
        x = self.avgpool(x)                                # [batch, width, res/4, res/4]
        x = self.layer1(x)                                 # [batch, 4*width, res/4, res/4]
        x = self.layer2(x)                                 # [batch, 8*width, res/8, res/8]
        x = self.layer3(x)                                 # [batch, 16*width, res/16, res/16]
        x = self.layer4(x)                                 # [batch, 32*width, res/32, res/32]
        return self.attnpool(x)                            # [batch, embed_dim]

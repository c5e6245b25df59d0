"""CLIP's image encoder: a Vision Transformer (ViT).

    images [batch, 3, res, res]
      -> conv1 (kernel = stride = patch_size)   [batch, width, grid, grid]   one vector per patch
      -> flatten the grid                        [batch, grid*grid, width]
      -> prepend class_embedding                 [batch, grid*grid + 1, width]
      -> + positional_embedding, ln_pre
      -> Transformer (no mask: every patch sees every patch)
      -> ln_post on the class token              [batch, width]
      -> @ proj                                  [batch, embed_dim]

A convolution whose kernel equals its stride is just "cut the image into
non-overlapping patches and apply the same linear layer to each", written so
it runs fast. The class token starts as one learned vector; after the
transformer it has gathered what the image is about::

    >>> vit = VisionEncoder(image_resolution=32, patch_size=8, width=64, layers=1, heads=1, embed_dim=16)
    >>> vit(torch.randn(2, 3, 32, 32)).shape       # a 4 x 4 grid of patches
    torch.Size([2, 16])

Parameter names are those of OpenAI's checkpoints under ``visual.``.
"""
from __future__ import annotations

import torch
from torch import nn

from .layers import LayerNorm, Transformer, check_images


class VisionEncoder(nn.Module):
    def __init__(self, image_resolution: int, patch_size: int, width: int, layers: int,
                 heads: int, embed_dim: int, activation: str = "quick_gelu"):
        super().__init__()
        if image_resolution % patch_size:
            raise ValueError(f"image_resolution {image_resolution} must be a multiple of patch_size {patch_size}")
        self.input_resolution = image_resolution
        self.patch_size = patch_size
        self.grid_size = image_resolution // patch_size
        self.output_dim = embed_dim
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size, bias=False)
        scale = width ** -0.5
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(self.grid_size ** 2 + 1, width))
        self.ln_pre = LayerNorm(width)
        self.transformer = Transformer(width, layers, heads, causal=False, activation=activation)
        self.ln_post = LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, embed_dim))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        check_images(images, self.input_resolution)
        x = self.conv1(images.to(self.conv1.weight.dtype))  # [batch, width, grid, grid]
        x = x.flatten(2).transpose(1, 2)                     # [batch, grid*grid, width]
        class_token = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([class_token, x], dim=1)               # [batch, grid*grid + 1, width]
        x = x + self.positional_embedding.to(x.dtype)
        x = self.ln_pre(x)
        x = self.transformer(x)
        x = self.ln_post(x[:, 0])                            # [batch, width] the class token
        return x @ self.proj                                 # [batch, embed_dim]

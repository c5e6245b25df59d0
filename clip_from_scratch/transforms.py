"""Image preprocessing: the exact eval transform of openai/clip, and training augmentation on the device.

CLIP was trained on images resized so the shorter side is ``n`` px (bicubic),
centre-cropped to ``n x n``, and normalised with the training set's channel
statistics. A model sees the world only through this funnel, so evaluation
must reproduce it bit for bit::

    >>> from PIL import Image
    >>> preprocess = eval_transform(224)
    >>> preprocess(Image.new("RGB", (640, 480))).shape
    torch.Size([3, 224, 224])

The conversion to RGB comes *after* the resize and crop, as in openai/clip:
greyscale (``L``), palette (``P``) and ``RGBA`` images are resized in their own
mode, which gives slightly different pixels than converting first.

Training reads a pre-resized uint8 array, so its augmentation works on
batches already on the device: :func:`normalize`, then
:func:`random_resized_crop` (one ``grid_sample`` for the whole batch).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

# Per-channel mean and std of CLIP's training images (RGB, pixels in [0, 1]).
MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)


def to_rgb(image: Image.Image) -> Image.Image:
    """``image.convert("RGB")`` as a module-level function, so DataLoader workers can pickle it."""
    return image.convert("RGB")


def eval_transform(resolution: int) -> T.Compose:
    """PIL image of any mode and size -> float tensor ``[3, resolution, resolution]``, as openai/clip's
    ``preprocess``."""
    return T.Compose([
        T.Resize(resolution, interpolation=InterpolationMode.BICUBIC),  # shorter side -> resolution
        T.CenterCrop(resolution),
        to_rgb,
        T.ToTensor(),                                                   # [3, H, W] in [0, 1]
        T.Normalize(MEAN, STD),
    ])


def normalize(images):
    """Normalise a batch already on the device: uint8 ``[batch, 3, H, W]`` (or floats in [0, 1]) -> model input.

    For data kept as a pre-resized uint8 array (fast training): the same
    arithmetic as ``ToTensor`` + ``Normalize``, without going through PIL.
    """
    images = images.float() / 255 if images.dtype == torch.uint8 else images.float()
    mean = torch.tensor(MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=images.device).view(1, 3, 1, 1)
    return (images - mean) / std


def random_resized_crop(images: torch.Tensor, min_scale: float, generator: torch.Generator) -> torch.Tensor:
    """A square crop of each image covering ``min_scale``..1 of its area, resized back, on the device.

    One batched ``grid_sample`` instead of a PIL crop per image. No flip, on
    purpose: captions say "on the left of", and a mirrored image would make
    them lie.

    >>> x = torch.arange(16.).view(1, 1, 4, 4).expand(2, 3, 4, 4)
    >>> torch.allclose(random_resized_crop(x, 1.0, torch.Generator().manual_seed(0)), x, atol=1e-5)
    True
    """
    batch = images.shape[0]
    side = torch.empty(batch).uniform_(min_scale, 1.0, generator=generator).sqrt()   # crop side / image side
    centre = (torch.rand(batch, 2, generator=generator) * 2 - 1) * (1 - side)[:, None]  # stays inside
    theta = torch.zeros(batch, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = side
    theta[:, :, 2] = centre
    grid = F.affine_grid(theta.to(images.device, images.dtype), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)

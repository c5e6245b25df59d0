"""Image preprocessing: the exact eval transform of openai/clip, and training augmentation.

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
"""
from __future__ import annotations

import torch
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


def train_transform(resolution: int, scale: tuple[float, float] = (0.9, 1.0)) -> T.Compose:
    """Training augmentation: a random crop covering ``scale`` of the image, resized to ``resolution``.

    The mild default (90-100% of the area, as open_clip uses) keeps the
    content the caption describes in the frame. There is no horizontal flip
    on purpose: captions say "on the left", and a flip would make them lie.
    """
    return T.Compose([
        T.RandomResizedCrop(resolution, scale=scale, interpolation=InterpolationMode.BICUBIC),
        to_rgb,
        T.ToTensor(),
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

"""Preprocessing gives openai/clip's tensors exactly, for every kind of image."""
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from clip_from_scratch.transforms import MEAN, STD, eval_transform, normalize, train_transform

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # clip-anytorch imports the deprecated pkg_resources
    from clip.clip import _transform as openai_transform


def picture(mode, size, seed=0):
    """A random image of ``size`` (width, height) in PIL ``mode``."""
    rng = np.random.default_rng(seed)
    rgba = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 4), dtype=np.uint8), "RGBA")
    if mode == "P":
        return rgba.convert("RGB").quantize(colors=64)
    return rgba.convert(mode)


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "P", "LA", "CMYK", "1"])
@pytest.mark.parametrize("size", [(97, 61), (1, 1), (2, 300), (400, 3), (224, 224)])
def test_eval_transform_equals_openais(mode, size):
    image = picture(mode, size)
    for resolution in (224, 64):
        ours, theirs = eval_transform(resolution)(image), openai_transform(resolution)(image)
        assert ours.shape == (3, resolution, resolution)
        assert torch.equal(ours, theirs), f"{mode} {size} at {resolution} px differs"


def test_train_transform_gives_random_crops_of_the_right_size():
    image = picture("RGB", (120, 90))
    transform = train_transform(64)
    torch.manual_seed(0)
    a, b = transform(image), transform(image)
    assert a.shape == b.shape == (3, 64, 64)
    assert not torch.equal(a, b)


@pytest.mark.parametrize("mode", ["P", "L", "RGBA", "LA", "CMYK", "1"])
def test_train_transform_keeps_the_colour_of_any_mode(mode):
    # A flat picture stays flat under any crop: the output must be its RGB colour, normalised.
    image = Image.new("RGB", (50, 40), (200, 30, 90)).convert(mode, dither=Image.Dither.NONE)  # flat in any mode
    rgb = torch.tensor(image.convert("RGB").getpixel((0, 0)), dtype=torch.float32) / 255
    out = train_transform(32)(image)
    assert out.shape == (3, 32, 32)
    mean, std = torch.tensor(MEAN).view(3, 1, 1), torch.tensor(STD).view(3, 1, 1)
    torch.testing.assert_close(out * std + mean, rgb.view(3, 1, 1).expand(3, 32, 32), atol=1 / 255, rtol=0)


def test_normalize_on_uint8_batches_matches_eval_transform():
    image = picture("RGB", (64, 64))
    uint8 = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None]  # [1, 3, 64, 64]
    torch.testing.assert_close(normalize(uint8)[0], eval_transform(64)(image))

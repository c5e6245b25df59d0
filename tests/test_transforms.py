"""Preprocessing gives openai/clip's tensors exactly, for every kind of image."""
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from clip_from_scratch.transforms import eval_transform, normalize, random_resized_crop

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


def test_normalize_on_uint8_batches_matches_eval_transform():
    image = picture("RGB", (64, 64))
    uint8 = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None]  # [1, 3, 64, 64]
    torch.testing.assert_close(normalize(uint8)[0], eval_transform(64)(image))


def test_random_resized_crop_is_repeatable_keeps_flat_colours_and_really_crops():
    images = torch.rand(8, 3, 16, 16)
    first = random_resized_crop(images, 0.5, torch.Generator().manual_seed(3))
    assert torch.equal(first, random_resized_crop(images, 0.5, torch.Generator().manual_seed(3)))
    assert not torch.allclose(first, images, atol=1e-3)
    flat = torch.full((2, 3, 16, 16), 0.25)
    assert torch.allclose(random_resized_crop(flat, 0.3, torch.Generator().manual_seed(0)), flat, atol=1e-6)
    # A crop zooms in: a left-to-right ramp spans less of its range afterwards.
    ramp = torch.linspace(0, 1, 16).expand(32, 3, 16, 16).contiguous()
    cropped = random_resized_crop(ramp, 0.3, torch.Generator().manual_seed(1))
    spans = cropped[:, 0, 0, -1] - cropped[:, 0, 0, 0]          # the ramp's range left in each crop
    assert (spans <= 1 + 1e-5).all() and spans.mean() < 0.9

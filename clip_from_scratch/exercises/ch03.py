"""Checks for chapter 03 (the vision encoder). Each takes the learner's function, never raises.

    >>> check_patchify(None)
    [TODO] Not attempted yet: fill in the cell above and run this one again.
    False
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import report
from .ch02 import _attempt


def check_sequence_length(sequence_length) -> bool:
    """``sequence_length(resolution, patch_size)`` -> tokens the transformer sees (patches + class token)."""
    cases = {(224, 32): 50, (224, 16): 197, (224, 14): 257, (336, 14): 577, (64, 16): 17}
    for (resolution, patch), want in cases.items():
        got, verdict = _attempt(sequence_length, resolution, patch)
        if verdict is not None:
            return verdict
        if got == want - 1:
            return report(False, "", "you counted the patches; add one for the class token.")
        if got != want:
            return report(False, "", f"for {resolution} px and {patch} px patches expected {want}, got {got}.")
    return report(True, "(resolution // patch)^2 patches + 1 class token: 50 for ViT-B/32, 577 for ViT-L/14@336px.", "")


def _reference_patchify(images, patch_size):
    # [batch, 3*p*p, patches] -> [batch, patches, 3*p*p]; channels first, then rows, then columns (conv1's order)
    return F.unfold(images, kernel_size=patch_size, stride=patch_size).transpose(1, 2)


def check_patchify(patchify) -> bool:
    """``patchify(images [batch, 3, H, W], patch_size)`` -> ``[batch, patches, 3 * patch_size**2]``.

    Patches in reading order (row by row), each flattened as channel, row, column.
    """
    images = torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    patches, verdict = _attempt(patchify, images, 4)
    if verdict is not None:
        return verdict
    want = _reference_patchify(images, 4)
    if not isinstance(patches, torch.Tensor) or patches.shape != want.shape:
        got = tuple(patches.shape) if isinstance(patches, torch.Tensor) else type(patches).__name__
        return report(False, "", f"expected shape {tuple(want.shape)} = [batch, (12/4)^2, 3*4*4], got {got}.")
    if torch.equal(patches, want):
        return report(True, "9 patches of 48 numbers each, in the order conv1's weights expect.", "")
    if torch.equal(patches.sort(-1).values, want.sort(-1).values):
        return report(False, "", "right patches, but the numbers inside each are in another order: flatten "
                                 "each patch as [channel, row, column] (channels first), as conv1.weight is laid out.")
    return report(False, "", "the patches differ from F.unfold's: check the reshape/permute order "
                             "(batch, 3, rows, p, cols, p) -> (batch, rows, cols, 3, p, p).")


def check_patch_embedding(patch_embedding) -> bool:
    """``patch_embedding(images, conv_weight)`` -> ``[batch, patches, width]`` without calling a convolution."""
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(2, 3, 16, 16, generator=generator)
    weight = torch.randn(10, 3, 8, 8, generator=generator)  # [width, 3, patch, patch], like visual.conv1.weight
    tokens, verdict = _attempt(patch_embedding, images, weight)
    if verdict is not None:
        return verdict
    want = F.conv2d(images, weight, stride=8).flatten(2).transpose(1, 2)
    if not isinstance(tokens, torch.Tensor) or tokens.shape != want.shape:
        return report(False, "", f"expected shape {tuple(want.shape)} = [batch, patches, width].")
    if not torch.allclose(tokens, want, atol=1e-4):
        return report(False, "", "differs from the strided convolution: flatten the weight to "
                                 "[width, 3*p*p] and multiply each patch by its transpose.")
    return report(True, "a strided convolution is exactly 'cut into patches, then one linear layer'.", "")


def check_add_class_token(add_class_token) -> bool:
    """``add_class_token(x [batch, patches, width], class_embedding [width])`` -> ``[batch, patches + 1, width]``."""
    generator = torch.Generator().manual_seed(2)
    x, class_embedding = torch.randn(3, 4, 6, generator=generator), torch.randn(6, generator=generator)
    out, verdict = _attempt(add_class_token, x, class_embedding)
    if verdict is not None:
        return verdict
    want = torch.cat([class_embedding.expand(3, 1, 6), x], dim=1)
    if not isinstance(out, torch.Tensor) or out.shape != want.shape:
        return report(False, "", "expected shape (3, 5, 6): one extra token per image.")
    if torch.equal(out, torch.cat([x, class_embedding.expand(3, 1, 6)], dim=1)):
        return report(False, "", "the class token goes FIRST (position 0): ln_post reads x[:, 0].")
    if not torch.equal(out, want):
        return report(False, "", "position 0 of every image should hold class_embedding, then the patches.")
    return report(True, "the class token sits at position 0 of every image's sequence.", "")

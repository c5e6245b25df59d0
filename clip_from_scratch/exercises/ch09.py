"""Checks for chapter 09's exercises (where CLIP fails). Each prints a verdict and never raises.

Exercise 1 writes a new perturbation (swap the two shapes, keep the colours
where they are); exercise 2 writes the hard-negative loss by hand. The checks
compare with the package on their own inputs and name the usual mistake.
"""
from __future__ import annotations

import itertools

import numpy as np
import torch
import torch.nn.functional as F

from ..data import relations, shapes
from ..loss import hard_negative_loss
from . import as_tensor, attempt, report


def reference_shape_swap(description: dict) -> dict:
    """The two objects trade shapes, each keeps its colour and size: 'a red square and a blue circle'."""
    first, second = description["first"], description["second"]
    return {**description, "first": {**first, "shape": second["shape"]},
            "second": {**second, "shape": first["shape"]}}


def _descriptions(count: int = 12):
    for index in range(count):
        rng = np.random.default_rng([9, index])
        scene = shapes.sample_pair_scene(rng)
        yield scene, relations.describe(scene, rng, relation_share=0.5)


def check_shape_swap(shape_swap) -> bool:
    """``shape_swap(description) -> description``: same sentence, the two shapes exchanged."""
    for scene, description in _descriptions():
        original = relations.text(description)
        result, verdict = attempt(shape_swap, description)
        if verdict is not None:
            return verdict
        if not isinstance(result, dict):
            return report(False, "", f"return a description (a dict like the one you were given), "
                                      f"got {type(result).__name__}")
        try:
            written = relations.text(result)
        except Exception as err:  # noqa: BLE001 - a dict missing keys, a wrong object inside
            return report(False, "", f"relations.text cannot read your description ({type(err).__name__}: {err}): "
                                     "copy the original with {**description, ...} and change the two objects")
        if relations.text(description) != original:
            return report(False, "", "your function changed the description it was given: build a new dict "
                                     "({**description, 'first': {...}, ...}) instead of editing it in place")
        if written == original:
            return report(False, "", f"'{written}' is the true caption itself: the two shapes must trade places")
        if written in relations.true_captions(scene):
            return report(False, "", f"'{written}' still describes the picture truly; swapping the objects "
                                     "whole is not a shape swap: keep each colour where it is")
        expected = relations.text(reference_shape_swap(description))
        if written != expected:
            return report(False, "", f"for '{original}' expected '{expected}', got '{written}': swap only the "
                                     "'shape' of the two objects, keep colours, sizes and the relation")
    return report(True, "a shape swap: the same words, each shape now wearing the other's colour, and never "
                        "true of the picture", "")


def _features(n: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    image, text, negative = (F.normalize(torch.randn(n, 8, generator=generator), dim=-1) for _ in range(3))
    return image, F.normalize(text + image, dim=-1), negative


def check_negclip_loss(negclip_loss) -> bool:
    """``negclip_loss(image, text, negative, scale) -> scalar``: NegCLIP's B x 2B loss, by hand."""
    for n, seed in itertools.product((1, 4, 9), (0, 1)):
        image, text, negative = _features(n, seed)
        scale = 10.0
        result, verdict = attempt(negclip_loss, image, text, negative, scale)
        if verdict is not None:
            return verdict
        got, problem = as_tensor(result, "the loss")
        if problem:
            return report(False, "", problem)
        if got.numel() != 1:
            return report(False, "", f"return one number (the mean over the batch), got shape {tuple(got.shape)}")
        expected = hard_negative_loss(image, text, negative, scale).item()
        value = got.item()
        if abs(value - expected) <= 1e-4 * max(1.0, abs(expected)):
            continue
        both_sides = (F.cross_entropy(scale * image @ torch.cat([text, negative]).T, torch.arange(n))
                      + F.cross_entropy(scale * torch.cat([text, negative]) @ image.T, torch.arange(2 * n) % n)) / 2
        if abs(value - both_sides.item()) < 1e-4:
            return report(False, "", "the false captions have no image to pick: the text -> image side uses "
                                     "the B true captions only")
        image_only = F.cross_entropy(scale * image @ torch.cat([text, negative]).T, torch.arange(n)).item()
        if abs(value - image_only) < 1e-4 or abs(value - image_only / 2) < 1e-4:
            return report(False, "", "add the text -> image cross-entropy (true captions vs the B images) and "
                                     "average the two directions")
        return report(False, "", f"for a batch of {n} expected {expected:.4f}, got {value:.4f}: image -> text "
                                 "over [true; false] captions (B x 2B), text -> image over the B true ones, "
                                 "both scaled by `scale`, averaged")
    return report(True, "the B x 2B loss, equal to the package's hard_negative_loss", "")

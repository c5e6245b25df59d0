"""Checks for chapter 04's exercises (the contrastive loss). Each prints a verdict and never raises."""
import math

import torch
import torch.nn.functional as F

from . import not_attempted, report


def _features(n=6, dim=8, seed=0):
    generator = torch.Generator().manual_seed(seed)
    image = F.normalize(torch.randn(n, dim, generator=generator), dim=-1)
    text = F.normalize(torch.randn(n, dim, generator=generator) + image, dim=-1)
    return image, text


def _call(fn, *args):
    try:
        return fn(*args), None
    except Exception as err:   # the learner's code may fail in any way: explain, don't crash
        return None, f"calling it raised {type(err).__name__}: {err}"


def check_logits(similarity_logits) -> bool:
    """Exercise 1: ``similarity_logits(image_features, text_features, logit_scale) -> [N, N]``."""
    if not_attempted(similarity_logits):
        return False
    image, text = _features()
    result, error = _call(similarity_logits, image, text, 10.0)
    if error:
        return report(False, "", error)
    if not_attempted(result):   # the placeholder still returns None
        return False
    expected = 10.0 * image @ text.T
    if tuple(result.shape) != tuple(expected.shape):
        return report(False, "", f"shape {tuple(result.shape)}, expected {tuple(expected.shape)} (images x texts)")
    if torch.allclose(result, expected.T, atol=1e-5) and not torch.allclose(result, expected, atol=1e-5):
        return report(False, "", "rows are texts and columns images: logits_per_image has one row per image")
    if torch.allclose(result, image @ text.T, atol=1e-5):
        return report(False, "", "the cosine similarities are right, but multiply them by logit_scale")
    return report(torch.allclose(result, expected, atol=1e-5),
                  "logit_scale * image_features @ text_features.T: entry [i, j] scores image i against text j.",
                  "the values differ from logit_scale * image_features @ text_features.T")


def check_clip_loss(clip_loss) -> bool:
    """Exercise 2: ``clip_loss(image_features, text_features, logit_scale) -> scalar``, both directions."""
    if not_attempted(clip_loss):
        return False
    from ..loss import contrastive_loss
    image, text = _features(seed=1)
    result, error = _call(clip_loss, image, text, 14.0)
    if error:
        return report(False, "", error)
    if not_attempted(result):   # the placeholder still returns None
        return False
    result = torch.as_tensor(result, dtype=torch.float32)
    expected = contrastive_loss(image, text, 14.0)
    logits = 14.0 * image @ text.T
    labels = torch.arange(len(image))
    one_way = F.cross_entropy(logits, labels)
    if result.numel() != 1:
        return report(False, "", f"the loss should be one number, got shape {tuple(result.shape)}")
    if torch.isclose(result, one_way, atol=1e-5) and not torch.isclose(result, expected, atol=1e-5):
        return report(False, "", "that is only the image->text direction: average it with the "
                                 "text->image one (cross-entropy over logits.T)")
    return report(bool(torch.isclose(result, expected, atol=1e-5)),
                  "the symmetric cross-entropy, equal to the package's contrastive_loss.",
                  f"got {result.item():.4f}, expected {expected.item():.4f}: labels are arange(N), "
                  "and the loss is (CE(logits, labels) + CE(logits.T, labels)) / 2")


def check_uniform_loss(answer) -> bool:
    """Exercise 3: the loss of a batch of 32 pairs when every similarity is the same."""
    if not_attempted(answer):
        return False
    expected = math.log(32)
    try:
        value = float(answer)
    except (TypeError, ValueError):
        return report(False, "", f"give a number, got {answer!r}")
    return report(abs(value - expected) < 1e-3,
                  f"ln(32) = {expected:.4f}: each row is a uniform guess among 32 captions.",
                  f"{value:.4f} is not it. If all 32 logits in a row are equal, softmax gives each 1/32; "
                  "what is -log of that?")

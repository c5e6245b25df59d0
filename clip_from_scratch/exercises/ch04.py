"""Checks for chapter 04's exercises (the contrastive loss). Each prints a verdict and never raises.

    >>> check_uniform_loss(None)
    [TODO] Not attempted yet: fill in the cell above and run this one again.
    False
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from . import as_tensor, attempt, not_attempted, report


def _features(n=6, dim=8, seed=0):
    generator = torch.Generator().manual_seed(seed)
    image = F.normalize(torch.randn(n, dim, generator=generator), dim=-1)
    text = F.normalize(torch.randn(n, dim, generator=generator) + image, dim=-1)
    return image, text


def _scalar(result):
    """(one-number tensor, None) or (None, message)."""
    value, error = as_tensor(result, "the loss")
    if error:
        return None, error
    if value.numel() != 1:
        return None, f"the loss should be one number, got shape {tuple(value.shape)}"
    return value.reshape(()), None


def check_logits(similarity_logits) -> bool:
    """``similarity_logits(image_features, text_features, logit_scale) -> [N, N]``."""
    image, text = _features()
    result, verdict = attempt(similarity_logits, image, text, 10.0)
    if verdict is not None:
        return verdict
    result, error = as_tensor(result, "logits_per_image")
    if error:
        return report(False, "", error)
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
    """``clip_loss(image_features, text_features, logit_scale) -> scalar``, both directions."""
    from ..loss import contrastive_loss
    image, text = _features(seed=1)
    result, verdict = attempt(clip_loss, image, text, 14.0)
    if verdict is not None:
        return verdict
    result, error = _scalar(result)
    if error:
        return report(False, "", error)
    expected = contrastive_loss(image, text, 14.0)
    labels = torch.arange(len(image))
    one_way = F.cross_entropy(14.0 * image @ text.T, labels)
    if torch.isclose(result, one_way, atol=1e-5) and not torch.isclose(result, expected, atol=1e-5):
        return report(False, "", "that is only the image->text direction: average it with the "
                                 "text->image one (cross-entropy over logits.T)")
    return report(bool(torch.isclose(result, expected, atol=1e-5)),
                  "the symmetric cross-entropy, equal to the package's contrastive_loss.",
                  f"got {result.item():.4f}, expected {expected.item():.4f}: labels are arange(N), "
                  "and the loss is (CE(logits, labels) + CE(logits.T, labels)) / 2")


def check_uniform_loss(answer) -> bool:
    """The loss of a batch of 32 pairs when every similarity is the same."""
    if not_attempted(answer):
        return False
    expected = math.log(32)
    value, error = _scalar(answer)
    if error:
        return report(False, "", f"give one number: {error}")
    value = value.item()
    if abs(value - math.log2(32)) < 1e-3:
        return report(False, "", "that is log base 2; cross-entropy uses the natural log (math.log).")
    return report(abs(value - expected) < 1e-3,
                  f"ln(32) = {expected:.4f}: each row is a uniform guess among 32 captions.",
                  f"{value:.4f} is not it. If all 32 logits in a row are equal, softmax gives each 1/32; "
                  "what is -log of that?")


def check_sigmoid_loss(siglip_loss) -> bool:
    """``siglip_loss(image_features, text_features, logit_scale, logit_bias) -> scalar``, from SigLIP's formula."""
    from ..loss import sigmoid_loss
    image, text = _features(n=5, seed=2)
    result, verdict = attempt(siglip_loss, image, text, 10.0, -10.0)
    if verdict is not None:
        return verdict
    result, error = _scalar(result)
    if error:
        return report(False, "", error)
    expected = sigmoid_loss(image, text, 10.0, -10.0)
    n = len(image)
    if torch.isclose(result, expected / n, rtol=1e-4):
        return report(False, "", "that is the mean over all N² cells. SigLIP sums the N² cell losses and divides "
                                 "by N, the batch size: one unit of loss per image, however many negatives.")
    logits = 10.0 * image @ text.T - 10.0
    labels = 2 * torch.eye(n) - 1
    if torch.isclose(result, -F.logsigmoid(-labels * logits).sum() / n, rtol=1e-4):
        return report(False, "", "the labels are the wrong way round: +1 on the diagonal (a match), -1 elsewhere.")
    if torch.isclose(result, -F.logsigmoid(labels * (10.0 * image @ text.T)).sum() / n, rtol=1e-4):
        return report(False, "", "close: add logit_bias to every cell, after multiplying by logit_scale.")
    return report(bool(torch.isclose(result, expected, rtol=1e-4)),
                  "-sum(log sigmoid(label * (scale * cos + bias))) / N: equal to the package's sigmoid_loss.",
                  f"got {result.item():.4f}, expected {expected.item():.4f}. Per cell: -log sigmoid(label * "
                  "(logit_scale * cosine + logit_bias)), label +1 on the diagonal and -1 elsewhere; sum, divide by N.")


def _reference_local_loss(image_local, text_local, all_image, all_text, logit_scale, rank):
    labels = torch.arange(len(image_local)) + len(image_local) * rank
    return (F.cross_entropy(logit_scale * image_local @ all_text.T, labels)
            + F.cross_entropy(logit_scale * text_local @ all_image.T, labels)) / 2


def check_local_loss(local_loss) -> bool:
    """``local_loss(image_local, text_local, all_image, all_text, logit_scale, rank) -> scalar``.

    Process ``rank`` holds ``image_local``/``text_local`` (its slice of the
    global batch, ``[N_local, D]``) and the gathered ``all_image``/``all_text``
    (``[N_global, D]``, every rank's slice in rank order).
    """
    from ..loss import contrastive_loss
    world_size, n_local = 3, 4
    all_image, all_text = _features(n=world_size * n_local, seed=3)
    losses = []
    for rank in range(world_size):
        mine = slice(rank * n_local, (rank + 1) * n_local)
        args = (all_image[mine], all_text[mine], all_image, all_text, 14.0, rank)
        result, verdict = attempt(local_loss, *[a.clone() if isinstance(a, torch.Tensor) else a for a in args])
        if verdict is not None:
            return verdict
        result, error = _scalar(result)
        if error:
            return report(False, "", error)
        expected = _reference_local_loss(*args)
        if torch.isclose(result, expected, atol=1e-5):
            losses.append(result)
            continue
        no_offset = _reference_local_loss(*args[:5], rank=0)
        just_local = contrastive_loss(all_image[mine], all_text[mine], 14.0)
        if rank > 0 and torch.isclose(result, no_offset, atol=1e-5):
            return report(False, "", f"rank {rank}: the labels must point at this rank's own pairs in the global "
                                     f"batch: arange(N_local) + N_local * rank, not arange(N_local).")
        if torch.isclose(result, just_local, atol=1e-5):
            return report(False, "", f"rank {rank}: that is the loss of the local batch alone; compare the local "
                                     "images with ALL gathered texts (and local texts with all images).")
        return report(False, "", f"rank {rank}: got {result.item():.4f}, expected {expected.item():.4f}. Logits "
                                 "[N_local, N_global] = logit_scale * image_local @ all_text.T (and text_local @ "
                                 "all_image.T), labels arange(N_local) + N_local * rank, CE both ways, averaged.")
    mean = torch.stack(losses).mean()
    global_loss = contrastive_loss(all_image, all_text, 14.0)
    return report(bool(torch.isclose(mean, global_loss, atol=1e-5)),
                  f"every rank's local loss is right; their mean ({mean.item():.4f}) is the loss of the whole "
                  "global batch, which is why DDP's gradient average gives the single-process gradient "
                  "(with gather_with_grad=True).",
                  "each rank's loss matches, but their mean is not the global loss: check the labels.")

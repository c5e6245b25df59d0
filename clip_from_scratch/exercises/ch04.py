"""Checks for chapter 04's exercises (the contrastive loss). Each prints a verdict and never raises.

Exercises 1 and 4 are experiments: the learner measures something on trained
runs and reports it, and the check reads the runs back
(:mod:`clip_from_scratch.exercises.experiments`).

    >>> check_batch_size(None)
    [TODO] Not attempted yet: fill in the cell above and run this one again.
    False
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from . import as_tensor, attempt, report
from .experiments import Run, check_runs, zeroshot_top1


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


# ----------------------------------------------------------------------------- exercise 1: a fixed temperature
#: The fixed scales to try (1 .. 100, 41 of them, evenly spaced in log).
SCALES = torch.logspace(0, 2, 41)


def validation_pairs(run: Run):
    """The exercise's 64 validation pairs for a shapes run: uint8 images ``[64, 3, R, R]`` and their captions."""
    from ..data import shapes
    return shapes.ShapesDataset(64, run.settings["image_resolution"], split="val", seed=1,
                                spread=run.settings["spread"]).tensors()


@torch.no_grad()
def best_fixed_scale(run: Run) -> float:
    """The scale in :data:`SCALES` with the lowest contrastive loss on :func:`validation_pairs`, for the run's model."""
    from ..loss import contrastive_loss
    from ..train import load_checkpoint
    from ..transforms import normalize
    model, tokenizer = load_checkpoint(f"{run.folder}/checkpoint.pt", "cpu")
    images, captions = validation_pairs(run)
    image_features = F.normalize(model.encode_image(normalize(images)), dim=-1)                   # [64, embed_dim]
    tokens = tokenizer(captions, context_length=model.config.context_length, truncate=True)
    text_features = F.normalize(model.encode_text(tokens), dim=-1)                                # [64, embed_dim]
    losses = torch.stack([contrastive_loss(image_features, text_features, scale) for scale in SCALES.tolist()])
    return SCALES[losses.argmin()].item()


def check_best_scale(best_scale_by_run) -> bool:
    """Exercise 1: ``{run folder: the fixed scale with the lowest loss on the 64 validation pairs}``."""
    def conclude(runs: dict[str, Run]) -> str:
        run = runs["trained"]
        learnt = run.metrics.get("logit_scale", float("nan"))
        ratio = learnt / run.reported
        how = ("close to the best fixed one: training found the temperature a sweep would find, without the sweep"
               if 0.67 <= ratio <= 1.5 else
               "below the best fixed one: the scale starts at 14.3 and grows only as fast as the learning rate "
               "lets it, so a short run ends before it catches up" if ratio < 0.67 else
               "above the best fixed one on held-out pairs: training batches are easier than new ones")
        return (f"best fixed scale {run.reported:.1f} (temperature {1 / run.reported:.3f}); the run learnt "
                f"{learnt:.1f}, {how}. A fixed temperature would need this sweep for every model and data set.")
    # One grid step of SCALES is a factor 10 ** (2 / 40) = 1.12: allow that much either way.
    return check_runs(best_scale_by_run, roles={"trained": {}}, varied=set(), measure=best_fixed_scale,
                      what="best fixed scale", conclude=conclude, tolerance=lambda want: 0.13 * want)


# ----------------------------------------------------------------------------- exercise 4: batch size
def check_batch_size(top1_by_run) -> bool:
    """Exercise 4: ``{run folder: held-out zero-shot top-1 %}`` for batches of 16, 64 and 256 pairs, each run
    seeing the same number of images (steps x batch size)."""
    def same_images(runs: list[Run]) -> str | None:
        seen = {run.folder: run.settings["steps"] * run.settings["batch_size"] for run in runs}
        if len(set(seen.values())) > 1:
            return (f"the runs should see the same number of images (steps x batch size), got {seen}: "
                    "with 4x the batch, take a quarter of the steps")
        return None

    def conclude(runs: dict[str, Run]) -> str:
        parts = []
        for batch in (16, 64, 256):
            run = runs[f"batch {batch}"]
            loss = run.metrics.get("final_loss", float("nan"))
            parts.append(f"batch {batch}: {run.reported:.1f}% (final loss {loss:.2f}, ln {batch} = "
                         f"{math.log(batch):.2f})")
        return ("; ".join(parts) + ". The losses cannot be compared across batch sizes: each is measured "
                "against N - 1 negatives. Zero-shot can: too small a batch gives the model easy negatives and "
                "little to learn from them; too large a batch, at the same images seen, leaves too few steps.")
    return check_runs(top1_by_run, roles={f"batch {b}": {"batch_size": b} for b in (16, 64, 256)},
                      varied={"batch_size", "steps", "warmup_steps"}, measure=zeroshot_top1,
                      what="held-out zero-shot top-1 (%)", conclude=conclude, agree=same_images)

"""Checks for chapter 05's exercises (pre-training). Each prints a verdict and never raises.

Exercises 1 and 3: the checks call the learner's function on their own inputs
and compare with a reference written here (the package's rules); when the
answer is off they name the usual mistake. Exercises 2 and 4 are experiments:
the learner trains small runs and reports what they measured, and the checks
read the runs back (:mod:`clip_from_scratch.exercises.experiments`).
"""
from __future__ import annotations

import math

import torch

from . import attempt_number, not_attempted, report
from .experiments import Run, check_runs, zeroshot_top1


# ----------------------------------------------------------------------------- exercise 1
def reference_linear_schedule(step: int, steps: int, warmup_steps: int, peak_lr: float) -> float:
    """Linear warm-up to ``peak_lr``, then a straight line down to 0 at the last step (``steps - 1``)."""
    if step < warmup_steps:
        return peak_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, steps - warmup_steps - 1)
    return peak_lr * (1 - min(1.0, progress))


def check_linear_schedule(linear_schedule) -> bool:
    """Exercise 1: ``linear_schedule(step, steps, warmup_steps, peak_lr) -> float``."""
    if not_attempted(linear_schedule):
        return False
    for steps, warmup, peak in ((101, 10, 1.0), (50, 5, 3e-4), (1000, 100, 2e-3)):
        for step in sorted({0, 1, warmup - 1, warmup, warmup + 1, steps // 2, steps - 2, steps - 1}):
            want = reference_linear_schedule(step, steps, warmup, peak)
            got, verdict = attempt_number(linear_schedule, step, steps, warmup, peak, what="one number (a float)")
            if verdict is not None:
                return verdict
            if math.isclose(got, want, rel_tol=1e-6, abs_tol=1e-12):
                continue
            where = (f"steps={steps}, warmup_steps={warmup}, peak_lr={peak}, step={step}: "
                     f"got {got:.6g}, expected {want:.6g}")
            if step < warmup and math.isclose(got, peak * step / warmup, rel_tol=1e-6, abs_tol=1e-12):
                return report(False, "", f"{where}. The warm-up starts at 0, so step 0 does not learn at all: "
                                         "use (step + 1) / warmup_steps")
            if step < warmup and math.isclose(got, peak, rel_tol=1e-6):
                return report(False, "", f"{where}. Warm up first: the rate grows linearly over the first "
                                         "warmup_steps steps")
            cosine = peak * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup - 1)))
            if step >= warmup and math.isclose(got, cosine, rel_tol=1e-6, abs_tol=1e-12):
                return report(False, "", f"{where}. That is the cosine of the package; the exercise asks for a "
                                         "straight line from peak_lr down to 0")
            short = peak * (1 - (step - warmup) / max(1, steps - warmup))
            if (step == steps - 1 and got > 0) or (step >= warmup and math.isclose(got, short, rel_tol=1e-6)):
                return report(False, "", f"{where}. The last step (steps - 1) should reach 0: divide the "
                                         "progress by steps - warmup_steps - 1")
            return report(False, "", f"{where}. After the warm-up: peak_lr * (1 - progress), "
                                     "progress = (step - warmup_steps) / (steps - warmup_steps - 1)")
    return report(True, "warm-up, then a straight line to 0 at the last step, at every step checked.", "")


# ----------------------------------------------------------------------------- exercise 2
def _top1_and_loss(run: Run) -> str:
    return f"{run.reported:.1f}% (final loss {run.metrics.get('final_loss', float('nan')):.3f})"


def check_beta2(top1_by_run) -> bool:
    """Exercise 2: ``{run folder: held-out zero-shot top-1 %}`` for two runs, β₂ = 0.98 (the default) and 0.999."""
    def conclude(runs: dict[str, Run]) -> str:
        short, long = runs["beta2 = 0.98"], runs["beta2 = 0.999"]
        gap = long.reported - short.reported
        return (f"beta2 = 0.98: {_top1_and_loss(short)}; beta2 = 0.999: {_top1_and_loss(long)}. "
                + ("A short, calm run like this one has no loss spike for 0.98 to prevent, so the long memory does "
                   "as well or better here; " if gap >= -2 else "The short memory helps even here; ")
                + "CLIP chose 0.98 for large batches and long runs, where the gradient's scale jumps. "
                  "Differences of a few points at this size are run-to-run noise: try another --seed before "
                  "concluding.")
    return check_runs(top1_by_run, roles={"beta2 = 0.98": {"beta2": 0.98}, "beta2 = 0.999": {"beta2": 0.999}},
                      varied={"beta2"}, measure=zeroshot_top1, what="held-out zero-shot top-1 (%)",
                      conclude=conclude)


# ----------------------------------------------------------------------------- exercise 3
def reference_text_to_image_recall(similarity: torch.Tensor, caption_to_image, k: int) -> float:
    """Recall@k (%) for text -> image from ``similarity [images, captions]``; ties count as found."""
    caption_to_image = torch.as_tensor(caption_to_image)
    right = similarity[caption_to_image, torch.arange(similarity.shape[1])]       # [captions]
    better = (similarity > right[None, :]).sum(dim=0)                             # [captions]
    return 100 * (better < k).float().mean().item()


def check_text_to_image_recall(text_to_image_recall) -> bool:
    """Exercise 3: ``text_to_image_recall(similarity [images, captions], caption_to_image, k) -> %``."""
    if not_attempted(text_to_image_recall):
        return False
    generator = torch.Generator().manual_seed(3)
    images, per_image = 7, 3
    caption_to_image = torch.arange(images).repeat_interleave(per_image)          # [captions]
    similarity = torch.randn(images, images * per_image, generator=generator)     # [images, captions]
    similarity[caption_to_image, torch.arange(len(caption_to_image))] += 1.0      # the right image tends to win
    for k in (1, 2, 5):
        want = reference_text_to_image_recall(similarity, caption_to_image, k)
        got, verdict = attempt_number(text_to_image_recall, similarity.clone(), caption_to_image.clone(), k,
                                      what="one number (a percentage)",
                                      hint=". similarity is [images, captions]: a caption's scores are its "
                                           "COLUMN, similarity[:, j]")
        if verdict is not None:
            return verdict
        if math.isclose(got, want, abs_tol=1e-4):
            continue
        if math.isclose(100 * got, want, abs_tol=1e-3) and want > 0:
            return report(False, "", f"k={k}: got {got:.4f}, expected {want:.2f}: return a percentage (x 100)")
        for off, hint in ((k - 1, "found at K means among the K best: the right image may have up to K - 1 "
                                  "images strictly above it"),
                          (k + 1, "one too many: with K - 1 images above it the right one is still in the "
                                  "top K, with K it is not")):
            if off >= 1 and math.isclose(got, reference_text_to_image_recall(similarity, caption_to_image, off),
                                         abs_tol=1e-4):
                return report(False, "", f"k={k}: got {got:.2f}, expected {want:.2f}: off by one; {hint}")
        return report(False, "", f"k={k}: got {got:.2f}, expected {want:.2f}. For caption j, compare its right "
                                 "image's score similarity[caption_to_image[j], j] with the rest of column j")
    return report(True, "recall@1, @2 and @5 from text to image all agree.", "")


# ----------------------------------------------------------------------------- exercise 4
def check_shortcut(top1_by_run) -> bool:
    """Exercise 4: ``{run folder: held-out zero-shot top-1 %}`` for a run with the single-attribute views (the
    defaults, ``--shape-only 0.5 --colour-only 0.25``) and one without (``--shape-only 0 --colour-only 0``)."""
    def conclude(runs: dict[str, Run]) -> str:
        views, none = runs["with the views"], runs["without the views"]
        verdict = ("the shortcut shows: " if none.reported < views.reported - 2 else
                   "no clear gap at this size (try another --seed, or more --steps); ")
        return (f"with the views {_top1_and_loss(views)}, without {_top1_and_loss(none)}: {verdict}trained only on "
                "full 'colour shape' captions, the model never has to separate colour from shape, and on pairs it "
                "never saw it guesses (about 28% in the package's full 2,000-step run, against about 93% with the "
                "views).")
    return check_runs(top1_by_run,
                      roles={"with the views": {"shape_only": 0.5, "colour_only": 0.25},
                             "without the views": {"shape_only": 0.0, "colour_only": 0.0}},
                      varied={"shape_only", "colour_only"}, measure=zeroshot_top1,
                      what="held-out zero-shot top-1 (%)", conclude=conclude)

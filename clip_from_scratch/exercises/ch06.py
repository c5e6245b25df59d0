"""Checks for chapter 06's exercises: the zero-shot classifier and its scores.

Exercises 2-4: each check runs the learner's function on small made-up inputs
and compares with the package (``clip_from_scratch.zeroshot``); when they
differ it names the usual mistake. Exercise 1 is an experiment: the learner
trains two runs and reports their scores, and the check reads the runs back
(:mod:`clip_from_scratch.exercises.experiments`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import as_tensor, attempt, report
from .experiments import Run, check_runs, zeroshot_top1


class _HashText(torch.nn.Module):
    """A stand-in text encoder: each prompt gets a fixed random feature of its own (unnormalised)."""
    def __init__(self, width: int = 8):
        super().__init__()
        self.width = width

    def encode_text(self, prompts):
        rows = []
        for prompt in prompts:
            generator = torch.Generator().manual_seed(sum(ord(c) * (i + 1) for i, c in enumerate(prompt)))
            rows.append(torch.randn(self.width, generator=generator) * (1 + len(prompt) % 5))
        return torch.stack(rows)    # [prompts, width]


def check_topk_accuracy(topk_accuracy) -> bool:
    """``topk_accuracy(logits [N, C], labels [N], k) -> float`` in 0..1."""
    from ..zeroshot import topk_correct
    generator = torch.Generator().manual_seed(6)
    logits, labels = torch.randn(50, 10, generator=generator), torch.randint(0, 10, (50,), generator=generator)
    for k in (1, 3, 5):
        want = topk_correct(logits, labels, (k,))[k].float().mean().item()
        got, verdict = attempt(topk_accuracy, logits.clone(), labels.clone(), k)
        if verdict is not None:
            return verdict
        got, error = as_tensor(got, "the accuracy")
        if error or got.numel() != 1:
            return report(False, "", error or f"return one number (a fraction), got shape {tuple(got.shape)}: "
                                              "take the mean over the rows.")
        got = got.item()
        if abs(got - 100 * want) < 1e-6:
            return report(False, "", "that is a percentage: return a fraction between 0 and 1.")
        if not abs(got - want) <= 1e-6:   # (NaN fails too)
            return report(False, "", f"top-{k}: yours {got:.3f}, expected {want:.3f}. A hit means the true label "
                          f"is among the k largest logits of its row (logits.topk(k, dim=1).indices).")
    return report(True, "top-1, top-3 and top-5 all agree with topk_correct.", "")


def _image_features(n=7, width=8, seed=9):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, width, generator=generator) * torch.rand(n, 1, generator=generator) * 3   # unnormalised


def check_probability_ensemble(probability_ensemble) -> bool:
    """``probability_ensemble(image_features [N, D], encode_text, classnames, templates) -> [N, classes]``.

    The other way to ensemble prompts: one classifier per template, softmax each,
    average the probabilities (rather than averaging the text embeddings).
    """
    text = _HashText()
    classnames, templates = (["red circle", "blue square", "green cross"],
                             ["a photo of a {}.", "a {}.", "a drawing of a {}."])
    image_features = _image_features()
    got, verdict = attempt(probability_ensemble, image_features.clone(), text.encode_text, classnames, templates)
    if verdict is not None:
        return verdict
    got, error = as_tensor(got, "the probabilities")
    if error:
        return report(False, "", error)
    images = F.normalize(image_features, dim=-1)
    per_template = [100 * images @ F.normalize(text.encode_text([t.format(c) for c in classnames]), dim=-1).T
                    for t in templates]                                      # each [N, classes]
    want = torch.stack([logits.softmax(dim=-1) for logits in per_template]).mean(0)
    if got.shape != want.shape:
        return report(False, "", f"shape {tuple(got.shape)}, expected [images, classes] = {tuple(want.shape)}.")
    if torch.allclose(got, want, atol=1e-5):
        return report(True, "one softmax per template, then the average: every row sums to 1.", "")
    if torch.allclose(got, torch.stack(per_template).mean(0).softmax(dim=-1), atol=1e-5):
        return report(False, "", "you averaged the logits and then took one softmax: take the softmax of each "
                                 "template's logits first, then average the probabilities.")
    if torch.allclose(got, torch.stack(per_template).mean(0), atol=1e-4):
        return report(False, "", "those are averaged logits, not probabilities: softmax each template's logits.")
    unscaled = torch.stack([(logits / 100).softmax(dim=-1) for logits in per_template]).mean(0)
    if torch.allclose(got, unscaled, atol=1e-5):
        return report(False, "", "multiply the cosines by 100 (CLIP's logit scale) before each softmax: without it "
                                 "every class gets about the same probability.")
    return report(False, "", "the probabilities differ. Per template: fill it with every class name, encode, "
                             "normalise; logits = 100 * normalise(images) @ those.T; softmax; then average over "
                             "templates.")


def check_top_images(top_images) -> bool:
    """``top_images(image_features [N, D], classifier [D, classes], class_index, k) -> indices [k]``, best first."""
    generator = torch.Generator().manual_seed(10)
    image_features = torch.randn(12, 8, generator=generator)
    classifier = F.normalize(torch.randn(8, 4, generator=generator), dim=0)
    # Replace the worst image by a long vector at a small angle to class 2 (cosine 0.03, 4th best): it wins an
    # unnormalised dot product, but not the cosine ranking.
    direction = classifier[:, 2]
    other = torch.randn(8, generator=generator)
    other = F.normalize(other - (other @ direction) * direction, dim=0)
    worst = (F.normalize(image_features, dim=-1) @ direction).argmin()
    image_features[worst] = 100 * (0.03 * direction + (1 - 0.03 ** 2) ** 0.5 * other)
    got, verdict = attempt(top_images, image_features.clone(), classifier.clone(), 2, 3)
    if verdict is not None:
        return verdict
    try:
        got = [int(i) for i in (got.tolist() if isinstance(got, torch.Tensor) else got)]
    except (TypeError, ValueError):
        return report(False, "", f"return the k image indices (a list or a tensor of ints), got {got!r}.")
    scores = F.normalize(image_features, dim=-1) @ classifier[:, 2]
    want = scores.topk(3).indices.tolist()
    if got == want:
        return report(True, "the 3 images closest to class 2: zero-shot classification read the other way, "
                            "as retrieval.", "")
    if got == (image_features @ classifier[:, 2]).topk(3).indices.tolist():
        return report(False, "", "normalise the image features first: otherwise a long feature vector wins on length, "
                                 "not on direction.")
    if sorted(got) == sorted(want):
        return report(False, "", "the right images in the wrong order: best first (topk sorts for you).")
    if got == (F.normalize(image_features, dim=-1) @ classifier).topk(3, dim=1).indices[2].tolist():
        return report(False, "", "you ranked classes for image 2; here we rank images for class 2: a column of W.")
    return report(False, "", f"got {got}, expected {want}: score every image against column class_index of the "
                             "classifier (after normalising the images), and take the k best.")


def check_heldout(top1_by_run) -> bool:
    """Exercise 1: ``{run folder: held-out zero-shot top-1 %}`` for ``--heldout pairs`` (the held-out colour x shape
    pairs are never drawn) and ``--heldout captions`` (they are drawn, but never named as a pair)."""
    def conclude(runs: dict[str, Run]) -> str:
        never, unnamed = runs["pairs never drawn"], runs["pairs drawn, never named"]
        gap = unnamed.reported - never.reported
        if gap > 2:
            what = ("seeing the pictures helps, even without the words: a red circle captioned 'a circle.' still "
                    "shows what one looks like")
        elif gap < -2:
            what = ("seeing the pictures does not help here, and may hurt: those pictures only ever came with one "
                    "attribute in their caption ('a circle.', 'a red shape.'), which pulls them towards that word")
        else:
            what = "the pictures alone change little here: the score comes from composing the words"
        return (f"never drawn: {never.reported:.1f}%, drawn but never named: {unnamed.reported:.1f}%: {what}. "
                "(At this size runs differ by several points from seed to seed: try --seed 1 before concluding.) "
                "Zero-shot claims on web data are hard for the same reason: a test class may be in the training "
                "pictures under other words.")
    return check_runs(top1_by_run, roles={"pairs never drawn": {"heldout": "pairs"},
                                          "pairs drawn, never named": {"heldout": "captions"}},
                      varied={"heldout"}, measure=zeroshot_top1, what="held-out zero-shot top-1 (%)",
                      conclude=conclude)

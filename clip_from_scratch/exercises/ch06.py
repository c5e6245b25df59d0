"""Checks for chapter 06's exercises: the zero-shot classifier and its scores.

Each check runs the learner's function on small made-up inputs and compares
with the package (``clip_from_scratch.zeroshot``); when they differ it names
the usual mistake.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import not_attempted, report


def _call(function, *args):
    """``(result, None)`` or ``(None, message)``: the learner's code may fail in any way."""
    try:
        return function(*args), None
    except Exception as err:
        return None, f"your function raised {type(err).__name__}: {err}"


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


def check_build_classifier(build_classifier) -> bool:
    """``build_classifier(encode_text, classnames, templates) -> [embed_dim, classes]``."""
    if not_attempted(build_classifier):
        return False
    from ..zeroshot import zero_shot_classifier
    text = _HashText()
    classnames, templates = ["red circle", "blue square", "green cross"], ["a photo of a {}.", "a {}.", "a drawing of a {}."]
    # The package's recipe over the same stand-in encoder: prompts travel as indices into a list.
    seen: list[str] = []
    tokenizer = lambda prompts: torch.tensor([seen.append(p) or len(seen) - 1 for p in prompts])
    model = torch.nn.Module()
    model.encode_text = lambda index: text.encode_text([seen[i] for i in index.tolist()])
    want = zero_shot_classifier(model, classnames, templates, tokenizer, device="cpu", progress=False)
    got, error = _call(build_classifier, text.encode_text, classnames, templates)
    if error:
        return report(False, "", error)
    if got is None:
        not_attempted(None)
        return False
    got = torch.as_tensor(got).float()
    if got.shape == want.T.shape and got.shape != want.shape:
        return report(False, "", f"shape {tuple(got.shape)} is [classes, embed_dim]: transpose it to "
                      f"[embed_dim, classes] = {tuple(want.shape)}, so logits = image_features @ W.")
    if got.shape != want.shape:
        return report(False, "", f"shape {tuple(got.shape)}, expected [embed_dim, classes] = {tuple(want.shape)}")
    if torch.allclose(got, want, atol=1e-5):
        return report(True, "normalise each prompt, average per class, normalise again: the paper's recipe.", "")
    unnormalised_mean = F.normalize(torch.stack([text.encode_text([t.format(c) for t in templates]).mean(0)
                                                 for c in classnames]), dim=-1).T
    if torch.allclose(got, unnormalised_mean, atol=1e-5):
        return report(False, "", "close: L2-normalise every prompt's embedding BEFORE averaging, so a prompt "
                      "with a long feature vector does not outvote the others.")
    if torch.allclose(F.normalize(got, dim=0), want, atol=1e-5):
        return report(False, "", "right direction, wrong length: normalise each class's average again (unit columns).")
    return report(False, "", "the columns differ from the recipe: per class, fill every template, encode, "
                  "normalise each, average, normalise; then stack classes as columns.")


def check_topk_accuracy(topk_accuracy) -> bool:
    """``topk_accuracy(logits [N, C], labels [N], k) -> float`` in 0..1."""
    if not_attempted(topk_accuracy):
        return False
    from ..zeroshot import topk_correct
    generator = torch.Generator().manual_seed(6)
    logits, labels = torch.randn(50, 10, generator=generator), torch.randint(0, 10, (50,), generator=generator)
    for k in (1, 3, 5):
        want = topk_correct(logits, labels, (k,))[k].float().mean().item()
        got, error = _call(topk_accuracy, logits.clone(), labels.clone(), k)
        if error:
            return report(False, "", error)
        if got is None:
            not_attempted(None)
            return False
        got = float(got)
        if abs(got - 100 * want) < 1e-6:
            return report(False, "", "that is a percentage: return a fraction between 0 and 1.")
        if abs(got - want) > 1e-6:
            return report(False, "", f"top-{k}: yours {got:.3f}, expected {want:.3f}. A hit means the true label "
                          f"is among the k largest logits of its row (logits.topk(k, dim=1).indices).")
    return report(True, "top-1, top-3 and top-5 all agree with topk_correct.", "")


def check_most_confused(most_confused) -> bool:
    """``most_confused(confusion [C, C], classnames) -> (true class, predicted class)``: the worst off-diagonal cell."""
    if not_attempted(most_confused):
        return False
    classnames = ["cat", "dog", "fox", "owl"]
    confusion = torch.tensor([[30, 2, 9, 0],      # rows: true class, columns: predicted
                              [4, 41, 1, 0],
                              [7, 3, 12, 0],
                              [0, 0, 1, 50]])
    got, error = _call(most_confused, confusion.clone(), classnames)
    if error:
        return report(False, "", error)
    if got is None:
        not_attempted(None)
        return False
    got = tuple(got)
    if got == ("owl", "owl"):
        return report(False, "", "the diagonal holds the correct predictions: leave it out.")
    if got == ("fox", "cat"):
        return report(False, "", "rows are the true class and columns the prediction: you swapped them.")
    return report(got == ("cat", "fox"), "cats taken for foxes (9 images) is the biggest confusion.",
                  f"got {got}, expected ('cat', 'fox'): zero the diagonal, then find the largest cell.")

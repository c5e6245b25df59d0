"""Checks for chapter 06's exercises: the zero-shot classifier and its scores.

Each check runs the learner's function on small made-up inputs and compares
with the package (``clip_from_scratch.zeroshot``); when they differ it names
the usual mistake.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import as_tensor, attempt, report


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
    from ..zeroshot import zero_shot_classifier
    text = _HashText()
    classnames, templates = (["red circle", "blue square", "green cross"],
                             ["a photo of a {}.", "a {}.", "a drawing of a {}."])
    # The package's recipe over the same stand-in encoder: prompts travel as indices into a list.
    seen: list[str] = []
    tokenizer = lambda prompts: torch.tensor([seen.append(p) or len(seen) - 1 for p in prompts])
    model = torch.nn.Module()
    model.encode_text = lambda index: text.encode_text([seen[i] for i in index.tolist()])
    want = zero_shot_classifier(model, classnames, templates, tokenizer, device="cpu", progress=False)
    got, verdict = attempt(build_classifier, text.encode_text, classnames, templates)
    if verdict is not None:
        return verdict
    got, error = as_tensor(got, "the classifier")
    if error:
        return report(False, "", error)
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


def check_most_confused(most_confused) -> bool:
    """``most_confused(confusion [C, C], classnames) -> (true class, predicted class)``: the worst off-diagonal cell."""
    classnames = ["cat", "dog", "fox", "owl"]
    confusion = torch.tensor([[30, 2, 9, 0],      # rows: true class, columns: predicted
                              [4, 41, 1, 0],
                              [7, 3, 12, 0],
                              [0, 0, 1, 50]])
    got, verdict = attempt(most_confused, confusion.clone(), classnames)
    if verdict is not None:
        return verdict
    try:
        got = tuple(got)
    except TypeError:
        return report(False, "", f"return a pair (true class, predicted class), got {type(got).__name__}.")
    if got == ("owl", "owl"):
        return report(False, "", "the diagonal holds the correct predictions: leave it out.")
    if got == ("fox", "cat"):
        return report(False, "", "rows are the true class and columns the prediction: you swapped them.")
    return report(got == ("cat", "fox"), "cats taken for foxes (9 images) is the biggest confusion.",
                  f"got {got}, expected ('cat', 'fox'): zero the diagonal, then find the largest cell.")


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

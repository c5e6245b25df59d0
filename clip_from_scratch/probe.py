"""Linear probes: what a frozen encoder's features are worth with a few labels (CLIP, Figures 6-7).

A linear probe is multinomial logistic regression on frozen image features.
The CLIP paper trains it with L-BFGS and picks the L2 strength by a sweep on
held-out data; :func:`linear_probe` does the same in torch::

    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.cat([torch.randn(20, 2, generator=g) + 4, torch.randn(20, 2, generator=g) - 4])
    >>> y = torch.tensor([0] * 20 + [1] * 20)
    >>> linear_probe(x[::2], y[::2], x[1::2], y[1::2])      # top-1 % on the test half
    100.0

:func:`few_shot_curve` trains probes on k labelled examples per class
(k = 1, 2, 4, 8, 16) and :func:`shots_matching` reads off how many labelled
examples per class a probe needs to match a zero-shot accuracy: "zero-shot
is worth N shots" (the paper interpolates on a log scale of k, as here).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .errors import CourseError

#: The L2 strengths the sweep tries (``C`` as in scikit-learn: larger C, weaker penalty).
C_GRID = tuple(10.0 ** e for e in range(-3, 4))


class ProbeError(CourseError, ValueError):
    """Features and labels a probe cannot learn from (one class, lengths that differ, ...)."""


def _as_tensors(x, y, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x).detach().cpu().double()
    y = torch.as_tensor(np.asarray(y) if not torch.is_tensor(y) else y).detach().cpu().long()
    if x.ndim != 2:
        raise ProbeError(f"{what} features must be 2-D [examples, features], got shape {tuple(x.shape)}")
    if y.ndim != 1 or len(y) != len(x):
        raise ProbeError(f"{what}: {len(x)} feature rows but labels of shape {tuple(y.shape)}: "
                         f"give one label per row")
    if not torch.isfinite(x).all():
        raise ProbeError(f"{what} features contain NaN or infinite values: check the encoder's output")
    return x, y


def fit_logistic_regression(x: torch.Tensor, y: torch.Tensor, C: float, num_classes: int,
                            max_iter: int = 1000, init: torch.Tensor | None = None,
                            tolerance: float = 1e-6) -> torch.Tensor:
    """Weights ``[features + 1, classes]`` (the last row: the bias) minimising scikit-learn's objective.

    ``sum_i cross_entropy_i + ||W||^2 / (2 C)``, the bias not penalised, by
    L-BFGS with a strong-Wolfe line search, in float64, until no gradient
    entry exceeds ``tolerance`` (or ``max_iter`` iterations, as the paper's 1,000).
    """
    design = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], dim=1)            # [examples, features + 1]
    weights = (init.clone() if init is not None
               else torch.zeros(design.shape[1], num_classes, dtype=x.dtype)).requires_grad_(True)
    optimizer = torch.optim.LBFGS([weights], lr=1, max_iter=max_iter, tolerance_grad=tolerance,
                                  tolerance_change=tolerance * 1e-3, history_size=20, line_search_fn="strong_wolfe")

    def objective():
        optimizer.zero_grad()
        loss = F.cross_entropy(design @ weights, y, reduction="sum") + (weights[:-1] ** 2).sum() / (2 * C)
        loss.backward()
        return loss

    optimizer.step(objective)
    return weights.detach()


def _accuracy(weights: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> float:
    logits = x @ weights[:-1] + weights[-1]                                          # [examples, classes]
    return 100 * (logits.argmax(dim=1) == y).double().mean().item()


def choose_C(x: torch.Tensor, y: torch.Tensor, num_classes: int, held_out: float = 0.25, seed: int = 0,
             grid: Sequence[float] = C_GRID) -> float:
    """The ``C`` of ``grid`` whose probe, trained on part of ``(x, y)``, scores best on the rest.

    The held-out part takes ``held_out`` of the examples of each class that
    has at least two (a class with one example stays in training). With
    nothing to hold out (one example per class), ``C = 1``. Ties go to the
    stronger penalty (smaller C).
    """
    generator = torch.Generator().manual_seed(seed)
    validation = torch.zeros(len(y), dtype=torch.bool)
    for label in y.unique():
        members = (y == label).nonzero()[:, 0]
        members = members[torch.randperm(len(members), generator=generator)]
        if len(members) >= 2:
            validation[members[:max(1, int(round(held_out * len(members))))]] = True
    if not validation.any():
        return 1.0
    best, best_score, weights = 1.0, -1.0, None
    for C in sorted(grid):   # weak to strong fits: each one starts from the last (a warm start)
        weights = fit_logistic_regression(x[~validation], y[~validation], C, num_classes, init=weights)
        score = _accuracy(weights, x[validation], y[validation])
        if score > best_score:
            best, best_score = C, score
    return best


def linear_probe(train_x, train_y, test_x, test_y, C: float | None = None, max_iter: int = 1000) -> float:
    """Top-1 (%) on ``test`` of a logistic regression trained on ``train`` (features frozen).

    Features ``[examples, features]`` and labels ``[examples]`` as torch
    tensors or numpy arrays. ``C`` is scikit-learn's inverse L2 strength; when
    None it is chosen by :func:`choose_C` on a held-out part of the training
    features, as the paper chose its L2 strength on a validation split.
    """
    train_x, train_y = _as_tensors(train_x, train_y, "training")
    test_x, test_y = _as_tensors(test_x, test_y, "test")
    if train_x.shape[1] != test_x.shape[1]:
        raise ProbeError(f"training features have width {train_x.shape[1]} but test features {test_x.shape[1]}: "
                         f"encode both with the same model")
    if len(test_y) == 0:
        raise ProbeError("the test set is empty: nothing to score the probe on")
    classes = train_y.unique()
    if len(classes) < 2:
        raise ProbeError(f"the training labels hold {len(classes)} class: a classifier needs examples "
                         f"of at least two")
    if train_y.min() < 0 or test_y.min() < 0:
        raise ProbeError("labels must be class indices 0, 1, 2, ... (no negative numbers)")
    if C is not None and not C > 0:
        raise ProbeError(f"C must be positive (got {C}): it is the inverse of the L2 strength")
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    if C is None:
        C = choose_C(train_x, train_y, num_classes)
    weights = fit_logistic_regression(train_x, train_y, C, num_classes, max_iter=max_iter)
    return _accuracy(weights, test_x, test_y)


def few_shot_curve(features, labels, shots: Sequence[int] = (1, 2, 4, 8, 16), seeds: Sequence[int] = (0, 1, 2),
                   test_features=None, test_labels=None, C: float | None = None) -> dict[int, float]:
    """Mean top-1 (%) over ``seeds`` of probes trained on ``k`` examples per class, for each ``k`` in ``shots``.

    Each seed draws ``k`` examples of every class from ``features``; the probe
    is scored on ``test_features`` (or, when None, on every example not drawn).
    A class with fewer than ``k + 1`` examples (``k`` without a separate test
    set) is an error: ask for fewer shots.

    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.randn(60, 8, generator=g) + 3 * torch.eye(3, 8).repeat(20, 1)   # 3 classes, 20 each
    >>> curve = few_shot_curve(x, torch.arange(3).repeat(20), shots=(1, 4), seeds=(0,))
    >>> sorted(curve), all(0 <= v <= 100 for v in curve.values())
    ([1, 4], True)
    """
    features, labels = _as_tensors(features, labels, "few-shot")
    separate_test = test_features is not None
    if separate_test:
        test_features, test_labels = _as_tensors(test_features, test_labels, "test")
    if not shots or min(shots) < 1:
        raise ProbeError(f"shots must be positive numbers of examples per class (got {tuple(shots)})")
    counts = torch.bincount(labels)
    present = counts[counts > 0]
    needed = max(shots) + (0 if separate_test else 1)
    if len(present) < 2:
        raise ProbeError("the labels hold one class: a few-shot probe needs at least two")
    if present.min() < needed:
        raise ProbeError(f"the rarest class has {int(present.min())} examples but {max(shots)} shots need "
                         f"{needed}: ask for fewer shots")
    curve = {}
    for k in shots:
        scores = []
        for seed in seeds:
            generator = torch.Generator().manual_seed(seed)
            chosen = torch.zeros(len(labels), dtype=torch.bool)
            for label in labels.unique():
                members = (labels == label).nonzero()[:, 0]
                chosen[members[torch.randperm(len(members), generator=generator)[:k]]] = True
            test_x, test_y = (test_features, test_labels) if separate_test else (features[~chosen], labels[~chosen])
            scores.append(linear_probe(features[chosen], labels[chosen], test_x, test_y, C=C))
        curve[k] = sum(scores) / len(scores)
    return curve


def shots_matching(curve: dict[int, float], accuracy: float) -> float:
    """Labelled examples per class a probe needs to reach ``accuracy``: log-linear between measured k.

    ``0`` when even the fewest shots beat it; ``inf`` when even the most fall short.

    >>> round(shots_matching({1: 40.0, 2: 50.0, 4: 60.0, 8: 70.0}, 55.0), 2)   # half way from 2 to 4 on log2 k
    2.83
    """
    ks = sorted(curve)
    if accuracy <= curve[ks[0]]:
        return 0.0 if accuracy < curve[ks[0]] else float(ks[0])
    for low, high in zip(ks, ks[1:]):
        if curve[low] < accuracy <= curve[high]:
            fraction = (accuracy - curve[low]) / (curve[high] - curve[low])
            return 2 ** (math.log2(low) + fraction * (math.log2(high) - math.log2(low)))
    return math.inf


@torch.no_grad()
def shapes_zeroshot_vs_probes(model, tokenize, resolution: int, seed: int = 0, test_images: int = 300,
                              pool_images: int = 300, shots: Sequence[int] = (1, 2, 4, 8, 16),
                              seeds: Sequence[int] = (0, 1, 2)) -> dict:
    """Zero-shot against k-shot linear probes on the same frozen features: the six held-out shapes pairs.

    Both classify among the six pairs training never showed: zero-shot from
    the prompts alone (the model's own objective, objectives.py), the probes
    from ``k`` labelled images per pair drawn from another ``pool_images``
    (another seed). Returns ``{"zeroshot": %, "curve": {k: %}, "worth": shots}``
    where ``worth`` is :func:`shots_matching`: labelled images per class the
    probe needs to match zero-shot.
    """
    from .data import shapes
    from .objectives import objective_of, zeroshot_top1
    from .transforms import normalize
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    to_task = {label: index for index, label in enumerate(shapes.HELD_OUT_LABELS)}   # 30 names -> the 6 pairs
    names = [shapes.CLASSNAMES[label] for label in shapes.HELD_OUT_LABELS]

    def encoded(size, data_seed):
        data = shapes.ShapesDataset(size, resolution, split="zeroshot", seed=data_seed)
        images, _ = data.tensors()
        labels = torch.tensor([to_task[int(label)] for label in data.labels()])
        pixels = normalize(images).to(device)
        features = torch.cat([model.encode_image(chunk).float().cpu() for chunk in pixels.split(500)])
        return pixels, features, labels

    test_pixels, test_features, test_labels = encoded(test_images, seed)
    _, pool_features, pool_labels = encoded(pool_images, seed + 1)
    zeroshot = zeroshot_top1(objective_of(model), model, tokenize, test_pixels, test_labels, names,
                             list(shapes.TEMPLATES))
    curve = few_shot_curve(pool_features, pool_labels, shots, seeds, test_features, test_labels)
    model.train(was_training)
    return {"zeroshot": zeroshot, "curve": curve, "worth": shots_matching(curve, zeroshot)}

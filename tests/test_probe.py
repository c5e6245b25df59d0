"""Linear probes (probe.py) against scikit-learn's LogisticRegression on the same features."""
import math

import numpy as np
import pytest
import torch

from clip_from_scratch.errors import CourseError
from clip_from_scratch.probe import (
    ProbeError,
    choose_C,
    few_shot_curve,
    fit_logistic_regression,
    linear_probe,
    shots_matching,
)

sklearn_linear = pytest.importorskip("sklearn.linear_model")


def blobs(n_per_class=30, classes=4, width=6, spread=1.5, seed=0):
    """Overlapping Gaussian clusters: a problem where the L2 strength matters."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, width)) * 2
    x = np.concatenate([centres[c] + spread * rng.normal(size=(n_per_class, width)) for c in range(classes)])
    y = np.repeat(np.arange(classes), n_per_class)
    order = rng.permutation(len(y))
    return x[order], y[order]


@pytest.mark.parametrize("C", [0.01, 1.0, 100.0])
def test_fit_matches_sklearn_probabilities(C):
    x, y = blobs()
    reference = sklearn_linear.LogisticRegression(C=C, max_iter=5000, tol=1e-10).fit(x, y)
    weights = fit_logistic_regression(torch.tensor(x), torch.tensor(y), C, num_classes=4, tolerance=1e-10)
    ours = torch.softmax(torch.tensor(x) @ weights[:-1] + weights[-1], dim=1).numpy()
    np.testing.assert_allclose(ours, reference.predict_proba(x), atol=2e-4)


def test_linear_probe_scores_like_sklearn_on_held_out_features():
    x, y = blobs(n_per_class=60, seed=1)
    train, test = slice(0, 160), slice(160, None)
    reference = sklearn_linear.LogisticRegression(C=0.5, max_iter=5000).fit(x[train], y[train])
    expected = 100 * reference.score(x[test], y[test])
    assert linear_probe(x[train], y[train], x[test], y[test], C=0.5) == pytest.approx(expected, abs=1e-9)
    # torch tensors in give the same number as numpy arrays
    assert linear_probe(torch.tensor(x[train]).float(), torch.tensor(y[train]), torch.tensor(x[test]),
                        torch.tensor(y[test]), C=0.5) == pytest.approx(expected, abs=1e-9)


def test_the_sweep_picks_a_strong_penalty_when_features_are_mostly_noise():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 20)
    x = np.concatenate([y[:, None] * 1.0, rng.normal(size=(40, 30)) * 3], axis=1)   # 1 signal + 30 noise dims
    C = choose_C(torch.tensor(x), torch.tensor(y), num_classes=2)
    assert C <= 1.0
    assert choose_C(torch.randn(3, 2).double(), torch.tensor([0, 1, 2]), 3) == 1.0   # nothing to hold out


def test_linear_probe_with_the_sweep_learns_separable_classes():
    x, y = blobs(n_per_class=40, spread=0.3)
    assert linear_probe(x[:100], y[:100], x[100:], y[100:]) == 100.0


def test_few_shot_curve_rises_with_shots_and_shots_matching_reads_it():
    x, y = blobs(n_per_class=60, spread=2.0, seed=3)
    curve = few_shot_curve(x, y, shots=(1, 4, 16), seeds=(0, 1))
    assert list(curve) == [1, 4, 16]
    assert curve[16] > curve[1]
    middle = (curve[1] + curve[16]) / 2
    assert 1 < shots_matching(curve, middle) < 16
    assert shots_matching(curve, 101.0) == math.inf
    assert shots_matching(curve, -1.0) == 0.0


def test_few_shot_curve_with_a_separate_test_set():
    x, y = blobs(n_per_class=30, spread=0.3)
    curve = few_shot_curve(x[:60], y[:60], shots=(2,), seeds=(0,), test_features=x[60:], test_labels=y[60:])
    assert curve[2] > 90


@pytest.mark.parametrize("call, message", [
    (lambda: linear_probe(np.zeros((4, 2)), np.zeros(4), np.zeros((2, 2)), np.zeros(2)), "at least two"),
    (lambda: linear_probe(np.zeros((4, 2)), np.array([0, 1, 0]), np.zeros((2, 2)), np.zeros(2)), "one label per row"),
    (lambda: linear_probe(np.zeros((4, 2)), np.array([0, 1, 0, 1]), np.zeros((2, 3)), np.zeros(2)), "same model"),
    (lambda: linear_probe(np.zeros(4), np.array([0, 1, 0, 1]), np.zeros((2, 2)), np.zeros(2)), "2-D"),
    (lambda: linear_probe(np.full((4, 2), np.nan), np.array([0, 1, 0, 1]), np.zeros((2, 2)), np.zeros(2)), "NaN"),
    (lambda: linear_probe(np.zeros((4, 2)), np.array([0, 1, 0, 1]), np.zeros((2, 2)), np.zeros(2), C=0), "positive"),
    (lambda: few_shot_curve(np.zeros((6, 2)), np.array([0, 0, 0, 1, 1, 1]), shots=(4,)), "fewer shots"),
])
def test_bad_input_gets_one_line(call, message):
    with pytest.raises(ProbeError) as err:
        call()
    assert isinstance(err.value, CourseError)
    assert message in str(err.value) and "\n" not in str(err.value)

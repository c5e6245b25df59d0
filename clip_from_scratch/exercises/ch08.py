"""Checks for chapter 08's exercises (why contrastive). Each prints a verdict and never raises.

The exercises are experiments: the learner trains runs, reads numbers off
them and reports those numbers. Each check recomputes the number from the
learner's own run folder and accepts the report within a tolerance, so it
tests what the learner read and how, not re-typed code.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from . import not_attempted, report


def _number(value) -> float | None:
    """A finite float from a number or a one-element tensor/array; None otherwise."""
    if isinstance(value, bool) or callable(value):
        return None
    try:
        if hasattr(value, "numel") and value.numel() != 1:
            return None
        number = float(value.item() if hasattr(value, "item") else value)
    except (TypeError, ValueError, RuntimeError):
        return None
    return number if math.isfinite(number) else None


def _metrics(run_dir) -> tuple[dict | None, str | None]:
    """A run folder's metrics.json, or a message saying why it cannot be read."""
    if run_dir is None:
        return None, "pass the run's folder too, e.g. check(answer, 'runs/ch08_batch16')"
    try:
        return json.loads((Path(run_dir) / "metrics.json").read_text()), None
    except (OSError, TypeError, ValueError) as err:
        return None, f"cannot read {run_dir}/metrics.json ({type(err).__name__}): has that run finished?"


def check_batch_size_gap(answer, small_run=None, large_run=None, tolerance: float = 0.5) -> bool:
    """Exercise 1: zero-shot top-1 of the batch-256 run minus that of the batch-16 run, same images seen."""
    if not_attempted(answer):
        return False
    got = _number(answer)
    if got is None:
        return report(False, "", f"expected one number (percentage points), got {type(answer).__name__}: "
                                 "large batch's zero-shot top-1 minus the small batch's")
    small, problem = _metrics(small_run)
    large, problem_large = _metrics(large_run) if not problem else (None, None)
    if problem or problem_large:
        return report(False, "", problem or problem_large)
    try:
        seen = [m["config"]["steps"] * m["config"]["batch_size"] for m in (small, large)]
        batches = [m["config"]["batch_size"] for m in (small, large)]
        expected = large["zeroshot_top1"] - small["zeroshot_top1"]
    except (KeyError, TypeError):
        return report(False, "", "those folders' metrics.json lack config or zeroshot_top1: are they shapes runs?")
    if batches[0] >= batches[1]:
        return report(False, "", f"the first folder should hold the small batch, the second the large "
                                 f"(got batch {batches[0]} then {batches[1]})")
    if seen[0] != seen[1]:
        return report(False, "", f"the runs saw {seen[0]:,} and {seen[1]:,} images: give the small batch "
                                 f"{batches[1] // batches[0]}x the steps, so both see the same images")
    if abs(got + expected) <= tolerance < abs(got - expected):
        return report(False, "", f"{got:+.1f} has the wrong sign: large batch minus small batch")
    return report(abs(got - expected) <= tolerance,
                  f"{got:+.1f} points for 16x the batch at {seen[0]:,} images seen (measured: {expected:+.2f})",
                  f"your runs' metrics.json give {expected:+.2f} points (large minus small), not {got:+.2f}")


def attribute_accuracy(run_dir) -> dict:
    """``{"colour": %, "shape": %}``: how often the run's zero-shot guess on held-out pairs has the right colour,
    and the right shape (the reference the check compares with)."""
    from ..data import shapes
    from ..objectives import objective_of
    from ..runs import load_checkpoint
    from ..train_config import TrainConfig
    from ..transforms import normalize

    model, tokenizer = load_checkpoint(Path(run_dir))
    config = TrainConfig.from_dict(json.loads((Path(run_dir) / "metrics.json").read_text())["config"])
    test = shapes.zeroshot_set(config.zeroshot_images, config.image_resolution, config.seed, config.spread)
    prompts = [t.format(name) for name in test["classnames"] for t in test["templates"]]
    tokens = tokenizer.tokenize(prompts, context_length=model.config.context_length, truncate=True)
    with torch.no_grad():
        scores = objective_of(model).class_scores(model, normalize(test["images"]), tokens, len(test["classnames"]))
    guessed = [shapes.CLASSES[i] for i in scores.argmax(1).tolist()]
    truth = [shapes.CLASSES[i] for i in test["labels"].tolist()]
    return {what: 100 * sum(g[i] == t[i] for g, t in zip(guessed, truth)) / len(truth)
            for i, what in enumerate(("colour", "shape"))}


def check_bow_attributes(answer, bow_run=None, tolerance: float = 1.0) -> bool:
    """Exercise 2: ``{"colour": %, "shape": %}`` of the bag-of-words run's zero-shot guesses on held-out pairs."""
    if not_attempted(answer):
        return False
    if not isinstance(answer, dict) or set(answer) != {"colour", "shape"}:
        return report(False, "", f"expected a dict {{'colour': %, 'shape': %}}, got {type(answer).__name__}"
                                 + (f" with keys {sorted(map(str, answer))}" if isinstance(answer, dict) else ""))
    got = {key: _number(value) for key, value in answer.items()}
    if None in got.values() or not all(0 <= v <= 100 for v in got.values()):
        return report(False, "", "both values should be percentages between 0 and 100")
    metrics, problem = _metrics(bow_run)
    if problem:
        return report(False, "", problem)
    if (metrics.get("config") or {}).get("objective") != "bow":
        return report(False, "", f"{bow_run} is a {(metrics.get('config') or {}).get('objective', '?')} run: "
                                 "pass the bag-of-words run's folder")
    try:
        expected = attribute_accuracy(bow_run)
    except Exception as err:  # noqa: BLE001 - a damaged run folder is reported, never raised
        return report(False, "", f"could not score {bow_run} ({type(err).__name__}: {err})")
    swapped = all(abs(got[a] - expected[b]) <= tolerance for a, b in (("colour", "shape"), ("shape", "colour")))
    close = all(abs(got[key] - expected[key]) <= tolerance for key in got)
    if not close and swapped:
        return report(False, "", "colour and shape are swapped: a guess has the right colour when its first word "
                                 "matches the truth's")
    return report(close, f"colour {got['colour']:.1f}%, shape {got['shape']:.1f}% (measured: "
                         f"{expected['colour']:.1f}%, {expected['shape']:.1f}%)",
                  f"the run gives colour {expected['colour']:.1f}% and shape {expected['shape']:.1f}%, "
                  f"not {got['colour']:.1f}% and {got['shape']:.1f}%: count a guess right on colour when its "
                  f"colour is the truth's, whatever its shape")

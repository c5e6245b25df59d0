"""Checks for exercises where the learner runs an experiment and reports what it measured.

The learner trains a few small runs, with the command line
(``clip-from-scratch pretrain --out runs/ex05_base ...``) or with
``train(TrainConfig(out_dir="runs/ex05_base", ...))``, and reports what each
run measured as a dict ``{run folder: number}``. A check then

1. reads every run back from its folder: its settings from ``metrics.json``
   (written when a run finishes), its weights from ``checkpoint.pt``;
2. finds which run plays which part (the ``roles``: the settings each part must have);
3. makes sure the runs differ only in what the exercise varies;
4. recomputes each number from the run's own weights and compares it with the
   learner's reading (so a number read off the wrong line, or made up, is caught);
5. says what the numbers show.

It never trains anything itself: recomputing a zero-shot score from a
checkpoint takes a fraction of a second.

    >>> check_runs(None, roles={}, varied=set(), measure=zeroshot_top1, what="", conclude=str)
    [TODO] Not attempted yet: fill in the cell above and run this one again.
    False
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable

from . import not_attempted, number, report


@dataclass
class Run:
    """One finished run as the learner reported it."""
    folder: str
    settings: dict     # the run's TrainConfig, as metrics.json stores it
    metrics: dict      # everything else metrics.json holds (zeroshot_top1, final_loss, train_seconds, ...)
    reported: float    # the learner's number for it


def reported_runs(answer, count: int, what: str) -> tuple[list[Run] | None, bool | None]:
    """``(runs, None)``, or ``(None, verdict)`` when the answer is not ``count`` finished runs with a number each."""
    example = "{'runs/ex_a': 31.5, 'runs/ex_b': 12.0}"
    if not_attempted(answer):
        return None, False
    if not isinstance(answer, dict):
        return None, report(False, "", f"report a dict {{run folder: {what}}}, e.g. {example}; got "
                                       f"{type(answer).__name__}")
    if len(answer) != count:
        return None, report(False, "", f"report {count} runs, one entry each ({{run folder: {what}}}); got "
                                       f"{len(answer)}")
    runs = []
    for folder, value in answer.items():
        reported = number(value)
        if reported is None:
            return None, report(False, "", f"{folder!r}: report {what} as one number, got {value!r}"[:300])
        path = Path(str(folder)) / "metrics.json"
        if not path.is_file():
            return None, report(False, "", f"no finished run in {str(folder)!r}: run its command first (a run "
                                           "writes metrics.json there when it ends), then report its number")
        try:
            metrics = json.loads(path.read_text())
            settings = dict(metrics.pop("config"))
        except (ValueError, KeyError, TypeError) as err:
            return None, report(False, "", f"{path} cannot be read ({type(err).__name__}): run the command again")
        runs.append(Run(str(folder), settings, metrics, reported))
    return runs, None


def _same(a, b) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def assign(runs: list[Run], roles: dict[str, dict]) -> tuple[dict[str, Run] | None, bool | None]:
    """``({role: run}, None)``: each role's run is the one whose settings match it; or ``(None, verdict)``."""
    matches = {role: [run for run in runs if all(_same(run.settings.get(k), v) for k, v in wanted.items())]
               for role, wanted in roles.items()}
    # A part no run plays is the clearer message, so it comes first.
    for role in sorted(roles, key=lambda role: len(matches[role]) != 0):
        if len(matches[role]) != 1:
            wanted = roles[role]
            asked = ", ".join(f"{k}={v}" for k, v in wanted.items())
            seen = "; ".join(f"{run.folder}: " + ", ".join(f"{k}={run.settings.get(k)}" for k in wanted)
                             for run in runs)
            how = "none of the runs has" if not matches[role] else "more than one run has"
            return None, report(False, "", f"the run '{role}' needs {asked}, and {how} those settings ({seen})")
    found = {role: matching[0] for role, matching in matches.items()}
    return found, None


def different_settings(runs: list[Run], varied: set[str]) -> bool | None:
    """None when the runs agree on every setting that defines a run except ``varied``; else a verdict."""
    from ..train_config import TrainConfig
    # The settings a resumed run must keep are the ones that make two runs different runs.
    defining = TrainConfig.run_defining()
    first = runs[0]
    for run in runs[1:]:
        for key in defining:
            if key not in varied and not _same(run.settings.get(key), first.settings.get(key)):
                return report(False, "", f"the runs should differ only in {', '.join(sorted(varied))}, but "
                                         f"{key} is {first.settings.get(key)} in {first.folder} and "
                                         f"{run.settings.get(key)} in {run.folder}: give both the same")
    return None


def zeroshot_top1(run: Run) -> float:
    """Held-out zero-shot top-1 (%) of a shapes run, recomputed from its checkpoint as the run scored it."""
    from ..runs import load_checkpoint
    from ..train_config import TrainConfig
    from ..train_data import ShapesEvaluation
    model, tokenizer = load_checkpoint(Path(run.folder) / "checkpoint.pt", "cpu")
    settings = {**run.settings, "device": "cpu"}
    # As the run itself scored it: its own BPE, its context, captions too long for it cut (end-of-text kept).
    tokenize = partial(tokenizer.tokenize, context_length=model.config.context_length, truncate=True)
    return ShapesEvaluation(TrainConfig(**settings)).score(model, tokenize)


def check_readings(runs: list[Run], measure: Callable[[Run], float], what: str,
                   tolerance: float | Callable[[float], float]) -> bool | None:
    """None when every reported number is within ``tolerance`` of ``measure(run)``; else a verdict.

    ``tolerance`` is a number, or a function of the recomputed value (for a relative one).
    """
    for run in runs:
        try:
            want = measure(run)
        except Exception as err:  # noqa: BLE001 - a deleted or foreign checkpoint: say so, never raise
            return report(False, "", f"{run.folder}: its checkpoint cannot be read back ({type(err).__name__}: "
                                     f"{err}); run its command again")
        allowed = tolerance(want) if callable(tolerance) else tolerance
        if abs(run.reported - want) <= allowed:
            continue
        hint = (": report a percentage (x 100)" if want > 1 and abs(100 * run.reported - want) <= allowed
                else ": read it off the last lines the run printed, or metrics.json")
        return report(False, "", f"{run.folder}: you reported {run.reported:g}, but its {what} is {want:.1f} "
                                 f"(recomputed from its checkpoint){hint}")
    return None


def check_runs(answer, roles: dict[str, dict], varied: set[str], measure: Callable[[Run], float], what: str,
               conclude: Callable[[dict[str, Run]], str], tolerance: float | Callable[[float], float] = 2.0,
               agree: Callable[[list[Run]], str | None] | None = None) -> bool:
    """The whole check of an experiment: the runs, their parts, their settings, the readings, then what they show.

    ``conclude({role: run}) -> str`` says what the learner's numbers show; it
    is printed after ``[OK]``. ``agree(runs)`` may add a condition on the runs
    (a message when they break it, None when they keep it).
    """
    runs, verdict = reported_runs(answer, len(roles), what)
    if verdict is not None:
        return verdict
    by_role, verdict = assign(runs, roles)
    if verdict is not None:
        return verdict
    verdict = different_settings(runs, varied)
    problem = agree(runs) if agree is not None and verdict is None else None
    if problem:
        verdict = report(False, "", problem)
    if verdict is None:
        verdict = check_readings(runs, measure, what, tolerance)
    if verdict is not None:
        return verdict
    return report(True, conclude(by_role), "")

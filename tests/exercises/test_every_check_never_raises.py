"""Every exercise check, in every chapter, answers odd input with a message and False, never an exception.

A learner passes whatever they have: a number, a list, a tensor, a string, a
function that returns any of those, a function that raises. The notebook
must run on, and the check must say what it expected.
"""
import importlib
import inspect
import math
import pkgutil
from pathlib import Path

import pytest
import torch

import clip_from_scratch.exercises as exercises
from clip_from_scratch.exercises import ch04

# Every chNN module in the package: a new chapter's checks are held to this test without a list to update.
MODULES = [importlib.import_module(f"{exercises.__name__}.{info.name}")
           for info in pkgutil.iter_modules(exercises.__path__) if info.name.startswith("ch")]
CHECKS = [function for module in MODULES
          for name, function in inspect.getmembers(module, inspect.isfunction)
          if name.startswith("check_") and function.__module__ == module.__name__]
NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


def raises(*args):
    raise ValueError("learner's bug")


ODD_VALUES = [3.5, [1, 2], torch.zeros(3), torch.tensor(float("nan")), "text", {}, (1, "a"), -1]
ODD_ANSWERS = ODD_VALUES + [lambda *args, v=v: v for v in ODD_VALUES] + [raises]


def test_every_chapter_with_exercises_has_checks():
    chapters = {check.__module__.rsplit(".", 1)[1] for check in CHECKS}
    with_exercises = {f"ch{p.name.split('_')[0]}" for p in NOTEBOOKS.glob("[0-9][0-9]*_*.ipynb")} - {"ch00"}
    assert chapters == with_exercises
    assert len(CHECKS) >= 24


@pytest.mark.parametrize("check", CHECKS, ids=lambda f: f"{f.__module__.rsplit('.', 1)[1]}.{f.__name__}")
@pytest.mark.parametrize("answer", ODD_ANSWERS, ids=lambda a: getattr(a, "__name__", type(a).__name__))
def test_odd_answer_gets_a_message_not_an_exception(check, answer, capsys):
    assert check(answer) is False
    out = capsys.readouterr().out
    assert out.startswith("[NOT YET]") or out.startswith("[TODO]"), out


@pytest.mark.parametrize("check", CHECKS, ids=lambda f: f"{f.__module__.rsplit('.', 1)[1]}.{f.__name__}")
def test_none_means_not_attempted(check, capsys):
    assert check(None) is False
    assert capsys.readouterr().out.startswith("[TODO]")


def test_a_number_exercise_takes_a_plain_float():
    assert ch04.check_uniform_loss(math.log(32)) is True

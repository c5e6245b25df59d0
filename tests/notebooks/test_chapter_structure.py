"""Every chapter follows the course's shape, so learners meet the same start and end.

These checks read the notebooks as JSON; nbval (run by `pytest` over
notebooks/) executes them.
"""
import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("[0-9][0-9]*_*.ipynb"))  # 03b_... too


def load(path):
    return json.loads(path.read_text(encoding="utf-8"))


def source(cell):
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def test_the_course_has_chapters():
    assert NOTEBOOKS, "no notebooks found in notebooks/"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_header_has_badges_colab_install_and_device_cell(path):
    cells = load(path)["cells"]
    first = source(cells[0])
    assert ("colab.research.google.com/github/clip-from-scratch/clip-from-scratch/blob/main/notebooks/"
            f"{path.name}" in first), \
        "the first cell should carry an Open-in-Colab badge pointing at this very notebook"
    assert "mybinder.org" in first and path.name in first, "the first cell should carry a Binder link"
    code = [source(c) for c in cells if c["cell_type"] == "code"]
    assert any('"google.colab" in sys.modules' in c and "pip install" in c for c in code[:2]), \
        "the first code cell should install the package on Colab only"
    assert any("pick_device()" in c and "FAST" in c for c in code[:3]), \
        "an early code cell should pick the device and show the fast-mode flag"


# Stored outputs: only those of a full-mode run by tools/render_notebooks.py (tests/notebooks/test_stored_outputs.py).


@pytest.mark.parametrize("path", [p for p in NOTEBOOKS if not p.name.startswith("00_")], ids=lambda p: p.name)
def test_chapter_ends_with_checked_exercises(path):
    code = "\n".join(source(c) for c in load(path)["cells"] if c["cell_type"] == "code")
    chapter = path.name.split("_")[0]  # "03", "03b"
    checks = re.findall(rf"exercises\.ch{chapter}\b|from clip_from_scratch\.exercises import .*\bch{chapter}\b", code)
    assert checks, f"{path.name} should check its exercises with clip_from_scratch.exercises.ch{chapter}"


def exercise_layout(path):
    """(indices of '### Exercise' headings, index of the '## Solutions' heading or None, cells)."""
    cells = load(path)["cells"]
    exercises = [i for i, c in enumerate(cells)
                 if c["cell_type"] == "markdown" and re.search(r"^### Exercise \d", source(c), re.MULTILINE)]
    solutions = [i for i, c in enumerate(cells)
                 if c["cell_type"] == "markdown" and source(c).strip().splitlines()[0] == "## Solutions"]
    return exercises, solutions, cells


CHAPTERS_WITH_EXERCISES = [p for p in NOTEBOOKS if not p.name.startswith("00_")]


@pytest.mark.parametrize("path", CHAPTERS_WITH_EXERCISES, ids=lambda p: p.name)
def test_two_to_four_exercises_then_one_solutions_section_at_the_end(path):
    exercises, solutions, cells = exercise_layout(path)
    assert 2 <= len(exercises) <= 4, f"{path.name} has {len(exercises)} '### Exercise N' headings; keep 2 to 4"
    assert len(solutions) == 1, f"{path.name} should have exactly one '## Solutions' heading, after the exercises"
    assert solutions[0] > exercises[-1], "the solutions belong after the last exercise, not under each one"
    between = [source(c) for c in cells[exercises[0]:solutions[0]] if c["cell_type"] == "markdown"]
    assert not any("**Solution" in text for text in between), "a solution sits directly under its exercise"


@pytest.mark.parametrize("path", CHAPTERS_WITH_EXERCISES, ids=lambda p: p.name)
def test_every_check_the_exercises_call_is_asserted_on_its_solution(path):
    exercises, solutions, cells = exercise_layout(path)
    code = lambda part: "\n".join(source(c) for c in part if c["cell_type"] == "code")
    called = set(re.findall(r"\b(check_\w+)\(", code(cells[exercises[0]:solutions[0]])))
    asserted = set(re.findall(r"^assert .*\b(check_\w+)\(", code(cells[solutions[0]:]), re.MULTILINE))
    assert called, f"{path.name}: the exercises call no check"
    assert called <= asserted, f"{path.name}: solutions do not assert {sorted(called - asserted)}"

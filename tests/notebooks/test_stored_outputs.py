"""The outputs stored in the notebooks are from one real, clean, full-mode run (`tools/render_notebooks.py`).

GitHub shows a notebook's stored outputs, so every chapter is committed with
the figures of an actual top-to-bottom run: no errors, every code cell run
once and in order, the run recorded in the metadata as full mode, and no
path of the machine it ran on. nbval still runs every notebook afresh (in
fast mode) and does not compare these outputs.
"""
import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("[0-9][0-9]*_*.ipynb"))
MACHINE_PATHS = re.compile(r"/root/|/home/\w|/work/|/tmp/|/Users/|[A-Z]:\\\\|site-packages")
MAX_BYTES = 3 * 2**20   # figures at a sensible dpi keep a chapter well under this


def outputs(notebook):
    for index, cell in enumerate(notebook["cells"]):
        for output in cell.get("outputs", []):
            yield index, output


def text_of(output) -> str:
    parts = [output.get("text", "")] + [v for k, v in output.get("data", {}).items() if k.startswith("text/")]
    parts += output.get("traceback", [])
    return "".join("".join(p) if isinstance(p, list) else p for p in parts)


@pytest.fixture(params=NOTEBOOKS, ids=lambda p: p.name)
def notebook(request):
    return request.param, json.loads(request.param.read_text())


def test_the_stored_run_is_a_full_mode_run(notebook):
    path, nb = notebook
    rendered = nb["metadata"].get("clip_from_scratch", {}).get("rendered")
    assert rendered, f"{path.name} has no stored run: python tools/render_notebooks.py {path.name.split('_')[0]}"
    assert rendered["mode"] == "full" and rendered["seconds"] >= 0


def test_no_stored_output_is_an_error(notebook):
    path, nb = notebook
    errors = [index for index, output in outputs(nb) if output.get("output_type") == "error"]
    assert not errors, f"{path.name}: cells {errors} stored an error"


def test_every_code_cell_ran_once_in_order(notebook):
    path, nb = notebook
    counts = [cell.get("execution_count") for cell in nb["cells"] if cell["cell_type"] == "code"]
    assert counts == list(range(1, len(counts) + 1)), f"{path.name}: execution counts {counts}"


def test_no_output_shows_the_machine_it_ran_on(notebook):
    path, nb = notebook
    leaks = [(index, MACHINE_PATHS.search(text_of(output)).group(0)) for index, output in outputs(nb)
             if MACHINE_PATHS.search(text_of(output))]
    assert not leaks, f"{path.name}: machine-specific paths in outputs {leaks[:5]}"


def test_each_chapter_stores_its_figures(notebook):
    path, nb = notebook
    source = "".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    draws = len(re.findall(r"\bplt\.(?:show|subplots|figure)\(|\bplotting\.\w+\(|\.imshow\(", source))
    figures = sum(1 for _, output in outputs(nb) if "image/png" in output.get("data", {}))
    assert draws == 0 or figures > 0, f"{path.name} draws figures but stores none"


def test_notebooks_stay_small(notebook):
    path, _ = notebook
    assert path.stat().st_size < MAX_BYTES, f"{path.name} is {path.stat().st_size / 2**20:.1f} MB"

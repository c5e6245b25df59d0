"""Every chapter runs where learners are: with the package's own dependencies only.

Colab's install cell installs the package without openai/clip (``clip``) and
open_clip (``open_clip``). A chapter that compares with them must then skip
the comparison, say in one line what it skipped and how to install it, and
run on to the end.

These tests run, in fast mode, the chapters whose code imports ``clip`` or
``open_clip`` (the only ones that could depend on them), in a kernel where
both modules are made unimportable: a folder first on ``PYTHONPATH`` holds
``clip.py`` and ``open_clip.py`` stubs that raise ``ImportError``. Together
the three chapters take about two minutes on two CPU cores.
"""
import json
import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]*_*.ipynb"))
REFERENCES = ("clip", "open_clip")
IMPORTS_A_REFERENCE = re.compile(r"^\s*(?:import|from)\s+(?:clip|open_clip)\b", re.MULTILINE)


def code_cells(path):
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    return ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]


def imports_a_reference(path):
    return any(IMPORTS_A_REFERENCE.search(code) for code in code_cells(path))


WITH_REFERENCES = [p for p in NOTEBOOKS if imports_a_reference(p)]


def run_notebook(path, env, timeout=600):
    """Execute every code cell in a fresh kernel; return (printed text, first error or None)."""
    from jupyter_client.manager import start_new_kernel

    manager, client = start_new_kernel(kernel_name="python3", cwd=str(path.parent), env=env)
    printed, errors = [], []

    def collect(message):
        content = message["content"]
        if message["msg_type"] == "stream":
            printed.append(content["text"])
        elif message["msg_type"] == "error":
            errors.append(f"{content['ename']}: {content['evalue']}")

    try:
        for index, code in enumerate(code_cells(path)):
            client.execute_interactive(code, output_hook=collect, timeout=timeout)
            if errors:
                return "".join(printed), f"cell {index}: {errors[0]}"
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
    return "".join(printed), None


@pytest.fixture(scope="module")
def kernel_env(tmp_path_factory):
    """The test process's environment, with clip and open_clip made unimportable."""
    from clip_from_scratch.tokenizer import clip_vocab_path

    stubs = tmp_path_factory.mktemp("no_references")
    for name in REFERENCES:
        (stubs / f"{name}.py").write_text(
            f'raise ImportError("{name} is hidden by the test: the chapters must run without it")\n')
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(stubs), str(ROOT), env.get("PYTHONPATH", "")) if p)
    env["CLIP_FAST"] = "1"
    env.setdefault("MPLBACKEND", "Agg")
    # Colab would download CLIP's vocabulary once; here we point at the copy the references ship.
    env["CLIP_VOCAB"] = str(clip_vocab_path())
    return env


def test_the_chapters_that_compare_with_the_references_are_found():
    names = {p.name[:2] for p in WITH_REFERENCES}
    assert {"01", "04", "07"} <= names, f"expected chapters 01, 04 and 07 to import a reference, found {names}"


def test_the_stubs_hide_both_references(kernel_env):
    import subprocess
    import sys
    for name in REFERENCES:
        result = subprocess.run([sys.executable, "-c", f"import {name}"], env=kernel_env,
                                capture_output=True, text=True)
        assert result.returncode != 0 and "hidden by the test" in result.stderr, result.stderr


@pytest.mark.parametrize("path", WITH_REFERENCES, ids=lambda p: p.name)
def test_chapter_runs_to_the_end_without_the_references(path, kernel_env):
    printed, error = run_notebook(path, kernel_env)
    assert error is None, f"{path.name} fails without openai/clip and open_clip, {error}"
    skipped = [line for line in printed.splitlines() if "not installed" in line and "skipping" in line]
    assert skipped, f"{path.name} should say which comparison it skipped; it printed:\n{printed[-2000:]}"
    assert all("pip install" in line or "skipping the comparison with its" in line for line in skipped), skipped
    assert any("clip-from-scratch[references]" in line for line in skipped), \
        "the first skip message should say how to install the references"

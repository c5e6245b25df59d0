"""Run every chapter top to bottom in full mode and store its outputs, so GitHub shows the figures.

    python tools/render_notebooks.py              # every notebook in notebooks/, in place
    python tools/render_notebooks.py 05 06        # only these chapters

Each notebook runs in a fresh kernel, from ``notebooks/``, in full mode
(``CLIP_FAST=0``) on the CPU (``CUDA_VISIBLE_DEVICES=""``, so a rerun on
another machine changes little: every chapter seeds its own randomness). A
chapter that raises is reported and left as it was. Outputs are kept as they
came, except that this machine's folders are replaced (the checkout by
``<repo>``, site-packages by ``<packages>``, the temp folder by ``<tmp>``):
a reader's machine is not this one; and progress-bar widgets, which a static
page such as GitHub's cannot show, are dropped. Each notebook's metadata records the run
(``clip_from_scratch.rendered``: mode, device, seconds, torch version), which
``tests/notebooks/test_stored_outputs.py`` checks, and chapter 00's table of run
times is rewritten from the measured seconds.

Needs ``nbclient`` (``pip install -e ".[render]"``).
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
TIMES_HEADING = "### How long each chapter takes"


def render(path: Path, timeout: int) -> float:
    """Execute ``path`` in full mode on the CPU and write it back with its outputs; return the seconds."""
    notebook = nbformat.read(path, as_version=4)
    os.environ.update(CLIP_FAST="0", CUDA_VISIBLE_DEVICES="", PYTHONHASHSEED="0")
    client = NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOKS)}})
    started = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - started
    tidy(notebook)
    import torch
    notebook.metadata["clip_from_scratch"] = {"rendered": {
        "mode": "full", "device": "cpu", "seconds": round(seconds), "torch": torch.__version__.split("+")[0],
        "machine": f"{os.cpu_count()}-core {platform.machine()} CPU"}}
    nbformat.write(notebook, path)
    return seconds


def machine_paths() -> list[tuple[str, str]]:
    """This machine's folders that outputs may print, and what a reader sees instead."""
    import sysconfig
    import tempfile
    packages, home = sysconfig.get_paths()["purelib"], str(Path.home())
    pairs = [(str(ROOT), "<repo>"), (packages, "<packages>"), (packages.replace(home, "~", 1), "<packages>"),
             (os.path.realpath(tempfile.gettempdir()), "<tmp>"), (tempfile.gettempdir(), "<tmp>"),
             (home, "~")]
    return sorted(pairs, key=lambda pair: -len(pair[0]))   # longest first: /root/.pyenv/... before /root


WIDGET = "application/vnd.jupyter.widget-view+json"


def tidy(notebook) -> None:
    """Drop progress-bar widgets (a static page shows them frozen at 0%) and replace machine paths."""
    notebook.metadata.pop("widgets", None)   # the widgets' saved state: nothing left to show
    for cell in notebook.cells:
        if "outputs" in cell:
            cell.outputs = [output for output in cell.outputs if WIDGET not in output.get("data", {})]
            for output in cell.outputs:
                scrub_paths(output)


def scrub_paths(output) -> None:
    """Replace this machine's folders (the checkout, site-packages, the temp folder, home) in text outputs."""
    def scrub(text: str) -> str:
        for path, stand_in in machine_paths():
            text = text.replace(path, stand_in)
        return text
    if "text" in output:
        output["text"] = scrub(output["text"])
    for mime, value in output.get("data", {}).items():
        if mime.startswith("text/") and isinstance(value, str):
            output["data"][mime] = scrub(value)
    if "traceback" in output:
        output["traceback"] = [scrub(line) for line in output["traceback"]]


def write_times_table(times: dict[str, float]) -> None:
    """Chapter 00's table of measured run times, from each notebook's stored metadata."""
    path = NOTEBOOKS / "00_what_is_clip.ipynb"
    notebook = nbformat.read(path, as_version=4)
    rows = []
    for chapter in sorted(NOTEBOOKS.glob("[0-9][0-9]*_*.ipynb")):
        rendered = nbformat.read(chapter, as_version=4).metadata.get("clip_from_scratch", {}).get("rendered")
        if rendered:
            rows.append(f"| [{chapter.stem}]({chapter.name}) | {rendered['seconds'] / 60:.1f} min | "
                        f"{rendered['machine']}, torch {rendered['torch']} |")
    table = "\n".join([TIMES_HEADING, "",
                       "Measured by `python tools/render_notebooks.py`, which ran every chapter top to bottom in "
                       "full mode to store the outputs you see. Fast mode (`CLIP_FAST=1`) takes about a minute "
                       "per chapter. No GPU timings yet: a GPU makes chapters 04-06 several times faster.", "",
                       "| chapter | full mode | machine |", "|---|---|---|", *rows])
    for cell in notebook.cells:
        if cell.cell_type == "markdown" and cell.source.startswith(TIMES_HEADING):
            cell.source = table
            break
    else:
        raise SystemExit(f"{path.name} has no markdown cell starting with {TIMES_HEADING!r}")
    nbformat.write(notebook, path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("chapters", nargs="*", help="chapter numbers (e.g. 05 03b); default: all")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per cell (default: %(default)s)")
    parser.add_argument("--scrub-only", action="store_true",
                        help="only tidy the stored outputs (widgets, machine paths), no run")
    args = parser.parse_args()
    paths = sorted(NOTEBOOKS.glob("[0-9][0-9]*_*.ipynb"))
    if args.chapters:
        paths = [p for p in paths if p.name.split("_")[0] in args.chapters]
    if args.scrub_only:
        for path in paths:
            notebook = nbformat.read(path, as_version=4)
            tidy(notebook)
            nbformat.write(notebook, path)
        return 0
    times, failed = {}, []
    for path in paths:
        print(f"{path.name} ...", end=" ", flush=True)
        try:
            times[path.name] = render(path, args.timeout)
            print(f"{times[path.name] / 60:.1f} min")
        except CellExecutionError as err:
            failed.append(path.name)
            print(f"FAILED, left as it was:\n{str(err)[-2000:]}")
    write_times_table(times)
    print(f"rendered {len(times)} notebook(s) in {sum(times.values()) / 60:.1f} min" +
          (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

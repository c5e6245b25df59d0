"""A new user's first contact: after the README's set-up commands, its reading command works.

The README's quickstart installs the package with some extras and then says
to read the chapters with ``jupyter lab notebooks/``. This test reads both
from the README itself, resolves the extras through pyproject.toml (extras
may name other extras), and checks that JupyterLab is among what they install
and that its command is there in this environment (which the README's
commands installed).
"""
import importlib.metadata
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
PYPROJECT = (ROOT / "pyproject.toml").read_text()


def quickstart_install_commands() -> list[str]:
    """The ``pip install -e ...`` commands of the README's quickstart block."""
    quickstart = README.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", quickstart, re.S).group(1)
    return re.findall(r"pip install -e (\"[^\"]+\"|\S+)", block)


def extras_named(install_target: str) -> set[str]:
    """``".[dev]"`` -> {"dev"}; ``.`` -> set()."""
    match = re.search(r"\[([^\]]*)\]", install_target)
    return {name.strip() for name in match.group(1).split(",")} if match else set()


def optional_dependencies() -> dict[str, list[str]]:
    """pyproject.toml's extras: {name: [requirement, ...]}."""
    try:
        import tomllib
    except ModuleNotFoundError:   # Python < 3.11
        tomllib = pytest.importorskip("tomli")
    return tomllib.loads(PYPROJECT)["project"]["optional-dependencies"]


def installed_by(extras: set[str]) -> set[str]:
    """The distribution names the extras install, following ``clip-from-scratch[...]`` references."""
    table, seen, names = optional_dependencies(), set(), set()
    todo = list(extras)
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for requirement in table.get(extra, []):
            name = re.match(r"[A-Za-z0-9_.-]+", requirement).group(0).lower()
            if name == "clip-from-scratch":
                todo.extend(extras_named(requirement))
            else:
                names.add(name)
    return names


def test_the_readme_says_how_to_read_the_chapters():
    assert "`jupyter lab notebooks/`" in README


def test_the_quickstart_commands_install_jupyterlab():
    commands = quickstart_install_commands()
    assert commands, "no pip install -e command found in the README's quickstart"
    extras = set().union(*(extras_named(target) for target in commands))
    assert "jupyterlab" in installed_by(extras), (
        f"the quickstart installs the extras {sorted(extras)}, and none brings JupyterLab: `jupyter lab notebooks/` "
        "would answer 'command not found'. Add it to one of them (pyproject.toml) or name the notebooks extra.")


def test_the_extras_table_is_read_whole():
    table = optional_dependencies()
    assert {"dev", "references", "notebooks"} <= set(table)
    assert any(r.startswith("jupyterlab") for r in table["notebooks"])


def test_the_jupyter_lab_command_is_installed_here():
    scripts = {entry.name for entry in importlib.metadata.entry_points(group="console_scripts")}
    assert "jupyter-lab" in scripts, "JupyterLab is not installed: pip install -e '.[dev]' (the README's step 2)"

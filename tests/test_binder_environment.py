"""environment.yml (what Binder and conda users build) has every package the course imports.

The file is read as text: a flat YAML list of conda packages with one nested
``pip:`` list, which is all it needs to be. Every ``import`` of every notebook
and of the package must come from the standard library, from the package
itself, or from a distribution the file installs (directly, or through
``-e .[dev]``, which installs pyproject.toml's dependencies and extras).
"""
import ast
import json
import re
import sys
from functools import lru_cache
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

try:
    import tomllib  # Python 3.11+
except ImportError:                                  # pragma: no cover - older Pythons
    tomllib = pytest.importorskip("tomli")
if not hasattr(sys, "stdlib_module_names"):          # pragma: no cover - Python < 3.10
    pytest.skip("needs sys.stdlib_module_names (Python 3.10+)", allow_module_level=True)

ROOT = Path(__file__).resolve().parent.parent
ENVIRONMENT = ROOT / "environment.yml"
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]*_*.ipynb"))
PACKAGE_FILES = sorted((ROOT / "clip_from_scratch").rglob("*.py"))
# Import names whose distribution is named otherwise, for when they are not installed here.
KNOWN_DISTRIBUTIONS = {"PIL": "pillow", "clip": "clip-anytorch", "open_clip": "open-clip-torch",
                       "yaml": "pyyaml", "IPython": "ipython", "sklearn": "scikit-learn"}


def normalise(name):
    """PEP 503 form: lower case, runs of -_. as one dash."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement):
    """'torch>=2.1  # comment' -> 'torch'; '-e .[dev]' -> '.'."""
    requirement = requirement.split("#", 1)[0].strip()
    return re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0]


def read_environment(text):
    """(conda requirements, pip lines) from environment.yml's ``dependencies``."""
    conda, pip, section, pip_indent = [], [], None, None
    for line in text.splitlines():
        line = re.sub(r"(^|\s+)#.*$", "", line).rstrip()       # comments
        if not line:
            continue
        if not line.startswith(" "):                            # a top-level key
            section = line.rstrip(":")
            continue
        indent, item = len(line) - len(line.lstrip()), line.strip()
        if section != "dependencies" or not item.startswith("- "):
            continue
        item = item[2:].strip()
        if item == "pip:":
            pip_indent = indent
        elif pip_indent is not None and indent > pip_indent:
            pip.append(item)
        else:
            conda.append(item)
            pip_indent = None
    return conda, pip


def installed_by_environment():
    conda, pip = read_environment(ENVIRONMENT.read_text(encoding="utf-8"))
    names = {normalise(requirement_name(r)) for r in conda + pip if not r.startswith("-")}
    for line in pip:
        editable = re.match(r"-e\s+\.(?:\[(?P<extras>[^\]]*)\])?", line)
        if editable:
            names |= project_requirements(extras_of(editable.group(0)))
    return names


def extras_of(requirement):
    """'pkg[a, b]>=1' -> {'a', 'b'}."""
    found = re.search(r"\[([^\]]*)\]", requirement)
    return {e.strip() for e in found.group(1).split(",") if e.strip()} if found else set()


def project_requirements(extras, seen=None):
    """Distributions pyproject.toml installs with these extras, self-references (pkg[other]) followed."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    seen = set() if seen is None else seen
    requirements = list(project["dependencies"])
    for extra in sorted(extras - seen):
        seen.add(extra)
        requirements += project["optional-dependencies"][extra]
    names = set()
    for requirement in requirements:
        name = normalise(requirement_name(requirement))
        if name == normalise(project["name"]):
            names |= project_requirements(extras_of(requirement), seen)
        else:
            names.add(name)
    return names


def imported_modules(source):
    """Top-level names of every module imported in Python source (IPython magics skipped)."""
    lines = [line[:len(line) - len(line.lstrip())] + "pass" if line.lstrip().startswith(("%", "!")) else line
             for line in source.splitlines()]
    modules = set()
    for node in ast.walk(ast.parse("\n".join(lines))):
        if isinstance(node, ast.Import):
            modules |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module.split(".")[0])
    return modules


def notebook_source(path):
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    return "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")


def third_party(modules):
    return {m for m in modules if m not in sys.stdlib_module_names and m not in {"clip_from_scratch", "__future__"}}


@lru_cache(maxsize=None)
def installed_distributions():
    return packages_distributions()


def distribution_of(module):
    found = installed_distributions().get(module)
    return normalise(found[0]) if found else normalise(KNOWN_DISTRIBUTIONS.get(module, module))


def test_pytorch_is_the_cpu_only_build():
    conda, pip = read_environment(ENVIRONMENT.read_text(encoding="utf-8"))
    cpu_index = any("download.pytorch.org/whl/cpu" in line and "index-url" in line for line in pip)
    cpu_conda = any(re.match(r"(pytorch-cpu|cpuonly)\b", r) or re.match(r"pytorch.*=\*?cpu", r) for r in conda)
    assert cpu_index or cpu_conda, ("environment.yml should install PyTorch's CPU-only build (Binder has no GPU): "
                                    "add '--extra-index-url https://download.pytorch.org/whl/cpu' to the pip list")


def test_the_reader_sees_conda_and_pip_packages():
    conda, pip = read_environment(ENVIRONMENT.read_text(encoding="utf-8"))
    assert "pip" in conda and any(r.startswith("jupyterlab") for r in conda)
    assert any(r.startswith("torch") for r in pip) and any(r.startswith("-e .") for r in pip)
    assert not any(r.startswith("torch") for r in conda), "torch belongs in the pip list, beside its CPU index"


def test_the_environment_installs_the_references_the_chapters_compare_with():
    names = installed_by_environment()
    assert {"clip-anytorch", "open-clip-torch", "setuptools"} <= names


@pytest.mark.parametrize("path", NOTEBOOKS + PACKAGE_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_import_is_installed_by_the_environment(path):
    source = notebook_source(path) if path.suffix == ".ipynb" else path.read_text(encoding="utf-8")
    available = installed_by_environment()
    missing = {m: distribution_of(m) for m in third_party(imported_modules(source))
               if distribution_of(m) not in available}
    assert not missing, f"{path.name} imports {sorted(missing)}, which environment.yml does not install " \
                        f"(add {sorted(set(missing.values()))} to it, or to pyproject.toml's dependencies)"


def test_a_missing_package_is_caught(tmp_path):
    assert distribution_of("PIL") == "pillow"
    assert distribution_of("not_a_real_module_xyz") not in installed_by_environment()
    assert "seaborn" in third_party(imported_modules("import seaborn as sns\n%matplotlib inline\nimport os"))

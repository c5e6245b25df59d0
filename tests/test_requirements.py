"""The torch floor in pyproject.toml is true: no API the package calls is newer than it.

Each entry is a pattern in the package's source and the first torch release
that has it. A new call of a newer API makes this test fail until the floor
in pyproject.toml (and environment.yml) is raised with it.
"""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# pattern in the source -> first torch version that has it
TORCH_APIS = {
    r"torch\.amp\.GradScaler\(": (2, 3),            # device-generic GradScaler
    r"load_state_dict\([^)]*assign=": (2, 1),        # assign=True (meta-device loading)
    r"torch\.load\([^)]*mmap=": (2, 1),
    r"scaled_dot_product_attention": (2, 0),
    r"with torch\.device\(": (2, 0),                 # torch.device as a context manager
    r"torch\.compile\(": (2, 0),
    r"weights_only=": (1, 13),
    r"torch\.frombuffer": (1, 10),
}


def _floor(text: str, package: str) -> tuple[int, int]:
    match = re.search(rf'"{package}>=(\d+)\.(\d+)', text)
    assert match, f"no lower bound for {package} in pyproject.toml"
    return int(match.group(1)), int(match.group(2))


def test_the_torch_floor_covers_every_torch_api_the_package_uses():
    source = "\n".join(p.read_text() for p in (ROOT / "clip_from_scratch").rglob("*.py"))
    floor = _floor((ROOT / "pyproject.toml").read_text(), "torch")
    used = {pattern: version for pattern, version in TORCH_APIS.items() if re.search(pattern, source)}
    assert used, "the patterns no longer match anything: update TORCH_APIS"
    newest = max(used.values())
    assert floor >= newest, (f"pyproject.toml says torch>={floor[0]}.{floor[1]} but the package uses "
                             f"{[p for p, v in used.items() if v == newest]} (torch {newest[0]}.{newest[1]}+)")


def test_the_floor_is_not_needlessly_high():
    source = "\n".join(p.read_text() for p in (ROOT / "clip_from_scratch").rglob("*.py"))
    floor = _floor((ROOT / "pyproject.toml").read_text(), "torch")
    newest = max(v for p, v in TORCH_APIS.items() if re.search(p, source))
    assert floor == newest, f"torch>={floor} is higher than any API in TORCH_APIS needs ({newest}): say why here"

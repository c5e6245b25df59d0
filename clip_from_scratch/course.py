"""Small helpers every notebook uses: fast mode, the device, the data folder.

Each notebook starts with the same few lines::

    from clip_from_scratch.course import FAST, pick_device
    device = pick_device()       # cuda -> mps -> cpu
    print(FAST)                  # True under `pytest` and when CLIP_FAST=1

Fast mode shrinks data, model and steps so a notebook runs in about a minute
on a laptop CPU. It is what CI runs; set ``CLIP_FAST=0`` (or leave it unset)
for the full-size versions.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

FAST_ENV_VAR = "CLIP_FAST"


def fast_mode() -> bool:
    """True when the environment variable ``CLIP_FAST`` is set to 1/true/yes."""
    return os.environ.get(FAST_ENV_VAR, "0").strip().lower() in {"1", "true", "yes", "on"}


FAST = fast_mode()


def pick_device(prefer: str | None = None) -> torch.device:
    """The best device available: CUDA, then Apple's MPS, then the CPU.

    >>> pick_device("cpu")
    device(type='cpu')
    """
    if prefer is not None:
        return torch.device(prefer)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def describe_device(device: torch.device) -> str:
    """One line for the notebook: which device, and a hint when there is no GPU."""
    if device.type == "cuda":
        return f"Using GPU: {torch.cuda.get_device_name(device)}"
    if device.type == "mps":
        return "Using Apple GPU (MPS)"
    return ("Using the CPU. Everything in the course runs here; on Colab, "
            "Runtime -> Change runtime type -> GPU makes the long runs faster.")


def data_root() -> Path:
    """Where downloads and caches go: ``$CLIP_DATA`` or ``data/`` beside the notebooks.

    The folder is created on first use. Workshops can point every learner at a
    shared, pre-downloaded copy by setting ``CLIP_DATA``.
    """
    root = os.environ.get("CLIP_DATA")
    if root:
        path = Path(root).expanduser()
    else:
        here = Path.cwd()
        # Notebooks run from notebooks/; the course's data/ folder sits beside it.
        path = here.parent / "data" if here.name == "notebooks" else here / "data"
    path.mkdir(parents=True, exist_ok=True)
    return path

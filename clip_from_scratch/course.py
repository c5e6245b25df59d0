"""Small helpers every notebook uses: fast mode and the device.

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

import torch

from .data.root import data_root  # noqa: F401  (re-exported: notebooks call course.data_root())
from .errors import ConfigError

FAST_ENV_VAR = "CLIP_FAST"


def fast_mode() -> bool:
    """True when the environment variable ``CLIP_FAST`` is set to 1/true/yes."""
    return os.environ.get(FAST_ENV_VAR, "0").strip().lower() in {"1", "true", "yes", "on"}


FAST = fast_mode()


def pick_device(name: str | None = None) -> torch.device:
    """The best device here (CUDA, then Apple's MPS, then the CPU) for ``None`` or ``"auto"``;
    any other name is checked, with a message that says what this machine has. Every command's
    ``--device`` goes through here.

    >>> pick_device("cpu")
    device(type='cpu')
    """
    if name is None or name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device {name!r} is not a device name: use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {name} was asked for, but this machine has no CUDA GPU: "
                              "use --device cpu (or auto)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"--device {name}: this machine has {torch.cuda.device_count()} GPU(s), "
                              f"numbered from 0")
    elif device.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ConfigError("--device mps needs an Apple-silicon Mac with PyTorch's MPS support; "
                              "use --device cpu (or auto) here")
    elif device.type != "cpu":
        raise ConfigError(f"--device {name}: the course runs on cpu, cuda or mps")
    return device


def describe_device(device: torch.device) -> str:
    """One line for the notebook: which device, and a hint when there is no GPU."""
    if device.type == "cuda":
        return f"Using GPU: {torch.cuda.get_device_name(device)}"
    if device.type == "mps":
        return "Using Apple GPU (MPS)"
    return ("Using the CPU. Everything in the course runs here; on Colab, "
            "Runtime -> Change runtime type -> GPU makes the long runs faster.")

"""Checkpoint files: written atomically, read without unpickling arbitrary code.

A checkpoint is one ``torch.save`` of a plain dict (tensors, numbers, strings,
lists, dicts): ``torch.load(path, weights_only=True)`` reads it, so opening a
file from the internet cannot run code. Configs are stored as dicts and RNG
states as tensors for that reason. Keys::

    model          CLIP state_dict (OpenAI's tensor names)
    model_config   CLIPConfig as a dict
    tokenizer      Tokenizer.to_dict() (the BPE trained for this run)
    step           optimisation steps done
    optimizer      AdamW state_dict
    scaler         GradScaler state_dict (fp16 runs) or None
    train_config   TrainConfig as a dict
    rng            {"torch": ByteTensor, "cuda": [ByteTensor, ...]}
    history        {"step": [...], "loss": [...], "logit_scale": [...], "lr": [...]}
    evals          {"step": [...], "zeroshot_top1": [...]}

It knows nothing of models or tokenizers (it sits below them):
``train.load_checkpoint`` turns a checkpoint back into ``(model, tokenizer)``.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from .errors import CourseError
from .files import atomic_write

FORMAT = "clip_from_scratch.checkpoint"
REQUIRED_KEYS = ("model", "model_config", "tokenizer", "step")


class CheckpointMissing(CourseError, FileNotFoundError):
    """No checkpoint where one was expected."""


class NotATrainingCheckpoint(CourseError, ValueError):
    """A file that is not a readable training checkpoint of this course."""


def save_checkpoint(state: dict, path: str | os.PathLike) -> Path:
    """Write ``state`` to ``path`` atomically: a temporary file of its own, flushed, then renamed.

    A crash, Ctrl-C or a full disk while writing leaves the previous
    checkpoint intact and no temporary file behind, never a half-written file
    under the real name.
    """
    path = Path(path)
    with atomic_write(path) as f:
        torch.save({"format": FORMAT, **state}, f)
    return path


def read_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> dict:
    """The checkpoint's dict, loaded with ``weights_only=True``, with clear errors."""
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.pt"
    if not path.exists():
        raise CheckpointMissing(f"no checkpoint at {path}: train one with `clip-from-scratch pretrain "
                                f"--out {path.parent}` or check the path")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # pickle errors, truncated zip archives, ...
        raise NotATrainingCheckpoint(f"{path} is not a readable checkpoint ({type(err).__name__}: {err}). "
                         "Was the copy interrupted? Train again or use another file.") from None
    missing = [key for key in REQUIRED_KEYS if not isinstance(state, dict) or key not in state]
    if missing:
        raise NotATrainingCheckpoint(f"{path} is not a clip_from_scratch training checkpoint: it lacks {missing}. "
                         "Released OpenAI weights load with clip_from_scratch.load() instead.")
    return state


def rng_state() -> dict:
    """Every random number generator training uses, as tensors (weights_only-safe)."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"].cpu())
    if torch.cuda.is_available() and state.get("cuda"):
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])

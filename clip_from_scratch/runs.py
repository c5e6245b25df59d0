"""A run folder and everything in it: the one place that knows what a saved run *is*.

``clip-from-scratch pretrain --out runs/shapes`` leaves three files::

    runs/shapes/checkpoint.pt     CHECKPOINT: the run's state (below), written atomically
    runs/shapes/metrics.json      METRICS: the final scores and settings
    runs/shapes/loss_curve.png    LOSS_CURVE: loss, logit scale and scores against step

A checkpoint is one ``torch.save`` of a plain dict (tensors, numbers, strings,
lists, dicts), read back with ``torch.load(path, weights_only=True)``, so
opening a file from the internet cannot run code. Configs are stored as dicts
and RNG states as tensors for that reason. Keys (``CHECKPOINT_VERSION`` 1)::

    format, version  "clip_from_scratch.checkpoint", 1
    model          CLIP state_dict (OpenAI's tensor names)
    model_config   CLIPConfig as a dict
    tokenizer      Tokenizer.to_dict() (the BPE trained for this run)
    step           optimisation steps done
    optimizer      AdamW state_dict                               \\
    scaler         GradScaler state_dict (fp16 runs) or None       |
    train_config   TrainConfig as a dict                           |  RESUME_KEYS: what
    rng            {"torch": ByteTensor, "cuda": [ByteTensor, ...]}|  continuing a run needs
    history        {"step": [...], "loss": [...], "logit_scale": [...], "lr": [...]}
    evals          {"step": [...], "zeroshot_top1": [...], "images_seen": [...]} /
    train_seconds  seconds of training so far, across resumes

Reading a run back for evaluation needs nothing of the training loop::

    model, tokenizer = load_checkpoint("runs/shapes")     # the folder or its checkpoint.pt
    tokens = tokenizer(["a red circle."], context_length=model.config.context_length)

Resuming goes through :class:`TrainState`, the run's moving parts (model,
optimizer, loss scaler, step, history) and their ``to_checkpoint()`` /
``from_checkpoint()``.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .errors import ArchitectureMismatchError, CourseError, TrainingError
from .files import atomic_write, load_error_words, pickle_asks_for_code
from .model import CLIP, CLIPConfig
from .objectives import CLIPWithObjective
from .tokenizer import Tokenizer

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.json"
LOSS_CURVE = "loss_curve.png"
RESULTS = (METRICS, LOSS_CURVE)

FORMAT = "clip_from_scratch.checkpoint"
CHECKPOINT_VERSION = 1
REQUIRED_KEYS = ("model", "model_config", "tokenizer", "step")          # enough to use the model
RESUME_KEYS = ("optimizer", "train_config", "rng", "history", "evals")  # and to continue training it
HISTORY_KEYS = ("step", "loss", "logit_scale", "lr")


class CheckpointMissing(CourseError, FileNotFoundError):
    """No checkpoint where one was expected."""


class NotATrainingCheckpoint(CourseError, ValueError):
    """A file that is not a readable training checkpoint of this course."""


# ----------------------------------------------------------------------------- the checkpoint file
def save_checkpoint(state: dict, path: str | os.PathLike) -> Path:
    """Write ``state`` to ``path`` atomically: a temporary file of its own, flushed, then renamed.

    A crash, Ctrl-C or a full disk while writing leaves the previous
    checkpoint intact and no temporary file behind, never a half-written file
    under the real name.
    """
    path = Path(path)
    with atomic_write(path) as f:
        torch.save({"format": FORMAT, "version": CHECKPOINT_VERSION, **state}, f)
    return path


def read_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> dict:
    """The checkpoint's dict (``path``: the file or its run folder), loaded ``weights_only``, with clear errors."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT
    if not path.exists():
        raise CheckpointMissing(f"no checkpoint at {path}: train one with `clip-from-scratch pretrain "
                                f"--out {path.parent}` or check the path")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # pickle errors, truncated zip archives, ...
        if pickle_asks_for_code(err):
            raise NotATrainingCheckpoint(f"{path} was refused unopened: its pickle asks for Python objects beyond "
                                         "tensors (it could run code when opened), which no checkpoint of "
                                         "`clip-from-scratch pretrain` does. Only load files from sources you "
                                         "trust.") from None
        raise NotATrainingCheckpoint(f"{path} is not a readable checkpoint ({load_error_words(err)}). "
                                     "Was the copy interrupted? Train again or use another file.") from None
    missing = [key for key in REQUIRED_KEYS if not isinstance(state, dict) or key not in state]
    if missing:
        raise NotATrainingCheckpoint(f"{path} is not a clip_from_scratch training checkpoint: it lacks {missing}. "
                                     "Released OpenAI weights load with clip_from_scratch.load() instead.")
    if state.get("version", 1) > CHECKPOINT_VERSION:   # files from before versions existed are version 1
        raise NotATrainingCheckpoint(f"{path} was written by a newer clip_from_scratch (checkpoint version "
                                     f"{state['version']}, this one reads {CHECKPOINT_VERSION}): upgrade the package")
    return state


def is_training_checkpoint(path: str | os.PathLike) -> bool:
    """A course training checkpoint (a dict with the run's tokenizer), read without unpickling code.

    >>> is_training_checkpoint("no/such/file.pt")
    False
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:   # TorchScript archives, damaged or missing files: not ours to judge here
        return False
    return isinstance(state, dict) and "tokenizer" in state and "model" in state


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[CLIP, Tokenizer]:
    """``(model, tokenizer)`` from a training checkpoint, the model in eval mode on ``device``.

    The tokenizer is the run's own BPE; call it with the model's context length::

        tokens = tokenizer(["a red circle"], context_length=model.config.context_length)
    """
    state = read_checkpoint(path, device)
    config, objective = CLIPConfig.from_dict(state["model_config"]), trained_objective(state)
    model = CLIP(config) if objective == "contrastive" else CLIPWithObjective(config, objective)
    model.load_state_dict(state["model"])
    tokenizer = Tokenizer.from_dict(state["tokenizer"])
    return model.to(device).eval(), tokenizer


def trained_objective(state: dict) -> str:
    """What a checkpoint's image encoder learnt from: ``contrastive`` (CLIP; also every older file), ``bow``
    or ``captioning`` (chapter 08: then the model is a :class:`CLIPWithObjective`)."""
    return (state.get("train_config") or {}).get("objective", "contrastive")


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


# ----------------------------------------------------------------------------- a run's moving parts
@dataclass
class TrainState:
    """What changes as a run trains, and everything needed to continue it exactly.

    ``config`` is the run's TrainConfig (anything with ``to_dict()``);
    ``train_seconds`` is the training time so far, across resumes (the loop
    updates it before each save).
    """
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    tokenizer: Tokenizer
    config: object
    step: int = 0
    history: dict = field(default_factory=lambda: {key: [] for key in HISTORY_KEYS})
    evals: dict = field(default_factory=lambda: {"step": []})
    train_seconds: float = 0.0

    def to_checkpoint(self) -> dict:
        """The dict :func:`save_checkpoint` writes (keys: see the module's docstring)."""
        return dict(model=self.model.state_dict(), model_config=self.model.config.to_dict(),
                    tokenizer=self.tokenizer.to_dict(), step=self.step, optimizer=self.optimizer.state_dict(),
                    scaler=self.scaler.state_dict() if self.scaler.is_enabled() else None,
                    train_config=self.config.to_dict(), rng=rng_state(), history=self.history, evals=self.evals,
                    train_seconds=self.train_seconds)

    def add_eval(self, metric: str, score: float) -> None:
        """Record an evaluation ``score`` at the current step."""
        self.evals["step"].append(self.step)
        self.evals[metric].append(score)
        # Figure 2's x axis: runs of different batch sizes compare at the same number of images
        self.evals.setdefault("images_seen", []).append(self.step * self.config.batch_size)

    @classmethod
    def from_checkpoint(cls, saved: dict, model, optimizer, scaler, tokenizer: Tokenizer, config,
                        source: str = "the checkpoint") -> "TrainState":
        """The state ``saved`` holds, loaded into a freshly built model, optimizer and scaler (and the
        RNGs), so the run goes on exactly where it stopped. ``source`` names the file in errors."""
        try:
            model.load_state_dict(saved["model"])
        except ArchitectureMismatchError as err:
            raise TrainingError(f"{source} does not fit this run's model: {err}") from None
        optimizer.load_state_dict(saved["optimizer"])
        if saved.get("scaler"):
            scaler.load_state_dict(saved["scaler"])
        set_rng_state(saved["rng"])
        return cls(model, optimizer, scaler, tokenizer, config, step=saved["step"], history=saved["history"],
                   evals=saved["evals"], train_seconds=saved.get("train_seconds", 0.0))


def save_state(state: TrainState, out_dir: Path) -> Path:
    """``out_dir/checkpoint.pt`` from the run's state, atomically."""
    return save_checkpoint(state.to_checkpoint(), Path(out_dir) / CHECKPOINT)


# ----------------------------------------------------------------------------- the folder
def check_output_folder(out_dir: Path, resume: bool, overwrite: bool, rank: int = 0) -> None:
    """Fail before any work if the folder can't be written, or would lose an earlier run.

    Every process checks (each gets the same answer, so none waits for the
    others in a collective that will never come). Nothing is created when the
    answer is no.
    """
    if resume and overwrite:
        raise TrainingError("--resume continues the run in the folder and --overwrite replaces it: "
                            "choose one")
    checkpoint = out_dir / CHECKPOINT
    if resume and not checkpoint.exists():
        raise TrainingError(f"nothing to resume: {checkpoint} does not exist. Run without --resume to start.")
    if not resume and checkpoint.exists() and not overwrite:
        raise TrainingError(f"{out_dir} already holds a run ({CHECKPOINT}). Continue it with --resume, "
                            "start over with --overwrite, or pick another folder with --out.")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".write_test.{rank}.{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise TrainingError(f"cannot write to the output folder {out_dir} ({err.strerror or err}). "
                            "Choose another folder with --out.") from None


def prepare_run_folder(config, resume: bool, overwrite: bool, rank: int, device: torch.device) -> dict | None:
    """Check ``config.out_dir`` and return the checkpoint to resume from (None for a new run).

    A resumed run must be the same run (:func:`check_same_run`); a new one
    starts by removing an old run's results, so they never sit beside its checkpoint.
    """
    out_dir = Path(config.out_dir)
    check_output_folder(out_dir, resume, overwrite, rank)
    if not resume:
        if rank == 0:
            for name in RESULTS:
                (out_dir / name).unlink(missing_ok=True)
        return None
    try:
        saved = read_checkpoint(out_dir / CHECKPOINT, device)
    except (FileNotFoundError, ValueError) as err:
        raise TrainingError(str(err)) from None
    missing = [key for key in RESUME_KEYS if key not in saved]
    if missing:
        raise TrainingError(f"{out_dir / CHECKPOINT} cannot be resumed: it lacks {missing} (it holds weights "
                            "only). Start a new run with --overwrite, or in another --out folder.")
    check_same_objective(saved, config, out_dir)
    check_same_run(saved.get("train_config", {}), config, out_dir)
    return saved


def check_same_objective(saved: dict, config, out_dir: Path) -> None:
    """A run cannot change what it learns from half way: one line that says what to do instead."""
    before = trained_objective(saved)
    if before != config.objective:
        raise TrainingError(f"{out_dir} holds a {before} run: --objective {config.objective} cannot resume it; "
                            f"start the {config.objective} run in another --out folder (or --overwrite this one)")


def check_same_run(saved: dict, config, out_dir: Path) -> None:
    """A resumed run must be the same run: every setting equal except those that may change on resume."""
    differences = [f"{name}: checkpoint {saved.get(name)!r}, now {getattr(config, name)!r}"
                   for name in config.run_defining()
                   if name in saved and saved.get(name) != getattr(config, name)]
    if differences:
        raise TrainingError(f"the checkpoint in {out_dir} belongs to a run with other settings:\n  "
                            + "\n  ".join(differences)
                            + "\nResume with the same settings, or start a new run in another --out folder.")


def saved_step(out_dir: Path) -> int | str:
    """The step of the checkpoint in ``out_dir``, or ``"none yet"``."""
    try:
        return read_checkpoint(Path(out_dir) / CHECKPOINT)["step"]
    except (FileNotFoundError, ValueError):
        return "none yet"


# ----------------------------------------------------------------------------- results
def write_results(out_dir: Path, metrics: dict, history: dict, evals: dict) -> None:
    """``metrics.json`` and ``loss_curve.png``, each written whole or not at all."""
    with atomic_write(Path(out_dir) / METRICS, "w") as f:
        f.write(json.dumps(metrics, indent=2))
    save_loss_curve(history, evals, Path(out_dir) / LOSS_CURVE, title=metrics.get("data", "shapes"),
                    objective=metrics.get("config", {}).get("objective", "contrastive"))


def save_loss_curve(history: dict, evals: dict, path: Path, title: str = "shapes",
                    objective: str = "contrastive") -> None:
    """Loss and logit scale against step, and the evaluation score where it was measured."""
    from matplotlib.figure import Figure  # no pyplot: leaves a notebook's plotting backend alone

    fig = Figure(figsize=(10, 3.5))
    ax_loss, ax_scale = fig.subplots(1, 2)
    ax_loss.plot(history["step"], history["loss"], lw=0.8)
    label = "shapes, not COCO" if title == "shapes" else title
    ax_loss.set(xlabel="step", ylabel=f"{objective} loss", title=f"training loss ({label})")
    metric = next((key for key in evals if key not in ("step", "images_seen")), "zeroshot_top1")
    if evals["step"]:
        ax_acc = ax_loss.twinx()
        ax_acc.plot(evals["step"], evals[metric], "o-", color="C1")
        ax_acc.set(ylabel=EVAL_LABELS.get(metric, metric), ylim=(0, 100))
    ax_scale.plot(history["step"], history["logit_scale"], color="C2")
    ax_scale.set(xlabel="step", ylabel="logit_scale = 1 / temperature", title="learned logit scale (1 / temperature)")
    fig.tight_layout()
    with atomic_write(path) as f:
        fig.savefig(f, dpi=100, format="png")


EVAL_LABELS = {"zeroshot_top1": "zero-shot top-1 on held-out pairs (%)",
               "mean_recall": "val2017 retrieval, mean recall@1/5/10 (%)"}

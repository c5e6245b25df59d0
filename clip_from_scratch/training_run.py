"""The plumbing of a training run, kept out of the loop: processes, folders, signals, files.

``train.py`` reads like the algorithm; everything here is what a real run
needs around it:

* :func:`setup_distributed` — one process, or one of many under ``torchrun``;
* :func:`check_output_folder` — fail before any work if results could not be
  saved or would overwrite an earlier run;
* :class:`StopRequest` — Ctrl-C, ``kill`` (SIGTERM: a cluster's time limit)
  and a closed terminal (SIGHUP) all become "finish this step, save, exit",
  agreed across processes so no rank is left waiting in a collective;
* :func:`write_results` — ``metrics.json`` and ``loss_curve.png``.
"""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import torch

from .checkpoint import read_checkpoint
from .errors import CourseError
from .files import atomic_write

CHECKPOINT = "checkpoint.pt"
RESULTS = ("metrics.json", "loss_curve.png")


class TrainingError(CourseError, RuntimeError):
    """A problem the user can fix (bad folder, mismatched checkpoint, diverged run)."""


class TrainingDiverged(TrainingError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


# ----------------------------------------------------------------------------- devices and processes
def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> the best device here; anything else is checked, with a message that says what exists."""
    from .course import pick_device
    if name == "auto":
        return pick_device()
    try:
        device = torch.device(name)
    except RuntimeError:
        raise TrainingError(f"--device {name!r} is not a device name: use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise TrainingError(f"--device {name} was asked for, but this machine has no CUDA GPU: "
                                "use --device cpu (or auto)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise TrainingError(f"--device {name}: this machine has {torch.cuda.device_count()} GPU(s), "
                                f"numbered from 0")
    elif device.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise TrainingError("--device mps needs an Apple-silicon Mac with PyTorch's MPS support; "
                                "use --device cpu (or auto) here")
    elif device.type != "cpu":
        raise TrainingError(f"--device {name}: training runs on cpu, cuda or mps")
    return device


def setup_distributed(device_name: str) -> tuple[int, int, torch.device]:
    """(rank, world_size, device). Under torchrun, join the process group (nccl on GPU, gloo on CPU)."""
    device = resolve_device(device_name)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return 0, 1, device
    import torch.distributed as dist
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), world_size, device


def cleanup_distributed(world_size: int) -> None:
    if world_size > 1:
        import torch.distributed as dist
        if dist.is_initialized():
            dist.destroy_process_group()


def any_rank(flag: bool, world_size: int, device: torch.device) -> bool:
    """True on every process if ``flag`` is true on any (one small all-reduce)."""
    if world_size == 1:
        return flag
    import torch.distributed as dist
    value = torch.tensor([float(flag)], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


# ----------------------------------------------------------------------------- the output folder
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


def clear_old_results(out_dir: Path) -> None:
    """A new run (``--overwrite``) must not leave the old run's metrics beside its own checkpoint."""
    for name in RESULTS:
        (out_dir / name).unlink(missing_ok=True)


def check_same_run(saved: dict, config, out_dir: Path) -> None:
    """A resumed run must be the same run: every run-defining setting equal."""
    differences = [f"{name}: checkpoint {saved.get(name)!r}, now {getattr(config, name)!r}"
                   for name in config.RUN_DEFINING
                   if name in saved and saved.get(name) != getattr(config, name)]
    if differences:
        raise TrainingError(f"the checkpoint in {out_dir} belongs to a run with other settings:\n  "
                            + "\n  ".join(differences)
                            + "\nResume with the same settings, or start a new run in another --out folder.")


def read_resume_state(out_dir: Path, device: torch.device) -> dict:
    """The checkpoint to resume from, with everything a resume needs, or a clear error."""
    try:
        state = read_checkpoint(out_dir / CHECKPOINT, device)
    except (FileNotFoundError, ValueError) as err:
        raise TrainingError(str(err)) from None
    missing = [key for key in ("optimizer", "train_config", "rng", "history", "evals") if key not in state]
    if missing:
        raise TrainingError(f"{out_dir / CHECKPOINT} cannot be resumed: it lacks {missing} (it holds weights "
                            "only). Start a new run with --overwrite, or in another --out folder.")
    return state


def saved_step(out_dir: Path) -> int | str:
    try:
        return read_checkpoint(out_dir / CHECKPOINT)["step"]
    except (FileNotFoundError, ValueError):
        return "none yet"


# ----------------------------------------------------------------------------- stopping cleanly
class StopRequest:
    """Turn Ctrl-C, SIGTERM and SIGHUP into a request to stop after the current step (which then saves).

    Stopping between steps, never inside one, keeps the model and optimizer in
    step with each other. A second Ctrl-C stops at once, as usual. The loop
    asks :func:`any_rank` whether *any* process was asked to stop, at the same
    steps on every process, so all ranks stop together.
    """
    SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP")

    def __init__(self, quiet: bool = False):
        self.requested = False
        self.quiet = quiet
        self.previous: dict = {}

    def __enter__(self):
        for name in self.SIGNALS:
            number = getattr(signal, name, None)
            if number is None:          # SIGHUP does not exist on Windows
                continue
            try:
                self.previous[number] = signal.signal(number, self._handler)
            except ValueError:          # not the main thread (some notebook runners): signals as usual
                pass
        return self

    def _handler(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt     # the second Ctrl-C: stop now
        self.requested = True
        if not self.quiet:
            print(f"\n{signal.Signals(signum).name}: stopping after this step and saving a checkpoint "
                  "(Ctrl-C again to quit at once)", flush=True)

    def __exit__(self, *exc):
        for number, handler in self.previous.items():
            signal.signal(number, handler)
        return False


# ----------------------------------------------------------------------------- results
def write_results(out_dir: Path, metrics: dict, history: dict, evals: dict) -> None:
    """``metrics.json`` and ``loss_curve.png``, each written whole or not at all."""
    with atomic_write(out_dir / "metrics.json", "w") as f:
        f.write(json.dumps(metrics, indent=2))
    save_loss_curve(history, evals, out_dir / "loss_curve.png", title=metrics.get("data", "shapes"))


def save_loss_curve(history: dict, evals: dict, path: Path, title: str = "shapes") -> None:
    """Loss and logit scale against step, and the evaluation score where it was measured."""
    from matplotlib.figure import Figure  # no pyplot: leaves a notebook's plotting backend alone

    fig = Figure(figsize=(10, 3.5))
    ax_loss, ax_scale = fig.subplots(1, 2)
    ax_loss.plot(history["step"], history["loss"], lw=0.8)
    label = "shapes, not COCO" if title == "shapes" else title
    ax_loss.set(xlabel="step", ylabel="contrastive loss", title=f"training loss ({label})")
    metric = next((key for key in evals if key != "step"), "zeroshot_top1")
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

"""The plumbing of a training run, kept out of the loop: processes, signals, the progress line.

``train.py`` reads like the algorithm; everything here is what a real run
needs around it (the run's *files* live in ``runs.py``):

* :func:`setup_distributed` — one process, or one of many under ``torchrun``;
  :func:`process_slice` — this process's share of the global batch;
* :class:`StopRequest` — Ctrl-C, ``kill`` (SIGTERM: a cluster's time limit)
  and a closed terminal (SIGHUP) all become "finish this step, save, exit",
  agreed across processes (:func:`any_rank`) so no rank is left waiting in a collective;
* :class:`StepLog` — each step's loss kept on the device until read every
  ``log_every`` steps (a read waits for the GPU), a NaN stops the run, and the progress bar.
"""
from __future__ import annotations

import math
import os
import signal
import time

import torch
from tqdm.auto import tqdm

from .course import pick_device
from .errors import TrainingDiverged, TrainingError
from .runs import saved_step


# ----------------------------------------------------------------------------- devices and processes
def setup_distributed(device_name: str) -> tuple[int, int, torch.device]:
    """(rank, world_size, device). Under torchrun, join the process group (nccl on GPU, gloo on CPU)."""
    device = pick_device(device_name)
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


def process_slice(batch_size: int, rank: int, world_size: int) -> slice:
    """This process's rows of the global batch, which must split evenly (no sample silently dropped).

    >>> process_slice(128, rank=1, world_size=2)
    slice(64, 128, None)
    """
    if batch_size % world_size:
        raise TrainingError(f"--batch-size {batch_size} does not split evenly across {world_size} processes: "
                            f"use a multiple of {world_size}")
    share = batch_size // world_size
    return slice(rank * share, (rank + 1) * share)


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


# ----------------------------------------------------------------------------- the loss, read now and then
class StepLog:
    """Each step's loss and logit scale, kept on the device until :meth:`read` brings them over in one wait.

    Reading a number from the GPU makes the CPU wait for it, so the loop reads
    every ``log_every`` steps, and always before a checkpoint is saved: a NaN
    stops the run (:class:`TrainingDiverged`) before it can reach a checkpoint.
    ``history`` (the run's ``{"step", "loss", "logit_scale", "lr"}`` lists) grows as values are read.
    """

    def __init__(self, history: dict, config, start_step: int, description: str, show: bool = True):
        self.history, self.config, self.start_step = history, config, start_step
        self.pending: list = []    # (step, lr, loss, logit_scale), the last two still on the device
        self.bar = tqdm(total=config.steps, initial=start_step, disable=not show, desc=description, unit="step",
                        dynamic_ncols=True)
        self.started = time.perf_counter()

    def add(self, state, loss: torch.Tensor) -> None:
        """The step ``state`` just finished: its loss, learning rate and logit scale (no wait)."""
        self.pending.append((state.step, state.optimizer.param_groups[0]["lr"], loss,
                             state.model.logit_scale.detach().exp()))
        self.bar.update()

    def read(self) -> None:
        """Bring the pending steps' numbers over from the device (one wait), and stop on a NaN."""
        if not self.pending:
            return
        values = torch.stack([torch.stack(p[2:]) for p in self.pending]).tolist()
        for (step, lr, *_), (loss, scale) in zip(self.pending, values):
            if not math.isfinite(loss):
                out_dir, lr_now = self.config.out_dir, self.config.lr
                raise TrainingDiverged(
                    f"the loss became {loss} at step {step}, so training stopped. The last good checkpoint "
                    f"(step {saved_step(out_dir)}) is kept in {out_dir}. Try a lower --lr (now {lr_now}) "
                    f"or --amp off, then --resume or start over.")
            for key, value in zip(("step", "loss", "logit_scale", "lr"), (step, loss, scale, lr)):
                self.history[key].append(value)
        rate = (self.pending[-1][0] - self.start_step) * self.config.batch_size / (time.perf_counter() - self.started)
        self.pending.clear()
        self.bar.set_postfix(loss=f"{self.history['loss'][-1]:.3f}", T=f"{1 / self.history['logit_scale'][-1]:.4f}",
                             img_s=f"{rate:.0f}", refresh=False)

    def write(self, line: str) -> None:
        self.bar.write(line)

    def close(self) -> None:
        self.bar.close()

"""Contrastive pre-training: the whole loop, readable in one sitting.

    from clip_from_scratch.train import TrainConfig, train
    result = train(TrainConfig(out_dir="runs/shapes", steps=1000))
    result["zeroshot_top1"]        # % of held-out colour x shape pairs named right

What one step does (CLIP, Figure 3): encode a batch of images and their
captions, normalise both, score every image against every caption, and take
the symmetric cross-entropy with the matching pairs on the diagonal. AdamW
with a warm-up + cosine learning rate, gradients clipped, and the learnable
temperature ``logit_scale`` clamped at ln(100) as in the paper.

The data is the offline shapes set (``data/shapes.py``, a stand-in for COCO),
drawn once per run into a uint8 tensor, with a small BPE trained on its
captions, so the vocabulary (and the embedding table) stays tiny.

Plumbing lives in helpers below the loop: checkpoints (atomic, resumable,
``weights_only``-loadable), evaluation, the loss curve. Runs in one process
or under ``torchrun --nproc_per_node=N`` (DDP; gloo on CPU, nccl on GPU), where
each process takes a slice of the global batch and the loss all-gathers
features so every slice is contrasted against the whole batch.
"""
from __future__ import annotations

import json
import math
import os
import signal
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, fields
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .checkpoint import read_checkpoint, rng_state, save_checkpoint, set_rng_state
from .checkpoint import load_checkpoint  # noqa: F401  (re-exported: train.load_checkpoint)
from .data import shapes
from .loss import contrastive_loss
from .model import CLIP, CLIPConfig
from .tokenizer import Tokenizer, train_bpe
from .zeroshot import topk_correct, zero_shot_classifier, zero_shot_logits

CHECKPOINT = "checkpoint.pt"


class TrainingError(RuntimeError):
    """A problem the user can fix (bad folder, mismatched checkpoint, diverged run)."""


class TrainingDiverged(TrainingError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class TrainConfig:
    """Every setting of a run. The defaults train the shapes CLIP on a 2-core laptop CPU in about 2 minutes."""
    out_dir: str = "runs/shapes"      # checkpoint.pt, metrics.json, loss_curve.png go here
    # data (the offline shapes set)
    num_images: int = 40_000          # drawn once per run, reused every epoch
    image_resolution: int = 16        # tiny images: shapes and colours need no more
    max_shapes: int = 1               # >1: scenes with several shapes ("a red circle and a blue square.")
    spread: float = shapes.SPREAD     # how far from the centre shapes may sit (0 centred .. 1 anywhere)
    partial_captions: float = 0.3     # captions naming only the colour or only the shape ("a circle.")
    heldout: str = "pairs"            # captions: held-out pairs drawn but never named as a pair; pairs: never drawn
    shape_only: float = 0.5           # scenes shown as a shape in an unnamed colour, captioned "a circle."
    colour_only: float = 0.25         # scenes blurred past recognition, captioned "a red shape."
    zeroshot_images: int = 600        # held-out colour x shape pairs for the zero-shot score
    bpe_merges: int = 100             # the run's own tokenizer: 512 bytes + merges + 2 specials
    # model
    patch_size: int = 4               # 16 px / 4 = a 4 x 4 grid: 16 image tokens
    width: int = 64                   # both towers
    layers: int = 2                   # both towers
    heads: int = 2
    embed_dim: int = 64
    context_length: int = 32
    # optimisation
    steps: int = 2_000
    batch_size: int = 128             # global batch (split across processes under torchrun)
    lr: float = 2e-3
    warmup_steps: int = 100           # capped at a tenth of the steps, so short runs still get a schedule
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.98
    eps: float = 1e-6
    grad_clip: float = 1.0
    amp: str = "auto"                 # auto | bf16 | fp16 | off  (auto: bf16/fp16 on GPU, off on CPU)
    # bookkeeping
    seed: int = 0
    device: str = "auto"              # auto | cpu | cuda | cuda:1 | mps
    eval_every: int = 250             # zero-shot score every N steps (0: only at the end)
    checkpoint_every: int = 250       # and a checkpoint every N steps (and at the end, and on Ctrl-C)
    progress: bool = True             # tqdm progress bar
    stop_after: int | None = None     # stop (and save) after this step, as if interrupted; None: run to the end

    # Settings that define the run: a resumed run must agree on all of these.
    RUN_DEFINING = ("num_images", "image_resolution", "max_shapes", "spread", "partial_captions", "heldout", "shape_only", "colour_only",
                    "zeroshot_images", "bpe_merges",
                    "patch_size", "width", "layers", "heads", "embed_dim", "context_length", "steps",
                    "batch_size", "lr", "warmup_steps", "weight_decay", "beta1", "beta2", "eps",
                    "grad_clip", "seed")

    def __post_init__(self):
        problems = []
        if self.steps < 1:
            problems.append(f"steps must be at least 1 (got {self.steps})")
        if self.batch_size < 2:
            problems.append(f"batch_size must be at least 2 (got {self.batch_size}): a contrastive loss "
                            "needs other pairs in the batch to contrast against")
        if self.num_images < self.batch_size:
            problems.append(f"num_images ({self.num_images}) must be at least batch_size ({self.batch_size})")
        if not self.lr > 0:
            problems.append(f"lr must be positive (got {self.lr})")
        if self.image_resolution % self.patch_size:
            problems.append(f"image_resolution ({self.image_resolution}) must be a multiple of "
                            f"patch_size ({self.patch_size})")
        if self.width % self.heads:
            problems.append(f"width ({self.width}) must be divisible by heads ({self.heads})")
        if self.heldout not in ("pairs", "captions"):
            problems.append(f"heldout must be 'pairs' or 'captions' (got {self.heldout!r})")
        if not (0 <= self.shape_only and 0 <= self.colour_only and self.shape_only + self.colour_only <= 1):
            problems.append(f"shape_only and colour_only are fractions of the training scenes: each at least 0, "
                            f"together at most 1 (got {self.shape_only} and {self.colour_only})")
        if self.amp not in ("auto", "bf16", "fp16", "off"):
            problems.append(f"amp must be one of auto, bf16, fp16, off (got {self.amp!r})")
        for name in ("eval_every", "checkpoint_every", "weight_decay", "grad_clip", "bpe_merges", "warmup_steps"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must not be negative (got {getattr(self, name)})")
        if self.stop_after is not None and self.stop_after < 1:
            problems.append(f"stop_after must be at least 1 (got {self.stop_after})")
        if self.zeroshot_images < 1:
            problems.append(f"zeroshot_images must be at least 1 (got {self.zeroshot_images})")
        if problems:
            raise ValueError("impossible training settings:\n  " + "\n  ".join(problems))

    def model_config(self, vocab_size: int) -> CLIPConfig:
        return CLIPConfig(embed_dim=self.embed_dim, image_resolution=self.image_resolution,
                          vision_layers=self.layers, vision_width=self.width,
                          vision_patch_size=self.patch_size, context_length=self.context_length,
                          vocab_size=vocab_size, transformer_width=self.width,
                          transformer_heads=self.heads, transformer_layers=self.layers,
                          vision_heads=self.heads)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict, **changes) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{**{k: v for k, v in d.items() if k in known}, **changes})


# ----------------------------------------------------------------------------- the loop
def train(config: TrainConfig, resume: bool = False, overwrite: bool = False) -> dict:
    """Train (or, with ``resume=True``, continue) a shapes CLIP. Returns the final metrics.

    Writes ``checkpoint.pt`` every ``checkpoint_every`` steps, at the end and on
    Ctrl-C; ``metrics.json`` and ``loss_curve.png`` at the end. A run resumed
    from its checkpoint continues exactly as if it had never stopped.
    """
    rank, world_size, device = setup_distributed(config.device)
    out_dir = Path(config.out_dir)
    if rank == 0:
        check_output_folder(out_dir, resume, overwrite)
    torch.manual_seed(config.seed)

    state = read_checkpoint(out_dir / CHECKPOINT, device) if resume else None
    if state is not None:
        check_same_run(config, state, out_dir)

    # Data: shapes drawn once (deterministic by seed), captions -> a BPE -> token ids.
    images, captions = shapes.ShapesDataset(config.num_images, config.image_resolution, "train", config.seed,
                                            config.max_shapes, spread=config.spread,
                                            partial=config.partial_captions, heldout=config.heldout,
                                            shape_only=config.shape_only, colour_only=config.colour_only).tensors()
    tokenizer = (Tokenizer.from_dict(state["tokenizer"]) if state
                 else train_bpe(captions, config.bpe_merges))
    longest = max(len(tokenizer.encode(c)) + 2 for c in set(captions))
    if longest > config.context_length:
        raise TrainingError(f"the longest caption needs {longest} tokens but context_length is "
                            f"{config.context_length}: raise context_length or bpe_merges")
    tokens = tokenizer(captions, context_length=config.context_length)   # [num_images, context_length]
    zeroshot = shapes.zeroshot_set(config.zeroshot_images, config.image_resolution, config.seed, config.spread)
    images, tokens = images.to(device), tokens.to(device)

    model = CLIP(config.model_config(tokenizer.vocab_size)).to(device)
    optimizer = make_optimizer(model, config, device)
    amp_dtype = pick_amp(config.amp, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    history = {"step": [], "loss": [], "logit_scale": [], "lr": []}
    evals = {"step": [], "zeroshot_top1": []}
    step = 0
    if state is not None:   # pick up exactly where the checkpoint left off
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        history, evals, step = state["history"], state["evals"], state["step"]

    # Under torchrun, DDP averages gradients; the loss gathers features from every process.
    net = FeaturesForLoss(model)
    if world_size > 1:
        net = nn.parallel.DistributedDataParallel(net, device_ids=[device] if device.type == "cuda" else None)
    local_batch = config.batch_size // world_size

    def checkpoint():
        if rank == 0:
            save_checkpoint(dict(model=model.state_dict(), model_config=model.config.to_dict(),
                                 tokenizer=tokenizer.to_dict(), step=step, optimizer=optimizer.state_dict(),
                                 scaler=scaler.state_dict() if scaler.is_enabled() else None,
                                 train_config=config.to_dict(), rng=rng_state(), history=history,
                                 evals=evals), out_dir / CHECKPOINT)

    def evaluate():
        top1 = zeroshot_accuracy(model, tokenizer, zeroshot, config.context_length)
        evals["step"].append(step)
        evals["zeroshot_top1"].append(top1)
        return top1

    stop = StopOnCtrlC()
    bar = tqdm(total=config.steps, initial=step, disable=rank != 0 or not config.progress, desc="pretrain", unit="step", dynamic_ncols=True)
    started, start_step = time.perf_counter(), step
    with stop:
        while step < config.steps:
            lr = learning_rate(step, config)
            for group in optimizer.param_groups:
                group["lr"] = lr
            batch = batch_indices(step, config, len(images))[rank * local_batch:(rank + 1) * local_batch]
            batch_tokens = tokens[batch]
            batch_tokens = batch_tokens[:, :int((batch_tokens != 0).sum(1).max())]  # cut to the longest caption
            with torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else nullcontext():
                image_features, text_features, logit_scale = net(shapes.to_float(images[batch]), batch_tokens)
                loss = contrastive_loss(image_features.float(), text_features.float(), logit_scale,
                                        distributed=world_size > 1)
            if not torch.isfinite(loss):
                raise TrainingDiverged(
                    f"the loss became {loss.item()} at step {step + 1}, so training stopped. The last good "
                    f"checkpoint (step {saved_step(out_dir)}) is kept in {out_dir}. Try a lower --lr "
                    f"(now {config.lr}) or --amp off, then --resume or start over.")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip or float("inf"))
            scaler.step(optimizer)
            scaler.update()
            with torch.no_grad():   # CLIP clamps the temperature so logits never exceed 100x cosine
                model.logit_scale.clamp_(0, math.log(100))
            step += 1

            history["step"].append(step)
            history["loss"].append(loss.item())
            history["logit_scale"].append(model.logit_scale.exp().item())
            history["lr"].append(lr)
            images_per_second = (step - start_step) * config.batch_size / (time.perf_counter() - started)
            bar.set_postfix(loss=f"{loss.item():.3f}", T=f"{1 / history['logit_scale'][-1]:.4f}",
                            img_s=f"{images_per_second:.0f}", refresh=False)
            bar.update()
            if config.eval_every and step % config.eval_every == 0 and step < config.steps:
                bar.write(f"step {step}: zero-shot top-1 on held-out pairs {evaluate():.1f}%")
            if config.checkpoint_every and step % config.checkpoint_every == 0:
                checkpoint()
            if stop.requested or (config.stop_after is not None and step >= config.stop_after):
                break
    bar.close()
    elapsed = time.perf_counter() - started

    if step < config.steps:   # interrupted: save what we have, tell the user how to go on
        checkpoint()
        if rank == 0:
            print(f"stopped at step {step} of {config.steps}; checkpoint saved in {out_dir}. "
                  f"Continue with: clip-from-scratch pretrain --out {out_dir} --resume")
        cleanup_distributed(world_size)
        return {"step": step, "finished": False, "history": history}

    top1 = evaluate()
    checkpoint()
    metrics = dict(zeroshot_top1=top1, chance=100 / len(zeroshot["classnames"]), step=step,
                   final_loss=history["loss"][-1], logit_scale=history["logit_scale"][-1],
                   train_seconds=round(elapsed, 1), images_per_second=round(
                       (step - start_step) * config.batch_size / max(elapsed, 1e-9), 1),
                   device=str(device), world_size=world_size,
                   amp=str(amp_dtype).replace("torch.", "") if amp_dtype else "off",
                   vocab_size=tokenizer.vocab_size, parameters=sum(p.numel() for p in model.parameters()),
                   heldout_pairs=[" ".join(pair) for pair in shapes.HELD_OUT],
                   evals=evals, config=config.to_dict(), model_config=model.config.to_dict())
    if rank == 0:
        (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
        save_loss_curve(history, evals, out_dir / "loss_curve.png")
    cleanup_distributed(world_size)
    return {**metrics, "finished": True, "history": history}


# ----------------------------------------------------------------------------- pieces of a step
class FeaturesForLoss(nn.Module):
    """CLIP's forward, stopping at the normalised features the loss needs (DDP wraps this)."""

    def __init__(self, model: CLIP):
        super().__init__()
        self.model = model

    def forward(self, images, tokens):
        image_features = F.normalize(self.model.encode_image(images), dim=-1)   # [batch, embed_dim]
        text_features = F.normalize(self.model.encode_text(tokens), dim=-1)     # [batch, embed_dim]
        return image_features, text_features, self.model.logit_scale.exp()


def learning_rate(step: int, config: TrainConfig) -> float:
    """Linear warm-up to ``lr``, then a cosine down to 0 at the last step.

    >>> config = TrainConfig(steps=101, warmup_steps=10, lr=1.0)
    >>> [round(learning_rate(s, config), 3) for s in (0, 9, 10, 55, 100)]
    [0.1, 1.0, 1.0, 0.5, 0.0]
    """
    warmup = min(config.warmup_steps, config.steps // 10)
    if step < warmup:
        return config.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, config.steps - warmup - 1)
    return config.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def batch_indices(step: int, config: TrainConfig, num_images: int) -> torch.Tensor:
    """The images of a step: a fresh shuffle every epoch, a pure function of (seed, step).

    No sampler state to save: a resumed run reads exactly the batches it would have read.
    """
    batches_per_epoch = num_images // config.batch_size
    epoch, position = divmod(step, batches_per_epoch)
    order = torch.randperm(num_images, generator=torch.Generator().manual_seed(config.seed * 100_003 + epoch))
    return order[position * config.batch_size:(position + 1) * config.batch_size]


def make_optimizer(model: nn.Module, config: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW; no weight decay on gains, biases, embeddings and the logit scale (as in CLIP)."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        exempt = parameter.ndim < 2 or "embedding" in name or name == "logit_scale"
        (no_decay if exempt else decay).append(parameter)
    groups = [{"params": decay, "weight_decay": config.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    kwargs = dict(lr=config.lr, betas=(config.beta1, config.beta2), eps=config.eps)
    try:   # one fused kernel per step where this torch build has it
        return torch.optim.AdamW(groups, fused=device.type in ("cuda", "cpu"), **kwargs)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(groups, **kwargs)


def pick_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """Mixed precision: bf16 where the GPU has it, else fp16 (with a GradScaler); off on CPU by default."""
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if amp == "bf16" else torch.float16


class StopOnCtrlC:
    """Turn the first Ctrl-C into a request to stop after the current step (which then saves).

    Stopping between steps, never inside one, keeps the model and optimizer in
    step with each other. A second Ctrl-C stops at once, as usual.
    """
    requested = False

    def __enter__(self):
        self.previous = None
        try:
            self.previous = signal.signal(signal.SIGINT, self._handler)
        except ValueError:   # not the main thread (e.g. some notebook runners): Ctrl-C as usual
            pass
        return self

    def _handler(self, signum, frame):
        self.requested = True
        signal.signal(signal.SIGINT, self.previous or signal.default_int_handler)
        print("\nCtrl-C: stopping after this step and saving a checkpoint (press again to quit now)")

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
        return False


# ----------------------------------------------------------------------------- evaluation
@torch.no_grad()
def zeroshot_accuracy(model: CLIP, tokenizer: Tokenizer, zeroshot: dict, context_length: int) -> float:
    """Top-1 (%) on held-out colour x shape pairs, classifying among all class names."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    classifier = zero_shot_classifier(model, zeroshot["classnames"], zeroshot["templates"],
                                      tokenizer=partial(tokenizer, context_length=context_length),
                                      device=device, progress=False)
    features = torch.cat([model.encode_image(shapes.to_float(chunk.to(device)))
                          for chunk in zeroshot["images"].split(500)])
    correct = topk_correct(zero_shot_logits(features, classifier), zeroshot["labels"].to(device), ks=(1,))[1]
    model.train(was_training)
    return 100 * correct.float().mean().item()


def save_loss_curve(history: dict, evals: dict, path: Path) -> None:
    """Loss and logit scale against step, and the zero-shot score where it was measured."""
    from matplotlib.figure import Figure   # no pyplot: leaves a notebook's plotting backend alone

    fig = Figure(figsize=(10, 3.5))
    ax_loss, ax_scale = fig.subplots(1, 2)
    ax_loss.plot(history["step"], history["loss"], lw=0.8)
    ax_loss.set(xlabel="step", ylabel="contrastive loss", title="training loss (shapes, not COCO)")
    if evals["step"]:
        ax_acc = ax_loss.twinx()
        ax_acc.plot(evals["step"], evals["zeroshot_top1"], "o-", color="C1")
        ax_acc.set(ylabel="zero-shot top-1 on held-out pairs (%)", ylim=(0, 100))
    ax_scale.plot(history["step"], history["logit_scale"], color="C2")
    ax_scale.set(xlabel="step", ylabel="logit_scale = 1 / temperature", title="learned temperature")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


# ----------------------------------------------------------------------------- plumbing
def setup_distributed(device_name: str) -> tuple[int, int, torch.device]:
    """(rank, world_size, device). Under torchrun, join the process group (nccl on GPU, gloo on CPU)."""
    device = torch.device(device_name) if device_name != "auto" else None
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if device is None:
        from .course import pick_device
        device = pick_device()
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TrainingError("--device cuda was asked for, but this machine has no CUDA GPU: use --device cpu")
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


def check_output_folder(out_dir: Path, resume: bool, overwrite: bool) -> None:
    """Fail before any work if the folder can't be written, or would lose an earlier run."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".write_test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise TrainingError(f"cannot write to the output folder {out_dir} ({err.strerror or err}). "
                            "Choose another folder with --out.") from None
    checkpoint = out_dir / CHECKPOINT
    if resume and not checkpoint.exists():
        raise TrainingError(f"nothing to resume: {checkpoint} does not exist. Run without --resume to start.")
    if not resume and checkpoint.exists() and not overwrite:
        raise TrainingError(f"{out_dir} already holds a run ({CHECKPOINT}). Continue it with --resume, "
                            "start over with --overwrite, or pick another folder with --out.")


def check_same_run(config: TrainConfig, state: dict, out_dir: Path) -> None:
    """A resumed run must be the same run: every run-defining setting equal."""
    saved = state.get("train_config") or {}
    differences = [f"{name}: checkpoint {saved.get(name)!r}, now {getattr(config, name)!r}"
                   for name in TrainConfig.RUN_DEFINING if saved.get(name) != getattr(config, name)]
    if differences:
        raise TrainingError(f"the checkpoint in {out_dir} belongs to a run with other settings:\n  "
                            + "\n  ".join(differences)
                            + "\nResume with the same settings, or start a new run in another --out folder.")


def saved_step(out_dir: Path) -> int | str:
    try:
        return read_checkpoint(out_dir / CHECKPOINT)["step"]
    except (FileNotFoundError, ValueError):
        return "none yet"

"""Contrastive pre-training: the whole loop, readable in one sitting.

    from clip_from_scratch.train import TrainConfig, train
    result = train(TrainConfig(out_dir="runs/shapes", steps=1000))         # offline: shapes
    result = train(TrainConfig.for_data("coco", preset="cpu"))             # COCO captions
    result["zeroshot_top1"]        # shapes: % of held-out colour x shape pairs named right
    result["retrieval"]            # COCO: val2017 recall@1/5/10, image->text and text->image

What one step does (CLIP, Figure 3): take a batch of images, one caption
each; encode both; normalise; score every image against every caption; and
take the symmetric cross-entropy with the matching pairs on the diagonal.
AdamW with a warm-up + cosine learning rate, gradients clipped, and the
learnable logit scale (1 / temperature, stored as its log ``logit_scale``) clamped at 100 as in the paper.

Mixed precision (on a GPU) covers the encoders only: the features are cast to
float32 *before* the loss, so the logits (up to 100 x cosine) and the
softmax are computed in float32 (in bfloat16, logits of 100 carry errors of
~0.25). The step never waits for the GPU: the loss stays on the device and
is read every ``log_every`` steps.

The data is anything with uint8 images and captions per image
(``data/pairs.py``): the offline shapes set or COCO (``train_data.py``).
Plumbing lives elsewhere: ``training_run.py`` (processes, folders, signals,
result files), ``checkpoint.py`` (atomic, ``weights_only`` files).
Runs in one process or under ``torchrun --nproc_per_node=N`` (DDP), where
each process takes a slice of the global batch and the loss all-gathers
features so every slice is contrasted against the whole batch.
"""
from __future__ import annotations

import math
import os
import time
from contextlib import nullcontext
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .bpe import train_bpe
from .checkpoint import read_checkpoint, rng_state, save_checkpoint, set_rng_state
from .data.pairs import ImageCaptionPairs
from .loss import contrastive_loss, hard_negative_loss
from .model import CLIP, ArchitectureMismatchError, CLIPConfig
from .tokenizer import Tokenizer
from .train_config import TrainConfig  # noqa: F401  (re-exported: train.TrainConfig)
from .train_data import load_pairs, make_evaluation
from .training_run import (  # noqa: F401
    CHECKPOINT,
    StopRequest,
    TrainingDiverged,
    TrainingError,
    any_rank,
    check_output_folder,
    check_same_run,
    cleanup_distributed,
    clear_old_results,
    read_resume_state,
    saved_step,
    setup_distributed,
    write_results,
)
from .transforms import normalize


# ----------------------------------------------------------------------------- the loop
def train(config: TrainConfig, resume: bool = False, overwrite: bool = False,
          pairs: ImageCaptionPairs | None = None, evaluation=None) -> dict:
    """Train (or, with ``resume=True``, continue) a CLIP. Returns the final metrics.

    ``pairs`` overrides the data ``config.data`` names (a notebook's own set),
    ``evaluation`` the way it is scored (anything with ``metric``,
    ``score(model, tokenize)`` and ``final(model, tokenize)``, as in train_data.py).
    Writes ``checkpoint.pt`` every ``checkpoint_every`` steps, at the end and
    when stopped (Ctrl-C, SIGTERM, SIGHUP); ``metrics.json`` and
    ``loss_curve.png`` at the end. A run resumed from its checkpoint continues
    exactly as if it had never stopped.
    """
    rank, world_size, device = setup_distributed(config.device)
    out_dir = Path(config.out_dir)
    check_output_folder(out_dir, resume, overwrite, rank)
    state = read_resume_state(out_dir, device) if resume else None
    if state is not None:
        check_same_run(state["train_config"], config, out_dir)
    elif rank == 0:
        clear_old_results(out_dir)
    torch.manual_seed(config.seed)

    # Data: uint8 images, every caption tokenized once by the run's own BPE.
    pairs = pairs if pairs is not None else load_pairs(config, rank, world_size)
    if len(pairs) < config.batch_size:
        raise TrainingError(f"only {len(pairs)} training images for a batch of {config.batch_size}: "
                            "lower --batch-size or use more images")
    tokenizer = Tokenizer.from_dict(state["tokenizer"]) if state else train_bpe(pairs.all_captions(),
                                                                                 config.bpe_merges)
    if config.hard_negatives and pairs.negatives is None:
        raise TrainingError(f"hard negatives need a false caption per caption, and {pairs.name or 'this data'} "
                            "has none: build the pairs with negatives (shapes: ShapesDataset.tensors(negatives=...))")
    captions = pairs.tokenize(tokenizer, config.context_length)
    tokenize = partial(tokenizer.tokenize, context_length=config.context_length, truncate=True)
    evaluation = evaluation if evaluation is not None else make_evaluation(config, rank, world_size)
    images = keep_on_device_if_it_fits(pairs.images, device)

    model = CLIP(config.model_config(tokenizer.vocab_size)).to(device)
    optimizer = make_optimizer(model, config, device)
    amp_dtype = pick_amp(config.amp, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    history = {"step": [], "loss": [], "logit_scale": [], "lr": []}
    evals = {"step": [], evaluation.metric: []}
    step, seconds_before = 0, 0.0
    if state is not None:   # pick up exactly where the checkpoint left off
        try:
            model.load_state_dict(state["model"])
        except ArchitectureMismatchError as err:
            raise TrainingError(f"{out_dir / CHECKPOINT} does not fit this run's model: {err}") from None
        optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        history, evals, step = state["history"], state["evals"], state["step"]
        seconds_before = state.get("train_seconds", 0.0)

    # Under torchrun, DDP averages gradients; the loss gathers features from every process.
    net = FeaturesForLoss(model)
    if world_size > 1:
        net = nn.parallel.DistributedDataParallel(net, device_ids=[device] if device.type == "cuda" else None)
    if config.compile:
        net = torch.compile(net)
    local = slice(rank * (config.batch_size // world_size), (rank + 1) * (config.batch_size // world_size))

    def checkpoint():
        if rank == 0:
            save_checkpoint(dict(model=model.state_dict(), model_config=model.config.to_dict(),
                                 tokenizer=tokenizer.to_dict(), step=step, optimizer=optimizer.state_dict(),
                                 scaler=scaler.state_dict() if scaler.is_enabled() else None,
                                 train_config=config.to_dict(), rng=rng_state(), history=history,
                                 evals=evals, train_seconds=seconds_before + time.perf_counter() - started),
                            out_dir / CHECKPOINT)

    pending = []   # (step, lr, loss, logit_scale) not yet read from the device
    bar = tqdm(total=config.steps, initial=step, disable=rank != 0 or not config.progress,
               desc=f"pretrain ({pairs.name})", unit="step", dynamic_ncols=True)
    started, start_step = time.perf_counter(), step

    def read_losses():
        """Bring the last steps' numbers over from the device (one wait), and stop on a NaN."""
        values = torch.stack([torch.stack(p[2:]) for p in pending]).tolist() if pending else []
        for (at, lr, *_), (loss, scale) in zip(pending, values):
            if not math.isfinite(loss):
                raise TrainingDiverged(
                    f"the loss became {loss} at step {at}, so training stopped. The last good checkpoint "
                    f"(step {saved_step(out_dir)}) is kept in {out_dir}. Try a lower --lr (now {config.lr}) "
                    f"or --amp off, then --resume or start over.")
            for key, value in zip(("step", "loss", "logit_scale", "lr"), (at, loss, scale, lr)):
                history[key].append(value)
        pending.clear()
        if values:
            rate = (step - start_step) * config.batch_size / (time.perf_counter() - started)
            bar.set_postfix(loss=f"{history['loss'][-1]:.3f}", T=f"{1 / history['logit_scale'][-1]:.4f}",
                            img_s=f"{rate:.0f}", refresh=False)

    with StopRequest(quiet=rank != 0) as stop:
        while step < config.steps:
            lr = learning_rate(step, config)
            for group in optimizer.param_groups:
                group["lr"] = lr
            batch = make_batch(step, config, images, captions, device, local)
            loss = batch_loss(net, batch, amp_dtype, distributed=world_size > 1,
                              hard_negatives=config.hard_negatives)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if config.grad_clip:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            with torch.no_grad():   # CLIP clamps the logit scale at 100, so logits never exceed 100 x cosine
                model.logit_scale.clamp_(0, math.log(100))
            step += 1
            pending.append((step, lr, loss.detach(), model.logit_scale.detach().exp()))
            bar.update()

            evaluate_now = config.eval_every and step % config.eval_every == 0 and step < config.steps
            save_now = config.checkpoint_every and step % config.checkpoint_every == 0
            stop_now = config.stop_after is not None and step >= config.stop_after
            if step % config.log_every == 0 or evaluate_now or save_now or stop_now or step == config.steps:
                read_losses()   # before anything is saved: a NaN never reaches a checkpoint
                stop_now = any_rank(stop_now or stop.requested, world_size, device)
                if evaluate_now:
                    score = evaluation.score(model, tokenize)
                    evals["step"].append(step)
                    evals[evaluation.metric].append(score)
                    bar.write(f"step {step}: {evaluation.metric} {score:.1f}%")
                if save_now:
                    checkpoint()
                if stop_now:
                    break
    bar.close()

    if step < config.steps:   # stopped early: save what we have, tell the user how to go on
        checkpoint()
        if rank == 0:
            print(f"stopped at step {step} of {config.steps}; checkpoint saved in {out_dir}. "
                  f"Continue with: clip-from-scratch pretrain --out {out_dir} --resume", flush=True)
        cleanup_distributed(world_size)
        return {"step": step, "finished": False, "history": history}

    elapsed = time.perf_counter() - started
    final = evaluation.final(model, tokenize)
    evals["step"].append(step)
    evals[evaluation.metric].append(final[evaluation.metric])
    checkpoint()
    metrics = dict(**final, data=config.data, step=step, final_loss=history["loss"][-1],
                   logit_scale=history["logit_scale"][-1], train_seconds=round(seconds_before + elapsed, 1),
                   images_per_second=round((step - start_step) * config.batch_size / max(elapsed, 1e-9), 1),
                   device=str(device), world_size=world_size,
                   amp=str(amp_dtype).replace("torch.", "") if amp_dtype else "off",
                   vocab_size=tokenizer.vocab_size, parameters=sum(p.numel() for p in model.parameters()),
                   training_images=len(pairs), evals=evals, config=config.to_dict(),
                   model_config=model.config.to_dict())
    if rank == 0:
        write_results(out_dir, metrics, history, evals)
    cleanup_distributed(world_size)
    return {**metrics, "finished": True, "history": history}


# ----------------------------------------------------------------------------- reading a run back
def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu"):
    """``(model, tokenizer)`` from a training checkpoint, the model in eval mode on ``device``.

    The tokenizer is the run's own BPE; call it with the model's context length::

        tokens = tokenizer(["a red circle"], context_length=model.config.context_length)
    """
    state = read_checkpoint(path, device)
    model = CLIP(CLIPConfig.from_dict(state["model_config"]))
    model.load_state_dict(state["model"])
    tokenizer = Tokenizer.from_dict(state["tokenizer"])
    return model.to(device).eval(), tokenizer


# ----------------------------------------------------------------------------- pieces of a step
class FeaturesForLoss(nn.Module):
    """The two encoders and the logit scale: what the loss needs (DDP wraps this)."""

    def __init__(self, model: CLIP):
        super().__init__()
        self.model = model

    def forward(self, images, tokens, eot_index):
        image_features = self.model.encode_image(images)                   # [batch, embed_dim]
        text_features = self.model.encode_text(tokens, eot_index)         # [batch, embed_dim]
        return image_features, text_features, self.model.logit_scale.exp()


def batch_loss(net: nn.Module, batch, amp_dtype: torch.dtype | None, distributed: bool = False,
               hard_negatives: bool = False) -> torch.Tensor:
    """The contrastive loss of a batch: encoders under autocast (if any), the loss itself in float32.

    Features are cast to float32 *outside* autocast, so the logits (up to
    100 x cosine) and the softmax are float32 whatever the encoders ran in.
    ``hard_negatives``: the batch's captions are the B true ones, then B false
    ones (see :func:`make_batch`), and the loss is :func:`hard_negative_loss`.
    """
    pixels, text, eot_index = batch
    with torch.autocast(pixels.device.type, dtype=amp_dtype) if amp_dtype else nullcontext():
        image_features, text_features, logit_scale = net(pixels, text, eot_index)
    image_features = F.normalize(image_features.float(), dim=-1)    # [batch, embed_dim]
    text_features = F.normalize(text_features.float(), dim=-1)      # [batch (x 2 with negatives), embed_dim]
    if hard_negatives:
        true, false = text_features.chunk(2)
        return hard_negative_loss(image_features, true, false, logit_scale.float(), distributed=distributed)
    return contrastive_loss(image_features, text_features, logit_scale.float(), distributed=distributed)


def make_batch(step: int, config: TrainConfig, images: torch.Tensor, captions, device: torch.device,
               local: slice = slice(None)) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The step's images (normalised, maybe cropped), one caption each, and where each caption ends.

    With ``config.hard_negatives`` the text holds the true captions, then a
    false caption for each, in the same order.

    Everything is decided on the CPU from (seed, step), so nothing waits for
    the GPU and a resumed run draws the very same batch. Captions are cut to
    the batch's longest one here, once.
    """
    epoch, indices = batch_indices(step, config, len(images))
    indices = indices[local]                                                 # this process's slice
    rows = captions.caption_rows(indices, epoch, config.seed)               # one caption per image
    tokens, lengths = captions.tokens[rows], captions.lengths[rows]
    if config.hard_negatives:   # then each caption's false twin: one text batch of 2 x batch captions
        tokens = torch.cat([tokens, captions.negative_tokens[rows]])
        lengths = torch.cat([lengths, captions.negative_lengths[rows]])
    text = tokens[:, :int(lengths.max())].to(device, non_blocking=True)    # [batch (x 2), longest]
    eot_index = (lengths - 1).to(device, non_blocking=True)                 # [batch]
    pixels = normalize(images[indices.to(images.device)].to(device, non_blocking=True))  # [batch, 3, R, R]
    if config.crop_scale < 1:
        generator = torch.Generator().manual_seed(config.seed * 1_000_003 + step)
        pixels = random_resized_crop(pixels, config.crop_scale, generator)
    return pixels, text, eot_index


def random_resized_crop(images: torch.Tensor, min_scale: float, generator: torch.Generator) -> torch.Tensor:
    """A square crop of each image covering ``min_scale``..1 of its area, resized back, on the device.

    One batched ``grid_sample`` instead of a PIL crop per image. No flip, on
    purpose: captions say "on the left of", and a mirrored image would make
    them lie.

    >>> x = torch.arange(16.).view(1, 1, 4, 4).expand(2, 3, 4, 4)
    >>> torch.allclose(random_resized_crop(x, 1.0, torch.Generator().manual_seed(0)), x, atol=1e-5)
    True
    """
    batch = images.shape[0]
    side = torch.empty(batch).uniform_(min_scale, 1.0, generator=generator).sqrt()   # crop side / image side
    centre = (torch.rand(batch, 2, generator=generator) * 2 - 1) * (1 - side)[:, None]  # stays inside
    theta = torch.zeros(batch, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = side
    theta[:, :, 2] = centre
    grid = F.affine_grid(theta.to(images.device, images.dtype), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def keep_on_device_if_it_fits(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Training images on the GPU (uint8) when they take under a quarter of its free memory.

    118k COCO images at 64 px are 1.4 GB as uint8: on an H100 they live on the
    card and a batch is one indexing kernel, no copy from the host.
    """
    if device.type == "cuda" and images.numel() < 0.25 * torch.cuda.mem_get_info(device)[0]:
        return images.to(device)
    return images


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


def batch_indices(step: int, config: TrainConfig, num_images: int) -> tuple[int, torch.Tensor]:
    """``(epoch, images of the step)``: a fresh shuffle every epoch, a pure function of (seed, step).

    No sampler state to save: a resumed run reads exactly the batches it would have read.

    >>> epoch, batch = batch_indices(3, TrainConfig(batch_size=4, num_images=10), 10)
    >>> epoch, len(batch)     # 10 images make 2 full batches of 4 per epoch: step 3 is in epoch 1
    (1, 4)
    """
    batches_per_epoch = num_images // config.batch_size
    epoch, position = divmod(step, batches_per_epoch)
    order = torch.randperm(num_images, generator=torch.Generator().manual_seed(config.seed * 100_003 + epoch))
    return epoch, order[position * config.batch_size:(position + 1) * config.batch_size]


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

"""Contrastive pre-training: the whole loop, readable in one sitting.

    from clip_from_scratch.train import TrainConfig, train
    result = train(TrainConfig(out_dir="runs/shapes", steps=1000))         # offline: shapes
    result = train(TrainConfig.for_data("coco", preset="cpu"))             # COCO captions
    result["zeroshot_top1"]        # shapes: % of held-out colour x shape pairs named right
    result["retrieval"]            # COCO: val2017 recall@1/5/10, image->text and text->image

What one step does (CLIP, Figure 3; :func:`train_step`): take a batch of
images, one caption each; encode both; normalise; score every image against
every caption; and take the symmetric cross-entropy with the matching pairs
on the diagonal. AdamW with a warm-up + cosine learning rate, gradients
clipped, and the learnable logit scale (1 / temperature, stored as its log
``logit_scale``) clamped at 100 as in the paper. :func:`train` is that step
in a loop, with evaluations, checkpoints and clean stops around it.

Mixed precision (on a GPU) covers the encoders only: the features are cast to
float32 *before* the loss, so the logits (up to 100 x cosine) and the
softmax are computed in float32 (in bfloat16, logits of 100 carry errors of
~0.25). The step never waits for the GPU: the loss stays on the device and
is read every ``log_every`` steps.

The seam for other objectives. What is trained and what it is scored
against is an *objective* (``OBJECTIVE_CLASSES``, chosen by :func:`objective_for`
from the config), with four methods:

* ``build_model(config, vocab_size) -> nn.Module`` — the model the optimizer trains;
* ``network(model) -> nn.Module`` — what DDP and ``torch.compile`` wrap;
* ``forward(net, batch)`` — runs the encoders (under autocast) and returns what the loss needs;
* ``loss(outputs, batch, distributed) -> Tensor`` — the loss, in float32.

:class:`Contrastive` is CLIP's. A batch is a :class:`Batch` (images, text,
``eot_index``, and ``extra`` tensors an objective may need, e.g. hard
negative captions), made by :func:`make_batch`. A new objective is one
class and one ``OBJECTIVE_CLASSES`` entry; a new setting is one ``TrainConfig`` field.

The data is anything with uint8 images and captions per image
(``data/pairs.py``): the offline shapes set or COCO (``train_data.py``).
Plumbing lives elsewhere: ``runs.py`` (the run folder: checkpoint, results,
:class:`~clip_from_scratch.runs.TrainState`), ``training_run.py``
(processes, signals, the progress line). Runs in one process or under
``torchrun --nproc_per_node=N`` (DDP), where each process takes a slice of
the global batch and the loss all-gathers features so every slice is
contrasted against the whole batch.
"""
from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .bpe import train_bpe
from .data.pairs import ImageCaptionPairs
from .errors import TrainingDiverged, TrainingError  # noqa: F401  (re-exported: train.TrainingError, ...)
from .loss import contrastive_loss, hard_negative_loss
from .model import CLIP
from .objectives import CLIPWithObjective
from .runs import CHECKPOINT, TrainState, load_checkpoint, prepare_run_folder, save_state, write_results  # noqa: F401
from .tokenizer import Tokenizer
from .train_config import TrainConfig  # noqa: F401  (re-exported: train.TrainConfig)
from .train_data import load_pairs, make_evaluation
from .training_run import StepLog, StopRequest, any_rank, cleanup_distributed, process_slice, setup_distributed
from .transforms import normalize, random_resized_crop


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
    local = process_slice(config.batch_size, rank, world_size)
    out_dir = Path(config.out_dir)
    saved = prepare_run_folder(config, resume, overwrite, rank, device)
    torch.manual_seed(config.seed)

    # Data: uint8 images, every caption tokenized once by the run's own BPE.
    pairs = pairs if pairs is not None else load_pairs(config, rank, world_size)
    if len(pairs) < config.batch_size:
        raise TrainingError(f"only {len(pairs)} training images for a batch of {config.batch_size}: "
                            "lower --batch-size or use more images")
    tokenizer = Tokenizer.from_dict(saved["tokenizer"]) if saved else train_bpe(pairs.all_captions(),
                                                                                 config.bpe_merges)
    if config.hard_negatives and pairs.negatives is None:
        raise TrainingError(f"hard negatives need a false caption per caption, and {pairs.name or 'this data'} "
                            "has none: build the pairs with negatives (shapes: ShapesDataset.tensors(negatives=...))")
    captions = pairs.tokenize(tokenizer, config.context_length)
    tokenize = partial(tokenizer.tokenize, context_length=config.context_length, truncate=True)
    evaluation = evaluation if evaluation is not None else make_evaluation(config, rank, world_size)
    images = keep_on_device_if_it_fits(pairs.images, device)

    objective = objective_for(config)
    state = start_state(config, tokenizer, device, evaluation.metric, saved, objective, source=out_dir / CHECKPOINT)
    net = training_network(state.model, objective, config, world_size, device)
    amp_dtype = pick_amp(config.amp, device)
    log = StepLog(state.history, config, state.step, f"pretrain ({pairs.name})", show=rank == 0 and config.progress)
    clock, start_step = Stopwatch(state.train_seconds), state.step

    with StopRequest(quiet=rank != 0) as stop:
        while state.step < config.steps:
            batch = make_batch(state.step, config, images, captions, device, local)
            loss = train_step(state, net, batch, config, amp_dtype, world_size > 1, objective)
            log.add(state, loss)
            step = state.step
            evaluate_now = config.eval_every and step % config.eval_every == 0 and step < config.steps
            save_now = config.checkpoint_every and step % config.checkpoint_every == 0
            stop_now = config.stop_after is not None and step >= config.stop_after
            if step % config.log_every == 0 or evaluate_now or save_now or stop_now or step == config.steps:
                log.read()   # before anything is saved: a NaN never reaches a checkpoint
                stop_now = any_rank(stop_now or stop.requested, world_size, device)
                if evaluate_now:
                    state.add_eval(evaluation.metric, evaluation.score(state.model, tokenize))
                    log.write(f"step {step}: {evaluation.metric} {state.evals[evaluation.metric][-1]:.1f}%")
                if save_now:
                    save_checkpoint_on_rank0(state, out_dir, clock, rank)
                if stop_now:
                    break
    log.close()

    if state.step < config.steps:   # stopped early: save what we have, tell the user how to go on
        save_checkpoint_on_rank0(state, out_dir, clock, rank)
        if rank == 0:
            print(f"stopped at step {state.step} of {config.steps}; checkpoint saved in {out_dir}. "
                  f"Continue with: clip-from-scratch pretrain --out {out_dir} --resume", flush=True)
        cleanup_distributed(world_size)
        return {"step": state.step, "finished": False, "history": state.history}

    elapsed = clock.session()
    final = evaluation.final(state.model, tokenize)
    state.add_eval(evaluation.metric, final[evaluation.metric])
    save_checkpoint_on_rank0(state, out_dir, clock, rank)
    metrics = run_metrics(state, final, device, world_size, amp_dtype, len(pairs), seconds=clock.before + elapsed,
                          images_per_second=(state.step - start_step) * config.batch_size / max(elapsed, 1e-9))
    if rank == 0:
        write_results(out_dir, metrics, state.history, state.evals)
    cleanup_distributed(world_size)
    return {**metrics, "finished": True, "history": state.history}


# ----------------------------------------------------------------------------- the step
def train_step(state: TrainState, net: nn.Module, batch: Batch, config: TrainConfig,
               amp_dtype: torch.dtype | None = None, distributed: bool = False, objective=None) -> torch.Tensor:
    """One optimisation step on ``batch``; ``state.step`` advances by one. Returns the loss, still on the device.

    ``net`` is ``objective.network(state.model)`` (maybe under DDP or
    compiled; :func:`training_network`). Reading the returned loss (``.item()``)
    makes the CPU wait for the GPU: the loop reads it only every ``log_every`` steps.
    """
    for group in state.optimizer.param_groups:
        group["lr"] = learning_rate(state.step, config)            # warm-up + cosine
    loss = batch_loss(net, batch, amp_dtype, distributed, objective)   # encoders under AMP, the loss in float32
    state.optimizer.zero_grad(set_to_none=True)
    state.scaler.scale(loss).backward()                              # float16 needs loss scaling; else a no-op
    if config.grad_clip:
        state.scaler.unscale_(state.optimizer)                       # clip the true gradients, not scaled ones
        nn.utils.clip_grad_norm_(state.model.parameters(), config.grad_clip)
    state.scaler.step(state.optimizer)                               # AdamW, decay on the weight matrices only
    state.scaler.update()
    with torch.no_grad():   # CLIP clamps the logit scale at 100, so logits never exceed 100 x cosine
        state.model.logit_scale.clamp_(0, math.log(100))
    state.step += 1
    return loss.detach()


@dataclass
class Batch:
    """One step's data: ``images`` [batch, 3, R, R] (normalised), ``text`` [batch, longest] token ids,
    ``eot_index`` [batch] (where each caption ends), and ``extra`` tensors an objective may need.

    Unpacks like the tuple it once was: ``images, text, eot_index = batch``.
    """
    images: torch.Tensor
    text: torch.Tensor
    eot_index: torch.Tensor
    extra: dict[str, torch.Tensor] = field(default_factory=dict)

    def __iter__(self):
        return iter((self.images, self.text, self.eot_index))


class FeaturesForLoss(nn.Module):
    """The two encoders and the logit scale: what the contrastive loss needs (DDP wraps this)."""

    def __init__(self, model: CLIP):
        super().__init__()
        self.model = model

    def forward(self, images, tokens, eot_index):
        image_features = self.model.encode_image(images)                   # [batch, embed_dim]
        text_features = self.model.encode_text(tokens, eot_index)         # [batch, embed_dim]
        return image_features, text_features, self.model.logit_scale.exp()


class Contrastive:
    """CLIP's objective: symmetric cross-entropy over the batch's image x caption similarities."""
    name = "contrastive"

    def __init__(self, config: TrainConfig | None = None):
        self.config = config

    def build_model(self, config: TrainConfig, vocab_size: int) -> CLIP:
        return CLIP(config.model_config(vocab_size))

    def network(self, model: CLIP) -> nn.Module:
        return FeaturesForLoss(model)

    def forward(self, net: nn.Module, batch: Batch):
        return net(batch.images, batch.text, batch.eot_index)

    def loss(self, outputs, batch: Batch, distributed: bool = False) -> torch.Tensor:
        image_features, text_features, logit_scale = outputs           # [batch, embed_dim] x 2, a scalar
        return contrastive_loss(F.normalize(image_features.float(), dim=-1),
                                F.normalize(text_features.float(), dim=-1), logit_scale.float(),
                                distributed=distributed)


class PredictTheCaption:
    """The paper's other two objectives (objectives.py): predict the caption's bag of words (``bow``) or
    its tokens one by one (``captioning``) from the image. The model is a CLIP with the objective's head
    beside it; the text tower is built but idle, and the step runs only the image tower and the head."""

    def __init__(self, config: TrainConfig):
        self.config, self.name = config, config.objective

    def build_model(self, config: TrainConfig, vocab_size: int) -> CLIPWithObjective:
        return CLIPWithObjective(config.model_config(vocab_size), config.objective)

    def network(self, model: CLIPWithObjective) -> nn.Module:
        return model.training_network()

    def forward(self, net: nn.Module, batch: Batch) -> torch.Tensor:
        return net(batch.images, batch.text, batch.eot_index)      # the loss itself (log-softmax in float32)

    def loss(self, outputs: torch.Tensor, batch: Batch, distributed: bool = False) -> torch.Tensor:
        return outputs.float()   # no term across the batch: DDP's averaged gradients are the whole story



class HardNegatives(Contrastive):
    """NegCLIP (chapter 09): each caption's false twin joins the text side as an extra negative.

    The batch carries the false captions in ``extra`` (see :func:`make_batch`).
    Both caption sets go through the text encoder in one call (one forward of
    the DDP-wrapped network per step), then :func:`~clip_from_scratch.loss.hard_negative_loss`
    scores each image against B true + B false captions.
    """
    name = "hard_negatives"

    def forward(self, net: nn.Module, batch: Batch):
        false, false_eot = batch.extra["negative_text"], batch.extra["negative_eot_index"]
        longest = max(batch.text.shape[1], false.shape[1])
        text = torch.cat([F.pad(batch.text, (0, longest - batch.text.shape[1])),
                          F.pad(false, (0, longest - false.shape[1]))])             # [2 x batch, longest]
        return net(batch.images, text, torch.cat([batch.eot_index, false_eot]))

    def loss(self, outputs, batch: Batch, distributed: bool = False) -> torch.Tensor:
        image_features, text_features, logit_scale = outputs         # [batch, D], [2 x batch, D], a scalar
        true, false = F.normalize(text_features.float(), dim=-1).chunk(2)
        return hard_negative_loss(F.normalize(image_features.float(), dim=-1), true, false, logit_scale.float(),
                                  distributed=distributed)


#: The class behind each objective name (``objectives.OBJECTIVES``, ``TrainConfig.objective``);
#: ``--hard-negatives`` turns contrastive into :class:`HardNegatives`.
OBJECTIVE_CLASSES = {"contrastive": Contrastive, "bow": PredictTheCaption, "captioning": PredictTheCaption}


def objective_for(config: TrainConfig):
    """The objective ``config`` trains with (``hard_negatives=True``: :class:`HardNegatives`).

    >>> objective_for(TrainConfig()).name, objective_for(TrainConfig(hard_negatives=True)).name
    ('contrastive', 'hard_negatives')
    """
    if config.hard_negatives:   # TrainConfig allows it with the contrastive objective only
        return HardNegatives(config)
    return OBJECTIVE_CLASSES[config.objective](config)


def batch_loss(net: nn.Module, batch: Batch, amp_dtype: torch.dtype | None, distributed: bool = False,
               objective=None) -> torch.Tensor:
    """The loss of a batch (contrastive unless ``objective`` says otherwise): encoders under autocast
    (if any), the loss itself in float32.

    Features are cast to float32 *outside* autocast, so the logits (up to
    100 x cosine) and the softmax are float32 whatever the encoders ran in.
    """
    objective = objective or Contrastive()
    if not isinstance(batch, Batch):      # a plain (images, text, eot_index) tuple
        batch = Batch(*batch)
    with torch.autocast(batch.images.device.type, dtype=amp_dtype) if amp_dtype else nullcontext():
        outputs = objective.forward(net, batch)
    return objective.loss(outputs, batch, distributed)


# ----------------------------------------------------------------------------- setting a run up
def start_state(config: TrainConfig, tokenizer: Tokenizer, device: torch.device, metric: str = "zeroshot_top1",
                saved: dict | None = None, objective=None, source: str | Path = "the checkpoint") -> TrainState:
    """A run's model, optimizer and loss scaler: new (seed torch first), or as ``saved`` left them."""
    objective = objective or objective_for(config)
    model = objective.build_model(config, tokenizer.vocab_size).to(device)
    optimizer = make_optimizer(model, config, device)
    scaler = torch.amp.GradScaler(device.type, enabled=pick_amp(config.amp, device) == torch.float16)
    if saved is None:
        evals = {"step": [], metric: [], "images_seen": []}
        return TrainState(model, optimizer, scaler, tokenizer, config, evals=evals)
    return TrainState.from_checkpoint(saved, model, optimizer, scaler, tokenizer, config, source=str(source))


def training_network(model: nn.Module, objective, config: TrainConfig, world_size: int = 1,
                     device: torch.device | None = None) -> nn.Module:
    """What the step calls: the objective's view of the model, under DDP across processes, maybe compiled.

    Under torchrun, DDP averages gradients; the loss gathers features from every process.
    """
    net = objective.network(model)
    if world_size > 1:
        net = nn.parallel.DistributedDataParallel(net, device_ids=[device] if device.type == "cuda" else None)
    if config.compile:
        net = torch.compile(net)
    return net


class Stopwatch:
    """Training time across resumes: what the checkpoint had (``before``) plus this session's seconds."""

    def __init__(self, before: float = 0.0):
        self.before, self.started = before, time.perf_counter()

    def session(self) -> float:
        return time.perf_counter() - self.started


def save_checkpoint_on_rank0(state: TrainState, out_dir: Path, clock: Stopwatch, rank: int) -> None:
    """The checkpoint, with the training time so far; one process writes it."""
    state.train_seconds = clock.before + clock.session()
    if rank == 0:
        save_state(state, out_dir)


def run_metrics(state: TrainState, final: dict, device: torch.device, world_size: int,
                amp_dtype: torch.dtype | None, training_images: int, seconds: float, images_per_second: float) -> dict:
    """What metrics.json holds: the final scores, then how the run went and what it was."""
    config, model = state.config, state.model
    return dict(**final, data=config.data, step=state.step, final_loss=state.history["loss"][-1],
                logit_scale=state.history["logit_scale"][-1], train_seconds=round(seconds, 1),
                images_per_second=round(images_per_second, 1), device=str(device), world_size=world_size,
                amp=str(amp_dtype).replace("torch.", "") if amp_dtype else "off",
                vocab_size=state.tokenizer.vocab_size, parameters=sum(p.numel() for p in model.parameters()),
                training_images=training_images, evals=state.evals, config=config.to_dict(),
                model_config=model.config.to_dict())


# ----------------------------------------------------------------------------- pieces of a step
def make_batch(step: int, config: TrainConfig, images: torch.Tensor, captions, device: torch.device,
               local: slice = slice(None)) -> Batch:
    """The step's images (normalised, maybe cropped), one caption each, and where each caption ends.

    With ``config.hard_negatives``, ``extra`` holds each caption's false twin,
    in the same order: ``negative_text`` [batch, longest] and ``negative_eot_index`` [batch].
    Everything is decided on the CPU from (seed, step), so nothing waits for
    the GPU and a resumed run draws the very same batch. Captions are cut to
    the batch's longest one here, once.
    """
    epoch, indices = batch_indices(step, config, len(images))
    indices = indices[local]                                                 # this process's slice
    rows = captions.caption_rows(indices, epoch, config.seed)               # one caption per image
    lengths = captions.lengths[rows]
    text = captions.tokens[rows, :int(lengths.max())].to(device, non_blocking=True)  # [batch, longest]
    eot_index = (lengths - 1).to(device, non_blocking=True)                 # [batch]
    pixels = normalize(images[indices.to(images.device)].to(device, non_blocking=True))  # [batch, 3, R, R]
    if config.crop_scale < 1:
        generator = torch.Generator().manual_seed(config.seed * 1_000_003 + step)
        pixels = random_resized_crop(pixels, config.crop_scale, generator)
    extra = {}
    if config.hard_negatives:   # the false captions of the same rows (built with the data: ShapesDataset)
        false_lengths = captions.negative_lengths[rows]
        extra = dict(negative_text=captions.negative_tokens[rows, :int(false_lengths.max())].to(device),
                     negative_eot_index=(false_lengths - 1).to(device))
    return Batch(pixels, text, eot_index, extra)


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

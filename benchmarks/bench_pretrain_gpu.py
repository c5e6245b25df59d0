"""The training loop on a GPU, next to open_clip's model trained eagerly, in one run.

    python3 benchmarks/bench_pretrain_gpu.py                 # the `gpu` preset's model, batch 1024
    python3 benchmarks/bench_pretrain_gpu.py --steps 60 --compile

Three numbers, images per second, on the same card, same configuration
(``TrainConfig.for_data("coco", "gpu")``: 64 px, patch 8, width 384, 6 layers
both towers), same batch, captions of 8-24 tokens, bf16 autocast:

* **ours, the loop** — ``train.make_batch`` + ``train.train_step`` (the
  loss, AdamW (fused), clipping, the temperature clamp): exactly the per-step
  work of ``train()``, on synthetic uint8 images of COCO's size kept on the
  device (118,287 images at 64 px, random resized crop on the device);
* **ours, bare model step** — forward, loss, backward, AdamW on a fixed batch
  already on the device: the ceiling the loop should reach (target >= 90%);
* **open_clip** — its CLIP with the same weights (built from our state dict),
  a standard eager step on the same fixed batch: forward, ``ClipLoss``,
  backward, AdamW (target: ours >= 1.5x).

Needs CUDA; on a machine without it, says so and exits 0. No figure is ever
printed that was not measured here.
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from clip_from_scratch.data.pairs import CaptionTokens  # noqa: E402
from clip_from_scratch.train import (  # noqa: E402
    batch_loss,
    make_batch,
    objective_for,
    start_state,
    train_step,
    training_network,
)
from clip_from_scratch.train_config import TrainConfig  # noqa: E402

COCO_TRAIN_IMAGES = 118_287


def synthetic_captions(num_images: int, config: TrainConfig, vocab_size: int, generator) -> CaptionTokens:
    """Five captions per image, 8-24 tokens each (sot + words + eot), zero-padded to the context length."""
    total = num_images * 5
    lengths = torch.randint(8, 25, (total,), generator=generator).clamp(max=config.context_length)
    tokens = torch.randint(1, vocab_size - 2, (total, config.context_length), generator=generator)
    positions = torch.arange(config.context_length)
    tokens[positions[None, :] >= lengths[:, None]] = 0
    tokens[:, 0] = vocab_size - 2
    tokens[torch.arange(total), lengths - 1] = vocab_size - 1
    counts = torch.full((num_images,), 5)
    return CaptionTokens(tokens=tokens, lengths=lengths, first=torch.arange(num_images) * 5, counts=counts)


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(step, steps: int, warmup: int, batch: int) -> float:
    for _ in range(warmup):
        step()
    synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize()
    return steps * batch / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=None, help="default: the gpu preset's")
    parser.add_argument("--images", type=int, default=COCO_TRAIN_IMAGES)
    parser.add_argument("--compile", action="store_true", help="also time ours with torch.compile")
    parser.add_argument("--smoke", action="store_true",
                        help="no GPU needed: run every code path on the CPU with tiny sizes (a test, not a figure)")
    args = parser.parse_args()
    if args.smoke:
        args.images, args.steps, args.warmup, args.batch_size = 256, 2, 1, 32
    elif not torch.cuda.is_available():
        print("bench_pretrain_gpu.py needs a CUDA GPU; none here, nothing measured.")
        return 0
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    changes = {"batch_size": args.batch_size} if args.batch_size else {}
    config = TrainConfig.for_data("coco", "gpu", num_images=args.images, **changes)
    vocab_size = 8_000 + 512 + 2
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (args.images, 3, config.image_resolution, config.image_resolution),
                           dtype=torch.uint8, generator=generator).to(device)
    captions = synthetic_captions(args.images, config, vocab_size, generator)
    card = torch.cuda.get_device_name() if device.type == "cuda" else "CPU smoke run, not a measurement"
    print(f"{card} | torch {torch.__version__} | gpu preset: {config.image_resolution} px, "
          f"patch {config.vision_patch_size}, width {config.vision_width}, {config.vision_layers} layers, "
          f"batch {config.batch_size}, "
          f"bf16 autocast")

    torch.manual_seed(0)
    config = replace(config, amp="bf16", device=str(device))
    vocabulary = SimpleNamespace(vocab_size=vocab_size)   # synthetic ids: no tokenizer, only its size
    state = start_state(config, vocabulary, device)
    model, optimizer = state.model, state.optimizer
    state_dict = {k: v.detach().clone() for k, v in model.state_dict().items()}
    net = training_network(model, objective_for(config), config)

    def loop_step(net=net):
        train_step(state, net, make_batch(state.step, config, images, captions, device), config, torch.bfloat16)

    fixed = make_batch(0, config, images, captions, device)

    def bare_step():
        loss = batch_loss(net, fixed, torch.bfloat16)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    results = {"ours, the loop": timed(loop_step, args.steps, args.warmup, config.batch_size),
               "ours, bare model step": timed(bare_step, args.steps, args.warmup, config.batch_size)}
    if args.compile:
        compiled = torch.compile(net)
        results["ours, the loop, torch.compile"] = timed(lambda: loop_step(compiled), args.steps, args.warmup,
                                                         config.batch_size)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import open_clip  # noqa: F401
    except ImportError:
        print("open_clip is not installed: pip install open_clip_torch for the comparison")
    else:
        reference = open_clip.model.build_model_from_openai_state_dict(state_dict, cast_dtype=None).float().to(device)
        reference_optimizer = torch.optim.AdamW(reference.parameters(), lr=config.lr, betas=(0.9, 0.98), eps=1e-6,
                                                fused=device.type == "cuda")
        pixels, _, _ = fixed
        # open_clip takes padded ids of the full context length, as its tokenizer gives them
        text = captions.tokens[:config.batch_size].to(device)
        clip_loss = open_clip.ClipLoss()

        def open_clip_step():
            with torch.autocast(device.type, dtype=torch.bfloat16):
                image_features, text_features, scale = reference(pixels, text)[:3]
                loss = clip_loss(image_features, text_features, scale)
            reference_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            reference_optimizer.step()

        results["open_clip, eager step"] = timed(open_clip_step, args.steps, args.warmup, config.batch_size)
    for name, rate in results.items():
        print(f"{name:32s} {rate:10,.0f} img/s")
    if "open_clip, eager step" in results:
        print(f"ours (loop) / open_clip: {results['ours, the loop'] / results['open_clip, eager step']:.2f}x  "
              f"(target >= 1.5x)")
    print(f"loop / bare model step:  {results['ours, the loop'] / results['ours, bare model step']:.0%}  "
          f"(target >= 90%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

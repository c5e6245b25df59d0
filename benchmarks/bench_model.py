"""Speed of the model built here next to openai/clip's and open_clip's, same weights, one run.

    python3 benchmarks/bench_model.py                 # CPU: a small ViT CLIP and a small ResNet CLIP
    python3 benchmarks/bench_model.py --repeats 15 --batch 32 --threads 1
    python3 benchmarks/bench_model.py --preset RN50 --batch 8   # the released ResNet-50 architecture

What is timed, interleaved (A B C, A B C, ...) so a busy machine slows all
three alike, with the median of each reported:

* one training step: forward, symmetric cross-entropy, backward, AdamW step,
  on a batch of real-length captions (10-20 tokens, zero-padded to 77 as
  ``tokenize`` does);
* inference: ``encode_image`` and ``encode_text`` on the same batch.

The three models hold the same weights: ours is built and initialised, its
state dict goes through openai/clip's ``build_model`` and open_clip's
``build_model_from_openai_state_dict`` (both then converted to float32).

On a CUDA machine it adds a bf16-autocast comparison against open_clip
(ViT-B/32 and RN50, images per second, with the card's name).

Where the speed comes from: captions are cut to the batch's longest one
before the text transformer (exact under the causal mask, see
text_encoder.py), so a 15-token caption costs 17 positions of work, not 77.
The image side does the same work as the references (the ResNet's attention
pool runs as one fused ``scaled_dot_product_attention`` call, a small part of
its time; the convolutions dominate).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from clip_from_scratch.model import CLIP, CLIPConfig  # noqa: E402

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import clip.model as openai_clip  # noqa: E402
    import open_clip  # noqa: E402


def captions(batch, config, generator, low=10, high=20):
    """Token ids like tokenize(): sot, `low..high` word ids, eot, zeros up to the context length."""
    text = torch.zeros(batch, config.context_length, dtype=torch.long)
    for row in range(batch):
        n = int(torch.randint(low, high + 1, (1,), generator=generator))
        text[row, 0] = config.vocab_size - 2
        text[row, 1:n - 1] = torch.randint(1, config.vocab_size - 2, (n - 2,), generator=generator)
        text[row, n - 1] = config.vocab_size - 1
    return text


def build_models(config, device):
    """Ours, openai/clip's and open_clip's CLIP, all float32 and holding the same weights."""
    torch.manual_seed(0)
    ours = CLIP(config)
    state_dict = ours.state_dict()
    openai = openai_clip.build_model({k: v.clone() for k, v in state_dict.items()}).float()
    openclip = open_clip.model.build_model_from_openai_state_dict(
        {k: v.clone() for k, v in state_dict.items()}, cast_dtype=None).float()
    return {"ours": ours.to(device), "openai/clip": openai.to(device), "open_clip": openclip.to(device)}


def logits(name, model, images, text):
    if name == "open_clip":  # returns normalised features and the exp'd scale
        image_features, text_features, scale = model(images, text)[:3]
        logits_per_image = scale * image_features @ text_features.t()
        return logits_per_image, logits_per_image.t()
    return model(images, text)


def train_step(name, model, optimizer, images, text):
    labels = torch.arange(images.shape[0], device=images.device)
    logits_per_image, logits_per_text = logits(name, model, images, text)
    loss = (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)) / 2
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss


def timed(fn, device):
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def interleaved(tasks, repeats, warmup, device):
    """tasks: {name: fn}. Run them round-robin; return {name: [seconds, ...]}."""
    times = {name: [] for name in tasks}
    for i in range(warmup + repeats):
        for name, fn in tasks.items():
            t = timed(fn, device)
            if i >= warmup:
                times[name].append(t)
    return times


def table(title, times, unit_items=None):
    print(f"\n{title}")
    ours = statistics.median(times["ours"])
    print(f"  {'model':<13}{'median ms':>11}{'ours is x faster':>18}" + (f"{'items/s':>11}" if unit_items else ""))
    for name, ts in times.items():
        median = statistics.median(ts)
        line = f"  {name:<13}{median * 1e3:>11.1f}{median / ours:>18.2f}"
        if unit_items:
            line += f"{unit_items / median:>11.0f}"
        print(line)


def cpu_benchmark(args, preset):
    device = torch.device("cpu")
    config = CLIPConfig.preset(preset)
    models = build_models(config, device)
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(args.batch, 3, config.image_resolution, config.image_resolution, generator=generator)
    text = captions(args.batch, config, generator)
    print(f"CPU: {torch.get_num_threads()} threads, torch {torch.__version__}, open_clip {open_clip.__version__}")
    print(f"\nmodel: preset {preset!r} {config}\nbatch {args.batch}, captions of 10-20 tokens padded to "
          f"{config.context_length}, {args.repeats} interleaved repeats (+{args.warmup} warm-up), medians")

    optimizers = {name: torch.optim.AdamW(m.parameters(), lr=1e-4) for name, m in models.items()}
    for model in models.values():
        model.train()
    table("training step (forward + symmetric cross-entropy + backward + AdamW)", interleaved(
        {name: (lambda n=name: train_step(n, models[n], optimizers[n], images, text)) for name in models},
        args.repeats, args.warmup, device), unit_items=args.batch)

    for model in models.values():
        model.eval()
    with torch.inference_mode():
        table("inference: encode_image", interleaved(
            {name: (lambda m=m: m.encode_image(images)) for name, m in models.items()},
            args.repeats, args.warmup, device), unit_items=args.batch)
        table("inference: encode_text", interleaved(
            {name: (lambda m=m: m.encode_text(text)) for name, m in models.items()},
            args.repeats, args.warmup, device), unit_items=args.batch)


def gpu_benchmark(args, device=None, preset="ViT-B/32"):
    """bf16 autocast on a CUDA card: ours vs open_clip for one preset, images per second.

    ``device``/``preset`` exist so the code path can be dry-run on a CPU with a tiny model.
    """
    device = device or torch.device("cuda")
    config = CLIPConfig.preset(preset)
    models = build_models(config, device)
    del models["openai/clip"]  # its fp16 casts make autocast comparisons unfair; open_clip is the modern reference
    batch = args.gpu_batch
    generator = torch.Generator().manual_seed(0)
    res = config.image_resolution
    images = torch.randn(batch, 3, res, res, generator=generator).to(device)
    text = captions(batch, config, generator).to(device)
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else str(device)
    print(f"\nGPU: {card}, bf16 autocast, {preset}, batch {batch}")
    optimizers = {name: torch.optim.AdamW(m.parameters(), lr=1e-4, fused=device.type == "cuda")
                  for name, m in models.items()}

    def step(name):
        with torch.autocast(device.type, dtype=torch.bfloat16):
            train_step(name, models[name], optimizers[name], images, text)

    for model in models.values():
        model.train()
    table("GPU training step", interleaved({n: (lambda n=n: step(n)) for n in models},
                                           args.repeats, args.warmup, device), unit_items=batch)
    for model in models.values():
        model.eval()
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16):
        table("GPU encode_image", interleaved({n: (lambda m=m: m.encode_image(images)) for n, m in models.items()},
                                              args.repeats, args.warmup, device), unit_items=batch)
        table("GPU encode_text", interleaved({n: (lambda m=m: m.encode_text(text)) for n, m in models.items()},
                                             args.repeats, args.warmup, device), unit_items=batch)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", nargs="+", default=["small", "small-resnet"],
                        help="CLIPConfig presets for the CPU run (default: small small-resnet)")
    parser.add_argument("--gpu-preset", nargs="+", default=["ViT-B/32", "RN50"],
                        help="presets for the bf16 GPU run (default: ViT-B/32 RN50)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--gpu-batch", type=int, default=256)
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads (default: torch's choice); 1 is steadier on a busy shared machine")
    parser.add_argument("--skip-cpu", action="store_true", help="only the GPU comparison")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.skip_cpu:
        for preset in args.preset:
            cpu_benchmark(args, preset)
    if torch.cuda.is_available():
        for preset in args.gpu_preset:
            gpu_benchmark(args, preset=preset)
    else:
        print("\n(no CUDA device: the bf16 GPU comparison is skipped)")


if __name__ == "__main__":
    main()

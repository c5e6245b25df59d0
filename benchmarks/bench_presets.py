"""How long a COCO preset's training takes on this machine, measured on stand-in data of COCO's shape.

    python3 benchmarks/bench_presets.py --preset cpu           # 60 steps of the cpu preset, then the projection
    python3 benchmarks/bench_presets.py --preset gpu --steps 200

COCO cannot be downloaded everywhere (not on the course's CI machines), but
a step's cost does not depend on what the pixels show: this times the real
``train()`` loop (data indexing, crops, tokens, model, loss, AdamW) on random
uint8 images at the preset's resolution, five captions per image of COCO's
lengths (8-20 words), and projects the preset's whole run from the measured
seconds per step. It says so in its output: these are timings, never
accuracies.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from clip_from_scratch.data.pairs import ImageCaptionPairs  # noqa: E402
from clip_from_scratch.train import TrainConfig, train  # noqa: E402

WORDS = ("a man woman dog cat sitting standing on the in of with next to street table plate pizza train bus "
         "red white large small two people group kitchen room field grass water boat sky near holding").split()


def stand_in_pairs(num_images: int, resolution: int, seed: int = 0) -> ImageCaptionPairs:
    """Random images and word salad of COCO's caption lengths: a timing stand-in, not data."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (num_images, 3, resolution, resolution), dtype=torch.uint8, generator=generator)
    lengths = torch.randint(8, 21, (num_images, 5), generator=generator).tolist()
    picks = torch.randint(0, len(WORDS), (num_images, 5, 20), generator=generator).tolist()
    captions = [[" ".join(WORDS[w] for w in picks[i][j][:lengths[i][j]]) + "." for j in range(5)]
                for i in range(num_images)]
    return ImageCaptionPairs(images, captions, "stand-in of COCO's shape (timing only)")


class NoEvaluation:
    """Time the loop alone: no val2017 retrieval, no CIFAR."""
    metric = "none"

    def score(self, model, tokenize) -> float:
        return 0.0

    def final(self, model, tokenize) -> dict:
        return {"none": 0.0}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu", choices=["cpu", "t4", "gpu"])
    parser.add_argument("--steps", type=int, default=60, help="steps to time (after a few warm-up steps)")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    preset = TrainConfig.for_data("coco", args.preset)
    num_images = min(preset.num_images or 118_287, 20_000)
    pairs = stand_in_pairs(num_images, preset.image_resolution)
    timed_steps = args.steps + 5
    with tempfile.TemporaryDirectory() as out:
        config = TrainConfig.for_data("coco", args.preset, out_dir=out, num_images=num_images, steps=timed_steps,
                                      eval_every=0, checkpoint_every=0, device=args.device, progress=False,
                                      cifar=False, eval_images=None)
        started = time.perf_counter()
        result = train(config, pairs=pairs, evaluation=NoEvaluation())
        total = time.perf_counter() - started
    seconds = result["train_seconds"]
    per_step = seconds / timed_steps
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"device {result['device']}, amp {result['amp']}")
    print(f"preset {args.preset}: {result['parameters']:,} parameters, {preset.image_resolution} px, "
          f"batch {preset.batch_size}; {timed_steps} steps in {seconds:.1f} s "
          f"({per_step * 1000:.0f} ms/step, {result['images_per_second']:.0f} images/s; "
          f"{total - seconds:.1f} s for tokenizer and set-up)")
    print(f"projected training time for the preset's {preset.steps:,} steps: {per_step * preset.steps / 60:.1f} min "
          f"(timing on stand-in data of COCO's shape; evaluation and the COCO download not included)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The CLIP paper's Figure 2 in miniature, and "zero-shot is worth N labelled examples", on shapes.

    python3 benchmarks/bench_objectives.py                     # three runs of 1,000 steps of 128 (minutes on a CPU)
    python3 benchmarks/bench_objectives.py --steps 200 --eval-every 50    # a quick look

Trains the same image encoder on the same shapes pairs, with the same
optimiser and step budget, three ways (``--objective contrastive``, ``bow``,
``captioning``), each scored every ``--eval-every`` steps by zero-shot top-1
on the held-out colour x shape pairs. Prints the curves, the images each
needs to reach ``--target`` % (default: 80% of the weakest run's best
score, so that every run reaches it), the efficiency ratios next to the
paper's (~3x bag of words over captioning, ~4x contrastive over bag of words;
published, not run here), and, on the contrastive model, zero-shot against
k-shot linear probes on the same six held-out pairs. Each run's
``metrics.json`` is in ``--out/<objective>``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from clip_from_scratch.objectives import OBJECTIVES, images_to_reach  # noqa: E402
from clip_from_scratch.probe import shapes_zeroshot_vs_probes  # noqa: E402
from clip_from_scratch.train import TrainConfig, load_checkpoint, train  # noqa: E402

PUBLISHED = {"bow over captioning": 3.0, "contrastive over bow": 4.0}   # CLIP, Figure 2: published, not run here


def ratio(slower: float, faster: float) -> float:
    """How many times more images the slower run needed (nan when either never got there, or at once)."""
    return slower / faster if 0 < faster < float("inf") and slower < float("inf") else float("nan")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--num-images", type=int, default=20_000)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--zeroshot-images", type=int, default=300)
    parser.add_argument("--target", type=float, default=None, help="zero-shot top-1 (%%) for the ratios")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/bench_objectives")
    args = parser.parse_args(argv)

    runs = {}
    for objective in OBJECTIVES:
        config = TrainConfig(out_dir=f"{args.out}/{objective}", objective=objective, steps=args.steps,
                             batch_size=args.batch_size, num_images=args.num_images, eval_every=args.eval_every,
                             checkpoint_every=0, zeroshot_images=args.zeroshot_images, seed=args.seed,
                             progress=False, device="cpu")
        runs[objective] = train(config, overwrite=True)
        print(f"{objective}: {runs[objective]['train_seconds']} s", flush=True)

    evals = {name: run["evals"] for name, run in runs.items()}
    print(f"\nzero-shot top-1 (%) on held-out pairs, 30 names, chance 3.3%  "
          f"(torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')})")
    print(f"{'images seen':>12s} " + " ".join(f"{name:>12s}" for name in OBJECTIVES))
    for row, seen in enumerate(evals["contrastive"]["images_seen"]):
        print(f"{seen:>12,d} " + " ".join(f"{evals[name]['zeroshot_top1'][row]:>12.1f}" for name in OBJECTIVES))

    chance = 100 / 30
    target = args.target or max(2 * chance, 0.8 * min(max(e["zeroshot_top1"]) for e in evals.values()))
    needed = {name: images_to_reach(e["images_seen"], e["zeroshot_top1"], target) for name, e in evals.items()}
    print(f"\nimages seen to reach {target:.1f}%: " + ", ".join(f"{n} {v:,.0f}" for n, v in needed.items()))
    measured = {"bow over captioning": ratio(needed["captioning"], needed["bow"]),
                "contrastive over bow": ratio(needed["bow"], needed["contrastive"])}
    for name, value in measured.items():
        print(f"  {name}: {value:.1f}x here; paper ~{PUBLISHED[name]:.0f}x (Figure 2, published, not run here)")

    model, tokenizer = load_checkpoint(Path(args.out) / "contrastive" / "checkpoint.pt")
    tokenize = lambda texts: tokenizer.tokenize(texts, context_length=model.config.context_length, truncate=True)
    probes = shapes_zeroshot_vs_probes(model, tokenize, model.config.image_resolution, seed=args.seed)
    print("\nthe contrastive model on the six held-out pairs (6-way):")
    print(f"  zero-shot: {probes['zeroshot']:.1f}%")
    for k, accuracy in probes["curve"].items():
        print(f"  {k:>2d}-shot linear probe: {accuracy:.1f}%")
    print(f"  zero-shot is worth {probes['worth']:.1f} labelled images per class "
          f"(paper, Figure 7: median ~5.4, mean ~20.8 over its data sets; published, not run here)")
    summary = dict(target=target, images_to_reach=needed, ratios=measured, **probes,
                   final={name: run["zeroshot_top1"] for name, run in runs.items()})
    (Path(args.out) / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The ``clip-from-scratch`` command (also ``python -m clip_from_scratch``).

    clip-from-scratch pretrain                 # train a small CLIP on shapes, on a laptop CPU, in 1-2 minutes
    clip-from-scratch pretrain --resume        # continue an interrupted run exactly where it stopped
    clip-from-scratch pretrain --help          # every option
    clip-from-scratch zeroshot --checkpoint runs/shapes/checkpoint.pt --dataset shapes
    clip-from-scratch zeroshot --weights ViT-B/32 --dataset cifar100 --templates ensemble

Each subcommand is a pair of functions: ``add_<name>_parser(subparsers)``
declares its options, ``run_<name>(args)`` does the work.
"""
from __future__ import annotations

import argparse
import sys


# ----------------------------------------------------------------------------- pretrain
def add_pretrain_parser(subparsers) -> None:
    from .train import TrainConfig
    defaults = TrainConfig()
    parser = subparsers.add_parser(
        "pretrain", help="train a small CLIP on the offline shapes data (a stand-in for COCO)",
        description="Contrastive pre-training of a small CLIP on procedurally drawn shapes with captions "
                    "(an offline stand-in for COCO), then zero-shot classification of colour x shape pairs "
                    "that training never showed. With no options it runs on this machine's best device "
                    "(on a 2-core laptop CPU in about 1-2 minutes) and writes a checkpoint, metrics.json and "
                    "loss_curve.png to --out. Ctrl-C stops after the current step and saves; --resume continues.")
    parser.add_argument("--out", default=defaults.out_dir, metavar="DIR",
                        help="folder for checkpoint.pt, metrics.json and loss_curve.png (default: %(default)s)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run saved in --out; settings not given are taken from its checkpoint")
    parser.add_argument("--overwrite", action="store_true",
                        help="start a new run even if --out already holds one (its checkpoint is replaced)")
    parser.add_argument("--steps", type=int, default=None,
                        help=f"optimisation steps (default {defaults.steps}; the learning-rate schedule spans them)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help=f"image-caption pairs per step, at least 2 (default {defaults.batch_size}; "
                             "under torchrun, the global batch)")
    parser.add_argument("--lr", type=float, default=None, help=f"peak learning rate (default {defaults.lr})")
    parser.add_argument("--seed", type=int, default=None,
                        help=f"seed for the data, the model's initial weights and the data order "
                             f"(default {defaults.seed})")
    parser.add_argument("--num-images", type=int, default=None,
                        help=f"shapes images drawn for training (default {defaults.num_images})")
    parser.add_argument("--heldout", choices=["pairs", "captions"], default=None,
                        help=f"how the zero-shot colour x shape pairs are kept out of training: 'pairs' = their "
                             f"images never appear (strict), 'captions' = their images appear but no caption names "
                             f"both attributes together (default {defaults.heldout})")
    parser.add_argument("--shape-only", type=float, default=None, metavar="FRACTION",
                        help=f"fraction of training scenes shown as a shape in an unnamed colour, captioned with "
                             f"the shape alone ('a circle.'), so shape features cannot lean on colour "
                             f"(default {defaults.shape_only})")
    parser.add_argument("--colour-only", type=float, default=None, metavar="FRACTION",
                        help=f"fraction of training scenes blurred past recognition, captioned with the colour "
                             f"alone ('a red shape.') (default {defaults.colour_only})")
    parser.add_argument("--device", default="auto",
                        help="auto (cuda, then mps, then cpu; the default), cpu, cuda, cuda:1, mps")
    parser.add_argument("--amp", default="auto", choices=["auto", "bf16", "fp16", "off"],
                        help="mixed precision: auto = bf16 (or fp16 with loss scaling) on a GPU, off on the CPU (default: auto)")
    parser.add_argument("--eval-every", type=int, default=defaults.eval_every, metavar="N",
                        help="print the zero-shot score every N steps (0: only at the end; default: %(default)s)")
    parser.add_argument("--checkpoint-every", type=int, default=defaults.checkpoint_every, metavar="N",
                        help="save a checkpoint every N steps, also at the end and on Ctrl-C (default: %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (for logs)")


# Command-line option -> TrainConfig field, for the options that define a run.
_RUN_OPTIONS = {"steps": "steps", "batch_size": "batch_size", "lr": "lr", "seed": "seed",
                "num_images": "num_images", "heldout": "heldout", "shape_only": "shape_only",
                "colour_only": "colour_only"}


def run_pretrain(args) -> int:
    from pathlib import Path

    from .checkpoint import read_checkpoint
    from .train import CHECKPOINT, TrainConfig, TrainingError, train

    given = {field: getattr(args, option) for option, field in _RUN_OPTIONS.items()
             if getattr(args, option) is not None}
    base = {}
    if args.resume and (Path(args.out) / CHECKPOINT).exists():
        base = read_checkpoint(Path(args.out) / CHECKPOINT)["train_config"]   # resume: the run's own settings
    config = TrainConfig.from_dict(base, **given, out_dir=args.out, device=args.device, amp=args.amp,
                                   eval_every=args.eval_every, checkpoint_every=args.checkpoint_every,
                                   progress=not args.no_progress, stop_after=None)
    result = train(config, resume=args.resume, overwrite=args.overwrite)
    if result["finished"]:
        never = ("never seen in training" if result["config"]["heldout"] == "pairs"
                 else "never named together in any training caption")
        print(f"zero-shot top-1 on held-out colour x shape pairs: {result['zeroshot_top1']:.1f}% "
              f"(chance {result['chance']:.1f}%; pairs {never}: {', '.join(result['heldout_pairs'])})")
        print(f"{result['step']} steps in {result['train_seconds']:.0f} s on {result['device']}. "
              f"Wrote {Path(args.out) / CHECKPOINT}, metrics.json and loss_curve.png.")
        return 0
    return 130  # stopped early (Ctrl-C): the shell's code for an interrupted command


# ----------------------------------------------------------------------------- zeroshot
def add_zeroshot_parser(subparsers) -> None:
    from .zeroshot import add_zeroshot_arguments
    parser = subparsers.add_parser(
        "zeroshot", help="zero-shot classification: CIFAR-10/100 or shapes, one prompt or an ensemble",
        description="Build a classifier from the class names (stage 2) and classify a test set with it "
                    "(stage 3). Prints top-1/top-5, the weakest classes and the most confused pairs, and "
                    "writes every figure (per-class accuracy, confusion matrix) to a JSON file.")
    add_zeroshot_arguments(parser)


def run_zeroshot(args) -> int:
    from .data.cifar import CIFARUnavailable
    from .download import DownloadError
    from .openai_weights import CheckpointError
    from .zeroshot import run_zeroshot_command
    try:
        run_zeroshot_command(args)
    except (CIFARUnavailable, CheckpointError, DownloadError) as err:   # missing data or weights, bad file
        print(f"clip-from-scratch zeroshot: error: {err}", file=sys.stderr)
        return 2
    return 0


# ----------------------------------------------------------------------------- entry point
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clip-from-scratch",
        description="CLIP from scratch: the course's command-line tools.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_pretrain_parser(subparsers)
    add_zeroshot_parser(subparsers)
    return parser


COMMANDS = {"pretrain": run_pretrain, "zeroshot": run_zeroshot}


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    from .train import TrainingError
    try:
        return COMMANDS[args.command](args)
    except (TrainingError, ValueError, FileNotFoundError) as err:
        # Problems the user can fix: say what and how, without a traceback.
        print(f"clip-from-scratch {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""The ``clip-from-scratch`` command (also ``python -m clip_from_scratch``).

    clip-from-scratch pretrain                 # train a small CLIP on shapes, on a laptop CPU, in 1-2 minutes
    clip-from-scratch pretrain --resume        # continue an interrupted run exactly where it stopped
    clip-from-scratch pretrain --help          # every option
    clip-from-scratch zeroshot --checkpoint runs/shapes/checkpoint.pt --dataset shapes
    clip-from-scratch zeroshot --weights ViT-B/32 --dataset cifar100 --templates ensemble
    clip-from-scratch download coco --split val2017 --resolution 224   # prefetch (also: cifar100, weights NAME)
    clip-from-scratch retrieval --weights ViT-B/32   # COCO val2017 image<->text recall@1/5/10

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


# ----------------------------------------------------------------------------- download
def add_download_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "download", help="prefetch data and weights (COCO captions, CIFAR, OpenAI weights) for offline use",
        description="Fetch what the course needs ahead of time, e.g. to fill one data/ folder (or $CLIP_DATA) "
                    "before a workshop. Each target prints what it fetched, what it reused, what it skipped "
                    "and why, and the disk it uses. Interrupted? Run the same command again: it resumes.")
    parser.add_argument("target", choices=["coco", "cifar100", "cifar10", "weights"],
                        help="coco: caption annotations + images + the resized uint8 cache; cifar100/cifar10: "
                             "the torchvision archives; weights: one released OpenAI model")
    parser.add_argument("name", nargs="?", default=None,
                        help="for weights: the model name, e.g. ViT-B/32")
    parser.add_argument("--split", default=None, choices=["train2017", "val2017"],
                        help="coco (required): train2017 to train (118,287 images, ~19 GB to fetch), "
                             "val2017 to evaluate (5,000 images, ~0.8 GB)")
    parser.add_argument("--max-images", type=int, default=None, metavar="N",
                        help="coco: only the first N images by id (default: all)")
    parser.add_argument("--resolution", type=int, default=64, metavar="R",
                        help="coco: side of the cached square images in px (default: %(default)s)")
    parser.add_argument("--keep-jpeg", action="store_true",
                        help="coco: also keep the raw JPEGs in <data>/coco/<split>/ (by default only the cache stays)")
    parser.add_argument("--workers", type=int, default=16,
                        help="coco: parallel connections to the image server (default: %(default)s)")
    parser.add_argument("--data-root", default=None,
                        help="data folder (default: $CLIP_DATA or data/); for weights, where the .pt file "
                             "goes (default: ~/.cache/clip, where clip_from_scratch.load looks)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (for logs)")


def _megabytes(size: int) -> str:
    return f"{size / 1e6:,.1f} MB"


def run_download(args) -> int:
    import json
    from pathlib import Path

    from .course import data_root
    from .data import cifar, coco
    from .download import DownloadError
    from .openai_weights import CheckpointError, available_models, checkpoint_path, download_model

    progress = not args.no_progress
    try:
        if args.target == "coco":
            if args.split is None:
                print("clip-from-scratch download: error: say which split: --split val2017 (5,000 images to "
                      "evaluate, ~0.8 GB to fetch) or --split train2017 (118,287 images to train, ~19 GB; "
                      "--max-images N for the first N)", file=sys.stderr)
                return 2
            root = Path(args.data_root) if args.data_root else data_root()
            ds = coco.CocoCaptions(args.split, resolution=args.resolution, max_images=args.max_images,
                                   root=root, download=True, progress=progress, keep_jpeg=args.keep_jpeg,
                                   workers=args.workers)
            stats = ds.stats
            print(f"COCO {args.split} at {args.resolution} px: {len(ds)} images, "
                  f"{sum(map(len, ds.captions))} captions, in {ds.cache_dir}")
            reasons = json.loads((ds.cache_dir / "meta.json").read_text()).get("failed_reasons", {})
            skipped = ", ".join(f"{i} ({reasons.get(str(i), '?')})" for i in stats["failed_ids"][:10])
            print(f"  fetched {stats['fetched']}, reused {stats['cached']} (already on disk), "
                  f"failed {stats['failed']}" + (f", left out: {skipped}{' ...' if stats['failed'] > 10 else ''}"
                                                 if stats["failed"] else ""))
            jpegs = root / "coco" / args.split
            print(f"  disk: cache {_megabytes(coco.disk_usage(ds.cache_dir))}, caption annotations "
                  f"{_megabytes(coco.disk_usage(root / 'coco' / 'annotations') + coco.disk_usage(root / 'coco' / 'annotations_trainval2017.zip'))}"
                  + (f", JPEGs {_megabytes(coco.disk_usage(jpegs))}" if jpegs.exists() else ""))
            if args.split == "train2017":
                print("  (evaluate on val2017: clip-from-scratch download coco --split val2017)")
        elif args.target in ("cifar100", "cifar10"):
            root = Path(args.data_root) if args.data_root else data_root()
            archive = root / cifar.dataset_class(args.target).filename
            there = archive.exists()
            cifar.cifar_dataset(args.target, train=False, root=root, progress=progress)
            print(f"{args.target}: {'reused' if there else 'fetched'} {archive} "
                  f"({_megabytes(archive.stat().st_size)}), extracted beside it")
        else:
            if args.name not in available_models():
                print(f"clip-from-scratch download: error: give a model name after 'weights', one of "
                      f"{available_models()}", file=sys.stderr)
                return 2
            path = checkpoint_path(args.name, args.data_root)
            there = path.exists()
            path = download_model(args.name, args.data_root, progress=progress)
            print(f"{args.name}: {'reused (sha256 checked)' if there else 'fetched'} {path} "
                  f"({_megabytes(path.stat().st_size)})")
    except (coco.CocoUnavailable, coco.CocoCacheError, cifar.CIFARUnavailable, DownloadError,
            CheckpointError) as err:
        print(f"clip-from-scratch download: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nclip-from-scratch download: interrupted; what was fetched is kept: run the same command "
              "again to resume", file=sys.stderr)
        return 130
    return 0


# ----------------------------------------------------------------------------- retrieval
def add_retrieval_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "retrieval", help="image<->text retrieval recall@1/5/10 on COCO val2017",
        description="Encode every COCO val2017 image and caption with a model and measure recall@K both ways "
                    "(image->text: any of the image's captions among its K best; text->image: the caption's "
                    "image among its K best). Fetches and caches val2017 first if needed. Prints a table and "
                    "writes a JSON file.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="a checkpoint written by `clip-from-scratch pretrain`")
    source.add_argument("--weights", help="OpenAI model name (e.g. ViT-B/32) or path to its .pt file")
    parser.add_argument("--split", default="val2017", choices=["val2017", "train2017"],
                        help="evaluate on val2017 (default); train2017 only to compare with training")
    parser.add_argument("--max-images", type=int, default=None, metavar="N",
                        help="only the first N images by id (a quicker, easier test: fewer distractors)")
    parser.add_argument("--resolution", type=int, default=None, metavar="R",
                        help="image side in px (default and only choice: the model's input resolution)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--data-root", default=None, help="where COCO lives (default: $CLIP_DATA or data/)")
    parser.add_argument("--device", default=None, help="cuda, mps or cpu (default: the best available)")
    parser.add_argument("--output", default=None, metavar="JSON",
                        help="results file (default: retrieval_<split>.json)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (for logs)")


def run_retrieval(args) -> int:
    import json
    import os
    from functools import partial
    from pathlib import Path

    from .course import pick_device
    from .data import coco
    from .download import DownloadError
    from .openai_weights import CheckpointError
    from .retrieval import encode_coco, format_table, recall_at_k

    device = pick_device(args.device)
    progress = not args.no_progress
    try:
        if args.weights:
            from .openai_weights import available_models, load
            from .tokenizer import tokenize
            if not os.path.isfile(args.weights) and args.weights not in available_models():
                raise ValueError(f"--weights {args.weights!r} is neither a file nor a released model: give a "
                                 f"path to a .pt file or one of {available_models()}")
            model, _ = load(args.weights, device=device)
            tokenize_fn = partial(tokenize, context_length=model.config.context_length, truncate=True)
        else:
            from .checkpoint import load_checkpoint
            model, tokenizer = load_checkpoint(args.checkpoint, device=device)
            # The run's own BPE at the run's context length; long captions are cut (end-of-text kept).
            tokenize_fn = partial(tokenizer.tokenize, context_length=model.config.context_length, truncate=True)
        resolution = model.visual.input_resolution
        if args.resolution is not None and args.resolution != resolution:
            raise ValueError(f"--resolution {args.resolution}: this model takes {resolution} px images; "
                             f"leave --resolution out (or give {resolution})")
        data = coco.CocoCaptions(args.split, resolution=resolution, max_images=args.max_images,
                                 root=args.data_root, download=True, progress=progress)
        features = encode_coco(model, tokenize_fn, data, args.batch_size, device, progress)
        recall = recall_at_k(*features, progress=progress)
    except (coco.CocoUnavailable, coco.CocoCacheError, CheckpointError, DownloadError) as err:
        print(f"clip-from-scratch retrieval: error: {err}", file=sys.stderr)
        return 2
    source = args.weights or args.checkpoint
    num_captions = len(features[1])
    print(f"retrieval on COCO {args.split} ({len(data)} images, {num_captions} captions, {resolution} px) "
          f"with {source}")
    print(format_table(recall))
    output = Path(args.output or f"retrieval_{args.split}.json")
    record = {"source": str(source), "split": args.split, "num_images": len(data), "num_captions": num_captions,
              "resolution": resolution, "max_images": args.max_images, "failed_ids": data.stats["failed_ids"],
              "recall": {direction: {str(k): v for k, v in values.items()} for direction, values in recall.items()}}
    output.write_text(json.dumps(record, indent=1))
    print(f"results written to {output}")
    return 0


# ----------------------------------------------------------------------------- entry point
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clip-from-scratch",
        description="CLIP from scratch: the course's command-line tools.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_pretrain_parser(subparsers)
    add_zeroshot_parser(subparsers)
    add_download_parser(subparsers)
    add_retrieval_parser(subparsers)
    return parser


COMMANDS = {"pretrain": run_pretrain, "zeroshot": run_zeroshot, "download": run_download,
            "retrieval": run_retrieval}


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

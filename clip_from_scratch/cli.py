"""The ``clip-from-scratch`` command (also ``python -m clip_from_scratch``).

    clip-from-scratch pretrain                 # train a small CLIP on shapes, on a laptop CPU, in 1-2 minutes
    clip-from-scratch pretrain --data coco --preset cpu    # COCO captions (downloads what it needs once)
    clip-from-scratch pretrain --resume        # continue an interrupted run exactly where it stopped
    clip-from-scratch pretrain --help          # every option
    clip-from-scratch zeroshot --checkpoint runs/shapes/checkpoint.pt --data shapes
    clip-from-scratch zeroshot --weights ViT-B/32 --data cifar100 --templates ensemble
    clip-from-scratch download coco --split val2017 --resolution 224   # prefetch (also: cifar100, weights NAME)
    clip-from-scratch retrieval --weights ViT-B/32   # COCO val2017 image<->text recall@1/5/10

Each subcommand is a pair of functions: ``add_<name>_parser(subparsers)``
declares its options, ``run_<name>(args)`` does the work. One word per idea
across the subcommands:

* ``--data`` what to train or evaluate on; ``--data-root`` where datasets live;
* ``--num-images N`` how many images (the first N);
* ``--out DIR`` where results go, always a folder (``pretrain``: the run
  folder; ``zeroshot``/``retrieval``: a JSON file named after the evaluation, in it);
* ``--device`` (checked, one function for all: ``course.pick_device``), ``--no-progress``.

Old spellings (``--dataset``, ``--limit``, ``--max-images``, ``--output FILE``)
still work for one release, hidden from ``--help``. Problems the user
can fix (:class:`~clip_from_scratch.errors.CourseError`) are printed as one
line with exit code 2; anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import sys

from .errors import CourseError


# ----------------------------------------------------------------------------- pretrain
def add_pretrain_parser(subparsers) -> None:
    """``pretrain``'s options: one per TrainConfig field, generated from the field's own help text and flag.

    Defaults are None: a value comes from the data/preset (see train_config.py)
    unless given, so an option not on the command line never overrides a
    preset or, with --resume, the run's own setting.
    """
    from .train_config import COCO_PRESETS, TrainConfig
    parser = subparsers.add_parser("pretrain", description=run_pretrain.__doc__,
                                   help="contrastive pre-training: offline shapes (default) or COCO captions")
    parser.add_argument("--preset", choices=sorted(COCO_PRESETS), default=None,
                        help="COCO run sized for: cpu (a laptop, a few minutes; the default), t4 (a free Colab "
                             "GPU, under an hour), gpu (one H100-class card, about 10 minutes)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run saved in --out; settings not given are taken from its checkpoint")
    parser.add_argument("--overwrite", action="store_true",
                        help="start a new run even if --out already holds one (its files are replaced)")
    for field in dataclass_fields(TrainConfig):
        add_setting_argument(parser, field)


def add_setting_argument(parser, field) -> None:
    """One TrainConfig field as an option: ``--name`` (or the field's own flag), its help, its default shown."""
    about = field.metadata
    flag = about.get("flag") or "--" + field.name.replace("_", "-")
    if field.type == "bool" or isinstance(field.default, bool):
        # --compile switches on; --no-progress / --no-cifar switch off a setting that is on by default
        switch_on = not flag.startswith("--no-")
        parser.add_argument(flag, dest=field.name, default=None, action="store_true" if switch_on else "store_false",
                            help=about["help"])
        return
    kind = about.get("type") or type(field.default)
    shown = "" if field.default is None or field.name in ("out_dir", "data") else f" (shapes default: {field.default})"
    metavar = {int: "N", float: "X"}.get(kind, "DIR" if field.name in ("out_dir", "data_root") else "NAME")
    parser.add_argument(flag, dest=field.name, default=None, type=kind, choices=about.get("choices"),
                        metavar=None if about.get("choices") else metavar, help=about["help"] + shown)


def dataclass_fields(cls):
    from dataclasses import fields
    return fields(cls)


def pretrain_config(args):
    """The run's TrainConfig: preset (or the checkpoint's settings on --resume), then the options given."""
    from pathlib import Path

    from .course import fast_mode
    from .runs import CHECKPOINT, read_checkpoint
    from .train_config import TrainConfig

    given = {field.name: getattr(args, field.name) for field in dataclass_fields(TrainConfig)
             if getattr(args, field.name) is not None}
    given.setdefault("progress", True)      # a progress bar unless --no-progress, whatever the run had
    data = given.pop("data", None)
    out = given.pop("out_dir", None) or f"runs/{data or 'shapes'}"
    checkpoint = Path(out) / CHECKPOINT
    state = read_checkpoint(checkpoint) if args.resume and checkpoint.exists() and not args.overwrite else {}
    if "train_config" in state:     # (weights only: train() says it cannot be resumed)
        if args.preset:
            raise CourseError(f"--preset {args.preset} sets up a new run; a resumed run keeps the settings saved in "
                              f"{checkpoint}. Leave --preset out, or start a new run with --overwrite.")
        saved = state["train_config"]                            # the run's own settings ...
        if data and data != saved.get("data", "shapes"):
            given["data"] = data                                 # ... reported as a mismatch by train()
        return TrainConfig.from_dict(saved, **{"stop_after": None, **given}, out_dir=out)
    return TrainConfig.for_data(data or "shapes", args.preset, fast=fast_mode(), out_dir=out, **given)


def run_pretrain(args) -> int:
    """Contrastive pre-training of a small CLIP. --data shapes (the default) trains offline on
    procedurally drawn shapes with captions, a stand-in for COCO, then classifies colour x shape
    pairs that training never showed (on a 2-core laptop CPU in about 2 minutes). --data coco
    trains on COCO train2017 captions (fetched and cached once) and reports val2017 retrieval
    recall@1/5/10 and CIFAR-10/100 zero-shot when CIFAR is on disk. Writes checkpoint.pt,
    metrics.json and loss_curve.png to --out. Ctrl-C (or SIGTERM) stops after the current step
    and saves; --resume continues. Options not given come from the preset or, with --resume,
    from the run's checkpoint.
    """
    from pathlib import Path

    from .runs import CHECKPOINT, LOSS_CURVE, METRICS
    from .train import train

    config = pretrain_config(args)
    try:
        result = train(config, resume=args.resume, overwrite=args.overwrite)
    except KeyboardInterrupt:     # Ctrl-C while COCO was fetched, say (training itself stops and saves)
        print("\nclip-from-scratch pretrain: interrupted. Data downloaded so far is kept; run the same command "
              "again to go on (add --resume if training had begun and saved a checkpoint)", file=sys.stderr)
        return 130
    if not result["finished"]:
        return 130  # stopped early (Ctrl-C, SIGTERM): the shell's code for an interrupted command
    if config.data == "shapes":
        never = ("never seen in training" if result["config"]["heldout"] == "pairs"
                 else "never named together in any training caption")
        print(f"zero-shot top-1 on held-out colour x shape pairs: {result['zeroshot_top1']:.1f}% "
              f"(chance {result['chance']:.1f}%; pairs {never}: {', '.join(result['heldout_pairs'])})")
        if "binding" in result:   # two shapes a scene: which colour goes with which shape? (chapter 09)
            from .probes import format_probes
            print(format_probes(result["binding"]))
    else:
        from .retrieval import format_table
        print(f"COCO val2017 retrieval ({result['retrieval_images']} images):")
        print(format_table({direction: {int(k): v for k, v in values.items()}
                            for direction, values in result["retrieval"].items()}))
        for name in ("cifar10", "cifar100"):
            if name in result:
                print(f"{name} zero-shot top-1: {result[name]['single']:.1f}% (one prompt), "
                      f"{result[name]['ensemble']:.1f}% (18-prompt ensemble)")
            elif config.cifar:
                print(f"{name}: not on disk, not evaluated (fetch it with: clip-from-scratch download {name})")
    print(f"{result['step']} steps in {result['train_seconds']:.0f} s on {result['device']}. "
          f"Wrote {Path(config.out_dir) / CHECKPOINT}, {METRICS} and {LOSS_CURVE}.")
    return 0


# ----------------------------------------------------------------------------- zeroshot
def add_zeroshot_parser(subparsers) -> None:
    from .zeroshot import TEMPLATE_SETS
    parser = subparsers.add_parser("zeroshot", description=run_zeroshot.__doc__,
                                   help="zero-shot classification: CIFAR-10/100 or shapes, one prompt or an ensemble")
    add_model_arguments(parser, batch_size=128)
    parser.add_argument("--data", dest="dataset", default="cifar100", choices=["cifar100", "cifar10", "shapes"],
                        help="the labelled test set (default: %(default)s)")
    add_hidden_alias(parser, "--dataset", dest="dataset", choices=["cifar100", "cifar10", "shapes"])
    parser.add_argument("--templates", default="ensemble", choices=sorted(TEMPLATE_SETS),
                        help="one prompt ('a photo of a {}.') or the paper's 18-prompt ensemble")
    parser.add_argument("--num-images", dest="num_images", type=int, default=None, metavar="N",
                        help="evaluate only the first N test images")
    add_hidden_alias(parser, "--limit", dest="num_images", type=int)
    add_common_arguments(parser, data="CIFAR")
    add_out_arguments(parser, "zeroshot_<data>_<templates>.json")


def run_zeroshot(args) -> int:
    """Build a classifier from the class names (stage 2) and classify a test set with it (stage 3).
    Prints top-1/top-5, the weakest classes and the most confused pairs, and writes every figure
    (per-class accuracy, confusion matrix) to a JSON file.
    """
    run_zeroshot_command(args)
    return 0


def run_zeroshot_command(args):
    """Run ``clip-from-scratch zeroshot``: print the table and write the JSON; return the result."""
    import json

    from .course import pick_device
    from .zeroshot import TEMPLATE_SETS, evaluate
    output = result_file(args, f"zeroshot_{args.dataset}_{args.templates}.json")   # checked before the work

    device = pick_device(args.device)
    model, preprocess, tokenizer = load_model_for_evaluation(args, device)
    model.eval()
    images, names = zeroshot_test_set(args, model, preprocess)
    templates = TEMPLATE_SETS[args.templates]
    result = evaluate(model, images, names, templates, tokenizer, batch_size=args.batch_size, device=device,
                      progress=not args.no_progress)
    source = args.weights or args.checkpoint
    print(f"zero-shot {args.dataset} with {source} ({args.templates} prompts)")
    if args.dataset == "shapes":
        print("note: shapes is the course's offline stand-in data, not a real benchmark")
    print(result.table())
    record = {"dataset": args.dataset, "source": str(source), "template_set": args.templates, **result.to_dict()}
    output.write_text(json.dumps(record, indent=1))
    print(f"results written to {output}")
    return result


def add_model_arguments(parser, batch_size: int) -> None:
    """The options every evaluation command shares: which model, on which device, how many at a time."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="a checkpoint written by `clip-from-scratch pretrain`")
    source.add_argument("--weights", help="OpenAI model name (e.g. ViT-B/32), a .pt or .safetensors file, a Hugging "
                                          "Face CLIP folder or hub id (e.g. openai/clip-vit-base-patch32)")
    parser.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu; the default), cpu, cuda, "
                                                         "cuda:1, mps")
    parser.add_argument("--batch-size", type=int, default=batch_size, help="images (or prompts) encoded at a time")


def add_common_arguments(parser, data: str) -> None:
    """``--data-root`` and ``--no-progress``, said the same way in every subcommand."""
    parser.add_argument("--data-root", default=None, metavar="DIR",
                        help=f"where {data} lives (default: $CLIP_DATA or data/)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (for logs)")


def add_hidden_alias(parser, old_flag: str, dest: str, **kwargs) -> None:
    """An old spelling of an option: still accepted (for one release), not shown in ``--help``."""
    parser.add_argument(old_flag, dest=dest, default=argparse.SUPPRESS, help=argparse.SUPPRESS, **kwargs)


def add_out_arguments(parser, file_name: str) -> None:
    """``--out DIR`` (a folder, as everywhere) for an evaluation's JSON file, and the old ``--output FILE``."""
    parser.add_argument("--out", default=".", metavar="DIR",
                        help=f"folder for the results, {file_name} (default: the current folder)")
    parser.add_argument("--output", default=None, help=argparse.SUPPRESS)   # old: the file itself


def result_file(args, file_name: str):
    """Where an evaluation writes: ``--out``/file_name (the folder made if needed), or the old ``--output``.

    Checked before the work, so a bad path fails at once, not after the evaluation.
    """
    from pathlib import Path
    if args.output:
        path = Path(args.output)
        check_output_file(path, "--output")
        return path
    folder = Path(args.out)
    if folder.exists() and not folder.is_dir():
        raise CourseError(f"--out {folder} is a file: give a folder (the results go in {file_name})")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CourseError(f"--out {folder}: cannot create the folder ({err.strerror or err})") from None
    path = folder / file_name
    check_output_file(path, "--out")
    return path


def load_model_for_evaluation(args, device, truncate: bool = False):
    """``(model, preprocess, tokenizer)`` from ``--checkpoint`` or ``--weights``.

    The tokenizer pads to the model's own context length: 77 for OpenAI's
    models, often shorter for a course run, whose checkpoint carries its own BPE.
    """
    import os
    from functools import partial

    if args.weights:
        from .convert import looks_like_hub_id, read_hf_tokenizer
        from .openai_weights import available_models, load
        from .tokenizer import tokenize
        if not (os.path.exists(args.weights) or args.weights in available_models() or looks_like_hub_id(args.weights)):
            raise CourseError(f"--weights {args.weights!r} is neither a file nor a released model: give a path "
                              f"to a .pt or .safetensors file, a Hugging Face CLIP folder or hub id (owner/name), "
                              f"or one of {available_models()}")
        from .runs import is_training_checkpoint
        if os.path.isfile(args.weights) and is_training_checkpoint(args.weights):
            raise CourseError(f"{args.weights} is a checkpoint written by `clip-from-scratch pretrain`, with its "
                              f"own tokenizer: pass it as --checkpoint {args.weights}")
        model, preprocess = load(args.weights, device=device)
        own = read_hf_tokenizer(args.weights) if os.path.isdir(args.weights) else None   # an exported run's BPE
        encode = own.tokenize if own is not None else tokenize
        return model, preprocess, partial(encode, context_length=model.config.context_length, truncate=truncate)
    from .runs import load_checkpoint
    from .transforms import eval_transform
    model, tokenizer = load_checkpoint(args.checkpoint, device=device)
    if getattr(model, "objective_name", "contrastive") != "contrastive":
        raise CourseError(f"{args.checkpoint} holds a {model.objective_name} run: its text tower was never trained, "
                          f"so embedding text with it scores noise. Its zero-shot score on shapes is in its "
                          f"metrics.json; chapter 08 shows how such a model classifies")
    return (model, eval_transform(model.config.image_resolution),
            partial(tokenizer.tokenize, context_length=model.config.context_length, truncate=truncate))


def zeroshot_test_set(args, model, preprocess):
    """``(images, classnames)`` for the chosen ``--data``."""
    import torch
    if args.dataset == "shapes":
        from .data import shapes
        from .transforms import normalize
        spread = shapes.SPREAD
        if args.checkpoint:  # draw test scenes the way the run drew its training scenes
            from .runs import read_checkpoint
            spread = read_checkpoint(args.checkpoint).get("train_config", {}).get("spread", spread)
        test = shapes.zeroshot_set(size=args.num_images or 600, resolution=model.config.image_resolution,
                                   spread=spread)
        return (normalize(test["images"]), test["labels"]), test["classnames"]
    from .data import cifar
    test = cifar.cifar_dataset(args.dataset, train=False, root=args.data_root, transform=preprocess)
    names = cifar.classnames(test)
    if args.num_images:
        test = torch.utils.data.Subset(test, range(min(args.num_images, len(test))))
    return test, names


def check_output_file(path, flag: str = "--output") -> None:
    """Fail before the work if a result file could not be written there."""
    import os
    from pathlib import Path
    path = Path(path)
    if path.is_dir():
        raise CourseError(f"{flag} {path} is a folder: give a file name, e.g. {path / 'results.json'}")
    if not path.parent.exists():
        raise CourseError(f"{flag} {path}: the folder {path.parent} does not exist")
    if not os.access(path if path.exists() else path.parent, os.W_OK):
        raise CourseError(f"{flag} {path} cannot be written here (no permission): choose another path")


# ----------------------------------------------------------------------------- download
def add_download_parser(subparsers) -> None:
    parser = subparsers.add_parser("download", description=run_download.__doc__,
                                   help="prefetch COCO captions, CIFAR and OpenAI weights for offline use")
    parser.add_argument("target", choices=["coco", "cifar100", "cifar10", "weights"],
                        help="coco: caption annotations + images + the resized uint8 cache; cifar100/cifar10: "
                             "the torchvision archives; weights: one released OpenAI model (into the data "
                             "folder's weights/)")
    parser.add_argument("name", nargs="?", default=None,
                        help="for weights: the model name, e.g. ViT-B/32")
    parser.add_argument("--split", default=None, choices=["train2017", "val2017"],
                        help="coco (required): train2017 to train (118,287 images, ~19 GB to fetch), "
                             "val2017 to evaluate (5,000 images, ~0.8 GB)")
    parser.add_argument("--num-images", dest="max_images", type=int, default=None, metavar="N",
                        help="coco: only the first N images by id (default: all)")
    add_hidden_alias(parser, "--max-images", dest="max_images", type=int)
    parser.add_argument("--resolution", type=int, default=64, metavar="R",
                        help="coco: side of the cached square images in px (default: %(default)s)")
    parser.add_argument("--keep-jpeg", action="store_true",
                        help="coco: also keep the raw JPEGs in <data>/coco/<split>/ (by default only the cache stays)")
    parser.add_argument("--workers", type=int, default=16,
                        help="coco: parallel connections to the image server (default: %(default)s)")
    parser.add_argument("--data-root", default=None,
                        help="data folder (default: $CLIP_DATA or data/); weights go into its weights/ folder, "
                             "where clip_from_scratch.load looks first (then in openai/clip's ~/.cache/clip)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (for logs)")


def _megabytes(size: int) -> str:
    return f"{size / 1e6:,.1f} MB"


def run_download(args) -> int:
    """Fetch what the course needs ahead of time, e.g. to fill one data/ folder (or $CLIP_DATA)
    before a workshop. Each target prints what it fetched, what it reused, what it skipped and
    why, and the disk it uses. Interrupted? Run the same command again: it resumes.
    """
    import json
    from pathlib import Path

    from .data import cifar, coco
    from .openai_weights import available_models, checkpoint_path, download_model

    progress = not args.no_progress
    try:
        if args.target == "coco":
            if args.split is None:
                print("clip-from-scratch download: error: say which split: --split val2017 (5,000 images to "
                      "evaluate, ~0.8 GB to fetch) or --split train2017 (118,287 images to train, ~19 GB; "
                      "--num-images N for the first N)", file=sys.stderr)
                return 2
            root = Path(args.data_root) if args.data_root else coco.usable_data_root()
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
            if stats["retry_ids"]:
                print(f"  {len(stats['retry_ids'])} of those failed only for now (the server's answer, not the "
                      f"image): run the same command again later to try them again")
            jpegs = root / "coco" / args.split
            annotations = (coco.disk_usage(root / "coco" / "annotations")
                           + coco.disk_usage(root / "coco" / "annotations_trainval2017.zip"))
            print(f"  disk: cache {_megabytes(coco.disk_usage(ds.cache_dir))}, caption annotations "
                  f"{_megabytes(annotations)}"
                  + (f", JPEGs {_megabytes(coco.disk_usage(jpegs))}" if jpegs.exists() else ""))
            if args.split == "train2017":
                print("  (evaluate on val2017: clip-from-scratch download coco --split val2017)")
        elif args.target in ("cifar100", "cifar10"):
            root = Path(args.data_root) if args.data_root else coco.usable_data_root()
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
            folder = Path(args.data_root) / "weights" if args.data_root else None   # None: load()'s own order
            path = checkpoint_path(args.name, folder)
            there = path.exists()
            path = download_model(args.name, folder, progress=progress)
            print(f"{args.name}: {'reused (sha256 checked)' if there else 'fetched'} {path} "
                  f"({_megabytes(path.stat().st_size)})")
    except KeyboardInterrupt:
        print("\nclip-from-scratch download: interrupted; what was fetched is kept: run the same command "
              "again to resume", file=sys.stderr)
        return 130
    return 0


# ----------------------------------------------------------------------------- retrieval
def add_retrieval_parser(subparsers) -> None:
    parser = subparsers.add_parser("retrieval", description=run_retrieval.__doc__,
                                   help="image<->text retrieval recall@1/5/10 on COCO val2017")
    add_model_arguments(parser, batch_size=256)
    parser.add_argument("--split", default="val2017", choices=["val2017", "train2017"],
                        help="evaluate on val2017 (default); train2017 only to compare with training")
    parser.add_argument("--num-images", dest="max_images", type=int, default=None, metavar="N",
                        help="only the first N images by id (a quicker, easier test: fewer distractors)")
    add_hidden_alias(parser, "--max-images", dest="max_images", type=int)
    parser.add_argument("--resolution", type=int, default=None, metavar="R",
                        help="image side in px (default and only choice: the model's input resolution)")
    add_common_arguments(parser, data="COCO")
    add_out_arguments(parser, "retrieval_<split>.json")


def run_retrieval(args) -> int:
    """Encode every COCO val2017 image and caption with a model and measure recall@K both ways
    (image->text: any of the image's captions among its K best; text->image: the caption's image
    among its K best). Fetches and caches val2017 first if needed. Prints a table and writes a
    JSON file.
    """
    import json

    from .course import pick_device
    from .data import coco
    from .retrieval import encode_coco, format_table, recall_at_k

    output = result_file(args, f"retrieval_{args.split}.json")   # checked before the work
    if args.batch_size < 1:
        raise CourseError(f"--batch-size must be at least 1 (got {args.batch_size})")
    device = pick_device(args.device)
    progress = not args.no_progress
    try:
        # Captions longer than the model's context are cut (end-of-text kept), as training cut them.
        model, _, tokenize_fn = load_model_for_evaluation(args, device, truncate=True)
        resolution = model.visual.input_resolution
        if args.resolution is not None and args.resolution != resolution:
            raise CourseError(f"--resolution {args.resolution}: this model takes {resolution} px images; "
                              f"leave --resolution out (or give {resolution})")
        data = coco.CocoCaptions(args.split, resolution=resolution, max_images=args.max_images,
                                 root=args.data_root, download=True, progress=progress)
        if len(data) == 0:
            raise CourseError(f"the COCO cache {data.cache_dir} holds no usable image ({data.stats['failed']} "
                              f"failed): delete that folder and run again, or check {coco.URL_ENV_VAR}")
        features = encode_coco(model, tokenize_fn, data, args.batch_size, device, progress)
        recall = recall_at_k(*features, progress=progress)
    except KeyboardInterrupt:
        print("\nclip-from-scratch retrieval: interrupted; the COCO images fetched so far are kept: run the same "
              "command again to go on", file=sys.stderr)
        return 130
    source = args.weights or args.checkpoint
    num_captions = len(features[1])
    print(f"retrieval on COCO {args.split} ({len(data)} images, {num_captions} captions, {resolution} px) "
          f"with {source}")
    print(format_table(recall))
    record = {"source": str(source), "split": args.split, "num_images": len(data), "num_captions": num_captions,
              "resolution": resolution, "max_images": args.max_images, "failed_ids": data.stats["failed_ids"],
              "recall": {direction: {str(k): v for k, v in values.items()} for direction, values in recall.items()}}
    output.write_text(json.dumps(record, indent=1))
    print(f"results written to {output}")
    return 0


# ----------------------------------------------------------------------------- export
def add_export_parser(subparsers) -> None:
    parser = subparsers.add_parser("export", description=run_export.__doc__,
                                   help="write a model for transformers (hf), openai/clip (openai) or as safetensors")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="a checkpoint of `clip-from-scratch pretrain` (its BPE goes along)")
    source.add_argument("--weights", help="anything clip_from_scratch.load reads: a release name, a file, a "
                                          "Hugging Face folder or hub id")
    parser.add_argument("--format", required=True, choices=["hf", "openai", "safetensors"],
                        help="hf: a transformers CLIPModel folder; openai: a state dict for openai/clip's "
                             "build_model; safetensors: OpenAI's names in a safetensors file")
    parser.add_argument("--out", required=True, metavar="DIR", help="the folder to write (new or empty)")
    parser.add_argument("--overwrite", action="store_true", help="replace the files of a folder that is not empty")


def run_export(args) -> int:
    """Export a trained run (--checkpoint) or any weights load() reads (--weights) to a folder: a
    transformers CLIPModel (--format hf, with the run's tokenizer as vocab.json/merges.txt), a plain
    state dict for openai/clip (--format openai), or safetensors in OpenAI's names. A model card
    (README.md) says what the model was trained on, its metrics and the commands that made it.
    """
    from .export import export, from_checkpoint, from_weights
    source = from_checkpoint(args.checkpoint) if args.checkpoint else from_weights(args.weights)
    command = " ".join(["clip-from-scratch export", f"--checkpoint {args.checkpoint}" if args.checkpoint
                        else f"--weights {args.weights}", f"--format {args.format}", f"--out {args.out}"])
    written = export(source, args.out, args.format, command=command, overwrite=args.overwrite)
    print(f"exported {source.name} as {args.format} to {args.out}: {', '.join(p.name for p in written)}")
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
    add_export_parser(subparsers)
    return parser


COMMANDS = {"pretrain": run_pretrain, "zeroshot": run_zeroshot, "download": run_download,
            "retrieval": run_retrieval, "export": run_export}


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return COMMANDS[args.command](args)
    except CourseError as err:
        # Problems the user can fix: say what and how, without a traceback.
        print(f"clip-from-scratch {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

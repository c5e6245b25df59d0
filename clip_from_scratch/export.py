"""Export a model to where others can use it: Hugging Face ``transformers``, openai/clip, or safetensors.

    clip-from-scratch export --checkpoint runs/shapes/checkpoint.pt --format hf --out shapes-clip-hf
    clip-from-scratch export --weights ViT-B/32 --format safetensors --out vit-b-32

Three formats, each a folder with a model card (``README.md``: what the model
was trained on, how long, its metrics and the commands that made it):

``hf``
    ``config.json`` + ``model.safetensors`` in ``transformers.CLIPModel``'s
    names, the tokenizer as ``vocab.json`` / ``merges.txt`` (the run's own
    BPE: ``CLIPTokenizer.from_pretrained`` gives the same ids as ours), and
    ``preprocessor_config.json``. Vision Transformers only: Hugging Face has no
    CLIP ResNet.
``openai``
    ``model.pt``: a plain float32 state dict in OpenAI's names, what
    openai/clip's ``clip.model.build_model`` takes. That function infers the
    head counts as width // 64, so a model with other head counts is refused
    (its outputs would differ there); ``hf`` and ``safetensors`` keep them.
``safetensors``
    ``model.safetensors`` in OpenAI's names (open_clip's layout too), the exact
    architecture in the file's metadata; ``clip_from_scratch.load`` reads it back.

The run's tokenizer goes beside the weights in every format, so nothing the
model needs is lost. Nothing here runs code from a file: checkpoints are
read with ``torch.load(weights_only=True)``.

    >>> import tempfile; from clip_from_scratch.tokenizer import Tokenizer
    >>> folder = Path(tempfile.mkdtemp())
    >>> sorted(p.name for p in write_hf_tokenizer(Tokenizer([("c", "a")]), folder, context_length=16))
    ['merges.txt', 'special_tokens_map.json', 'tokenizer_config.json', 'vocab.json']
    >>> (folder / "merges.txt").read_text().splitlines()   # HF skips the first line
    ['#version: 0.2', 'c a']
"""
from __future__ import annotations

import json
import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .convert import CONFIG_METADATA_KEY, hf_config, openai_to_hf, write_safetensors
from .errors import CourseError
from .model import CLIP, CLIPConfig
from .runs import read_checkpoint
from .tokenizer import EOT_TEXT, SOT_TEXT, Tokenizer, clip_tokenizer
from .transforms import MEAN, STD

FORMATS = ("hf", "openai", "safetensors")


class ExportError(CourseError, ValueError):
    """A model that cannot go to the format asked for, or a folder that cannot take it."""


@dataclass
class Source:
    """A model to export and what is known about how it was made."""
    model: CLIP
    tokenizer: Tokenizer | None
    name: str                                   # the path or release name it came from
    run: dict = field(default_factory=dict)     # step, train_config, metrics of a course run (empty otherwise)


# ----------------------------------------------------------------------------- sources


def from_checkpoint(path: str | os.PathLike) -> Source:
    """A course training checkpoint: the model, the run's own BPE, and what the run recorded."""
    path = Path(path) / "checkpoint.pt" if Path(path).is_dir() else Path(path)   # a run's folder names its file
    state = read_checkpoint(path)
    model = CLIP(CLIPConfig.from_dict(state["model_config"]))
    model.load_state_dict(state["model"])
    run = {"step": state["step"], "train_config": state.get("train_config") or {},
           "evals": state.get("evals") or {}}
    metrics_file = path.parent / "metrics.json"
    if metrics_file.is_file():
        try:
            run["metrics"] = json.loads(metrics_file.read_text())
        except ValueError:
            pass   # a damaged metrics file costs the card its table, not the export
    return Source(model.eval(), Tokenizer.from_dict(state["tokenizer"]), str(path), run)


def from_weights(name: str) -> Source:
    """Anything ``clip_from_scratch.load`` reads; CLIP's own tokenizer when the vocabulary is CLIP's."""
    from .openai_weights import load
    model, _ = load(name, device="cpu")
    tokenizer = clip_tokenizer() if model.config.vocab_size == 49408 else None
    return Source(model, tokenizer, name)


# ----------------------------------------------------------------------------- tokenizer files


def write_hf_tokenizer(tokenizer: Tokenizer, folder: Path, context_length: int) -> list[Path]:
    """The tokenizer in Hugging Face's form: ``vocab.json``, ``merges.txt`` and the special tokens.

    Our vocabulary strings are HF's: byte symbols from the same byte-to-unicode
    table, ``</w>`` glued to a word's last symbol (HF's ``end_of_word_suffix``),
    ``<|startoftext|>`` / ``<|endoftext|>`` last. HF reads ``merges.txt`` from its
    second line on. Padding is end-of-text, HF's default for CLIP (openai/clip
    pads with 0; the features are the same, as nothing after end-of-text counts).
    """
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "vocab.json": json.dumps(tokenizer.encoder, ensure_ascii=False),
        "merges.txt": "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in tokenizer.merges),
        "tokenizer_config.json": json.dumps({
            "tokenizer_class": "CLIPTokenizer", "model_max_length": context_length,
            "bos_token": SOT_TEXT, "eos_token": EOT_TEXT, "unk_token": EOT_TEXT, "pad_token": EOT_TEXT,
            "do_lower_case": True, "clean_up_tokenization_spaces": False}, indent=1),
        "special_tokens_map.json": json.dumps({"bos_token": SOT_TEXT, "eos_token": EOT_TEXT,
                                               "unk_token": EOT_TEXT, "pad_token": EOT_TEXT}, indent=1),
    }
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    return [folder / name for name in files]


def _preprocessor_config(resolution: int) -> dict:
    """``CLIPImageProcessor``'s settings for our eval transform: resize the short side, centre-crop, normalise."""
    return {"image_processor_type": "CLIPImageProcessor", "do_resize": True, "size": {"shortest_edge": resolution},
            "resample": 3, "do_center_crop": True, "crop_size": {"height": resolution, "width": resolution},
            "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": list(MEAN),
            "image_std": list(STD), "do_convert_rgb": True}


# ----------------------------------------------------------------------------- export


def export(source: Source, out: str | os.PathLike, fmt: str, command: str = "", overwrite: bool = False) -> list[Path]:
    """Write ``source`` to the folder ``out`` in ``fmt`` (hf, openai, safetensors); returns the files written."""
    if fmt not in FORMATS:
        raise ExportError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    config = source.model.config
    if fmt == "hf" and config.is_resnet:
        raise ExportError("Hugging Face transformers has no CLIP ResNet (only Vision Transformers): export this "
                          "model with --format openai (openai/clip's build_model) or --format safetensors")
    if fmt == "openai" and config.activation != "quick_gelu":
        raise ExportError(f"openai/clip's build_model always computes QuickGELU, and this model uses "
                          f"{config.activation}: use --format hf or --format safetensors, which keep it")
    if fmt == "openai":
        inferred = {"transformer_heads": max(1, config.transformer_width // 64),
                    "vision_heads": CLIPConfig.from_dict({**config.to_dict(), "vision_heads": None}).vision_heads}
        wrong = {k: v for k, v in inferred.items() if getattr(config, k) != v}
        if wrong:
            name = next(iter(wrong))
            raise ExportError(f"openai/clip's build_model infers {name} = {wrong[name]} from the widths (64 channels "
                              f"a head), but this model has {getattr(config, name)}: it would load there and compute "
                              f"other features. Use --format hf or --format safetensors, which keep the heads")
    out = Path(out)
    if out.is_file() or (out.is_dir() and any(out.iterdir()) and not overwrite):
        raise ExportError(f"--out {out} is {'a file' if out.is_file() else 'a folder that is not empty'}: give a "
                          f"new folder (or add --overwrite to replace the files in it)")
    out.mkdir(parents=True, exist_ok=True)
    state_dict = {k: v.detach().float() if v.is_floating_point() else v for k, v in source.model.state_dict().items()}
    written = []
    if fmt == "hf":
        tokens = source.tokenizer
        hf = hf_config(config, tokens.sot_token if tokens else None, tokens.eot_token if tokens else None)
        (out / "config.json").write_text(json.dumps(hf, indent=1))
        write_safetensors(openai_to_hf(state_dict), out / "model.safetensors", {"format": "pt"})
        (out / "preprocessor_config.json").write_text(json.dumps(_preprocessor_config(config.image_resolution),
                                                                 indent=1))
        written += [out / "config.json", out / "model.safetensors", out / "preprocessor_config.json"]
    elif fmt == "openai":
        torch.save(state_dict, out / "model.pt")
        written.append(out / "model.pt")
    else:
        write_safetensors(state_dict, out / "model.safetensors",
                          {"format": "pt", CONFIG_METADATA_KEY: json.dumps(config.to_dict())})
        written.append(out / "model.safetensors")
    if source.tokenizer is not None:
        written += write_hf_tokenizer(source.tokenizer, out, config.context_length)
    (out / "README.md").write_text(model_card(source, fmt, command), encoding="utf-8")
    return written + [out / "README.md"]


# ----------------------------------------------------------------------------- the model card

# TrainConfig fields and their `pretrain` options, to write the command that reproduces a run.
def pretrain_command(train_config: dict) -> str:
    """The ``clip-from-scratch pretrain`` line with the run's settings spelled out.

    The flags come from each setting's own description (``train_config.setting``): the settings a
    run is defined by, in the order TrainConfig declares them.

    >>> pretrain_command({"data": "shapes", "steps": 20, "image_encoder": "resnet", "vision_patch_size": 4})
    'clip-from-scratch pretrain --data shapes --image-encoder resnet --steps 20'
    """
    from dataclasses import fields

    from .train_config import TrainConfig
    data = train_config.get("data", "shapes")
    parts = ["clip-from-scratch", "pretrain"]
    for setting in fields(TrainConfig):
        value = train_config.get(setting.name)
        about = setting.metadata
        scope = about["help"].split(":", 1)[0] if ":" in about["help"][:8] else None   # "shapes: ..." / "COCO: ..."
        if (value is None or about.get("may_change_on_resume") or (scope and scope.lower() != data)
                or (setting.name == "vision_patch_size" and train_config.get("image_encoder") == "resnet")):
            continue
        flag = about.get("flag") or "--" + setting.name.replace("_", "-")
        if isinstance(value, bool):   # a switch: given only when it differs from what the switch's absence means
            if value != flag.startswith("--no-"):
                parts.append(flag)
            continue
        parts += [flag, str(value)]
    return " ".join(shlex.quote(p) for p in parts)


def _architecture(config: CLIPConfig) -> str:
    if config.is_resnet:
        vision = (f"CLIP's modified ResNet, blocks per stage {list(config.vision_layers)}, stem width "
                  f"{config.vision_width}, attention pool with {config.vision_heads} heads")
    else:
        vision = (f"Vision Transformer, {config.vision_layers} layers x {config.vision_width} wide, "
                  f"{config.vision_heads} heads, {config.vision_patch_size} px patches")
    return (f"- image encoder: {vision}, {config.image_resolution} x {config.image_resolution} px input\n"
            f"- text encoder: causal transformer, {config.transformer_layers} layers x {config.transformer_width} "
            f"wide, {config.transformer_heads} heads, {config.context_length} tokens\n"
            f"- shared embedding: {config.embed_dim} dimensions; vocabulary: {config.vocab_size} tokens; "
            f"activation: {'QuickGELU' if config.activation == 'quick_gelu' else 'GELU'}")


def _training(run: dict) -> str:
    if not run:
        return ("Not trained by this course: exported from the weights named above (see their own model card "
                "for the data they were trained on).")
    train = run.get("train_config", {})
    data = train.get("data", "shapes")
    if data == "shapes":
        what = ("the course's **shapes** data: procedurally drawn coloured shapes with templated captions "
                "(\"a red circle.\"), an offline stand-in for COCO. It knows shapes and colours, not photographs.")
    else:
        what = (f"**COCO 2017 captions** (train2017, {train.get('num_images') or 'all 118,287'} images, five "
                f"captions each); a small dataset for CLIP: expect far weaker zero-shot results than OpenAI's models.")
    steps = (f"{run.get('step')} optimisation steps of {train.get('steps', '?')}, batch size "
             f"{train.get('batch_size', '?')}, peak learning rate {train.get('lr', '?')}, "
             f"seed {train.get('seed', '?')}")
    tokenizer = f"its own byte-level BPE ({train.get('bpe_merges', '?')} merges, trained on the training captions)"
    return f"Trained on {what}\n\n- {steps}\n- tokenizer: {tokenizer}"


def _metrics(run: dict) -> str:
    metrics = run.get("metrics") or {}
    def shown(value):
        return f"{value:.2f}" if isinstance(value, float) else str(value)

    rows = []
    for key in ("zeroshot_top1", "chance", "final_loss", "logit_scale", "train_seconds", "device"):
        if key in metrics:
            rows.append(f"| {key} | {shown(metrics[key])} |")
    for direction, values in (metrics.get("retrieval") or {}).items():
        rows += [f"| retrieval {direction} recall@{k} | {shown(v)} |" for k, v in values.items()]
    for name in ("cifar10", "cifar100"):
        if isinstance(metrics.get(name), dict):
            rows += [f"| {name} zero-shot top-1 ({how}) | {shown(v)} |" for how, v in metrics[name].items()]
    if not rows:
        evals = run.get("evals") or {}
        metric = next((k for k in evals if k != "step"), None)
        if metric and evals[metric]:
            rows.append(f"| {metric} (step {evals['step'][-1]}) | {shown(evals[metric][-1])} |")
    if not rows:
        return "No metrics were recorded with this model."
    return ("Measured by the training run itself (`metrics.json`); shapes scores are on held-out colour x shape "
            "pairs of the stand-in data, not a real benchmark.\n\n| metric | value |\n|---|---|\n" + "\n".join(rows))


def model_card(source: Source, fmt: str, command: str = "") -> str:
    """``README.md`` for the exported folder."""
    config = source.model.config
    train_config = source.run.get("train_config")
    commands = ([pretrain_command(train_config)] if train_config else []) + ([command] if command else [])
    use = {
        "hf": ("```python\nfrom transformers import CLIPModel, CLIPTokenizer\nmodel = CLIPModel.from_pretrained(FOLDER)"
               "\ntokenizer = CLIPTokenizer.from_pretrained(FOLDER)\nids = tokenizer([\"a red circle.\"], "
               "return_tensors=\"pt\").input_ids\nfeatures = model.get_text_features(input_ids=ids)\n```"),
        "openai": ("```python\nimport torch, clip\nmodel = clip.model.build_model(torch.load(\"model.pt\"))"
                   "   # openai/clip (float16 after build_model)\n```"),
        "safetensors": ("```python\nimport clip_from_scratch as clip\n"
                        "model, preprocess = clip.load(\"model.safetensors\")\n```"),
    }[fmt]
    tokenizer_note = ("The tokenizer is in `vocab.json` / `merges.txt` (Hugging Face's CLIPTokenizer form). Text is "
                      "lower-cased; CLIP's ftfy/HTML clean-up is not part of Hugging Face's tokenizer, so captions "
                      "with HTML entities (`&amp;`) or broken Unicode can tokenize differently there."
                      if source.tokenizer is not None else
                      "No tokenizer was exported with this model: its vocabulary is not CLIP's and its source "
                      "carried none.")
    return f"""---
tags: [clip, clip-from-scratch, zero-shot-image-classification]
library_name: {"transformers" if fmt == "hf" else "clip-from-scratch"}
---
# CLIP from scratch: {Path(source.name).parent.name if source.run else source.name}

A CLIP model made with the course
[CLIP from scratch](https://github.com/clip-from-scratch/clip-from-scratch),
exported as `{fmt}` from `{source.name}`.

## Architecture
{_architecture(config)}

## Training
{_training(source.run)}

## Metrics
{_metrics(source.run)}

## How it was made
```
{chr(10).join(commands) if commands else "(not recorded)"}
```

## Use
{use}

{tokenizer_note}
"""

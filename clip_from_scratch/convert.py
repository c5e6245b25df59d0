"""The same weights in other clothes: Hugging Face's and open_clip's layouts, and safetensors files.

One CLIP, three ways of naming its tensors:

==============================================  ==============================================
OpenAI / open_clip / this course                Hugging Face ``transformers.CLIPModel``
==============================================  ==============================================
``token_embedding.weight``                      ``text_model.embeddings.token_embedding.weight``
``positional_embedding``                        ``text_model.embeddings.position_embedding.weight``
``transformer.resblocks.N.attn.in_proj_weight`` ``...layers.N.self_attn.{q,k,v}_proj.weight`` (3 -> 1)
``transformer.resblocks.N.ln_1`` / ``ln_2``     ``...layers.N.layer_norm1`` / ``layer_norm2``
``transformer.resblocks.N.mlp.c_fc / c_proj``   ``...layers.N.mlp.fc1 / fc2``
``ln_final``                                    ``text_model.final_layer_norm``
``text_projection``   ``[width, embed]``        ``text_projection.weight`` ``[embed, width]`` (transposed)
``visual.conv1.weight``                         ``vision_model.embeddings.patch_embedding.weight``
``visual.class_embedding``                      ``vision_model.embeddings.class_embedding``
``visual.positional_embedding``                 ``vision_model.embeddings.position_embedding.weight``
``visual.ln_pre`` / ``visual.ln_post``          ``vision_model.pre_layrnorm`` (sic) / ``post_layernorm``
``visual.transformer.resblocks.N``              ``vision_model.encoder.layers.N``
``visual.proj``       ``[width, embed]``        ``visual_projection.weight`` ``[embed, width]`` (transposed)
``logit_scale``                                 ``logit_scale``
==============================================  ==============================================

OpenAI keeps one ``[3 * width, width]`` matrix for query, key and value;
Hugging Face keeps three ``[width, width]`` ones, stacked in that order::

    >>> from clip_from_scratch.model import CLIP, CLIPConfig
    >>> ours = CLIP(CLIPConfig.preset("tiny", vocab_size=600)).state_dict()
    >>> hf = openai_to_hf(ours)
    >>> ours["transformer.resblocks.0.attn.in_proj_weight"].shape        # [3 * width, width]
    torch.Size([384, 128])
    >>> hf["text_model.encoder.layers.0.self_attn.q_proj.weight"].shape  # [width, width]
    torch.Size([128, 128])
    >>> all(torch.equal(ours[k], v) for k, v in hf_to_openai(hf).items())
    True

open_clip's CLIP models (ViT and ResNet) already use OpenAI's names: its
``open_clip_model.safetensors`` files load as they are. Hugging Face has no
CLIP ResNet, so ResNets travel only in OpenAI's layout.

**safetensors** is a file format that cannot carry code: 8 bytes giving the
length N of a JSON header, N bytes of JSON (each tensor's dtype, shape and
byte range), then raw bytes. Reading it is reading numbers; the
``safetensors`` library checks that the byte ranges tile the file exactly
(no range past the end, no overlap, no 1 GB header) before anything is read.

**Where the text is pooled.** The course's model (like openai/clip) takes
the text feature at ``argmax(ids)``: the end-of-text token has the largest id.
Hugging Face pools at ``argmax(ids)`` too when a config's ``eos_token_id`` is
2 (configs saved before transformers PR #24773), and otherwise at the *first*
``eos_token_id``. The two agree whenever the end-of-text id is the largest id
in the text, which holds for every CLIP vocabulary (end-of-text is its last
token). They differ for (a) a tokenizer with tokens added after end-of-text,
when a caption uses one (:func:`config_from_hf` warns about such a model),
and (b) ids with no end-of-text at all (HF then pools at position 0, we at
the largest id).
"""
from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path
from typing import Mapping

import torch

from .errors import CourseError
from .model import CLIPConfig
from .tokenizer import Tokenizer


class CheckpointError(CourseError, RuntimeError):
    """A checkpoint file that cannot be read or is not a CLIP model."""


HF_CONFIG, HF_WEIGHTS, HF_WEIGHTS_BIN = "config.json", "model.safetensors", "pytorch_model.bin"
HF_INDEX = "model.safetensors.index.json"
OPEN_CLIP_CONFIG = "open_clip_config.json"
CONFIG_METADATA_KEY = "clip_from_scratch.model_config"   # where our safetensors files keep the exact config

# ----------------------------------------------------------------------------- safetensors files


def read_safetensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """``(tensors, metadata)`` of a ``.safetensors`` file; a damaged or lying file is one clear error.

    >>> import tempfile; path = Path(tempfile.mkdtemp()) / "x.safetensors"
    >>> write_safetensors({"w": torch.ones(2, 3)}, path, {"note": "hello"})
    >>> tensors, metadata = read_safetensors(path)
    >>> tensors["w"].shape, metadata["note"]
    (torch.Size([2, 3]), 'hello')
    """
    path = Path(path)
    try:
        from safetensors import SafetensorError, safe_open
    except ImportError:
        raise CheckpointError(f"{path} is a safetensors file; reading one needs the safetensors package: "
                              f"pip install safetensors") from None
    try:
        with safe_open(str(path), framework="pt", device="cpu") as file:
            metadata = dict(file.metadata() or {})
            tensors = {name: file.get_tensor(name) for name in file.keys()}
    except SafetensorError as err:
        raise CheckpointError(f"{path} is not a valid safetensors file ({err}): it is damaged or was not "
                              f"written by a safetensors writer; fetch or export it again") from None
    except OSError as err:
        raise CheckpointError(f"cannot read {path}: {err}") from None
    return tensors, metadata


def write_safetensors(tensors: Mapping[str, torch.Tensor], path: str | os.PathLike,
                      metadata: Mapping[str, str] | None = None) -> None:
    """Write ``tensors`` (contiguous CPU copies) to ``path`` atomically, with string ``metadata``."""
    from safetensors.torch import save

    from .files import atomic_write
    data = save({name: t.detach().to("cpu").contiguous() for name, t in tensors.items()},
                metadata=dict(metadata or {}))
    with atomic_write(Path(path)) as file:
        file.write(data)


# ----------------------------------------------------------------------------- Hugging Face <-> OpenAI names
# (OpenAI name, Hugging Face name), for everything that is a plain rename. {i} is a layer number.
_BLOCK = [("ln_1", "layer_norm1"), ("ln_2", "layer_norm2"), ("mlp.c_fc", "mlp.fc1"), ("mlp.c_proj", "mlp.fc2"),
          ("attn.out_proj", "self_attn.out_proj")]
_RENAMES = [
    ("token_embedding.weight", "text_model.embeddings.token_embedding.weight"),
    ("positional_embedding", "text_model.embeddings.position_embedding.weight"),
    ("ln_final", "text_model.final_layer_norm"),
    ("visual.class_embedding", "vision_model.embeddings.class_embedding"),
    ("visual.conv1.weight", "vision_model.embeddings.patch_embedding.weight"),
    ("visual.positional_embedding", "vision_model.embeddings.position_embedding.weight"),
    ("visual.ln_pre", "vision_model.pre_layrnorm"),   # sic: Hugging Face's spelling
    ("visual.ln_post", "vision_model.post_layernorm"),
    ("logit_scale", "logit_scale"),
] + [(f"transformer.resblocks.{{i}}.{a}", f"text_model.encoder.layers.{{i}}.{b}") for a, b in _BLOCK] \
  + [(f"visual.transformer.resblocks.{{i}}.{a}", f"vision_model.encoder.layers.{{i}}.{b}") for a, b in _BLOCK]
_TOWERS = {"transformer.resblocks.": "text_model.encoder.layers.",
           "visual.transformer.resblocks.": "vision_model.encoder.layers."}
_TRANSPOSED = {"text_projection": "text_projection.weight", "visual.proj": "visual_projection.weight"}
_HF_IGNORED = ("text_model.embeddings.position_ids", "vision_model.embeddings.position_ids")  # index buffers


def _pattern(name: str) -> re.Pattern:
    """``"a.{i}.b"`` -> a regex that matches ``a.7.b``, ``a.7.b.weight`` ... (the suffix in group 2)."""
    return re.compile("^" + re.escape(name).replace(r"\{i\}", r"(\d+)") + r"(\.weight|\.bias|)$")


_TO_HF = [(_pattern(a), b) for a, b in _RENAMES]
_TO_OPENAI = [(_pattern(b), a) for a, b in _RENAMES]


def _rename(name: str, table) -> str | None:
    for pattern, target in table:
        match = pattern.match(name)
        if match:
            groups = match.groups()
            layer = groups[0] if len(groups) == 2 else None
            return target.replace("{i}", layer or "") + groups[-1]
    return None


def openai_to_hf(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """OpenAI-layout tensors (a ViT CLIP) -> ``transformers.CLIPModel`` names and shapes."""
    if any(k.startswith(("visual.layer", "visual.attnpool.")) for k in state_dict):
        raise CheckpointError("Hugging Face transformers has no CLIP ResNet (only Vision Transformers): export a "
                              "ResNet model with --format openai or --format safetensors")
    out: dict[str, torch.Tensor] = {}
    for name, tensor in state_dict.items():
        if name in _TRANSPOSED:
            out[_TRANSPOSED[name]] = tensor.t().contiguous()
        elif name.endswith(("attn.in_proj_weight", "attn.in_proj_bias")):
            prefix, rest = next((a, name[len(a):]) for a in _TOWERS if name.startswith(a))
            layer, kind = rest.split(".")[0], name.rsplit("_", 1)[1]   # "0", "weight"
            for part, chunk in zip("qkv", tensor.chunk(3, dim=0)):      # [3 * width, ...] -> 3 x [width, ...]
                out[f"{_TOWERS[prefix]}{layer}.self_attn.{part}_proj.{kind}"] = chunk.contiguous()
        elif name in ("input_resolution", "context_length", "vocab_size"):
            continue
        else:
            renamed = _rename(name, _TO_HF)
            if renamed is None:
                raise CheckpointError(f"no Hugging Face name for the tensor {name!r}")
            out[renamed] = tensor
    return out


def hf_to_openai(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``transformers.CLIPModel`` tensors -> OpenAI's names and shapes (q, k, v fused into ``in_proj``)."""
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    unknown = []
    inverse = {hf: ours for ours, hf in _TRANSPOSED.items()}
    for name, tensor in state_dict.items():
        if name in _HF_IGNORED:
            continue
        if name in inverse:
            out[inverse[name]] = tensor.t().contiguous()
            continue
        match = re.match(r"^(text_model|vision_model)\.encoder\.layers\.(\d+)\.self_attn\.([qkv])_proj\.(weight|bias)$",
                         name)
        if match:
            tower, layer, part, kind = match.groups()
            prefix = "transformer.resblocks." if tower == "text_model" else "visual.transformer.resblocks."
            qkv.setdefault((f"{prefix}{layer}.attn.in_proj_", kind), {})[part] = tensor
            continue
        renamed = _rename(name, _TO_OPENAI)
        if renamed is None:
            unknown.append(name)
        else:
            out[renamed] = tensor
    if unknown:
        raise CheckpointError(f"these tensors are not part of a Hugging Face CLIPModel: {unknown[:5]}"
                              f"{' ...' if len(unknown) > 5 else ''}; is this another model family?")
    for (prefix, kind), parts in qkv.items():
        if set(parts) != set("qkv"):
            raise CheckpointError(f"{prefix}{kind}: the file has only {sorted(parts)} of q, k and v")
        out[prefix + kind] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)  # [3 * width, ...]
    return out


def is_hf_layout(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """True for ``transformers`` names (``text_model.*``, ``vision_model.*``)."""
    return any(k.startswith(("text_model.", "vision_model.")) for k in state_dict)


# ----------------------------------------------------------------------------- configs both ways


# transformers' defaults for what a config.json may leave out (CLIPTextConfig, CLIPVisionConfig)
_HF_TEXT_DEFAULTS = {"num_attention_heads": 8, "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5}
_HF_VISION_DEFAULTS = {"num_attention_heads": 12, "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5}


def config_from_hf(hf: Mapping, state_dict: Mapping[str, torch.Tensor]) -> CLIPConfig:
    """The architecture of a Hugging Face CLIP: sizes from the tensors, heads from ``config.json``.

    The activation (``hidden_act``) is QuickGELU (OpenAI's models) or GELU
    (LAION's and many fine-tunes). Refuses what the course's model cannot
    compute the same way (another activation, one per tower, another
    LayerNorm epsilon, an MLP that is not 4x wide) with one line, rather than
    loading a model that is silently wrong.
    """
    if not (hf.get("text_config") or hf.get("text_config_dict")) or \
            not (hf.get("vision_config") or hf.get("vision_config_dict")):
        raise CheckpointError("this config.json is not a full CLIPModel (it lacks text_config or vision_config): "
                              "the course's model needs both towers")
    # Older configs also carry "text_config_dict" / "vision_config_dict", which win (as in transformers).
    text, vision = ({**defaults, **(hf.get(f"{tower}_config_dict") or hf.get(f"{tower}_config") or {})}
                    for tower, defaults in (("text", _HF_TEXT_DEFAULTS), ("vision", _HF_VISION_DEFAULTS)))
    config = CLIPConfig.from_state_dict(state_dict)
    if text["hidden_act"] != vision["hidden_act"]:
        raise CheckpointError(f"this model's towers use two activations ({text['hidden_act']!r} for text, "
                              f"{vision['hidden_act']!r} for images); the course's model has one for both")
    for name, tower in (("text", text), ("vision", vision)):
        act, eps = tower["hidden_act"], tower["layer_norm_eps"]
        if act not in ("quick_gelu", "gelu"):
            raise CheckpointError(f"this model's {name} tower uses the activation {act!r}; the course's model "
                                  f"computes QuickGELU (OpenAI's) or GELU, so its outputs would differ")
        if abs(eps - 1e-5) > 1e-12:
            raise CheckpointError(f"this model's {name} tower uses LayerNorm eps={eps}; the course's uses 1e-5")
        fc = state_dict.get(f"{'' if name == 'text' else 'visual.'}transformer.resblocks.0.mlp.c_fc.weight")
        hidden, width = fc.shape if fc is not None else (0, 0)       # [4 * width, width]
        if hidden != 4 * width:
            raise CheckpointError(f"this model's {name} MLP is {hidden} wide; the course's model (like OpenAI's) "
                                  f"uses 4 x width = {4 * width}")
    eos = text.get("eos_token_id", config.vocab_size - 1)
    if eos not in (2, config.vocab_size - 1):
        warnings.warn(f"this model's end-of-text id is {eos}, not the last id ({config.vocab_size - 1}): captions "
                      f"that use a token with a larger id are pooled there, not at end-of-text as in transformers",
                      stacklevel=3)
    return CLIPConfig.from_dict({**config.to_dict(), "transformer_heads": text["num_attention_heads"],
                                 "vision_heads": vision["num_attention_heads"], "activation": text["hidden_act"]})


def hf_config(config: CLIPConfig, sot_token: int | None = None, eot_token: int | None = None) -> dict:
    """``config.json`` for ``transformers.CLIPModel.from_pretrained`` (a ViT CLIP only).

    >>> hf = hf_config(CLIPConfig.preset("tiny", vocab_size=600))
    >>> hf["projection_dim"], hf["text_config"]["eos_token_id"], hf["vision_config"]["patch_size"]
    (128, 599, 16)
    """
    if config.is_resnet:
        raise CheckpointError("Hugging Face transformers has no CLIP ResNet (only Vision Transformers): export a "
                              "ResNet model with --format openai or --format safetensors")
    eot = config.vocab_size - 1 if eot_token is None else eot_token
    sot = config.vocab_size - 2 if sot_token is None else sot_token
    common = dict(hidden_act=config.activation, layer_norm_eps=1e-5, attention_dropout=0.0, initializer_range=0.02,
                  initializer_factor=1.0, projection_dim=config.embed_dim)
    return {
        "architectures": ["CLIPModel"], "model_type": "clip", "projection_dim": config.embed_dim,
        "logit_scale_init_value": 2.6592, "initializer_factor": 1.0, "dtype": "float32",
        "text_config": {"model_type": "clip_text_model", "vocab_size": config.vocab_size,
                        "hidden_size": config.transformer_width, "intermediate_size": 4 * config.transformer_width,
                        "num_hidden_layers": config.transformer_layers,
                        "num_attention_heads": config.transformer_heads,
                        "max_position_embeddings": config.context_length,
                        # pooled at the first end-of-text (the newer convention); padding is end-of-text too
                        "bos_token_id": sot, "eos_token_id": eot, "pad_token_id": eot, **common},
        "vision_config": {"model_type": "clip_vision_model", "hidden_size": config.vision_width,
                          "intermediate_size": 4 * config.vision_width, "num_hidden_layers": config.vision_layers,
                          "num_attention_heads": config.vision_heads, "num_channels": 3,
                          "image_size": config.image_resolution, "patch_size": config.vision_patch_size, **common},
    }


def config_from_open_clip(open_clip_config: Mapping, state_dict: Mapping[str, torch.Tensor]) -> CLIPConfig:
    """Heads and activation from open_clip's ``open_clip_config.json``; sizes from the tensors.

    open_clip's models use ``nn.GELU`` unless their config says ``"quick_gelu": true``.
    """
    cfg = open_clip_config.get("model_cfg", open_clip_config)
    vision, text = cfg.get("vision_cfg", {}), cfg.get("text_cfg", {})
    unsupported = [k for k in ("timm_model_name", "hf_model_name") if vision.get(k) or text.get(k)]
    if unsupported:
        raise CheckpointError(f"this open_clip model uses a {unsupported[0]} tower, which the course does not build")
    config = CLIPConfig.from_state_dict(state_dict)
    if config.is_resnet:
        vision_heads = 32 * config.vision_width // vision.get("head_width", 64)
    else:
        vision_heads = config.vision_width // vision.get("head_width", 64)
    return CLIPConfig.from_dict({**config.to_dict(), "vision_heads": vision_heads,
                                 "transformer_heads": text.get("heads", 8),
                                 "activation": "quick_gelu" if cfg.get("quick_gelu", False) else "gelu"})


# ----------------------------------------------------------------------------- files and folders in


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise CheckpointError(f"cannot read {path} as JSON: {err}") from None


def read_weights_file(path: Path, read_pt) -> tuple[dict[str, torch.Tensor], dict | None]:
    """One weights file in any layout -> ``(OpenAI-layout state dict, model_config or None)``.

    ``.safetensors`` files are read with the safetensors library; anything
    else with ``read_pt`` (``torch.load(weights_only=True)`` or the
    TorchScript reader). Hugging Face names are converted; a
    ``config.json`` or ``open_clip_config.json`` beside the file gives the
    head counts the tensors cannot.
    """
    path = Path(path)
    config = None
    if path.suffix == ".safetensors":
        state_dict, metadata = read_safetensors(path)
        if CONFIG_METADATA_KEY in metadata:
            config = json.loads(metadata[CONFIG_METADATA_KEY])
    else:
        state_dict, config = read_pt(path)
    if is_hf_layout(state_dict):
        state_dict = hf_to_openai(state_dict)
        beside = path.parent / HF_CONFIG
        if beside.is_file():
            config = config_from_hf(_read_json(beside), state_dict).to_dict()
    elif config is None and (path.parent / OPEN_CLIP_CONFIG).is_file():
        config = config_from_open_clip(_read_json(path.parent / OPEN_CLIP_CONFIG), state_dict).to_dict()
    return state_dict, config


def read_weights_folder(folder: Path, read_pt) -> tuple[dict[str, torch.Tensor], dict | None]:
    """A Hugging Face CLIP folder (``config.json`` + weights) or an open_clip hub folder."""
    folder = Path(folder)
    for name in (HF_WEIGHTS, "open_clip_model.safetensors", HF_WEIGHTS_BIN, "open_clip_pytorch_model.bin"):
        if (folder / name).is_file():
            return read_weights_file(folder / name, read_pt)
    if (folder / HF_INDEX).is_file():   # a sharded save: the index names the file of each tensor
        index = _read_json(folder / HF_INDEX).get("weight_map", {})
        state_dict = {}
        for shard in sorted(set(index.values())):
            if Path(shard).name != shard:
                raise CheckpointError(f"{folder / HF_INDEX} names a shard outside the folder: {shard!r}")
            state_dict.update(read_safetensors(folder / shard)[0])
        state_dict = hf_to_openai(state_dict)
        return state_dict, config_from_hf(_read_json(folder / HF_CONFIG), state_dict).to_dict()
    raise CheckpointError(f"{folder} is a folder without CLIP weights: expected {HF_WEIGHTS} (or {HF_WEIGHTS_BIN}) "
                          f"beside {HF_CONFIG}, as transformers' save_pretrained writes, or open_clip's "
                          f"open_clip_model.safetensors")


def read_hf_tokenizer(folder: str | os.PathLike) -> Tokenizer | None:
    """The tokenizer of a folder's ``vocab.json`` + ``merges.txt``, when they are a CLIP BPE; else None.

    Our layout is a function of the merges (bytes, bytes + ``</w>``, one token
    per merge, the two specials last), so the merges rebuild it, and the
    vocabulary file must then agree id for id (``export`` writes such a pair).
    """
    folder = Path(folder)
    vocab_file, merges_file = folder / "vocab.json", folder / "merges.txt"
    if not (vocab_file.is_file() and merges_file.is_file()):
        return None
    lines = merges_file.read_text(encoding="utf-8").splitlines()
    merges = [tuple(line.split()) for line in lines if line.strip() and not line.startswith("#version")]
    if any(len(merge) != 2 for merge in merges):
        return None
    tokenizer = Tokenizer(merges)
    return tokenizer if _read_json(vocab_file) == tokenizer.encoder else None


def looks_like_hub_id(name: str) -> bool:
    """``"openai/clip-vit-base-patch32"``: owner/name, not a path that exists here.

    >>> looks_like_hub_id("openai/clip-vit-base-patch32"), looks_like_hub_id("ViT-B/32"), looks_like_hub_id("a/b/c")
    (True, False, False)
    >>> looks_like_hub_id("runs/checkpoint.pt")   # a mistyped path, not a question for the network
    False
    """
    return (bool(re.fullmatch(r"[\w.-]+/[\w.-]+", name)) and not os.path.exists(name)
            and not re.fullmatch(r"(ViT|RN)[\w-]*/[\w@]+", name)
            and not name.lower().endswith((".pt", ".pth", ".bin", ".safetensors", ".json", ".ckpt")))


def fetch_from_hub(repo_id: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """Fetch a Hugging Face hub repository's config and weights into the hub's own cache; return its folder.

    Only what loading needs is fetched, one layout at a time: ``transformers``'
    ``model.safetensors`` (or its shards), else open_clip's
    ``open_clip_model.safetensors``, else a ``.bin`` (read with
    ``weights_only=True``). ``HF_HUB_OFFLINE=1`` uses what the cache holds, and nothing else.
    """
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise CheckpointError(f"{repo_id!r} is no file or folder here; as a Hugging Face hub id it needs "
                              "huggingface_hub: pip install 'clip-from-scratch[hub]'") from None
    configs = [HF_CONFIG, OPEN_CLIP_CONFIG]
    layouts = [[HF_WEIGHTS, HF_INDEX, "model-*-of-*.safetensors"], ["open_clip_model.safetensors"],
               [HF_WEIGHTS_BIN, "open_clip_pytorch_model.bin"]]
    try:
        for patterns in layouts:
            folder = Path(snapshot_download(repo_id, allow_patterns=configs + patterns, cache_dir=cache_dir))
            if any(any(folder.glob(pattern)) for pattern in patterns):
                break
    except Exception as err:   # offline and not cached, no such repository, no network, ...
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise CheckpointError(f"{repo_id!r} is no file or folder here, and could not be fetched from the Hugging "
                              f"Face hub ({type(err).__name__}: {first}); check the path or id, the network, or "
                              f"HF_HUB_OFFLINE") from None
    return folder

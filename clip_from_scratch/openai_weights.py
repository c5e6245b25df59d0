"""OpenAI's released checkpoints: names, URLs, download, and file -> model.

The same face as openai/clip::

    import clip_from_scratch as clip
    clip.available_models()          # ['RN50', 'RN101', 'RN50x4', 'RN50x16', 'RN50x64', 'ViT-B/32', ...]
    model, preprocess = clip.load("ViT-B/32", device="cpu")
    model, preprocess = clip.load("checkpoints/my_model.pt")   # a local file

What ``load`` reads:

* OpenAI's files: float16 TorchScript archives, read as data: their tensors
  are taken out of the zip without running the archive's code
  (``torchscript_archive.py``; ``torch.jit.load`` would execute it);
* plain state dicts saved with ``torch.save`` (float16 or float32), or a dict
  holding one under ``"state_dict"`` or ``"model"`` (the course's training
  checkpoints, whose ``"model_config"`` then gives the exact architecture);
* ``.safetensors`` files in OpenAI's / open_clip's layout (ViT and ResNet,
  e.g. open_clip's ``open_clip_model.safetensors``) or in Hugging Face's;
* a Hugging Face CLIP folder (``config.json`` + ``model.safetensors`` or
  ``pytorch_model.bin``, as ``save_pretrained`` writes it), and, with
  ``huggingface_hub`` installed, a hub id such as
  ``"openai/clip-vit-base-patch32"``, fetched into the hub's own cache
  (``convert.py`` holds the name maps).

Released names are looked for in the data folder's ``weights/`` first
(``$CLIP_DATA/weights``, where ``clip-from-scratch download weights`` puts
them), then in openai/clip's cache ``~/.cache/clip``; a file found in either
is checked against the release's sha256 before use, and a missing one is
downloaded into ``weights/``.

The architecture is read off the tensor shapes (``CLIPConfig.from_state_dict``);
the model comes back in eval mode (a ResNet's batch norms use their stored
statistics) on ``device``: float32 on the CPU, and on a GPU float16 where
openai/clip keeps float16 (see ``load``). All nine released models load: the
five ResNets (RN50 ... RN50x64) and the four Vision Transformers.
"""
from __future__ import annotations

import os
import pickle
import warnings
from pathlib import Path
from typing import Callable, Union

import torch
from torch.nn.modules.utils import consume_prefix_in_state_dict_if_present

from .convert import CheckpointError, fetch_from_hub, looks_like_hub_id, read_weights_file, read_weights_folder
from .download import download
from .files import load_error_words, pickle_asks_for_code
from .model import CLIP, CLIPConfig
from .torchscript_archive import UnsafeArchiveError, is_torchscript_archive, read_torchscript_state_dict
from .transforms import eval_transform

_BASE = "https://openaipublic.azureedge.net/clip/models"
# name -> URL; the sha256 of each file is the folder name in its URL.
_MODELS = {
    "RN50": f"{_BASE}/afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762/RN50.pt",
    "RN101": f"{_BASE}/8fa8567bab74a42d41c5915025a8e4538c3bdbe8804a470a72f30b0d94fab599/RN101.pt",
    "RN50x4": f"{_BASE}/7e526bd135e493cef0776de27d5f42653e6b4c8bf9e0f653bb11773263205fdd/RN50x4.pt",
    "RN50x16": f"{_BASE}/52378b407f34354e150460fe41077663dd5b39c54cd0bfd2b27167a4a06ec9aa/RN50x16.pt",
    "RN50x64": f"{_BASE}/be1cfb55d75a9666199fb2206c106743da0f6468c9d327f3e0d0a543a9919d9c/RN50x64.pt",
    "ViT-B/32": f"{_BASE}/40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af/ViT-B-32.pt",
    "ViT-B/16": f"{_BASE}/5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f/ViT-B-16.pt",
    "ViT-L/14": f"{_BASE}/b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836/ViT-L-14.pt",
    "ViT-L/14@336px": f"{_BASE}/3035c92b350959924f9f00213499208652fc7ea050643e8b385c2dac08641f02/ViT-L-14-336px.pt",
}


OPENAI_CACHE = Path("~/.cache/clip")   # openai/clip's download folder (expanded when used)


def available_models() -> list[str]:
    """Names ``load`` can download: OpenAI's nine CLIP models, ResNets first, in OpenAI's order."""
    return list(_MODELS)


def weights_folder() -> Path:
    """The course's place for released weights: ``weights/`` in the data folder (``$CLIP_DATA`` or ``data/``)."""
    from .course import data_root
    return data_root() / "weights"


def checkpoint_path(name: str, download_root: str | os.PathLike | None = None) -> Path:
    """Where a released model is (or will be) kept.

    ``download_root`` when given; otherwise the first folder that already
    holds the file, of the data folder's ``weights/`` and openai/clip's
    ``~/.cache/clip``; otherwise ``weights/`` (where a download goes).
    """
    filename = os.path.basename(_MODELS[name])
    if download_root:
        return Path(download_root) / filename
    places = [weights_folder() / filename, OPENAI_CACHE.expanduser() / filename]
    return next((path for path in places if path.is_file()), places[0])


def download_model(name: str, download_root: str | os.PathLike | None = None, progress: bool = True) -> Path:
    """The released checkpoint's path, fetched once if needed; a file already there is sha256-checked too."""
    url = _MODELS[name]
    sha256 = url.split("/")[-2]
    return download(url, checkpoint_path(name, download_root), sha256=sha256, progress=progress)


def read_state_dict(path: str | os.PathLike, trusted: bool = False) -> tuple[dict[str, torch.Tensor], dict | None]:
    """Read the tensors of a checkpoint file: ``(state_dict, model_config or None)``.

    Handles TorchScript archives (OpenAI's format), ``torch.save``'d state
    dicts, and dicts holding one under ``"state_dict"`` or ``"model"``. No
    file's code is ever run: TorchScript archives are read as data and
    ``torch.load`` runs with ``weights_only=True``.

    ``trusted=True`` is only for a file whose sha256 is that of one of OpenAI's
    releases: if the data-only reader ever fails on such a file, it falls back
    to ``torch.jit.load``.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder, not a checkpoint file")
    size = path.stat().st_size
    try:
        if is_torchscript_archive(path):
            try:
                return read_torchscript_state_dict(path), None
            except UnsafeArchiveError as err:
                raise CheckpointError(f"{path} is not safe to load: {err}. It is not one of OpenAI's "
                                      "releases; only load files from sources you trust.") from None
            except Exception:
                if not trusted:
                    raise
                with warnings.catch_warnings():  # a verified release: running its TorchScript is what openai/clip does
                    warnings.simplefilter("ignore", FutureWarning)
                    return dict(torch.jit.load(str(path), map_location="cpu").state_dict()), None
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except CheckpointError:
        raise
    except pickle.UnpicklingError as err:
        if not pickle_asks_for_code(err):   # garbage bytes fail as unpickling too
            raise CheckpointError(f"could not read {path} ({size:,} bytes) as a PyTorch checkpoint: "
                                  f"{load_error_words(err)}. The file is probably truncated or corrupt: delete it "
                                  f"and fetch it again.") from None
        raise CheckpointError(f"could not read {path}: its pickle asks for Python objects beyond tensors (it could "
                              f"run code when opened), so it was refused unopened. Only load files from sources "
                              f"you trust; a .safetensors copy cannot hold code.") from None
    except Exception as err:  # torch raises a zoo of types for damaged files
        raise CheckpointError(
            f"could not read {path} ({size:,} bytes) as a PyTorch checkpoint: {load_error_words(err)}\nThe file "
            f"is probably truncated or corrupt (an interrupted copy or download): delete it and fetch it again."
        ) from None
    model_config = None
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), dict):
                model_config = obj.get("model_config") if isinstance(obj.get("model_config"), dict) else None
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj:
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state dict of CLIP tensors")
    # Saved from DistributedDataParallel ("module.") or a torch.compile'd model ("_orig_mod."): drop the prefix.
    obj = dict(obj)
    for prefix in ("module.", "_orig_mod."):
        consume_prefix_in_state_dict_if_present(obj, prefix)
    return obj, model_config


def read_weights(name: str | os.PathLike, download_root: str | None = None
                 ) -> tuple[dict[str, torch.Tensor], dict | None]:
    """``(OpenAI-layout state dict, model_config or None)`` from a file, a folder or a hub id (not a release name).

    Files: ``.pt``/``.bin`` (read by :func:`read_state_dict`, never run) and
    ``.safetensors`` (either layout); folders: Hugging Face's or open_clip's;
    hub ids (``owner/name``) are fetched into the hub's cache (``download_root``
    instead, when given).
    """
    path = Path(name)
    if path.is_dir():
        return read_weights_folder(path, read_state_dict)
    if path.is_file():
        return read_weights_file(path, read_state_dict)
    if isinstance(name, str) and looks_like_hub_id(name):
        return read_weights_folder(fetch_from_hub(name, cache_dir=download_root), read_state_dict)
    raise RuntimeError(f"Model {name} not found; available models = {available_models()}, or pass the path to "
                       f"a checkpoint file, a Hugging Face CLIP folder, or a hub id such as "
                       f"openai/clip-vit-base-patch32")


def build_model(state_dict: dict[str, torch.Tensor], model_config: dict | None = None) -> CLIP:
    """A float32 ``CLIP`` holding ``state_dict``, its architecture read off the shapes."""
    config = CLIPConfig.from_dict(model_config) if model_config else CLIPConfig.from_state_dict(state_dict)
    with torch.device("meta"):
        model = CLIP(config)  # shapes only: no memory, no random init to throw away
    # float32 copies become the parameters (copies: the caller's tensors stay the caller's)
    state_dict = {k: v.to(torch.float32, copy=True) if v.is_floating_point() else v for k, v in state_dict.items()}
    model.load_state_dict(state_dict, assign=True)
    return model


def load(name: str, device: Union[str, torch.device, None] = None, jit: bool = False,
         download_root: str | None = None) -> tuple[CLIP, Callable]:
    """Load a CLIP model: a released name (see ``available_models()``) or a checkpoint path.

    Returns ``(model, preprocess)``: the model in eval mode on ``device``
    (default: CUDA when available, else the CPU) and the transform that turns
    a PIL image into the tensor the model takes.

    Precision follows openai/clip: on the CPU the model is float32; on a GPU
    its matrices (convolutions, linear layers, attention, projections) stay
    float16, as released, while embeddings, LayerNorms and ``logit_scale``
    are float32 (:func:`half_like_openai`). Features then come out float16,
    as openai/clip's do; ``model.float()`` gives a float32 model anywhere.

    ``jit=True`` (openai/clip's TorchScript model) is accepted and ignored,
    with a warning: this package always returns its readable eager model,
    which gives the same outputs. ``torch.compile(model)`` is the modern way
    to make it faster.
    """
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if jit:
        warnings.warn("jit=True is ignored: clip_from_scratch always returns its eager (non-TorchScript) "
                      "model, which computes the same outputs; use torch.compile(model) for speed.",
                      stacklevel=2)
    path = name
    try:
        if name in _MODELS:
            path = download_model(name, download_root)   # sha256-checked against the release
            model = build_model(*read_state_dict(path, trusted=True))
        else:
            model = build_model(*read_weights(name, download_root))
    except ValueError as err:  # from_state_dict: not a CLIP checkpoint
        raise CheckpointError(f"{path}: {err}") from None
    model = model.to(device).eval()
    if torch.device(device).type == "cuda":
        half_like_openai(model)
    return model, eval_transform(model.visual.input_resolution)


def half_like_openai(model: torch.nn.Module) -> torch.nn.Module:
    """Float16 where openai/clip's ``convert_weights`` puts it: the matrices, not the rest.

    Convolutions, linear layers, attention projections, ``text_projection``
    and ``visual.proj`` become float16 (half the memory, the GPU's fast
    kernels); embeddings, LayerNorms, batch norms and ``logit_scale`` stay
    float32, where the precision matters and the cost does not.
    """
    from .layers import Attention
    for module in model.modules():
        if isinstance(module, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Linear)):
            module.half()
        elif isinstance(module, Attention):
            module.in_proj_weight.data = module.in_proj_weight.data.half()
            module.in_proj_bias.data = module.in_proj_bias.data.half()
        for name in ("text_projection", "proj"):
            tensor = getattr(module, name, None)
            if isinstance(tensor, torch.nn.Parameter):
                tensor.data = tensor.data.half()
    return model

"""Read the tensors of a TorchScript archive without running any of its code.

OpenAI released CLIP as TorchScript archives (``torch.jit.save``). The usual
way to open one, ``torch.jit.load``, *executes* the archive: every module's
``__setstate__`` is TorchScript code stored in the file, and it runs during
loading. A ``.pt`` file from the internet could print, allocate or worse the
moment it is opened. This course never runs code from a file, so it reads
the archive the way one reads any zip of data:

    ViT-B-32/
      data.pkl            the module tree: a pickle of objects, attributes and tensors
      data/0, data/1 ...  raw tensor bytes, one file per storage
      code/__torch__/...  TorchScript source: which attributes are parameters/buffers
      constants.pkl       constants baked in by tracing (not needed for weights)

``data.pkl`` is unpickled by a restricted unpickler that knows exactly four
kinds of global: TorchScript classes (``__torch__.*``, turned into inert
attribute holders whose source code is never looked at as code),
``torch._utils._rebuild_tensor_v2``, torch's storage types and
``collections.OrderedDict``. Anything else (``os.system``, ``builtins.eval``
...) is refused. The ``__parameters__``/``__buffers__`` lists in ``code/``
are read as text, to name exactly the tensors ``state_dict()`` would have::

    >>> import torch, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "linear.pt")
    >>> torch.jit.script(torch.nn.Linear(3, 2)).save(path)
    >>> state_dict = read_torchscript_state_dict(path)
    >>> sorted(state_dict), tuple(state_dict["weight"].shape)
    (['bias', 'weight'], (2, 3))
"""
from __future__ import annotations

import collections
import os
import pickle
import re
import zipfile

import torch

from .errors import CourseError


class UnsafeArchiveError(CourseError, pickle.UnpicklingError):
    """The archive asks for something that is not plain data (a function or class outside the allow-list)."""


_STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "HalfStorage": torch.float16, "BFloat16Storage": torch.bfloat16,
    "DoubleStorage": torch.float64, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}

# `class Name(Module):` followed by its parameter and buffer lists, as torch.jit.save writes them.
_DECLARATIONS = re.compile(r"^class (\w+)\(Module\):\s*\n\s*__parameters__ = \[(.*?)\]\s*\n\s*__buffers__ = \[(.*?)\]",
                           re.MULTILINE)


class ScriptObject:
    """Stands in for every TorchScript class in the archive: it only holds the attributes it is given.

    Unpickling calls ``__setstate__`` with the object's saved state; the real
    class's ``__setstate__`` (TorchScript code) is what ``torch.jit.load`` would
    run. Here it stores the state and nothing else.
    """
    qualified_name = "?"
    state_names: tuple[str, ...] | None = None   # parameters + buffers, when the archive declares them

    def __setstate__(self, state):
        self.__dict__["attributes"] = state if isinstance(state, dict) else {"": state}


def _rebuild_tensor(storage: torch.Tensor, offset: int, size, stride, *unused) -> torch.Tensor:
    """``torch._utils._rebuild_tensor_v2`` for our flat storages: a strided view of the bytes."""
    return torch.as_strided(storage, tuple(size), tuple(stride), offset)


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, archive: zipfile.ZipFile, prefix: str, declarations: dict):
        super().__init__(file)
        self.archive, self.prefix, self.declarations = archive, prefix, declarations
        self.classes: dict[str, type] = {}
        self.storages: dict[str, torch.Tensor] = {}

    def find_class(self, module: str, name: str):
        if module.startswith("__torch__"):
            qualified = f"{module}.{name}"
            if qualified not in self.classes:
                self.classes[qualified] = type(name, (ScriptObject,), {
                    "qualified_name": qualified, "state_names": self.declarations.get(qualified)})
            return self.classes[qualified]
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch" and name in _STORAGE_DTYPES:
            return _STORAGE_DTYPES[name]
        raise UnsafeArchiveError(f"the archive's data.pkl asks for {module}.{name}, which is not plain data "
                                 f"(tensors and TorchScript modules): refusing to load it")

    def persistent_load(self, pid):
        # ('storage', dtype, key, location, numel): the bytes live in <prefix>/data/<key>
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], torch.dtype)):
            raise UnsafeArchiveError(f"unexpected persistent id in the archive: {pid!r}")
        _, dtype, key, _, numel = pid
        if key not in self.storages:
            raw = bytearray(self.archive.read(f"{self.prefix}/data/{key}"))
            storage = torch.frombuffer(raw, dtype=torch.uint8).view(dtype) if raw else torch.empty(0, dtype=dtype)
            if storage.numel() != numel:
                raise UnsafeArchiveError(f"storage {key} holds {storage.numel()} values, the archive says {numel}")
            self.storages[key] = storage
        return self.storages[key]


def _read_declarations(archive: zipfile.ZipFile, prefix: str) -> dict[str, tuple[str, ...]]:
    """``{"__torch__.clip.model.CLIP": ("positional_embedding", ..., "vocab_size"), ...}`` from code/ (as text)."""
    declarations = {}
    code = f"{prefix}/code/"
    for name in archive.namelist():
        if not (name.startswith(code) and name.endswith(".py")):
            continue
        module = name[len(code):-len(".py")].replace("/", ".")   # __torch__/clip/model.py -> __torch__.clip.model
        source = archive.read(name).decode("utf-8", errors="replace")
        for cls, parameters, buffers in _DECLARATIONS.findall(source):
            declarations[f"{module}.{cls}"] = tuple(re.findall(r'"([^"]+)"', parameters + buffers))
    return declarations


def _collect(obj: ScriptObject, prefix: str, out: dict[str, torch.Tensor]) -> None:
    """Walk the module tree: tensors that are parameters or buffers, named like ``state_dict()`` names them."""
    for name, value in obj.__dict__.get("attributes", {}).items():
        if isinstance(value, ScriptObject):
            _collect(value, f"{prefix}{name}.", out)
        elif isinstance(value, torch.Tensor) and (obj.state_names is None or name in obj.state_names):
            out[prefix + name] = value


def is_torchscript_archive(path: str | os.PathLike) -> bool:
    """TorchScript archives are zips with a ``code/`` folder; ``torch.save`` zips have none."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/code/" in name or name.endswith("/constants.pkl") for name in archive.namelist())


def read_torchscript_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The state dict of a TorchScript archive (what ``torch.jit.load(path).state_dict()`` gives), run-free.

    Raises :class:`UnsafeArchiveError` for an archive whose pickle asks for
    anything beyond tensors and module objects, ``ValueError`` for one that is
    not a TorchScript module archive.
    """
    with zipfile.ZipFile(path) as archive:
        roots = [name[:-len("/data.pkl")] for name in archive.namelist() if name.endswith("/data.pkl")]
        if len(roots) != 1:
            raise ValueError(f"{path} is a zip archive but not a TorchScript module (no single data.pkl)")
        prefix = roots[0]
        byteorder = f"{prefix}/byteorder"
        if byteorder in archive.namelist() and archive.read(byteorder).strip() not in (b"little", b""):
            raise ValueError(f"{path} was saved on a big-endian machine; only little-endian archives are read")
        with archive.open(f"{prefix}/data.pkl") as file:
            root = _RestrictedUnpickler(file, archive, prefix, _read_declarations(archive, prefix)).load()
    if not isinstance(root, ScriptObject):
        raise ValueError(f"{path}: the archive's top object is a {type(root).__name__}, not a TorchScript module")
    state_dict: dict[str, torch.Tensor] = {}
    _collect(root, "", state_dict)
    return state_dict

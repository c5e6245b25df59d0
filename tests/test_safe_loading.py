"""Loading a file never runs code from it: TorchScript archives are read as data.

``torch.jit.load`` executes the TorchScript stored in an archive (every
module's ``__setstate__``). These tests build archives that do something when
opened that way, prove that they do (so the tests can fail), and check that
``clip_from_scratch.load`` and the ``zeroshot`` command read them without
running anything.
"""
from __future__ import annotations

import io
import pickle
import warnings
import zipfile
from typing import Tuple

import pytest
import torch

from clip_from_scratch import openai_weights
from clip_from_scratch.cli import main
from clip_from_scratch.model import CLIPConfig
from clip_from_scratch.openai_weights import CheckpointError, load
from clip_from_scratch.torchscript_archive import UnsafeArchiveError, read_torchscript_state_dict

TINY = CLIPConfig.preset("tiny", vocab_size=500)
MARKER = "CODE FROM THE FILE RAN"


class _SideEffectOnLoad(torch.nn.Module):
    """A module whose TorchScript ``__setstate__`` prints when the archive is opened with torch.jit.load."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(2))

    def forward(self, x):
        return x * self.weight

    @torch.jit.export
    def __getstate__(self) -> Tuple[torch.Tensor, bool]:
        return (self.weight, self.training)

    @torch.jit.export
    def __setstate__(self, state: Tuple[torch.Tensor, bool]) -> None:
        self.weight = state[0]
        self.training = state[1]
        print("CODE FROM THE FILE RAN")


@pytest.fixture
def setstate_archive(tmp_path):
    path = tmp_path / "setstate.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)   # "torch.jit.script is deprecated"
        torch.jit.script(_SideEffectOnLoad()).save(str(path))
    return path


def _jit_load(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.jit.load(str(path))


def test_the_setstate_archive_really_runs_code_under_torch_jit_load(setstate_archive, capfd):
    _jit_load(setstate_archive)
    assert MARKER in capfd.readouterr().out   # otherwise the tests below prove nothing


def test_load_reads_a_setstate_archive_without_running_it(setstate_archive, capfd):
    with pytest.raises(CheckpointError, match="does not look like a CLIP checkpoint"):
        load(str(setstate_archive), device="cpu")
    assert MARKER not in capfd.readouterr().out


def test_zeroshot_command_reads_a_setstate_archive_without_running_it(setstate_archive, capfd, tmp_path):
    code = main(["zeroshot", "--weights", str(setstate_archive), "--dataset", "shapes", "--device", "cpu",
                 "--output", str(tmp_path / "out.json")])
    captured = capfd.readouterr()
    assert code == 2 and "does not look like a CLIP checkpoint" in captured.err
    assert MARKER not in captured.out + captured.err


def _with_pickle_prefix(archive_path, out_path, prefix: bytes):
    """Copy a TorchScript archive, putting ``prefix`` (pickle opcodes) in front of its data.pkl."""
    with zipfile.ZipFile(archive_path) as source, zipfile.ZipFile(out_path, "w") as target:
        for item in source.infolist():
            data = source.read(item)
            if item.filename.endswith("/data.pkl"):
                assert data[:2] == b"\x80\x02"   # PROTO 2, kept first
                data = data[:2] + prefix + data[2:]
            target.writestr(item, data)
    return out_path


def test_an_archive_whose_pickle_calls_a_function_is_refused_and_nothing_runs(openai_checkpoint, tmp_path):
    marker = tmp_path / "marker"
    # GLOBAL os.system, call it with a shell command, throw the result away; then the real model.
    command = f"touch {marker}".encode()
    prefix = b"cos\nsystem\n(X" + len(command).to_bytes(4, "little") + command + b"tR0"
    evil = _with_pickle_prefix(openai_checkpoint(TINY, fmt="torchscript"), tmp_path / "evil.pt", prefix)
    with zipfile.ZipFile(evil) as archive:   # the prefix is a valid pickle that would run the command
        data = archive.read(next(n for n in archive.namelist() if n.endswith("/data.pkl")))
    with pytest.raises(Exception):   # plain pickle stops at the TorchScript classes, after the call ...
        pickle.Unpickler(io.BytesIO(data)).load()
    assert marker.exists()                          # ... which has already happened
    marker.unlink()

    with pytest.raises(CheckpointError, match=r"not safe to load.*os\.system|not safe to load.*posix\.system"):
        load(str(evil), device="cpu")
    assert not marker.exists()
    with pytest.raises(UnsafeArchiveError):
        read_torchscript_state_dict(evil)


def test_torchscript_reader_gives_exactly_what_torch_jit_load_gives(openai_checkpoint):
    path = openai_checkpoint(TINY, fmt="torchscript")
    expected = _jit_load(path).state_dict()
    got = read_torchscript_state_dict(path)
    assert list(got) == list(expected)
    for name, tensor in expected.items():
        assert got[name].dtype == tensor.dtype and torch.equal(got[name], tensor), name


def test_load_never_calls_torch_jit_load_for_a_local_file(openai_checkpoint, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("torch.jit.load was called")
    monkeypatch.setattr(torch.jit, "load", refuse)
    model, _ = load(str(openai_checkpoint(TINY, fmt="torchscript")), device="cpu")
    assert model.config == TINY


def test_damaged_archive_is_a_clear_error_not_a_fallback_to_torch_jit(openai_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.jit, "load", lambda *a, **k: pytest.fail("torch.jit.load was called"))
    source = openai_checkpoint(TINY, fmt="torchscript")
    broken = tmp_path / "broken.pt"
    with zipfile.ZipFile(source) as archive, zipfile.ZipFile(broken, "w") as out:
        for item in archive.infolist():
            if "/data/" not in item.filename:   # drop every tensor's bytes
                out.writestr(item, archive.read(item))
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        openai_weights.read_state_dict(broken)


def test_compiled_and_ddp_prefixes_are_dropped(tmp_path):
    from clip_from_scratch.model import CLIP
    state_dict = CLIP(TINY).state_dict()
    for prefix in ("module.", "_orig_mod.", "module._orig_mod."):
        path = tmp_path / "prefixed.pt"
        torch.save({prefix + k: v for k, v in state_dict.items()}, path)
        read, _ = openai_weights.read_state_dict(path)
        assert list(read) == list(state_dict), prefix


def test_a_pickle_that_asks_for_code_never_gets_torchs_weights_only_false_advice(tmp_path, capsys):
    """torch advises retrying with weights_only=False, which would run the code: never relayed."""
    import os

    from clip_from_scratch.cli import main

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'ran'}",))

    evil = tmp_path / "evil.pt"
    torch.save({"model": Evil(), "model_config": {}, "tokenizer": {}, "step": 0}, evil)
    for flag in ("--weights", "--checkpoint"):
        assert main(["zeroshot", flag, str(evil), "--data", "shapes", "--device", "cpu", "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert "weights_only=False" not in err and "could run code" in err, err
    assert not (tmp_path / "ran").exists()

"""One place for released weights: the data folder's weights/ first, then openai/clip's ~/.cache/clip.

A file found in either place is checked against the release's sha256
before use; a missing one is downloaded into weights/ (also by
``clip-from-scratch download weights``). The "release" here is a tiny
checkpoint whose sha256 is put into the model's URL, as OpenAI's URLs carry theirs.
"""
import hashlib

import pytest

from clip_from_scratch import openai_weights
from clip_from_scratch.cli import main
from clip_from_scratch.download import ChecksumError, DownloadError
from clip_from_scratch.model import CLIPConfig
from clip_from_scratch.openai_weights import checkpoint_path, load

TINY = CLIPConfig.preset("tiny", vocab_size=500)


@pytest.fixture
def places(tmp_path, monkeypatch):
    """CLIP_DATA and openai/clip's cache pointed into tmp_path; returns (weights/, ~/.cache/clip)."""
    monkeypatch.setenv("CLIP_DATA", str(tmp_path / "data"))
    monkeypatch.setattr(openai_weights, "OPENAI_CACHE", tmp_path / "home" / ".cache" / "clip")
    return tmp_path / "data" / "weights", tmp_path / "home" / ".cache" / "clip"


@pytest.fixture
def release(openai_checkpoint, monkeypatch, free_port):
    """A tiny 'ViT-B/32' whose URL names its sha256, on a server nobody answers: returns its bytes."""
    data = openai_checkpoint(TINY, fmt="torchscript").read_bytes()
    sha256 = hashlib.sha256(data).hexdigest()
    monkeypatch.setitem(openai_weights._MODELS, "ViT-B/32", f"http://127.0.0.1:{free_port}/{sha256}/ViT-B-32.pt")
    return data


def test_weights_folder_is_looked_at_first(places, release):
    weights, cache = places
    for folder in (weights, cache):
        folder.mkdir(parents=True)
        (folder / "ViT-B-32.pt").write_bytes(release)
    assert checkpoint_path("ViT-B/32") == weights / "ViT-B-32.pt"
    model, _ = load("ViT-B/32", device="cpu")      # no server answers: the file was used, not fetched
    assert model.config == TINY


def test_openai_clips_cache_is_used_when_weights_lacks_the_file(places, release):
    _, cache = places
    cache.mkdir(parents=True)
    (cache / "ViT-B-32.pt").write_bytes(release)
    assert checkpoint_path("ViT-B/32") == cache / "ViT-B-32.pt"
    assert load("ViT-B/32", device="cpu")[0].config == TINY


@pytest.mark.parametrize("where", ["weights", "cache"])
def test_a_tampered_file_in_either_place_is_never_used(places, release, where):
    folder = places[0] if where == "weights" else places[1]
    folder.mkdir(parents=True)
    tampered = bytearray(release)
    tampered[len(tampered) // 2] ^= 0xFF
    (folder / "ViT-B-32.pt").write_bytes(bytes(tampered))
    with pytest.raises((ChecksumError, DownloadError)):   # set aside, then the (unreachable) release is asked for
        load("ViT-B/32", device="cpu")


def test_a_missing_file_is_fetched_into_weights(places, release, http_server, tmp_path, monkeypatch):
    sha256 = hashlib.sha256(release).hexdigest()
    (tmp_path / "www" / sha256).mkdir(parents=True)
    (tmp_path / "www" / sha256 / "ViT-B-32.pt").write_bytes(release)
    monkeypatch.setitem(openai_weights._MODELS, "ViT-B/32", f"{http_server(tmp_path / 'www')}/{sha256}/ViT-B-32.pt")
    load("ViT-B/32", device="cpu")
    weights, cache = places
    assert (weights / "ViT-B-32.pt").read_bytes() == release and not cache.exists()


def test_download_weights_writes_into_the_data_folders_weights(release, http_server, tmp_path, monkeypatch, capsys):
    sha256 = hashlib.sha256(release).hexdigest()
    (tmp_path / "www" / sha256).mkdir(parents=True)
    (tmp_path / "www" / sha256 / "ViT-B-32.pt").write_bytes(release)
    monkeypatch.setitem(openai_weights._MODELS, "ViT-B/32", f"{http_server(tmp_path / 'www')}/{sha256}/ViT-B-32.pt")
    assert main(["download", "weights", "ViT-B/32", "--data-root", str(tmp_path / "shared"), "--no-progress"]) == 0
    assert (tmp_path / "shared" / "weights" / "ViT-B-32.pt").read_bytes() == release
    assert "fetched" in capsys.readouterr().out
    monkeypatch.setenv("CLIP_DATA", str(tmp_path / "shared"))   # an instructor's pre-filled folder serves load()
    monkeypatch.setitem(openai_weights._MODELS, "ViT-B/32", f"http://127.0.0.1:9/{sha256}/ViT-B-32.pt")
    assert load("ViT-B/32", device="cpu")[0].config == TINY

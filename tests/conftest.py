"""Shared test fixtures: checkpoints in OpenAI's on-disk formats, the reference model, captions, a loopback server.

No test machine can download OpenAI's weights, so the tests make files the
way OpenAI ships them, with random weights:

``openai_checkpoint(config, fmt="torchscript", seed=0) -> Path``
    Builds openai/clip's own model (``clip.model.CLIP`` from clip-anytorch) for
    ``config`` (a ``CLIPConfig`` or a preset name such as ``"ViT-B/32"`` or
    ``"RN50"``; a ResNet's batch norms get random gains and measured
    statistics), converts it to float16 as OpenAI did, and saves it as

    * ``fmt="torchscript"``: a ``torch.jit.trace`` archive, the format of the
      released ``.pt`` files (``torch.jit.load(path).state_dict()`` gives
      OpenAI's tensor names, plus ``input_resolution``/``context_length``/
      ``vocab_size`` entries as in the real files);
    * ``fmt="state_dict"``: ``torch.save(state_dict)``, float16.

    Files are cached for the session: asking twice costs nothing.

``openai_reference(path) -> nn.Module``
    The reference: the file read as ``clip.load`` reads it, built with
    ``clip.model.build_model`` and converted to float32, in eval mode.

``random_captions(batch, context_length=77, vocab_size=49408, lengths=None, seed=0) -> LongTensor``
    Token ids shaped like ``tokenize``'s output: start token ``vocab_size - 2``,
    random word ids, end-of-text ``vocab_size - 1``, zero padding. ``lengths``
    (number of word tokens per caption) defaults to random 8..18.

Loopback plumbing (tests/fixtures/loopback.py), so no test reaches the internet:

``free_port -> int``
    A port nothing listens on (a connection to it is refused; a process group can bind it).

``loopback_server(handler) -> str``
    Serves with ``handler`` (a request handler class) on 127.0.0.1 from a
    thread; returns the base URL. Stopped at the end of the test.

``http_server(directory) -> str``
    The same, serving ``directory``'s files.

``fake_cifar(name, train_images, train_labels, test_images, test_labels, classes=None, served=None)``
    Writes a tiny archive in CIFAR's real format (tests/fixtures/cifar_fixtures.py)
    into ``served`` (default ``tmp_path / "served"``), serves that folder,
    and points torchvision's CIFAR class at it, expecting exactly the fake
    files' digests (its integrity check stays on). Returns a ``FakeCifar``
    (``base`` URL of the folder, ``url`` of the archive, ``archive`` path).
    Patches are undone after the test.

``coco_tree`` and ``coco_http``
    A tiny COCO tree and its server (tests/fixtures/coco_fixtures.py).
"""
from __future__ import annotations

import contextlib
import functools
import sys
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import torch

# The helpers the tests share (files in real formats, the loopback server, ...) live in tests/fixtures/.
sys.path.insert(0, str(Path(__file__).resolve().parent / "fixtures"))

import loopback  # noqa: E402
from cifar_fixtures import write_cifar_archive  # noqa: E402
from coco_fixtures import CocoServer, CocoTree, start_coco_server, write_coco_tree  # noqa: E402

from clip_from_scratch.data.cifar import dataset_class
from clip_from_scratch.download import file_digest
from clip_from_scratch.model import CLIPConfig


def openai_clip_module():
    """openai/clip's ``clip.model``, imported on first use (it drags in the slow pkg_resources)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # clip-anytorch imports the deprecated pkg_resources
        import clip.model
    return clip.model


def openai_kwargs(config: CLIPConfig) -> dict:
    """The keyword arguments of openai/clip's ``CLIP`` for ``config``."""
    clip_heads = replace(config, vision_heads=None).vision_heads  # 64 channels a head, as openai/clip infers
    if config.vision_heads != clip_heads or config.transformer_heads != max(1, config.transformer_width // 64):
        raise ValueError("openai/clip infers heads as width // 64; this config cannot be made in its format")
    return {k: v for k, v in config.to_dict().items() if k != "vision_heads"}


def _make_openai_file(config: CLIPConfig, path: Path, fmt: str, seed: int) -> Path:
    openai_model = openai_clip_module()
    torch.manual_seed(seed)
    model = openai_model.CLIP(**openai_kwargs(config)).eval()
    if config.is_resnet:
        _randomise_batch_norms(model.visual)
    # The released archives also carry these plain numbers next to the tensors.
    for key in ("input_resolution", "context_length", "vocab_size"):
        value = config.image_resolution if key == "input_resolution" else getattr(config, key)
        model.__dict__.pop(key, None)  # a plain int attribute of openai's model; the file holds a tensor
        model.register_buffer(key, torch.tensor(value))
    traced = None
    if fmt == "torchscript":  # trace in float32 (fast on a CPU), then store float16 tensors as OpenAI did
        images = torch.zeros(1, 3, config.image_resolution, config.image_resolution)
        text = torch.zeros(1, config.context_length, dtype=torch.long)
        text[0, 0], text[0, 1] = config.vocab_size - 2, config.vocab_size - 1
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(model, (images, text), check_trace=False)
    openai_model.convert_weights(model)  # float16, as released
    state_dict = model.state_dict()
    if fmt == "state_dict":
        torch.save(state_dict, path)
    elif fmt == "torchscript":
        with torch.no_grad():
            for name, parameter in traced.named_parameters():
                parameter.data = state_dict[name]
        traced.save(str(path))
    else:
        raise ValueError(f"fmt must be 'torchscript' or 'state_dict', got {fmt!r}")
    return path


def _randomise_batch_norms(resnet: torch.nn.Module) -> None:
    """Give every batch norm random gains and biases and the statistics of real activations.

    A fresh ResNet's batch norms are the identity in eval mode, and OpenAI's
    init zeroes each block's last gain, which would hide every residual branch
    from a comparison. Here the gains and biases are random and the running
    statistics are measured on one random batch, so activations stay of
    order one through a real-size network and every tensor matters.
    """
    generator = torch.Generator().manual_seed(1234)
    norms = [m for m in resnet.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        for norm in norms:
            norm.weight.copy_(0.5 + torch.rand(norm.weight.shape, generator=generator))
            norm.bias.copy_(0.2 * torch.randn(norm.bias.shape, generator=generator))
            norm.reset_running_stats()
            norm.momentum = None  # a plain average over the batches seen: one batch gives its statistics
        resnet.train()
        side = resnet.input_resolution
        resnet(torch.randn(2, 3, side, side, generator=generator))
        resnet.eval()
        for norm in norms:
            norm.momentum = 0.1


@pytest.fixture(scope="session")
def openai_checkpoint(tmp_path_factory):
    cache: dict = {}
    folder = tmp_path_factory.mktemp("openai_checkpoints")

    def make(config="tiny", fmt: str = "torchscript", seed: int = 0) -> Path:
        if isinstance(config, str):
            config = CLIPConfig.preset(config)
        key = (tuple(sorted(config.to_dict().items())), fmt, seed)
        if key not in cache:
            cache[key] = _make_openai_file(config, folder / f"model{len(cache)}_{fmt}.pt", fmt, seed)
        return cache[key]

    return make


@pytest.fixture(scope="session")
def openai_reference():
    def build(path) -> torch.nn.Module:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # "torch.jit.load is deprecated"
                state_dict = torch.jit.load(str(path), map_location="cpu").state_dict()
        except RuntimeError:
            state_dict = torch.load(path, map_location="cpu")
        return openai_clip_module().build_model(dict(state_dict)).float().eval()

    return build


@pytest.fixture(scope="session")
def random_captions():
    def make(batch: int, context_length: int = 77, vocab_size: int = 49408, lengths=None, seed: int = 0):
        generator = torch.Generator().manual_seed(seed)
        if lengths is None:
            lengths = torch.randint(8, 19, (batch,), generator=generator).tolist()
        tokens = torch.zeros(batch, context_length, dtype=torch.long)
        for row, n in enumerate(lengths):
            n = min(n, context_length - 2)
            tokens[row, 0] = vocab_size - 2
            tokens[row, 1:n + 1] = torch.randint(1, vocab_size - 2, (n,), generator=generator)
            tokens[row, n + 1] = vocab_size - 1
        return tokens

    return make


# --- loopback servers ---------------------------------------------------------------------

@pytest.fixture
def free_port() -> int:
    return loopback.free_port()


@pytest.fixture
def loopback_server():
    servers = []

    def serve(handler) -> str:
        servers.append(loopback.start_server(handler))
        return loopback.server_url(servers[-1])

    yield serve
    for httpd in servers:
        loopback.stop_server(httpd)


@pytest.fixture
def http_server(loopback_server):
    def serve(directory) -> str:
        return loopback_server(functools.partial(loopback.QuietHandler, directory=str(directory)))

    return serve


# --- fake datasets in their real formats ---------------------------------------------------

@dataclass
class FakeCifar:
    base: str      # the served folder's URL
    url: str       # the archive's URL (also the dataset class's url while the test runs)
    archive: Path  # the archive on disk, in the served folder


@pytest.fixture
def fake_cifar(monkeypatch, tmp_path, http_server):
    def publish(name, train_images, train_labels, test_images, test_labels, classes=None,
                served=None) -> FakeCifar:
        cls = dataset_class(name)
        served = Path(served) if served is not None else tmp_path / "served"
        archive = served / cls.filename
        digests = write_cifar_archive(archive, name, train_images, train_labels, test_images, test_labels,
                                      classes=classes)
        base = http_server(served)
        # Not the real archive: torchvision must expect this one's digests (its check stays on).
        monkeypatch.setattr(cls, "url", f"{base}/{cls.filename}")
        monkeypatch.setattr(cls, "tgz_md5", file_digest(archive, "md5"))
        monkeypatch.setattr(cls, "train_list", [[f, digests[f]] for f, _ in cls.train_list])
        monkeypatch.setattr(cls, "test_list", [[f, digests[f]] for f, _ in cls.test_list])
        monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": digests[cls.meta["filename"]]})
        return FakeCifar(base, f"{base}/{cls.filename}", archive)

    return publish


@pytest.fixture(scope="session")
def coco_tree(tmp_path_factory) -> CocoTree:
    """A 40-image val2017 tree, written once per test session (read-only: copy it before changing it)."""
    return write_coco_tree(tmp_path_factory.mktemp("coco_served"), "val2017", num_images=40)


@pytest.fixture
def coco_http():
    """``coco_http(folder, drop_once=(), latency=0.0) -> CocoServer``, stopped at the end of the test."""
    servers = []

    def serve(folder, **options) -> CocoServer:
        servers.append(start_coco_server(folder, **options))
        return servers[-1]

    yield serve
    for server in servers:
        with contextlib.suppress(Exception):
            server.stop()

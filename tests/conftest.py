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

``http_server(directory) -> str``
    Serves ``directory`` on 127.0.0.1 from a thread; returns the base URL.
    Stopped at the end of the test.
"""
from __future__ import annotations

import functools
import http.server
import threading
import warnings
from dataclasses import replace
from pathlib import Path

import pytest
import torch

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


@pytest.fixture
def http_server():
    servers = []

    def serve(directory) -> str:
        handler = functools.partial(_QuietHandler, directory=str(directory))
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=functools.partial(httpd.serve_forever, poll_interval=0.05), daemon=True).start()
        servers.append(httpd)
        return f"http://127.0.0.1:{httpd.server_address[1]}"

    yield serve
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass

"""open_clip's safetensors files (OpenAI's key layout) load with open_clip's outputs; lying files are one line.

Random tiny open_clip models (one ViT, one ResNet; QuickGELU, as OpenAI's
CLIP) are saved as safetensors, the format of open_clip's
``open_clip_model.safetensors``; our features must match ``encode_image`` /
``encode_text`` within 1e-5 (relative).
"""
import json
import os
import struct
import subprocess
import sys
import warnings

import pytest
import torch

pytest.importorskip("safetensors", reason="safetensors is not installed (the references extra)")
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    open_clip = pytest.importorskip("open_clip", reason="open_clip is not installed (the references extra)")

from safetensors.torch import save_file  # noqa: E402

from clip_from_scratch.openai_weights import CheckpointError, load  # noqa: E402

TEXT = dict(context_length=20, vocab_size=300, width=64, heads=4, layers=2)
VIT = dict(layers=2, width=64, patch_size=8, image_size=32, head_width=32)
RESNET = dict(layers=(1, 1, 1, 1), width=16, image_size=64, head_width=64)


def tiny_open_clip(vision, seed=0, quick_gelu=True):
    torch.manual_seed(seed)
    model = open_clip.CLIP(embed_dim=48, vision_cfg=vision, text_cfg=TEXT, quick_gelu=quick_gelu).eval()
    with torch.no_grad():   # LayerNorms start as the identity, biases at 0; batch norms too: make them matter
        for name, tensor in model.named_parameters():
            if name.endswith("bias") or ".ln" in name or name.startswith("ln") or ".bn" in name:
                tensor.add_(0.1 * torch.randn_like(tensor))
        for name, buffer in model.named_buffers():
            if "running_var" in name:
                buffer.uniform_(0.5, 1.5)
            elif "running_mean" in name:
                buffer.normal_(0, 0.1)
    return model


def open_clip_config(vision):
    return {"model_cfg": {"embed_dim": 48, "quick_gelu": True, "vision_cfg": vision, "text_cfg": TEXT}}


def captions():
    ids = torch.zeros(3, 20, dtype=torch.long)
    for row, n in enumerate([2, 9, 17]):
        ids[row, 0], ids[row, 1:n + 1], ids[row, n + 1] = 298, torch.arange(1, n + 1) * 7 % 290 + 1, 299
    return ids


def relative_error(got, expected):
    return (got - expected).abs().max().item() / expected.abs().max().item()


@pytest.mark.parametrize("vision", [VIT, RESNET], ids=["vit", "resnet"])
def test_an_open_clip_safetensors_file_gives_open_clips_features(tmp_path, vision):
    reference = tiny_open_clip(vision)
    save_file(reference.state_dict(), tmp_path / "open_clip_model.safetensors")
    (tmp_path / "open_clip_config.json").write_text(json.dumps(open_clip_config(vision)))
    ours, _ = load(str(tmp_path / "open_clip_model.safetensors"), device="cpu")
    assert ours.config.transformer_heads == 4      # from open_clip_config.json (width // 64 would say 1)
    side = vision["image_size"]
    pixels, ids = torch.randn(2, 3, side, side), captions()
    with torch.no_grad():
        pairs = [(ours.encode_image(pixels), reference.encode_image(pixels)),
                 (ours.encode_text(ids), reference.encode_text(ids))]
    for got, expected in pairs:
        assert relative_error(got, expected) <= 1e-5


def test_an_open_clip_hub_folder_loads_as_a_folder(tmp_path):
    reference = tiny_open_clip(VIT, seed=2)
    save_file(reference.state_dict(), tmp_path / "open_clip_model.safetensors")
    (tmp_path / "open_clip_config.json").write_text(json.dumps(open_clip_config(VIT)))
    ours, _ = load(str(tmp_path), device="cpu")
    pixels = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert relative_error(ours.encode_image(pixels), reference.encode_image(pixels)) <= 1e-5


def test_an_open_clip_gelu_model_loads_as_gelu_from_its_config(tmp_path):
    reference = tiny_open_clip(VIT, seed=5, quick_gelu=False)     # open_clip's default, LAION's models
    save_file(reference.state_dict(), tmp_path / "open_clip_model.safetensors")
    config = open_clip_config(VIT)
    del config["model_cfg"]["quick_gelu"]
    (tmp_path / "open_clip_config.json").write_text(json.dumps(config))
    ours, _ = load(str(tmp_path / "open_clip_model.safetensors"), device="cpu")
    assert ours.config.activation == "gelu"
    pixels, ids = torch.randn(2, 3, 32, 32), captions()
    with torch.no_grad():
        assert relative_error(ours.encode_image(pixels), reference.encode_image(pixels)) <= 1e-5
        assert relative_error(ours.encode_text(ids), reference.encode_text(ids)) <= 1e-5


# --- safetensors files that lie -----------------------------------------------------------------

def _write(path, header, body, length=None):
    data = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(data) if length is None else length) + data + body)
    return path


F32 = {"dtype": "F32", "shape": [4]}
LIARS = {
    "offsets past the end": ({"a": {**F32, "data_offsets": [0, 16]},
                              "b": {"dtype": "F32", "shape": [1000], "data_offsets": [16, 4016]}}, bytes(32), None),
    "overlapping tensors": ({"a": {**F32, "data_offsets": [0, 16]}, "b": {**F32, "data_offsets": [8, 24]}},
                            bytes(24), None),
    "a 1 GB header length": ({"a": {**F32, "data_offsets": [0, 16]}}, bytes(16), 1 << 30),
    "a shape that does not fit its bytes": ({"a": {"dtype": "F32", "shape": [5], "data_offsets": [0, 16]}},
                                            bytes(16), None),
}


@pytest.mark.parametrize("lie", sorted(LIARS))
def test_a_safetensors_file_whose_header_lies_is_one_line(tmp_path, lie):
    header, body, length = LIARS[lie]
    path = _write(tmp_path / "liar.safetensors", header, body, length)
    with pytest.raises(CheckpointError) as caught:
        load(str(path), device="cpu")
    message = str(caught.value)
    assert "\n" not in message and "not a valid safetensors file" in message


def test_lying_headers_cost_no_memory(tmp_path):
    """In a fresh process (its peak memory is its own): reading every liar adds < 50 MB to the peak."""
    paths = [str(_write(tmp_path / f"liar{i}.safetensors", *LIARS[lie])) for i, lie in enumerate(sorted(LIARS))]
    script = f"""
import resource
from clip_from_scratch.openai_weights import CheckpointError, load
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
for path in {paths!r}:
    try:
        load(path, device="cpu")
    except CheckpointError:
        pass
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout.split()[-1]) < 50_000, f"peak memory grew by {done.stdout.split()[-1]} KiB"


def test_a_truncated_safetensors_file_is_one_line(tmp_path):
    reference = tiny_open_clip(VIT)
    save_file(reference.state_dict(), tmp_path / "whole.safetensors")
    data = (tmp_path / "whole.safetensors").read_bytes()
    (tmp_path / "half.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a valid safetensors file"):
        load(str(tmp_path / "half.safetensors"), device="cpu")

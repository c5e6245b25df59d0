"""load() and available_models(): openai/clip's face, its file formats, and its errors."""
import hashlib

import pytest
import torch

import clip_from_scratch
from clip_from_scratch import openai_weights
from clip_from_scratch.download import ChecksumError
from clip_from_scratch.model import CLIP, ArchitectureMismatchError, CLIPConfig
from clip_from_scratch.openai_weights import CheckpointError, available_models, load

TINY = CLIPConfig.preset("tiny", vocab_size=500)


def test_available_models_are_the_nine_released_ones_in_openais_order():
    assert available_models() == ["RN50", "RN101", "RN50x4", "RN50x16", "RN50x64",
                                  "ViT-B/32", "ViT-B/16", "ViT-L/14", "ViT-L/14@336px"]
    assert clip_from_scratch.available_models is available_models
    for name, url in openai_weights._MODELS.items():
        sha256 = url.split("/")[-2]
        assert url.startswith("https://openaipublic.azureedge.net/clip/models/") and len(sha256) == 64


def test_unknown_model_name_lists_the_available_ones():
    with pytest.raises(RuntimeError, match=r"ViT-B/33 not found; available models = \['RN50', 'RN101'"):
        load("ViT-B/33")


def test_load_returns_a_float32_eval_model_and_its_preprocess(openai_checkpoint):
    model, preprocess = load(str(openai_checkpoint(TINY, fmt="torchscript")), device="cpu")
    assert isinstance(model, CLIP) and not model.training
    assert all(p.dtype == torch.float32 and p.device.type == "cpu" for p in model.parameters())
    from PIL import Image
    assert preprocess(Image.new("RGB", (100, 80))).shape == (3, 64, 64)


def test_both_file_formats_hold_the_same_weights(openai_checkpoint):
    from_script, _ = load(str(openai_checkpoint(TINY, fmt="torchscript")), device="cpu")
    from_state_dict, _ = load(str(openai_checkpoint(TINY, fmt="state_dict")), device="cpu")
    for (name, a), b in zip(from_script.state_dict().items(), from_state_dict.state_dict().values()):
        assert torch.equal(a, b), name


def test_jit_true_warns_and_still_loads(openai_checkpoint):
    with pytest.warns(UserWarning, match="jit=True is ignored"):
        model, _ = load(str(openai_checkpoint(TINY, fmt="state_dict")), device="cpu", jit=True)
    assert isinstance(model, CLIP)


def test_course_checkpoint_with_its_config_loads_with_the_right_heads(tmp_path):
    config = CLIPConfig.preset("tiny", vocab_size=300, transformer_heads=4, vision_heads=8)  # not width // 64
    trained = CLIP(config)
    path = tmp_path / "course.pt"
    torch.save({"model": trained.state_dict(), "model_config": config.to_dict(), "step": 10}, path)
    model, _ = load(str(path), device="cpu")
    assert model.config == config
    images, text = torch.randn(1, 3, 64, 64), torch.tensor([[298, 5, 299]])
    with torch.no_grad():
        torch.testing.assert_close(model(images, text)[0], trained.eval()(images, text)[0])


def test_data_parallel_prefix_is_removed(tmp_path):
    trained = CLIP(TINY)
    path = tmp_path / "ddp.pt"
    torch.save({"state_dict": {"module." + k: v for k, v in trained.state_dict().items()}}, path)
    model, _ = load(str(path), device="cpu")
    assert torch.equal(model.logit_scale, trained.logit_scale)


def test_corrupt_file_is_a_clear_error(tmp_path):
    path = tmp_path / "garbage.pt"
    path.write_bytes(bytes(range(256)) * 100)
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load(str(path), device="cpu")


@pytest.mark.parametrize("fmt", ["torchscript", "state_dict"])
def test_truncated_file_is_a_clear_error(openai_checkpoint, tmp_path, fmt):
    whole = openai_checkpoint(TINY, fmt=fmt).read_bytes()
    path = tmp_path / "half.pt"
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load(str(path), device="cpu")


def test_a_file_that_is_not_a_state_dict_is_refused(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([1, 2, 3], path)
    with pytest.raises(CheckpointError, match="not a state dict"):
        load(str(path), device="cpu")


def test_course_config_that_does_not_match_the_tensors_names_the_differences(tmp_path):
    path = tmp_path / "mismatch.pt"
    torch.save({"model": CLIP(TINY).state_dict(), "model_config": CLIPConfig.preset("small").to_dict()}, path)
    with pytest.raises(ArchitectureMismatchError, match="shape mismatches"):
        load(str(path), device="cpu")


def _serve_checkpoint(openai_checkpoint, http_server, tmp_path, sha256=None):
    """Put a tiny checkpoint at http://127.0.0.1:PORT/<sha256>/ViT-B-32.pt; return its URL and bytes."""
    data = openai_checkpoint(TINY, fmt="torchscript").read_bytes()
    sha256 = sha256 or hashlib.sha256(data).hexdigest()
    (tmp_path / "www" / sha256).mkdir(parents=True)
    (tmp_path / "www" / sha256 / "ViT-B-32.pt").write_bytes(data)
    return f"{http_server(tmp_path / 'www')}/{sha256}/ViT-B-32.pt", data


def test_released_name_downloads_once_into_download_root(openai_checkpoint, http_server, tmp_path, monkeypatch):
    url, data = _serve_checkpoint(openai_checkpoint, http_server, tmp_path)
    monkeypatch.setitem(openai_weights._MODELS, "ViT-B/32", url)
    model, _ = load("ViT-B/32", device="cpu", download_root=str(tmp_path / "cache"))
    assert (tmp_path / "cache" / "ViT-B-32.pt").read_bytes() == data
    assert model.config == TINY


def test_checksum_mismatch_is_an_error_and_leaves_no_complete_looking_file(
        openai_checkpoint, http_server, tmp_path, monkeypatch):
    url, _ = _serve_checkpoint(openai_checkpoint, http_server, tmp_path, sha256="0" * 64)
    monkeypatch.setitem(openai_weights._MODELS, "ViT-B/32", url)
    cache = tmp_path / "cache"
    with pytest.raises(ChecksumError, match="0000000000"):
        load("ViT-B/32", device="cpu", download_root=str(cache))
    assert not (cache / "ViT-B-32.pt").exists()
    assert not (cache / "ViT-B-32.pt.part").exists()

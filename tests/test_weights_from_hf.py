"""Hugging Face CLIP folders, files and hub ids load into the course's model with the same outputs.

Random tiny ``transformers.CLIPModel``s, saved with ``save_pretrained``, are
the references: our features must match ``get_image_features`` /
``get_text_features`` within 1e-5 (relative) for the same pixels and ids.
"""
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

transformers = pytest.importorskip("transformers", reason="transformers is not installed (the references extra)")
pytest.importorskip("safetensors", reason="safetensors is not installed (the references extra)")

from clip_from_scratch.convert import hf_to_openai, openai_to_hf  # noqa: E402
from clip_from_scratch.openai_weights import CheckpointError, load  # noqa: E402

VOCAB = 300


def tiny_hf_model(seed=0, eos_token_id=VOCAB - 1, text_act="quick_gelu", **vision):
    torch.manual_seed(seed)
    text = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                max_position_embeddings=20, bos_token_id=VOCAB - 2, eos_token_id=eos_token_id, pad_token_id=VOCAB - 1,
                hidden_act=text_act)
    vision = dict(dict(image_size=32, patch_size=8, hidden_size=48, intermediate_size=192, num_hidden_layers=2,
                       num_attention_heads=3), **vision)
    config = transformers.CLIPConfig(text_config=text, vision_config=vision, projection_dim=40)
    model = transformers.CLIPModel(config).eval()
    with torch.no_grad():   # HF initialises LayerNorms to the identity and biases to 0: make every tensor matter
        for name, tensor in model.named_parameters():
            if name.endswith("bias") or "norm" in name or "layrnorm" in name:
                tensor.add_(0.1 * torch.randn_like(tensor))
    return model


def captions(batch=4, length=20):
    generator = torch.Generator().manual_seed(1)
    ids = torch.zeros(batch, length, dtype=torch.long)
    for row, n in enumerate([3, 7, 12, 18][:batch]):
        ids[row, 0] = VOCAB - 2
        ids[row, 1:n + 1] = torch.randint(1, VOCAB - 2, (n,), generator=generator)
        ids[row, n + 1] = VOCAB - 1
    return ids


def hf_features(model, pixels, ids):
    with torch.no_grad():
        image = model.get_image_features(pixel_values=pixels)
        text = model.get_text_features(input_ids=ids)
    # transformers 5 returns an output object (features in pooler_output); 4.x returned the tensor
    return [getattr(out, "pooler_output", out) for out in (image, text)]


def assert_same_features(ours, hf_model, pixels, ids):
    with torch.no_grad():
        got = ours.encode_image(pixels), ours.encode_text(ids)
    for mine, expected in zip(got, hf_features(hf_model, pixels, ids)):
        assert_close_relative(mine, expected)


def assert_close_relative(got, expected, tolerance=1e-5):
    """Within ``tolerance`` of the largest feature's size (a relative error that tiny values cannot inflate)."""
    error = (got - expected).abs().max().item() / expected.abs().max().item()
    assert got.shape == expected.shape and error <= tolerance, f"relative error {error:.2e}"


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    model = tiny_hf_model()
    folder = tmp_path_factory.mktemp("hf") / "tiny-clip"
    model.save_pretrained(folder)
    return model, folder


def test_a_save_pretrained_folder_loads_with_the_same_features(saved):
    hf_model, folder = saved
    assert (folder / "model.safetensors").is_file()
    ours, preprocess = load(str(folder), device="cpu")
    assert ours.config.transformer_heads == 4 and ours.config.vision_heads == 3   # from config.json, not width // 64
    assert ours.config.image_resolution == 32 and ours.config.context_length == 20
    pixels = torch.randn(3, 3, 32, 32)
    assert_same_features(ours, hf_model, pixels, captions())
    torch.testing.assert_close(ours.logit_scale, hf_model.logit_scale)


def test_a_pytorch_model_bin_folder_loads_too(saved, tmp_path):
    hf_model, folder = saved
    (tmp_path / "config.json").write_bytes((folder / "config.json").read_bytes())
    torch.save(hf_model.state_dict(), tmp_path / "pytorch_model.bin")
    ours, _ = load(str(tmp_path), device="cpu")
    assert_same_features(ours, hf_model, torch.randn(2, 3, 32, 32), captions())


def test_legacy_eos_token_id_2_pools_at_argmax_like_ours(tmp_path):
    hf_model = tiny_hf_model(seed=3, eos_token_id=2)   # configs saved before transformers PR #24773
    hf_model.save_pretrained(tmp_path)
    ours, _ = load(str(tmp_path), device="cpu")
    assert_same_features(ours, hf_model, torch.randn(2, 3, 32, 32), captions())


def test_the_key_map_round_trips_and_splits_qkv_in_order(saved):
    hf_model, _ = saved
    hf = {k: v for k, v in hf_model.state_dict().items() if not k.endswith("position_ids")}
    ours = hf_to_openai(hf)
    fused = ours["transformer.resblocks.1.attn.in_proj_weight"]                # [3 * 64, 64]
    assert torch.equal(fused[64:128], hf["text_model.encoder.layers.1.self_attn.k_proj.weight"])
    assert torch.equal(ours["visual.proj"], hf["visual_projection.weight"].t())
    back = openai_to_hf(ours)
    assert set(back) == set(hf) and all(torch.equal(back[k], hf[k]) for k in hf)


def test_a_gelu_model_like_laions_loads_with_the_same_features(tmp_path):
    hf_model = tiny_hf_model(seed=4, text_act="gelu", hidden_act="gelu")
    hf_model.save_pretrained(tmp_path)
    ours, _ = load(str(tmp_path), device="cpu")
    assert ours.config.activation == "gelu"
    assert_same_features(ours, hf_model, torch.randn(2, 3, 32, 32), captions())


def test_an_activation_we_do_not_compute_is_refused_in_one_line(tmp_path):
    tiny_hf_model(text_act="gelu_new", hidden_act="gelu_new").save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="activation 'gelu_new'.*QuickGELU"):
        load(str(tmp_path), device="cpu")


def test_a_folder_without_weights_says_what_it_expected(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="without CLIP weights: expected model.safetensors"):
        load(str(tmp_path), device="cpu")


# --- hub ids, from a pre-filled cache, offline -------------------------------------------------

def _prefill_hub_cache(cache, repo_id, files):
    """The hub cache's layout: models--owner--name/{refs/main, snapshots/<commit>/...}."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for path in files:
        shutil.copy(path, snapshot / path.name)
    return snapshot


def test_a_hub_id_loads_from_a_prefilled_cache_offline(saved, tmp_path):
    pytest.importorskip("huggingface_hub", reason="huggingface_hub is not installed (the hub extra)")
    hf_model, folder = saved
    cache = tmp_path / "hub"
    _prefill_hub_cache(cache, "someone/tiny-clip", [folder / "config.json", folder / "model.safetensors"])
    pixels, ids = torch.randn(2, 3, 32, 32), captions()
    torch.save({"pixels": pixels, "ids": ids}, tmp_path / "inputs.pt")
    script = f"""
import torch, clip_from_scratch as clip
model, _ = clip.load("someone/tiny-clip", device="cpu")
inputs = torch.load({str(tmp_path / 'inputs.pt')!r})
with torch.no_grad():
    torch.save([model.encode_image(inputs["pixels"]), model.encode_text(inputs["ids"])], {str(tmp_path / 'out.pt')!r})
"""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "HF_HOME": str(tmp_path / "home"),
           "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    for mine, expected in zip(torch.load(tmp_path / "out.pt"), hf_features(hf_model, pixels, ids)):
        assert_close_relative(mine, expected)


def test_a_hub_id_missing_from_the_offline_cache_is_one_line(tmp_path, monkeypatch):
    hub = pytest.importorskip("huggingface_hub", reason="huggingface_hub is not installed (the hub extra)")
    monkeypatch.setattr(hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(CheckpointError, match="could not be fetched from the Hugging Face hub"):
        load("nobody/no-such-clip", device="cpu", download_root=str(tmp_path))


def test_a_malicious_pytorch_model_bin_is_refused_and_never_run(saved, tmp_path):
    _, folder = saved
    marker = tmp_path / "marker"

    class RunsCode:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (tmp_path / "config.json").write_bytes((folder / "config.json").read_bytes())
    torch.save({"text_model.embeddings.token_embedding.weight": torch.zeros(2), "x": RunsCode()},
               tmp_path / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="could not read"):
        load(str(tmp_path), device="cpu")
    assert not marker.exists()
    torch.load(tmp_path / "pytorch_model.bin", weights_only=False)   # the file really runs code when unpickled
    assert marker.exists()


def test_zeroshot_weights_takes_an_hf_folder(tmp_path, capsys):
    from clip_from_scratch.cli import main
    torch.manual_seed(0)
    text = dict(vocab_size=49408, hidden_size=64, intermediate_size=256, num_hidden_layers=1, num_attention_heads=2,
                max_position_embeddings=20)
    vision = dict(image_size=32, patch_size=8, hidden_size=64, intermediate_size=256, num_hidden_layers=1,
                  num_attention_heads=2)
    transformers.CLIPModel(transformers.CLIPConfig(text_config=text, vision_config=vision, projection_dim=32)
                           ).save_pretrained(tmp_path / "hf")
    code = main(["zeroshot", "--weights", str(tmp_path / "hf"), "--dataset", "shapes", "--limit", "30",
                 "--templates", "single", "--device", "cpu", "--output", str(tmp_path / "out.json")])
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "out.json").is_file()


def test_an_older_configs_text_config_dict_wins_as_in_transformers(saved, tmp_path):
    hf_model, folder = saved
    config = json.loads((folder / "config.json").read_text())
    config["text_config_dict"] = {**config["text_config"]}               # the real values (4 heads) ...
    config["text_config"] = {**config["text_config"], "num_attention_heads": 1}   # ... and a stale copy
    (tmp_path / "config.json").write_text(json.dumps(config))
    shutil.copy(folder / "model.safetensors", tmp_path / "model.safetensors")
    ours, _ = load(str(tmp_path), device="cpu")
    assert ours.config.transformer_heads == 4
    assert_same_features(ours, hf_model, torch.randn(1, 3, 32, 32), captions())


def test_an_mlp_of_another_width_is_refused_in_one_line(tmp_path):
    tiny_hf_model(intermediate_size=96).save_pretrained(tmp_path)       # the vision MLP 2 x width, not 4 x
    with pytest.raises(CheckpointError, match="vision MLP is 96 wide"):
        load(str(tmp_path), device="cpu")


def test_a_sharded_save_pretrained_folder_loads_through_its_index(saved, tmp_path):
    hf_model, _ = saved
    hf_model.save_pretrained(tmp_path, max_shard_size="100KB")
    assert (tmp_path / "model.safetensors.index.json").is_file() and not (tmp_path / "model.safetensors").exists()
    ours, _ = load(str(tmp_path), device="cpu")
    assert_same_features(ours, hf_model, torch.randn(1, 3, 32, 32), captions())

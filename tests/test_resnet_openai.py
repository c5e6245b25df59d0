"""CLIP's ResNet models built here compute what openai/clip computes, from the same file.

As in test_model_openai.py: random weights are written the way OpenAI ships
them (float16; a TorchScript archive or a plain state dict), with random
batch-norm gains and measured statistics so every block matters; the file is
loaded with ``clip_from_scratch.load`` and with openai/clip's ``build_model``
(made float32, as ``clip.load`` does on a CPU); image features, text
features and both logit matrices agree to 1e-5 relative.
"""
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from seed_example import run_seed_example
from test_model_openai import compare_with_openai

from clip_from_scratch import load, openai_weights
from clip_from_scratch.model import CLIP, PRESETS, CLIPConfig
from clip_from_scratch.transforms import eval_transform

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # clip-anytorch imports the deprecated pkg_resources
    import clip as openai_clip
    from clip.clip import _transform as openai_transform

RESNETS = ["RN50", "RN101", "RN50x4", "RN50x16", "RN50x64"]


def test_rn50_torchscript_file_gives_openai_outputs(openai_checkpoint, openai_reference, random_captions):
    path = openai_checkpoint("RN50", fmt="torchscript")
    compare_with_openai(path, openai_reference, random_captions, n_images=1)


# Small ResNets that differ from the released ones in every hyper-parameter.
ODD_RESNETS = {
    # one block per stage; width 40 (not a power of two): a 1280-wide pool with 20 heads; 96 px -> a 3 x 3 grid
    "one-block-width40-res96": CLIPConfig(embed_dim=48, image_resolution=96, vision_layers=(1, 1, 1, 1),
                                          vision_width=40, context_length=20, vocab_size=500,
                                          transformer_width=128, transformer_heads=2, transformer_layers=1),
    # uneven stages; 160 px -> a 5 x 5 grid; 768-wide pool with 12 heads
    "uneven-stages-width24-res160": CLIPConfig(embed_dim=32, image_resolution=160, vision_layers=(2, 1, 3, 1),
                                               vision_width=24, context_length=16, vocab_size=300,
                                               transformer_width=64, transformer_heads=1, transformer_layers=2),
}


@pytest.mark.parametrize("fmt", ["torchscript", "state_dict"])
@pytest.mark.parametrize("name", list(ODD_RESNETS))
def test_odd_resnets_give_openai_outputs(name, fmt, openai_checkpoint, openai_reference, random_captions):
    path = openai_checkpoint(ODD_RESNETS[name], fmt=fmt)
    compare_with_openai(path, openai_reference, random_captions)


def test_state_dict_with_every_tensor_float16_gives_openai_outputs(openai_checkpoint, openai_reference,
                                                                   random_captions, tmp_path):
    """Batch-norm statistics in float16 too (OpenAI's converter leaves them float32; others may not)."""
    source = openai_checkpoint(ODD_RESNETS["one-block-width40-res96"], fmt="state_dict")
    state_dict = torch.load(source, map_location="cpu")
    half = {k: v.half() if v.is_floating_point() else v for k, v in state_dict.items()}
    assert half["visual.bn1.running_var"].dtype == torch.float16
    torch.save(half, tmp_path / "all_half.pt")
    compare_with_openai(tmp_path / "all_half.pt", openai_reference, random_captions)


def test_architecture_is_read_off_the_file(openai_checkpoint):
    config = ODD_RESNETS["uneven-stages-width24-res160"]
    model, preprocess = load(str(openai_checkpoint(config, fmt="state_dict")), device="cpu")
    assert model.config == config and model.config.is_resnet
    assert model.visual.attnpool.heads == 12 and model.visual.grid_size == 5
    assert len(model.visual.layer3) == 3


@pytest.mark.parametrize("name", RESNETS)
def test_released_architectures_have_openais_tensor_names_and_shapes(name):
    """All five presets, built on the meta device (shapes only: RN50x64 would take 1.7 GB)."""
    config = CLIPConfig.preset(name)
    kwargs = {k: v for k, v in config.to_dict().items() if k not in ("vision_heads", "activation")}
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = openai_clip.model.CLIP(**kwargs).state_dict()
        ours = CLIP(config).state_dict()
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in theirs.items()}
    assert CLIPConfig.from_state_dict(theirs) == config
    assert config.vision_heads == config.vision_width * 32 // 64


def test_released_architectures_have_the_published_sizes():
    """Image-tower parameters (millions), as counted from OpenAI's RN50/RN101 files and the paper's table."""
    with torch.device("meta"):
        sizes = {name: sum(p.numel() for p in CLIP(name).visual.parameters()) / 1e6 for name in ("RN50", "RN101")}
    assert round(sizes["RN50"], 1) == 38.3 and round(sizes["RN101"], 1) == 56.3


def test_resnet_downloads_are_checked_against_openais_sha256s():
    published = {  # REFERENCE.md, "CLIP's ResNet image encoders" and "Released checkpoints"
        "RN50": "afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762",
        "RN101": "8fa8567bab74a42d41c5915025a8e4538c3bdbe8804a470a72f30b0d94fab599",
        "RN50x4": "7e526bd135e493cef0776de27d5f42653e6b4c8bf9e0f653bb11773263205fdd",
        "RN50x16": "52378b407f34354e150460fe41077663dd5b39c54cd0bfd2b27167a4a06ec9aa",
        "RN50x64": "be1cfb55d75a9666199fb2206c106743da0f6468c9d327f3e0d0a543a9919d9c",
    }
    for name, sha256 in published.items():
        url = openai_weights._MODELS[name]
        assert url == f"https://openaipublic.azureedge.net/clip/models/{sha256}/{name}.pt"
        assert openai_weights.checkpoint_path(name, "/cache").name == f"{name}.pt"


def test_loaded_resnet_uses_stored_batch_norm_statistics(openai_checkpoint):
    """In eval mode an image's features do not depend on the rest of the batch."""
    model, _ = load(str(openai_checkpoint(ODD_RESNETS["one-block-width40-res96"], fmt="torchscript")), device="cpu")
    assert not any(m.training for m in model.modules())
    images = torch.randn(3, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(model.encode_image(images[:1]), model.encode_image(images)[:1],
                                   rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", RESNETS)
def test_preprocessing_equals_openais_at_each_resnet_resolution(name):
    resolution = CLIPConfig.preset(name).image_resolution
    rng = np.random.default_rng(resolution)
    for size in ((517, 389), (resolution, resolution), (90, 700)):
        image = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
        ours, theirs = eval_transform(resolution)(image), openai_transform(resolution)(image)
        assert ours.shape == (3, resolution, resolution)
        assert torch.equal(ours, theirs), f"{size} at {resolution} px differs"
    assert {PRESETS[n].image_resolution for n in RESNETS} == {224, 288, 384, 448}


def test_seed_example_runs_with_rn50(openai_checkpoint, openai_reference, fake_cifar, monkeypatch,
                                     tmp_path, capsys):
    """The seed's example with ``clip.load("RN50")``: a small random ResNet served under RN50's name
    prints the same top-5 as openai/clip (seed_example.py)."""
    config = CLIPConfig(embed_dim=32, image_resolution=64, vision_layers=(1, 1, 1, 1), vision_width=16,
                        context_length=77, vocab_size=49408, transformer_width=64, transformer_heads=1,
                        transformer_layers=1)  # CLIP's vocabulary, so openai/clip's tokenizer fits
    seed_image = np.zeros((32, 32, 3), dtype=np.uint8)
    seed_image[:, :16] = (200, 40, 40)                                # half red, half black
    printed, want = run_seed_example(openai_checkpoint(config, fmt="torchscript"), "RN50", seed_image,
                                     fake_cifar=fake_cifar, openai_reference=openai_reference,
                                     monkeypatch=monkeypatch, tmp_path=tmp_path, capsys=capsys)
    assert printed == want

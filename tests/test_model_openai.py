"""The model built here computes what openai/clip computes, from the same file.

Each test writes random weights the way OpenAI ships them (float16; a
TorchScript archive or a plain state dict), loads that file with
``clip_from_scratch.load`` and with openai/clip's ``build_model`` (converted to
float32, as ``clip.load`` does on a CPU), and compares image features, text
features and both logit matrices to 1e-5 relative.
"""
import pytest
import torch

from clip_from_scratch import load
from clip_from_scratch.model import CLIPConfig


def assert_close(ours, reference, what, tol=1e-5):
    """Largest difference within ``tol`` of the largest reference value."""
    assert ours.shape == reference.shape, f"{what}: shape {ours.shape} vs {reference.shape}"
    error = (ours - reference).abs().max() / reference.abs().max()
    assert error <= tol, f"{what}: relative difference {error:.2e} > {tol:.0e}"


def compare_with_openai(path, reference_builder, captions, n_images=2):
    ours, preprocess = load(str(path), device="cpu")
    reference = reference_builder(path)
    assert ours.dtype == torch.float32 and not ours.training
    config = ours.config
    torch.manual_seed(1)
    images = torch.randn(n_images, 3, config.image_resolution, config.image_resolution)
    text = captions(3, context_length=config.context_length, vocab_size=config.vocab_size,
                    lengths=[1, config.context_length // 3, config.context_length - 2])  # incl. a full-length caption
    with torch.no_grad():
        assert_close(ours.encode_image(images), reference.encode_image(images), "image features")
        assert_close(ours.encode_text(text), reference.encode_text(text), "text features")
        for ours_logits, reference_logits, name in zip(ours(images, text), reference(images, text),
                                                       ["logits_per_image", "logits_per_text"]):
            assert_close(ours_logits, reference_logits, name)


def test_vit_b32_torchscript_file_gives_openai_outputs(openai_checkpoint, openai_reference, random_captions):
    path = openai_checkpoint("ViT-B/32", fmt="torchscript")
    compare_with_openai(path, openai_reference, random_captions, n_images=1)


# Small architectures that differ from the released ones in every hyper-parameter.
ODD_CONFIGS = {
    "3-head-vision-grid4-ctx33": CLIPConfig(embed_dim=40, image_resolution=48, vision_layers=3, vision_width=192,
                                            vision_patch_size=12, context_length=33, vocab_size=1000,
                                            transformer_width=128, transformer_heads=2, transformer_layers=1),
    "1-head-vision-patch5-ctx10": CLIPConfig(embed_dim=24, image_resolution=30, vision_layers=1, vision_width=64,
                                             vision_patch_size=5, context_length=10, vocab_size=50,
                                             transformer_width=256, transformer_heads=4, transformer_layers=3),
}


@pytest.mark.parametrize("fmt", ["torchscript", "state_dict"])
@pytest.mark.parametrize("name", list(ODD_CONFIGS))
def test_odd_architectures_give_openai_outputs(name, fmt, openai_checkpoint, openai_reference, random_captions):
    path = openai_checkpoint(ODD_CONFIGS[name], fmt=fmt)
    compare_with_openai(path, openai_reference, random_captions)


def test_architecture_is_read_off_the_file(openai_checkpoint):
    config = ODD_CONFIGS["3-head-vision-grid4-ctx33"]
    model, preprocess = load(str(openai_checkpoint(config, fmt="state_dict")), device="cpu")
    assert model.config == config
    assert model.visual.transformer.resblocks[0].attn.heads == 3

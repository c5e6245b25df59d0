"""Precision: a half model still works (LayerNorm under fp16 weights).

And load() on a GPU halves what openai/clip halves.
"""
import pytest
import torch

from clip_from_scratch.model import CLIP, NON_PARAMETER_KEYS, CLIPConfig
from clip_from_scratch.openai_weights import half_like_openai, load

TINY = CLIPConfig.preset("tiny", vocab_size=500)


def _inputs():
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    text = torch.tensor([[498, 5, 6, 499], [498, 7, 499, 0]])
    return images, text


@pytest.mark.parametrize("convert", ["half", "half_like_openai"])
def test_a_half_model_gives_the_float32_features_within_fp16_tolerance(convert):
    torch.manual_seed(0)
    model = CLIP(TINY).eval()
    images, text = _inputs()
    with torch.no_grad():
        image32, text32 = model.encode_image(images), model.encode_text(text)
        model = model.half() if convert == "half" else half_like_openai(model)
        image16, text16 = model.encode_image(images), model.encode_text(text)
    assert image16.dtype == text16.dtype == torch.float16
    assert torch.allclose(image16.float(), image32, rtol=2e-2, atol=5e-3)
    assert torch.allclose(text16.float(), text32, rtol=2e-2, atol=5e-3)


def test_half_like_openai_halves_exactly_the_tensors_openai_clip_halves(openai_checkpoint):
    from conftest import openai_clip_module
    state_dict = torch.load(openai_checkpoint(TINY, fmt="state_dict"))
    reference = openai_clip_module().build_model(dict(state_dict)).state_dict()   # convert_weights applied
    model = half_like_openai(CLIP(CLIPConfig.from_state_dict(state_dict)))
    ours = {k: v.dtype for k, v in model.state_dict().items()}
    theirs = {k: v.dtype for k, v in reference.items() if k not in NON_PARAMETER_KEYS}
    assert ours == theirs
    assert ours["visual.conv1.weight"] == torch.float16 and ours["ln_final.weight"] == torch.float32


def test_load_on_the_cpu_is_float32(openai_checkpoint):
    model, _ = load(str(openai_checkpoint(TINY, fmt="torchscript")), device="cpu")
    assert model.dtype == torch.float32 and all(p.dtype == torch.float32 for p in model.parameters())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_load_on_cuda_keeps_float16_like_openai_clip_and_agrees_with_the_cpu(openai_checkpoint):
    path = str(openai_checkpoint(TINY, fmt="torchscript"))
    cpu_model, _ = load(path, device="cpu")
    gpu_model, _ = load(path, device="cuda")
    assert gpu_model.dtype == torch.float16 and gpu_model.logit_scale.dtype == torch.float32
    images, text = _inputs()
    with torch.no_grad():
        on_gpu = gpu_model.encode_image(images.cuda()).float().cpu()
        on_cpu = cpu_model.encode_image(images)
        assert torch.allclose(on_gpu, on_cpu, rtol=2e-2, atol=5e-3)
        assert torch.allclose(gpu_model.encode_text(text.cuda()).float().cpu(), cpu_model.encode_text(text),
                              rtol=2e-2, atol=5e-3)

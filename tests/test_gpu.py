"""The GPU paths: autocast training steps, a half model, a short pretrain run. Skipped without CUDA.

CI has no GPU; these run wherever CUDA is available (the project's lent GPU
machine runs them and the results go into the issue notes).
"""
import json
import math

import pytest
import torch

from clip_from_scratch.bpe import train_bpe
from clip_from_scratch.cli import main
from clip_from_scratch.data.pairs import ImageCaptionPairs
from clip_from_scratch.model import CLIP
from clip_from_scratch.train import FeaturesForLoss, TrainConfig, batch_loss, make_batch, make_optimizer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

CONFIG = dict(num_images=64, batch_size=32, image_resolution=32, patch_size=8, width=64, heads=2, layers=2,
              embed_dim=64, context_length=16, crop_scale=0.7)


def _step(amp_dtype):
    torch.manual_seed(0)
    config = TrainConfig(**CONFIG)
    device = torch.device("cuda")
    captions = [f"a {c} thing number {i}." for i, c in enumerate(["red", "green", "blue", "pink"] * 16)]
    pairs = ImageCaptionPairs(torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8), [[c] for c in captions])
    tokenizer = train_bpe(captions, 50)
    tokens = pairs.tokenize(tokenizer, config.context_length)
    model = CLIP(config.model_config(tokenizer.vocab_size)).to(device)
    optimizer = make_optimizer(model, config, device)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    batch = make_batch(0, config, pairs.images.to(device), tokens, device)
    loss = batch_loss(FeaturesForLoss(model), batch, amp_dtype)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss, scaler


@pytest.mark.parametrize("amp_dtype", [torch.bfloat16, torch.float16])
def test_an_autocast_training_step_has_a_float32_finite_loss(amp_dtype):
    if amp_dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bfloat16")
    loss, scaler = _step(amp_dtype)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert scaler.is_enabled() == (amp_dtype == torch.float16), "fp16 needs loss scaling, bf16 does not"
    if scaler.is_enabled():
        assert scaler.get_scale() > 0


def test_a_half_model_on_cuda_matches_the_float32_model():
    torch.manual_seed(0)
    model = CLIP(TrainConfig(**CONFIG).model_config(300)).eval()
    images = torch.randn(2, 3, 32, 32)
    tokens = torch.tensor([[298, 5, 299], [298, 6, 299]])
    with torch.no_grad():
        want_image, want_text = model.encode_image(images), model.encode_text(tokens)
        model = model.cuda().half()
        features, text = model.encode_image(images.cuda().half()), model.encode_text(tokens.cuda())
    assert features.dtype == text.dtype == torch.float16
    torch.testing.assert_close(features.float().cpu(), want_image, atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(text.float().cpu(), want_text, atol=2e-2, rtol=2e-2)


def test_a_short_pretrain_run_on_cuda(tmp_path):
    assert main(["pretrain", "--out", str(tmp_path), "--device", "cuda", "--steps", "30", "--num-images", "512",
                 "--batch-size", "64", "--no-progress"]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["device"].startswith("cuda") and metrics["amp"] in ("bfloat16", "float16")
    assert math.isfinite(metrics["final_loss"])
    held_out = metrics["zeroshot_top1"] * metrics["config"]["zeroshot_images"] / 100
    assert held_out == pytest.approx(round(held_out), abs=1e-3), "a percentage of whole held-out images"

"""The model's own behaviour: names, shapes, presets, the truncation trick, and its errors."""
import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from clip_from_scratch.layers import Attention, LayerNorm, QuickGELU
from clip_from_scratch.model import CLIP, PRESETS, ArchitectureMismatchError, CLIPConfig

TINY = CLIPConfig.preset("tiny")


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return CLIP(TINY).eval()


def test_state_dict_keys_and_shapes_are_openais():
    config = CLIPConfig.preset("tiny", vision_width=192, vision_layers=3)
    ours = CLIP(config).state_dict()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # clip-anytorch imports the deprecated pkg_resources
        from clip.model import CLIP as OpenAICLIP
    kwargs = {k: v for k, v in config.to_dict().items() if k not in ("vision_heads", "activation")}
    theirs = OpenAICLIP(**kwargs).state_dict()
    assert list(ours) == list(theirs)
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}


def test_vit_b32_has_the_released_parameter_count():
    with torch.device("meta"):  # shapes only
        model = CLIP(CLIPConfig.preset("ViT-B/32"))
    assert sum(p.numel() for p in model.parameters()) == 151_277_313
    assert len(model.state_dict()) == 302


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_is_read_back_off_its_state_dict(name):
    with torch.device("meta"):
        model = CLIP(CLIPConfig.preset(name))
    assert CLIPConfig.from_state_dict(model.state_dict()) == PRESETS[name]


def test_preset_accepts_changes_and_rejects_unknown_names():
    assert CLIPConfig.preset("tiny", vocab_size=300).vocab_size == 300
    assert CLIPConfig.preset("ViT-B/32", vision_width=128).vision_heads == 2  # heads follow the new width
    with pytest.raises(ValueError, match="ViT-B/32"):
        CLIPConfig.preset("ViT-Z/99")


def test_config_round_trips_through_a_dict():
    config = CLIPConfig.preset("small", vision_heads=8)
    assert CLIPConfig.from_dict(config.to_dict()) == config


def test_logit_scale_starts_at_one_over_0_07(tiny_model):
    assert math.isclose(tiny_model.logit_scale.exp().item(), 1 / 0.07, rel_tol=1e-6)


def test_init_follows_clip(tiny_model):
    width = TINY.transformer_width
    block = tiny_model.transformer.resblocks[0]
    assert tiny_model.token_embedding.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert tiny_model.positional_embedding.std().item() == pytest.approx(0.01, rel=0.1)
    assert block.attn.in_proj_weight.std().item() == pytest.approx(width ** -0.5, rel=0.05)
    proj_std = width ** -0.5 * (2 * TINY.transformer_layers) ** -0.5
    assert block.mlp.c_proj.weight.std().item() == pytest.approx(proj_std, rel=0.05)


def test_logits_are_scaled_cosine_similarities(tiny_model, random_captions):
    images = torch.randn(3, 3, 64, 64)
    text = random_captions(4)
    with torch.no_grad():
        logits_per_image, logits_per_text = tiny_model(images, text)
        image_features = F.normalize(tiny_model.encode_image(images), dim=-1)
        text_features = F.normalize(tiny_model.encode_text(text), dim=-1)
    assert logits_per_image.shape == (3, 4)
    torch.testing.assert_close(logits_per_text, logits_per_image.t())
    torch.testing.assert_close(logits_per_image, (1 / 0.07) * image_features @ text_features.t())


def test_cutting_the_batch_to_its_longest_caption_is_exact(tiny_model, random_captions):
    text = random_captions(5, lengths=[3, 12, 7, 1, 9])  # longest: sot + 12 + eot = 14 tokens
    with torch.no_grad():
        # The long way: run all 77 positions through the transformer, then pool at end-of-text.
        x = tiny_model.token_embedding(text) + tiny_model.positional_embedding
        x = tiny_model.ln_final(tiny_model.transformer(x))
        full_length = x[torch.arange(5), text.argmax(-1)] @ tiny_model.text_projection
        assert torch.equal(tiny_model.encode_text(text), tiny_model.encode_text(text[:, :14]))
        torch.testing.assert_close(tiny_model.encode_text(text), full_length, rtol=1e-5, atol=1e-5)


def test_a_caption_does_not_depend_on_its_batch_mates(tiny_model, random_captions):
    text = random_captions(2, lengths=[2, 40])
    with torch.no_grad():
        alone = tiny_model.encode_text(text[:1])
        together = tiny_model.encode_text(text)[:1]
    torch.testing.assert_close(alone, together, rtol=1e-5, atol=1e-5)


def test_attention_matches_the_written_out_formula():
    torch.manual_seed(0)
    attention = Attention(width=32, heads=4)
    nn_attention = torch.nn.MultiheadAttention(32, 4, batch_first=True)
    nn_attention.load_state_dict(attention.state_dict())
    x = torch.randn(2, 6, 32)
    mask = torch.full((6, 6), float("-inf")).triu(1)
    with torch.no_grad():
        torch.testing.assert_close(attention(x), nn_attention(x, x, x, need_weights=False)[0])
        torch.testing.assert_close(attention(x, causal=True),
                                   nn_attention(x, x, x, attn_mask=mask, need_weights=False)[0])


def test_layernorm_of_a_half_precision_input_matches_the_float32_result():
    # Values of order 300 in float16: squaring them for the variance (9e4) overflows float16's 65504,
    # so a LayerNorm that computed its statistics in half precision would give inf/nan or a wrong scale.
    torch.manual_seed(0)
    norm = LayerNorm(8)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.5, 0.5)
    x32 = torch.randn(4, 8) * 300
    expected = torch.nn.LayerNorm(8)
    expected.load_state_dict(norm.state_dict())
    with torch.no_grad():
        out16 = norm(x32.half())
        reference = expected(x32.half().float())  # the same half-precision input, normalised in float32
    assert out16.dtype == torch.float16
    assert torch.isfinite(out16).all()
    torch.testing.assert_close(out16.float(), reference, atol=2e-3, rtol=2e-3)  # only float16 rounding of the output


def test_layernorm_output_dtype_follows_the_input_even_with_half_weights():
    norm = LayerNorm(8).half()  # a released checkpoint: float16 weights
    assert norm(torch.randn(2, 8)).dtype == torch.float32
    assert norm(torch.randn(2, 8).half()).dtype == torch.float16
    assert norm(torch.randn(2, 8, dtype=torch.bfloat16)).dtype == torch.bfloat16


def test_quickgelu_has_its_known_values():
    x = torch.tensor([-2.0, -1.0, 0.0, 1.0, 2.0])
    # x * sigmoid(1.702 x), worked out by hand: 1 / (1 + e^-1.702) = 0.845796...
    known = torch.tensor([-0.064341, -0.154204, 0.0, 0.845796, 1.935659])
    torch.testing.assert_close(QuickGELU()(x), known, atol=1e-5, rtol=0)


def test_quickgelu_is_not_gelu_where_activations_live():
    # CLIP's checkpoints were trained with QuickGELU; exact GELU differs by up to ~0.02 for
    # pre-activations of order one, enough to move a released model's embeddings.
    x = torch.linspace(-4, 4, 801)
    gap = (QuickGELU()(x) - torch.nn.GELU()(x)).abs()
    assert 0.015 < gap.max().item() < 0.03
    assert gap[(x.abs() - 2.0).abs() < 0.5].max() > 0.01  # largest around |x| ~ 2, not in the tails
    assert gap[x.abs() > 3.9].max() < 0.01  # and both tend to relu far from zero


@pytest.mark.parametrize("shape", [(2, 3, 32, 32), (2, 1, 64, 64), (2, 4, 64, 64), (3, 64, 64), (2, 3, 64, 48)])
def test_images_of_the_wrong_size_or_channels_are_refused(tiny_model, shape):
    with pytest.raises(ValueError, match=r"\[batch, 3, 64, 64\].*preprocess"):
        tiny_model.encode_image(torch.randn(*shape))


@pytest.mark.parametrize("bad_id", [-1, 49408, 10**6])
def test_token_ids_outside_the_vocabulary_are_refused(tiny_model, random_captions, bad_id):
    text = random_captions(2)
    text[1, 3] = bad_id
    with pytest.raises(ValueError, match=r"\[0, 49408\)"):
        tiny_model.encode_text(text)


def test_captions_longer_than_the_context_are_refused(tiny_model):
    with pytest.raises(ValueError, match="context length is 77"):
        tiny_model.encode_text(torch.zeros(1, 78, dtype=torch.long))


def test_float_token_ids_are_refused(tiny_model):
    with pytest.raises(TypeError, match="integer token ids"):
        tiny_model.encode_text(torch.zeros(1, 77))


def test_state_dict_of_another_architecture_names_what_differs(tiny_model):
    other = CLIP(CLIPConfig.preset("tiny", vision_layers=3, transformer_width=192)).state_dict()
    del other["logit_scale"]
    with pytest.raises(ArchitectureMismatchError) as error:
        tiny_model.load_state_dict(other)
    message = str(error.value)
    assert "missing from the checkpoint (1):\n    logit_scale" in message
    assert "unexpected in the checkpoint" in message and "visual.transformer.resblocks.2.ln_1.weight" in message
    assert "positional_embedding: checkpoint (77, 192) vs model (77, 128)" in message
    assert "transformer_width=192" in message  # the file's own architecture, read off its shapes


def test_openai_extra_entries_are_ignored_when_loading(tiny_model):
    state_dict = dict(tiny_model.state_dict(), input_resolution=torch.tensor(64), context_length=torch.tensor(77),
                      vocab_size=torch.tensor(49408))
    model = CLIP(TINY)
    result = model.load_state_dict(state_dict)
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert all(torch.equal(model.state_dict()[k], v) for k, v in tiny_model.state_dict().items())
    assert "input_resolution" not in model.state_dict()


def test_one_training_step_lowers_the_loss(random_captions):
    torch.manual_seed(0)
    model = CLIP(CLIPConfig.preset("tiny", vocab_size=1000))
    images, text = torch.randn(4, 3, 64, 64), random_captions(4, vocab_size=1000)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    labels = torch.arange(4)
    losses = []
    for _ in range(3):
        logits_per_image, logits_per_text = model(images, text)
        loss = (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)) / 2
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert all(p.grad is not None for p in model.parameters())


def test_evaluation_mode_restores_the_mode_even_when_the_block_raises():
    from clip_from_scratch.model import evaluation_mode
    model = torch.nn.Sequential(torch.nn.Dropout(), torch.nn.BatchNorm1d(2)).train()
    with pytest.raises(ZeroDivisionError):
        with evaluation_mode(model):
            assert not model.training and not model[1].training
            1 / 0
    assert model.training and model[1].training
    with evaluation_mode(model.eval()):
        pass
    assert not model.training, "a model that was in eval mode stays there"

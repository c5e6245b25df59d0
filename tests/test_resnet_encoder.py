"""The ResNet image encoder on its own: shapes, OpenAI's initialisation, configs, training, and bad input."""
import json
import math

import pytest
import torch
import torch.nn.functional as F

from clip_from_scratch.model import CLIP, CLIPConfig
from clip_from_scratch.resnet_encoder import AttentionPool2d, Bottleneck, ResNetEncoder


@pytest.fixture(scope="module")
def tiny_resnet():
    torch.manual_seed(0)
    return CLIP("tiny-resnet")


def test_a_tuple_of_layers_builds_a_resnet_image_tower(tiny_resnet):
    assert isinstance(tiny_resnet.visual, ResNetEncoder) and tiny_resnet.config.is_resnet
    assert tiny_resnet.dtype == torch.float32
    images = torch.randn(2, 3, 64, 64)
    text = torch.tensor([[49406, 320, 49407], [49406, 321, 49407]])
    logits_per_image, logits_per_text = tiny_resnet(images, text)
    assert logits_per_image.shape == (2, 2) and torch.equal(logits_per_text, logits_per_image.t())


def test_stages_halve_the_grid_and_widen_to_32_times_the_stem():
    resnet = ResNetEncoder(layers=(1, 2, 1, 1), width=8, heads=4, embed_dim=10, image_resolution=64).eval()
    x = torch.randn(1, 3, 64, 64)
    shapes = []
    for name in ("layer1", "layer2", "layer3", "layer4"):
        resnet.get_submodule(name).register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape)))
    assert resnet(x).shape == (1, 10)
    assert shapes == [(1, 32, 16, 16), (1, 64, 8, 8), (1, 128, 4, 4), (1, 256, 2, 2)]


def test_openais_initialisation():
    torch.manual_seed(0)
    resnet = ResNetEncoder(layers=(2, 1, 1, 1), width=32, heads=16, embed_dim=64, image_resolution=64)
    blocks = [m for m in resnet.modules() if isinstance(m, Bottleneck)]
    assert len(blocks) == 5 and all(torch.equal(b.bn3.weight, torch.zeros_like(b.bn3.weight)) for b in blocks)
    assert torch.equal(resnet.bn3.weight, torch.ones(32))  # the stem's last norm is not a block's: gain 1
    pool_width = 32 * 32
    for name in ("q_proj", "k_proj", "v_proj", "c_proj"):
        std = resnet.attnpool.get_submodule(name).weight.std().item()
        assert math.isclose(std, pool_width ** -0.5, rel_tol=0.05), f"{name} std {std}"


def test_a_fresh_block_is_the_identity_on_nonnegative_input():
    """bn3's zero gain: the residual branch adds only bn3's bias (0), so relu(x + 0) = x for x >= 0."""
    block = Bottleneck(16, 4).eval()
    x = torch.rand(2, 16, 5, 5)
    torch.testing.assert_close(block(x), x)


def test_a_strided_block_averages_before_its_shortcut_conv():
    block = Bottleneck(8, 4, stride=2).eval()
    x = torch.randn(1, 8, 6, 6)
    shortcut = block.downsample(x)
    want = block.downsample[2](block.downsample[1](F.avg_pool2d(x, 2)))
    torch.testing.assert_close(shortcut, want)
    assert block(x).shape == (1, 16, 3, 3)


def test_attention_pool_is_one_query_over_mean_and_grid():
    """The same numbers as torch's multi-head attention with the mean token as the only query."""
    torch.manual_seed(0)
    pool = AttentionPool2d(grid_size=3, width=12, heads=3, output_dim=5)
    x = torch.randn(2, 12, 3, 3)
    tokens = torch.cat([x.flatten(2).mean(-1, keepdim=True), x.flatten(2)], -1).permute(2, 0, 1)  # [10, batch, 12]
    tokens = tokens + pool.positional_embedding[:, None]
    want, _ = F.multi_head_attention_forward(
        tokens[:1], tokens, tokens, 12, 3, None,
        torch.cat([pool.q_proj.bias, pool.k_proj.bias, pool.v_proj.bias]), None, None, False, 0.0,
        pool.c_proj.weight, pool.c_proj.bias, use_separate_proj_weight=True, q_proj_weight=pool.q_proj.weight,
        k_proj_weight=pool.k_proj.weight, v_proj_weight=pool.v_proj.weight, need_weights=False)
    torch.testing.assert_close(pool(x), want[0], rtol=1e-5, atol=1e-6)


def test_gradients_reach_every_parameter_once_the_block_gains_move():
    """At step 0 the zero gains block the gradient into each residual branch; bn3's gains get one."""
    def parameters_without_gradient(model):
        model.zero_grad()
        images = torch.randn(4, 3, 64, 64)
        text = torch.tensor([[49406, 320 + i, 49407] for i in range(4)])
        logits, _ = model(images, text)
        F.cross_entropy(logits, torch.arange(4)).backward()
        return {n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0}

    torch.manual_seed(0)
    model = CLIP("tiny-resnet").train()
    blocked = parameters_without_gradient(model)
    assert blocked and all(n.startswith("visual.layer") and ".bn3." not in n and "downsample" not in n
                           for n in blocked), sorted(blocked)
    assert model.visual.bn1.num_batches_tracked.item() == 1  # batch statistics were used and recorded
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("bn3.weight"):
                parameter.fill_(0.1)  # where one optimiser step would take them
    assert parameters_without_gradient(model) == set()


def test_resnet_config_round_trips_through_json():
    config = CLIPConfig.preset("small-resnet", vocab_size=300)
    again = CLIPConfig.from_dict(json.loads(json.dumps(config.to_dict())))  # the tuple comes back a list
    assert again == config and again.vision_layers == (2, 2, 2, 2)


def test_resnet_presets_use_64_channels_per_attention_pool_head():
    for name in ("RN50", "RN50x4", "RN50x64", "tiny-resnet", "small-resnet"):
        config = CLIPConfig.preset(name)
        assert config.vision_heads * 64 == config.vision_width * 32 and config.vision_patch_size is None
    assert CLIPConfig.preset("RN50x4").grid_size == 9


def test_state_dict_without_batch_norm_counters_loads():
    """Some exporters drop num_batches_tracked; it does not change eval-mode outputs."""
    torch.manual_seed(0)
    source = CLIP("tiny-resnet").eval()
    state_dict = {k: v for k, v in source.state_dict().items() if not k.endswith("num_batches_tracked")}
    target = CLIP("tiny-resnet")
    target.load_state_dict(state_dict)
    assert target.visual.layer1[0].bn1.num_batches_tracked.item() == 0
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(target.eval().encode_image(images), source.encode_image(images))


# ----------------------------------------------------------------------------- bad input
def test_resolution_not_divisible_by_32_is_a_clear_error():
    with pytest.raises(ValueError, match="image_resolution=100.*multiple of 32"):
        CLIPConfig.preset("tiny-resnet", image_resolution=100)
    with pytest.raises(ValueError, match="divisible by 32.*got 100; try 96"):
        ResNetEncoder(layers=(1, 1, 1, 1), width=16, heads=8, embed_dim=8, image_resolution=100)


def test_state_dict_mixing_resnet_and_vit_tensors_is_a_clear_error():
    resnet = CLIP("tiny-resnet").state_dict()
    vit = CLIP("tiny").state_dict()
    mixed = {**resnet, **{k: v for k, v in vit.items() if k.startswith("visual.")}}
    with pytest.raises(ValueError, match="mixes the tensors of two image encoders.*visual.proj.*visual.layer1"):
        CLIPConfig.from_state_dict(mixed)


def test_attention_pool_width_not_divisible_by_heads_is_a_clear_error():
    with pytest.raises(ValueError, match=r"32 \* vision_width = 1312 must be divisible by its number of heads \(20\)"):
        CLIPConfig.preset("tiny-resnet", vision_width=41)


def test_wrong_number_of_stages_is_a_clear_error():
    with pytest.raises(ValueError, match="four stages.*got \\(3, 4, 6\\)"):
        CLIPConfig.preset("RN50", vision_layers=(3, 4, 6))


def test_a_vit_config_without_a_patch_size_points_at_the_resnet_form():
    with pytest.raises(ValueError, match="needs a vision_patch_size; for a ResNet give four block counts"):
        CLIPConfig(vision_layers=12, vision_patch_size=None)


def test_images_of_the_wrong_size_are_a_clear_error(tiny_resnet):
    with pytest.raises(ValueError, match=r"\[batch, 3, 64, 64\], got \(1, 3, 96, 96\).*preprocess"):
        tiny_resnet.encode_image(torch.randn(1, 3, 96, 96))
    with pytest.raises(TypeError, match="float"):
        tiny_resnet.encode_image(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))

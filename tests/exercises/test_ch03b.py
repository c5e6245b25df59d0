"""The exercise checks of chapter 03b: right answers pass, typical mistakes get a hint, nothing raises."""
import math

import pytest
import torch
from exercise_contract import contract_tests

from clip_from_scratch.exercises import ch03b
from clip_from_scratch.resnet_encoder import Bottleneck


def avg_pool_2x2(x):
    batch, channels, height, width = x.shape
    return x.reshape(batch, channels, height // 2, 2, width // 2, 2).mean(dim=(3, 5))


def attention_pool(grid, positional_embedding, heads, scale=True, skip_mean=False):
    cells = grid.flatten(2).transpose(1, 2)                                       # [batch, cells, width]
    if skip_mean:
        tokens = cells + positional_embedding[1:]
    else:
        tokens = torch.cat([cells.mean(1, keepdim=True), cells], 1) + positional_embedding
    split = tokens.unflatten(-1, (heads, -1)).transpose(1, 2)                     # [batch, heads, tokens, d]
    scores = split[:, :, :1] @ split.transpose(-2, -1)
    if scale:
        scores = scores / math.sqrt(split.shape[-1])
    return (scores.softmax(-1) @ split).transpose(1, 2).flatten(1)


def bottleneck_parameters(in_channels, planes, stride):
    out = 4 * planes
    convs = in_channels * planes + 9 * planes ** 2 + planes * out
    norms = 2 * (planes + planes + out)
    shortcut = in_channels * out + 2 * out if stride > 1 or in_channels != out else 0
    return convs + norms + shortcut


SOLUTIONS = {
    ch03b.check_pool_tokens: lambda resolution: (resolution // 32) ** 2 + 1,
    ch03b.check_avg_pool_2x2: avg_pool_2x2,
    ch03b.check_attention_pool: attention_pool,
    ch03b.check_bottleneck_parameters: bottleneck_parameters,
}


test_worked_solution_passes, test_placeholder_and_none_say_todo, \
    test_a_function_that_raises_is_reported_not_raised = contract_tests(SOLUTIONS)


@pytest.mark.parametrize("check, mistake, hint", [
    (ch03b.check_pool_tokens, lambda resolution: (resolution // 32) ** 2, "mean token"),
    (ch03b.check_pool_tokens, lambda resolution: (resolution // 16) ** 2 + 1, "total stride is 32"),
    (ch03b.check_avg_pool_2x2, lambda x: x[..., ::2, ::2], "aliases"),
    (ch03b.check_avg_pool_2x2, lambda x: torch.nn.functional.max_pool2d(x, 2), "max pool"),
    (ch03b.check_attention_pool, lambda g, p, h: attention_pool(g, p, h, scale=False), "sqrt(head_width)"),
    (ch03b.check_attention_pool, lambda g, p, h: attention_pool(g, p, 1), "one head"),
    (ch03b.check_attention_pool, lambda g, p, h: attention_pool(g, p, h, skip_mean=True), "FIRST"),
    (ch03b.check_bottleneck_parameters,
     lambda i, p, s: bottleneck_parameters(i, p, s) - (i * 4 * p + 8 * p if s > 1 or i != 4 * p else 0), "shortcut"),
    (ch03b.check_bottleneck_parameters,
     lambda i, p, s: i * p + 9 * p * p + 4 * p * p + (i * 4 * p if s > 1 or i != 4 * p else 0), "batch norms"),
])
def test_typical_mistakes_get_a_hint(check, mistake, hint, capsys):
    assert check(mistake) is False
    out = capsys.readouterr().out
    assert "[NOT YET]" in out and hint in out


@pytest.mark.parametrize("in_channels, planes, stride", [(64, 64, 1), (256, 128, 2), (40, 10, 1), (40, 10, 2)])
def test_the_parameter_count_check_agrees_with_the_package(in_channels, planes, stride):
    block = Bottleneck(in_channels, planes, stride)
    assert ch03b._bottleneck_parameters(in_channels, planes, stride) == sum(p.numel() for p in block.parameters())

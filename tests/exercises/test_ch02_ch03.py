"""The exercise checks of chapters 02 and 03: right answers pass, typical mistakes get a hint, nothing raises."""
import math

import pytest
import torch
from exercise_contract import contract_tests

from clip_from_scratch.exercises import ch02, ch03


def causal_mask(n):
    return torch.full((n, n), float("-inf")).triu(1)


def attention(q, k, v, causal):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if causal:
        scores = scores + causal_mask(q.shape[-2])
    return scores.softmax(-1) @ v


def patchify(images, p):
    b, c, h, w = images.shape
    return images.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5).reshape(b, -1, c * p * p)


SOLUTIONS = {
    ch02.check_causal_mask: causal_mask,
    ch02.check_attention: attention,
    ch02.check_eot_pool: lambda hidden, tokens: hidden[torch.arange(hidden.shape[0]), tokens.argmax(-1)],
    ch02.check_longest_caption: lambda tokens: int(tokens.argmax(-1).max()) + 1,
    ch03.check_sequence_length: lambda resolution, patch: (resolution // patch) ** 2 + 1,
    ch03.check_patchify: patchify,
    ch03.check_patch_embedding: lambda images, weight: patchify(images, weight.shape[-1]) @ weight.flatten(1).T,
    ch03.check_add_class_token: lambda x, cls: torch.cat([cls.expand(x.shape[0], 1, -1), x], dim=1),
}


test_worked_solution_passes, test_placeholder_and_none_say_todo, \
    test_a_function_that_raises_is_reported_not_raised = contract_tests(SOLUTIONS)


@pytest.mark.parametrize("check, mistake, hint", [
    (ch02.check_causal_mask, lambda n: causal_mask(n).T, "transpose"),
    (ch02.check_causal_mask, lambda n: torch.ones(n, n).triu(1).bool(), "additive"),
    (ch02.check_attention, lambda q, k, v, causal: (q @ k.transpose(-2, -1)).softmax(-1) @ v, "sqrt"),
    (ch02.check_eot_pool, lambda hidden, tokens: hidden[:, -1], "largest id"),
    (ch02.check_longest_caption, lambda tokens: int(tokens.argmax(-1).max()), "off by one"),
    (ch03.check_sequence_length, lambda resolution, patch: (resolution // patch) ** 2, "class token"),
    (ch03.check_patchify, lambda images, p: patchify(images, p).flip(-1), "another order"),
    (ch03.check_add_class_token, lambda x, cls: torch.cat([x, cls.expand(x.shape[0], 1, -1)], 1), "FIRST"),
])
def test_typical_mistakes_get_a_hint(check, mistake, hint, capsys):
    assert check(mistake) is False
    out = capsys.readouterr().out
    assert "[NOT YET]" in out and hint in out


def mean_pool(hidden, tokens):
    real = (torch.arange(tokens.shape[1])[None, :] <= tokens.argmax(-1)[:, None]).float()
    return (hidden * real[..., None]).sum(1) / real.sum(1, keepdim=True)


def text_parameters(vocab_size, context_length, width, layers, embed_dim):
    return vocab_size * width + context_length * width + layers * (12 * width ** 2 + 13 * width) + 2 * width \
        + width * embed_dim


def interpolate_positions(table, new_grid):
    g = round((table.shape[0] - 1) ** 0.5)
    grid = torch.nn.functional.interpolate(table[1:].reshape(g, g, -1).permute(2, 0, 1)[None],
                                           size=(new_grid, new_grid), mode="bicubic", align_corners=False)
    return torch.cat([table[:1], grid[0].permute(1, 2, 0).reshape(new_grid * new_grid, -1)])


def text_macs(tokens, width, layers, embed_dim):
    return layers * (tokens * 12 * width ** 2 + 2 * tokens ** 2 * width) + width * embed_dim


def mean_before_end_of_text(hidden, tokens):      # leaves the end-of-text row out
    real = (torch.arange(tokens.shape[1])[None, :] < tokens.argmax(-1)[:, None]).float()
    return (hidden * real[..., None]).sum(1) / real.sum(1, keepdim=True)


TRANSFER_SOLUTIONS = {
    ch02.check_mean_pool: mean_pool,
    ch02.check_text_parameters: text_parameters,
    ch03.check_interpolate_positions: interpolate_positions,
    ch03.check_text_macs: text_macs,
}


@pytest.mark.parametrize("check", list(TRANSFER_SOLUTIONS), ids=lambda f: f.__name__)
def test_transfer_exercise_solution_passes(check, capsys):
    assert check(TRANSFER_SOLUTIONS[check]) is True
    assert "[OK]" in capsys.readouterr().out


@pytest.mark.parametrize("check, mistake, hint", [
    (ch02.check_mean_pool, lambda hidden, tokens: hidden.mean(1), "padding too"),
    (ch02.check_mean_pool, mean_before_end_of_text, "off by one"),
    (ch02.check_text_parameters, lambda v, c, w, layers, e: text_parameters(v, c, w, layers, e) - layers * 9 * w,
     "biases"),
    (ch02.check_text_parameters, lambda v, c, w, layers, e: text_parameters(v, c, w, layers, e) - w * e,
     "text_projection"),
    (ch03.check_interpolate_positions, lambda table, g: torch.cat([table[:1], torch.nn.functional.interpolate(
        table[1:].reshape(1, table.shape[1], 4, 4), size=(g, g), mode="bicubic").reshape(g * g, -1)]), "reshape alone"),
    (ch03.check_interpolate_positions, lambda table, g: torch.cat([torch.zeros_like(table[:1]),
                                                                   interpolate_positions(table, g)[1:]]),
     "class token"),
    (ch03.check_text_macs, lambda t, w, layers, e: text_macs(t, w, layers, e) - w * e, "projection"),
    (ch03.check_text_macs, lambda t, w, layers, e: text_macs(t, w, layers, e) + (t - 1) * w * e, "only one row"),
])
def test_transfer_exercise_mistakes_get_their_hint(check, mistake, hint, capsys):
    assert check(mistake) is False
    out = capsys.readouterr().out
    assert "[NOT YET]" in out and hint in out, out

"""Chapter 04's exercise checks: worked solutions pass, typical mistakes get their hint, nothing raises."""
import math

import pytest
import torch
import torch.nn.functional as F
from exercise_contract import assert_mistake_gets_hint, assert_not_attempted

from clip_from_scratch.exercises import ch04


def clip_loss(image, text, scale):
    logits = scale * image @ text.T
    labels = torch.arange(len(logits))
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def local_loss(image_local, text_local, all_image, all_text, scale, rank):
    labels = torch.arange(len(image_local)) + len(image_local) * rank
    return (F.cross_entropy(scale * image_local @ all_text.T, labels)
            + F.cross_entropy(scale * text_local @ all_image.T, labels)) / 2


def siglip_loss(image, text, scale, bias):
    logits = scale * image @ text.T + bias
    labels = 2 * torch.eye(len(logits)) - 1
    return -F.logsigmoid(labels * logits).sum() / len(logits)


SOLUTIONS = [
    (ch04.check_logits, lambda image, text, scale: scale * image @ text.T),
    (ch04.check_clip_loss, clip_loss),
    (ch04.check_clip_loss, lambda *args: clip_loss(*args).item()),          # a float is a fine loss too
    (ch04.check_local_loss, local_loss),
    (ch04.check_sigmoid_loss, siglip_loss),
    (ch04.check_uniform_loss, math.log(32)),
    (ch04.check_uniform_loss, torch.tensor(math.log(32))),
]


@pytest.mark.parametrize("check, answer", SOLUTIONS)
def test_worked_solution_passes(check, answer, capsys):
    assert check(answer) is True
    assert capsys.readouterr().out.startswith("[OK]")


@pytest.mark.parametrize("check, mistake, hint", [
    (ch04.check_logits, lambda image, text, scale: scale * text @ image.T, "rows are texts"),
    (ch04.check_logits, lambda image, text, scale: image @ text.T, "multiply them by logit_scale"),
    (ch04.check_clip_loss, lambda image, text, scale: F.cross_entropy(scale * image @ text.T,
                                                                       torch.arange(len(image))),
     "only the image->text"),
    (ch04.check_local_loss, lambda il, tl, ai, at, scale, rank: local_loss(il, tl, ai, at, scale, 0), "N_local * rank"),
    (ch04.check_local_loss, lambda il, tl, ai, at, scale, rank: clip_loss(il, tl, scale), "local batch alone"),
    (ch04.check_sigmoid_loss, lambda image, text, scale, bias: siglip_loss(image, text, scale, bias) / len(image),
     "mean over all N² cells"),
    (ch04.check_sigmoid_loss, lambda image, text, scale, bias: siglip_loss(image, text, scale, 0.0), "add logit_bias"),
    (ch04.check_sigmoid_loss, lambda image, text, scale, bias: siglip_loss(image, text, -scale, -bias),
     "wrong way round"),
    (ch04.check_uniform_loss, math.log2(32), "log base 2"),
    (ch04.check_uniform_loss, 1 / 32, "is not it"),
])
def test_typical_mistake_gets_its_hint(check, mistake, hint, capsys):
    assert_mistake_gets_hint(check, mistake, hint, capsys)


@pytest.mark.parametrize("check", [ch04.check_logits, ch04.check_clip_loss, ch04.check_local_loss,
                                   ch04.check_sigmoid_loss])
def test_placeholder_says_todo(check, capsys):
    assert_not_attempted(check, capsys)

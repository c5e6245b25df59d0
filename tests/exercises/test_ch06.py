"""Chapter 06's exercise checks: worked solutions pass, typical mistakes get their hint, nothing raises."""
import pytest
import torch
import torch.nn.functional as F
from exercise_contract import assert_mistake_gets_hint, assert_not_attempted

from clip_from_scratch.exercises import ch06


def build_classifier(encode_text, classnames, templates):
    columns = [F.normalize(F.normalize(encode_text([t.format(c) for t in templates]), dim=-1).mean(0), dim=-1)
               for c in classnames]
    return torch.stack(columns, dim=1)


def topk_accuracy(logits, labels, k):
    return (logits.topk(k, dim=1).indices == labels[:, None]).any(dim=1).float().mean().item()


def per_template_logits(image_features, encode_text, classnames, templates):
    images = F.normalize(image_features, dim=-1)
    return [100 * images @ F.normalize(encode_text([t.format(c) for c in classnames]), dim=-1).T for t in templates]


def probability_ensemble(*args):
    return torch.stack([logits.softmax(-1) for logits in per_template_logits(*args)]).mean(0)


def top_images(image_features, classifier, class_index, k):
    return (F.normalize(image_features, dim=-1) @ classifier[:, class_index]).topk(k).indices


SOLUTIONS = [
    (ch06.check_build_classifier, build_classifier),
    (ch06.check_topk_accuracy, topk_accuracy),
    (ch06.check_topk_accuracy, lambda *args: torch.tensor(topk_accuracy(*args))),   # a 0-d tensor is fine
    (ch06.check_most_confused, lambda confusion, names: ("cat", "fox")),
    (ch06.check_probability_ensemble, probability_ensemble),
    (ch06.check_top_images, top_images),
    (ch06.check_top_images, lambda *args: top_images(*args).tolist()),
]


@pytest.mark.parametrize("check, answer", SOLUTIONS)
def test_worked_solution_passes(check, answer, capsys):
    assert check(answer) is True
    assert capsys.readouterr().out.startswith("[OK]")


@pytest.mark.parametrize("check, mistake, hint", [
    (ch06.check_build_classifier, lambda *args: build_classifier(*args).T, "transpose"),
    (ch06.check_build_classifier,
     lambda encode, names, templates: F.normalize(torch.stack([encode([t.format(c) for t in templates]).mean(0)
                                                               for c in names]), dim=-1).T, "BEFORE averaging"),
    (ch06.check_topk_accuracy, lambda *args: 100 * topk_accuracy(*args), "percentage"),
    (ch06.check_topk_accuracy, lambda logits, labels, k: (logits.argmax(1) == labels).float().mean().item(), "top-3"),
    (ch06.check_topk_accuracy, lambda logits, labels, k: (logits.topk(k, 1).indices == labels[:, None]).any(1),
     "return one number"),
    (ch06.check_most_confused, lambda confusion, names: ("fox", "cat"), "swapped"),
    (ch06.check_most_confused, lambda confusion, names: ("owl", "owl"), "diagonal"),
    (ch06.check_probability_ensemble,
     lambda *args: torch.stack(per_template_logits(*args)).mean(0).softmax(-1), "averaged the logits"),
    (ch06.check_probability_ensemble, lambda *args: torch.stack(per_template_logits(*args)).mean(0),
     "not probabilities"),
    (ch06.check_probability_ensemble,
     lambda *args: torch.stack([(logits / 100).softmax(-1) for logits in per_template_logits(*args)]).mean(0),
     "by 100"),
    (ch06.check_top_images, lambda features, W, c, k: (features @ W[:, c]).topk(k).indices, "normalise the image"),
    (ch06.check_top_images, lambda *args: top_images(*args).flip(0), "wrong order"),
    (ch06.check_top_images,
     lambda features, W, c, k: (F.normalize(features, dim=-1) @ W).topk(k, dim=1).indices[c], "ranked classes"),
])
def test_typical_mistake_gets_its_hint(check, mistake, hint, capsys):
    assert_mistake_gets_hint(check, mistake, hint, capsys)


@pytest.mark.parametrize("check", [check for check, _ in SOLUTIONS])
def test_placeholder_says_todo(check, capsys):
    assert_not_attempted(check, capsys)

"""Chapter 05's exercise checks: solutions pass, typical mistakes get their hint, odd answers never raise."""
import math

import pytest
import torch
from exercise_contract import assert_mistake_gets_hint, contract_tests

from clip_from_scratch.exercises import ch05
from clip_from_scratch.train import TrainConfig, learning_rate


def linear_schedule(step, steps, warmup_steps, peak_lr):
    if step < warmup_steps:
        return peak_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, steps - warmup_steps - 1)
    return peak_lr * (1 - min(1.0, progress))


def decay_names(named_shapes):
    return {name for name, shape in named_shapes
            if len(shape) >= 2 and "embedding" not in name and name != "logit_scale"}


def text_to_image_recall(similarity, caption_to_image, k):
    right = similarity[caption_to_image, torch.arange(similarity.shape[1])]      # [captions]
    return 100 * ((similarity > right).sum(dim=0) < k).float().mean().item()


def max_logit(raw_logit_scale):
    return math.exp(min(max(raw_logit_scale, 0.0), math.log(100)))


SOLUTIONS = {
    ch05.check_linear_schedule: linear_schedule,
    ch05.check_decay_names: decay_names,
    ch05.check_text_to_image_recall: text_to_image_recall,
    ch05.check_max_logit: max_logit,
}


test_worked_solution_passes, test_placeholder_and_none_say_todo, \
    test_a_function_that_raises_is_reported_not_raised = contract_tests(SOLUTIONS)


@pytest.mark.parametrize("check", list(SOLUTIONS), ids=lambda f: f.__name__)
@pytest.mark.parametrize("odd", [1.5, [1, 2], torch.ones(3), "answer", lambda *a: [1, 2], lambda *a: torch.ones(3)],
                         ids=["float", "list", "tensor", "str", "returns-list", "returns-tensor"])
def test_odd_answers_are_reported_not_raised(check, odd, capsys):
    assert check(odd) is False
    assert "[NOT YET]" in capsys.readouterr().out


def cosine_schedule(step, steps, warmup_steps, peak_lr):
    return learning_rate(step, TrainConfig(steps=steps, warmup_steps=warmup_steps, lr=peak_lr))


@pytest.mark.parametrize("check, mistake, hint", [
    (ch05.check_linear_schedule, lambda s, n, w, p: p * s / w if s < w else linear_schedule(s, n, w, p),
     "(step + 1) / warmup_steps"),
    (ch05.check_linear_schedule, lambda s, n, w, p: p * (1 - (s - w) / (n - w)) if s >= w else p * (s + 1) / w,
     "should reach 0"),
    (ch05.check_linear_schedule, lambda s, n, w, p: p * (1 - s / (n - 1)), "Warm up first"),
    (ch05.check_decay_names, lambda named: {n for n, s in named if "embedding" not in n and n != "logit_scale"},
     "1-D"),
    (ch05.check_decay_names, lambda named: {n for n, s in named if len(s) == 2 and "embedding" not in n},
     "convolution kernel"),
    (ch05.check_decay_names, lambda named: {n for n, s in named if len(s) >= 2}, "embedding"),
    (ch05.check_text_to_image_recall, lambda sim, c2i, k: text_to_image_recall(sim, c2i, k) / 100, "percentage"),
    (ch05.check_text_to_image_recall, lambda sim, c2i, k: text_to_image_recall(sim, c2i, k + 1), "off by one"),
    (ch05.check_text_to_image_recall, lambda sim, c2i, k: text_to_image_recall(sim.T, c2i, k), "COLUMN"),
    (ch05.check_max_logit, lambda raw: math.exp(raw), "without the clamp"),
    (ch05.check_max_logit, lambda raw: min(max(raw, 0.0), math.log(100)), "stored as a log"),
    (ch05.check_max_logit, lambda raw: math.exp(min(raw, math.log(100))), "floor"),
])
def test_typical_mistakes_get_a_hint(check, mistake, hint, capsys):
    assert_mistake_gets_hint(check, mistake, hint, capsys)


def test_the_cosine_schedule_is_told_apart_from_the_linear_one(capsys):
    assert ch05.check_linear_schedule(cosine_schedule) is False
    assert "cosine" in capsys.readouterr().out


def test_reference_schedule_matches_the_package_warmup_and_ends_at_zero():
    config = TrainConfig(steps=101, warmup_steps=10, lr=1.0)
    for step in range(10):   # the same warm-up as the package's learning_rate
        assert ch05.reference_linear_schedule(step, 101, 10, 1.0) == learning_rate(step, config)
    assert ch05.reference_linear_schedule(100, 101, 10, 1.0) == 0.0
    assert ch05.reference_linear_schedule(55, 101, 10, 1.0) == pytest.approx(0.5)


def test_reference_decay_rule_matches_make_optimizer():
    from clip_from_scratch.model import CLIP
    from clip_from_scratch.train import make_optimizer
    model = CLIP(TrainConfig().model_config(300))
    optimizer = make_optimizer(model, TrainConfig(), torch.device("cpu"))
    decayed = {id(p) for g in optimizer.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    names = ch05.reference_decay_names([(n, tuple(p.shape)) for n, p in model.named_parameters()])
    assert names == {n for n, p in model.named_parameters() if id(p) in decayed}


def test_reference_recall_matches_the_package_recall_at_k():
    from clip_from_scratch.retrieval import recall_at_k
    generator = torch.Generator().manual_seed(0)
    images, texts = torch.randn(6, 4, generator=generator), torch.randn(12, 4, generator=generator)
    caption_to_image = torch.arange(6).repeat_interleave(2)
    images, texts = torch.nn.functional.normalize(images, dim=-1), torch.nn.functional.normalize(texts, dim=-1)
    package = recall_at_k(images, texts, caption_to_image, ks=(1, 3))["text_to_image"]
    for k in (1, 3):
        assert ch05.reference_text_to_image_recall(images @ texts.T, caption_to_image, k) == pytest.approx(package[k])

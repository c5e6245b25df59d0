"""Checks for chapter 05's exercises (pre-training). Each prints a verdict and never raises.

The checks call the learner's function on their own inputs and compare with
a reference written here (the package's rules); when the answer is off they
name the usual mistake.
"""
from __future__ import annotations

import math

import torch

from . import not_attempted, report

#: The parameters of a small CLIP with a ResNet image encoder (CLIP's "RN50" layout, shrunk): (name, shape).
RESNET_PARAMETERS = [
    ("visual.conv1.weight", (16, 3, 3, 3)), ("visual.bn1.weight", (16,)), ("visual.bn1.bias", (16,)),
    ("visual.layer1.0.conv1.weight", (16, 16, 1, 1)), ("visual.layer1.0.bn1.weight", (16,)),
    ("visual.layer1.0.bn1.bias", (16,)), ("visual.layer1.0.downsample.0.weight", (64, 16, 1, 1)),
    ("visual.layer1.0.downsample.1.weight", (64,)), ("visual.layer1.0.downsample.1.bias", (64,)),
    ("visual.attnpool.positional_embedding", (50, 64)), ("visual.attnpool.q_proj.weight", (64, 64)),
    ("visual.attnpool.q_proj.bias", (64,)), ("visual.attnpool.c_proj.weight", (32, 64)),
    ("visual.attnpool.c_proj.bias", (32,)), ("token_embedding.weight", (600, 32)),
    ("positional_embedding", (32, 32)), ("transformer.resblocks.0.attn.in_proj_weight", (96, 32)),
    ("transformer.resblocks.0.attn.in_proj_bias", (96,)), ("transformer.resblocks.0.ln_1.weight", (32,)),
    ("transformer.resblocks.0.ln_1.bias", (32,)), ("ln_final.weight", (32,)), ("ln_final.bias", (32,)),
    ("text_projection", (32, 32)), ("logit_scale", ()),
]


def _call(function, *args):
    """``(result, None)`` or ``(None, message)``: the learner's code may fail in any way."""
    if not callable(function):
        return None, f"expected a function, got {type(function).__name__}: define it with def and pass its name"
    try:
        return function(*args), None
    except Exception as err:
        return None, f"calling it raised {type(err).__name__}: {err}"


def _number(value):
    """``float(value)`` for a number or one-element tensor/array; None when that is impossible."""
    try:
        if isinstance(value, torch.Tensor):
            return float(value.item()) if value.numel() == 1 else None
        return float(value)
    except (TypeError, ValueError, RuntimeError):
        return None


def _number_answer(function, *args, what: str = "one number", hint: str = ""):
    """``(number, None)``, or ``(None, verdict)`` when there is no number to judge (the learner's code
    failed, still returns ``None``, or returns something that is not one number)."""
    result, error = _call(function, *args)
    if error:
        return None, report(False, "", error + hint)
    if result is None:
        not_attempted(None)
        return None, False
    got = _number(result)
    if got is None:
        return None, report(False, "", f"return {what}, got {type(result).__name__}")
    return got, None


# ----------------------------------------------------------------------------- exercise 1
def reference_linear_schedule(step: int, steps: int, warmup_steps: int, peak_lr: float) -> float:
    """Linear warm-up to ``peak_lr``, then a straight line down to 0 at the last step (``steps - 1``)."""
    if step < warmup_steps:
        return peak_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, steps - warmup_steps - 1)
    return peak_lr * (1 - min(1.0, progress))


def check_linear_schedule(linear_schedule) -> bool:
    """Exercise 1: ``linear_schedule(step, steps, warmup_steps, peak_lr) -> float``."""
    if not_attempted(linear_schedule):
        return False
    for steps, warmup, peak in ((101, 10, 1.0), (50, 5, 3e-4), (1000, 100, 2e-3)):
        for step in sorted({0, 1, warmup - 1, warmup, warmup + 1, steps // 2, steps - 2, steps - 1}):
            want = reference_linear_schedule(step, steps, warmup, peak)
            got, verdict = _number_answer(linear_schedule, step, steps, warmup, peak, what="one number (a float)")
            if verdict is not None:
                return verdict
            if math.isclose(got, want, rel_tol=1e-6, abs_tol=1e-12):
                continue
            where = (f"steps={steps}, warmup_steps={warmup}, peak_lr={peak}, step={step}: "
                     f"got {got:.6g}, expected {want:.6g}")
            if step < warmup and math.isclose(got, peak * step / warmup, rel_tol=1e-6, abs_tol=1e-12):
                return report(False, "", f"{where}. The warm-up starts at 0, so step 0 does not learn at all: "
                                         "use (step + 1) / warmup_steps")
            if step < warmup and math.isclose(got, peak, rel_tol=1e-6):
                return report(False, "", f"{where}. Warm up first: the rate grows linearly over the first "
                                         "warmup_steps steps")
            cosine = peak * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup - 1)))
            if step >= warmup and math.isclose(got, cosine, rel_tol=1e-6, abs_tol=1e-12):
                return report(False, "", f"{where}. That is the cosine of the package; the exercise asks for a "
                                         "straight line from peak_lr down to 0")
            short = peak * (1 - (step - warmup) / max(1, steps - warmup))
            if (step == steps - 1 and got > 0) or (step >= warmup and math.isclose(got, short, rel_tol=1e-6)):
                return report(False, "", f"{where}. The last step (steps - 1) should reach 0: divide the "
                                         "progress by steps - warmup_steps - 1")
            return report(False, "", f"{where}. After the warm-up: peak_lr * (1 - progress), "
                                     "progress = (step - warmup_steps) / (steps - warmup_steps - 1)")
    return report(True, "warm-up, then a straight line to 0 at the last step, at every step checked.", "")


# ----------------------------------------------------------------------------- exercise 2
def reference_decay_names(named_shapes) -> set[str]:
    """The package's rule (``make_optimizer``): weight decay only on weights of 2 or more dimensions,
    and never on embeddings or the logit scale."""
    return {name for name, shape in named_shapes
            if len(shape) >= 2 and "embedding" not in name and name != "logit_scale"}


def check_decay_names(decay_names) -> bool:
    """Exercise 2: ``decay_names([(name, shape), ...]) -> set of the names that get weight decay``."""
    if not_attempted(decay_names):
        return False
    # A second, shuffled list too, so an answer typed out by hand for RESNET_PARAMETERS does not pass.
    shuffled = [RESNET_PARAMETERS[i] for i in torch.randperm(len(RESNET_PARAMETERS),
                                                             generator=torch.Generator().manual_seed(5)).tolist()]
    extra = [("visual.layer2.0.conv2.weight", (32, 32, 3, 3)), ("visual.layer2.0.bn2.bias", (32,)),
             ("visual.class_embedding", (32,))]
    for named_shapes in (list(RESNET_PARAMETERS), shuffled + extra):
        want = reference_decay_names(named_shapes)
        result, error = _call(decay_names, [(name, tuple(shape)) for name, shape in named_shapes])
        if error:
            return report(False, "", error)
        if result is None:
            not_attempted(None)
            return False
        if isinstance(result, (str, torch.Tensor)) or not hasattr(result, "__iter__"):
            return report(False, "", f"return a set (or list) of parameter names, got {type(result).__name__}")
        got = {str(name) for name in result}
        if got == want:
            continue
        wrongly_in, missing = sorted(got - want), sorted(want - got)
        shapes = dict(named_shapes)
        if any(len(shapes.get(n, ())) == 1 for n in wrongly_in):
            one_d = [n for n in wrongly_in if len(shapes.get(n, ())) == 1]
            return report(False, "", f"{one_d[0]} is 1-D (a gain or a bias): decaying it towards 0 only "
                                     "fights normalisation; leave 1-D parameters out")
        if any(len(shapes.get(n, ())) == 4 for n in missing):
            conv = [n for n in missing if len(shapes.get(n, ())) == 4]
            return report(False, "", f"{conv[0]} is a 4-D convolution kernel: a weight like any other, it "
                                     "gets decay (test ndim >= 2, not ndim == 2)")
        if any("embedding" in n for n in wrongly_in):
            return report(False, "", f"{[n for n in wrongly_in if 'embedding' in n][0]} is 2-D but an "
                                     "embedding (a table of vectors, not a map): no decay")
        if "logit_scale" in wrongly_in:
            return report(False, "", "logit_scale is the log of 1/temperature: decaying it would pull the "
                                     "scale to exp(0) = 1 and blur every softmax")
        return report(False, "", f"with decay but should not be: {wrongly_in[:3]}; missing: {missing[:3]}")
    return report(True, "decay on every weight matrix and kernel; none on gains, biases, embeddings or the "
                        "temperature.", "")


# ----------------------------------------------------------------------------- exercise 3
def reference_text_to_image_recall(similarity: torch.Tensor, caption_to_image, k: int) -> float:
    """Recall@k (%) for text -> image from ``similarity [images, captions]``; ties count as found."""
    caption_to_image = torch.as_tensor(caption_to_image)
    right = similarity[caption_to_image, torch.arange(similarity.shape[1])]       # [captions]
    better = (similarity > right[None, :]).sum(dim=0)                             # [captions]
    return 100 * (better < k).float().mean().item()


def check_text_to_image_recall(text_to_image_recall) -> bool:
    """Exercise 3: ``text_to_image_recall(similarity [images, captions], caption_to_image, k) -> %``."""
    if not_attempted(text_to_image_recall):
        return False
    generator = torch.Generator().manual_seed(3)
    images, per_image = 7, 3
    caption_to_image = torch.arange(images).repeat_interleave(per_image)          # [captions]
    similarity = torch.randn(images, images * per_image, generator=generator)     # [images, captions]
    similarity[caption_to_image, torch.arange(len(caption_to_image))] += 1.0      # the right image tends to win
    for k in (1, 2, 5):
        want = reference_text_to_image_recall(similarity, caption_to_image, k)
        got, verdict = _number_answer(text_to_image_recall, similarity.clone(), caption_to_image.clone(), k,
                                      what="one number (a percentage)",
                                      hint=". similarity is [images, captions]: a caption's scores are its "
                                           "COLUMN, similarity[:, j]")
        if verdict is not None:
            return verdict
        if math.isclose(got, want, abs_tol=1e-4):
            continue
        if math.isclose(100 * got, want, abs_tol=1e-3) and want > 0:
            return report(False, "", f"k={k}: got {got:.4f}, expected {want:.2f}: return a percentage (x 100)")
        for off, hint in ((k - 1, "found at K means among the K best: the right image may have up to K - 1 "
                                  "images strictly above it"),
                          (k + 1, "one too many: with K - 1 images above it the right one is still in the "
                                  "top K, with K it is not")):
            if off >= 1 and math.isclose(got, reference_text_to_image_recall(similarity, caption_to_image, off),
                                         abs_tol=1e-4):
                return report(False, "", f"k={k}: got {got:.2f}, expected {want:.2f}: off by one; {hint}")
        return report(False, "", f"k={k}: got {got:.2f}, expected {want:.2f}. For caption j, compare its right "
                                 "image's score similarity[caption_to_image[j], j] with the rest of column j")
    return report(True, "recall@1, @2 and @5 from text to image all agree.", "")


# ----------------------------------------------------------------------------- exercise 4
def reference_max_logit(raw_logit_scale: float) -> float:
    """The largest logit the loss can see: cosine <= 1 times exp(the clamped parameter)."""
    return math.exp(min(max(raw_logit_scale, 0.0), math.log(100)))


def check_max_logit(max_logit) -> bool:
    """Exercise 4: ``max_logit(raw_logit_scale) -> the largest logit after the clamp``."""
    if not_attempted(max_logit):
        return False
    for raw in (math.log(1 / 0.07), 4.0, 5.0, 7.5, -1.0):
        want = reference_max_logit(raw)
        got, verdict = _number_answer(max_logit, raw)
        if verdict is not None:
            return verdict
        if math.isclose(got, want, rel_tol=1e-4):
            continue
        where = f"raw logit_scale {raw:.3f}: got {got:.4g}, expected {want:.4g}"
        if raw < 0 and math.isclose(got, math.exp(raw), rel_tol=1e-4):
            hint = "the clamp has a floor too, clamp_(0, ln 100): the scale never drops below exp(0) = 1"
        elif math.isclose(got, math.exp(raw), rel_tol=1e-4):
            hint = ("that is exp(raw) without the clamp: training clamps the parameter to [0, ln 100] after "
                    "every step")
        elif math.isclose(got, min(max(raw, 0.0), math.log(100)), rel_tol=1e-4, abs_tol=1e-6):
            hint = "the parameter is stored as a log: the scale that multiplies the cosines is exp(parameter)"
        else:
            hint = "max logit = 1 (the largest cosine) x exp(the parameter clamped to [0, ln 100])"
        return report(False, "", f"{where}: {hint}")
    return report(True, "the clamp caps every logit at 100 (and keeps the scale at least 1).", "")

"""Checks for chapter 07's exercises: reading OpenAI's checkpoint files.

Each check builds state dicts with the real architectures' shapes on
PyTorch's ``meta`` device (shapes only, no memory, no download), runs the
learner's function on them, and compares with the package.
"""
from __future__ import annotations

import torch

from . import not_attempted, report


def _meta_state_dict(preset: str) -> dict:
    from ..model import CLIP, CLIPConfig
    with torch.device("meta"):
        model = CLIP(CLIPConfig.preset(preset))
    state_dict = dict(model.state_dict())
    # OpenAI's files carry three plain numbers beside the tensors.
    config = model.config
    state_dict.update(input_resolution=torch.tensor(config.image_resolution),
                      context_length=torch.tensor(config.context_length),
                      vocab_size=torch.tensor(config.vocab_size))
    return state_dict


PRESETS = ("ViT-B/32", "ViT-B/16", "ViT-L/14")


def check_vision_config(infer_vision_config) -> bool:
    """``infer_vision_config(state_dict) -> dict`` with vision_width, vision_patch_size, vision_layers, image_resolution."""
    if not_attempted(infer_vision_config):
        return False
    from ..model import CLIPConfig
    keys = ("vision_width", "vision_patch_size", "vision_layers", "image_resolution")
    for preset in PRESETS:
        state_dict = _meta_state_dict(preset)
        want = {k: getattr(CLIPConfig.preset(preset), k) for k in keys}
        try:
            got = infer_vision_config(state_dict)
        except Exception as err:  # the learner's code may fail in any way: explain, never raise
            return report(False, "", f"your function raised {type(err).__name__}: {err}")
        if got is None:  # the placeholder: not attempted yet
            not_attempted(None)
            return False
        got = {k: int(got[k]) if k in got else None for k in keys}
        if got != want:
            wrong = [f"{k}: yours {got[k]}, expected {want[k]}" for k in keys if got[k] != want[k]]
            return report(False, "", f"for {preset}: " + "; ".join(wrong) + ". Hints: conv1's weight is "
                          "[width, 3, patch, patch]; the positional embedding has grid*grid + 1 rows; count "
                          "the distinct N in 'visual.transformer.resblocks.N.'.")
    return report(True, f"the vision tower of {', '.join(PRESETS)} read off the tensor shapes alone.", "")


def check_count_parameters(count_parameters) -> bool:
    """``count_parameters(state_dict) -> int``: learnable numbers only (151,277,313 for ViT-B/32)."""
    if not_attempted(count_parameters):
        return False
    state_dict = _meta_state_dict("ViT-B/32")
    try:
        got = count_parameters(state_dict)
        if got is None:
            not_attempted(None)
            return False
        got = int(got)
    except Exception as err:
        return report(False, "", f"your function raised {type(err).__name__}: {err}")
    want = 151_277_313
    if got == want + 3:
        return report(False, "", "off by 3: input_resolution, context_length and vocab_size are plain "
                      "numbers stored in the file, not parameters; leave them out.")
    return report(got == want, f"{got:,} parameters, as in OpenAI's released ViT-B/32 (the count their Interacting_with_CLIP notebook prints).",
                  f"got {got:,}, expected {want:,}: sum tensor.numel() over the tensors, except the "
                  f"three non-parameter entries.")


def check_top5(top5) -> bool:
    """``top5(image_features [D], text_features [C, D], classnames) -> [(name, probability)] * 5``, best first."""
    if not_attempted(top5):
        return False
    generator = torch.Generator().manual_seed(7)
    classnames = [f"class {i}" for i in range(12)]
    image_features = torch.randn(16, generator=generator)
    text_features = torch.randn(12, 16, generator=generator) * torch.rand(12, 1, generator=generator)
    similarity = (100 * torch.nn.functional.normalize(image_features, dim=-1)
                  @ torch.nn.functional.normalize(text_features, dim=-1).T).softmax(dim=-1)
    values, indices = similarity.topk(5)
    want = [(classnames[i], v) for v, i in zip(values.tolist(), indices.tolist())]
    try:
        got = top5(image_features.clone(), text_features.clone(), classnames)
        if got is None:
            not_attempted(None)
            return False
        got = [(name, float(p)) for name, p in got]
    except Exception as err:
        return report(False, "", f"your function raised {type(err).__name__} (or did not return "
                      f"(name, probability) pairs): {err}")
    if [n for n, _ in got] != [n for n, _ in want]:
        return report(False, "", f"the classes differ: yours {[n for n, _ in got]}, expected "
                      f"{[n for n, _ in want]}. Did you L2-normalise both sides before the product?")
    close = all(abs(g - w) < 1e-4 for (_, g), (_, w) in zip(got, want))
    return report(close, "the seed's top-5 recipe: normalise, scale by 100, softmax, topk.",
                  "right classes, wrong probabilities: scale the cosine similarities by 100 before "
                  "the softmax, and softmax over all classes (not just the top 5).")

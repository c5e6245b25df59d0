"""Checks for chapter 07's exercises: reading OpenAI's checkpoint files.

Each check builds state dicts with the real architectures' shapes on
PyTorch's ``meta`` device (shapes only, no memory, no download), runs the
learner's function on them, and compares with the package. Each prints a
verdict and never raises.

    >>> check_count_parameters(None)
    [TODO] Not attempted yet: fill in the cell above and run this one again.
    False
"""
from __future__ import annotations

import torch

from . import as_tensor, attempt, report, whole_number


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


def _check_config(function, keys, hints, what) -> bool:
    from ..model import CLIPConfig
    for preset in PRESETS:
        want = {k: getattr(CLIPConfig.preset(preset), k) for k in keys}
        got, verdict = attempt(function, _meta_state_dict(preset))
        if verdict is not None:
            return verdict
        if not isinstance(got, dict):
            return report(False, "", f"return a dict with the keys {', '.join(keys)}; got {type(got).__name__}.")
        as_int = lambda value: value if whole_number(value) is None else whole_number(value)  # keep what is not one
        got = {k: as_int(got[k]) if k in got else None for k in keys}
        if got != want:
            wrong = [f"{k}: yours {got[k]}, expected {want[k]}" for k in keys if got[k] != want[k]]
            return report(False, "", f"for {preset}: " + "; ".join(wrong) + ". " + hints(got, want, preset))
    return report(True, f"the {what} of {', '.join(PRESETS)} read off the tensor shapes alone.", "")


def check_vision_config(infer_vision_config) -> bool:
    """``infer_vision_config(state_dict) -> dict`` with vision_width, vision_patch_size, vision_layers,
    image_resolution."""
    keys = ("vision_width", "vision_patch_size", "vision_layers", "image_resolution")
    return _check_config(infer_vision_config, keys, lambda got, want, preset: (
        "Hints: conv1's weight is [width, 3, patch, patch]; the positional embedding has grid*grid + 1 rows; count "
        "the distinct N in 'visual.transformer.resblocks.N.'."), "vision tower")


def check_text_config(infer_text_config) -> bool:
    """``infer_text_config(state_dict) -> dict`` with transformer_width, transformer_layers, transformer_heads,
    context_length, vocab_size, embed_dim."""
    keys = ("transformer_width", "transformer_layers", "transformer_heads", "context_length", "vocab_size", "embed_dim")

    def hints(got, want, preset):
        from ..model import CLIPConfig
        if got["transformer_layers"] == want["transformer_layers"] + CLIPConfig.preset(preset).vision_layers:
            return ("You counted the vision tower's blocks too: only names starting with 'transformer.resblocks.' "
                    "belong to the text tower ('visual.transformer.resblocks.' contains that string).")
        if got["transformer_heads"] != want["transformer_heads"]:
            return ("The number of heads is not in any shape (the heads split one [width, width] matrix); CLIP "
                    "always used one head per 64 channels: width // 64.")
        return ("Hints: token_embedding.weight is [vocab_size, width]; positional_embedding is [context_length, "
                "width]; text_projection is [width, embed_dim].")
    return _check_config(infer_text_config, keys, hints, "text tower")


def check_count_parameters(count_parameters) -> bool:
    """``count_parameters(state_dict) -> int``: learnable numbers only (151,277,313 for ViT-B/32)."""
    got, verdict = attempt(count_parameters, _meta_state_dict("ViT-B/32"))
    if verdict is not None:
        return verdict
    if isinstance(got, float) and got.is_integer():
        got = int(got)                                   # float32 below would round 151,277,313
    value, error = as_tensor(got, "the count")
    if error or value.numel() != 1:
        return report(False, "", error or "return one number: the sum of numel() over the tensors.")
    if not torch.isfinite(value).all() or value.item() != int(value.item()):
        return report(False, "", f"return a whole number of parameters, got {got!r}.")
    got = int(value.double().item()) if not isinstance(got, int) else got
    want = 151_277_313
    if got == want + 3:
        return report(False, "", "off by 3: input_resolution, context_length and vocab_size are plain "
                      "numbers stored in the file, not parameters; leave them out.")
    if got == 302 or got == 305:
        return report(False, "", f"{got} is the number of tensors: count the numbers inside them (tensor.numel()).")
    return report(got == want, f"{got:,} parameters, as in OpenAI's released ViT-B/32 (the count their "
                  "Interacting_with_CLIP notebook prints).",
                  f"got {got:,}, expected {want:,}: sum tensor.numel() over the tensors, except the "
                  f"three non-parameter entries.")

"""Checks for chapter 02 (the text encoder). Each takes the learner's function, never raises.

Exercise 1 is an experiment: the learner trains two runs and reports their
scores, and the check reads the runs back (:mod:`clip_from_scratch.exercises.experiments`).

    >>> check_context_length(None)
    [TODO] Not attempted yet: fill in the cell above and run this one again.
    False
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import attempt, attempt_number, report
from .experiments import Run, check_runs, zeroshot_top1


def check_attention(attention) -> bool:
    """``attention(q, k, v, causal)`` for ``[batch, heads, tokens, head_width]`` tensors."""
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 5, 8, generator=generator) for _ in range(3))
    for causal in (False, True):
        out, verdict = attempt(attention, q, k, v, causal)
        if verdict is not None:
            return verdict
        want = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        if not isinstance(out, torch.Tensor) or out.shape != want.shape:
            return report(False, "", f"expected shape {tuple(want.shape)}, got "
                                     f"{tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__}")
        if not torch.allclose(out, want, atol=1e-5):
            unscaled = torch.softmax(q @ k.transpose(-2, -1), -1) @ v
            if not causal and torch.allclose(out, unscaled, atol=1e-5):
                return report(False, "", "close: divide the scores by sqrt(head_width) before the softmax.")
            which = "with causal=True (mask the future before the softmax)" if causal else "with causal=False"
            return report(False, "", f"differs from F.scaled_dot_product_attention {which}; "
                                     f"largest difference {(out - want).abs().max():.3g}.")
    return report(True, "softmax(q k^T / sqrt(d)) v, with and without the causal mask, matches SDPA.", "")


def check_mean_pool(mean_pool) -> bool:
    """``mean_pool(hidden [batch, tokens, width], tokens [batch, tokens])`` -> ``[batch, width]``.

    The average of each caption's rows from its start token to its end-of-text
    token, both included; the padding after end-of-text left out.
    """
    tokens = torch.tensor([[49406, 320, 1125, 49407, 0, 0], [49406, 2368, 49407, 0, 0, 0]])
    hidden = torch.randn(2, 6, 4, generator=torch.Generator().manual_seed(3))
    pooled, verdict = attempt(mean_pool, hidden.clone(), tokens.clone())
    if verdict is not None:
        return verdict
    if not isinstance(pooled, torch.Tensor) or tuple(pooled.shape) != (2, 4):
        got = tuple(pooled.shape) if isinstance(pooled, torch.Tensor) else type(pooled).__name__
        return report(False, "", f"expected shape (2, 4), one row per caption; got {got}.")
    real = (torch.arange(6)[None, :] <= tokens.argmax(-1)[:, None]).float()          # [batch, tokens]
    want = (hidden * real[..., None]).sum(1) / real.sum(1, keepdim=True)
    if torch.allclose(pooled, want, atol=1e-5):
        return report(True, "the mean over each caption's own tokens, padding left out.", "")
    if torch.allclose(pooled, hidden.mean(1), atol=1e-5):
        return report(False, "", "that averages the padding too: keep positions up to each caption's end-of-text "
                                 "token (tokens.argmax(-1)) and divide by their number.")
    before_eot = (torch.arange(6)[None, :] < tokens.argmax(-1)[:, None]).float()
    if torch.allclose(pooled, (hidden * before_eot[..., None]).sum(1) / before_eot.sum(1, keepdim=True), atol=1e-5):
        return report(False, "", "off by one: include the end-of-text token itself (position <= argmax).")
    if torch.allclose(pooled, (hidden * real[..., None]).sum(1) / 6, atol=1e-5):
        return report(False, "", "right sum, wrong count: divide by the number of real tokens of each caption, not 6.")
    return report(False, "", "the rows differ from the mean over positions 0..end-of-text of each caption.")


def check_text_parameters(text_parameters) -> bool:
    """``text_parameters(vocab_size, context_length, width, layers, embed_dim) -> int``: the text tower's parameters."""
    from ..model import CLIP, CLIPConfig
    for preset in ("ViT-B/32", "ViT-L/14"):
        config = CLIPConfig.preset(preset)
        with torch.device("meta"):
            model = CLIP(config)
        text_parts = ("token_embedding", "positional_embedding", "transformer.", "ln_final", "text_projection")
        want = sum(p.numel() for name, p in model.named_parameters() if name.startswith(text_parts))
        args = (config.vocab_size, config.context_length, config.transformer_width, config.transformer_layers,
                config.embed_dim)
        got, verdict = attempt_number(text_parameters, *args, what="one whole number", whole=True)
        if verdict is not None:
            return verdict
        if got == want:
            continue
        w, layers = config.transformer_width, config.transformer_layers
        if got == want - layers * (9 * w) - 2 * w:
            return report(False, "", f"{preset}: you left out the LayerNorms (a weight and a bias of width each: "
                                     "ln_1 and ln_2 in every block, and ln_final).")
        if got == want - layers * 9 * w:
            return report(False, "", f"{preset}: the linear layers have biases too (in_proj 3w, out_proj w, c_fc 4w, "
                                     "c_proj w).")
        if got == want - w * config.embed_dim:
            return report(False, "", f"{preset}: add text_projection, [width, embed_dim].")
        if got == want - config.context_length * w:
            return report(False, "", f"{preset}: add the position embedding, [context_length, width].")
        return report(False, "", f"{preset}: got {got:,}, expected {want:,}. Per block: ln_1, attention (in_proj "
                                 "[3w, w] + bias, out_proj [w, w] + bias), ln_2, MLP (c_fc [4w, w] + bias, c_proj "
                                 "[w, 4w] + bias); around them the two embeddings, ln_final and text_projection.")
    return report(True, f"12·w² + 13·w per block, plus the embeddings: {want:,} for ViT-L/14's text tower.", "")


def check_context_length(top1_by_run) -> bool:
    """Exercise 1: ``{run folder: held-out zero-shot top-1 %}`` for a shapes run with the default context of 32
    tokens and one with ``--context-length 6``."""
    def conclude(runs: dict[str, Run]) -> str:
        full, short = runs["context 32"], runs["context 6"]
        gap = full.reported - short.reported
        what = ("the short context costs accuracy" if gap > 2 else
                "the short context costs little here" if gap >= -2 else "the short context even scores higher here")
        return (f"context 32: {full.reported:.1f}%, context 6: {short.reported:.1f}%: {what}. At 6 tokens (start and "
                "end included) every caption longer than four tokens is cut, its end-of-text token kept, so the "
                "pooled feature never sees the words after the cut: 'a photo of a red circle.' becomes 'a photo of "
                "a', the same for every class, and only the short prompt 'a {}.' still names the class. Runs this "
                "small differ by several points from seed to seed: try --seed 1 before concluding.")
    return check_runs(top1_by_run, roles={"context 32": {"context_length": 32}, "context 6": {"context_length": 6}},
                      varied={"context_length"}, measure=zeroshot_top1, what="held-out zero-shot top-1 (%)",
                      conclude=conclude)

"""Checks for chapter 03b (the ResNet image encoder). Each takes the learner's function, never raises.

Exercise 1 is an experiment: the learner trains a ViT and a ResNet on shapes
and reports their scores; the check reads the runs back
(:mod:`clip_from_scratch.exercises.experiments`).

    >>> check_resnet_vs_vit(None)
    [TODO] Not attempted yet: fill in the cell above and run this one again.
    False
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from . import attempt, attempt_number, report
from .experiments import Run, check_runs, zeroshot_top1


def check_resnet_vs_vit(top1_by_run) -> bool:
    """Exercise 1: ``{run folder: held-out zero-shot top-1 %}`` for a ViT and a ResNet image encoder trained on the
    same shapes data for the same steps (32 px: a ResNet halves the image five times)."""
    def conclude(runs: dict[str, Run]) -> str:
        vit, resnet = runs["ViT"], runs["ResNet"]

        def cost(run: Run) -> str:
            seconds = run.metrics.get("train_seconds", float("nan"))
            return f"{run.metrics.get('parameters', 0) / 1e6:.2f} M parameters, {seconds:.0f} s"
        lead = ("the ResNet learns more from the same steps" if resnet.reported > vit.reported + 2 else
                "the ViT keeps up here" if vit.reported > resnet.reported + 2 else "a tie at this size")
        return (f"ResNet {resnet.reported:.1f}% ({cost(resnet)}), ViT {vit.reported:.1f}% ({cost(vit)}): {lead}. "
                "Convolutions build locality and translation in; a ViT must learn them from data, which is why "
                "open_clip found RN50 ahead of ViT-B below tens of millions of pairs. Mind the cost: compare at "
                "equal time too (fewer --steps for the slower one) before you call a winner.")
    return check_runs(top1_by_run, roles={"ViT": {"image_encoder": "vit"}, "ResNet": {"image_encoder": "resnet"}},
                      varied={"image_encoder", "vision_width", "vision_layers", "vision_heads", "vision_patch_size"},
                      measure=zeroshot_top1, what="held-out zero-shot top-1 (%)", conclude=conclude)


def check_avg_pool_2x2(avg_pool_2x2) -> bool:
    """``avg_pool_2x2(x [batch, channels, H, W])`` -> ``[batch, channels, H/2, W/2]``, without F.avg_pool2d."""
    x = torch.randn(2, 3, 6, 8, generator=torch.Generator().manual_seed(3))
    got, verdict = attempt(avg_pool_2x2, x)
    if verdict is not None:
        return verdict
    want = F.avg_pool2d(x, 2)
    if not isinstance(got, torch.Tensor) or got.shape != want.shape:
        shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
        return report(False, "", f"expected shape {tuple(want.shape)} (each side halved), got {shape}.")
    if torch.equal(got, x[..., ::2, ::2]):
        return report(False, "", "that keeps every other pixel: a stride-2 sample, which is exactly what "
                                 "aliases. Average each 2x2 block instead.")
    if torch.allclose(got, F.max_pool2d(x, 2)):
        return report(False, "", "that is a max pool (torchvision's stem); CLIP averages each 2x2 block.")
    if not torch.allclose(got, want, atol=1e-6):
        return report(False, "", "differs from a 2x2 average: reshape to [batch, channels, H/2, 2, W/2, 2] "
                                 "and take the mean over the two size-2 dimensions.")
    return report(True, "each output pixel is the mean of a 2x2 block: a low-pass filter before the subsample.", "")


def _reference_attention_pool(grid, positional_embedding, heads, skip_mean=False, scale=True):
    tokens = grid.flatten(2).transpose(1, 2)                          # [batch, cells, width]
    if not skip_mean:
        tokens = torch.cat([tokens.mean(1, keepdim=True), tokens], 1)  # [batch, cells + 1, width]
        tokens = tokens + positional_embedding
    else:
        tokens = tokens + positional_embedding[1:]
    split = tokens.unflatten(-1, (heads, -1)).transpose(1, 2)         # [batch, heads, tokens, head_width]
    query = split[:, :, :1]
    scores = query @ split.transpose(-2, -1)
    if scale:
        scores = scores / math.sqrt(split.shape[-1])
    return (scores.softmax(-1) @ split).transpose(1, 2).flatten(1)    # [batch, width]


def check_attention_pool(attention_pool) -> bool:
    """``attention_pool(grid [batch, width, H, W], positional_embedding [H*W + 1, width], heads)``
    -> ``[batch, width]``.

    No projections (q = k = v = the tokens): the mean of the grid, put first,
    plus position embeddings; the first token is the only query; ``heads``
    heads, each scaled by ``1/sqrt(head_width)``; heads side by side.
    """
    generator = torch.Generator().manual_seed(4)
    grid = torch.randn(2, 8, 3, 3, generator=generator)
    positional_embedding = torch.randn(10, 8, generator=generator)
    got, verdict = attempt(attention_pool, grid, positional_embedding, 2)
    if verdict is not None:
        return verdict
    want = _reference_attention_pool(grid, positional_embedding, 2)
    if isinstance(got, torch.Tensor) and got.shape == (2, 1, 8):
        got = got[:, 0]
    if not isinstance(got, torch.Tensor) or got.shape != want.shape:
        shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
        return report(False, "", f"expected shape {tuple(want.shape)} = [batch, width]: one vector per image, "
                                 f"got {shape}. Only the mean token asks a question.")
    if torch.allclose(got, want, atol=1e-5):
        return report(True, "one query (the mean token) over mean + grid: the ViT's class token, done once.", "")
    if torch.allclose(got, _reference_attention_pool(grid, positional_embedding, 2, scale=False), atol=1e-5):
        return report(False, "", "divide the scores by sqrt(head_width) before the softmax.")
    if torch.allclose(got, _reference_attention_pool(grid, positional_embedding, 1), atol=1e-5):
        return report(False, "", "that is one head over the whole width: split the width into `heads` parts "
                                 "and attend in each separately.")
    if torch.allclose(got, _reference_attention_pool(grid, positional_embedding, 2, skip_mean=True), atol=1e-5):
        return report(False, "", "the mean of the grid goes FIRST as an extra token (position 0 of the "
                                 "embeddings); the query is that token, not the first grid cell.")
    return report(False, "", "differs from the reference: tokens = cat(mean, cells) + positional_embedding; "
                             "query = tokens[:, :1]; softmax(q k^T / sqrt(d)) v per head.")


def _bottleneck_parameters(in_channels, planes, stride):
    out = 4 * planes
    count = in_channels * planes + 2 * planes + 9 * planes * planes + 2 * planes + planes * out + 2 * out
    if stride > 1 or in_channels != out:
        count += in_channels * out + 2 * out
    return count


def check_bottleneck_parameters(bottleneck_parameters) -> bool:
    """``bottleneck_parameters(in_channels, planes, stride)`` -> learned numbers in one Bottleneck block.

    Convolutions have no bias; each batch norm learns a gain and a bias per channel
    (its running statistics are buffers, not parameters).
    """
    cases = [(64, 64, 1), (256, 64, 1), (256, 128, 2), (1024, 512, 2), (40, 10, 1)]
    for in_channels, planes, stride in cases:
        got, verdict = attempt_number(bottleneck_parameters, in_channels, planes, stride, what="one whole number",
                                      whole=True)
        if verdict is not None:
            return verdict
        want = _bottleneck_parameters(in_channels, planes, stride)
        out = 4 * planes
        downsample = in_channels * out + 2 * out if (stride > 1 or in_channels != out) else 0
        batch_norms = 2 * planes + 2 * planes + 2 * out + (2 * out if downsample else 0)
        if got == want - downsample and downsample:
            return report(False, "", f"for in_channels={in_channels}, planes={planes}, stride={stride} the "
                                     f"shortcut needs its own 1x1 conv and batch norm (the width changes "
                                     f"from {in_channels} to {out}{' and the grid halves' if stride > 1 else ''}).")
        if got == want - batch_norms:
            return report(False, "", "count the batch norms too: a gain and a bias per channel each.")
        if got == want + batch_norms:
            return report(False, "", "running_mean and running_var are buffers, not learned parameters: "
                                     "count 2 numbers per channel per batch norm.")
        if got != want:
            return report(False, "", f"for in_channels={in_channels}, planes={planes}, stride={stride} "
                                     f"expected {want:,}, got {got}.")
    return report(True, "conv1 + conv2 (3x3) + conv3 (4x wider) + 3 batch norms, + a 1x1 shortcut where needed.", "")

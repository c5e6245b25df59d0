"""Checks for chapter 03 (the vision encoder). Each takes the learner's function, never raises.

    >>> check_patchify(None)
    [TODO] Not attempted yet: fill in the cell above and run this one again.
    False
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import attempt, attempt_number, report


def _reference_patchify(images, patch_size):
    # [batch, 3*p*p, patches] -> [batch, patches, 3*p*p]; channels first, then rows, then columns (conv1's order)
    return F.unfold(images, kernel_size=patch_size, stride=patch_size).transpose(1, 2)


def check_patchify(patchify) -> bool:
    """``patchify(images [batch, 3, H, W], patch_size)`` -> ``[batch, patches, 3 * patch_size**2]``.

    Patches in reading order (row by row), each flattened as channel, row, column.
    """
    images = torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    patches, verdict = attempt(patchify, images, 4)
    if verdict is not None:
        return verdict
    want = _reference_patchify(images, 4)
    if not isinstance(patches, torch.Tensor) or patches.shape != want.shape:
        got = tuple(patches.shape) if isinstance(patches, torch.Tensor) else type(patches).__name__
        return report(False, "", f"expected shape {tuple(want.shape)} = [batch, (12/4)^2, 3*4*4], got {got}.")
    if torch.equal(patches, want):
        return report(True, "9 patches of 48 numbers each, in the order conv1's weights expect.", "")
    if torch.equal(patches.sort(-1).values, want.sort(-1).values):
        return report(False, "", "right patches, but the numbers inside each are in another order: flatten "
                                 "each patch as [channel, row, column] (channels first), as conv1.weight is laid out.")
    return report(False, "", "the patches differ from F.unfold's: check the reshape/permute order "
                             "(batch, 3, rows, p, cols, p) -> (batch, rows, cols, 3, p, p).")


def check_add_class_token(add_class_token) -> bool:
    """``add_class_token(x [batch, patches, width], class_embedding [width])`` -> ``[batch, patches + 1, width]``."""
    generator = torch.Generator().manual_seed(2)
    x, class_embedding = torch.randn(3, 4, 6, generator=generator), torch.randn(6, generator=generator)
    out, verdict = attempt(add_class_token, x, class_embedding)
    if verdict is not None:
        return verdict
    want = torch.cat([class_embedding.expand(3, 1, 6), x], dim=1)
    if not isinstance(out, torch.Tensor) or out.shape != want.shape:
        return report(False, "", "expected shape (3, 5, 6): one extra token per image.")
    if torch.equal(out, torch.cat([x, class_embedding.expand(3, 1, 6)], dim=1)):
        return report(False, "", "the class token goes FIRST (position 0): ln_post reads x[:, 0].")
    if not torch.equal(out, want):
        return report(False, "", "position 0 of every image should hold class_embedding, then the patches.")
    return report(True, "the class token sits at position 0 of every image's sequence.", "")


def check_interpolate_positions(interpolate_positions) -> bool:
    """``interpolate_positions(positional_embedding [1 + g*g, width], new_grid) -> [1 + new_grid**2, width]``.

    The class token's row unchanged; the g x g grid of rows resized to
    new_grid x new_grid with bicubic interpolation (``align_corners=False``).
    """
    generator = torch.Generator().manual_seed(4)
    grid, width = 4, 6
    table = torch.randn(1 + grid * grid, width, generator=generator)
    table[1:] += torch.linspace(0, 3, grid * grid)[:, None]         # a trend along reading order: makes mix-ups visible

    def reference(new_grid, mode="bicubic"):
        patches = table[1:].reshape(grid, grid, width).permute(2, 0, 1)[None]       # [1, width, g, g]
        resized = F.interpolate(patches, size=(new_grid, new_grid), mode=mode, align_corners=False)
        return torch.cat([table[:1], resized[0].permute(1, 2, 0).reshape(new_grid * new_grid, width)])

    def reshaped_without_permute(new_grid):                                         # the usual slip
        patches = table[1:].reshape(1, width, grid, grid)
        resized = F.interpolate(patches, size=(new_grid, new_grid), mode="bicubic", align_corners=False)
        return torch.cat([table[:1], resized.reshape(new_grid * new_grid, width)])

    for new_grid in (7, 4, 2):
        got, verdict = attempt(interpolate_positions, table.clone(), new_grid)
        if verdict is not None:
            return verdict
        want = reference(new_grid)
        if not isinstance(got, torch.Tensor) or got.shape != want.shape:
            shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
            return report(False, "", f"for new_grid={new_grid} expected shape {tuple(want.shape)} = [1 + "
                                     f"{new_grid}², width], got {shape}. The class token's row stays one row.")
        if torch.allclose(got, want, atol=1e-4):
            continue
        if not torch.allclose(got[0], table[0]):
            return report(False, "", "row 0 is the class token: it has no place in the grid, keep it unchanged.")
        if torch.allclose(got, reference(new_grid, "bilinear"), atol=1e-4):
            return report(False, "", "bilinear is close; use mode='bicubic', as CLIP's re-implementations do.")
        if torch.allclose(got, reshaped_without_permute(new_grid), atol=1e-4):
            return report(False, "", "reshape alone scrambles the table: its rows are patches in reading order, so "
                                     "reshape to [g, g, width] (row, column, channel), then permute the channels "
                                     "first.")
        return report(False, "", f"for new_grid={new_grid} the rows differ: reshape rows 1.. to [g, g, width], "
                                 "permute to [1, width, g, g], F.interpolate(..., mode='bicubic', "
                                 "align_corners=False), then back to [new_grid², width] and put row 0 in front.")
    return report(True, "the class token kept, the grid resized: a ViT-B/32 can now read 448 px images "
                        "(a 14x14 grid).", "")


def check_text_macs(text_macs) -> bool:
    """``text_macs(tokens, width, layers, embed_dim) -> int``: multiply-adds of one caption through the text tower.

    Per layer the chapter's count for the vision tower: 12·width² per token for
    the linear layers, 2·tokens·width per token for attention; then the
    projection of the one pooled row, width·embed_dim. (Token embeddings are
    a table lookup: no multiply-adds.)
    """
    cases = [(77, 512, 12, 512), (12, 512, 12, 512), (77, 768, 12, 768), (5, 64, 2, 32)]
    for tokens, width, layers, embed_dim in cases:
        got, verdict = attempt_number(text_macs, tokens, width, layers, embed_dim, what="one whole number", whole=True)
        if verdict is not None:
            return verdict
        linear, attention = layers * tokens * 12 * width ** 2, layers * 2 * tokens ** 2 * width
        projection = width * embed_dim
        want = linear + attention + projection
        if got == want:
            continue
        if got == linear + attention:
            return report(False, "", "add the projection of the pooled end-of-text row: width x embed_dim.")
        if got == linear + projection:
            return report(False, "", "add the attention scores and the weighted sum: 2·tokens·width per token per "
                                     "layer.")
        if got == linear + attention + tokens * projection:
            return report(False, "", "only one row is projected: the end-of-text token's, not every token's.")
        if got == linear + attention // 2 + projection:
            return report(False, "", "attention has two products, Q·Kᵀ and weights·V: 2·tokens·width per token.")
        return report(False, "", f"for tokens={tokens}, width={width}, layers={layers}, embed_dim={embed_dim}: "
                                 f"got {got:,}, expected {want:,}.")
    full, cut = (12 * 77 * 12 * 512 ** 2 + 12 * 2 * 77 ** 2 * 512), (12 * 12 * 12 * 512 ** 2 + 12 * 2 * 12 ** 2 * 512)
    return report(True, f"ViT-B/32's text tower: {full / 1e9:.1f} G multiply-adds at 77 tokens, {cut / 1e9:.2f} "
                        f"cut to 12: chapter 02's cut saves {1 - cut / full:.0%}.", "")

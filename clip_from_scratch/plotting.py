"""The course's diagrams, drawn with matplotlib: no image files, nothing to download.

Each function draws one picture and returns its ``Figure``; a notebook calls
it and then ``plt.show()``::

    from clip_from_scratch import plotting
    plotting.draw_training(["a dog on the grass", "a red car", "a bowl of soup"])
    plt.show()

* :func:`draw_training` — contrastive pre-training: two encoders, the N x N
  matrix of image-text similarities, positives on the diagonal (chapter 00).
* :func:`draw_zero_shot` — a classifier from label text, then zero-shot
  prediction (chapter 00).
* :func:`draw_bpe_merges` — a word's symbols merging, one learned merge per
  row (chapter 01).
* :func:`draw_patch_pipeline` — image -> patches -> flattened vectors ->
  tokens, class token and positions (chapter 03).

The module imports nothing from the rest of the package, so any layer may use it.
"""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Rectangle

TEXT_COLOUR = "#f6c28b"      # text side: captions, text encoder, T_j
IMAGE_COLOUR = "#8fc1e8"     # image side: pictures, image encoder, I_i
POSITIVE_COLOUR = "#2a9d8f"  # a matching pair / the winning class
NEGATIVE_COLOUR = "#eeeeee"


def _box(ax, x, y, width, height, text, colour, fontsize=9, rotation=0, **kwargs):
    """A rounded box with centred text; (x, y) is its lower-left corner."""
    ax.add_patch(FancyBboxPatch((x, y), width, height, boxstyle="round,pad=0.03,rounding_size=0.08",
                                fc=colour, ec="black", lw=1))
    ax.text(x + width / 2, y + height / 2, text, ha="center", va="center", fontsize=fontsize,
            rotation=rotation, **kwargs)


def _cell(ax, x, y, text, colour, fontsize=8, bold=False):
    """A unit square centred at (x, y)."""
    ax.add_patch(Rectangle((x - 0.45, y - 0.45), 0.9, 0.9, fc=colour, ec="black", lw=0.8))
    ax.text(x, y, text, ha="center", va="center", fontsize=fontsize, fontweight="bold" if bold else "normal")


def _arrow(ax, start, end):
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=12, lw=1.2, color="black"))


def _canvas(ax, width, height, figsize):
    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    ax.set_xlim(-0.2, width)
    ax.set_ylim(height, -0.2)          # y grows downwards, like a page
    ax.set_aspect("equal")
    ax.axis("off")
    return ax


def draw_training(captions: Sequence[str] = ("a dog on the grass", "a red car", "a bowl of soup", "a cat asleep"),
                  ax=None):
    """CLIP's training picture: N captions and N images, two encoders, the N x N similarity matrix.

    Cell (i, j) is ``I_i · T_j``, image i against caption j; the N cells on the
    diagonal are the pairs that came together (positives, highlighted), the
    N² − N others are negatives.

    >>> fig = draw_training(["a dog", "a car"])
    >>> sorted(t.get_text() for t in fig.axes[0].texts if "·" in t.get_text())
    ['I1·T1', 'I1·T2', 'I2·T1', 'I2·T2']
    """
    n = len(captions)
    x0, y0 = 5.0, 4.6                                   # centre of matrix cell (0, 0)
    ax = _canvas(ax, x0 + n + 0.2, y0 + n + 0.6, figsize=(0.9 * (n + 6), 0.85 * (n + 5)))
    # Text side: captions -> text encoder -> T_1..T_N, one column each.
    _box(ax, x0 - 0.5, 0.0, n, 1.0, "\n".join(f'"{c}"' for c in captions[:4]) + ("\n…" if n > 4 else ""),
         "#fde9c9", fontsize=8)
    _arrow(ax, (x0 + n / 2 - 0.5, 1.05), (x0 + n / 2 - 0.5, 1.55))
    _box(ax, x0 - 0.5, 1.6, n, 0.9, "text encoder", TEXT_COLOUR, fontsize=10)
    for j in range(n):
        _arrow(ax, (x0 + j, 2.55), (x0 + j, 3.0))
        _cell(ax, x0 + j, 3.5, f"T{j + 1}", TEXT_COLOUR, bold=True)
    # Image side: images -> image encoder -> I_1..I_N, one row each.
    _box(ax, 0.0, y0 - 0.5, 1.2, n, "\n".join(f"image {i + 1}" for i in range(min(n, 4))) + ("\n…" if n > 4 else ""),
         "#d4e8f7", fontsize=7)
    _arrow(ax, (1.25, y0 + n / 2 - 0.5), (1.65, y0 + n / 2 - 0.5))
    _box(ax, 1.7, y0 - 0.5, 0.9, n, "image encoder", IMAGE_COLOUR, fontsize=10, rotation=90)
    for i in range(n):
        _arrow(ax, (2.65, y0 + i), (3.45, y0 + i))
        _cell(ax, 4.0 - 0.05, y0 + i, f"I{i + 1}", IMAGE_COLOUR, bold=True)
    # The matrix: every image against every caption.
    for i in range(n):
        for j in range(n):
            _cell(ax, x0 + j, y0 + i, f"I{i + 1}·T{j + 1}", POSITIVE_COLOUR if i == j else NEGATIVE_COLOUR,
                  fontsize=7 if n > 4 else 8)
    ax.text(x0 + n / 2 - 0.5, y0 + n + 0.1, f"{n} positives on the diagonal (pull together), "
            f"{n * n - n} negatives (push apart)", ha="center", va="center", fontsize=9)
    ax.set_title("1. Contrastive pre-training", fontsize=11, loc="left")
    return ax.figure


def draw_zero_shot(classnames: Sequence[str] = ("plane", "car", "dog", "bird"),
                   similarities: Sequence[float] | None = None, template: str = "a photo of a {}.", ax=None):
    """Zero-shot classification: a classifier from label text (stage 2), then prediction (stage 3).

    ``similarities`` are the image's cosine similarity with each class's text
    feature (made-up numbers by default); the largest wins and is highlighted.

    >>> fig = draw_zero_shot(["cat", "dog"], similarities=[0.1, 0.3])
    >>> [t.get_text() for t in fig.axes[0].texts if t.get_text().startswith("prediction")]
    ['prediction: "a photo of a dog."']
    """
    n = len(classnames)
    if similarities is None:
        similarities = [0.18, 0.22, 0.31, 0.24][:n] + [0.1] * max(0, n - 4)
    winner = int(np.argmax(similarities))
    x0 = 5.0                                              # centre of column 0
    ax = _canvas(ax, x0 + n + 0.2, 6.6, figsize=(0.95 * (n + 6), 5.0))
    # Stage 2: label text -> prompts -> text encoder -> one feature per class.
    _box(ax, 0.0, 0.0, 2.6, 1.0, "label text\n" + ", ".join(classnames[:5]) + (", …" if n > 5 else ""),
         "#fde9c9", fontsize=8)
    _arrow(ax, (2.65, 0.5), (3.25, 0.5))
    _box(ax, 3.3, 0.0, x0 + n - 3.3 - 0.5, 1.0, f'"{template.format("{object}")}"', "#fde9c9", fontsize=9)
    _arrow(ax, (x0 + n / 2 - 0.5, 1.05), (x0 + n / 2 - 0.5, 1.45))
    _box(ax, x0 - 0.5, 1.5, n, 0.8, "text encoder", TEXT_COLOUR, fontsize=10)
    for j in range(n):
        _arrow(ax, (x0 + j, 2.35), (x0 + j, 2.75))
        _cell(ax, x0 + j, 3.2, f"T{j + 1}\n{classnames[j]}", TEXT_COLOUR, fontsize=7)
    ax.text(0.0, 2.6, "2. A classifier from label text:\none text feature per class", fontsize=9, va="center")
    # Stage 3: image -> image encoder -> I_1, compared with every class feature.
    y = 4.7
    _box(ax, 0.0, y - 0.5, 1.1, 1.0, "new\nimage", "#d4e8f7", fontsize=8)
    _arrow(ax, (1.15, y), (1.65, y))
    _box(ax, 1.7, y - 0.5, 1.6, 1.0, "image\nencoder", IMAGE_COLOUR, fontsize=9)
    _arrow(ax, (3.35, y), (3.5, y))
    _cell(ax, 3.95, y, "I1", IMAGE_COLOUR, bold=True)
    for j in range(n):
        _arrow(ax, (x0 + j, 3.7), (x0 + j, y - 0.5))
        _cell(ax, x0 + j, y, f"I1·T{j + 1}\n{similarities[j]:.2f}",
              POSITIVE_COLOUR if j == winner else NEGATIVE_COLOUR, fontsize=7)
    _arrow(ax, (x0 + winner, y + 0.5), (x0 + winner, y + 1.15))
    ax.text(x0 + winner, y + 1.45, f'prediction: "{template.format(classnames[winner])}"', ha="center",
            va="center", fontsize=9, fontweight="bold")
    ax.text(0.0, y - 0.85, "3. Zero-shot prediction", fontsize=9, va="center")
    return ax.figure


def _merged_positions(before: Sequence[str], after: Sequence[str]) -> list[int]:
    """Indices in ``after`` of symbols that a merge made from two symbols of ``before``.

    >>> _merged_positions(("s", "i", "t", "t"), ("s", "i", "tt"))
    [2]
    """
    positions, i = [], 0
    for j, symbol in enumerate(after):
        if i < len(before) and symbol == before[i]:
            i += 1
        else:                                            # two old symbols glued into one
            positions.append(j)
            i += 2
    return positions


def draw_bpe_merges(stages: Sequence[Sequence[str]], ranks: Sequence[int] | None = None, ax=None):
    """A word's BPE encoding, one row per merge: the newly merged symbols highlighted.

    ``stages[0]`` is the word as single byte symbols; each next stage applies one
    merge. ``ranks[k]`` (optional) is the rank of the merge that made stage k + 1.

    >>> fig = draw_bpe_merges([("c", "a", "t</w>"), ("ca", "t</w>"), ("cat</w>",)])
    >>> len(fig.axes[0].patches)     # 3 + 2 + 1 symbol boxes
    6
    """
    rows = len(stages)
    box_width = lambda symbol: 0.45 * max(1, len(symbol)) + 0.2
    right = max(sum(box_width(s) + 0.12 for s in stage) for stage in stages) + 0.3   # where the labels go
    ax = _canvas(ax, right + 5.5, rows * 1.0, figsize=(min(14, 0.6 * (right + 5.5)), 0.55 * rows + 0.6))
    for row, stage in enumerate(stages):
        new = set(_merged_positions(stages[row - 1], stage)) if row else set()
        x = 0.0
        for index, symbol in enumerate(stage):
            width = box_width(symbol)
            colour = POSITIVE_COLOUR if index in new else NEGATIVE_COLOUR
            ax.add_patch(Rectangle((x, row + 0.1), width, 0.7, fc=colour, ec="black", lw=0.8))
            ax.text(x + width / 2, row + 0.45, symbol, ha="center", va="center", fontsize=9, family="monospace")
            x += width + 0.12
        if row == 0:
            label = "bytes (</w> marks the word's end)"
        else:
            merged = [stage[p] for p in sorted(new)]
            label = f"merge → {', '.join(repr(m) for m in merged)}"
            if ranks is not None:
                label += f"   (rank {ranks[row - 1]})"
        ax.text(right, row + 0.45, label, va="center", fontsize=8)
    return ax.figure


def draw_patch_pipeline(image: np.ndarray, patch_size: int, width: int = 768, shown: int = 4, ax=None):
    """From pixels to tokens: the image in a grid, its first patches, each flattened, each embedded.

    ``image``: ``[H, W, 3]`` floats in 0..1 (or uint8), square, a multiple of ``patch_size``.

    >>> fig = draw_patch_pipeline(np.zeros((64, 64, 3)), 16)
    >>> any("17 tokens" in t.get_text() for t in fig.axes[0].texts)
    True
    """
    image = np.asarray(image, dtype=np.float32)
    if image.max() > 1.0:
        image = image / 255.0
    grid = image.shape[0] // patch_size
    numbers = 3 * patch_size * patch_size
    ax = _canvas(ax, 16.6, 6.4, figsize=(13, 5.2))
    # 1. The image, cut into a grid.
    ax.imshow(image, extent=(0, 4, 4, 0), aspect="auto")
    for k in range(1, grid):
        ax.plot([k * 4 / grid] * 2, [0, 4], color="white", lw=0.8)
        ax.plot([0, 4], [k * 4 / grid] * 2, color="white", lw=0.8)
    ax.text(2, 4.5, f"{grid}×{grid} patches of {patch_size} px", ha="center", fontsize=9)
    _arrow(ax, (4.2, 2), (4.9, 2))
    # 2. The first patches in reading order, each flattened into one long vector.
    for k in range(shown):
        row, column = divmod(k, grid)
        piece = image[row * patch_size:(row + 1) * patch_size, column * patch_size:(column + 1) * patch_size]
        x = 5.1 + k * 1.05
        ax.imshow(piece, extent=(x, x + 0.85, 1.35, 0.5), aspect="auto")
        ax.text(x + 0.42, 0.35, f"patch {k + 1}", ha="center", fontsize=7)
        strip = piece.transpose(2, 0, 1).reshape(-1)[:: max(1, numbers // 40)]   # channel, row, column order
        ax.imshow(strip[:, None], extent=(x + 0.3, x + 0.55, 4.3, 1.7), cmap="gray", vmin=0, vmax=1, aspect="auto")
    ax.text(5.1 + shown * 1.05, 0.95, "…", fontsize=14, va="center")
    ax.text(5.1 + shown * 0.52, 4.75, f"flatten: 3·{patch_size}·{patch_size} = {numbers:,} numbers each",
            ha="center", fontsize=8)
    _arrow(ax, (5.1 + shown * 1.05 + 0.3, 3.6), (5.1 + shown * 1.05 + 1.1, 3.6))
    ax.text(5.1 + shown * 1.05 + 0.7, 2.6, f"× W\n[{numbers:,} → {width}]\n(= conv1)", ha="center",
            va="center", fontsize=8)
    # 3. Tokens: the class token first, then one per patch, each plus its position embedding.
    x = 5.1 + shown * 1.05 + 1.3
    labels = ["class"] + [f"{k + 1}" for k in range(shown)] + ["…", f"{grid * grid}"]
    for k, label in enumerate(labels):
        left = x + k * 0.62
        if label == "…":
            ax.text(left + 0.2, 3.0, "…", fontsize=14, va="center")
            continue
        colour = POSITIVE_COLOUR if label == "class" else IMAGE_COLOUR
        ax.add_patch(Rectangle((left, 1.7), 0.45, 2.6, fc=colour, ec="black", lw=0.8))
        ax.text(left + 0.22, 1.5, label, ha="center", fontsize=7, rotation=90 if label == "class" else 0)
        ax.add_patch(Rectangle((left, 4.55), 0.45, 0.45, fc="#f4d35e", ec="black", lw=0.6))
        ax.text(left + 0.22, 4.78, f"p{0 if label == 'class' else label}", ha="center", va="center", fontsize=6)
    right = x + len(labels) * 0.62
    ax.text(x + len(labels) * 0.31, 5.45, f"{grid * grid + 1} tokens of width {width} (+ position embedding p),"
            "\nthen ln_pre and the transformer", ha="center", va="top", fontsize=8)
    ax.set_xlim(-0.2, max(right + 0.3, 16.6))
    ax.set_ylim(6.4, -0.2)
    ax.set_aspect("equal")             # imshow changed it for the pictures
    return ax.figure

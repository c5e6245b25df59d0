"""Image-caption pairs: the one interface the training loop reads.

Any dataset is two things: images, pre-resized and stored as uint8 (so
training never decodes a JPEG), and every caption of each image. COCO has five
or so per image, the shapes set one::

    >>> images = torch.zeros(2, 3, 8, 8, dtype=torch.uint8)           # [images, 3, res, res]
    >>> pairs = ImageCaptionPairs(images, [["a cat.", "a small cat."], ["a dog."]])
    >>> len(pairs), pairs.num_captions
    (2, 3)

Each epoch, training shows every image once with *one* of its captions,
drawn afresh per epoch (as OpenCLIP does for COCO): more captions per image
means more variety at no extra cost. The choice is a pure function of the
seed and the epoch, so a resumed run draws exactly what it would have drawn::

    >>> from clip_from_scratch.bpe import train_bpe
    >>> tokens = pairs.tokenize(train_bpe(["a cat.", "a dog."], 5), context_length=8)
    >>> tokens.caption_rows(torch.tensor([0, 1]), epoch=0, seed=0).tolist() in ([0, 2], [1, 2])
    True
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch


class ImageCaptionPairs:
    """``images`` uint8 ``[N, 3, R, R]`` and ``captions[i]``: the list of image i's captions."""

    def __init__(self, images: torch.Tensor, captions: Sequence[Sequence[str]], name: str = "",
                 negatives: Sequence[Sequence[str]] | None = None):
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be uint8 [N, 3, R, R], got {images.dtype} {tuple(images.shape)}")
        if len(captions) != len(images):
            raise ValueError(f"{len(images)} images but {len(captions)} caption lists")
        empty = [i for i, c in enumerate(captions) if not c]
        if empty:
            raise ValueError(f"images {empty[:5]} have no caption")
        self.images, self.captions, self.name = images, [list(c) for c in captions], name
        # Hard negatives (chapter 09): negatives[i][k] is a false caption close to captions[i][k].
        if negatives is not None and [len(n) for n in negatives] != [len(c) for c in self.captions]:
            raise ValueError("negatives must hold one false caption per caption, image by image")
        self.negatives = None if negatives is None else [list(n) for n in negatives]

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_captions(self) -> int:
        return sum(len(c) for c in self.captions)

    @property
    def resolution(self) -> int:
        return self.images.shape[-1]

    def all_captions(self) -> list[str]:
        """Every caption, image by image: ``[c for image in captions for c in image]``."""
        return [caption for captions in self.captions for caption in captions]

    def tokenize(self, tokenizer: Callable, context_length: int) -> "CaptionTokens":
        """Token ids for every caption, cut to ``context_length`` with the end-of-text token kept."""
        texts = self.all_captions()
        tokens = tokenizer(texts, context_length=context_length, truncate=True)   # [captions, context]
        counts = torch.tensor([len(c) for c in self.captions])
        first = torch.cumsum(counts, 0) - counts
        result = CaptionTokens(tokens=tokens, lengths=tokens.argmax(dim=1) + 1, first=first, counts=counts)
        if self.negatives is not None:   # the false captions, row for row with the true ones
            false = tokenizer([n for image in self.negatives for n in image], context_length=context_length,
                              truncate=True)
            result.negative_tokens, result.negative_lengths = false, false.argmax(dim=1) + 1
        return result


@dataclass
class CaptionTokens:
    """Every caption's ids, with where each image's captions start and how many there are.

    ``tokens [captions, context]``; ``lengths [captions]`` up to and including
    the end-of-text token (``negative_tokens``/``negative_lengths``: the same
    for a false caption per caption, when the data has them); ``first [images]`` and ``counts [images]`` index
    image i's captions as rows ``first[i] .. first[i] + counts[i] - 1``.
    """
    tokens: torch.Tensor
    lengths: torch.Tensor
    first: torch.Tensor
    counts: torch.Tensor
    negative_tokens: torch.Tensor | None = None    # [captions, context]: a false caption per caption, or None
    negative_lengths: torch.Tensor | None = None

    def caption_rows(self, image_indices: torch.Tensor, epoch: int, seed: int) -> torch.Tensor:
        """One caption per image for this epoch: rows of ``tokens``."""
        generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch + 7)
        draw = torch.rand(len(self.first), generator=generator)           # [images], same for every step
        offset = (draw[image_indices] * self.counts[image_indices]).long()
        return self.first[image_indices] + offset

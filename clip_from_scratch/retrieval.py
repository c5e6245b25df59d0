"""Image <-> text retrieval, recall@K, with several captions per image (COCO has 5 to 7).

Every image is scored against every caption by cosine similarity. Then:

* **image -> text**: rank all captions for an image; the image counts as
  found at K if *any* of its own captions is among its K best;
* **text -> image**: rank all images for a caption; found at K if its one
  image is among its K best.

Recall@K is the percentage found. A tiny worked case, two images and four
captions (captions 0 and 1 describe image 0, captions 2 and 3 image 1)::

    >>> images = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    >>> texts = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7], [0.6, 0.5]])
    >>> recall_at_k(images, texts, [0, 0, 1, 1], ks=(1, 2))
    {'image_to_text': {1: 50.0, 2: 100.0}, 'text_to_image': {1: 50.0, 2: 100.0}}

Image 0's best caption is caption 0, its own: found at 1. Image 1's best is
caption 1 (image 0's); its own caption 2 comes second: found at 2 only.
Captions 0 and 2 find their own image first; caption 1 (0.2, 0.8) and
caption 3 (0.6, 0.5) lie closer to the other image: found at 2 only.

Similarities are computed a block of rows at a time, so COCO val2017's
5,000 x 25,014 matrix (500 MB in float32) is never held at once.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm


def _check(image_features, text_features, caption_to_image) -> torch.Tensor:
    caption_to_image = torch.as_tensor(caption_to_image, dtype=torch.long).flatten()
    num_images, num_texts = len(image_features), len(text_features)
    if image_features.ndim != 2 or text_features.ndim != 2 or image_features.shape[1] != text_features.shape[1]:
        raise ValueError(f"features must be [images, dim] and [captions, dim] with the same dim; got "
                         f"{tuple(image_features.shape)} and {tuple(text_features.shape)}")
    if len(caption_to_image) != num_texts:
        raise ValueError(f"caption_to_image has {len(caption_to_image)} entries for {num_texts} captions: "
                         "give the image index of every caption")
    if num_texts and (caption_to_image.min() < 0 or caption_to_image.max() >= num_images):
        raise ValueError("caption_to_image holds indices "
                         f"{int(caption_to_image.min())}..{int(caption_to_image.max())}, "
                         f"but there are {num_images} images")
    without = torch.ones(num_images, dtype=torch.bool)
    without[caption_to_image] = False
    if without.any():
        raise ValueError(f"{int(without.sum())} images have no caption (first: {without.nonzero()[0].item()}): "
                         "image->text retrieval cannot find them; leave them out")
    return caption_to_image


@torch.no_grad()
def retrieval_ranks(image_features: torch.Tensor, text_features: torch.Tensor, caption_to_image,
                    chunk_size: int = 256, progress: bool = False) -> dict[str, torch.Tensor]:
    """0-based rank of the right answer for every query: ``{"image_to_text": [images], "text_to_image": [captions]}``.

    Rank 0 = found first. For an image, the rank of its best-placed caption.
    Ties count in the query's favour (only strictly better others push it down).
    """
    caption_to_image = _check(image_features, text_features, caption_to_image)
    images = F.normalize(image_features.float(), dim=-1)       # [images, dim]
    texts = F.normalize(text_features.float(), dim=-1)         # [captions, dim]
    num_images, num_texts = len(images), len(texts)
    image_ranks = torch.empty(num_images, dtype=torch.long)
    text_ranks = torch.empty(num_texts, dtype=torch.long)
    bar = tqdm(total=num_images + num_texts, desc="recall@K", unit="query", disable=not progress, leave=False)
    for start in range(0, num_images, chunk_size):
        rows = torch.arange(start, min(start + chunk_size, num_images))
        similarity = images[rows] @ texts.T                                     # [chunk, captions]
        own = caption_to_image[None, :] == rows[:, None]                        # [chunk, captions]
        best_own = similarity.masked_fill(~own, float("-inf")).amax(dim=1)      # [chunk]
        image_ranks[rows] = (similarity > best_own[:, None]).sum(dim=1)
        bar.update(len(rows))
    for start in range(0, num_texts, chunk_size):
        rows = torch.arange(start, min(start + chunk_size, num_texts))
        similarity = texts[rows] @ images.T                                     # [chunk, images]
        right = similarity.gather(1, caption_to_image[rows, None])              # [chunk, 1]
        text_ranks[rows] = (similarity > right).sum(dim=1)
        bar.update(len(rows))
    bar.close()
    return {"image_to_text": image_ranks, "text_to_image": text_ranks}


def recall_at_k(image_features: torch.Tensor, text_features: torch.Tensor, caption_to_image,
                ks: Sequence[int] = (1, 5, 10), chunk_size: int = 256,
                progress: bool = False) -> dict[str, dict[int, float]]:
    """Recall@K in percent, both directions: ``{"image_to_text": {1: %, 5: %, 10: %}, "text_to_image": {...}}``.

    ``image_features`` [images, dim] and ``text_features`` [captions, dim]
    need not be normalised; ``caption_to_image[j]`` is the index of caption
    j's image. Every image needs at least one caption.
    """
    if not ks or any(int(k) < 1 for k in ks):
        raise ValueError(f"ks must be positive integers, e.g. (1, 5, 10); got {ks!r}")
    ranks = retrieval_ranks(image_features, text_features, caption_to_image, chunk_size, progress)
    return {direction: {int(k): 100 * int((r < k).sum()) / max(len(r), 1) for k in ks}
            for direction, r in ranks.items()}


def format_table(recall: dict[str, dict[int, float]]) -> str:
    """A plain-text table of :func:`recall_at_k`'s result.

    >>> print(format_table({"image_to_text": {1: 50.0, 5: 75.0}, "text_to_image": {1: 30.0, 5: 55.9}}))
                   R@1    R@5
    image->text   50.0   75.0
    text->image   30.0   55.9
    """
    ks = sorted(recall["image_to_text"])
    lines = [" " * 11 + "".join(f"{f'R@{k}':>7s}" for k in ks)]
    for direction, label in (("image_to_text", "image->text"), ("text_to_image", "text->image")):
        lines.append(f"{label:11s}" + "".join(f"{recall[direction][k]:7.1f}" for k in ks))
    return "\n".join(lines)


@torch.no_grad()
def encode_coco(model, tokenize_fn: Callable, dataset, batch_size: int = 256, device=None,
                progress: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Encode a :class:`~clip_from_scratch.data.coco.CocoCaptions` set for :func:`recall_at_k`.

    Returns ``(image_features [images, dim], text_features [captions, dim],
    caption_to_image [captions])``, float32 on the CPU, captions in the
    dataset's order (image 0's captions first). Images come straight from the
    uint8 cache, normalised as the eval transform does; ``tokenize_fn(list of
    str) -> [n, context]`` ids (e.g. ``partial(tokenize, truncate=True)``).
    """
    from .transforms import normalize
    if device is None:
        device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    resolution = getattr(model.visual, "input_resolution", None)
    if resolution is not None and dataset.images.shape[-1] != resolution:
        raise ValueError(f"the dataset's images are {dataset.images.shape[-1]} px but the model takes "
                         f"{resolution} px: load the data with resolution={resolution}")
    image_features, text_features, caption_to_image = [], [], []
    for start in tqdm(range(0, len(dataset), batch_size), desc="images", disable=not progress, leave=False):
        pixels = normalize(dataset.images[start:start + batch_size].to(device))        # [batch, 3, R, R]
        image_features.append(model.encode_image(pixels.to(dtype)).float().cpu())
    captions = [c for per_image in dataset.captions for c in per_image]
    for index, per_image in enumerate(dataset.captions):
        caption_to_image += [index] * len(per_image)
    for start in tqdm(range(0, len(captions), batch_size), desc="captions", disable=not progress, leave=False):
        tokens = tokenize_fn(captions[start:start + batch_size]).to(device)           # [batch, context]
        text_features.append(model.encode_text(tokens).float().cpu())
    if not image_features:
        raise ValueError("the dataset is empty: there is nothing to retrieve")
    return torch.cat(image_features), torch.cat(text_features), torch.tensor(caption_to_image)

"""Zero-shot classification: a classifier built from label text (CLIP's stages 2 and 3).

Stage 2 turns class names into a weight matrix without a single labelled
image: every class name is put into prompt templates, the text encoder
embeds each prompt, and the normalised embeddings are averaged per class::

    W = zero_shot_classifier(model, ["cat", "dog"], ["a photo of a {}."], tokenizer)
    W.shape                     # [embed_dim, 2]

Stage 3 is a matrix product: ``logits = 100 * normalise(encode_image(x)) @ W``.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

#: The single prompt of the CLIP paper's baseline.
SINGLE_TEMPLATE = ("a photo of a {}.",)

#: The 18 templates the CLIP paper ensembles for CIFAR-10/100:
#: nine phrasings, each with "a" and with "the".
_PHRASINGS = ("a photo of {} {}.", "a blurry photo of {} {}.", "a black and white photo of {} {}.",
              "a low contrast photo of {} {}.", "a high contrast photo of {} {}.",
              "a bad photo of {} {}.", "a good photo of {} {}.", "a photo of {} small {}.",
              "a photo of {} big {}.")
CIFAR_TEMPLATES = tuple(p.replace("{} ", article + " ", 1) for p in _PHRASINGS for article in ("a", "the"))

TEMPLATES = {"single": SINGLE_TEMPLATE, "ensemble": CIFAR_TEMPLATES}


def check_templates(templates: Sequence[str]) -> None:
    """Every template needs exactly one ``{}`` where the class name goes."""
    if isinstance(templates, str):
        raise TypeError(f"templates must be a list of strings, not one string: use [{templates!r}]")
    if len(templates) == 0:
        raise ValueError("templates is empty: give at least one, e.g. ['a photo of a {}.']")
    for i, template in enumerate(templates):
        if not isinstance(template, str) or template.count("{}") != 1:
            raise ValueError(f"template {i} ({template!r}) must contain '{{}}' exactly once, "
                             f"where the class name goes, e.g. 'a photo of a {{}}.'")


@torch.no_grad()
def zero_shot_classifier(model, classnames: Sequence[str], templates: Sequence[str],
                         tokenizer: Callable[[list[str]], torch.Tensor] | None = None,
                         batch_size: int = 256, device: torch.device | str | None = None,
                         progress: bool = True) -> torch.Tensor:
    """Class weights ``[embed_dim, num_classes]`` from label text alone.

    Per class: encode every template filled with the class name, L2-normalise
    each embedding, average them, and normalise the mean again. Prompts are
    encoded ``batch_size`` at a time, so 100 classes x 18 templates never sit
    in the model at once.
    """
    if isinstance(classnames, str) or len(classnames) == 0:
        raise ValueError("classnames must be a non-empty list of class names, e.g. ['cat', 'dog']")
    check_templates(templates)
    if tokenizer is None:
        from .tokenizer import tokenize as tokenizer
    if device is None:
        device = next(model.parameters()).device
    prompts = [template.format(name) for name in classnames for template in templates]
    embeddings = []
    for start in tqdm(range(0, len(prompts), batch_size), desc="class prompts",
                      disable=not progress, leave=False):
        tokens = tokenizer(prompts[start:start + batch_size]).to(device)
        embeddings.append(F.normalize(model.encode_text(tokens).float(), dim=-1))
    per_prompt = torch.cat(embeddings).view(len(classnames), len(templates), -1)
    class_embeddings = F.normalize(per_prompt.mean(dim=1), dim=-1)  # [classes, embed_dim]
    return class_embeddings.T.contiguous()                           # [embed_dim, classes]


def zero_shot_logits(image_features: torch.Tensor, classifier: torch.Tensor,
                     scale: float = 100.0) -> torch.Tensor:
    """``scale * normalise(image_features) @ classifier``: [images, classes]."""
    if image_features.shape[-1] != classifier.shape[0]:
        raise ValueError(f"image features have width {image_features.shape[-1]} but the classifier "
                         f"expects {classifier.shape[0]}: were they built with the same model?")
    return scale * F.normalize(image_features.float(), dim=-1) @ classifier


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, ks: Sequence[int] = (1, 5)) -> dict[int, torch.Tensor]:
    """For each k, a bool per example: is the true label among the k best classes?

    >>> topk_correct(torch.tensor([[0.1, 0.9], [0.8, 0.2]]), torch.tensor([1, 1]), ks=(1, 2))[1]
    tensor([ True, False])
    """
    ranked = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices   # [images, k]
    hits = ranked == labels[:, None]
    return {k: hits[:, :k].any(dim=1) for k in ks}

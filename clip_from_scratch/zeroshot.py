"""Zero-shot classification: a classifier built from label text (CLIP's stages 2 and 3).

Stage 2 turns class names into a weight matrix without a single labelled
image: every class name is put into prompt templates, the text encoder
embeds each prompt, and the normalised embeddings are averaged per class::

    W = zero_shot_classifier(model, ["cat", "dog"], ["a photo of a {}."], tokenizer)
    W.shape                     # [embed_dim, 2]

Stage 3 is a matrix product: ``logits = 100 * normalise(encode_image(x)) @ W``.

Over a whole labelled test set, :func:`evaluate` does both stages and scores
them (top-1/top-5, per-class accuracy, the confusion matrix)::

    result = evaluate(model, cifar_dataset("cifar100", transform=preprocess), names, CIFAR_TEMPLATES)
    print(result.table())

``clip-from-scratch zeroshot`` (``cli.py``) wraps that for the command line.
"""
from __future__ import annotations

from dataclasses import dataclass, field
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

#: The named prompt sets ``clip-from-scratch zeroshot --templates`` offers.
TEMPLATE_SETS = {"single": SINGLE_TEMPLATE, "ensemble": CIFAR_TEMPLATES}


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


@torch.no_grad()
def zero_shot_accuracy(model, tokenizer: Callable, images: torch.Tensor, labels: torch.Tensor,
                       classnames: Sequence[str], templates: Sequence[str], batch_size: int = 500) -> float:
    """Top-1 (%) of uint8 images ``[N, 3, R, R]`` classified among ``classnames``: training's quick score.

    ``tokenizer(texts)`` returns the model's token ids (for a course run:
    its own BPE at its own context length). The model is left in the mode it
    was in.
    """
    from .transforms import normalize
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    classifier = zero_shot_classifier(model, classnames, templates, tokenizer=tokenizer, device=device,
                                      progress=False)
    features = torch.cat([model.encode_image(normalize(chunk.to(device))) for chunk in images.split(batch_size)])
    correct = topk_correct(zero_shot_logits(features, classifier), labels.to(device), ks=(1,))[1]
    model.train(was_training)
    return 100 * correct.float().mean().item()


# --- Evaluation: stage 3 over a whole test set ------------------------------------------------

@dataclass
class ZeroShotResult:
    """What a zero-shot evaluation measured, with helpers to read it.

    ``confusion[i, j]`` counts images of true class ``i`` predicted as ``j``
    (top-1), so its diagonal holds the hits and each row sums to the number of
    images of that class.
    """
    classnames: list[str]
    confusion: torch.Tensor                      # [classes, classes] int64
    topk: dict[int, float]                       # k -> fraction of images with the label in the k best
    templates: list[str] = field(default_factory=list)

    @property
    def num_images(self) -> int:
        return int(self.confusion.sum())

    @property
    def top1(self) -> float:
        return self.topk[1]

    @property
    def top5(self) -> float | None:
        return self.topk.get(5)

    @property
    def class_counts(self) -> torch.Tensor:
        return self.confusion.sum(dim=1)         # [classes] images per true class

    @property
    def per_class_accuracy(self) -> list[float | None]:
        """Top-1 accuracy of each class; ``None`` for a class with no test images."""
        hits, counts = self.confusion.diag(), self.class_counts
        return [None if c == 0 else h / c for h, c in zip(hits.tolist(), counts.tolist())]

    def most_confused(self, n: int = 10) -> list[tuple[str, str, int]]:
        """The ``n`` largest off-diagonal cells: ``(true class, predicted as, images)``."""
        off_diagonal = self.confusion.clone()
        off_diagonal.fill_diagonal_(0)
        counts, flat = off_diagonal.flatten().sort(descending=True, stable=True)
        num_classes = len(self.classnames)
        return [(self.classnames[i // num_classes], self.classnames[i % num_classes], int(c))
                for c, i in zip(counts.tolist()[:n], flat.tolist()[:n]) if c > 0]

    def table(self, worst: int = 5) -> str:
        """A plain-text report: overall accuracy, the weakest classes, the most confused pairs."""
        lines = [f"images: {self.num_images}   classes: {len(self.classnames)}   "
                 f"templates: {len(self.templates) or '?'}"]
        lines += [f"top-{k} accuracy: {100 * v:6.2f}%" for k, v in sorted(self.topk.items())]
        scored = [(a, name) for a, name in zip(self.per_class_accuracy, self.classnames) if a is not None]
        if scored:
            lines.append("weakest classes (top-1):")
            lines += [f"  {name:>20s}: {100 * a:6.2f}%" for a, name in sorted(scored)[:worst]]
        pairs = self.most_confused(worst)
        if pairs:
            lines.append("most confused (true -> predicted: images):")
            lines += [f"  {t:>20s} -> {p}: {c}" for t, p, c in pairs]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """JSON-ready: every figure, plus the confusion matrix as nested lists."""
        return {
            "num_images": self.num_images,
            "classnames": list(self.classnames),
            "templates": list(self.templates),
            "top1": self.top1,
            "top5": self.top5,
            "topk": {str(k): v for k, v in self.topk.items()},
            "per_class_accuracy": dict(zip(self.classnames, self.per_class_accuracy)),
            "most_confused": [list(p) for p in self.most_confused(20)],
            "confusion": self.confusion.tolist(),
        }


def zero_shot_metrics(logits: torch.Tensor, labels: torch.Tensor, classnames: Sequence[str],
                      ks: Sequence[int] = (1, 5), templates: Sequence[str] = ()) -> ZeroShotResult:
    """Accuracy figures from logits ``[images, classes]`` and true labels ``[images]``.

    >>> r = zero_shot_metrics(torch.tensor([[2., 1.], [2., 1.]]), torch.tensor([0, 1]), ["cat", "dog"], ks=(1,))
    >>> r.top1, r.per_class_accuracy, r.most_confused()
    (0.5, [1.0, 0.0], [('dog', 'cat', 1)])
    """
    num_classes = len(classnames)
    if logits.ndim != 2 or logits.shape[1] != num_classes:
        raise ValueError(f"logits have shape {tuple(logits.shape)}, expected [images, {num_classes}] "
                         f"for {num_classes} class names")
    labels = torch.as_tensor(labels).long().cpu()
    logits = logits.cpu()
    if labels.shape != (logits.shape[0],):
        raise ValueError(f"{logits.shape[0]} rows of logits but labels have shape {tuple(labels.shape)}")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in 0..{num_classes - 1} (one per class name), "
                         f"got {int(labels.min())}..{int(labels.max())}")
    ks = [k for k in ks if k <= num_classes] or [1]  # top-5 of 3 classes is meaningless
    correct = topk_correct(logits, labels, ks)
    predicted = logits.argmax(dim=1)
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.long)
    confusion.index_put_((labels, predicted), torch.ones_like(labels), accumulate=True)
    count = max(len(labels), 1)
    topk = {k: float(hit.sum()) / count for k, hit in correct.items()}
    return ZeroShotResult(list(classnames), confusion, topk, list(templates))


@torch.no_grad()
def encode_images(model, images, batch_size: int = 128, device=None,
                   progress: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode a whole test set: ``(features [N, embed_dim] float32 on the CPU, labels [N])``.

    ``images`` is a dataset or DataLoader of ``(image tensor, label)``, or a
    pair of tensors ``(images [N, 3, H, W], labels [N])``.
    """
    if device is None:
        device = next(model.parameters()).device
    if isinstance(images, (tuple, list)) and len(images) == 2 and torch.is_tensor(images[0]):
        images = torch.utils.data.TensorDataset(images[0], torch.as_tensor(images[1]))
    if not isinstance(images, torch.utils.data.DataLoader):
        images = torch.utils.data.DataLoader(images, batch_size=batch_size, shuffle=False)
    dtype = next(model.parameters()).dtype  # fp16 weights want fp16 pixels
    features, labels = [], []
    for pixels, label in tqdm(images, desc="images", disable=not progress, leave=False):
        features.append(model.encode_image(pixels.to(device, dtype)).float().cpu())
        labels.append(torch.as_tensor(label))
    if not features:
        raise ValueError("the test set is empty: there are no images to classify")
    return torch.cat(features), torch.cat(labels)


def evaluate(model, images, classnames: Sequence[str], templates: Sequence[str] = CIFAR_TEMPLATES,
             tokenizer=None, classifier: torch.Tensor | None = None, batch_size: int = 128,
             device=None, ks: Sequence[int] = (1, 5), progress: bool = True) -> ZeroShotResult:
    """Zero-shot accuracy of ``model`` on a labelled image set: stages 2 and 3 end to end.

    Builds the classifier from ``classnames`` x ``templates`` (unless one is
    given), encodes every image, and scores the logits: top-1/top-5, per-class
    accuracy and the confusion matrix (see :class:`ZeroShotResult`)::

        test = cifar_dataset("cifar100", transform=preprocess)
        result = evaluate(model, test, classnames(test))
        print(result.table())
    """
    if isinstance(classnames, str) or len(classnames) == 0:
        raise ValueError("classnames must be a non-empty list of class names, e.g. ['cat', 'dog']")
    if classifier is None:
        classifier = zero_shot_classifier(model, classnames, templates, tokenizer,
                                          device=device, progress=progress)
    elif classifier.shape[1] != len(classnames):
        raise ValueError(f"the classifier has {classifier.shape[1]} columns but there are "
                         f"{len(classnames)} class names: build it from the same list")
    features, labels = encode_images(model, images, batch_size, device, progress)
    logits = zero_shot_logits(features, classifier.float().cpu())    # [images, classes]
    return zero_shot_metrics(logits, labels, classnames, ks, templates)

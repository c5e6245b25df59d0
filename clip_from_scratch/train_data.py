"""What a run trains on and how it is scored: shapes (offline) or COCO captions.

Both datasets become the same thing, :class:`~clip_from_scratch.data.pairs.ImageCaptionPairs`
(uint8 images + every caption of each image), so the loop never asks which
one it has. Each comes with its own evaluation:

* **shapes** — zero-shot top-1 on colour x shape pairs training never showed
  (``metrics["zeroshot_top1"]``);
* **COCO** — image <-> text retrieval on val2017 (recall@1/5/10 both ways,
  ``metrics["retrieval"]``), and at the end CIFAR-10/100 zero-shot, one
  prompt and the 18-prompt ensemble, when CIFAR is on disk
  (``metrics["cifar100"] = {"single": top1, "ensemble": top1}``).

Train on train2017, evaluate on val2017: the Karpathy 5k test split takes its
images from val2014, most of which are in train2017.
"""
from __future__ import annotations

import torch

from .data.pairs import ImageCaptionPairs
from .errors import TrainingError
from .model import evaluation_mode
from .objectives import CLIPWithObjective, zeroshot_top1
from .train_config import TrainConfig, available_memory_bytes
from .transforms import normalize
from .zeroshot import TEMPLATE_SETS, zero_shot_accuracy


def load_pairs(config: TrainConfig, rank: int = 0, world_size: int = 1) -> ImageCaptionPairs:
    """The training pairs ``config`` asks for (COCO is fetched and cached on first use)."""
    if config.data == "shapes":
        return shapes_pairs(config)
    return coco_pairs(config, "train2017", config.num_images, rank, world_size)


def shapes_pairs(config: TrainConfig) -> ImageCaptionPairs:
    from .data import shapes
    needed = config.num_images * 3 * config.image_resolution ** 2
    free = available_memory_bytes()
    if free is not None and needed > 0.8 * free:
        raise TrainingError(f"{config.num_images:,} shapes images at {config.image_resolution} px need "
                            f"{needed / 2**30:.1f} GiB of memory and {free / 2**30:.1f} GiB is free: "
                            f"ask for fewer with --num-images")
    data = shapes.ShapesDataset(
        config.num_images, config.image_resolution, "train", config.seed, config.max_shapes,
        spread=config.spread, partial=config.partial_captions, heldout=config.heldout,
        shape_only=config.shape_only, colour_only=config.colour_only)
    if not config.hard_negatives:
        images, captions = data.tensors()
        return ImageCaptionPairs(images, [[c] for c in captions], "shapes")
    images, captions, negatives = data.tensors(negatives=tuple(config.negative_kinds.split(",")))
    return ImageCaptionPairs(images, [[c] for c in captions], "shapes", negatives=[[n] for n in negatives])


def coco_pairs(config: TrainConfig, split: str, max_images: int | None, rank: int = 0,
               world_size: int = 1) -> ImageCaptionPairs:
    """A COCO split from its uint8 cache; process 0 fetches what is missing while the others wait."""
    from .data import coco
    if rank == 0:
        dataset = coco.CocoCaptions(split=split, resolution=config.image_resolution, max_images=max_images,
                                    root=config.data_root, download=True, progress=config.progress)
    if world_size > 1:
        import torch.distributed as dist
        dist.barrier()
    if rank != 0:
        dataset = coco.CocoCaptions(split=split, resolution=config.image_resolution, max_images=max_images,
                                    root=config.data_root, download=False, progress=False)
    if len(dataset) < 2:
        raise TrainingError(f"COCO {split} has only {len(dataset)} usable image(s) in {dataset.cache_dir}; "
                            f"{dataset.stats.get('failed', 0)} are missing on the server or unreadable (their "
                            f"reasons are in its meta.json). Check that {coco.URL_ENV_VAR} (if set) points at a COCO "
                            f"mirror, then delete that folder and run again.")
    return ImageCaptionPairs(dataset.images, dataset.captions, f"coco {split}")


# ----------------------------------------------------------------------------- evaluations
class ShapesEvaluation:
    """Zero-shot top-1 (%) on held-out colour x shape pairs, among all 30 colour x shape names."""
    metric = "zeroshot_top1"

    def __init__(self, config: TrainConfig):
        from .data import shapes
        self.config = config
        self.set = shapes.zeroshot_set(config.zeroshot_images, config.image_resolution, config.seed,
                                       config.spread)
        self.chance = 100 / len(self.set["classnames"])
        self.heldout_pairs = [" ".join(pair) for pair in shapes.HELD_OUT]

    def score(self, model, tokenize) -> float:
        if isinstance(model, CLIPWithObjective):   # bow, captioning: each scores the prompts its own way
            return zeroshot_top1(model.objective, model, tokenize, normalize(self.set["images"]), self.set["labels"],
                                 self.set["classnames"], self.set["templates"])
        return zero_shot_accuracy(model, tokenize, self.set["images"], self.set["labels"],
                                 self.set["classnames"], self.set["templates"])

    def final(self, model, tokenize) -> dict:
        results = {"zeroshot_top1": self.score(model, tokenize), "chance": self.chance,
                   "heldout_pairs": self.heldout_pairs}
        if self.config.max_shapes >= 2:   # two shapes a scene: does it bind colours to shapes? (chapter 09)
            from .probes import binding_probes
            results["binding"] = binding_probes(model, tokenize, self.config.image_resolution, seed=self.config.seed)
        return results


class CocoEvaluation:
    """Retrieval on val2017 (the score: mean of recall@1/5/10 both ways), CIFAR zero-shot at the end."""
    metric = "mean_recall"

    def __init__(self, config: TrainConfig, rank: int = 0, world_size: int = 1):
        self.config = config
        self.val = coco_pairs(config, "val2017", config.eval_images, rank, world_size)

    @torch.no_grad()
    def retrieval(self, model, tokenize) -> dict:
        """recall@1/5/10 (%) both ways, keyed ``"1"``, ``"5"``, ``"10"`` as metrics.json stores them."""
        from .retrieval import encode_coco, recall_at_k
        with evaluation_mode(model):
            features = encode_coco(model, tokenize, self.val, progress=False)
        recall = recall_at_k(*features, ks=(1, 5, 10))
        return {direction: {str(k): round(v, 2) for k, v in values.items()} for direction, values in recall.items()}

    def score(self, model, tokenize) -> float:
        return mean_recall(self.retrieval(model, tokenize))

    def final(self, model, tokenize) -> dict:
        recall = self.retrieval(model, tokenize)
        results = {"mean_recall": mean_recall(recall), "retrieval": recall, "retrieval_images": len(self.val)}
        if self.config.cifar:
            for name in ("cifar10", "cifar100"):
                accuracy = cifar_zero_shot(model, tokenize, name, self.config.data_root)
                if accuracy is not None:
                    results[name] = accuracy
        return results


def mean_recall(recall: dict) -> float:
    """The mean of recall@1/5/10 in both directions: one number to watch during training."""
    values = [v for direction in recall.values() for v in direction.values()]
    return round(sum(values) / len(values), 2)


@torch.no_grad()
def cifar_zero_shot(model, tokenize, name: str, root=None) -> dict | None:
    """``{"single": top1, "ensemble": top1}`` (%) on CIFAR's test set, or None when CIFAR is not on disk."""
    from .data import cifar
    from .transforms import eval_transform
    from .zeroshot import encode_images, zero_shot_classifier, zero_shot_logits, zero_shot_metrics
    try:
        test = cifar.cifar_dataset(name, train=False, root=root, download_missing=False, progress=False,
                                   transform=eval_transform(model.config.image_resolution))
    except cifar.CIFARUnavailable:
        return None
    device = next(model.parameters()).device
    names = cifar.classnames(test)
    accuracy = {}
    with evaluation_mode(model):
        features, labels = encode_images(model, test, device=device, progress=False)
        for kind, templates in TEMPLATE_SETS.items():
            classifier = zero_shot_classifier(model, names, templates, tokenizer=tokenize, device=device,
                                              progress=False)
            result = zero_shot_metrics(zero_shot_logits(features, classifier.float().cpu()), labels, names,
                                       (1, 5), templates)
            accuracy[kind] = round(100 * result.top1, 2)
    return accuracy


def make_evaluation(config: TrainConfig, rank: int = 0, world_size: int = 1):
    return ShapesEvaluation(config) if config.data == "shapes" else CocoEvaluation(config, rank, world_size)

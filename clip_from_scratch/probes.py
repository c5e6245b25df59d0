"""Does the model know *which* shape is red, and *what* is left of what? Probes on two-object scenes.

Each probe item is a picture, its true caption, and a minimally different
false caption (ARO, Yuksekgonul et al. 2023). The model passes an item when it
scores the true caption higher; chance is 50%::

    attribute_swap     "a red circle and a blue square."      vs  "a blue circle and a red square."
    relation_swap      "a red circle to the left of a blue square."  vs  "a blue square to the left of a red circle."
    word_order         "a red circle above a blue square."    vs  "square a above red blue a circle."
    attribute_replace  "a red circle and a blue square."      vs  "a red circle and a green square."  (control)

The first three use the very same words in another order: a model whose
text features are a bag of words cannot tell them apart. The control changes
a word: any model that sees colours passes it.

The **blind** scores (``blind_<probe>``) answer SugarCrepe's warning (Hsieh et
al. 2023): some false captions can be spotted without looking. The blind
model is the same model with its eyes shut: it scores each caption against
the *average* image feature of the probe pictures, so it knows what captions
of this world look like but not what this picture shows. Where the blind
score is well above 50% (shuffled words are ungrammatical), a high probe
score says little about vision. ``binding_probes`` returns both::

    scores = binding_probes(model, tokenize, resolution=32, n=200)
    scores["attribute_swap"], scores["blind_attribute_swap"]      # percentages, chance 50
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from .data import relations, shapes
from .transforms import normalize

#: The probes, in the order tables show them; attribute_replace is the control every seeing model passes.
PROBES = ("attribute_swap", "relation_swap", "word_order", "attribute_replace")


def probe_set(kind: str, n: int = 200, resolution: int = 32, seed: int = 0) -> dict:
    """``n`` probe items: ``images`` (uint8 [n, 3, R, R]), ``true`` and ``false`` captions, ``scenes``.

    Drawn from their own random stream (not the training data's): the same
    pictures at any ``resolution``, for any model.

    >>> items = probe_set("relation_swap", n=2, resolution=16)
    >>> items["images"].shape, items["true"][0] in relations.true_captions(items["scenes"][0])
    (torch.Size([2, 3, 16, 16]), True)
    """
    if kind not in PROBES:
        raise ValueError(f"unknown probe {kind!r}: choose one of {PROBES}")
    images = torch.empty(n, 3, resolution, resolution, dtype=torch.uint8)
    true, false, scenes = [], [], []
    for index in range(n):
        rng = np.random.default_rng([seed, 9, PROBES.index(kind), index])
        scene = shapes.sample_pair_scene(rng)
        # relation_swap needs a relation; the others use every kind of pair caption
        description = relations.describe(scene, rng, relation_share=1.0 if kind == "relation_swap" else 0.5)
        if kind == "attribute_replace":
            wrong = shapes.replace_attribute(relations.text(description), rng)
        else:
            wrong = relations.perturb(scene, description, kind, rng)
        images[index] = torch.from_numpy(shapes.render(scene, resolution, rng)).permute(2, 0, 1)
        true.append(relations.text(description))
        false.append(wrong)
        scenes.append(scene)
    return dict(images=images, true=true, false=false, scenes=scenes, kind=kind)


@torch.no_grad()
def probe_margins(model, tokenize: Callable, items: dict) -> dict:
    """Per item: ``seen`` = sim(image, true) - sim(image, false), ``blind`` = the same against the mean image.

    Positive margins are right answers. Similarities are cosines of the
    model's normalised features. The model is left in the mode it was in.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    image = model.encode_image(normalize(items["images"].to(device))).float()         # [n, embed_dim]
    image = image / image.norm(dim=-1, keepdim=True)
    texts = {}
    for side in ("true", "false"):
        features = model.encode_text(tokenize(items[side]).to(device)).float()        # [n, embed_dim]
        texts[side] = features / features.norm(dim=-1, keepdim=True)
    mean_image = image.mean(dim=0, keepdim=True)                                       # [1, embed_dim]: eyes shut
    mean_image = mean_image / mean_image.norm(dim=-1, keepdim=True)
    model.train(was_training)
    return dict(seen=((image * texts["true"]).sum(-1) - (image * texts["false"]).sum(-1)).cpu(),
                blind=((mean_image * texts["true"]).sum(-1) - (mean_image * texts["false"]).sum(-1)).cpu())


def accuracy(margins: torch.Tensor) -> float:
    """% of items with a positive margin, a tie counting half (chance: 50).

    >>> accuracy(torch.tensor([0.3, -0.1, 0.0, 0.2]))
    62.5
    """
    return round(100 * ((margins > 0).float() + 0.5 * (margins == 0).float()).mean().item(), 1)


def binding_probes(model, tokenize: Callable, resolution: int, n: int = 200, seed: int = 0,
                   probes: tuple[str, ...] = PROBES) -> dict:
    """Every probe's accuracy (%) and its blind baseline's (``blind_<probe>``); chance is 50."""
    scores = {}
    for kind in probes:
        margins = probe_margins(model, tokenize, probe_set(kind, n, resolution, seed))
        scores[kind] = accuracy(margins["seen"])
        scores[f"blind_{kind}"] = accuracy(margins["blind"])
    return scores


def format_probes(scores: dict) -> str:
    """The probes as a small table: each probe's accuracy and its blind baseline's (chance 50%).

    >>> print(format_probes({"attribute_swap": 55.0, "blind_attribute_swap": 50.5}))
    probe (chance 50%)     model  blind
    attribute_swap          55.0   50.5
    """
    lines = [f"{'probe (chance 50%)':<20} {'model':>7} {'blind':>6}"]
    for kind in PROBES:
        if kind in scores:
            lines.append(f"{kind:<20} {scores[kind]:>7.1f} {scores.get('blind_' + kind, float('nan')):>6.1f}")
    return "\n".join(lines)

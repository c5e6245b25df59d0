"""Two objects in one picture: captions that bind attributes and name relations, and their perturbations.

A caption of a two-object scene is built from a *description*, plain data
that says which object is named first, with which words, and how the two are
related. Keeping the description (not just the text) is what lets us build a
minimally different *false* caption from it::

    >>> red = dict(colour="red", shape="circle", size="small")
    >>> blue = dict(colour="blue", shape="square", size="large")
    >>> d = dict(first=red, second=blue, relation="left of", phrasing=0, sizes=(False, False))
    >>> text(d)
    'a red circle to the left of a blue square.'
    >>> text(attribute_swap(d))                      # the colours trade places
    'a blue circle to the left of a red square.'
    >>> text(relation_swap(d))                       # the objects trade places, the relation stays
    'a blue square to the left of a red circle.'

A bag-of-words model scores both false captions exactly like the true one:
the same words, in another order. ``relation=None`` is a plain conjunction
("a red circle and a blue square."). :func:`true_captions` lists every
caption the world could write for a scene, so tests can check that a
perturbation never describes the scene truly.
"""
from __future__ import annotations

import itertools

import numpy as np

#: Phrasings per relation ({a} is named first, {b} second); None: the two are only listed.
PHRASINGS = {
    None: ("a {a} and a {b}.", "a picture of a {a} and a {b}.", "there is a {a} and a {b}."),
    "left of": ("a {a} to the left of a {b}.", "a {a} is left of a {b}.", "there is a {a} to the left of a {b}."),
    "right of": ("a {a} to the right of a {b}.", "a {a} is right of a {b}.",
                 "there is a {a} to the right of a {b}."),
    "above": ("a {a} above a {b}.", "a {a} is above a {b}.", "there is a {a} above a {b}."),
    "below": ("a {a} below a {b}.", "a {a} is below a {b}.", "there is a {a} below a {b}."),
}
#: The probes' names, and the perturbations hard-negative training may draw from.
KINDS = ("attribute_swap", "relation_swap", "word_order")


def relation_between(first: dict, second: dict, axis: str) -> str:
    """How ``first`` sits relative to ``second`` along the scene's axis: 'left of', 'right of', 'above', 'below'.

    >>> relation_between(dict(x=0.2, y=0.5), dict(x=0.8, y=0.5), "horizontal")
    'left of'
    """
    if axis == "horizontal":
        return "left of" if first["x"] < second["x"] else "right of"
    return "above" if first["y"] < second["y"] else "below"   # image y grows downwards


def describe(scene: dict, rng: np.random.Generator, relation_share: float = 2 / 3) -> dict:
    """A random description of a two-object scene: which object first, which phrasing, sizes named or not."""
    objects = scene["objects"]
    order = int(rng.integers(2))
    first, second = objects[order], objects[1 - order]
    relation = relation_between(first, second, scene["axis"]) if rng.random() < relation_share else None
    phrasing = int(rng.integers(len(PHRASINGS[relation])))
    sizes = tuple(bool(s) for s in rng.random(2) < 0.5)
    return dict(first=first, second=second, relation=relation, phrasing=phrasing, sizes=sizes)


def _name(obj: dict, with_size: bool) -> str:
    return f"{obj['size']} {obj['colour']} {obj['shape']}" if with_size else f"{obj['colour']} {obj['shape']}"


def text(description: dict) -> str:
    """The caption a description stands for."""
    template = PHRASINGS[description["relation"]][description["phrasing"]]
    with_first, with_second = description["sizes"]
    return template.format(a=_name(description["first"], with_first), b=_name(description["second"], with_second))


def attribute_swap(description: dict) -> dict:
    """The same sentence with the two objects' colours exchanged ("a blue circle and a red square")."""
    first, second = description["first"], description["second"]
    return {**description, "first": {**first, "colour": second["colour"]},
            "second": {**second, "colour": first["colour"]}}


def relation_swap(description: dict) -> dict:
    """The same relation with its two objects exchanged ("a blue square to the left of a red circle").

    A conjunction has no relation to swap: it is returned as it is, and
    :func:`perturb` does not offer this kind for it.
    """
    return {**description, "first": description["second"], "second": description["first"],
            "sizes": description["sizes"][::-1]}


def shuffle_words(caption: str, rng: np.random.Generator, forbidden: set[str], tries: int = 100) -> str | None:
    """The caption's words in a random order (the full stop stays last), never one of ``forbidden``.

    Returns None when ``tries`` shuffles all land on a forbidden caption (for very short captions).
    """
    words = caption.rstrip(".").split()
    for _ in range(tries):
        shuffled = " ".join(words[i] for i in rng.permutation(len(words))) + "."
        if shuffled != caption and shuffled not in forbidden:
            return shuffled
    return None


def true_captions(scene: dict) -> set[str]:
    """Every caption :func:`describe` + :func:`text` could write for a two-object scene."""
    captions = set()
    for first, second in itertools.permutations(scene["objects"]):
        for relation in (None, relation_between(first, second, scene["axis"])):
            for phrasing, sizes in itertools.product(range(len(PHRASINGS[relation])),
                                                     itertools.product((False, True), repeat=2)):
                captions.add(text(dict(first=first, second=second, relation=relation, phrasing=phrasing,
                                       sizes=sizes)))
    return captions


def kinds_for(description: dict, kinds=KINDS) -> tuple[str, ...]:
    """The perturbations that make sense for a description (a conjunction has no relation to swap)."""
    return tuple(k for k in kinds if k != "relation_swap" or description["relation"] is not None)


def perturb(scene: dict, description: dict, kind: str, rng: np.random.Generator) -> str:
    """A false caption of ``scene``, minimally different from ``text(description)``.

    ``kind``: ``"attribute_swap"``, ``"relation_swap"`` (relations only) or
    ``"word_order"``. Two-object scenes hold two objects that differ in both
    colour and shape and sit apart along one axis, so the swaps are always
    false; a shuffle is drawn again until it is.
    """
    if kind == "attribute_swap":
        return text(attribute_swap(description))
    if kind == "relation_swap":
        if description["relation"] is None:
            raise ValueError("relation_swap needs a caption with a relation, not a conjunction")
        return text(relation_swap(description))
    if kind == "word_order":
        shuffled = shuffle_words(text(description), rng, true_captions(scene))
        if shuffled is None:   # cannot happen for these captions (6+ words), but never return a truth
            return text(attribute_swap(description))
        return shuffled
    raise ValueError(f"unknown perturbation {kind!r}: choose one of {KINDS}")

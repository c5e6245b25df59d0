"""Shapes: a tiny, offline stand-in for COCO captions, drawn on the fly.

**This is not COCO.** It is a procedurally generated set of scenes (coloured
shapes of several sizes at several positions on a plain, slightly noisy
background) with template captions, so that every part of CLIP can be trained
and tested in minutes on a laptop CPU with no download. Everything is
deterministic: image ``i`` of a split with a given seed is always the same,
whatever the dataset size or resolution.

    >>> data = ShapesDataset(4, resolution=32, seed=0)
    >>> image, caption = data[0]          # uint8 [3, 32, 32], a str
    >>> images, captions = data.tensors() # uint8 [4, 3, 32, 32], 4 strs

Two objects (``max_shapes=2``). A scene with two shapes lays them out one
per half of the picture, side by side or one above the other, and its caption
binds each colour to its shape and often names the relation: "a red circle to
the left of a blue square.", "a blue square is right of a red circle.", "a
green cross above a pink diamond." (see ``relations.py``). The two differ in
colour *and* shape, so swapping their colours or their places always gives a
false caption: the probes and the hard negatives of chapter 09 are built that
way. Two objects need more pixels than one: at 32 px each is 8-13 px across.

Zero-shot. A few colour x shape combinations (``HELD_OUT``) never appear in
the training split. The ``"zeroshot"`` split holds only those, one shape per
image, each labelled with its index in ``CLASSNAMES`` (all 30 combinations,
e.g. ``"red circle"``). Classifying them with prompts such as
``"a photo of a red circle."`` (``TEMPLATES``) measures whether the model
learnt *red* and *circle* separately, not just the pairs it saw.
"""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter

from . import relations

#: Colour names and their RGB values (far apart, so a 32-pixel image can tell them).
COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 70, 230),
    "yellow": (240, 220, 30),
    "purple": (140, 40, 190),
    "pink": (250, 110, 190),
}
SHAPES = ("circle", "square", "triangle", "diamond", "cross")
SIZES = ("small", "large")
#: Background names and RGB values; shapes are never drawn on a background too close to them.
BACKGROUNDS = {"white": (245, 245, 245), "black": (15, 15, 15), "gray": (128, 128, 128)}

#: Colour x shape pairs kept out of training: every colour once, every shape at least once.
HELD_OUT = (("red", "circle"), ("green", "triangle"), ("blue", "cross"),
            ("yellow", "square"), ("purple", "diamond"), ("pink", "triangle"))
CLASSES = tuple((colour, shape) for colour in COLOURS for shape in SHAPES)
CLASSNAMES = tuple(f"{colour} {shape}" for colour, shape in CLASSES)
#: Indices into CLASSNAMES of the held-out pairs (the labels of the "zeroshot" split).
HELD_OUT_LABELS = tuple(CLASSES.index(pair) for pair in HELD_OUT)
#: Prompt templates for zero-shot classification with shapes class names.
TEMPLATES = ("a photo of a {}.", "a drawing of a {}.", "a {}.", "a picture of a {}.")

# The ways a caption may describe one object or a whole scene ({obj} = "[size ]colour shape").
PHRASINGS = (
    "a {obj}.",
    "a photo of a {obj}.",
    "a drawing of a {obj}.",
    "a picture of a {obj} on a {background} background.",
    "a {obj} {position}.",
    "there is a {obj} {position}.",
    "a {obj} on a {background} background.",
)
# Some captions name only one attribute. They teach "red" and "circle" apart from each
# other, which is what lets the model name pairs it never saw together.
PARTIAL_PHRASINGS = ("a {colour} shape.", "a {size} {colour} shape.", "a {shape}.", "a {size} {shape}.")
#: Default distance from the centre a shape may sit (0 centred .. 1 anywhere it fits): near the
#: centre, a 4 x 4 patch grid learns shapes in a minute; the train command uses the same default.
SPREAD = 0.25
_SPLITS = {"train": 0, "val": 1, "zeroshot": 2}


def sample_scene(rng: np.random.Generator, split: str = "train", max_shapes: int = 1,
                 spread: float = SPREAD, heldout: str = "pairs") -> dict:
    """A scene as plain data: background plus 1..max_shapes objects (colour, shape, size, x, y).

    ``spread`` is how far from the centre a shape may sit: 0 always centred, 1 anywhere it fits.
    ``heldout="pairs"``: training never draws a held-out pair; ``"captions"``: it may, but
    :func:`caption` then names only one of its two attributes.
    """
    background = str(rng.choice(list(BACKGROUNDS)))
    count = 1 if split == "zeroshot" else int(rng.integers(1, max_shapes + 1))
    if count == 2:
        return sample_pair_scene(rng, background)
    objects, tries = [], 0
    while len(objects) < count:
        tries += 1
        if tries % 50 == 0:
            objects = []  # boxed in by earlier shapes: start the layout over
        if split == "zeroshot":
            colour, shape = HELD_OUT[int(rng.integers(len(HELD_OUT)))]
        else:
            colour, shape = CLASSES[int(rng.integers(len(CLASSES)))]
            if (colour, shape) in HELD_OUT and heldout == "pairs":
                continue  # never shown in training: this is what makes zero-shot a real test
        size = str(rng.choice(SIZES))
        radius = (0.22 if size == "small" else 0.36) * float(rng.uniform(0.9, 1.1)) / max(1, count) ** 0.5
        x, y = (0.5 + spread * float(v) for v in rng.uniform(radius - 0.5, 0.5 - radius, size=2))
        overlaps = any(abs(x - o["x"]) < radius + o["radius"] and abs(y - o["y"]) < radius + o["radius"]
                       for o in objects)
        if overlaps and tries < 500:
            continue  # overlapping: draw again (after 500 tries, e.g. with a small spread, let them overlap)
        objects.append(dict(colour=colour, shape=shape, size=size, radius=radius, x=x, y=y))
    return dict(background=background, objects=objects)


def sample_pair_scene(rng: np.random.Generator, background: str | None = None) -> dict:
    """Two shapes, one in each half of the picture (left/right or top/bottom), never overlapping.

    They differ in colour and in shape, and neither they nor their colours
    swapped make a held-out pair (in either ``heldout`` mode: a pair caption,
    true or false, always names both attributes), so single-object zero-shot
    stays a test of pairs never seen or read. ``axis`` says
    which relation the scene shows: ``"horizontal"`` (left of / right of) or
    ``"vertical"`` (above / below). Each shape sits 0.22-0.27 of the side from
    the centre along the axis, and its radius is at most 0.21: they never touch.
    """
    background = background or str(rng.choice(list(BACKGROUNDS)))
    axis = "horizontal" if rng.random() < 0.5 else "vertical"
    allowed = [pair for pair in CLASSES if pair not in HELD_OUT]
    while True:
        first, second = (allowed[int(i)] for i in rng.choice(len(allowed), size=2, replace=False))
        swapped = ((first[0], second[1]), (second[0], first[1]))   # what swapping their colours would name
        if first[0] != second[0] and first[1] != second[1] and not any(pair in HELD_OUT for pair in swapped):
            break
    objects = []
    for side, (colour, shape) in zip((-1, 1), (first, second)):
        size = str(rng.choice(SIZES))
        radius = (0.13 if size == "small" else 0.19) * float(rng.uniform(0.9, 1.1))
        along = 0.5 + side * float(rng.uniform(0.22, 0.27))      # left/top half, then right/bottom half
        across = 0.5 + float(rng.uniform(-0.1, 0.1))
        x, y = (along, across) if axis == "horizontal" else (across, along)
        objects.append(dict(colour=colour, shape=shape, size=size, radius=radius, x=x, y=y))
    return dict(background=background, objects=objects, axis=axis)


def _polygon(shape: str, x: float, y: float, r: float) -> list[tuple[float, float]]:
    if shape == "square":
        r *= 0.85  # same visual area as the circle
        return [(x - r, y - r), (x + r, y - r), (x + r, y + r), (x - r, y + r)]
    if shape == "diamond":
        return [(x, y - r), (x + r, y), (x, y + r), (x - r, y)]
    if shape == "triangle":
        return [(x, y - r), (x + r, y + 0.8 * r), (x - r, y + 0.8 * r)]
    if shape == "cross":
        t = r * 0.35
        return [(x - t, y - r), (x + t, y - r), (x + t, y - t), (x + r, y - t), (x + r, y + t), (x + t, y + t),
                (x + t, y + r), (x - t, y + r), (x - t, y + t), (x - r, y + t), (x - r, y - t), (x - t, y - t)]
    raise ValueError(f"unknown shape {shape!r}; known: {SHAPES}")


def render(scene: dict, resolution: int, rng: np.random.Generator, noise: float = 6.0,
           supersample: int = 2) -> np.ndarray:
    """Draw a scene: uint8 [resolution, resolution, 3]. Drawn larger, then shrunk, for smooth edges."""
    size = resolution * supersample
    image = Image.new("RGB", (size, size), BACKGROUNDS[scene["background"]])
    draw = ImageDraw.Draw(image)
    for obj in scene["objects"]:
        jitter = rng.integers(-15, 16, size=3)  # no two reds are exactly the same red
        rgb = obj.get("rgb") or COLOURS[obj["colour"]]   # "rgb": an unnamed colour (see off_palette)
        fill = tuple(int(np.clip(c + j, 0, 255)) for c, j in zip(rgb, jitter))
        x, y, r = obj["x"] * size, obj["y"] * size, obj["radius"] * size
        if obj["shape"] == "circle":
            draw.ellipse([x - r, y - r, x + r, y + r], fill=fill)
        else:
            draw.polygon(_polygon(obj["shape"], x, y, r), fill=fill)
    if scene.get("blurred"):   # too blurred to tell the shape, the colour still plain
        image = image.filter(ImageFilter.GaussianBlur(radius=size * 0.12))
    if supersample > 1:
        image = image.resize((resolution, resolution), Image.BOX)
    pixels = np.asarray(image, dtype=np.float32)
    pixels = pixels + rng.normal(0.0, noise, size=pixels.shape)  # a little sensor noise
    return np.clip(pixels, 0, 255).astype(np.uint8)


def _position(obj: dict) -> str:
    horizontal = "on the left" if obj["x"] < 0.4 else "on the right" if obj["x"] > 0.6 else ""
    vertical = "at the top" if obj["y"] < 0.4 else "at the bottom" if obj["y"] > 0.6 else ""
    if horizontal and vertical:
        return f"{vertical} {horizontal.replace('on the ', '')}".replace("at the ", "in the ")  # "in the top left"
    return horizontal or vertical or "in the middle"


def caption(scene: dict, rng: np.random.Generator, partial: float = 0.2) -> str:
    """One caption for a scene, in one of several phrasings, e.g. 'a small red circle on the left.'

    A fraction ``partial`` of single-shape captions name only the colour or only the shape.
    """
    def describe(obj):
        size = f"{obj['size']} " if rng.random() < 0.5 else ""
        if (obj["colour"], obj["shape"]) in HELD_OUT:   # never name a held-out pair in a caption
            return size + (f"{obj['colour']} shape" if rng.random() < 0.5 else obj["shape"])
        return f"{size}{obj['colour']} {obj['shape']}"
    objects = scene["objects"]
    if len(objects) == 2 and "axis" in scene:
        return relations.text(relations.describe(scene, rng))
    if len(objects) > 1:
        return " and ".join(f"a {describe(o)}" for o in objects) + "."
    if rng.random() < partial or (objects[0]["colour"], objects[0]["shape"]) in HELD_OUT:
        phrasing = PARTIAL_PHRASINGS[int(rng.integers(len(PARTIAL_PHRASINGS)))]
        return phrasing.format(**objects[0])
    phrasing = PHRASINGS[int(rng.integers(len(PHRASINGS)))]
    return phrasing.format(obj=describe(objects[0]), position=_position(objects[0]), background=scene["background"])


def replace_attribute(text: str, rng: np.random.Generator) -> str | None:
    """A false caption: one colour or shape word of ``text`` changed to another ("a red circle." -> "a red cross.").

    False for every scene of this world: a one-shape caption then names a
    colour or shape the shape does not have, and the two shapes of a pair
    differ in colour and in shape, so the changed one names a shape that is
    not there. Never writes a held-out pair. None if ``text`` names no colour or shape.

    >>> replace_attribute("a photo of a green circle.", np.random.default_rng(0))
    'a photo of a green diamond.'
    """
    words = text.rstrip(".").split()
    slots = [i for i, word in enumerate(words) if word in COLOURS or word in SHAPES]
    if not slots:
        return None
    while True:
        at = slots[int(rng.integers(len(slots)))]
        names = list(COLOURS) if words[at] in COLOURS else list(SHAPES)
        names.remove(words[at])
        changed = words[:at] + [names[int(rng.integers(len(names)))]] + words[at + 1:]
        new = " ".join(changed) + "."
        if not any(f"{colour} {shape}" in new for colour, shape in HELD_OUT):
            return new


def hard_negative(scene: dict, description: dict | None, text: str, rng: np.random.Generator,
                  kinds: tuple[str, ...] = relations.KINDS) -> str:
    """A false caption of ``scene`` close to its true caption ``text``: what hard-negative training contrasts.

    A two-object caption (``description`` given) gets one of ``kinds`` that
    fits it (``relations.perturb``); any other caption, or a pair caption no
    kind fits (a conjunction when only relation swaps are asked for), gets one
    attribute word replaced (:func:`replace_attribute`).
    """
    if description is not None:
        fitting = relations.kinds_for(description, kinds)
        for _ in range(100 if fitting else 0):   # a shuffle may put "red" next to "circle": draw again
            false = relations.perturb(scene, description, fitting[int(rng.integers(len(fitting)))], rng)
            if not any(f"{colour} {shape}" in false for colour, shape in HELD_OUT):
                return false
    replaced = replace_attribute(text, rng)
    if replaced is None:   # every caption of this world names a colour or a shape
        raise ValueError(f"no colour or shape to change in {text!r}: cannot build a false caption from it")
    return replaced


def off_palette(rng: np.random.Generator, background: str, min_distance: float = 90.0) -> tuple[int, int, int]:
    """A random colour far from every named colour (and the background): orange, teal, olive, ...

    A shape in such a colour can be captioned with its shape alone, and no
    held-out colour x shape pair is ever drawn.
    """
    named = np.array(list(COLOURS.values()), dtype=np.float64)
    while True:
        rgb = rng.integers(0, 256, size=3)
        if (np.linalg.norm(named - rgb, axis=1).min() > min_distance
                and np.linalg.norm(np.array(BACKGROUNDS[background]) - rgb) > 100):
            return tuple(int(c) for c in rgb)


def single_attribute_view(scene: dict, rng: np.random.Generator, shape_only: float,
                          colour_only: float) -> tuple[dict, str | None]:
    """Sometimes turn a one-shape training scene into a lesson about one attribute.

    With probability ``shape_only`` the shape gets an unnamed colour and the
    caption names only the shape ("a circle."); with ``colour_only`` the scene
    is blurred past recognition and the caption names only the colour ("a red
    shape."). Shape features then cannot lean on colour, which is what lets a
    model name a colour x shape pair it has never seen. Returns the scene and
    its caption, or the scene unchanged and None.
    """
    if shape_only + colour_only == 0 or len(scene["objects"]) != 1:
        return scene, None
    draw = rng.random()
    if draw >= shape_only + colour_only:
        return scene, None
    obj = scene["objects"][0]
    size = f"{obj['size']} " if rng.random() < 0.5 else ""
    if draw < shape_only:
        recoloured = {**obj, "rgb": off_palette(rng, scene["background"])}
        return {**scene, "objects": [recoloured]}, f"a {size}{obj['shape']}."
    return {**scene, "blurred": True}, f"a {obj['colour']} shape."


class ShapesDataset(torch.utils.data.Dataset):
    """``size`` deterministic (image, caption) pairs; item ``i`` is drawn when asked for.

    ``split``: ``"train"`` (held-out pairs excluded), ``"val"`` (another seed
    stream, same rule), or ``"zeroshot"`` (held-out pairs only, one shape each;
    ``labels`` index ``CLASSNAMES``). ``max_shapes`` > 1 puts several shapes
    in a scene ("a red circle and a blue square."); ``spread`` < 1 keeps shapes nearer the centre;
    ``partial`` is the fraction of captions that name only the colour or only the shape.
    ``shape_only`` / ``colour_only``: fractions of training scenes shown as one attribute
    (a shape in an unnamed colour, or a blurred blob): see :func:`single_attribute_view`.
    ``heldout``: ``"pairs"`` (strict: no image of a held-out pair in training) or ``"captions"``
    (their images appear, but only with captions naming one attribute: "a circle.", "a red shape.";
    zero-shot then tests naming a pair never read together, a weaker kind of generalisation).
    """

    def __init__(self, size: int, resolution: int = 32, split: str = "train", seed: int = 0,
                 max_shapes: int = 1, noise: float = 6.0, spread: float = SPREAD, partial: float = 0.2,
                 heldout: str = "pairs", shape_only: float = 0.0, colour_only: float = 0.0):
        if heldout not in ("pairs", "captions"):
            raise ValueError(f"heldout must be 'pairs' or 'captions', got {heldout!r}")
        if split not in _SPLITS:
            raise ValueError(f"unknown split {split!r}: choose one of {list(_SPLITS)}")
        if size < 1 or resolution < 8 or max_shapes < 1:
            raise ValueError(f"need size >= 1, resolution >= 8, max_shapes >= 1 "
                             f"(got {size}, {resolution}, {max_shapes})")
        self.size, self.resolution, self.split, self.seed = size, resolution, split, seed
        self.max_shapes, self.noise, self.spread, self.partial = max_shapes, noise, spread, partial
        self.heldout = heldout
        # Single-attribute views are a training device; test splits stay plain.
        self.shape_only, self.colour_only = (shape_only, colour_only) if split == "train" else (0.0, 0.0)

    def __len__(self) -> int:
        return self.size

    def scene(self, index: int) -> tuple[dict, np.random.Generator]:
        # One random stream per item: item i never depends on how many came before it.
        rng = np.random.default_rng([self.seed, _SPLITS[self.split], index])
        return sample_scene(rng, self.split, self.max_shapes, self.spread, self.heldout), rng

    def label(self, index: int) -> int:
        """Index into CLASSNAMES of the (first) shape in the scene."""
        obj = self.scene(index)[0]["objects"][0]
        return CLASSES.index((obj["colour"], obj["shape"]))

    def draw(self, index: int) -> dict:
        """Item ``index`` in full: ``scene``, ``description`` (two shapes; else None), ``caption``, ``pixels``."""
        if not 0 <= index < self.size:
            raise IndexError(f"index {index} out of range for {self.size} items")
        scene, rng = self.scene(index)
        scene, text = single_attribute_view(scene, rng, self.shape_only, self.colour_only)
        description = None
        if text is None and len(scene["objects"]) == 2:
            description = relations.describe(scene, rng)
            text = relations.text(description)
        text = text or caption(scene, rng, self.partial)
        pixels = render(scene, self.resolution, rng, self.noise)
        return dict(scene=scene, description=description, caption=text,
                    pixels=torch.from_numpy(pixels).permute(2, 0, 1))   # uint8 [3, H, W]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str]:
        item = self.draw(index)
        return item["pixels"], item["caption"]

    def negative(self, index: int, kinds: tuple[str, ...] = relations.KINDS) -> str:
        """A false caption for item ``index``, close to its true one (:func:`hard_negative`).

        Drawn from its own random stream, so asking for negatives never changes the images or captions.
        """
        item = self.draw(index)
        rng = np.random.default_rng([self.seed, _SPLITS[self.split], index, 1])
        return hard_negative(item["scene"], item["description"], item["caption"], rng, kinds)

    def tensors(self, negatives: tuple[str, ...] | None = None):
        """Draw everything once: (uint8 [size, 3, H, W], captions). Training reads from this.

        ``negatives`` (perturbation kinds, e.g. ``relations.KINDS``): also a
        false caption per image, returned third.
        """
        images = torch.empty(self.size, 3, self.resolution, self.resolution, dtype=torch.uint8)
        captions, false = [], []
        for index in range(self.size):
            item = self.draw(index)
            images[index] = item["pixels"]
            captions.append(item["caption"])
            if negatives is not None:
                rng = np.random.default_rng([self.seed, _SPLITS[self.split], index, 1])
                false.append(hard_negative(item["scene"], item["description"], item["caption"], rng, negatives))
        return (images, captions) if negatives is None else (images, captions, false)

    def labels(self) -> torch.Tensor:
        return torch.tensor([self.label(i) for i in range(self.size)])


def zeroshot_set(size: int = 600, resolution: int = 32, seed: int = 0, spread: float = SPREAD) -> dict:
    """Everything a zero-shot evaluation on held-out pairs needs.

    Returns ``images`` (uint8 [size, 3, H, W]), ``labels`` ([size], into
    ``classnames``), ``classnames`` (all 30, so chance is 1/30), ``templates``.
    """
    data = ShapesDataset(size, resolution, split="zeroshot", seed=seed, spread=spread)
    images, _ = data.tensors()
    return dict(images=images, labels=data.labels(), classnames=list(CLASSNAMES), templates=list(TEMPLATES))

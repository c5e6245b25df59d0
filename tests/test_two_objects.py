"""The two-object shapes world: one-shape data unchanged, pairs legible, false captions never true."""
import hashlib
import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clip_from_scratch.data import relations, shapes
from clip_from_scratch.data.shapes import HELD_OUT, ShapesDataset, zeroshot_set


def digest(data) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


# Computed with main's code (commit 8f7cdb0) before two-object scenes existed: the one-shape world,
# which the main command's zero-shot score rests on, must draw exactly the same images and captions.
ONE_SHAPE_DIGESTS = [
    (dict(size=64, resolution=16, seed=0, partial=0.3, shape_only=0.5, colour_only=0.25),
     "040eed3f5854bc12", "822da166268e0a29"),
    (dict(size=64, resolution=32, seed=1), "1350a18df4bb695c", "e2d2b7b165af5753"),
    (dict(size=32, resolution=16, split="val", seed=0), "4c48937deb92ce20", "34213bdcd1dd7b60"),
]


@pytest.mark.parametrize("settings_, images_digest, captions_digest", ONE_SHAPE_DIGESTS)
def test_one_shape_images_and_captions_are_byte_identical_to_before(settings_, images_digest, captions_digest):
    images, captions = ShapesDataset(**settings_).tensors()
    assert digest(images.numpy().tobytes()) == images_digest
    assert digest("|".join(captions).encode()) == captions_digest


def test_zero_shot_set_is_unchanged():
    zeroshot = zeroshot_set(60, 16)
    assert digest(zeroshot["images"].numpy().tobytes()) == "da88f0ca1fe8391a"
    assert zeroshot["labels"][:10].tolist() == [0, 16, 0, 16, 23, 23, 0, 23, 16, 14]


def test_asking_for_negatives_changes_no_image_and_no_caption():
    data = ShapesDataset(40, 32, max_shapes=2, seed=3, shape_only=0.5, colour_only=0.25)
    images, captions = data.tensors()
    with_negatives, same_captions, negatives = data.tensors(negatives=relations.KINDS)
    assert (with_negatives == images).all() and same_captions == captions and len(negatives) == 40
    assert negatives[7] == data.negative(7)


def pair_scenes(count, seed=0):
    return [shapes.sample_pair_scene(np.random.default_rng([seed, i])) for i in range(count)]


def test_two_shapes_differ_in_colour_and_shape_sit_apart_and_are_never_held_out():
    for scene in pair_scenes(500):
        a, b = scene["objects"]
        assert a["colour"] != b["colour"] and a["shape"] != b["shape"]
        assert (a["colour"], a["shape"]) not in HELD_OUT and (b["colour"], b["shape"]) not in HELD_OUT
        along = "x" if scene["axis"] == "horizontal" else "y"
        assert b[along] - a[along] > a["radius"] + b["radius"]          # apart along the axis: never touching
        for obj in (a, b):
            for v in (obj["x"], obj["y"]):
                assert obj["radius"] <= v <= 1 - obj["radius"]          # inside the picture


def test_two_shapes_are_legible_at_32_pixels():
    # Each shape spans at least 8 pixels, and the picture shows both colours.
    scene = shapes.sample_pair_scene(np.random.default_rng(5))
    pixels = shapes.render(scene, 32, np.random.default_rng(0), noise=0)
    for obj in scene["objects"]:
        assert 2 * obj["radius"] * 32 >= 8 * 0.9
        colour = np.array(shapes.COLOURS[obj["colour"]])
        assert (np.abs(pixels.astype(int) - colour).sum(-1) < 60).sum() >= 20, obj


def test_pair_captions_are_true_and_name_both_shapes_with_their_colours():
    data = ShapesDataset(300, 16, max_shapes=2, seed=1)
    pairs = 0
    for index in range(300):
        item = data.draw(index)
        if item["description"] is None:
            continue
        pairs += 1
        assert item["caption"] in relations.true_captions(item["scene"])
        for obj in item["scene"]["objects"]:
            assert f"{obj['colour']} {obj['shape']}" in item["caption"]
    assert 100 < pairs < 200   # 1 or 2 shapes, evenly


def test_relations_follow_the_picture():
    scene = dict(axis="horizontal", objects=[dict(colour="red", shape="circle", size="small", x=0.25, y=0.5),
                                             dict(colour="blue", shape="square", size="large", x=0.75, y=0.5)])
    truths = relations.true_captions(scene)
    assert "a red circle to the left of a blue square." in truths
    assert "a blue square is right of a small red circle." in truths
    assert "a red circle to the right of a blue square." not in truths
    assert "a red circle above a blue square." not in truths


def all_descriptions(scene):
    for first, second in itertools.permutations(scene["objects"]):
        for relation in (None, relations.relation_between(first, second, scene["axis"])):
            for phrasing in range(len(relations.PHRASINGS[relation])):
                for sizes in itertools.product((False, True), repeat=2):
                    yield dict(first=first, second=second, relation=relation, phrasing=phrasing, sizes=sizes)


def test_every_perturbation_of_every_description_is_false_exhaustively():
    for scene in pair_scenes(60, seed=7):
        truths = relations.true_captions(scene)
        for description in all_descriptions(scene):
            for kind in relations.kinds_for(description):
                for draw in range(3):
                    false = relations.perturb(scene, description, kind, np.random.default_rng(draw))
                    assert false not in truths, (kind, relations.text(description), false)


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), kind=st.sampled_from(relations.KINDS), index=st.integers(0, 10_000))
def test_a_perturbation_is_never_a_true_description(seed, kind, index):
    rng = np.random.default_rng([seed, index])
    scene = shapes.sample_pair_scene(rng)
    description = relations.describe(scene, rng, relation_share=1.0 if kind == "relation_swap" else 0.5)
    false = relations.perturb(scene, description, kind, rng)
    assert false not in relations.true_captions(scene)
    assert sorted(false.rstrip(".").split()) == sorted(relations.text(description).rstrip(".").split())  # same words


def names_something_absent(text, scene):
    """True if ``text`` names a colour or a shape that no object of a one-shape scene has."""
    obj = scene["objects"][0]
    words = text.rstrip(".").split()
    colour = obj["colour"] if "rgb" not in obj and not scene.get("blurred") else None
    shape = obj["shape"] if not scene.get("blurred") else None
    return (any(w in shapes.COLOURS and w != colour for w in words)
            or any(w in shapes.SHAPES and w != shape for w in words))


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 1000), kinds=st.sampled_from([relations.KINDS, ("attribute_swap",), ("relation_swap",)]))
def test_every_training_negative_is_false_and_names_no_held_out_pair(seed, kinds):
    data = ShapesDataset(30, 16, max_shapes=2, seed=seed, shape_only=0.3, colour_only=0.3)
    for index in range(30):
        item = data.draw(index)
        false = shapes.hard_negative(item["scene"], item["description"], item["caption"],
                                     np.random.default_rng(index), kinds)
        assert false != item["caption"]
        assert not any(f"{c} {s}" in false for c, s in HELD_OUT)
        if item["description"] is not None:
            assert false not in relations.true_captions(item["scene"])
        else:
            scene, _ = data.scene(index)
            view = dict(scene, blurred=item["scene"].get("blurred"), objects=item["scene"]["objects"])
            assert names_something_absent(false, view), (item["caption"], false)

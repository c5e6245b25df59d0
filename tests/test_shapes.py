"""The offline shapes data: deterministic, any resolution, held-out pairs truly held out."""
import numpy as np
import pytest
import torch

from clip_from_scratch.data import shapes
from clip_from_scratch.data.shapes import CLASSES, CLASSNAMES, HELD_OUT, HELD_OUT_LABELS, ShapesDataset


def test_same_seed_gives_identical_images_and_captions():
    a_images, a_captions = ShapesDataset(16, seed=3).tensors()
    b_images, b_captions = ShapesDataset(16, seed=3).tensors()
    assert torch.equal(a_images, b_images) and a_captions == b_captions
    c_images, _ = ShapesDataset(16, seed=4).tensors()
    assert not torch.equal(a_images, c_images), "another seed should draw other scenes"


def test_item_does_not_depend_on_dataset_size():
    image, text = ShapesDataset(5, seed=1)[4]
    other_image, other_text = ShapesDataset(500, seed=1)[4]
    assert torch.equal(image, other_image) and text == other_text


@pytest.mark.parametrize("resolution", [16, 32, 64, 224])
def test_any_resolution_gives_uint8_rgb(resolution):
    image, text = ShapesDataset(2, resolution=resolution)[0]
    assert image.shape == (3, resolution, resolution) and image.dtype == torch.uint8
    assert image.flatten(1).unique(dim=1).shape[1] > 1, "a blank image"
    assert text == ShapesDataset(2, resolution=32)[0][1], "the resolution changed the scene, not just its pixels"


def test_held_out_pairs_never_appear_in_training():
    data = ShapesDataset(1500, seed=0)
    labels = set(data.labels().tolist())
    assert not labels & set(HELD_OUT_LABELS), "a held-out colour x shape pair was drawn for training"
    assert len(labels) == len(CLASSES) - len(HELD_OUT), "every other pair should occur"
    _, captions = ShapesDataset(1500, resolution=8, seed=0).tensors()
    for colour, shape in HELD_OUT:
        assert not any(f"{colour} {shape}" in c for c in captions), f"'{colour} {shape}' in a training caption"


def test_caption_held_out_mode_shows_the_pairs_but_never_names_them_together():
    data = ShapesDataset(600, resolution=8, seed=0, heldout="captions")
    _, captions = data.tensors()
    labels = data.labels().tolist()
    assert set(labels) & set(HELD_OUT_LABELS), "held-out pairs' images should appear in this mode"
    for colour, shape in HELD_OUT:
        assert not any(f"{colour} {shape}" in c for c in captions), f"'{colour} {shape}' named in a caption"


def test_zeroshot_set_holds_only_held_out_pairs_with_every_class_name():
    zeroshot = shapes.zeroshot_set(120, resolution=32)
    assert zeroshot["images"].shape == (120, 3, 32, 32)
    assert set(zeroshot["labels"].tolist()) == set(HELD_OUT_LABELS)
    assert zeroshot["classnames"] == list(CLASSNAMES) and len(CLASSNAMES) == 30
    assert all(t.count("{}") == 1 for t in zeroshot["templates"])


def test_captions_name_the_shape_they_describe():
    data = ShapesDataset(200, seed=2, split="val")
    for index in range(200):
        scene, _ = data.scene(index)
        _, text = data[index]
        obj = scene["objects"][0]
        assert obj["colour"] in text or obj["shape"] in text, (text, obj)


def test_several_shapes_per_scene_are_all_captioned():
    data = ShapesDataset(30, seed=0, max_shapes=3)
    for index in range(30):
        scene, _ = data.scene(index)
        _, text = data[index]
        if len(scene["objects"]) == 1:
            continue   # one shape: any phrasing, even a partial one
        if len(scene["objects"]) > 2:   # two shapes may also be joined by a relation ("... to the left of ...")
            assert text.count(" and ") == len(scene["objects"]) - 1
        for obj in scene["objects"]:
            assert f"{obj['colour']} {obj['shape']}" in text


def test_shapes_images_normalised_on_the_device_equal_clip_preprocessing_of_the_same_picture():
    from PIL import Image

    from clip_from_scratch.transforms import eval_transform, normalize
    image, _ = shapes.ShapesDataset(1, resolution=32, seed=3)[0]                       # uint8 [3, 32, 32]
    picture = Image.fromarray(image.permute(1, 2, 0).numpy())
    torch.testing.assert_close(normalize(image[None])[0], eval_transform(32)(picture))

def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="unknown split"):
        ShapesDataset(3, split="test")
    with pytest.raises(ValueError, match="heldout must be"):
        ShapesDataset(3, heldout="some")
    with pytest.raises(IndexError):
        ShapesDataset(3)[3]


def test_single_attribute_views_name_one_attribute_and_use_no_named_colour():
    rng = np.random.default_rng(0)
    named = np.array(list(shapes.COLOURS.values()))
    seen = {"shape": 0, "colour": 0}
    for _ in range(300):
        scene = shapes.sample_scene(rng, "train", heldout="pairs")
        obj = scene["objects"][0]
        view, text = shapes.single_attribute_view(scene, rng, shape_only=0.5, colour_only=0.25)
        if text is None:
            assert view is scene
        elif "rgb" in view["objects"][0]:   # a shape in an unnamed colour: the caption names the shape only
            seen["shape"] += 1
            assert obj["shape"] in text and not any(colour in text for colour in shapes.COLOURS)
            assert np.linalg.norm(named - view["objects"][0]["rgb"], axis=1).min() > 90, "too close to a named colour"
        else:                               # a blurred blob: the caption names the colour only
            seen["colour"] += 1
            assert view["blurred"] and text == f"a {obj['colour']} shape."
    assert seen["shape"] > 100 and seen["colour"] > 40


def test_views_are_a_training_device_only():
    plain = ShapesDataset(50, resolution=8, split="zeroshot", seed=0)
    viewed = ShapesDataset(50, resolution=8, split="zeroshot", seed=0, shape_only=0.5, colour_only=0.25)
    assert [plain[i][1] for i in range(50)] == [viewed[i][1] for i in range(50)]

"""Chapter 09's exercise checks: solutions pass, typical mistakes get their hint, odd answers never raise."""
import torch
import torch.nn.functional as F
from exercise_contract import assert_mistake_gets_hint, contract_tests

from clip_from_scratch.data import relations
from clip_from_scratch.exercises import ch09


def shape_swap(description):
    first, second = description["first"], description["second"]
    return {**description, "first": {**first, "shape": second["shape"]}, "second": {**second, "shape": first["shape"]}}


def negclip_loss(image, text, negative, scale):
    labels = torch.arange(len(image))
    image_to_text = F.cross_entropy(scale * image @ torch.cat([text, negative]).T, labels)
    text_to_image = F.cross_entropy(scale * text @ image.T, labels)
    return (image_to_text + text_to_image) / 2


SOLUTIONS = {ch09.check_shape_swap: shape_swap, ch09.check_negclip_loss: negclip_loss}
(test_worked_solution_passes, test_placeholder_and_none_say_todo,
 test_a_function_that_raises_is_reported_not_raised) = contract_tests(SOLUTIONS)


def test_swapping_whole_objects_is_not_a_shape_swap(capsys):
    # the objects trade places with their colours: often still true ("a blue square and a red circle.")
    assert_mistake_gets_hint(ch09.check_shape_swap, relations.relation_swap, "shape", capsys)


def test_swapping_colours_instead_of_shapes_is_named(capsys):
    assert_mistake_gets_hint(ch09.check_shape_swap, relations.attribute_swap, "expected", capsys)


def test_editing_the_description_in_place_is_named(capsys):
    def in_place(description):
        first, second = description["first"], description["second"]
        first["shape"], second["shape"] = second["shape"], first["shape"]
        return description
    assert_mistake_gets_hint(ch09.check_shape_swap, in_place, "in place", capsys)


def test_false_captions_picking_images_is_named(capsys):
    def both_sides(image, text, negative, scale):
        everything = torch.cat([text, negative])
        return (F.cross_entropy(scale * image @ everything.T, torch.arange(len(image)))
                + F.cross_entropy(scale * everything @ image.T, torch.arange(len(everything)) % len(image))) / 2
    assert_mistake_gets_hint(ch09.check_negclip_loss, both_sides, "no image to pick", capsys)


def test_a_missing_text_to_image_side_is_named(capsys):
    def image_side_only(image, text, negative, scale):
        return F.cross_entropy(scale * image @ torch.cat([text, negative]).T, torch.arange(len(image)))
    assert_mistake_gets_hint(ch09.check_negclip_loss, image_side_only, "text -> image", capsys)

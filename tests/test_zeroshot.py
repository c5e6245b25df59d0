"""Zero-shot classification: the classifier recipe, the metrics, and bad input.

The reference is openai/clip (clip-anytorch): its own model, tokenizer and
the recipe written out directly, on the same random weights in OpenAI's format.
"""
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from seed_example import run_seed_example

import clip_from_scratch
from clip_from_scratch.model import CLIPConfig
from clip_from_scratch.zeroshot import (
    CIFAR_TEMPLATES,
    SINGLE_TEMPLATE,
    ZeroShotResult,
    evaluate,
    zero_shot_classifier,
    zero_shot_logits,
    zero_shot_metrics,
)

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import clip as openai_clip

# Small, but with CLIP's full vocabulary so openai/clip's tokenizer fits it.
SMALL = CLIPConfig(embed_dim=32, image_resolution=32, vision_layers=1, vision_width=64, vision_patch_size=16,
                   context_length=77, vocab_size=49408, transformer_width=64, transformer_heads=1,
                   transformer_layers=2)
CLASSNAMES = ["aquarium fish", "maple tree", "cat", "pickup truck"]   # spaces, as CIFAR's become
NO_PERIOD = ["a photo of a {}", "itap of the {}", "{} in the wild"]


def reference_classifier(model, classnames, templates):
    """The recipe in openai/clip's own terms: normalise per prompt, average, normalise again."""
    weights = []
    with torch.no_grad():
        for name in classnames:
            text = model.encode_text(openai_clip.tokenize([t.format(name) for t in templates]))
            text = text / text.norm(dim=-1, keepdim=True)
            mean = text.mean(dim=0)
            weights.append(mean / mean.norm())
    return torch.stack(weights, dim=1)   # [embed_dim, classes]


@pytest.fixture(scope="module")
def models(openai_checkpoint, openai_reference):
    path = openai_checkpoint(SMALL, fmt="state_dict", seed=3)
    ours, _ = clip_from_scratch.load(str(path), device="cpu")
    return ours, openai_reference(path)


@pytest.mark.parametrize("templates", [NO_PERIOD, CIFAR_TEMPLATES])
def test_classifier_matches_openai_recipe_on_same_weights(models, templates):
    ours, reference = models
    got = zero_shot_classifier(ours, CLASSNAMES, templates, progress=False)
    want = reference_classifier(reference, CLASSNAMES, templates)
    assert got.shape == (SMALL.embed_dim, len(CLASSNAMES))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_classifier_is_the_same_in_small_batches(models):
    ours, _ = models
    whole = zero_shot_classifier(ours, CLASSNAMES, CIFAR_TEMPLATES, progress=False)
    batched = zero_shot_classifier(ours, CLASSNAMES, CIFAR_TEMPLATES, batch_size=5, progress=False)
    torch.testing.assert_close(batched, whole, rtol=1e-5, atol=1e-6)


def test_logits_match_openai_similarity(models):
    ours, reference = models
    images = torch.randn(3, 3, SMALL.image_resolution, SMALL.image_resolution)
    classifier = zero_shot_classifier(ours, CLASSNAMES, SINGLE_TEMPLATE, progress=False)
    with torch.no_grad():
        got = zero_shot_logits(ours.encode_image(images), classifier)
        image_features = F.normalize(reference.encode_image(images), dim=-1)
    want = 100 * image_features @ reference_classifier(reference, CLASSNAMES, SINGLE_TEMPLATE)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_evaluate_counts_hits_of_the_reference_prediction(models):
    ours, reference = models
    images = torch.randn(6, 3, SMALL.image_resolution, SMALL.image_resolution)
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    result = evaluate(ours, (images, labels), CLASSNAMES, SINGLE_TEMPLATE, batch_size=4, progress=False)
    with torch.no_grad():
        want = (reference.encode_image(images) @ reference_classifier(reference, CLASSNAMES, SINGLE_TEMPLATE))
    hits = (want.argmax(dim=1) == labels).sum().item()
    assert result.num_images == 6
    assert result.top1 == pytest.approx(hits / 6)
    assert result.top5 is None  # only 4 classes: top-5 would always be 100%
    assert result.topk == {1: pytest.approx(hits / 6)}


# --- metrics, checked by hand ---------------------------------------------------------------

def test_metrics_on_a_hand_made_case():
    names = ["cat", "dog", "bird", "fish", "frog", "horse"]
    # Each row ranks the classes; the comment says the ranking.
    logits = torch.tensor([
        [9., 8, 7, 6, 5, 4],   # cat dog bird fish frog horse     true cat  -> top-1 hit
        [9., 8, 7, 6, 5, 4],   #                                   true dog  -> top-1 miss (cat), top-5 hit
        [9., 8, 7, 6, 5, 4],   #                                   true horse-> misses both
        [1., 9, 2, 3, 4, 5],   # dog horse frog fish bird cat      true dog  -> hit
        [1., 2, 9, 3, 4, 5],   # bird horse frog fish dog cat      true frog -> top-1 miss (bird), top-5 hit
    ])
    labels = torch.tensor([0, 1, 5, 1, 4])
    result = zero_shot_metrics(logits, labels, names, ks=(1, 5))
    assert result.num_images == 5
    assert result.top1 == pytest.approx(2 / 5)
    assert result.top5 == pytest.approx(4 / 5)
    assert result.class_counts.tolist() == [1, 2, 0, 0, 1, 1]
    assert result.per_class_accuracy == [1.0, 0.5, None, None, 0.0, 0.0]
    assert result.confusion[1, 0] == 1 and result.confusion[5, 0] == 1 and result.confusion[4, 2] == 1
    assert int(result.confusion.sum()) == 5 and int(result.confusion.diag().sum()) == 2
    assert result.most_confused() == [("dog", "cat", 1), ("frog", "bird", 1), ("horse", "cat", 1)]


def test_result_table_and_json_carry_the_numbers():
    import json
    result = zero_shot_metrics(torch.tensor([[2., 1.], [2., 1.], [1., 2.]]), torch.tensor([0, 1, 1]),
                               ["sea", "sky"], ks=(1, 5), templates=SINGLE_TEMPLATE)
    record = json.loads(json.dumps(result.to_dict()))
    assert record["top1"] == pytest.approx(2 / 3) and record["num_images"] == 3
    assert record["per_class_accuracy"] == {"sea": 1.0, "sky": 0.5}
    assert record["most_confused"] == [["sky", "sea", 1]]
    assert record["confusion"] == [[1, 0], [1, 1]]
    assert "top-1 accuracy:  66.67%" in result.table()


# --- bad input --------------------------------------------------------------------------------

class _Stub(torch.nn.Module):
    """Text -> a fixed feature per prompt length; images -> their mean colour. Enough to test plumbing."""
    def __init__(self, width=3):
        super().__init__()
        self.width = width
        self.scale = torch.nn.Parameter(torch.ones(()))

    def encode_text(self, tokens):
        return torch.ones(tokens.shape[0], self.width) * self.scale

    def encode_image(self, images):
        return images.mean(dim=(2, 3)) * self.scale


def _tokens(texts):
    return torch.zeros(len(texts), 4, dtype=torch.long)


@pytest.mark.parametrize("templates, message", [
    (["a photo of a cat."], "must contain '{}' exactly once"),
    (["a {} and a {}."], "must contain '{}' exactly once"),
    ([], "templates is empty"),
    ("a photo of a {}.", "not one string"),
])
def test_bad_templates_are_refused_with_the_fix(templates, message):
    with pytest.raises((ValueError, TypeError), match=message.replace("{", r"\{").replace("}", r"\}")):
        zero_shot_classifier(_Stub(), ["cat"], templates, _tokens, progress=False)


@pytest.mark.parametrize("classnames", [[], "cat"])
def test_empty_class_list_is_refused(classnames):
    with pytest.raises(ValueError, match="non-empty list of class names"):
        zero_shot_classifier(_Stub(), classnames, SINGLE_TEMPLATE, _tokens, progress=False)
    with pytest.raises(ValueError, match="non-empty list of class names"):
        evaluate(_Stub(), (torch.zeros(1, 3, 2, 2), torch.zeros(1)), classnames, progress=False)


def test_classifier_from_another_embedding_width_is_refused():
    classifier = zero_shot_classifier(_Stub(width=5), ["cat", "dog"], SINGLE_TEMPLATE, _tokens, progress=False)
    images = (torch.rand(2, 3, 4, 4), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="width 3 but the classifier expects 5"):
        evaluate(_Stub(width=3), images, ["cat", "dog"], classifier=classifier, progress=False)


def test_classifier_with_the_wrong_number_of_classes_is_refused():
    classifier = torch.eye(3)[:, :2]
    with pytest.raises(ValueError, match="2 columns but there are 3 class names"):
        evaluate(_Stub(), (torch.rand(2, 3, 4, 4), torch.tensor([0, 1])), ["a", "b", "c"],
                 classifier=classifier, progress=False)


def test_labels_outside_the_class_list_are_refused():
    with pytest.raises(ValueError, match="labels must lie in 0..1"):
        zero_shot_metrics(torch.zeros(2, 2), torch.tensor([0, 7]), ["a", "b"])


def test_result_table_lists_the_weakest_classes_first_and_the_confusions():
    # Three classes: "sea" always right, "sky" half right, "sand" always taken for "sky"; no templates given.
    confusion = torch.tensor([[2, 0, 0], [1, 1, 0], [0, 2, 0]])
    result = ZeroShotResult(["sea", "sky", "sand"], confusion, {1: 3 / 6})
    lines = result.table(worst=2).splitlines()
    assert lines[0] == "images: 6   classes: 3   templates: ?"
    assert lines[1] == "top-1 accuracy:  50.00%"
    assert lines[2:5] == ["weakest classes (top-1):", f"  {'sand':>20s}:   0.00%", f"  {'sky':>20s}:  50.00%"]
    assert lines[5:] == ["most confused (true -> predicted: images):",
                         f"  {'sand':>20s} -> sky: 2", f"  {'sky':>20s} -> sea: 1"]


# --- the exercises' checks: [OK] for a right answer, an explanation (never an exception) otherwise ---

def test_chapter06_checks_accept_solutions_and_explain_mistakes(capsys):
    from clip_from_scratch.exercises import ch06

    def accuracy(logits, labels, k):
        return (logits.topk(k, dim=1).indices == labels[:, None]).any(dim=1).float().mean().item()

    assert ch06.check_topk_accuracy(accuracy)
    assert not ch06.check_topk_accuracy(lambda *a: 100 * accuracy(*a))
    assert "percentage" in capsys.readouterr().out
    assert not ch06.check_topk_accuracy(lambda *a: 1 / 0)
    assert "ZeroDivisionError" in capsys.readouterr().out
    assert not ch06.check_topk_accuracy(lambda *a: None)
    assert "[TODO]" in capsys.readouterr().out


def test_chapter07_checks_accept_solutions_and_explain_mistakes(capsys):
    from clip_from_scratch.exercises import ch07
    from clip_from_scratch.model import NON_PARAMETER_KEYS
    keys = ("vision_width", "vision_patch_size", "vision_layers", "image_resolution")

    assert ch07.check_vision_config(lambda sd: {k: getattr(CLIPConfig.from_state_dict(sd), k) for k in keys})
    assert ch07.check_count_parameters(lambda sd: sum(t.numel() for k, t in sd.items() if k not in NON_PARAMETER_KEYS))
    assert not ch07.check_count_parameters(lambda sd: sum(t.numel() for t in sd.values()))
    assert "not parameters" in capsys.readouterr().out
    assert not ch07.check_vision_config(lambda sd: None)
    assert "[TODO]" in capsys.readouterr().out


def test_classifier_from_a_model_with_another_embedding_width_is_refused(models):
    ours, _ = models                                  # embed_dim 32
    other = clip_from_scratch.CLIP(CLIPConfig.preset("tiny")).eval()   # embed_dim 128
    classifier = zero_shot_classifier(other, CLASSNAMES, SINGLE_TEMPLATE, progress=False)
    images = (torch.randn(2, 3, SMALL.image_resolution, SMALL.image_resolution), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="width 32 but the classifier expects 128.*same model"):
        evaluate(ours, images, CLASSNAMES, classifier=classifier, progress=False)


# --- the seed example (openai/clip's README), unchanged but for its import line ---------------

def test_seed_example_runs_with_import_clip_from_scratch_as_clip(openai_checkpoint, openai_reference,
                                                                 fake_cifar, monkeypatch, tmp_path, capsys):
    """The seed's code, with ``import clip_from_scratch as clip``, prints openai/clip's top-5 (seed_example.py)."""
    seed_image = np.full((32, 32, 3), 200, dtype=np.uint8)          # plain light grey
    printed, want = run_seed_example(openai_checkpoint(SMALL, fmt="torchscript"), "ViT-B/32", seed_image,
                                     fake_cifar=fake_cifar, openai_reference=openai_reference,
                                     monkeypatch=monkeypatch, tmp_path=tmp_path, capsys=capsys)
    assert printed == want

"""Binding probes, the hard-negative run in the engine, and its bad input."""
import json

import pytest
import torch

from clip_from_scratch.cli import main
from clip_from_scratch.data import relations
from clip_from_scratch.errors import ConfigError
from clip_from_scratch.probes import PROBES, accuracy, binding_probes, probe_set
from clip_from_scratch.train import TrainConfig, make_batch, train
from clip_from_scratch.train_data import shapes_pairs


@pytest.mark.parametrize("kind", PROBES)
def test_probe_items_pair_a_true_caption_with_a_false_one(kind):
    items = probe_set(kind, n=40, resolution=16, seed=1)
    assert items["images"].shape == (40, 3, 16, 16) and items["images"].dtype == torch.uint8
    for scene, true, false in zip(items["scenes"], items["true"], items["false"]):
        truths = relations.true_captions(scene)
        assert true in truths and false not in truths
        if kind != "attribute_replace":   # the same words in another order: invisible to a bag of words
            assert sorted(true.split()) != sorted(false.split()) or true != false
            assert sorted(true.rstrip(".").split()) == sorted(false.rstrip(".").split())
    if kind == "relation_swap":
        assert all(" and " not in true for true in items["true"])


def test_probe_pictures_are_the_same_at_any_resolution_and_for_any_model():
    low, high = probe_set("attribute_swap", 5, 16, seed=2), probe_set("attribute_swap", 5, 32, seed=2)
    assert low["true"] == high["true"] and low["false"] == high["false"]


class Oracle(torch.nn.Module):
    """A 'model' that reads the scene: the image feature of picture i is one-hot i, and a caption's
    feature is one-hot at the index of the picture it truly describes (else a far-away slot)."""

    def __init__(self, items, see=True):
        super().__init__()
        self.items, self.see, self.anchor = items, see, torch.nn.Parameter(torch.zeros(1))
        self.n = len(items["true"])
        self.captions = items["true"] + items["false"]

    def encode_image(self, pixels):
        return torch.eye(self.n + 1)[: len(pixels)] if self.see else torch.ones(len(pixels), self.n + 1)

    def tokenize(self, texts):   # a caption's "tokens": its index in one list of every probe caption
        return torch.tensor([self.captions.index(t) for t in texts])

    def encode_text(self, tokens):
        rows = []
        for caption in (self.captions[i] for i in tokens.tolist()):
            row = torch.zeros(self.n + 1)
            hit = [i for i, t in enumerate(self.items["true"]) if t == caption]
            row[hit[0] if hit else self.n] = 1.0
            rows.append(row)
        return torch.stack(rows)


def test_a_model_that_sees_scores_100_and_the_same_model_blindfolded_scores_chance():
    items = probe_set("relation_swap", n=20, resolution=16)
    from clip_from_scratch.probes import probe_margins
    oracle = Oracle(items)
    margins = probe_margins(oracle, oracle.tokenize, items)
    assert accuracy(margins["seen"]) == 100.0
    blindfolded = Oracle(items, see=False)
    assert accuracy(probe_margins(blindfolded, blindfolded.tokenize, items)["seen"]) == 50.0


def test_binding_probes_return_every_probe_and_its_blind_score_as_percentages():
    from clip_from_scratch.bpe import train_bpe
    from clip_from_scratch.model import CLIP
    config = TrainConfig(image_resolution=16, max_shapes=2, vision_patch_size=4)
    tokenizer = train_bpe(["a red circle to the left of a blue square."], 20)
    model = CLIP(config.model_config(tokenizer.vocab_size))
    scores = binding_probes(model, lambda t: tokenizer.tokenize(t, context_length=32, truncate=True), 16, n=30)
    assert set(scores) == set(PROBES) | {f"blind_{p}" for p in PROBES}
    assert all(0 <= v <= 100 for v in scores.values())


def test_hard_negative_batches_carry_each_captions_false_twin(tmp_path):
    config = TrainConfig(num_images=64, batch_size=16, max_shapes=2, hard_negatives=True, image_resolution=16)
    pairs = shapes_pairs(config)
    from clip_from_scratch.bpe import train_bpe
    tokenizer = train_bpe(pairs.all_captions(), 50)
    captions = pairs.tokenize(tokenizer, 32)
    batch = make_batch(0, config, pairs.images, captions, torch.device("cpu"))
    text = torch.cat([batch.text, torch.zeros(16, 32 - batch.text.shape[1], dtype=batch.text.dtype)], 1)
    false = batch.extra["negative_text"]
    false = torch.cat([false, torch.zeros(16, 32 - false.shape[1], dtype=false.dtype)], 1)
    text, eot = torch.cat([text, false]), torch.cat([batch.eot_index, batch.extra["negative_eot_index"]])
    def ids(rows, ends):
        return [tuple(row[:end + 1].tolist()) for row, end in zip(rows, ends)]

    def ids_of(texts):
        tokens = tokenizer(texts, context_length=32, truncate=True)
        return set(ids(tokens, tokens.argmax(dim=1)))

    true, false = ids(text[:16], eot[:16]), ids(text[16:], eot[16:])
    assert all(t != f for t, f in zip(true, false))
    assert set(true) <= ids_of(pairs.all_captions()) and set(false) <= ids_of([n[0] for n in pairs.negatives])


def test_pretrain_two_shapes_with_hard_negatives_writes_binding_and_resumes(tmp_path, capsys):
    options = ["--max-shapes", "2", "--hard-negatives", "--steps", "4", "--batch-size", "16", "--num-images", "64",
               "--no-progress", "--device", "cpu", "--out", str(tmp_path)]
    train(TrainConfig.for_data("shapes", out_dir=str(tmp_path), max_shapes=2, hard_negatives=True, steps=4,
                               batch_size=16, num_images=64, stop_after=2, progress=False, device="cpu"))
    assert main(["pretrain", *options, "--resume"]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["step"] == 4 and metrics["config"]["hard_negatives"] is True
    assert metrics["config"]["image_resolution"] == 32        # two shapes pick the two-object defaults
    assert set(metrics["binding"]) >= set(PROBES)
    assert "attribute_swap" in capsys.readouterr().out


@pytest.mark.parametrize("options, message", [
    (["--data", "coco", "--hard-negatives"], "--hard-negatives needs scenes to perturb"),
    (["--max-shapes", "0"], "--max-shapes must be 1 or 2"),
    (["--max-shapes", "3"], "--max-shapes must be 1 or 2"),
])
def test_bad_two_object_options_get_one_line(tmp_path, capsys, options, message):
    assert main(["pretrain", "--out", str(tmp_path / "run"), "--no-progress", *options]) == 2
    error = capsys.readouterr().err.strip()
    assert message in error and "Traceback" not in error and len(error.splitlines()) == 1


def test_two_shapes_by_default_pick_32_pixels_and_8_pixel_patches():
    config = TrainConfig.for_data("shapes", max_shapes=2)
    assert (config.image_resolution, config.vision_patch_size, config.steps) == (32, 8, 5000)
    assert TrainConfig.for_data("shapes", max_shapes=2, fast=True).steps == 300       # fast mode stays fast
    assert TrainConfig.for_data("shapes", max_shapes=2, image_resolution=48).image_resolution == 48
    assert TrainConfig.for_data("shapes").image_resolution == 16
    with pytest.raises(ConfigError, match="negative_kinds"):
        TrainConfig(negative_kinds="colour_swap")

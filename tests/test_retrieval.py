"""recall@K against brute force and a hand-computed case; encode_coco; the `retrieval` command end to end."""
import json
from functools import partial

import pytest
import torch
from coco_fixtures import use_server

from clip_from_scratch.bpe import train_bpe
from clip_from_scratch.cli import main
from clip_from_scratch.data import coco
from clip_from_scratch.model import CLIP, CLIPConfig
from clip_from_scratch.retrieval import encode_coco, format_table, recall_at_k, retrieval_ranks
from clip_from_scratch.runs import save_checkpoint
from clip_from_scratch.transforms import normalize


def brute_force_recall(image_features, text_features, caption_to_image, ks):
    """The definition, spelled out: the full similarity matrix, sorted, one query at a time."""
    images = image_features / image_features.norm(dim=1, keepdim=True)
    texts = text_features / text_features.norm(dim=1, keepdim=True)
    similarity = images @ texts.T                                          # [images, captions]
    result = {"image_to_text": {}, "text_to_image": {}}
    for k in ks:
        found = 0
        for i in range(len(images)):
            best = similarity[i].argsort(descending=True)[:k].tolist()
            found += any(caption_to_image[j] == i for j in best)
        result["image_to_text"][k] = 100 * found / len(images)
        found = 0
        for j in range(len(texts)):
            best = similarity[:, j].argsort(descending=True)[:k].tolist()
            found += caption_to_image[j] in best
        result["text_to_image"][k] = 100 * found / len(texts)
    return result


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recall_equals_brute_force_with_several_captions_per_image(seed):
    generator = torch.Generator().manual_seed(seed)
    num_images, dim = 37, 8
    per_image = torch.randint(1, 6, (num_images,), generator=generator)        # 1..5 captions each
    caption_to_image = torch.repeat_interleave(torch.arange(num_images), per_image)
    caption_to_image = caption_to_image[torch.randperm(len(caption_to_image), generator=generator)]
    image_features = torch.randn(num_images, dim, generator=generator)
    # Captions near their image, so recall is neither 0 nor 100 and the ranks matter.
    noise = torch.randn(len(caption_to_image), dim, generator=generator)
    text_features = image_features[caption_to_image] + 1.2 * noise
    ks = (1, 3, 5, 10, 50)
    expected = brute_force_recall(image_features, text_features, caption_to_image.tolist(), ks)
    got = recall_at_k(image_features, text_features, caption_to_image, ks=ks, chunk_size=7)
    for direction in ("image_to_text", "text_to_image"):
        assert got[direction] == pytest.approx(expected[direction]), direction
    assert 0 < got["image_to_text"][1] < 100 and 0 < got["text_to_image"][1] < 100
    assert got["image_to_text"][50] == 100 and got["text_to_image"][50] == 100   # K beyond the candidates


def test_hand_computed_tiny_case():
    # Image 0 = (1, 0), image 1 = (0, 1). Captions 0, 1 describe image 0; captions 2, 3 image 1.
    images = torch.tensor([[2.0, 0.0], [0.0, 3.0]])                       # lengths do not matter
    texts = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7], [0.6, 0.5]])
    ranks = retrieval_ranks(images, texts, [0, 0, 1, 1])
    # Image 0 ranks captions 0, 3, 2, 1: its own caption 0 first. Image 1 ranks 1, 2, 3, 0: own caption 2 second.
    assert ranks["image_to_text"].tolist() == [0, 1]
    # Caption 0 prefers image 0 (right), 1 prefers image 1 (wrong), 2 image 1 (right), 3 image 0 (wrong).
    assert ranks["text_to_image"].tolist() == [0, 1, 0, 1]
    assert recall_at_k(images, texts, [0, 0, 1, 1], ks=(1, 2)) == {
        "image_to_text": {1: 50.0, 2: 100.0}, "text_to_image": {1: 50.0, 2: 100.0}}


def test_table_lists_both_directions():
    table = format_table({"image_to_text": {1: 50.1, 5: 75.0}, "text_to_image": {1: 30.4, 5: 55.9}})
    assert table.splitlines()[1].split() == ["image->text", "50.1", "75.0"]
    assert table.splitlines()[2].split() == ["text->image", "30.4", "55.9"]


@pytest.mark.parametrize("caption_to_image, message", [
    ([0, 1], "2 entries for 3 captions"),
    ([0, 0, 5], "there are 2 images"),
    ([0, 0, 0], "1 images have no caption"),
])
def test_inconsistent_inputs_are_refused(caption_to_image, message):
    with pytest.raises(ValueError, match=message):
        recall_at_k(torch.randn(2, 4), torch.randn(3, 4), caption_to_image)


def test_ks_must_be_positive():
    with pytest.raises(ValueError, match="ks must be positive"):
        recall_at_k(torch.randn(2, 4), torch.randn(2, 4), [0, 1], ks=(0, 1))


# ----------------------------------------------------------------------------- a model on the COCO fixture
R = 16
SMALL = dict(embed_dim=16, image_resolution=R, vision_layers=1, vision_width=64, vision_patch_size=8,
             transformer_width=64, transformer_heads=1, transformer_layers=1, vision_heads=1)


@pytest.fixture
def coco_val(coco_tree, coco_http, monkeypatch, tmp_path):
    use_server(monkeypatch, coco_http(coco_tree.folder), coco_tree)
    root = tmp_path / "data"
    return root, coco.CocoCaptions("val2017", resolution=R, root=root, progress=False)


@pytest.fixture
def course_checkpoint(coco_val, tmp_path):
    """A randomly initialised model saved the way `clip-from-scratch pretrain` saves one, with a BPE of captions."""
    _, data = coco_val
    tokenizer = train_bpe([c for caps in data.captions for c in caps], 30)
    config = CLIPConfig(**SMALL, vocab_size=tokenizer.vocab_size, context_length=12)
    torch.manual_seed(0)
    path = tmp_path / "checkpoint.pt"
    save_checkpoint({"model": CLIP(config).state_dict(), "model_config": config.to_dict(),
                     "tokenizer": tokenizer.to_dict(), "step": 0}, path)
    return path


def test_encode_coco_keeps_the_order_of_images_and_captions(coco_val, course_checkpoint):
    from clip_from_scratch.train import load_checkpoint
    _, data = coco_val
    model, tokenizer = load_checkpoint(course_checkpoint)
    tokenize_fn = partial(tokenizer.tokenize, context_length=12, truncate=True)
    image_features, text_features, caption_to_image = encode_coco(model, tokenize_fn, data, batch_size=7,
                                                                  progress=False)
    captions = [c for caps in data.captions for c in caps]
    assert image_features.shape == (len(data), 16) and text_features.shape == (len(captions), 16)
    assert caption_to_image.tolist() == [i for i, caps in enumerate(data.captions) for _ in caps]
    with torch.no_grad():
        assert torch.allclose(image_features[5], model.encode_image(normalize(data.images[5:6]))[0], atol=1e-5)
        assert torch.allclose(text_features[-1], model.encode_text(tokenize_fn(captions[-1:]))[0], atol=1e-5)
    with pytest.raises(ValueError, match="load the data with resolution=16"):
        encode_coco(model, tokenize_fn, coco.CocoCaptions("val2017", resolution=8, root=coco_val[0], progress=False))


def test_retrieval_command_on_a_course_checkpoint(coco_val, course_checkpoint, tmp_path, capsys):
    root, data = coco_val
    output = tmp_path / "recall.json"
    code = main(["retrieval", "--checkpoint", str(course_checkpoint), "--data-root", str(root), "--device", "cpu",
                 "--output", str(output), "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0 and "image->text" in out and "text->image" in out and "R@10" in out
    record = json.loads(output.read_text())
    assert record["num_images"] == len(data) and record["resolution"] == R
    assert record["num_captions"] == sum(map(len, data.captions))
    assert sorted(record["failed_ids"]) == data.stats["failed_ids"]
    from clip_from_scratch.train import load_checkpoint
    model, tokenizer = load_checkpoint(course_checkpoint)
    expected = recall_at_k(*encode_coco(model, partial(tokenizer.tokenize, context_length=12, truncate=True),
                                        data, progress=False))
    assert record["recall"] == {d: {str(k): pytest.approx(v) for k, v in r.items()} for d, r in expected.items()}


def test_retrieval_command_on_openai_format_weights(coco_tree, coco_http, monkeypatch, tmp_path,
                                                    openai_checkpoint, capsys):
    use_server(monkeypatch, coco_http(coco_tree.folder), coco_tree)
    config = CLIPConfig(embed_dim=16, image_resolution=32, vision_layers=1, vision_width=64, vision_patch_size=16,
                        transformer_width=64, transformer_heads=1, transformer_layers=1, context_length=77)
    weights = openai_checkpoint(config, fmt="state_dict")
    output = tmp_path / "recall.json"
    code = main(["retrieval", "--weights", str(weights), "--max-images", "12", "--data-root", str(tmp_path),
                 "--device", "cpu", "--output", str(output), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    record = json.loads(output.read_text())
    # The cache is built at the model's own input resolution.
    assert record["resolution"] == 32 and record["num_images"] == 10   # of the first 12, one is corrupt and one missing
    assert (tmp_path / "coco" / "cache" / "val2017_32px_first12" / "images.u8").exists()
    assert main(["retrieval", "--weights", str(weights), "--resolution", "64", "--data-root", str(tmp_path)]) == 2
    assert "takes 32 px" in capsys.readouterr().err

"""`clip-from-scratch zeroshot`: a checkpoint or OpenAI-format weights in, a table and a JSON file out."""
import json

import pytest
import torch

from clip_from_scratch.bpe import train_bpe
from clip_from_scratch.cli import build_parser, run_zeroshot_command
from clip_from_scratch.data import cifar, shapes
from clip_from_scratch.model import CLIP, CLIPConfig
from clip_from_scratch.runs import save_checkpoint

SMALL = dict(embed_dim=32, image_resolution=32, vision_layers=1, vision_width=64, vision_patch_size=16,
             transformer_width=64, transformer_heads=1, transformer_layers=1)


def parse(argv):
    return build_parser().parse_args(["zeroshot", *argv])


@pytest.fixture(scope="module")
def course_checkpoint(tmp_path_factory):
    """A checkpoint in the training engine's format: model, model_config, tokenizer (a shapes BPE), step."""
    captions = [shapes.ShapesDataset(200, resolution=32)[i][1] for i in range(200)]
    tokenizer = train_bpe(captions, 60)
    config = CLIPConfig(**SMALL, vocab_size=tokenizer.vocab_size, context_length=32)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "shapes.pt"
    save_checkpoint({"model": CLIP(config).state_dict(), "model_config": config.to_dict(),
                     "tokenizer": tokenizer.to_dict(), "step": 0}, path)
    return path


def test_checkpoint_on_shapes_prints_table_and_writes_json(course_checkpoint, tmp_path, capsys):
    output = tmp_path / "result.json"
    args = parse(["--checkpoint", str(course_checkpoint), "--dataset", "shapes", "--templates", "single",
                  "--limit", "24", "--device", "cpu", "--output", str(output)])
    result = run_zeroshot_command(args)
    printed = capsys.readouterr().out
    assert "top-1 accuracy" in printed and "not a real benchmark" in printed
    record = json.loads(output.read_text())
    assert record["dataset"] == "shapes" and record["template_set"] == "single"
    assert record["num_images"] == 24 and len(record["classnames"]) == len(shapes.CLASSNAMES)
    assert record["top1"] == pytest.approx(result.top1)
    assert sum(map(sum, record["confusion"])) == 24
    # Only held-out colour x shape pairs are in the test: every true class is one of them.
    tested = {name for name, acc in record["per_class_accuracy"].items() if acc is not None}
    assert tested <= {shapes.CLASSNAMES[i] for i in shapes.HELD_OUT_LABELS}


def test_openai_weights_on_fake_cifar10(openai_checkpoint, fake_cifar, tmp_path, capsys):
    weights = openai_checkpoint(CLIPConfig(**SMALL), fmt="torchscript")
    images = torch.randint(0, 256, (17, 32, 32, 3), dtype=torch.uint8).numpy()
    fake_cifar("cifar10", images[:10], list(range(10)), images[10:], [0, 1, 2, 3, 4, 5, 9])
    output = tmp_path / "cifar.json"
    args = parse(["--weights", str(weights), "--dataset", "cifar10", "--templates", "ensemble",
                  "--data-root", str(tmp_path / "data"), "--device", "cpu", "--output", str(output)])
    run_zeroshot_command(args)
    record = json.loads(output.read_text())
    assert record["num_images"] == 7 and len(record["templates"]) == 18
    assert record["classnames"] == list(cifar.CIFAR10_CLASSES)
    hits = sum(record["confusion"][i][i] for i in range(10))   # the confusion matrix's diagonal
    assert record["top1"] == pytest.approx(hits / 7)
    assert record["top1"] <= record["top5"] and record["top5"] * 7 == pytest.approx(round(record["top5"] * 7))
    assert "top-5 accuracy" in capsys.readouterr().out


def test_checkpoint_and_weights_are_exclusive(course_checkpoint):
    with pytest.raises(SystemExit):
        parse(["--checkpoint", str(course_checkpoint), "--weights", "ViT-B/32"])
    with pytest.raises(SystemExit):
        parse(["--dataset", "cifar100"])


def test_missing_cifar_offline_says_where_to_put_it(openai_checkpoint, monkeypatch, tmp_path):
    weights = openai_checkpoint(CLIPConfig(**SMALL), fmt="torchscript")
    monkeypatch.setattr(cifar.CIFAR100, "url", "http://127.0.0.1:9/cifar-100-python.tar.gz")
    args = parse(["--weights", str(weights), "--dataset", "cifar100", "--data-root", str(tmp_path),
                  "--device", "cpu", "--output", str(tmp_path / "x.json")])
    with pytest.raises(cifar.CIFARUnavailable, match="cifar-100-python.tar.gz"):
        run_zeroshot_command(args)
    assert not (tmp_path / "x.json").exists()


def test_cli_main_runs_zeroshot_and_returns_zero(course_checkpoint, tmp_path, capsys):
    from clip_from_scratch.cli import main
    output = tmp_path / "main.json"
    code = main(["zeroshot", "--checkpoint", str(course_checkpoint), "--dataset", "shapes", "--limit", "8",
                 "--device", "cpu", "--output", str(output)])
    assert code == 0 and json.loads(output.read_text())["num_images"] == 8
    assert "results written to" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--weights", "ViT-Z/99"], "neither a file nor a released model"),
    (["--checkpoint", "no/such/checkpoint.pt"], "no checkpoint at"),
])
def test_cli_bad_sources_exit_2_with_a_message(argv, message, tmp_path, capsys):
    from clip_from_scratch.cli import main
    assert main(["zeroshot", *argv, "--dataset", "shapes", "--output", str(tmp_path / "x.json")]) == 2
    assert message in capsys.readouterr().err


def test_cli_openai_file_given_as_checkpoint_is_explained(openai_checkpoint, tmp_path, capsys):
    from clip_from_scratch.cli import main
    weights = openai_checkpoint(CLIPConfig(**SMALL), fmt="state_dict")
    assert main(["zeroshot", "--checkpoint", str(weights), "--dataset", "shapes",
                 "--output", str(tmp_path / "x.json")]) == 2
    assert "clip_from_scratch.load()" in capsys.readouterr().err


def test_cli_missing_cifar_exits_2_with_the_manual_path(openai_checkpoint, monkeypatch, tmp_path, capsys):
    from clip_from_scratch.cli import main
    weights = openai_checkpoint(CLIPConfig(**SMALL), fmt="torchscript")
    monkeypatch.setattr(cifar.CIFAR100, "url", "http://127.0.0.1:9/cifar-100-python.tar.gz")
    code = main(["zeroshot", "--weights", str(weights), "--dataset", "cifar100", "--data-root", str(tmp_path),
                 "--device", "cpu", "--output", str(tmp_path / "x.json")])
    assert code == 2
    assert str(tmp_path.resolve() / "cifar-100-python.tar.gz") in capsys.readouterr().err

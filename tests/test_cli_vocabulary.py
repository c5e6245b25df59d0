"""One word per idea across the subcommands; the old spellings still work for a release, hidden from --help."""
import json

import pytest

from clip_from_scratch.cli import build_parser, main

COMMANDS = {"pretrain": [], "zeroshot": ["--weights", "ViT-B/32"], "retrieval": ["--weights", "ViT-B/32"],
            "download": ["coco"]}


def subcommand_help(name: str) -> str:
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command")
    return subparsers.choices[name].format_help()


@pytest.mark.parametrize("command", COMMANDS)
def test_every_subcommand_says_data_root_and_no_progress_the_same_way(command):
    text = subcommand_help(command)
    assert "--data-root" in text and "--no-progress" in text
    args = build_parser().parse_args([command, *COMMANDS[command], "--data-root", "/d", "--no-progress"])
    assert args.data_root == "/d"


@pytest.mark.parametrize("command, new, old, dest", [
    ("zeroshot", "--num-images", "--limit", "num_images"),
    ("zeroshot", "--data", "--dataset", "dataset"),
    ("retrieval", "--num-images", "--max-images", "max_images"),
    ("download", "--num-images", "--max-images", "max_images"),
])
def test_an_old_spelling_still_works_but_is_not_advertised(command, new, old, dest):
    value = "shapes" if new == "--data" else "7"
    for flag in (new, old):
        args = build_parser().parse_args([command, *COMMANDS[command], flag, value])
        assert str(getattr(args, dest)) == value, f"{flag} sets {dest}"
    text = subcommand_help(command)
    assert new in text and old not in text.replace(new, "")


def test_pretrain_and_zeroshot_check_the_device_with_the_same_words(tmp_path, capsys):
    for argv in (["pretrain", "--out", str(tmp_path / "run")],
                 ["zeroshot", "--checkpoint", str(tmp_path / "x.pt"), "--data", "shapes"],
                 ["retrieval", "--checkpoint", str(tmp_path / "x.pt")]):
        assert main([*argv, "--device", "nonsense", "--no-progress"]) == 2
        assert "--device 'nonsense' is not a device name" in capsys.readouterr().err


def test_zeroshot_out_is_a_folder_that_gets_a_named_json_file(tmp_path, capsys):
    from clip_from_scratch.train import TrainConfig, train
    run = tmp_path / "run"
    train(TrainConfig(out_dir=str(run), steps=1, batch_size=16, num_images=32, zeroshot_images=8,
                      vision_width=32, transformer_width=32, embed_dim=32, progress=False, device="cpu"))
    results = tmp_path / "results" / "zeroshot"
    assert main(["zeroshot", "--checkpoint", str(run / "checkpoint.pt"), "--data", "shapes", "--templates",
                 "single", "--num-images", "12", "--device", "cpu", "--no-progress", "--out", str(results)]) == 0
    record = json.loads((results / "zeroshot_shapes_single.json").read_text())
    assert record["dataset"] == "shapes" and record["num_images"] == 12
    (tmp_path / "a_file").write_text("x")
    assert main(["zeroshot", "--checkpoint", str(run / "checkpoint.pt"), "--data", "shapes",
                 "--out", str(tmp_path / "a_file")]) == 2
    assert "is a file: give a folder" in capsys.readouterr().err

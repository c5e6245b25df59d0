"""`clip-from-scratch pretrain`: one command trains, reports, resumes, and explains bad input."""
import json
import subprocess
import sys

import pytest

from clip_from_scratch.cli import main

# Small enough for a test: a few seconds on a CPU.
FAST = ["--steps", "3", "--batch-size", "16", "--num-images", "64", "--no-progress", "--device", "cpu"]


def test_pretrain_trains_and_prints_zero_shot_accuracy(tmp_path, capsys):
    assert main(["pretrain", "--out", str(tmp_path), *FAST]) == 0
    printed = capsys.readouterr().out
    assert "zero-shot top-1 on held-out colour x shape pairs" in printed and "chance 3.3%" in printed
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    # The printed score is the saved one; chance is one in the 30 colour x shape names.
    assert f"pairs: {metrics['zeroshot_top1']:.1f}% (chance 3.3%" in printed
    assert metrics["chance"] == pytest.approx(100 / 30)
    assert metrics["config"]["steps"] == 3 and metrics["config"]["batch_size"] == 16
    assert (tmp_path / "loss_curve.png").exists() and (tmp_path / "checkpoint.pt").exists()


def test_resume_takes_settings_from_the_checkpoint(tmp_path, capsys):
    from clip_from_scratch.train import TrainConfig, train
    train(TrainConfig(out_dir=str(tmp_path), steps=4, batch_size=16, num_images=64, stop_after=2,
                      progress=False, device="cpu"))
    # No --steps/--batch-size: they come from the checkpoint, so the run continues as it was.
    assert main(["pretrain", "--out", str(tmp_path), "--resume", "--no-progress", "--device", "cpu"]) == 0
    assert json.loads((tmp_path / "metrics.json").read_text())["step"] == 4


@pytest.mark.parametrize("options, message", [
    (["--batch-size", "1"], "batch_size must be at least 2"),
    (["--steps", "-1"], "steps must be at least 1"),
    (["--resume"], "nothing to resume"),
])
def test_impossible_options_exit_with_a_message_and_no_traceback(tmp_path, capsys, options, message):
    assert main(["pretrain", "--out", str(tmp_path / "run"), "--no-progress", *options]) == 2
    error = capsys.readouterr().err
    assert message in error and "Traceback" not in error


def test_unwritable_output_folder_is_reported(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert main(["pretrain", "--out", str(tmp_path / "file" / "run"), *FAST]) == 2
    assert "cannot write to the output folder" in capsys.readouterr().err


def test_help_explains_every_option():
    result = subprocess.run([sys.executable, "-m", "clip_from_scratch", "pretrain", "--help"],
                            capture_output=True, text=True, check=True)
    for option in ("--out", "--resume", "--steps", "--batch-size", "--seed", "--device", "--lr",
                   "--amp", "--overwrite", "--eval-every", "--checkpoint-every", "--no-progress"):
        assert option in result.stdout, f"{option} missing from --help"
    assert "stand-in for COCO" in result.stdout

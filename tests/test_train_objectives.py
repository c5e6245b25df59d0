"""`--objective contrastive|bow|captioning`: three objectives through one engine, comparable metrics.json files."""
import json

import pytest

from clip_from_scratch.cli import main
from clip_from_scratch.errors import ConfigError
from clip_from_scratch.objectives import CLIPWithObjective
from clip_from_scratch.train import TrainConfig, TrainingError, load_checkpoint, train

TINY = dict(steps=4, batch_size=16, num_images=64, zeroshot_images=30, eval_every=2, progress=False, device="cpu")


@pytest.mark.parametrize("objective", ["contrastive", "bow", "captioning"])
def test_each_objective_trains_and_keeps_its_evaluation_curve(tmp_path, objective):
    result = train(TrainConfig(out_dir=str(tmp_path), objective=objective, **TINY))
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["config"]["objective"] == objective
    evals = metrics["evals"]
    assert evals["step"] == [2, 4] and evals["images_seen"] == [32, 64]
    assert len(evals["zeroshot_top1"]) == 2 and evals["zeroshot_top1"][-1] == result["zeroshot_top1"]
    assert 0 <= result["zeroshot_top1"] <= 100
    model, _ = load_checkpoint(tmp_path / "checkpoint.pt")
    assert isinstance(model, CLIPWithObjective) == (objective != "contrastive")


def test_a_resumed_bow_run_continues_exactly(tmp_path):
    whole = train(TrainConfig(out_dir=str(tmp_path / "whole"), objective="bow", **TINY))
    train(TrainConfig(out_dir=str(tmp_path / "parts"), objective="bow", stop_after=2, **TINY))
    resumed = train(TrainConfig(out_dir=str(tmp_path / "parts"), objective="bow", **TINY), resume=True)
    assert resumed["history"]["loss"] == whole["history"]["loss"]


def test_resuming_a_contrastive_run_as_captioning_is_one_line(tmp_path, capsys):
    train(TrainConfig(out_dir=str(tmp_path), stop_after=2, **TINY))
    with pytest.raises(TrainingError, match="holds a contrastive run: --objective captioning cannot resume it"):
        train(TrainConfig(out_dir=str(tmp_path), objective="captioning", **TINY), resume=True)
    assert main(["pretrain", "--out", str(tmp_path), "--resume", "--objective", "captioning", "--no-progress"]) == 2
    error = capsys.readouterr().err
    assert "cannot resume it" in error and len(error.strip().splitlines()) == 1 and "Traceback" not in error


@pytest.mark.parametrize("settings, message", [
    (dict(objective="mse"), "objective must be one of contrastive, bow, captioning"),
    (dict(objective="bow", data="coco"), "use --data shapes"),
])
def test_impossible_objectives_are_config_errors(settings, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**settings)


def test_unknown_objective_on_the_command_line(capsys):
    with pytest.raises(SystemExit):
        main(["pretrain", "--objective", "mse"])
    assert "invalid choice: 'mse'" in capsys.readouterr().err


def test_evaluating_a_bow_run_with_text_embeddings_is_refused_in_one_line(tmp_path, capsys):
    train(TrainConfig(out_dir=str(tmp_path), objective="bow", **TINY))
    assert main(["zeroshot", "--checkpoint", str(tmp_path / "checkpoint.pt"), "--data", "shapes"]) == 2
    error = capsys.readouterr().err
    assert "holds a bow run: its text tower was never trained" in error and "Traceback" not in error

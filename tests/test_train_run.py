"""The training loop: exact resume, atomic weights-only checkpoints, clear stops on bad input."""
import os
from functools import partial

import pytest
import torch
import torch.multiprocessing as mp

from clip_from_scratch import train as train_module
from clip_from_scratch.runs import read_checkpoint
from clip_from_scratch.train import TrainConfig, TrainingDiverged, TrainingError, learning_rate, load_checkpoint, train
from clip_from_scratch.train_data import ShapesEvaluation

# A tiny run: a few seconds on a CPU.
TINY = dict(num_images=256, batch_size=16, vision_width=32, vision_heads=2, vision_layers=1, transformer_width=32,
            transformer_heads=2, transformer_layers=1, embed_dim=32, bpe_merges=100,
            zeroshot_images=30, steps=8, warmup_steps=2, eval_every=0, checkpoint_every=0, progress=False,
            device="cpu")


def tiny(out_dir, **changes):
    return TrainConfig(out_dir=str(out_dir), **{**TINY, **changes})


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The reference: one run of 8 steps, start to finish."""
    out = tmp_path_factory.mktemp("uninterrupted")
    return train(tiny(out)), out


def test_run_writes_checkpoint_metrics_and_loss_curve(uninterrupted):
    result, out = uninterrupted
    assert result["finished"] and result["step"] == 8 and len(result["history"]["loss"]) == 8
    for name in ("checkpoint.pt", "metrics.json", "loss_curve.png"):
        assert (out / name).stat().st_size > 0, f"{name} missing"
    import json
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["steps"] == 8
    # The reported score is the saved model's, on the run's held-out pairs: scoring the checkpoint again gives it.
    model, tokenizer = load_checkpoint(out / "checkpoint.pt")
    tokenize = partial(tokenizer.tokenize, context_length=model.config.context_length, truncate=True)
    rescored = ShapesEvaluation(tiny(out)).score(model, tokenize)
    assert metrics["zeroshot_top1"] == pytest.approx(rescored) == pytest.approx(result["zeroshot_top1"])
    assert (metrics["zeroshot_top1"] * TINY["zeroshot_images"] / 100) == pytest.approx(
        round(metrics["zeroshot_top1"] * TINY["zeroshot_images"] / 100), abs=1e-3), "a whole number of images"
    assert not list(out.glob("*.tmp")), "a temporary checkpoint file was left behind"


def test_checkpoint_loads_with_weights_only_and_rebuilds_the_model(uninterrupted):
    _, out = uninterrupted
    state = torch.load(out / "checkpoint.pt", weights_only=True)   # no arbitrary unpickling
    for key in ("model", "model_config", "tokenizer", "step", "optimizer", "train_config", "rng", "history"):
        assert key in state, f"checkpoint lacks {key!r}"
    assert state["step"] == 8 and isinstance(state["rng"]["torch"], torch.Tensor)
    model, tokenizer = load_checkpoint(out / "checkpoint.pt")
    assert model.config.vocab_size == tokenizer.vocab_size < 1000, "the run's own small BPE"
    tokens = tokenizer(["a red circle."], context_length=model.config.context_length)
    assert model.encode_text(tokens).shape == (1, 32)


def test_stopped_and_resumed_run_repeats_the_same_losses(uninterrupted, tmp_path):
    reference, _ = uninterrupted
    stopped = train(tiny(tmp_path, stop_after=5))
    assert not stopped["finished"] and read_checkpoint(tmp_path)["step"] == 5
    resumed = train(tiny(tmp_path), resume=True)
    assert resumed["history"]["loss"] == reference["history"]["loss"], "resume changed the run"
    assert resumed["zeroshot_top1"] == reference["zeroshot_top1"]


class Killed(Exception):
    """Stands in for the process dying between two checkpoints."""


def test_killed_run_resumes_from_last_checkpoint_with_the_same_losses(uninterrupted, tmp_path, monkeypatch):
    reference, _ = uninterrupted
    real_loss, calls = train_module.contrastive_loss, []

    def dies_at_step_7(*args, **kwargs):
        calls.append(1)
        if len(calls) == 7:
            raise Killed
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(train_module, "contrastive_loss", dies_at_step_7)
    with pytest.raises(Killed):
        train(tiny(tmp_path, checkpoint_every=3))
    assert read_checkpoint(tmp_path)["step"] == 6
    monkeypatch.setattr(train_module, "contrastive_loss", real_loss)
    resumed = train(tiny(tmp_path, checkpoint_every=3), resume=True)
    assert resumed["history"]["loss"] == reference["history"]["loss"]


def test_nan_loss_stops_clearly_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    real_loss, calls = train_module.contrastive_loss, []

    def nan_at_step_5(*args, **kwargs):
        calls.append(1)
        loss = real_loss(*args, **kwargs)
        return loss * float("nan") if len(calls) == 5 else loss

    monkeypatch.setattr(train_module, "contrastive_loss", nan_at_step_5)
    with pytest.raises(TrainingDiverged, match=r"loss became nan at step 5.*checkpoint \(step 4\)"):
        train(tiny(tmp_path, checkpoint_every=2))
    state = read_checkpoint(tmp_path)
    assert state["step"] == 4 and all(torch.isfinite(t).all() for t in state["model"].values())


def test_resume_with_other_settings_is_refused(uninterrupted, tmp_path):
    train(tiny(tmp_path, stop_after=2))
    with pytest.raises(TrainingError, match="batch_size: checkpoint 16, now 32"):
        train(tiny(tmp_path, batch_size=32), resume=True)
    assert read_checkpoint(tmp_path)["step"] == 2, "the refused resume must not touch the checkpoint"


def test_existing_run_is_not_overwritten_by_accident(uninterrupted):
    _, out = uninterrupted
    with pytest.raises(TrainingError, match="already holds a run.*--resume.*--overwrite"):
        train(tiny(out))


def test_resume_without_a_checkpoint_says_so(tmp_path):
    with pytest.raises(TrainingError, match="nothing to resume"):
        train(tiny(tmp_path / "empty"), resume=True)


def test_unwritable_output_folder_fails_before_training(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(TrainingError, match="cannot write to the output folder"):
        train(tiny(blocker / "run"))


@pytest.mark.parametrize("changes, message", [
    (dict(steps=0), "steps must be at least 1"),
    (dict(steps=-5), "steps must be at least 1"),
    (dict(batch_size=1), "contrastive loss needs other pairs"),
    (dict(lr=0.0), "lr must be positive"),
    (dict(vision_patch_size=5), "multiple of vision_patch_size"),
    (dict(transformer_width=30, transformer_heads=4), "transformer_width \\(30\\) must be divisible"),
    (dict(amp="fp8"), "amp must be one of"),
    (dict(shape_only=0.8, colour_only=0.4), "together at most 1"),
    (dict(colour_only=-0.1), "each at least 0"),
    (dict(num_images=8), "at least batch_size"),
])
def test_impossible_settings_are_rejected_with_the_reason(tmp_path, changes, message):
    with pytest.raises(ValueError, match=message):
        tiny(tmp_path, **changes)


def test_corrupt_checkpoint_gives_a_clear_error(tmp_path):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(b"half a file")
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        load_checkpoint(path)


def test_learning_rate_warms_up_then_decays_to_zero():
    config = TrainConfig(steps=1000, warmup_steps=100, lr=1e-3)
    rates = [learning_rate(step, config) for step in range(1000)]
    assert rates[0] < rates[50] < rates[99] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(rates[100:], rates[101:])) and rates[-1] == pytest.approx(0, abs=1e-12)


def test_no_weight_decay_on_gains_biases_embeddings_and_logit_scale():
    from clip_from_scratch.model import CLIP
    config = TrainConfig()
    model = CLIP(config.model_config(vocab_size=600))
    optimizer = train_module.make_optimizer(model, config, torch.device("cpu"))
    names = {id(p): n for n, p in model.named_parameters()}
    no_decay = {names[id(p)] for g in optimizer.param_groups if g["weight_decay"] == 0 for p in g["params"]}
    assert {"logit_scale", "token_embedding.weight", "positional_embedding", "visual.class_embedding",
            "visual.positional_embedding", "ln_final.weight", "ln_final.bias"} <= no_decay
    assert "visual.conv1.weight" not in no_decay and "text_projection" not in no_decay


# ---------------------------------------------------------------- torchrun-style, two processes
def _ddp_worker(rank, port, out_dir, results):
    os.environ.update(WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    result = train(tiny(out_dir, steps=4))
    results[rank] = result["history"]["loss"]


def test_two_processes_train_like_one_on_the_same_global_batch(uninterrupted, tmp_path, free_port):
    reference, _ = uninterrupted
    results = mp.Manager().dict()
    mp.spawn(_ddp_worker, args=(free_port, str(tmp_path), results), nprocs=2, join=True)
    single = train(tiny(tmp_path / "single", steps=4))["history"]["loss"]
    assert results[0] == pytest.approx(single, rel=1e-4), "DDP with the gathered loss should match one process"
    assert results[1] == results[0], "every process sees the same global loss"

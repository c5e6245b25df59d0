"""The training engine's pieces: the float32 loss under autocast, batches, crops, captions, stops and resumes."""
from __future__ import annotations

import itertools
import json
import os
import signal
from types import SimpleNamespace

import pytest
import torch
import torch.multiprocessing as mp

from clip_from_scratch import train as train_module
from clip_from_scratch.cli import build_parser, main, pretrain_config
from clip_from_scratch.data.pairs import ImageCaptionPairs
from clip_from_scratch.loss import contrastive_loss
from clip_from_scratch.model import CLIP
from clip_from_scratch.runs import read_checkpoint
from clip_from_scratch.tokenizer import clip_tokenizer
from clip_from_scratch.train import (
    FeaturesForLoss,
    TrainConfig,
    TrainingError,
    batch_loss,
    make_batch,
    train,
)

TINY = dict(num_images=64, batch_size=16, vision_width=32, vision_heads=2, vision_layers=1, transformer_width=32,
            transformer_heads=2, transformer_layers=1, embed_dim=32, bpe_merges=60,
            zeroshot_images=30, steps=6, warmup_steps=1, eval_every=0, checkpoint_every=0, progress=False,
            device="cpu", log_every=1)


SMALL_TOWERS = dict(vision_patch_size=4, vision_width=32, vision_heads=2, vision_layers=1, transformer_width=32,
                    transformer_heads=2, transformer_layers=1, embed_dim=32)


def tiny(out_dir, **changes):
    return TrainConfig(out_dir=str(out_dir), **{**TINY, **changes})


# ----------------------------------------------------------------------------- the loss in float32
def _clip_batch(captions, resolution=16):
    """A batch of random images and real CLIP token ids (id 0 is the byte '!')."""
    tokenizer = clip_tokenizer()
    pairs = ImageCaptionPairs(torch.randint(0, 256, (len(captions), 3, resolution, resolution), dtype=torch.uint8),
                              [[c] for c in captions])
    return pairs, pairs.tokenize(tokenizer, context_length=20)


def test_loss_is_float32_and_equals_the_fp32_computation_under_bf16_autocast():
    torch.manual_seed(0)
    config = TrainConfig(num_images=4, batch_size=4, image_resolution=16, **SMALL_TOWERS, context_length=20,
                         crop_scale=1.0)
    pairs, captions = _clip_batch(["a cat.", "a dog on a mat.", "two birds!", "a red car."])
    model = CLIP(config.model_config(vocab_size=49408))
    model.logit_scale.data.fill_(torch.log(torch.tensor(100.0)))   # logits up to 100: where bf16 errs most
    net = FeaturesForLoss(model)
    batch = make_batch(0, config, pairs.images, captions, torch.device("cpu"))

    loss = batch_loss(net, batch, torch.bfloat16)
    assert loss.dtype == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        image_features, text_features, logit_scale = net(*batch)
        inside = contrastive_loss(torch.nn.functional.normalize(image_features, dim=-1),
                                  torch.nn.functional.normalize(text_features, dim=-1), logit_scale)
    expected = contrastive_loss(torch.nn.functional.normalize(image_features.double(), dim=-1),
                                torch.nn.functional.normalize(text_features.double(), dim=-1),
                                logit_scale.double())
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    # The same loss computed inside autocast would be measurably off: that is what the cast prevents.
    assert abs(inside.item() - expected.item()) > 100 * abs(loss.item() - expected.item())


def test_caption_with_an_exclamation_mark_keeps_its_end_of_text_token():
    pairs, captions = _clip_batch(["wow!", "a cat!! on a mat", "hello"])
    assert (captions.tokens == 0).any(dim=1)[:2].all(), "'!' is id 0 in CLIP's vocabulary"
    config = TrainConfig(num_images=3, batch_size=3, image_resolution=16, **SMALL_TOWERS, context_length=20)
    _, text, eot_index = make_batch(0, config, pairs.images, captions, torch.device("cpu"))
    assert (text[torch.arange(3), eot_index] == 49407).all()
    model = CLIP(config.model_config(vocab_size=49408)).eval()
    with torch.no_grad():   # the loop's fast path gives what the checked path gives on the full ids
        order = make_batch(0, config, pairs.images, captions, torch.device("cpu"))
        rows = captions.caption_rows(train_module.batch_indices(0, config, 3)[1], 0, config.seed)
        assert torch.allclose(model.encode_text(text, eot_index), model.encode_text(captions.tokens[rows]),
                              atol=1e-6)
        assert torch.equal(order.text, text)


# ----------------------------------------------------------------------------- batches
def test_every_image_gets_one_of_its_own_captions_and_the_choice_changes_between_epochs():
    pairs = ImageCaptionPairs(torch.zeros(50, 3, 8, 8, dtype=torch.uint8),
                              [[f"image {i} caption {j}" for j in range(1 + i % 5)] for i in range(50)])
    captions = pairs.tokenize(clip_tokenizer(), context_length=12)
    indices = torch.arange(50)
    epoch0 = captions.caption_rows(indices, epoch=0, seed=0)
    assert torch.equal(epoch0, captions.caption_rows(indices, epoch=0, seed=0)), "a pure function of the epoch"
    assert ((epoch0 >= captions.first) & (epoch0 < captions.first + captions.counts)).all()
    seen = {int(r) for epoch in range(40) for r in captions.caption_rows(indices, epoch, seed=0)}
    assert seen == set(range(pairs.num_captions)), "over many epochs every caption is used"


# ----------------------------------------------------------------------------- stopping on signals
@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGHUP"])
def test_sigterm_and_sighup_finish_the_step_save_and_leave_no_temporary_file(tmp_path, monkeypatch, signal_name,
                                                                             capsys):
    real_make_batch = train_module.make_batch

    def make_batch_then_signal(step, *args, **kwargs):
        if step == 2:
            os.kill(os.getpid(), getattr(signal, signal_name))
        return real_make_batch(step, *args, **kwargs)

    monkeypatch.setattr(train_module, "make_batch", make_batch_then_signal)
    previous = signal.getsignal(getattr(signal, signal_name))
    result = train(tiny(tmp_path))
    assert not result["finished"] and result["step"] == 3, "the step in flight is finished, then the run stops"
    assert read_checkpoint(tmp_path)["step"] == 3
    assert not list(tmp_path.glob("*.tmp")) and not (tmp_path / "metrics.json").exists()
    assert signal_name in capsys.readouterr().out
    assert signal.getsignal(getattr(signal, signal_name)) == previous, "the old handler is back"


def _ddp_stop_worker(rank, port, out_dir, results):
    os.environ.update(WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    real_make_batch = train_module.make_batch

    def make_batch(step, *args, **kwargs):
        if rank == 1 and step == 2:   # only one process is told to stop
            os.kill(os.getpid(), signal.SIGTERM)
        return real_make_batch(step, *args, **kwargs)

    train_module.make_batch = make_batch
    result = train(tiny(out_dir, log_every=2, steps=20))
    results[rank] = (result["finished"], result["step"])


def test_a_signal_to_one_torchrun_process_stops_every_process_at_the_same_step(tmp_path, free_port):
    results = mp.Manager().dict()
    mp.spawn(_ddp_stop_worker, args=(free_port, str(tmp_path), results), nprocs=2, join=True)   # no hang
    assert results[0] == results[1] == (False, 4), "both stop at the first agreed check after the signal"
    assert read_checkpoint(tmp_path)["step"] == 4


# ----------------------------------------------------------------------------- resume and overwrite
def _parse(argv):
    return build_parser().parse_args(["pretrain", *argv])


def test_resume_keeps_the_runs_own_eval_and_checkpoint_intervals(tmp_path):
    train(tiny(tmp_path, checkpoint_every=2, eval_every=3, steps=8, stop_after=2))
    config = pretrain_config(_parse(["--out", str(tmp_path), "--resume"]))
    assert (config.checkpoint_every, config.eval_every, config.steps) == (2, 3, 8)
    config = pretrain_config(_parse(["--out", str(tmp_path), "--resume", "--checkpoint-every", "5"]))
    assert config.checkpoint_every == 5, "an option given on the command line wins"


def test_resume_and_overwrite_together_are_refused(tmp_path, capsys):
    train(tiny(tmp_path, stop_after=1))
    assert main(["pretrain", "--out", str(tmp_path), "--resume", "--overwrite", "--device", "cpu"]) == 2
    assert "choose one" in capsys.readouterr().err
    assert read_checkpoint(tmp_path)["step"] == 1, "nothing was touched"


def test_a_failed_resume_creates_no_folder(tmp_path, capsys):
    assert main(["pretrain", "--out", str(tmp_path / "never"), "--resume", "--device", "cpu"]) == 2
    assert "nothing to resume" in capsys.readouterr().err and not (tmp_path / "never").exists()


def test_overwrite_removes_the_old_runs_metrics_even_if_the_new_run_stops_early(tmp_path):
    train(tiny(tmp_path, steps=2))
    assert (tmp_path / "metrics.json").exists()
    train(tiny(tmp_path, steps=4, stop_after=1), overwrite=True)
    assert not (tmp_path / "metrics.json").exists() and not (tmp_path / "loss_curve.png").exists()


def test_resuming_a_finished_run_keeps_its_training_time(tmp_path, monkeypatch):
    # A clock that advances a second per reading: a tiny run's time would otherwise round to 0.0 s.
    ticks = itertools.count()
    monkeypatch.setattr(train_module, "time", SimpleNamespace(perf_counter=lambda: float(next(ticks))))
    first = train(tiny(tmp_path, steps=3))
    again = train(tiny(tmp_path, steps=3), resume=True)
    assert first["train_seconds"] >= 1, "the clock must have moved during the first run"
    assert again["step"] == 3 and again["train_seconds"] >= first["train_seconds"]
    assert json.loads((tmp_path / "metrics.json").read_text())["train_seconds"] == again["train_seconds"]


def test_resume_from_a_weights_only_checkpoint_is_a_clear_error(tmp_path):
    train(tiny(tmp_path, stop_after=1))
    state = read_checkpoint(tmp_path)
    torch.save({k: state[k] for k in ("model", "model_config", "tokenizer", "step", "train_config")},
               tmp_path / "checkpoint.pt")
    with pytest.raises(TrainingError, match=r"cannot be resumed: it lacks \['optimizer'"):
        train(tiny(tmp_path), resume=True)


def test_resume_from_a_checkpoint_with_another_architecture_is_a_clear_error(tmp_path):
    train(tiny(tmp_path, stop_after=1))
    state = read_checkpoint(tmp_path)
    wider = tiny(tmp_path, vision_width=64, transformer_width=64)
    state["model"] = CLIP(wider.model_config(vocab_size=600)).state_dict()
    torch.save(state, tmp_path / "checkpoint.pt")
    with pytest.raises(TrainingError, match="does not fit this run's model"):
        train(tiny(tmp_path), resume=True)


# ----------------------------------------------------------------------------- bad options
@pytest.mark.parametrize("options, message", [
    (["--device", "nonsense"], "not a device name"),
    (["--device", "mps"], "Apple-silicon"),
    (["--seed", "-1"], "seed must not be negative"),
    (["--num-images", "100000000", "--resolution", "32"], "GiB of memory"),
    (["--crop-scale", "0"], "crop_scale"),
    (["--preset", "gpu"], "--preset gpu is for --data coco"),
])
def test_bad_pretrain_options_are_one_line_errors(tmp_path, capsys, options, message):
    if "mps" in options and getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    assert main(["pretrain", "--out", str(tmp_path / "run"), "--no-progress", *options]) == 2
    error = capsys.readouterr().err
    assert message in error and "Traceback" not in error


def test_zeroshot_output_that_is_a_folder_fails_before_the_evaluation(tmp_path, capsys, monkeypatch):
    from clip_from_scratch import cli
    monkeypatch.setattr(cli, "load_model_for_evaluation", lambda *a: pytest.fail("evaluation started"))
    assert main(["zeroshot", "--checkpoint", "x.pt", "--dataset", "shapes", "--output", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err


def test_zeroshot_weights_given_a_training_checkpoint_says_to_use_checkpoint(tmp_path, capsys):
    train(tiny(tmp_path, steps=1))
    code = main(["zeroshot", "--weights", str(tmp_path / "checkpoint.pt"), "--dataset", "shapes",
                 "--output", str(tmp_path / "out.json")])
    assert code == 2 and "--checkpoint" in capsys.readouterr().err


def test_bugs_are_not_hidden_as_user_errors(monkeypatch, tmp_path):
    from clip_from_scratch import cli

    def broken(args):
        raise ValueError("an internal bug")
    monkeypatch.setitem(cli.COMMANDS, "pretrain", broken)
    with pytest.raises(ValueError, match="an internal bug"):
        main(["pretrain", "--out", str(tmp_path)])


def _ddp_folder_worker(rank, port, out_dir, results):
    os.environ.update(WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    try:
        train(tiny(out_dir))
        results[rank] = "trained"
    except TrainingError as err:
        results[rank] = str(err)


def test_every_torchrun_process_checks_the_output_folder_and_fails_with_the_same_message(tmp_path, free_port):
    train(tiny(tmp_path, steps=1))   # the folder already holds a run: no process may go on
    results = mp.Manager().dict()
    mp.spawn(_ddp_folder_worker, args=(free_port, str(tmp_path), results), nprocs=2, join=True)   # neither waits
    assert results[0] == results[1] and "already holds a run" in results[0]


def test_pretrain_trains_a_resnet_image_tower_and_resumes_it(tmp_path):
    config = tiny(tmp_path, image_encoder="resnet", image_resolution=32, vision_layers=1, vision_width=16,
                  steps=4, stop_after=2)
    train(config)
    result = train(tiny(tmp_path, image_encoder="resnet", image_resolution=32, vision_layers=1,
                        vision_width=16, steps=4), resume=True)
    assert result["finished"] and result["model_config"]["vision_layers"] == (1, 1, 1, 1)
    from clip_from_scratch import load
    model, _ = load(str(tmp_path / "checkpoint.pt"), device="cpu")
    assert model.config.is_resnet and "visual.attnpool.q_proj.weight" in model.state_dict()


def test_a_resnet_at_a_resolution_it_cannot_halve_five_times_is_refused(tmp_path, capsys):
    assert main(["pretrain", "--out", str(tmp_path / "run"), "--image-encoder", "resnet", "--no-progress"]) == 2
    assert "multiple of 32" in capsys.readouterr().err


def test_the_training_config_names_the_model_the_way_the_model_config_does():
    from dataclasses import fields

    from clip_from_scratch.model import CLIPConfig
    config = TrainConfig(vision_width=48, vision_heads=3, vision_layers=3, transformer_width=40,
                         transformer_heads=5, transformer_layers=4, embed_dim=24, context_length=20)
    model_config = config.model_config(vocab_size=700)
    shared = {f.name for f in fields(CLIPConfig)} & {f.name for f in fields(TrainConfig)}
    assert shared >= {"vision_width", "vision_layers", "vision_heads", "vision_patch_size", "transformer_width",
                      "transformer_layers", "transformer_heads", "embed_dim", "context_length", "image_resolution"}
    for name in shared:
        assert getattr(model_config, name) == getattr(config, name), name


# ----------------------------------------------------------------------------- the step and the run's state
def test_train_step_in_a_plain_loop_gives_exactly_the_losses_train_logs(tmp_path):
    config = tiny(tmp_path, steps=5)
    result = train(config)
    from clip_from_scratch.bpe import train_bpe
    from clip_from_scratch.train_data import load_pairs
    pairs = load_pairs(config)
    tokenizer = train_bpe(pairs.all_captions(), config.bpe_merges)
    captions = pairs.tokenize(tokenizer, config.context_length)
    torch.manual_seed(config.seed)
    state = train_module.start_state(config, tokenizer, torch.device("cpu"))
    net = train_module.training_network(state.model, train_module.objective_for(config), config)
    losses = [train_module.train_step(state, net, make_batch(state.step, config, pairs.images, captions,
                                                             torch.device("cpu")), config).item()
              for _ in range(config.steps)]
    assert state.step == config.steps
    assert losses == result["history"]["loss"], "train() is train_step in a loop, bit for bit"


def test_a_batch_that_does_not_split_evenly_across_processes_is_refused():
    from clip_from_scratch.training_run import process_slice
    assert [process_slice(12, rank, 3) for rank in range(3)] == [slice(0, 4), slice(4, 8), slice(8, 12)]
    with pytest.raises(TrainingError, match="does not split evenly across 3 processes: use a multiple of 3"):
        process_slice(10, 0, 3)


def test_a_checkpoint_from_a_newer_version_of_the_package_is_refused(tmp_path):
    from clip_from_scratch.runs import CHECKPOINT_VERSION, NotATrainingCheckpoint
    train(tiny(tmp_path, steps=1))
    state = read_checkpoint(tmp_path)
    assert state["version"] == CHECKPOINT_VERSION
    torch.save({**state, "version": CHECKPOINT_VERSION + 1}, tmp_path / "checkpoint.pt")
    with pytest.raises(NotATrainingCheckpoint, match="newer clip_from_scratch"):
        read_checkpoint(tmp_path)


# ----------------------------------------------------------------------------- each setting said once
def test_every_training_setting_has_a_flag_whose_help_is_the_fields_own():
    from dataclasses import fields
    help_text = " ".join(build_parser()._subparsers._group_actions[0].choices["pretrain"].format_help().split())
    for field in fields(TrainConfig):
        flag = field.metadata.get("flag") or "--" + field.name.replace("_", "-")
        assert flag in help_text, f"{field.name} has no {flag} option"
        assert " ".join(field.metadata["help"].split())[:40] in help_text, f"{flag}'s help is not the field's"
    config = pretrain_config(_parse(["--beta1", "0.8", "--beta2", "0.95", "--eps", "1e-8", "--grad-clip", "0",
                                     "--max-shapes", "2", "--no-progress"]))
    assert (config.beta1, config.beta2, config.eps, config.grad_clip, config.max_shapes) == (0.8, 0.95, 1e-8, 0, 2)
    assert config.progress is False


def test_a_resume_may_change_only_the_settings_marked_so(tmp_path):
    train(tiny(tmp_path, steps=4, stop_after=1))
    with pytest.raises(TrainingError, match="beta2: checkpoint 0.98, now 0.9"):
        train(tiny(tmp_path, steps=4, beta2=0.9), resume=True)
    result = train(tiny(tmp_path, steps=4, eval_every=2, log_every=2), resume=True)
    assert result["finished"] and result["evals"]["step"] == [2, 4]
    assert "lr" in TrainConfig.run_defining() and "eval_every" not in TrainConfig.run_defining()

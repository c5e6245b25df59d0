"""The exercises where the learner runs an experiment: their checks read real runs back and judge the readings.

Every run here is a real (tiny) training run written to disk by ``train()``,
exactly what the learner's command writes; the checks recompute each number
from the run's checkpoint, so a right reading passes and a wrong one is caught.
"""
import json
import shutil

import pytest
from exercise_contract import assert_mistake_gets_hint

from clip_from_scratch.exercises import ch02, ch03b, ch04, ch05, ch06, experiments
from clip_from_scratch.train import TrainConfig, train

TINY = dict(num_images=256, steps=4, batch_size=16, warmup_steps=1, zeroshot_images=30, bpe_merges=20,
            eval_every=0, checkpoint_every=0, progress=False, device="cpu")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """``runs(name, **settings) -> (folder, metrics)``: a finished tiny run, trained once per module."""
    root, done = tmp_path_factory.mktemp("experiment_runs"), {}

    def run(name, **settings):
        if name not in done:
            folder = str(root / name)
            done[name] = folder, train(TrainConfig(out_dir=folder, **{**TINY, **settings}), overwrite=True)
        return done[name]
    return run


def reading(*named_runs):
    """The learner's report, read right: ``{folder: zero-shot top-1 %}``."""
    return {folder: metrics["zeroshot_top1"] for folder, metrics in named_runs}


def test_zeroshot_is_recomputed_exactly_from_the_checkpoint(runs):
    folder, metrics = runs("base")
    run, = experiments.reported_runs({folder: 0.0}, 1, "top-1")[0]
    assert experiments.zeroshot_top1(run) == pytest.approx(metrics["zeroshot_top1"], abs=1e-6)


@pytest.mark.parametrize("check, other", [
    (ch05.check_shortcut, dict(shape_only=0.0, colour_only=0.0)),
    (ch05.check_beta2, dict(beta2=0.999)),
    (ch06.check_heldout, dict(heldout="captions")),
    (ch02.check_context_length, dict(context_length=6)),
], ids=["shortcut", "beta2", "heldout", "context"])
def test_two_run_experiment_read_right_passes(check, other, runs, capsys):
    name = "_".join(f"{k}{v}" for k, v in other.items())
    assert check(reading(runs("base"), runs(name, **other))) is True
    assert capsys.readouterr().out.startswith("[OK]")


def test_shortcut_reading_off_by_a_lot_is_caught(runs, capsys):
    (base, base_metrics), (short, short_metrics) = runs("base"), runs("short", shape_only=0.0, colour_only=0.0)
    answer = {base: base_metrics["zeroshot_top1"], short: short_metrics["zeroshot_top1"] + 20}
    assert_mistake_gets_hint(ch05.check_shortcut, answer, "recomputed from its checkpoint", capsys)


def test_a_fraction_instead_of_a_percentage_is_named(runs, capsys):
    (base, base_metrics), (short, short_metrics) = runs("base"), runs("short", shape_only=0.0, colour_only=0.0)
    if base_metrics["zeroshot_top1"] < 5:
        pytest.skip("this tiny run scored under 5%: a fraction and a percentage are too close to tell apart")
    answer = {base: base_metrics["zeroshot_top1"] / 100, short: short_metrics["zeroshot_top1"]}
    assert_mistake_gets_hint(ch05.check_shortcut, answer, "percentage", capsys)


def test_runs_that_differ_in_more_than_the_setting_under_study_are_refused(runs, capsys):
    answer = reading(runs("base"), runs("short_seed1", shape_only=0.0, colour_only=0.0, seed=1))
    assert_mistake_gets_hint(ch05.check_shortcut, answer, "differ only in", capsys)


def test_a_run_with_the_wrong_settings_is_named(runs, capsys):
    answer = reading(runs("base"), runs("beta2_0.999", beta2=0.999))
    assert_mistake_gets_hint(ch05.check_shortcut, answer, "needs shape_only=0.0, colour_only=0.0", capsys)


def test_a_folder_without_a_finished_run_says_run_it_first(tmp_path, runs, capsys):
    folder, metrics = runs("base")
    answer = {folder: metrics["zeroshot_top1"], str(tmp_path / "never_ran"): 10.0}
    assert_mistake_gets_hint(ch05.check_shortcut, answer, "run its command first", capsys)


def test_a_deleted_checkpoint_is_reported_not_raised(tmp_path, runs, capsys):
    (base, base_metrics), (short, short_metrics) = runs("base"), runs("short", shape_only=0.0, colour_only=0.0)
    copy = tmp_path / "copy"
    shutil.copytree(short, copy)
    (copy / "checkpoint.pt").unlink()
    answer = {base: base_metrics["zeroshot_top1"], str(copy): short_metrics["zeroshot_top1"]}
    assert_mistake_gets_hint(ch05.check_shortcut, answer, "cannot be read back", capsys)


def test_a_broken_metrics_file_is_reported_not_raised(tmp_path, runs, capsys):
    folder, metrics = runs("base")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "metrics.json").write_text(json.dumps({"zeroshot_top1": 3.0}))   # no "config"
    answer = {folder: metrics["zeroshot_top1"], str(broken): 3.0}
    assert_mistake_gets_hint(ch05.check_shortcut, answer, "cannot be read", capsys)


def test_resnet_against_vit(runs, capsys):
    vit = runs("vit32", image_resolution=32, vision_patch_size=8)
    resnet = runs("resnet32", image_resolution=32, image_encoder="resnet", vision_width=8, vision_layers=1)
    assert ch03b.check_resnet_vs_vit(reading(vit, resnet)) is True
    out = capsys.readouterr().out
    assert out.startswith("[OK]") and "M parameters" in out
    other_resolution = runs("base")                  # 16 px: differs in more than the image encoder
    assert_mistake_gets_hint(ch03b.check_resnet_vs_vit, reading(other_resolution, resnet), "differ only in", capsys)


def test_batch_size_at_equal_images_seen(runs, capsys):
    equal = [runs(f"batch{b}", batch_size=b, steps=steps) for b, steps in ((16, 16), (64, 4), (256, 1))]
    assert ch04.check_batch_size(reading(*equal)) is True
    assert "cannot be compared" in capsys.readouterr().out
    unequal = equal[:2] + [runs("batch256_long", batch_size=256, steps=2)]
    assert_mistake_gets_hint(ch04.check_batch_size, reading(*unequal), "same number of images", capsys)


def test_best_fixed_scale(runs, capsys):
    folder, _ = runs("base")
    run, = experiments.reported_runs({folder: 0.0}, 1, "scale")[0]
    best = ch04.best_fixed_scale(run)
    assert best in ch04.SCALES.tolist()
    assert ch04.check_best_scale({folder: best}) is True
    assert "the run learnt" in capsys.readouterr().out
    assert_mistake_gets_hint(ch04.check_best_scale, {folder: 3 * best}, "best fixed scale", capsys)


@pytest.mark.parametrize("check", [ch02.check_context_length, ch03b.check_resnet_vs_vit, ch04.check_batch_size,
                                   ch04.check_best_scale, ch05.check_beta2, ch05.check_shortcut, ch06.check_heldout])
@pytest.mark.parametrize("answer", [None, {}, {"runs/a": 1.0}, {"runs/a": "high", "runs/b": 2}, [1, 2], 35.0],
                         ids=["none", "empty", "one", "not-a-number", "list", "float"])
def test_odd_reports_get_a_message(check, answer, capsys):
    assert check(answer) is False
    out = capsys.readouterr().out
    assert out.startswith("[TODO]" if answer is None else "[NOT YET]"), out

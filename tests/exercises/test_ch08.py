"""Chapter 08's checks: the learner's reported numbers against a recomputation from their own runs."""
import json

import pytest

from clip_from_scratch.exercises import ch08
from clip_from_scratch.train import TrainConfig, train


def fake_run(folder, batch_size, steps, zeroshot_top1, objective="contrastive"):
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps(dict(
        zeroshot_top1=zeroshot_top1, config=dict(batch_size=batch_size, steps=steps, objective=objective))))
    return str(folder)


@pytest.fixture
def batch_runs(tmp_path):
    return fake_run(tmp_path / "small", 16, 160, 41.0), fake_run(tmp_path / "large", 256, 10, 35.5)


def test_batch_gap_solution_passes(batch_runs, capsys):
    assert ch08.check_batch_size_gap(-5.5, *batch_runs) is True
    assert capsys.readouterr().out.startswith("[OK]")


@pytest.mark.parametrize("answer, hint", [
    (5.5, "wrong sign"),                       # small minus large
    (-3.0, "give -5.50 points"),                # misread a number
])
def test_batch_gap_typical_mistakes_get_a_hint(batch_runs, capsys, answer, hint):
    assert ch08.check_batch_size_gap(answer, *batch_runs) is False
    out = capsys.readouterr().out
    assert out.startswith("[NOT YET]") and hint in out, out


def test_batch_gap_runs_that_saw_different_images_are_refused(tmp_path, capsys):
    small, large = fake_run(tmp_path / "s", 16, 10, 40.0), fake_run(tmp_path / "l", 256, 10, 30.0)
    assert ch08.check_batch_size_gap(-10.0, small, large) is False
    assert "same images" in capsys.readouterr().out
    assert ch08.check_batch_size_gap(10.0, large, small) is False
    assert "first folder should hold the small batch" in capsys.readouterr().out


def test_batch_gap_without_runs_asks_for_them(capsys):
    assert ch08.check_batch_size_gap(1.0) is False
    assert "pass the run's folder" in capsys.readouterr().out


@pytest.fixture(scope="module")
def bow_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bow")
    train(TrainConfig(out_dir=str(folder), objective="bow", steps=30, batch_size=32, num_images=256,
                      zeroshot_images=60, eval_every=0, progress=False, device="cpu"))
    return str(folder)


def recomputed_attributes(run_dir):
    """The learner's way (the notebook's solution), written apart from the check's reference."""
    import torch

    from clip_from_scratch.data import shapes
    from clip_from_scratch.runs import load_checkpoint
    from clip_from_scratch.transforms import normalize
    model, tokenizer = load_checkpoint(run_dir)
    test = shapes.zeroshot_set(60, 16, 0)
    tokens = tokenizer.tokenize([t.format(n) for n in test["classnames"] for t in test["templates"]],
                                context_length=model.config.context_length)
    with torch.no_grad():
        scores = model.objective.class_scores(model, normalize(test["images"]), tokens, 30)
    names = [shapes.CLASSNAMES[i].split() for i in scores.argmax(1).tolist()]
    truth = [shapes.CLASSNAMES[i].split() for i in test["labels"].tolist()]
    return {what: 100 * sum(g[i] == t[i] for g, t in zip(names, truth)) / len(truth)
            for i, what in enumerate(("colour", "shape"))}


def test_bow_attributes_solution_passes_and_mistakes_get_hints(bow_run, capsys):
    answer = recomputed_attributes(bow_run)
    assert ch08.check_bow_attributes(answer, bow_run) is True
    assert capsys.readouterr().out.startswith("[OK]")
    if abs(answer["colour"] - answer["shape"]) > 2:
        swapped = {"colour": answer["shape"], "shape": answer["colour"]}
        assert ch08.check_bow_attributes(swapped, bow_run) is False
        assert "swapped" in capsys.readouterr().out
    wrong = {"colour": (answer["colour"] + 30) % 100, "shape": answer["shape"]}
    assert ch08.check_bow_attributes(wrong, bow_run) is False
    assert "[NOT YET]" in capsys.readouterr().out


def test_bow_attributes_of_a_contrastive_run_are_refused(tmp_path, capsys):
    folder = fake_run(tmp_path / "c", 16, 10, 40.0)
    assert ch08.check_bow_attributes({"colour": 50, "shape": 50}, folder) is False
    assert "pass the bag-of-words run's folder" in capsys.readouterr().out

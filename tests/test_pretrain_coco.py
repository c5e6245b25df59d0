"""`pretrain --data coco` end to end: COCO-format files fetched over loopback, retrieval figures, exact resume."""
from __future__ import annotations

import json

import pytest
from coco_fixtures import use_server, write_coco_tree

from clip_from_scratch.cli import main
from clip_from_scratch.train import TrainConfig, train


@pytest.fixture(scope="module")
def coco_trees(tmp_path_factory):
    """A few hundred train2017 images and a small val2017, sharing one annotations zip (as COCO's does)."""
    served = tmp_path_factory.mktemp("coco_served")
    train_tree = write_coco_tree(served, "train2017", num_images=300, first_id=1000)
    val_tree = write_coco_tree(served, "val2017", num_images=40, first_id=50)
    return train_tree, val_tree


@pytest.fixture
def coco_online(coco_trees, coco_http, monkeypatch, tmp_path):
    train_tree, val_tree = coco_trees
    server = coco_http(val_tree.folder)          # the zip written last holds both splits' captions
    use_server(monkeypatch, server, val_tree)
    monkeypatch.setenv("CLIP_DATA", str(tmp_path / "data"))
    return server


def coco_config(out_dir, **changes):
    return TrainConfig.for_data("coco", "cpu", fast=True, out_dir=str(out_dir), device="cpu", progress=False,
                                log_every=1, **changes)


def test_pretrain_coco_fetches_trains_and_reports_retrieval(coco_online, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["pretrain", "--data", "coco", "--out", str(out), "--steps", "4", "--no-progress",
                 "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "COCO val2017 retrieval" in printed and "image->text" in printed
    assert "cifar100: not on disk" in printed and "clip-from-scratch download cifar100" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["data"] == "coco" and metrics["step"] == 4
    assert metrics["training_images"] == 254, "fast mode: the first 256 of train2017, less the 2 broken ones"
    assert metrics["retrieval_images"] == 38, "40 val images minus the corrupt and the missing one"
    for direction in ("image_to_text", "text_to_image"):
        recall = metrics["retrieval"][direction]
        assert list(recall) == ["1", "5", "10"] and recall["1"] <= recall["5"] <= recall["10"]
    assert "cifar100" not in metrics
    assert (out / "loss_curve.png").exists()


def test_pretrain_coco_resumes_exactly(coco_online, tmp_path):
    straight = train(coco_config(tmp_path / "straight", steps=6))
    stopped = train(coco_config(tmp_path / "resumed", steps=6, stop_after=3))
    assert not stopped["finished"]
    resumed = train(coco_config(tmp_path / "resumed", steps=6), resume=True)
    assert resumed["history"]["loss"] == straight["history"]["loss"]
    assert resumed["retrieval"] == straight["retrieval"]


def test_pretrain_coco_with_no_data_and_no_network_names_the_download_command(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CLIP_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("CLIP_COCO_URL", "http://127.0.0.1:9")   # nothing listens there
    assert main(["pretrain", "--data", "coco", "--out", str(tmp_path / "run"), "--no-progress",
                 "--device", "cpu"]) == 2
    error = capsys.readouterr().err
    assert "clip-from-scratch download coco" in error and "Traceback" not in error

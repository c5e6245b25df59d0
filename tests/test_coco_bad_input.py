"""Bad input around COCO gets one line that says what to do: hostile caption files, a tampered cache,
unusable data folders, images too big to be COCO's, impossible options. Loopback servers only."""
from __future__ import annotations

import io
import json
import os
import time
import zipfile

import pytest
from coco_fixtures import use_server
from PIL import Image

from clip_from_scratch.cli import main
from clip_from_scratch.data import coco, coco_fetch
from clip_from_scratch.errors import CourseError

R = 16


def write_captions(root, document) -> None:
    """A captions file put in by hand (as an instructor would), holding ``document`` (a dict or raw text)."""
    folder = root / "coco" / "annotations"
    folder.mkdir(parents=True, exist_ok=True)
    text = document if isinstance(document, str) else json.dumps(document)
    (folder / "captions_val2017.json").write_text(text)


def good_document():
    return {"images": [{"id": 1}, {"id": 2}],
            "annotations": [{"id": 10, "image_id": 1, "caption": "a dog."},
                            {"id": 11, "image_id": 2, "caption": "a cat."}]}


# ----------------------------------------------------------------------------- hostile caption files
@pytest.mark.parametrize("change, words", [
    (lambda d: d["annotations"][1].update(caption=123), "annotation #1 (id 11) has a caption of type int"),
    (lambda d: d["annotations"][0].update(caption=None), "annotation #0 (id 10) has a caption of type NoneType"),
    (lambda d: d["images"][0].update(id=1.9), "image #0 has the id 1.9 (float)"),
    (lambda d: d["images"][1].update(id=True), "image #1 has the id True (bool)"),
    (lambda d: d["annotations"][0].update(image_id=7), "annotation #0 (id 10) names the image 7"),
    (lambda d: d.update(images=5), "'images' and 'annotations' must both be lists"),
])
def test_a_caption_file_with_wrong_types_names_the_annotation(change, words, tmp_path):
    document = good_document()
    change(document)
    write_captions(tmp_path, document)
    with pytest.raises(coco.CocoCacheError, match="Delete it and run again") as caught:
        coco.load_captions("val2017", tmp_path, download_missing=False)
    assert words in str(caught.value) and isinstance(caught.value, CourseError)


@pytest.mark.parametrize("text", ['{"images": [{"id": Infinity}], "annotations": []}',
                                  "[" * 100_000 + "]" * 100_000, "[1, 2, 3]", "\xff\xfe not json"])
def test_an_unreadable_caption_file_is_one_line(text, tmp_path):
    write_captions(tmp_path, text)
    with pytest.raises(coco.CocoCacheError, match="captions_val2017.json"):
        coco.load_captions("val2017", tmp_path, download_missing=False)


def test_blank_captions_are_dropped_and_long_ones_cut_so_the_bpe_trainer_stays_fast(tmp_path):
    from clip_from_scratch.bpe import train_bpe
    document = good_document()
    document["annotations"] += [{"id": 12, "image_id": 1, "caption": "   \n"},
                                {"id": 13, "image_id": 2, "caption": "x" * 2_000_000}]
    write_captions(tmp_path, document)
    ids, captions = coco.load_captions("val2017", tmp_path, download_missing=False)
    assert ids == [1, 2] and captions[0] == ["a dog."]
    assert captions[1][0] == "a cat." and len(captions[1][1]) == coco.MAX_CAPTION_CHARS
    started = time.process_time()
    train_bpe([c for per_image in captions for c in per_image], 100)   # a 2 MB caption took over 90 s here
    assert time.process_time() - started < 10


# ----------------------------------------------------------------------------- a tampered cache
@pytest.mark.parametrize("tamper", [lambda m: {**m, "image_ids": 10}, lambda m: [m],
                                    lambda m: {**m, "captions": ["a caption"] * len(m["captions"])},
                                    lambda m: {**m, "failed_ids": [1.5]}])
def test_a_tampered_meta_json_says_delete_the_folder(tamper, coco_tree, coco_http, monkeypatch, tmp_path, capsys):
    use_server(monkeypatch, coco_http(coco_tree.folder), coco_tree)
    ds = coco.CocoCaptions("val2017", resolution=R, max_images=6, root=tmp_path, progress=False)
    path = ds.cache_dir / "meta.json"
    path.write_text(json.dumps(tamper(json.loads(path.read_text()))))
    argv = ["download", "coco", "--split", "val2017", "--resolution", str(R), "--max-images", "6",
            "--data-root", str(tmp_path), "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"the cache file {path} is damaged" in err and f"Delete the folder {ds.cache_dir}" in err
    assert err.count("\n") == 1


# ----------------------------------------------------------------------------- unusable folders
def test_clip_data_pointing_at_a_file_is_one_line(tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("CLIP_DATA", str(blocker))
    assert main(["download", "coco", "--split", "val2017", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "the data folder" in err and "CLIP_DATA" in err and "Traceback" not in err


def test_a_cache_folder_blocked_by_a_file_is_one_line(coco_tree, coco_http, monkeypatch, tmp_path, capsys):
    use_server(monkeypatch, coco_http(coco_tree.folder), coco_tree)
    blocked = coco.cache_dir(tmp_path, "val2017", R, 4)
    blocked.parent.mkdir(parents=True)
    blocked.write_text("a file where the cache folder goes")
    assert main(["download", "coco", "--split", "val2017", "--resolution", str(R), "--max-images", "4",
                 "--data-root", str(tmp_path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"cannot write the cache in {blocked}" in err and err.count("\n") == 1


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs a user that permissions apply to")
def test_a_read_only_data_folder_is_one_line(coco_tree, coco_http, monkeypatch, tmp_path, capsys):
    use_server(monkeypatch, coco_http(coco_tree.folder), coco_tree)
    (tmp_path / "coco").mkdir()
    (tmp_path / "coco").chmod(0o500)
    try:
        assert main(["download", "coco", "--split", "val2017", "--max-images", "4", "--data-root", str(tmp_path),
                     "--no-progress"]) == 2
    finally:
        (tmp_path / "coco").chmod(0o700)
    assert "Traceback" not in capsys.readouterr().err


# ----------------------------------------------------------------------------- limits
def test_a_body_over_the_size_limit_is_refused_and_counted_as_failed(coco_tree, coco_http, monkeypatch, tmp_path):
    huge = coco_tree.ids[3]
    server = coco_http(coco_tree.folder, misbehave={huge: "huge"})
    use_server(monkeypatch, server, coco_tree)
    with pytest.raises(coco_fetch.FetchFailed, match="too large: 314,572,800 bytes") as caught:
        coco_fetch.fetch_image(f"{server.url}/val2017/{huge:012d}.jpg")
    assert caught.value.permanent
    ds = coco.CocoCaptions("val2017", resolution=R, max_images=6, root=tmp_path, progress=False)
    assert huge in ds.stats["failed_ids"] and huge not in ds.image_ids and ds.stats["retry_ids"] == []
    reasons = json.loads((ds.cache_dir / "meta.json").read_text())["failed_reasons"]
    assert reasons[str(huge)].startswith("too large")


def test_an_image_over_the_pixel_budget_is_refused_before_decoding(coco_tree, coco_http, monkeypatch, tmp_path):
    buffer = io.BytesIO()
    Image.new("1", (12000, 12000)).save(buffer, "PNG")        # ~17 kB that would decode to 430 MB of RGB
    assert len(buffer.getvalue()) < 100_000
    with pytest.raises(coco_fetch.ImageTooLarge, match="12000 x 12000 pixels"):
        coco_fetch.decode_and_resize(buffer.getvalue(), R)
    served = tmp_path / "served"
    import shutil
    shutil.copytree(coco_tree.folder, served)
    giant = coco_tree.ids[2]
    (served / "val2017" / f"{giant:012d}.jpg").write_bytes(buffer.getvalue())
    use_server(monkeypatch, coco_http(served), coco_tree)
    ds = coco.CocoCaptions("val2017", resolution=R, max_images=4, root=tmp_path / "data", progress=False)
    assert giant in ds.stats["failed_ids"] and ds.stats["retry_ids"] == []
    assert "12000 x 12000" in json.loads((ds.cache_dir / "meta.json").read_text())["failed_reasons"][str(giant)]


def test_available_memory_is_known_without_psutil_and_without_sc_avphys_pages(monkeypatch):
    """macOS has no SC_AVPHYS_PAGES: the memory check must not silently switch itself off there."""
    import builtins
    import sys

    from clip_from_scratch import train_config
    real_import, real_sysconf = builtins.__import__, os.sysconf

    def no_psutil(name, *args, **kwargs):
        if name == "psutil":
            raise ImportError("no psutil")
        return real_import(name, *args, **kwargs)

    def like_macos(name):
        if name == "SC_AVPHYS_PAGES":
            raise ValueError("unrecognized configuration name")
        return real_sysconf(name)

    monkeypatch.delitem(sys.modules, "psutil", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_psutil)
    monkeypatch.setattr(os, "sysconf", like_macos)
    memory = train_config.available_memory_bytes()
    physical = real_sysconf("SC_PAGE_SIZE") * real_sysconf("SC_PHYS_PAGES")
    assert memory == physical // 2


# ----------------------------------------------------------------------------- options
@pytest.mark.parametrize("options, words", [
    (["--max-images", "0"], "max_images must be at least 1"),
    (["--max-images", "-3"], "max_images must be at least 1"),
    (["--resolution", "4"], "resolution must be an integer of at least 8"),
])
def test_impossible_download_options_are_one_line(options, words, tmp_path, capsys):
    assert main(["download", "coco", "--split", "val2017", "--data-root", str(tmp_path), *options]) == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1


@pytest.fixture
def weights(openai_checkpoint):
    from clip_from_scratch.model import CLIPConfig
    config = CLIPConfig(embed_dim=16, image_resolution=32, vision_layers=1, vision_width=64, vision_patch_size=16,
                        transformer_width=64, transformer_heads=1, transformer_layers=1, context_length=77)
    return openai_checkpoint(config, fmt="state_dict")


@pytest.mark.parametrize("options, words", [
    (["--max-images", "0"], "max_images must be at least 1"),
    (["--batch-size", "0"], "--batch-size must be at least 1"),
    (["--output", "/nonexistent/r.json"], "the folder /nonexistent does not exist"),
])
def test_impossible_retrieval_options_are_one_line_before_any_work(options, words, weights, tmp_path, capsys,
                                                                   monkeypatch):
    monkeypatch.setenv(coco.URL_ENV_VAR, "http://127.0.0.1:9")     # nothing may be fetched
    assert main(["retrieval", "--weights", str(weights), "--device", "cpu", "--data-root", str(tmp_path),
                 "--no-progress", *options]) == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1
    assert not (tmp_path / "coco").exists()


def test_retrieval_on_a_cuda_device_that_is_not_there_says_so(weights, tmp_path, capsys, monkeypatch):
    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["retrieval", "--weights", str(weights), "--device", "cuda", "--data-root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no CUDA GPU" in err and "interrupted" not in err


def test_retrieval_on_a_cache_with_no_usable_image_is_one_line(coco_tree, coco_http, monkeypatch, tmp_path, weights,
                                                               capsys):
    server = coco_http(coco_tree.folder, misbehave={"*": "404"})
    use_server(monkeypatch, server, coco_tree)
    assert main(["retrieval", "--weights", str(weights), "--device", "cpu", "--max-images", "3",
                 "--data-root", str(tmp_path), "--output", str(tmp_path / "r.json"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "holds no usable image (3 failed)" in err and err.count("\n") == 1


def test_ctrl_c_while_retrieval_fetches_is_one_line(coco_tree, coco_http, monkeypatch, tmp_path, weights, capsys):
    use_server(monkeypatch, coco_http(coco_tree.folder), coco_tree)

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(coco, "_next_results", ctrl_c)
    assert main(["retrieval", "--weights", str(weights), "--device", "cpu", "--max-images", "3",
                 "--data-root", str(tmp_path), "--output", str(tmp_path / "r.json"), "--no-progress"]) == 130
    assert "retrieval: interrupted" in capsys.readouterr().err


def test_ctrl_c_while_pretrain_fetches_coco_is_one_line(coco_http, monkeypatch, tmp_path, capsys):
    from coco_fixtures import write_coco_tree
    train = write_coco_tree(tmp_path / "served", "train2017", num_images=12, first_id=1000)
    use_server(monkeypatch, coco_http(train.folder), train)
    monkeypatch.setenv("CLIP_DATA", str(tmp_path / "data"))

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(coco, "_next_results", ctrl_c)
    code = main(["pretrain", "--data", "coco", "--out", str(tmp_path / "run"), "--no-progress", "--device", "cpu"])
    assert code == 130 and "pretrain: interrupted" in capsys.readouterr().err


def test_a_zip_is_not_needed_when_captions_are_there(tmp_path):
    """(The hand-placed captions path every test above relies on: no zip, no network.)"""
    write_captions(tmp_path, good_document())
    assert coco.load_captions("val2017", tmp_path, download_missing=False) == ([1, 2], [["a dog."], ["a cat."]])
    assert not list(tmp_path.rglob("*.zip")) and zipfile.is_zipfile(io.BytesIO(b"")) is False


# ----------------------------------------------------------------------------- pretrain --resume
def weights_only_run(folder):
    """A run folder whose checkpoint.pt holds weights but no training state (as an export would)."""
    import torch

    from clip_from_scratch.model import CLIP, CLIPConfig
    from clip_from_scratch.runs import save_checkpoint
    config = CLIPConfig.preset("tiny")
    folder.mkdir(parents=True)
    from clip_from_scratch.tokenizer import Tokenizer
    torch.manual_seed(0)
    save_checkpoint({"model": CLIP(config).state_dict(), "model_config": config.to_dict(), "step": 0,
                     "tokenizer": Tokenizer([]).to_dict()}, folder / "checkpoint.pt")
    return folder


def test_resuming_a_weights_only_checkpoint_says_it_cannot_be_resumed(tmp_path, capsys):
    run = weights_only_run(tmp_path / "run")
    assert main(["pretrain", "--resume", "--out", str(run), "--no-progress", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "cannot be resumed" in err and "--overwrite" in err and "KeyError" not in err


def test_resume_with_a_preset_is_refused_not_ignored(tmp_path, capsys, monkeypatch):
    from clip_from_scratch import cli
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(b"")
    monkeypatch.setattr("clip_from_scratch.runs.read_checkpoint",
                        lambda path, *a, **k: {"train_config": {"data": "coco", "steps": 10}})
    args = cli.build_parser().parse_args(["pretrain", "--data", "coco", "--resume", "--preset", "gpu",
                                          "--out", str(run)])
    with pytest.raises(CourseError, match="--preset gpu sets up a new run"):
        cli.pretrain_config(args)

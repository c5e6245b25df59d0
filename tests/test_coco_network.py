"""COCO against servers that misbehave as real ones do: silent, trickling, quota pages, 403s; two builds at once.

Every test is bounded in time (a build runs in a thread that must end within a few seconds) and
uses only loopback servers (tests/coco_fixtures.py, ``misbehave=``).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from coco_fixtures import use_server, write_coco_tree

from clip_from_scratch.cli import main
from clip_from_scratch.data import coco, coco_fetch

R = 16


def within(seconds: float, work):
    """Run ``work()`` in a thread; fail if it is not done within ``seconds``. Returns (result or error, elapsed)."""
    outcome = {}

    def run():
        try:
            outcome["value"] = work()
        except BaseException as err:   # noqa: BLE001 - handed to the test
            outcome["value"] = err

    start = time.monotonic()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    elapsed = time.monotonic() - start
    assert not thread.is_alive(), f"still running after {seconds} s: it hangs"
    return outcome["value"], elapsed


def captions_by_hand(tree, root: Path) -> Path:
    """Put ``tree``'s captions file where an instructor would, so no zip is fetched."""
    target = root / "coco" / "annotations"
    target.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(tree.folder / "annotations" / "annotations_trainval2017.zip") as zf:
        (target / f"captions_{tree.split}.json").write_bytes(zf.read(f"annotations/captions_{tree.split}.json"))
    return target / f"captions_{tree.split}.json"


@pytest.fixture
def fast_network(monkeypatch):
    """Short limits, so that what takes a minute on a real network takes a second here."""
    monkeypatch.setattr(coco_fetch, "BACKOFF_SECONDS", 0.01)
    monkeypatch.setattr(coco_fetch, "IMAGE_DEADLINE_SECONDS", 1.5)
    monkeypatch.setattr(coco, "SILENT_SERVER_SECONDS", 1.5)


# ----------------------------------------------------------------------------- 1. nothing hangs
def test_the_default_limits_end_a_silent_run_well_under_a_minute():
    assert coco.SILENT_SERVER_SECONDS + 1 < 30 and coco_fetch.IMAGE_DEADLINE_SECONDS <= 60
    assert coco_fetch.READ_TIMEOUT_SECONDS <= coco_fetch.IMAGE_DEADLINE_SECONDS


def test_a_silent_server_ends_the_run_with_a_clear_error(coco_tree, coco_http, monkeypatch, tmp_path, fast_network):
    monkeypatch.setattr(coco_fetch, "IMAGE_DEADLINE_SECONDS", 30)   # the watchdog, not the deadline, must end it
    server = coco_http(coco_tree.folder, misbehave={"*": "silent"})
    monkeypatch.setenv(coco.URL_ENV_VAR, server.url)
    captions_by_hand(coco_tree, tmp_path)
    error, elapsed = within(10, lambda: coco.CocoCaptions("val2017", resolution=R, max_images=6, root=tmp_path,
                                                          progress=False, workers=3))
    assert isinstance(error, coco.CocoUnavailable), error
    assert "sent nothing at all" in str(error) and "6 of 6 images could not be fetched" in str(error)
    assert elapsed < 5


def test_a_trickling_body_meets_the_per_image_deadline(coco_tree, coco_http, monkeypatch, tmp_path, fast_network):
    server = coco_http(coco_tree.folder, misbehave={"*": "trickle"})
    monkeypatch.setenv(coco.URL_ENV_VAR, server.url)
    captions_by_hand(coco_tree, tmp_path)
    started = time.monotonic()
    with pytest.raises(coco_fetch.FetchFailed, match=r"no complete answer within 1.5 s") as caught:
        coco_fetch.fetch_image(f"{server.url}/val2017/{coco_tree.ids[0]:012d}.jpg")
    assert time.monotonic() - started < 3 and not caught.value.permanent
    error, elapsed = within(10, lambda: coco.CocoCaptions("val2017", resolution=R, max_images=4, root=tmp_path,
                                                          progress=False, workers=4))
    assert isinstance(error, coco.CocoUnavailable) and "no complete answer within" in str(error)
    assert elapsed < 6


def test_ctrl_c_stops_the_download_command_within_two_seconds(coco_tree, coco_http, tmp_path):
    """A real process and a real SIGINT, against a server that never answers (as reported: 50 s, two presses)."""
    server = coco_http(coco_tree.folder, misbehave={"*": "silent"})
    captions_by_hand(coco_tree, tmp_path)
    env = {**os.environ, "CLIP_COCO_URL": server.url, "PYTHONPATH": str(Path(__file__).parents[1])}
    process = subprocess.Popen([sys.executable, "-m", "clip_from_scratch", "download", "coco", "--split", "val2017",
                                "--resolution", str(R), "--data-root", str(tmp_path), "--no-progress"],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines = []     # (time, line) of stderr, read as they come

    def read():
        for line in process.stderr:
            lines.append((time.monotonic(), line))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 60       # the interpreter and torch start first
        while not server.image_requests() and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.05)
        assert server.image_requests(), "the command never asked for an image"
        time.sleep(0.3)
        process.send_signal(signal.SIGINT)
        sent = time.monotonic()
        process.wait(timeout=30)              # (a torch process takes seconds to tear down on a busy machine)
        reader.join(5)
    finally:
        process.kill()
    err = "".join(line for _, line in lines)
    assert process.returncode == 130, err
    told = [t for t, line in lines if "interrupted" in line]
    assert told and told[0] - sent < 2.5, f"took {told[0] - sent if told else '∞'} s to stop"
    assert "0 of 40 images are stored" in err and "run the same command again" in err and "Traceback" not in err


# ----------------------------------------------------------------------------- 2. a failed run is not final
@pytest.mark.parametrize("behaviour", ["html", "empty", "403", "503"])
def test_a_run_where_everything_fails_for_now_exits_nonzero_and_the_next_run_retries(
        behaviour, coco_tree, coco_http, monkeypatch, tmp_path, capsys, fast_network):
    server = coco_http(coco_tree.folder, misbehave={"*": behaviour})
    use_server(monkeypatch, server, coco_tree)
    argv = ["download", "coco", "--split", "val2017", "--resolution", str(R), "--max-images", "12",
            "--data-root", str(tmp_path), "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "12 of 12 images could not be fetched" in err and "Open http://127.0.0.1" in err
    reason = {"html": "web page (text/html)", "empty": "empty body", "403": "HTTP 403", "503": "HTTP 503"}[behaviour]
    assert reason in err and err.count("\n") < 20
    folder = coco.cache_dir(tmp_path, "val2017", R, 12)
    assert not (folder / "meta.json").exists(), "a run that got nothing must not be final"

    server.handler.misbehave = {}       # the server is fixed
    before = len(server.image_requests())
    assert main(argv) == 0
    assert len(server.image_requests()) - before == 12, "every image is asked for again"
    ds = coco.CocoCaptions("val2017", resolution=R, max_images=12, root=tmp_path, progress=False)
    assert ds.image_ids == [i for i in coco_tree.ids[:12] if i in coco_tree.good_ids]


def test_a_server_that_refuses_every_image_stops_the_run_early(coco_tree, coco_http, monkeypatch, tmp_path,
                                                               fast_network):
    monkeypatch.setattr(coco, "GIVE_UP_AFTER", 5)
    server = coco_http(coco_tree.folder, misbehave={"*": "403"})
    use_server(monkeypatch, server, coco_tree)
    with pytest.raises(coco.CocoUnavailable, match="the run stopped because 5 images in a row failed"):
        coco.CocoCaptions("val2017", resolution=R, root=tmp_path, progress=False, workers=1)
    assert len(server.image_requests()) < 10, "it went on asking a server that refuses everything"


def test_a_few_images_failing_for_now_are_kept_out_and_tried_on_the_next_run(coco_tree, coco_http, monkeypatch,
                                                                            tmp_path, fast_network):
    flaky = coco_tree.ids[20]
    server = coco_http(coco_tree.folder, misbehave={flaky: "403"})
    use_server(monkeypatch, server, coco_tree)
    first = coco.CocoCaptions("val2017", resolution=R, root=tmp_path, progress=False)
    assert first.stats["retry_ids"] == [flaky] and flaky in first.stats["failed_ids"]
    assert flaky not in first.image_ids and len(first) == len(coco_tree.good_ids) - 1
    meta = json.loads((first.cache_dir / "meta.json").read_text())
    assert meta["failed_reasons"][str(flaky)] == "HTTP 403"

    server.handler.misbehave = {}
    before = len(server.image_requests())
    again = coco.CocoCaptions("val2017", resolution=R, root=tmp_path, progress=False)
    assert [p for p, _ in server.image_requests()[before:]] == [f"/val2017/{flaky:012d}.jpg"]
    assert again.image_ids == coco_tree.good_ids and again.stats["retry_ids"] == []
    assert again.stats["fetched"] == 1 and again.stats["cached"] == len(coco_tree.good_ids) - 1
    for row, image_id in enumerate(again.image_ids):     # every row still under its own pixels
        centre = again.images[row, :, 6:10, 6:10].float().mean(dim=(1, 2)).numpy()
        assert np.abs(centre - coco_tree.colours[image_id]).max() < 8, image_id
    server.stop()                       # a finished cache with nothing to retry needs no server
    assert coco.CocoCaptions("val2017", resolution=R, root=tmp_path, progress=False).stats["fetched"] == 0


def test_the_download_command_says_which_images_it_will_try_again(coco_tree, coco_http, monkeypatch, tmp_path,
                                                                  capsys, fast_network):
    flaky = coco_tree.ids[20]
    use_server(monkeypatch, coco_http(coco_tree.folder, misbehave={flaky: "html"}), coco_tree)
    assert main(["download", "coco", "--split", "val2017", "--resolution", str(R), "--data-root", str(tmp_path),
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert f"{flaky} (the server sent a web page (text/html)" in out
    assert "1 of those failed only for now" in out and "run the same command again later" in out


def test_a_retry_that_fails_again_keeps_the_cache_usable(coco_tree, coco_http, monkeypatch, tmp_path, capsys,
                                                          fast_network):
    flaky = coco_tree.ids[20]
    server = coco_http(coco_tree.folder, misbehave={flaky: "503"})
    use_server(monkeypatch, server, coco_tree)
    first = coco.CocoCaptions("val2017", resolution=R, root=tmp_path, progress=False)
    server.stop()                       # now offline
    images_file = first.cache_dir / "images.u8"
    written = images_file.stat().st_mtime_ns
    again = coco.CocoCaptions("val2017", resolution=R, root=tmp_path, progress=False)
    assert again.image_ids == first.image_ids and again.stats["retry_ids"] == [flaky]
    assert "using the cache as it is" in capsys.readouterr().err
    assert images_file.stat().st_mtime_ns == written, "nothing arrived: the cache must not be rewritten"


def test_pretrain_coco_says_what_the_server_sent_and_what_to_do(coco_tree, coco_http, monkeypatch, tmp_path,
                                                                capsys, fast_network):
    served = tmp_path / "served"
    write_coco_tree(served, "train2017", num_images=12, first_id=1000)
    val = write_coco_tree(served, "val2017", num_images=10, first_id=50)
    use_server(monkeypatch, coco_http(served, misbehave={"*": "html"}), val)
    monkeypatch.setenv("CLIP_DATA", str(tmp_path / "data"))
    assert main(["pretrain", "--data", "coco", "--out", str(tmp_path / "run"), "--steps", "2", "--num-images", "12",
                 "--batch-size", "4", "--no-progress", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "web page (text/html)" in err and "in a browser" in err and "CLIP_COCO_URL" in err
    assert "Traceback" not in err


# ----------------------------------------------------------------------------- 3. the right captions
def test_a_changed_captions_file_starts_a_half_built_cache_over(coco_tree, coco_http, monkeypatch, tmp_path, capsys):
    server = coco_http(coco_tree.folder)
    monkeypatch.setenv(coco.URL_ENV_VAR, server.url)
    captions = captions_by_hand(coco_tree, tmp_path)
    calls, original_next = [], coco._next_results

    def next_then_ctrl_c(*args, **kwargs):
        calls.append(1)
        if len(calls) > 4:
            raise KeyboardInterrupt
        return original_next(*args, **kwargs)

    monkeypatch.setattr(coco, "_next_results", next_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        coco.CocoCaptions("val2017", resolution=R, max_images=12, root=tmp_path, progress=False, workers=1)
    monkeypatch.setattr(coco, "_next_results", original_next)
    assert "images are stored" in capsys.readouterr().err

    # Another annotation file: other ids, served from another folder (as a new COCO release would be).
    other = write_coco_tree(tmp_path / "other", "val2017", num_images=12, first_id=5000)
    shutil.copy(captions_by_hand(other, tmp_path / "other_root"), captions)
    monkeypatch.setenv(coco.URL_ENV_VAR, coco_http(other.folder).url)
    ds = coco.CocoCaptions("val2017", resolution=R, max_images=12, root=tmp_path, progress=False)
    assert "was started for other images" in capsys.readouterr().err
    assert ds.image_ids == other.good_ids and ds.stats["cached"] == 0
    for row, image_id in enumerate(ds.image_ids):
        centre = ds.images[row, :, 6:10, 6:10].float().mean(dim=(1, 2)).numpy()
        assert np.abs(centre - other.colours[image_id]).max() < 8, f"row {row} shows another image's pixels"
        assert ds.captions[row] == other.captions[image_id]


# ----------------------------------------------------------------------------- 4. one build at a time
def test_two_builds_of_one_cache_take_turns(coco_tree, coco_http, monkeypatch, tmp_path, capfd):
    server = coco_http(coco_tree.folder, latency=0.02)
    use_server(monkeypatch, server, coco_tree)
    results = [None, None]

    def build(k):
        results[k] = coco.CocoCaptions("val2017", resolution=R, root=tmp_path, progress=False, workers=4)

    threads = [threading.Thread(target=build, args=(k,)) for k in range(2)]
    for thread in threads:
        thread.start()
        time.sleep(0.05)
    for thread in threads:
        thread.join(30)
    assert all(isinstance(r, coco.CocoCaptions) for r in results), "one build crashed"
    assert results[0].image_ids == results[1].image_ids == coco_tree.good_ids
    assert bool((results[0].images == results[1].images).all())
    paths = [p for p, _ in server.image_requests()]
    assert len(paths) == len(set(paths)), "an image was fetched twice: both processes built the cache"
    assert "Another process is building the COCO cache" in capfd.readouterr().err

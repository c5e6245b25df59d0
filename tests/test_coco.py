"""COCO captions against a loopback server serving files in COCO's real formats (see coco_fixtures.py)."""
import json
import shutil

import numpy as np
import pytest
from coco_fixtures import use_server, write_coco_tree

from clip_from_scratch.cli import main
from clip_from_scratch.data import coco, coco_fetch

R = 16


def leftovers(root):
    """Files a crash-safe writer must never leave behind once it has finished."""
    return [p for p in root.rglob("*") if p.name.endswith((".part", ".tmp"))]


def closed_port_url(coco_http, folder):
    """The address of a server that was there a moment ago: nothing listens on it now."""
    server = coco_http(folder)
    server.stop()
    return server.url


@pytest.fixture
def served(coco_tree, coco_http, monkeypatch):
    """The session's tree, served with one connection dropped half-way through the CMYK image."""
    cmyk_id = next(i for i, mode in coco_tree.modes.items() if mode == "CMYK")
    server = coco_http(coco_tree.folder, drop_once={cmyk_id})
    use_server(monkeypatch, server, coco_tree)
    return coco_tree, server, cmyk_id


def test_fetch_builds_the_cache_with_right_counts_pixels_and_captions(served, tmp_path):
    tree, server, cmyk_id = served
    ds = coco.CocoCaptions("val2017", resolution=R, root=tmp_path, progress=False)

    assert ds.stats == {"fetched": len(tree.good_ids), "cached": 0, "failed": 2,
                        "failed_ids": sorted([tree.corrupt_id, tree.missing_id]), "retry_ids": []}
    assert len(ds) == len(tree.good_ids) and ds.image_ids == tree.good_ids
    assert ds.images.shape == (len(tree.good_ids), 3, R, R) and str(ds.images.dtype) == "torch.uint8"
    # Every caption of every image, in the file's order, stray whitespace stripped.
    assert ds.captions == [tree.captions[i] for i in tree.good_ids]
    # Each cached image is its own solid colour: rows line up with ids, and L / CMYK / palette PNG became RGB.
    for row, image_id in enumerate(ds.image_ids):
        centre = ds.images[row, :, 4:12, 4:12].float().mean(dim=(1, 2)).numpy()
        assert np.abs(centre - tree.colours[image_id]).max() < 8, (tree.modes[image_id], centre, tree.colours[image_id])
    red = ds.image_ids.index(next(i for i, m in tree.modes.items() if m == "red"))
    assert ds.images[red, 0].min() > 200 and ds.images[red, 1:].max() < 50
    # The wide blue|red|green image is centre-cropped, not squashed: only the red middle is left.
    bands = ds.images[ds.image_ids.index(next(i for i, m in tree.modes.items() if m == "bands"))]
    assert bands[0, :, 3:13].min() > 180 and bands[2, :, 3:13].max() < 80
    # The dropped connection resumed from where it stopped with a Range request.
    name = f"{cmyk_id:012d}.jpg"
    assert [r for p, r in server.image_requests() if p.endswith(name)] == [None, r"bytes=" + _half(tree, cmyk_id) + "-"]
    assert leftovers(tmp_path) == []
    assert sorted(p.name for p in ds.cache_dir.iterdir()) == ["images.u8", "meta.json"]
    assert ds[0][1] == ds.captions[0] and ds[0][0].shape == (3, R, R)


def _half(tree, image_id):
    return str(len((tree.folder / "val2017" / f"{image_id:012d}.jpg").read_bytes()) // 2)


def test_second_run_with_the_server_stopped_reads_the_cache_alone(served, tmp_path):
    tree, server, _ = served
    first = coco.CocoCaptions("val2017", resolution=R, root=tmp_path, progress=False)
    server.stop()
    for download in (True, False):
        again = coco.CocoCaptions("val2017", resolution=R, root=tmp_path, download=download, progress=False)
        assert again.stats == {"fetched": 0, "cached": len(tree.good_ids), "failed": 2,
                               "failed_ids": first.stats["failed_ids"], "retry_ids": []}
        assert again.image_ids == first.image_ids and again.captions == first.captions
        assert bool((again.images == first.images).all())


def test_an_interrupted_build_resumes_without_fetching_anything_twice(served, tmp_path, monkeypatch):
    tree, server, cmyk_id = served
    calls, original_next = [], coco._next_results

    def next_then_ctrl_c(*args, **kwargs):
        calls.append(1)
        if len(calls) > 5:
            raise KeyboardInterrupt   # as Ctrl-C does, in the main thread
        return original_next(*args, **kwargs)

    monkeypatch.setattr(coco, "_next_results", next_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        coco.CocoCaptions("val2017", resolution=R, root=tmp_path, progress=False, workers=2)
    monkeypatch.setattr(coco, "_next_results", original_next)
    folder = coco.cache_dir(tmp_path, "val2017", R)
    assert not (folder / "meta.json").exists() and not (folder / "images.u8").exists()  # unfinished: no final names
    assert 5 <= len(server.image_requests()) < len(tree.ids)

    ds = coco.CocoCaptions("val2017", resolution=R, root=tmp_path, progress=False)
    assert ds.stats["cached"] >= 3 and ds.stats["fetched"] + ds.stats["cached"] == len(tree.good_ids)
    assert ds.image_ids == tree.good_ids and leftovers(tmp_path) == []
    paths = [p for p, _ in server.image_requests()]
    twice = {p for p in paths if paths.count(p) > 1}
    assert twice == {f"/val2017/{cmyk_id:012d}.jpg"}, "only the dropped transfer may be asked for again"
    assert len(set(paths)) == len(tree.ids)


def test_kept_jpegs_feed_another_resolution_which_gets_its_own_cache(served, tmp_path):
    tree, server, _ = served
    small = coco.CocoCaptions("val2017", resolution=R, root=tmp_path, progress=False, keep_jpeg=True)
    kept = sorted(p.name for p in (tmp_path / "coco" / "val2017").iterdir())
    assert kept == [f"{i:012d}.jpg" for i in tree.good_ids]
    before = len(server.image_requests())
    large = coco.CocoCaptions("val2017", resolution=24, root=tmp_path, progress=False)
    # Only the two bad images were asked for again; the rest came from the kept JPEGs.
    assert sorted(p for p, _ in server.image_requests()[before:]) == sorted(
        f"/val2017/{i:012d}.jpg" for i in (tree.corrupt_id, tree.missing_id))
    assert large.stats["cached"] == len(tree.good_ids) and large.stats["fetched"] == 0
    assert large.images.shape[-1] == 24 and large.cache_dir != small.cache_dir
    assert coco.CocoCaptions("val2017", resolution=R, root=tmp_path, progress=False).images.shape[-1] == R
    assert abs(large.images.float().mean() - small.images.float().mean()) < 2   # same pictures, other size


def test_max_images_keeps_the_first_ids_in_its_own_cache(served, tmp_path):
    tree, _, _ = served
    ds = coco.CocoCaptions("val2017", resolution=R, max_images=5, root=tmp_path, progress=False)
    assert ds.image_ids == tree.ids[:5] and ds.cache_dir.name == f"val2017_{R}px_first5"
    assert ds.stats["fetched"] == 5 and ds.stats["failed"] == 0


@pytest.mark.parametrize("kwargs, message", [
    (dict(split="val2014"), "unknown COCO split"),
    (dict(max_images=0), "max_images must be at least 1"),
    (dict(max_images=-3), "max_images must be at least 1"),
    (dict(resolution=7), "resolution must be an integer of at least 8"),
])
def test_bad_arguments_are_refused_before_any_work(kwargs, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        coco.CocoCaptions(**{"split": "val2017", "resolution": R, "root": tmp_path, **kwargs})
    assert not (tmp_path / "coco").exists()


@pytest.mark.parametrize("damage", ["truncate images", "delete images", "garbage meta", "other resolution in meta"])
def test_a_damaged_cache_gives_a_clear_error_saying_to_delete_it(damage, served, tmp_path):
    ds = coco.CocoCaptions("val2017", resolution=R, root=tmp_path, progress=False)
    folder = ds.cache_dir
    del ds
    if damage == "truncate images":
        with open(folder / "images.u8", "r+b") as f:
            f.truncate(1000)
    elif damage == "delete images":
        (folder / "images.u8").unlink()
    elif damage == "garbage meta":
        (folder / "meta.json").write_text("{not json")
    else:
        meta = json.loads((folder / "meta.json").read_text())
        (folder / "meta.json").write_text(json.dumps({**meta, "resolution": 32}))
    with pytest.raises(coco.CocoCacheError, match=r"Delete the folder .*val2017_16px and run again"):
        coco.CocoCaptions("val2017", resolution=R, root=tmp_path, progress=False)


def test_no_cache_and_no_download_names_the_command_and_the_manual_places(tmp_path):
    with pytest.raises(coco.CocoUnavailable) as caught:
        coco.CocoCaptions("val2017", resolution=R, max_images=5, root=tmp_path, download=False)
    message = str(caught.value)
    assert isinstance(caught.value, RuntimeError)
    assert f"clip-from-scratch download coco --split val2017 --resolution {R} --num-images 5" in message
    assert str(tmp_path / "coco" / "annotations" / "captions_val2017.json") in message
    assert str(tmp_path / "coco" / "val2017") in message and "CLIP_COCO_URL" in message


def test_unreachable_server_gives_the_command_to_run(coco_tree, coco_http, monkeypatch, tmp_path):
    monkeypatch.setenv(coco.URL_ENV_VAR, closed_port_url(coco_http, coco_tree.folder))
    with pytest.raises(coco.CocoUnavailable, match="clip-from-scratch download coco --split val2017"):
        coco.CocoCaptions("val2017", resolution=R, root=tmp_path, progress=False)


def test_images_unreachable_keeps_what_was_done_and_says_so(coco_tree, coco_http, monkeypatch, tmp_path):
    annotations = tmp_path / "coco" / "annotations"       # captions put there by hand, images not
    annotations.mkdir(parents=True)
    shutil.copy(_captions_json(coco_tree, tmp_path), annotations)
    monkeypatch.setenv(coco.URL_ENV_VAR, closed_port_url(coco_http, coco_tree.folder))
    monkeypatch.setattr(coco_fetch, "BACKOFF_SECONDS", 0.001)
    monkeypatch.setattr(coco, "GIVE_UP_AFTER", 4)
    with pytest.raises(coco.CocoUnavailable, match="could not be fetched from"):
        coco.CocoCaptions("val2017", resolution=R, root=tmp_path, progress=False, workers=2)
    assert (coco.cache_dir(tmp_path, "val2017", R) / "status.u8.part").exists()   # resumable


def _captions_json(tree, tmp_path):
    """The extracted captions file of ``tree`` (what an instructor copies in by hand)."""
    import zipfile
    out = tmp_path / "extracted"
    with zipfile.ZipFile(tree.folder / "annotations" / "annotations_trainval2017.zip") as zf:
        zf.extract(f"annotations/captions_{tree.split}.json", out)
    return out / "annotations" / f"captions_{tree.split}.json"


def test_files_put_in_by_hand_build_the_cache_offline(coco_tree, tmp_path):
    coco_dir = tmp_path / "coco"
    (coco_dir / "annotations").mkdir(parents=True)
    shutil.copy(_captions_json(coco_tree, tmp_path), coco_dir / "annotations")
    shutil.copytree(coco_tree.folder / "val2017", coco_dir / "val2017")   # an unzipped val2017.zip
    ds = coco.CocoCaptions("val2017", resolution=R, max_images=6, root=tmp_path, download=False, progress=False)
    assert ds.image_ids == coco_tree.ids[:6] and ds.stats["cached"] == 6 and ds.stats["fetched"] == 0
    # The whole split: one image is missing on disk and may not be fetched -> a clear error, not a silent gap.
    with pytest.raises(coco.CocoUnavailable, match="1 of 40 images could not be found"):
        coco.CocoCaptions("val2017", resolution=R, root=tmp_path, download=False, progress=False)


def test_train_and_val_trees_share_one_annotations_zip(tmp_path, coco_http, monkeypatch):
    train = write_coco_tree(tmp_path / "served", "train2017", num_images=12, first_id=1000)
    val = write_coco_tree(tmp_path / "served", "val2017", num_images=10, first_id=50)
    use_server(monkeypatch, coco_http(val.folder), val)      # val's md5 is the zip with both files
    ds_train = coco.CocoCaptions("train2017", resolution=8, root=tmp_path / "data", progress=False)
    ds_val = coco.CocoCaptions("val2017", resolution=8, root=tmp_path / "data", progress=False)
    assert ds_train.image_ids == train.good_ids and ds_val.image_ids == val.good_ids


# ----------------------------------------------------------------------------- the download command
def test_download_coco_command_reports_fetched_reused_failed_and_disk(served, tmp_path, capsys):
    tree, _, _ = served
    argv = ["download", "coco", "--split", "val2017", "--resolution", str(R), "--data-root", str(tmp_path),
            "--no-progress"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"fetched {len(tree.good_ids)}, reused 0" in out and "failed 2" in out
    assert f"{tree.corrupt_id} (undecodable)" in out and f"{tree.missing_id} (missing on the server (HTTP 404))" in out
    assert "disk: cache" in out
    assert main(argv) == 0
    assert f"fetched 0, reused {len(tree.good_ids)}" in capsys.readouterr().out


def test_download_coco_command_offline_exits_2_with_the_command(coco_tree, coco_http, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv(coco.URL_ENV_VAR, closed_port_url(coco_http, coco_tree.folder))
    code = main(["download", "coco", "--split", "val2017", "--max-images", "3", "--data-root", str(tmp_path),
                 "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "clip-from-scratch download coco --split val2017 --resolution 64 --num-images 3" in err


def test_download_weights_fetches_once_then_reuses(tmp_path, http_server, monkeypatch, capsys):
    import hashlib

    from clip_from_scratch import openai_weights
    payload = b"not really a model, but the bytes the sha256 names"
    sha = hashlib.sha256(payload).hexdigest()
    (tmp_path / "served" / sha).mkdir(parents=True)
    (tmp_path / "served" / sha / "ViT-B-32.pt").write_bytes(payload)
    monkeypatch.setitem(openai_weights._MODELS, "ViT-B/32", f"{http_server(tmp_path / 'served')}/{sha}/ViT-B-32.pt")
    argv = ["download", "weights", "ViT-B/32", "--data-root", str(tmp_path / "data"), "--no-progress"]
    assert main(argv) == 0 and "fetched" in capsys.readouterr().out
    assert (tmp_path / "data" / "weights" / "ViT-B-32.pt").read_bytes() == payload   # the data folder's weights/
    assert main(argv) == 0 and "reused" in capsys.readouterr().out
    assert main(["download", "weights", "ViT-X/99"]) == 2 and "ViT-B/32" in capsys.readouterr().err


def test_download_cifar_command_fetches_then_reuses(tmp_path, fake_cifar, capsys):
    rng = np.random.default_rng(0)
    fake_cifar("cifar10", rng.integers(0, 256, (10, 32, 32, 3), dtype=np.uint8), list(range(10)),
               rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8), [0, 1, 2, 3])
    argv = ["download", "cifar10", "--data-root", str(tmp_path / "data"), "--no-progress"]
    assert main(argv) == 0 and "cifar10: fetched" in capsys.readouterr().out
    assert (tmp_path / "data" / "cifar-10-batches-py" / "test_batch").exists()
    assert main(argv) == 0 and "cifar10: reused" in capsys.readouterr().out


def test_max_images_reads_the_first_rows_of_a_whole_split_cache(served, tmp_path):
    tree, server, _ = served
    whole = coco.CocoCaptions("val2017", resolution=R, root=tmp_path, progress=False)
    server.stop()                                     # nothing may be fetched: it is all in the cache
    first = coco.CocoCaptions("val2017", resolution=R, max_images=10, root=tmp_path, progress=False)
    # Of the first 10 ids, index 7 is corrupt and index 9 missing.
    assert first.image_ids == [i for i in tree.ids[:10] if i in tree.good_ids] and len(first) == 8
    assert first.stats == {"fetched": 0, "cached": 8, "failed": 2,
                           "failed_ids": sorted([tree.corrupt_id, tree.missing_id]), "retry_ids": []}
    assert bool((first.images == whole.images[:8]).all()) and first.captions == whole.captions[:8]
    assert not coco.cache_dir(tmp_path, "val2017", R, 10).exists()


def test_pickling_for_dataloader_workers_sends_the_file_name_not_the_pixels(served, tmp_path):
    import pickle
    ds = coco.CocoCaptions("val2017", resolution=R, root=tmp_path, progress=False)
    data = pickle.dumps(ds)
    assert len(data) < ds.images.numel() / 2
    copy = pickle.loads(data)
    assert bool((copy.images == ds.images).all()) and copy.captions == ds.captions


def test_download_coco_without_a_split_asks_for_one(capsys):
    assert main(["download", "coco"]) == 2
    assert "--split val2017" in capsys.readouterr().err

"""How fast COCO images are fetched and cached: a pool of connections against one, from a loopback server.

    python3 benchmarks/bench_coco_fetch.py                 # 400 images of 640 x 480, 64 px cache
    python3 benchmarks/bench_coco_fetch.py --images 200 --latency 0.05 --resolution 224

The server runs on 127.0.0.1 in a process of its own (tests/fixtures/coco_fixtures.py), so the network is not
what is measured: with ``--latency 0`` the figures are the client's own cost
(HTTP, JPEG decode, resize, writing the memmap); ``--latency L`` makes the
server wait L seconds before each answer, standing in for the round trip to
images.cocodataset.org, which is where a pool of connections pays off. The
images are COCO-sized (640 x 480 JPEGs of ~100-200 kB with texture, not flat
colours, so decoding costs what it does on real photos).

Prints images/s for: the full build (fetch + decode + cache) with 16
connections and with 1, at each latency; decoding alone (the cache built from
JPEGs already on disk); and an estimate for the whole of train2017 (118,287
images, ~19.3 GB) at a few bandwidths, from the measured decode rate.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures"))

import numpy as np  # noqa: E402
from coco_fixtures import start_coco_server, write_coco_tree  # noqa: E402
from PIL import Image  # noqa: E402

from clip_from_scratch.data import coco  # noqa: E402

TRAIN2017_IMAGES = 118_287
TRAIN2017_BYTES = 19_336_861_798


def photo_like(seed: int, size=(640, 480)) -> bytes:
    """A JPEG as large and as costly to decode as a COCO photo: smooth colour fields plus fine noise."""
    rng = np.random.default_rng(seed)
    w, h = size
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([np.sin(x / rng.uniform(20, 90) + rng.uniform(0, 6)) * np.cos(y / rng.uniform(20, 90))
                     for _ in range(3)], axis=-1)
    pixels = 127 + 90 * base + rng.normal(0, 18, (h, w, 3))
    buffer = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def make_tree(folder: Path, num_images: int):
    """A val2017 tree in COCO's format whose images are photo-sized (replacing the fixture's tiny ones)."""
    tree = write_coco_tree(folder, "val2017", num_images=num_images)
    sizes = []
    for index, image_id in enumerate(tree.ids):
        path = folder / "val2017" / f"{image_id:012d}.jpg"
        if path.exists() and image_id != tree.corrupt_id:
            data = photo_like(index, (640, 480) if index % 3 else (480, 640))
            path.write_bytes(data)
            sizes.append(len(data))
    return tree, float(np.mean(sizes))


def _serve(folder, latency, urls, stop):
    server = start_coco_server(folder, latency=latency)
    urls.put(server.url)
    stop.wait()
    server.stop()


@contextlib.contextmanager
def coco_server(folder, latency: float = 0.0):
    """The loopback server in its own process, so its work does not share the client's GIL."""
    context = multiprocessing.get_context("spawn")
    urls, stop = context.Queue(), context.Event()
    process = context.Process(target=_serve, args=(folder, latency, urls, stop), daemon=True)
    process.start()
    try:
        yield argparse.Namespace(url=urls.get(timeout=60))
    finally:
        stop.set()
        process.join(10)


def build(root: Path, resolution: int, workers: int, **kwargs) -> tuple[float, dict]:
    shutil.rmtree(root, ignore_errors=True)
    start = time.perf_counter()
    ds = coco.CocoCaptions("val2017", resolution=resolution, root=root, progress=False, workers=workers, **kwargs)
    return time.perf_counter() - start, ds.stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--latency", type=float, nargs="*", default=[0.0, 0.05],
                        help="seconds the server waits before each answer (default: 0 and 0.05)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench_coco_"))
    try:
        tree, mean_bytes = make_tree(work / "served", args.images)
        coco.ANNOTATIONS["md5"] = tree.annotations_md5
        print(f"{len(tree.ids)} images (mean {mean_bytes / 1e3:.0f} kB; 1 corrupt, 1 missing), "
              f"cache at {args.resolution} px, {os.cpu_count()} CPU cores, load average "
              f"{os.getloadavg()[0]:.2f}")
        for latency in args.latency:
            with coco_server(tree.folder, latency=latency) as server:
                os.environ[coco.URL_ENV_VAR] = server.url
                for workers in (16, 1):
                    n = len(tree.ids) if workers > 1 or latency == 0 else min(len(tree.ids), 80)
                    seconds, stats = build(work / "data", args.resolution, workers,
                                           max_images=None if n == len(tree.ids) else n)
                    print(f"  fetch + decode + cache, latency {latency * 1e3:3.0f} ms, {workers:2d} connection(s): "
                          f"{n / seconds:7.1f} images/s  ({stats['fetched']} fetched, {stats['failed']} failed)")
        # Decoding alone: the JPEGs already on disk (keep_jpeg, or an unzipped val2017.zip).
        root = work / "local"
        shutil.rmtree(root, ignore_errors=True)
        shutil.copytree(tree.folder / "val2017", root / "coco" / "val2017")
        (root / "coco" / "annotations").mkdir(parents=True)
        with coco_server(tree.folder) as server:   # only the annotations zip and the two bad images come from it
            os.environ[coco.URL_ENV_VAR] = server.url
            coco.load_captions("val2017", root, progress=False)
            rates = {}
            for workers in (16, 1):
                shutil.rmtree(root / "coco" / "cache", ignore_errors=True)
                start = time.perf_counter()
                coco.CocoCaptions("val2017", resolution=args.resolution, root=root, progress=False, workers=workers)
                rates[workers] = len(tree.ids) / (time.perf_counter() - start)
                print(f"  cache from JPEGs on disk (decode + resize + write), {workers:2d} thread(s): "
                      f"{rates[workers]:7.1f} images/s")
        decode = max(rates.values())
        print(f"ESTIMATE for all of train2017 ({TRAIN2017_IMAGES:,} images, {TRAIN2017_BYTES / 1e9:.1f} GB) "
              f"with this machine's decode rate ({decode:.0f} images/s):")
        for label, mbit in (("20 Mbit/s (slow home line)", 20), ("100 Mbit/s (typical)", 100),
                            ("1 Gbit/s (cloud / Colab)", 1000)):
            network = TRAIN2017_BYTES / (mbit * 1e6 / 8)
            cpu = TRAIN2017_IMAGES / decode
            print(f"  {label:28s}: ~{max(network, cpu) / 60:5.0f} min "
                  f"({'bandwidth' if network > cpu else 'decoding'} bound; network alone {network / 60:.0f} min, "
                  f"decoding alone {cpu / 60:.0f} min)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

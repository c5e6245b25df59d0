"""COCO 2017 captions: fetched image by image, decoded once, kept as a memory-mapped uint8 array.

    from clip_from_scratch.data import coco
    ds = coco.CocoCaptions(split="val2017", resolution=64)   # fetches what is missing, then reads the cache
    len(ds)                  # usable images (5,000 for val2017, minus any that failed)
    ds.images                # uint8 tensor [N, 3, 64, 64], memory-mapped from disk
    ds.captions[0]           # every caption of the first image, in COCO's order
    ds.image_ids[:3]         # COCO image ids, ascending
    ds.stats                 # {"fetched": ..., "cached": ..., "failed": ..., "failed_ids": [...]}

Which split for what: **train on train2017, evaluate on val2017** (5,000
images). Do not evaluate a train2017 model on the "Karpathy 5k test" split
that papers report retrieval on: its images come from val2014, and
train2017 = train2014 + most of val2014, so the model has seen most of them.

How the data gets here (each step can be done by hand, offline):

1. The captions: ``<root>/coco/annotations/captions_<split>.json``. If that
   file is missing, it is extracted from ``annotations_trainval2017.zip``
   (252,907,541 bytes, md5-checked, resumable), downloaded once into
   ``<root>/coco/``.
2. The images: ``<base>/<split>/<12-digit id>.jpg`` with ``<base>`` =
   ``$CLIP_COCO_URL`` or http://images.cocodataset.org. A pool of
   connections fetches them (16 by default), with retries and back-off;
   images already in ``<root>/coco/<split>/`` (an unzipped ``val2017.zip``,
   or JPEGs kept with ``keep_jpeg=True``) are read from disk instead.
3. Each image is decoded by content (grayscale, CMYK and palette images, and
   a PNG behind a ``.jpg`` name, all become RGB), its shorter side resized to
   ``resolution`` (bicubic, antialiased) and centre-cropped, as the eval
   transform does, and stored in ``<root>/coco/cache/<split>_<R>px/images.u8``
   beside ``meta.json`` (ids, captions, what failed). Training never decodes
   a JPEG again. Each resolution has its own cache.

A bad image (404, truncated, undecodable) is counted, listed in
``stats["failed_ids"]`` and left out; it never stops the run. An
interrupted build resumes where it stopped: the half-built cache
(``*.part`` files) records which rows are done.
"""
from __future__ import annotations

import bisect
import http.client
import io
import json
import os
import threading
import time
import urllib.error
import urllib.request
import zipfile
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF
from tqdm.auto import tqdm

from ..download import DownloadError, download
from ..errors import CourseError
from .root import data_root

SPLITS = ("train2017", "val2017")
URL_ENV_VAR = "CLIP_COCO_URL"
DEFAULT_URL = "http://images.cocodataset.org"
#: The caption annotations: where they live under the base URL, and the digest that must match.
#: (Tests point ``md5`` at their own small zip.)
ANNOTATIONS = {"path": "annotations/annotations_trainval2017.zip", "bytes": 252_907_541,
               "md5": "f4bbac642086de4f52a3fdda2de5fa2c"}
#: The full image archives, for instructors who prefer one big file (unzip into <root>/coco/).
IMAGE_ZIPS = {"val2017": ("zips/val2017.zip", 815_585_330, "442b8da7639aecaf257c1dceb8ba8c80"),
              "train2017": ("zips/train2017.zip", 19_336_861_798, "cced6f7f71b7629ddf16f17bbcfab6b2")}
CACHE_FORMAT = 1          # bump when the layout of images.u8 / meta.json changes
WORKERS = 16              # parallel connections: on a real network, latency, not bandwidth, limits one
RETRIES = 4               # tries per image after the first, for network errors
BACKOFF_SECONDS = 0.5     # wait 0.5, 1, 2, 4 s between tries
GIVE_UP_AFTER = 64        # this many images in a row lost to network errors: the server is unreachable

# Row states in the half-built cache (status.u8.part).
TODO, DONE, MISSING, UNDECODABLE, UNREACHED = 0, 1, 2, 3, 4
PERMANENT_FAILURES = (MISSING, UNDECODABLE)


class CocoUnavailable(CourseError, RuntimeError):
    """COCO is not on disk and could not be fetched; the message says which command to run."""


class CocoCacheError(CourseError, RuntimeError):
    """A cache file that is damaged or does not match what was asked for; delete it and rerun."""


# ----------------------------------------------------------------------------- names and places
def base_url() -> str:
    """The image server: ``$CLIP_COCO_URL`` (a mirror, a local server) or COCO's own."""
    return os.environ.get(URL_ENV_VAR, DEFAULT_URL).rstrip("/")


def image_name(image_id: int) -> str:
    """COCO's file name for an image id: the id in 12 digits.

    >>> image_name(139)
    '000000000139.jpg'
    """
    return f"{image_id:012d}.jpg"


def check_arguments(split: str, resolution: int, max_images: int | None) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown COCO split {split!r}: choose train2017 (to train) or val2017 (to evaluate)")
    if not isinstance(resolution, int) or resolution < 8:
        raise ValueError(f"resolution must be an integer of at least 8 px (got {resolution!r})")
    if max_images is not None and (not isinstance(max_images, int) or max_images < 1):
        raise ValueError(f"max_images must be at least 1, or None for the whole split (got {max_images!r})")


def cache_dir(root: str | os.PathLike, split: str, resolution: int, max_images: int | None = None) -> Path:
    """``<root>/coco/cache/val2017_64px`` (or ``..._64px_first500`` for the first 500 images)."""
    name = f"{split}_{resolution}px" + (f"_first{max_images}" if max_images else "")
    return Path(root) / "coco" / "cache" / name


def download_command_hint(split: str, max_images: int | None = None, resolution: int = 64,
                          root: str | os.PathLike | None = None) -> str:
    """The command that fetches this data, e.g. ``clip-from-scratch download coco --split val2017 --resolution 64``."""
    command = f"clip-from-scratch download coco --split {split} --resolution {resolution}"
    if max_images:
        command += f" --max-images {max_images}"
    if root is not None and Path(root).resolve() != data_root().resolve():
        command += f" --data-root {root}"
    return command


def _unavailable(split, resolution, max_images, root: Path, why: str) -> CocoUnavailable:
    zip_path, _, zip_md5 = IMAGE_ZIPS[split]
    return CocoUnavailable(
        f"COCO {split} at {resolution} px is not available: {why}.\n"
        f"With internet, run:\n    {download_command_hint(split, max_images, resolution, root)}\n"
        f"(run it again after an interruption: it resumes). Without internet, put files here by hand "
        f"and run the same command:\n"
        f"  - the captions: {root / 'coco' / 'annotations' / f'captions_{split}.json'} (inside "
        f"{DEFAULT_URL}/{ANNOTATIONS['path']}, md5 {ANNOTATIONS['md5']}; or put that zip in {root / 'coco'})\n"
        f"  - the images: {root / 'coco' / split}/<12-digit id>.jpg (unzip {DEFAULT_URL}/{zip_path}, "
        f"md5 {zip_md5}, into {root / 'coco'})\n"
        f"Set CLIP_DATA to use another data folder, or CLIP_COCO_URL to fetch from a mirror.")


# ----------------------------------------------------------------------------- captions
def load_captions(split: str, root: str | os.PathLike | None = None, download_missing: bool = True,
                  progress: bool = True) -> tuple[list[int], list[list[str]]]:
    """``(image_ids ascending, captions per image in COCO's order)`` for a split.

    Reads ``<root>/coco/annotations/captions_<split>.json``; if it is missing,
    extracts it from the annotations zip (downloading the zip first when
    ``download_missing``). Images without a caption are left out.
    """
    root = Path(root) if root is not None else data_root()
    path = root / "coco" / "annotations" / f"captions_{split}.json"
    if not path.exists():
        archive = root / "coco" / Path(ANNOTATIONS["path"]).name
        if not archive.exists() and not download_missing:
            raise FileNotFoundError(f"neither {path} nor {archive} is on disk")
        if download_missing:   # checks the md5 of a zip already there, resumes a partial one
            download(f"{base_url()}/{ANNOTATIONS['path']}", archive, md5=ANNOTATIONS["md5"], progress=progress)
        _extract_captions(archive, path.parent)
    try:
        annotations = json.loads(path.read_text(encoding="utf-8"))
        images, records = annotations["images"], annotations["annotations"]
        by_image: dict[int, list[str]] = {int(image["id"]): [] for image in images}
        for record in records:       # the file's order is COCO's order
            by_image[int(record["image_id"])].append(record["caption"].strip())
    except (ValueError, KeyError, TypeError) as err:
        raise CocoCacheError(f"{path} is not a COCO captions file ({type(err).__name__}: {err}). "
                             f"Delete it and run again to extract a fresh copy.") from None
    image_ids = sorted(i for i, captions in by_image.items() if captions)
    return image_ids, [by_image[i] for i in image_ids]


def _extract_captions(archive: Path, folder: Path) -> None:
    """Extract every ``captions_*.json`` of the annotations zip into ``folder``, each atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        with zipfile.ZipFile(archive) as zf:
            members = [m for m in zf.namelist() if Path(m).name.startswith("captions_") and m.endswith(".json")]
            for member in members:
                target = folder / Path(member).name
                part = target.with_name(target.name + ".part")
                with zf.open(member) as source, open(part, "wb") as sink:
                    while block := source.read(1 << 20):
                        sink.write(block)
                os.replace(part, target)
    except zipfile.BadZipFile as err:
        raise CocoCacheError(f"{archive} is not a readable zip ({err}): delete it and run again") from None


# ----------------------------------------------------------------------------- one image
def decode_and_resize(data: bytes, resolution: int) -> np.ndarray:
    """JPEG (or any image) bytes -> uint8 ``[3, resolution, resolution]``: RGB, shorter side resized, centre crop.

    >>> buffer = io.BytesIO(); Image.new("L", (40, 30), 200).save(buffer, "JPEG")
    >>> pixels = decode_and_resize(buffer.getvalue(), 8)
    >>> pixels.shape, int(pixels[0, 4, 4]), int(pixels[2, 4, 4])
    ((3, 8, 8), 200, 200)
    """
    image = Image.open(io.BytesIO(data))          # the format is read from the bytes, not the name
    # Let the JPEG decoder shrink by 2, 4 or 8 on the way, keeping at least twice the target size,
    # so the bicubic resize below still has the detail to antialias from. A no-op for other formats.
    image.draft(image.mode, (2 * resolution, 2 * resolution))
    image = image.convert("RGB")                  # L, CMYK, P, RGBA -> RGB; raises on a truncated file
    image = TF.resize(image, resolution, interpolation=InterpolationMode.BICUBIC)   # shorter side
    image = TF.center_crop(image, resolution)
    return np.asarray(image, dtype=np.uint8).transpose(2, 0, 1)   # [H, W, 3] -> [3, H, W]


class _Missing(Exception):
    """The server says the image is not there (404 and friends): trying again will not help."""


def fetch_bytes(url: str, timeout: float = 30.0, retries: int | None = None, backoff: float | None = None) -> bytes:
    """The bytes at ``url``, retrying network errors with back-off; a dropped transfer resumes with ``Range``."""
    retries = RETRIES if retries is None else retries
    backoff = BACKOFF_SECONDS if backoff is None else backoff
    received = bytearray()
    for attempt in range(retries + 1):
        request = urllib.request.Request(url, headers={"User-Agent": "clip-from-scratch"})
        if received:
            request.add_header("Range", f"bytes={len(received)}-")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                if received and response.status != 206:
                    received.clear()              # the server ignored Range: start over
                expected = response.headers.get("Content-Length")
                expected = len(received) + int(expected) if expected is not None else None
                while block := response.read(1 << 16):
                    received.extend(block)
            if expected is None or len(received) == expected:
                return bytes(received)
            error: Exception = ConnectionError(f"got {len(received)} of {expected} bytes")
        except urllib.error.HTTPError as err:
            if 400 <= err.code < 500 and err.code not in (408, 429):
                raise _Missing(f"HTTP {err.code}") from None
            error = err
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as err:
            error = err   # refused, reset, timeout, short read
        if attempt < retries:
            time.sleep(backoff * 2 ** attempt)
    raise ConnectionError(f"{url}: {getattr(error, 'reason', error)} (after {retries + 1} tries)")


# ----------------------------------------------------------------------------- the dataset
class CocoCaptions(torch.utils.data.Dataset):
    """COCO captions at one resolution, from the uint8 cache (built on first use).

    ``ds[i]`` is ``(uint8 image [3, R, R], list of captions)``. For training,
    take ``ds.images`` whole (it is memory-mapped: moving it to a GPU reads it
    once) and pick a caption per image per step.

    ``max_images=N`` keeps the first N images by id (a quick run): read
    from the whole split's cache when there is one, else built in its own.
    ``download=False`` never touches the network: it reads the cache, or
    builds it from files put in ``<root>/coco`` by hand, or raises
    :class:`CocoUnavailable` with the command to run. ``keep_jpeg=True`` also
    keeps the raw JPEGs in ``<root>/coco/<split>/``.
    """

    def __init__(self, split: str = "val2017", resolution: int = 64, max_images: int | None = None,
                 root: str | os.PathLike | None = None, download: bool = True, progress: bool = True,
                 *, keep_jpeg: bool = False, workers: int = WORKERS, timeout: float = 30.0):
        check_arguments(split, resolution, max_images)
        self.split, self.resolution, self.max_images = split, resolution, max_images
        self.root = Path(root) if root is not None else data_root()
        self.cache_dir = cache_dir(self.root, split, resolution, max_images)
        whole_split = cache_dir(self.root, split, resolution, None)
        if (self.cache_dir / "meta.json").exists():
            meta = self._read_meta(self.cache_dir, max_images)
        elif max_images and (whole_split / "meta.json").exists():
            # The first N images are the first rows of the whole split's cache: a view, nothing fetched.
            meta = _first_images(self._read_meta(whole_split, None), max_images)
            self.cache_dir = whole_split
        else:
            meta = None
        if meta is not None:
            stats = {"fetched": 0, "cached": len(meta["image_ids"]), "failed": len(meta["failed_ids"]),
                     "failed_ids": list(meta["failed_ids"])}
        else:
            meta, stats = self._build(download, progress, keep_jpeg, workers, timeout)
        self.image_ids: list[int] = meta["image_ids"]
        self.captions: list[list[str]] = meta["captions"]
        self.stats: dict = stats
        self.images = self._map_images()

    def _map_images(self) -> torch.Tensor:
        shape = (len(self.image_ids), 3, self.resolution, self.resolution)
        if shape[0] == 0:
            return torch.zeros(shape, dtype=torch.uint8)
        # Copy-on-write: a writable array (torch wants one) whose changes never reach the file.
        return torch.from_numpy(np.memmap(self.cache_dir / "images.u8", np.uint8, "c", shape=shape))

    # DataLoader workers get the dataset pickled: send the file's name, not a copy of every pixel.
    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "images"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.images = self._map_images()

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int):
        return self.images[index], self.captions[index]

    def __repr__(self) -> str:
        return (f"CocoCaptions({self.split}, {len(self)} images at {self.resolution} px, "
                f"{sum(map(len, self.captions))} captions, cache {self.cache_dir})")

    # --- reading a finished cache
    def _read_meta(self, folder: Path, max_images: int | None) -> dict:
        path = folder / "meta.json"
        fix = f"Delete the folder {folder} and run again to rebuild it."
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
            wanted = {"format": CACHE_FORMAT, "split": self.split, "resolution": self.resolution,
                      "max_images": max_images}
            wrong = {k: meta.get(k) for k, v in wanted.items() if meta.get(k) != v}
            ids, captions, failed = meta["image_ids"], meta["captions"], meta["failed_ids"]
        except (ValueError, KeyError, TypeError) as err:
            raise CocoCacheError(f"the cache file {path} is damaged ({type(err).__name__}: {err}). {fix}") from None
        if wrong:
            raise CocoCacheError(f"the cache file {path} was written for {wrong}, not {wanted}. {fix}")
        if len(ids) != len(captions):
            raise CocoCacheError(f"the cache file {path} lists {len(ids)} images but {len(captions)} caption lists. "
                                 f"{fix}")
        images = folder / "images.u8"
        size = images.stat().st_size if images.exists() else None
        expected = len(ids) * 3 * self.resolution ** 2
        if size is None:
            raise CocoCacheError(f"the cache file {images} is missing, though {path} is there. {fix}")
        if size != expected:
            raise CocoCacheError(f"the cache file {images} holds {size} bytes, not the {expected} that "
                                 f"{len(ids)} images at {self.resolution} px need (an interrupted copy?). {fix}")
        return {"image_ids": ids, "captions": captions, "failed_ids": failed}

    # --- building the cache
    def _build(self, download_missing, progress, keep_jpeg, workers, timeout):
        split, resolution, root = self.split, self.resolution, self.root
        jpeg_dir = root / "coco" / split
        if not download_missing and not jpeg_dir.is_dir():
            raise _unavailable(split, resolution, self.max_images, root,
                               f"there is no cache in {self.cache_dir} and downloading is off")
        try:
            image_ids, captions = load_captions(split, root, download_missing, progress)
        except (DownloadError, FileNotFoundError) as err:
            raise _unavailable(split, resolution, self.max_images, root,
                               f"the caption annotations could not be read ({err})") from err
        if self.max_images:
            image_ids, captions = image_ids[:self.max_images], captions[:self.max_images]
        builder = _CacheBuilder(self.cache_dir, image_ids, resolution, jpeg_dir, base_url(), split,
                                download_missing, keep_jpeg, workers, timeout)
        status, stats = builder.run(progress)
        unreached = [image_ids[i] for i in np.flatnonzero(status == UNREACHED)]
        if unreached:
            why = (f"{len(unreached)} of {len(image_ids)} images could not be "
                   + ("fetched from " + base_url() if download_missing else "found in " + str(jpeg_dir))
                   + f" (first ids: {unreached[:5]}); the {int((status == DONE).sum())} images stored so far "
                   f"are kept in {self.cache_dir} and the next run starts from them")
            raise _unavailable(split, resolution, self.max_images, root, why)
        keep = np.flatnonzero(status == DONE)
        failed = [image_ids[i] for i in np.flatnonzero(np.isin(status, PERMANENT_FAILURES))]
        meta = {"format": CACHE_FORMAT, "split": split, "resolution": resolution, "max_images": self.max_images,
                "shape": [len(keep), 3, resolution, resolution], "dtype": "uint8",
                "image_ids": [image_ids[i] for i in keep], "captions": [captions[i] for i in keep],
                "failed_ids": failed,
                "failed_reasons": {str(image_ids[i]): "missing: HTTP 4xx" if status[i] == MISSING else "undecodable"
                                   for i in np.flatnonzero(np.isin(status, PERMANENT_FAILURES))}}
        builder.finish(keep, meta)
        stats.update(failed=len(failed), failed_ids=failed)
        return meta, stats


def _first_images(meta: dict, max_images: int) -> dict:
    """The part of a whole split's cache that holds its first ``max_images`` ids (good rows are a prefix)."""
    every_id = sorted(meta["image_ids"] + meta["failed_ids"])[:max_images]
    last = every_id[-1] if every_id else -1
    rows = bisect.bisect_right(meta["image_ids"], last)
    return {"image_ids": meta["image_ids"][:rows], "captions": meta["captions"][:rows],
            "failed_ids": [i for i in meta["failed_ids"] if i <= last]}


class _CacheBuilder:
    """Fills ``images.u8.part`` row by row from a pool of fetchers, then renames it into place.

    ``status.u8.part`` holds one state per row (TODO, DONE, MISSING, ...), so
    an interrupted build restarts with the rows still to do.
    """

    def __init__(self, folder: Path, image_ids, resolution, jpeg_dir: Path, base: str, split: str,
                 fetch: bool, keep_jpeg: bool, workers: int, timeout: float):
        self.folder, self.image_ids, self.resolution = folder, image_ids, resolution
        self.jpeg_dir, self.base, self.split = jpeg_dir, base, split
        self.fetch, self.keep_jpeg, self.workers, self.timeout = fetch, keep_jpeg, max(1, workers), timeout
        self.images_part = folder / "images.u8.part"
        self.status_part = folder / "status.u8.part"

    def _open(self):
        self.folder.mkdir(parents=True, exist_ok=True)
        n, r = len(self.image_ids), self.resolution
        shape = (n, 3, r, r)
        fresh = not (self.images_part.exists() and self.status_part.exists()
                     and self.images_part.stat().st_size == n * 3 * r * r and self.status_part.stat().st_size == n)
        mode = "w+" if fresh else "r+"     # w+ makes a sparse file of the final size: no memory used
        images = np.memmap(self.images_part, np.uint8, mode, shape=shape) if n else np.zeros(shape, np.uint8)
        status = np.memmap(self.status_part, np.uint8, mode, shape=(n,)) if n else np.zeros(0, np.uint8)
        status[status == UNREACHED] = TODO   # network trouble last time: try those again
        return images, status

    def load_one(self, row: int):
        """``(row, state, pixels or None, fetched: bool)`` for one image: from disk if there, else from the server."""
        image_id = self.image_ids[row]
        local = self.jpeg_dir / image_name(image_id)
        if local.exists():
            try:
                return row, DONE, decode_and_resize(local.read_bytes(), self.resolution), False
            except Exception:           # a damaged local copy: fetch a fresh one below
                if not self.fetch:
                    return row, UNDECODABLE, None, False
        if not self.fetch:
            return row, UNREACHED, None, False
        try:
            data = fetch_bytes(f"{self.base}/{self.split}/{image_name(image_id)}", self.timeout)
        except _Missing:
            return row, MISSING, None, True
        except ConnectionError:
            return row, UNREACHED, None, True
        try:
            pixels = decode_and_resize(data, self.resolution)
        except Exception:               # PIL raises OSError, SyntaxError, ValueError ... for bad files
            return row, UNDECODABLE, None, True
        if self.keep_jpeg:
            self.jpeg_dir.mkdir(parents=True, exist_ok=True)
            part = local.with_name(f"{local.name}.{threading.get_ident()}.part")
            part.write_bytes(data)
            os.replace(part, local)
        return row, DONE, pixels, True

    def run(self, progress: bool):
        images, status = self._open()
        todo = [int(i) for i in np.flatnonzero(status == TODO)]
        stats = {"fetched": 0, "cached": int((status == DONE).sum())}
        lost_in_a_row, last_flush = 0, time.monotonic()
        bar = tqdm(total=len(self.image_ids), initial=len(self.image_ids) - len(todo), unit="img",
                   desc=f"COCO {self.split} {self.resolution}px", disable=not progress, smoothing=0.1)
        pool = ThreadPoolExecutor(self.workers)
        pending, queue = set(), iter(todo)

        def record(future) -> int:
            row, state, pixels, fetched = future.result()
            if pixels is not None:
                images[row] = pixels
                stats["fetched" if fetched else "cached"] += 1
            status[row] = state
            bar.update(1)
            return state

        try:
            while True:
                # At most a few rows per worker in flight: results are written as they come, never piled up.
                for row in queue:
                    pending.add(pool.submit(self.load_one, row))
                    if len(pending) >= 4 * self.workers:
                        break
                if not pending:
                    break
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    lost_in_a_row = lost_in_a_row + 1 if record(future) == UNREACHED else 0
                if lost_in_a_row >= GIVE_UP_AFTER:
                    break                           # the server is unreachable: stop, keep what is done
                if time.monotonic() - last_flush > 5:
                    self._flush(images, status)
                    last_flush = time.monotonic()
        finally:   # stopped (Ctrl-C, an error, giving up): keep every image already fetched
            pool.shutdown(wait=True, cancel_futures=True)
            for future in pending:
                if future.done() and not future.cancelled() and future.exception() is None:
                    record(future)
            bar.close()
            self._flush(images, status)
        status = np.array(status)
        status[status == TODO] = UNREACHED          # cancelled after giving up
        return status, stats

    @staticmethod
    def _flush(images, status):
        # Pixels first, then the states that say they are there.
        for array in (images, status):
            if isinstance(array, np.memmap):
                array.flush()

    def finish(self, keep: np.ndarray, meta: dict) -> None:
        """Write the finished cache: only the good rows, then meta.json; both atomically."""
        n, r = len(self.image_ids), self.resolution
        final = self.folder / "images.u8"
        if len(keep) == n and n:
            os.replace(self.images_part, final)
        else:   # leave failed rows out, copying in chunks so train2017 never sits in memory
            source = np.memmap(self.images_part, np.uint8, "r", shape=(n, 3, r, r)) if n else None
            tmp = self.folder / "images.u8.tmp"
            with open(tmp, "wb") as sink:
                for start in range(0, len(keep), 4096):
                    sink.write(np.ascontiguousarray(source[keep[start:start + 4096]]).tobytes())
            del source
            os.replace(tmp, final)
            self.images_part.unlink(missing_ok=True)
        tmp = self.folder / "meta.json.tmp"
        tmp.write_text(json.dumps(meta), encoding="utf-8")
        os.replace(tmp, self.folder / "meta.json")
        self.status_part.unlink(missing_ok=True)


def disk_usage(path: str | os.PathLike) -> int:
    """Bytes used by the files under ``path`` (what the download command reports)."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0

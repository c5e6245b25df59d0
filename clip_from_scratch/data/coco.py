"""COCO 2017 captions: fetched image by image, decoded once, kept as a memory-mapped uint8 array.

    from clip_from_scratch.data import coco
    ds = coco.CocoCaptions(split="val2017", resolution=64)   # fetches what is missing, then reads the cache
    len(ds)                  # usable images (5,000 for val2017, minus any that failed)
    ds.images                # uint8 tensor [N, 3, 64, 64], memory-mapped from disk
    ds.captions[0]           # every caption of the first image, in COCO's order
    ds.image_ids[:3]         # COCO image ids, ascending
    ds.stats                 # {"fetched": ..., "cached": ..., "failed": ..., "failed_ids": [...], "retry_ids": [...]}

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

What goes wrong on a real network, and what happens then
(:mod:`~clip_from_scratch.data.coco_fetch` has the details):

* An image the server does not have (404), or that is not a readable image,
  is **final**: counted, listed in ``stats["failed_ids"]`` and left out.
* Any other failure (a quota or login page, an empty body, HTTP 403 or 5xx,
  a timeout) is **for now**: a build where more than
  :data:`MAX_RETRY_FRACTION` of the images fail that way stops with
  :class:`CocoUnavailable`, keeps what arrived and tries the rest on the
  next run; below that, the cache is written, the images are listed in
  ``stats["retry_ids"]``, and the next run that may download tries them again.
* Each image has a total deadline; a server that accepts connections and
  then says nothing for :data:`SILENT_SERVER_SECONDS` ends the run with a
  clear error; Ctrl-C stops the fetchers within a second or two.
* An interrupted build resumes where it stopped: the half-built cache
  (``*.part`` files) records which rows are done, and ``build.json`` what
  they were built for (the id list's hash, the resolution, the server); if
  the captions file changed since, the build starts over and says so.
* One process builds a cache at a time (a lock file beside the cache
  folder): a second one on a shared data folder waits, saying so, and then
  reads what the first built.
"""
from __future__ import annotations

import bisect
import hashlib
import json
import os
import queue
import re
import shlex
import shutil
import sys
import threading
import time
import zipfile
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..download import DownloadError, download
from ..errors import ConfigError, CourseError
from ..files import file_lock
from .coco_fetch import FetchFailed, Stopped, decode_and_resize, decode_failure, fetch_image
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
GIVE_UP_AFTER = 64        # this many images in a row failing for now: the server is unreachable or refusing
SILENT_SERVER_SECONDS = 20.0   # nothing at all from the server for this long: stop the run
MAX_RETRY_FRACTION = 0.05      # more images than this failing "for now": the build is not written
MAX_CAPTION_CHARS = 1000       # COCO's longest caption is a few hundred characters
STOP_GRACE_SECONDS = 1.0       # on Ctrl-C, how long finished fetches may take to be stored

# Row states in the half-built cache (status.u8.part).
TODO, DONE, MISSING, UNDECODABLE, UNREACHED, TOO_LARGE, RETRY = 0, 1, 2, 3, 4, 5, 6
PERMANENT_FAILURES = (MISSING, UNDECODABLE, TOO_LARGE)
NOT_YET = (TODO, UNREACHED, RETRY)      # tried again on the next run
STATE_LABELS = {MISSING: "missing on the server (HTTP 404)", UNDECODABLE: "undecodable",
                TOO_LARGE: "too large", RETRY: "failed for now", UNREACHED: "not reached", TODO: "not tried"}


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
    """Refuse impossible settings before any work (a :class:`ConfigError`, also a ``ValueError``)."""
    if split not in SPLITS:
        raise ConfigError(f"unknown COCO split {split!r}: choose train2017 (to train) or val2017 (to evaluate)")
    if not _is_int(resolution) or resolution < 8:
        raise ConfigError(f"resolution must be an integer of at least 8 px (got {resolution!r})")
    if max_images is not None and (not _is_int(max_images) or max_images < 1):
        raise ConfigError(f"max_images must be at least 1, or None for the whole split (got {max_images!r})")


def _is_int(value) -> bool:
    """A real integer: not a bool, not a float that happens to be whole."""
    return isinstance(value, int) and not isinstance(value, bool)


def cache_dir(root: str | os.PathLike, split: str, resolution: int, max_images: int | None = None) -> Path:
    """``<root>/coco/cache/val2017_64px`` (or ``..._64px_first500`` for the first 500 images)."""
    name = f"{split}_{resolution}px" + (f"_first{max_images}" if max_images else "")
    return Path(root) / "coco" / "cache" / name


def download_command_hint(split: str, max_images: int | None = None, resolution: int = 64,
                          root: str | os.PathLike | None = None) -> str:
    """The command that fetches this data, e.g. ``clip-from-scratch download coco --split val2017 --resolution 64``."""
    command = f"clip-from-scratch download coco --split {split} --resolution {resolution}"
    if max_images:
        command += f" --num-images {max_images}"
    if root is not None and Path(root).resolve() != usable_data_root().resolve():
        command += f" --data-root {shlex.quote(str(root))}"
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
def usable_data_root() -> Path:
    """``$CLIP_DATA`` (or data/), as one clear line when it cannot be a folder."""
    try:
        root = data_root()
    except OSError as err:       # a file where the folder should be, or no right to create it
        root, why = Path(os.environ.get("CLIP_DATA", "data")), err
    else:
        if not root.exists() or root.is_dir():
            return root
        why = "it is a file"
    raise CocoUnavailable(f"the data folder {root} cannot be used ({why}): point CLIP_DATA (or --data-root) "
                          f"at a folder you can write to")


def load_captions(split: str, root: str | os.PathLike | None = None, download_missing: bool = True,
                  progress: bool = True) -> tuple[list[int], list[list[str]]]:
    """``(image_ids ascending, captions per image in COCO's order)`` for a split.

    Reads ``<root>/coco/annotations/captions_<split>.json``; if it is missing,
    extracts it from the annotations zip (downloading the zip first when
    ``download_missing``). Images without a caption are left out, and so are
    blank captions; a caption longer than :data:`MAX_CAPTION_CHARS` is cut
    there (the BPE trainer's cost grows with a word's length). An annotation
    of the wrong type is named in a :class:`CocoCacheError`.
    """
    root = Path(root) if root is not None else usable_data_root()
    path = root / "coco" / "annotations" / f"captions_{split}.json"
    if not path.exists():
        archive = root / "coco" / Path(ANNOTATIONS["path"]).name
        if not archive.exists() and not download_missing:
            raise FileNotFoundError(f"neither {path} nor {archive} is on disk")
        if download_missing:   # checks the md5 of a zip already there, resumes a partial one
            download(f"{base_url()}/{ANNOTATIONS['path']}", archive, md5=ANNOTATIONS["md5"], progress=progress)
        _extract_captions(archive, path.parent)
    fix = "Delete it and run again to extract a fresh copy."
    try:
        annotations = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError, UnicodeDecodeError) as err:
        raise CocoCacheError(f"{path} is not a COCO captions file ({type(err).__name__}: "
                             f"{str(err)[:200]}). {fix}") from None
    by_image = parse_captions(annotations, where=str(path), fix=fix)
    image_ids = sorted(i for i, captions in by_image.items() if captions)
    return image_ids, [by_image[i] for i in image_ids]


def parse_captions(annotations, where: str = "the captions file", fix: str = "") -> dict[int, list[str]]:
    """COCO's ``{"images": [{"id"}], "annotations": [{"image_id", "caption"}]}`` -> ``{id: [captions]}``.

    Every field is checked for its type, so a damaged file gets one line
    naming the annotation, never a silent ``int(1.9) == 1``.

    >>> parse_captions({"images": [{"id": 7}], "annotations": [{"image_id": 7, "caption": " A dog. "},
    ...                                                         {"image_id": 7, "caption": "  "}]})
    {7: ['A dog.']}
    >>> parse_captions({"images": [{"id": 1.9}], "annotations": []})
    Traceback (most recent call last):
    clip_from_scratch.data.coco.CocoCacheError: the captions file: image #0 has the id 1.9 (float), not an integer.
    """
    def wrong(what: str) -> CocoCacheError:
        return CocoCacheError(f"{where}: {what}." + (f" {fix}" if fix else ""))

    if not isinstance(annotations, dict):
        raise wrong(f"the file holds a {type(annotations).__name__}, not COCO's object with images and annotations")
    images, records = annotations.get("images"), annotations.get("annotations")
    if not isinstance(images, list) or not isinstance(records, list):
        raise wrong("'images' and 'annotations' must both be lists")
    by_image: dict[int, list[str]] = {}
    for index, image in enumerate(images):
        image_id = image.get("id") if isinstance(image, dict) else image
        if not _is_int(image_id) or image_id < 0:
            raise wrong(f"image #{index} has the id {image_id!r:.40} ({type(image_id).__name__}), not an integer")
        by_image[image_id] = []
    for index, record in enumerate(records):      # the file's order is COCO's order
        if not isinstance(record, dict):
            raise wrong(f"annotation #{index} is a {type(record).__name__}, not an object")
        image_id, caption = record.get("image_id"), record.get("caption")
        if not _is_int(image_id) or image_id not in by_image:
            raise wrong(f"annotation #{index} (id {record.get('id')!r:.40}) names the image {image_id!r:.40}, "
                        f"which is not among the file's images")
        if not isinstance(caption, str):
            raise wrong(f"annotation #{index} (id {record.get('id')!r:.40}) has a caption of type "
                        f"{type(caption).__name__}, not text")
        caption = caption.strip()[:MAX_CAPTION_CHARS].strip()
        if caption:
            by_image[image_id].append(caption)
    return by_image


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
    keeps the raw JPEGs in ``<root>/coco/<split>/``. A cache that lists
    images to try again (``stats["retry_ids"]``) tries them whenever
    ``download`` is on; if the server still fails, the cache is used as it is.
    """

    def __init__(self, split: str = "val2017", resolution: int = 64, max_images: int | None = None,
                 root: str | os.PathLike | None = None, download: bool = True, progress: bool = True,
                 *, keep_jpeg: bool = False, workers: int = WORKERS, timeout: float | None = None):
        check_arguments(split, resolution, max_images)
        self.split, self.resolution, self.max_images = split, resolution, max_images
        self.root = Path(root) if root is not None else usable_data_root()
        own = cache_dir(self.root, split, resolution, max_images)
        meta = self._cached()
        if meta is None or (download and meta["retry_ids"] and self.cache_dir == own):
            with _build_lock(own):
                meta = self._cached()   # another process may have built it while we waited
                if meta is None:
                    meta, stats = self._build(download, progress, keep_jpeg, workers, timeout)
                elif download and meta["retry_ids"] and self.cache_dir == own:
                    meta, stats = self._retry(meta, progress, keep_jpeg, workers, timeout)
                else:
                    stats = _stats_of(meta)
        else:
            stats = _stats_of(meta)
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
    def _cached(self) -> dict | None:
        """The finished cache's meta (this one's, or the first rows of the whole split's); sets ``cache_dir``."""
        own = cache_dir(self.root, self.split, self.resolution, self.max_images)
        whole = cache_dir(self.root, self.split, self.resolution, None)
        self.cache_dir = own
        if (own / "meta.json").exists():
            return self._read_meta(own, self.max_images)
        if self.max_images and (whole / "meta.json").exists():
            # The first N images are the first rows of the whole split's cache: a view, nothing fetched.
            self.cache_dir = whole
            return _first_images(self._read_meta(whole, None), self.max_images)
        return None

    def _read_meta(self, folder: Path, max_images: int | None) -> dict:
        path = folder / "meta.json"
        fix = f"Delete the folder {folder} and run again to rebuild it."
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(meta, dict):
                raise TypeError(f"it holds a {type(meta).__name__}, not an object")
            wanted = {"format": CACHE_FORMAT, "split": self.split, "resolution": self.resolution,
                      "max_images": max_images}
            wrong = {k: meta.get(k) for k, v in wanted.items() if meta.get(k) != v}
            ids, captions, failed = meta["image_ids"], meta["captions"], meta["failed_ids"]
            retry = meta.get("retry_ids", [])
            for name, values in (("image_ids", ids), ("failed_ids", failed), ("retry_ids", retry)):
                if not isinstance(values, list) or not all(map(_is_int, values)):
                    raise TypeError(f"{name} must be a list of integers")
            if not isinstance(captions, list) or not all(
                    isinstance(c, list) and all(isinstance(t, str) for t in c) for c in captions):
                raise TypeError("captions must be a list of lists of text")
        except (ValueError, KeyError, TypeError, RecursionError) as err:
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
        reasons = meta.get("failed_reasons") if isinstance(meta.get("failed_reasons"), dict) else {}
        return {"image_ids": ids, "captions": captions, "failed_ids": failed, "retry_ids": retry,
                "failed_reasons": reasons, "ids_sha256": meta.get("ids_sha256")}

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
                                download_missing, keep_jpeg, workers, timeout, self.max_images)
        status, stats = builder.run(progress)
        n = len(image_ids)
        not_yet = np.flatnonzero(np.isin(status, NOT_YET))
        if builder.stopped_because or (len(not_yet) and not download_missing) or len(not_yet) > MAX_RETRY_FRACTION * n:
            where = "fetched from " + base_url() if download_missing else "found in " + str(jpeg_dir)
            why = (f"{len(not_yet)} of {n} images could not be {where}"
                   + (f"; the run stopped because {builder.stopped_because}" if builder.stopped_because else "")
                   + f".\n{builder.failure_summary(not_yet, status)}\n"
                   f"The {int((status == DONE).sum())} images stored so far are kept in {self.cache_dir} "
                   f"and the next run fetches only the rest")
            raise _unavailable(split, resolution, self.max_images, root, why)
        keep = np.flatnonzero(status == DONE)
        failed_rows = np.flatnonzero(np.isin(status, PERMANENT_FAILURES))
        meta = {"format": CACHE_FORMAT, "split": split, "resolution": resolution, "max_images": self.max_images,
                "shape": [len(keep), 3, resolution, resolution], "dtype": "uint8",
                "image_ids": [image_ids[i] for i in keep], "captions": [captions[i] for i in keep],
                "failed_ids": [image_ids[i] for i in failed_rows],
                "retry_ids": [image_ids[i] for i in not_yet],
                "failed_reasons": {str(image_ids[i]): builder.reason(i, status)
                                   for i in sorted([*failed_rows, *not_yet])},
                "ids_sha256": ids_digest(image_ids), "source": base_url()}
        builder.finish(keep, meta)
        return meta, {**_stats_of(meta), "fetched": stats["fetched"], "cached": stats["cached"]}

    def _retry(self, meta, progress, keep_jpeg, workers, timeout):
        """Fetch the images a finished cache lists as failed for now, and add those that arrive.

        They are fetched into a small cache of their own (``<cache>/retry``);
        the big one is rewritten only when something arrived, so an offline
        learner's run costs a few refused connections, not a copy of the cache.
        """
        retry = set(meta["retry_ids"])
        try:
            image_ids, captions = load_captions(self.split, self.root, True, progress)
        except (DownloadError, FileNotFoundError, CocoCacheError) as err:
            return self._as_it_is(meta, str(err))
        wanted = [(i, c) for i, c in zip(image_ids, captions) if i in retry]
        builder = _CacheBuilder(self.cache_dir / "retry", [i for i, _ in wanted], self.resolution,
                                self.root / "coco" / self.split, base_url(), self.split, True, keep_jpeg, workers,
                                timeout, self.max_images)
        status, stats = builder.run(progress)
        arrived = [k for k, state in enumerate(status) if state == DONE]
        final = [k for k, state in enumerate(status) if state in PERMANENT_FAILURES]
        if not arrived and not final:
            rows = np.flatnonzero(np.isin(status, NOT_YET))
            return self._as_it_is(meta, builder.stopped_because or builder.failure_summary(rows, status).strip())
        merged = _merge_rows(self.cache_dir, meta, builder, [wanted[k] for k in arrived], arrived, self.resolution)
        still = [wanted[k][0] for k, state in enumerate(status) if state in NOT_YET]
        reasons = {key: why for key, why in meta["failed_reasons"].items()
                   if int(key) not in {wanted[k][0] for k in arrived}}
        reasons.update({str(wanted[k][0]): builder.reason(k, status) for k in [*final, *np.flatnonzero(
            np.isin(status, NOT_YET))]})
        meta = {**meta, **merged, "failed_ids": sorted([*meta["failed_ids"], *(wanted[k][0] for k in final)]),
                "retry_ids": still, "failed_reasons": reasons}
        tmp = self.cache_dir / "meta.json.tmp"
        tmp.write_text(json.dumps({"format": CACHE_FORMAT, "split": self.split, "resolution": self.resolution,
                                   "max_images": self.max_images, "dtype": "uint8",
                                   "shape": [len(meta["image_ids"]), 3, self.resolution, self.resolution], **meta}),
                       encoding="utf-8")
        os.replace(tmp, self.cache_dir / "meta.json")
        shutil.rmtree(self.cache_dir / "retry", ignore_errors=True)
        return meta, {**_stats_of(meta), "fetched": stats["fetched"], "cached": len(meta["image_ids"]) - len(arrived)}

    def _as_it_is(self, meta: dict, why: str) -> tuple[dict, dict]:
        print(f"COCO {self.split}: the {len(meta['retry_ids'])} images that failed before could not be fetched "
              f"this time either ({why.splitlines()[0] if why else 'no reason given'}); using the cache as it is "
              f"({len(meta['image_ids'])} images).", file=sys.stderr)
        return meta, _stats_of(meta)


def _merge_rows(folder: Path, meta: dict, builder, new: list, new_rows: list, resolution: int) -> dict:
    """Write ``images.u8`` again with the rows that arrived on a retry put in id order; returns ids and captions."""
    side = 3 * resolution * resolution
    old = np.memmap(folder / "images.u8", np.uint8, "r", shape=(len(meta["image_ids"]), side)) \
        if meta["image_ids"] else np.zeros((0, side), np.uint8)
    fresh = np.memmap(builder.images_part, np.uint8, "r", shape=(len(builder.image_ids), side))
    # (id, from the new rows?, row) for every image, in id order
    order = sorted([(i, False, row) for row, i in enumerate(meta["image_ids"])]
                   + [(image_id, True, row) for (image_id, _), row in zip(new, new_rows)])
    captions = dict(zip(meta["image_ids"], meta["captions"])) | {image_id: c for image_id, c in new}
    tmp = folder / "images.u8.tmp"
    with open(tmp, "wb") as sink:
        for start in range(0, len(order), 4096):
            for _, from_new, row in order[start:start + 4096]:
                sink.write((fresh if from_new else old)[row].tobytes())
    del old, fresh
    os.replace(tmp, folder / "images.u8")
    ids = [image_id for image_id, _, _ in order]
    return {"image_ids": ids, "captions": [captions[i] for i in ids]}


def _stats_of(meta: dict) -> dict:
    """``ds.stats`` of a finished cache: nothing fetched, everything read from disk."""
    retry = list(meta.get("retry_ids", []))
    return {"fetched": 0, "cached": len(meta["image_ids"]), "failed": len(meta["failed_ids"]) + len(retry),
            "failed_ids": sorted([*meta["failed_ids"], *retry]), "retry_ids": retry}


def ids_digest(image_ids) -> str:
    """What a half-built cache was built for: the sha256 of its id list.

    >>> ids_digest([139, 285])[:12]
    'e01ed08bd961'
    """
    return hashlib.sha256(",".join(map(str, image_ids)).encode()).hexdigest()


@contextmanager
def _build_lock(folder: Path):
    """One process builds ``folder`` at a time; the others wait (saying so), then read what it built."""
    lock = folder.with_name(folder.name + ".lock")
    waiting = (f"Another process is building the COCO cache {folder}: waiting for it to finish "
               f"(Ctrl-C to stop waiting)...")
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
        held = file_lock(lock, waiting=waiting)
        held.__enter__()
    except OSError as err:
        raise CocoCacheError(f"cannot write in {lock.parent} ({err}): point CLIP_DATA (or --data-root) at a folder "
                             f"you can write to, or remove what blocks it") from None
    try:
        yield
    finally:
        held.__exit__(None, None, None)


def _first_images(meta: dict, max_images: int) -> dict:
    """The part of a whole split's cache that holds its first ``max_images`` ids (good rows are a prefix)."""
    every_id = sorted(meta["image_ids"] + meta["failed_ids"] + meta["retry_ids"])[:max_images]
    last = every_id[-1] if every_id else -1
    rows = bisect.bisect_right(meta["image_ids"], last)
    return {"image_ids": meta["image_ids"][:rows], "captions": meta["captions"][:rows],
            "failed_ids": [i for i in meta["failed_ids"] if i <= last],
            "retry_ids": [i for i in meta["retry_ids"] if i <= last]}


def _state_of(failure: FetchFailed) -> int:
    if not failure.permanent:
        return UNREACHED if failure.network else RETRY
    if failure.reason.startswith("too large"):
        return TOO_LARGE
    return MISSING if failure.reason.startswith("missing") else UNDECODABLE


class _CacheBuilder:
    """Fills ``images.u8.part`` row by row from a pool of fetchers, then renames it into place.

    ``status.u8.part`` holds one state per row (TODO, DONE, MISSING, ...), so
    an interrupted build restarts with the rows still to do; ``build.json``
    says which id list, resolution and server those rows belong to.
    """

    def __init__(self, folder: Path, image_ids, resolution, jpeg_dir: Path, base: str, split: str,
                 fetch: bool, keep_jpeg: bool, workers: int, timeout: float | None, max_images: int | None = None):
        self.folder, self.image_ids, self.resolution = folder, image_ids, resolution
        self.jpeg_dir, self.base, self.split = jpeg_dir, base, split
        self.fetch, self.keep_jpeg, self.workers, self.timeout = fetch, keep_jpeg, max(1, workers), timeout
        self.images_part = folder / "images.u8.part"
        self.status_part = folder / "status.u8.part"
        self.identity_file = folder / "build.json"
        self.identity = {"format": CACHE_FORMAT, "split": split, "resolution": resolution, "max_images": max_images,
                         "images": len(image_ids), "ids_sha256": ids_digest(image_ids), "source": base}
        self.reasons: dict[int, str] = {}     # row -> why it failed, in this run
        self.stopped_because: str | None = None
        self._last_heard = time.monotonic()

    def _open(self):
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            return self._open_parts()
        except OSError as err:
            raise CocoCacheError(f"cannot write the cache in {self.folder} ({err}): point CLIP_DATA (or --data-root) "
                                 f"at a folder you can write to, or remove what blocks it") from None

    def _open_parts(self):
        n, r = len(self.image_ids), self.resolution
        shape = (n, 3, r, r)
        parts_there = self.images_part.exists() and self.status_part.exists()
        fresh = not (parts_there and self.images_part.stat().st_size == n * 3 * r * r
                     and self.status_part.stat().st_size == n and self._built_for() == self.identity)
        if fresh and (parts_there or self.images_part.exists()):
            print(f"The half-built cache in {self.folder} was started for other images "
                  f"({self._difference()}): starting over.", file=sys.stderr)
        if fresh:    # the old rows belong to something else: drop them before saying what the new ones are for
            for part in (self.images_part, self.status_part):
                part.unlink(missing_ok=True)
            tmp = self.identity_file.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(self.identity), encoding="utf-8")
            os.replace(tmp, self.identity_file)
        mode = "w+" if fresh else "r+"     # w+ makes a sparse file of the final size: no memory used
        images = np.memmap(self.images_part, np.uint8, mode, shape=shape) if n else np.zeros(shape, np.uint8)
        status = np.memmap(self.status_part, np.uint8, mode, shape=(n,)) if n else np.zeros(0, np.uint8)
        status[np.isin(status, (UNREACHED, RETRY))] = TODO   # trouble last time: try those again
        return images, status

    def _built_for(self) -> dict | None:
        try:
            return json.loads(self.identity_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def _difference(self) -> str:
        old = self._built_for()
        if not isinstance(old, dict):
            return "no record of which"
        changed = [f"{key} {old.get(key)!r:.24} -> {value!r:.24}" for key, value in self.identity.items()
                   if old.get(key) != value]
        return ", ".join(changed) or "a different size"

    def _heard(self) -> None:
        self._last_heard = time.monotonic()

    def load_one(self, row: int, stop: threading.Event):
        """``(row, state, pixels or None, fetched: bool, reason or None)`` for one image: from disk, else the server."""
        image_id = self.image_ids[row]
        local = self.jpeg_dir / image_name(image_id)
        if local.exists():
            try:
                return row, DONE, decode_and_resize(local.read_bytes(), self.resolution), False, None
            except Exception as err:           # a damaged local copy: fetch a fresh one below
                if not self.fetch:
                    failure = decode_failure(err, "")
                    return row, _state_of(failure), None, False, failure.reason
        if not self.fetch:
            return row, UNREACHED, None, False, f"not in {self.jpeg_dir}"
        try:
            data, content_type = fetch_image(f"{self.base}/{self.split}/{image_name(image_id)}", self.timeout,
                                             stop=stop, heard=self._heard)
            try:
                pixels = decode_and_resize(data, self.resolution)
            except Exception as err:           # PIL raises OSError, SyntaxError, ValueError ... for bad files
                raise decode_failure(err, content_type) from None
        except FetchFailed as failure:
            return row, _state_of(failure), None, True, failure.reason
        if self.keep_jpeg:
            self.jpeg_dir.mkdir(parents=True, exist_ok=True)
            part = local.with_name(f"{local.name}.{threading.get_ident()}.part")
            part.write_bytes(data)
            os.replace(part, local)
        return row, DONE, pixels, True, None

    def _work(self, tasks: queue.SimpleQueue, results: queue.SimpleQueue, stop: threading.Event) -> None:
        """One fetcher: take rows until there are none or ``stop`` is set; hand every result to the main thread."""
        while not stop.is_set():
            try:
                row = tasks.get_nowait()
            except queue.Empty:
                return
            try:
                results.put(self.load_one(row, stop))
            except Stopped:
                return
            except BaseException as err:     # a bug: let the main thread raise it
                results.put(err)
                return

    def run(self, progress: bool):
        images, status = self._open()
        todo = [int(i) for i in np.flatnonzero(status == TODO)]
        stats = {"fetched": 0, "cached": int((status == DONE).sum())}
        bar = tqdm(total=len(self.image_ids), initial=len(self.image_ids) - len(todo), unit="img",
                   desc=f"COCO {self.split} {self.resolution}px", disable=not progress, smoothing=0.1)
        tasks, results, stop = queue.SimpleQueue(), queue.SimpleQueue(), threading.Event()
        for row in todo:
            tasks.put(row)
        # Daemon threads, not a ThreadPoolExecutor: Python waits for an executor's threads at exit, and a
        # fetch blocked on a silent server would hold Ctrl-C for as long as its timeout.
        threads = [threading.Thread(target=self._work, args=(tasks, results, stop), daemon=True,
                                    name=f"coco-fetch-{k}") for k in range(min(self.workers, len(todo)))]
        self._last_heard = time.monotonic()
        for thread in threads:
            thread.start()

        def record(item) -> int:
            if isinstance(item, BaseException):
                raise item
            row, state, pixels, fetched, reason = item
            if pixels is not None:
                images[row] = pixels
                stats["fetched" if fetched else "cached"] += 1
            if reason:
                self.reasons[row] = reason
            status[row] = state
            if state != UNREACHED:     # an answer, even a bad one, is the server talking
                self._heard()
            bar.update(1)
            return state

        lost_in_a_row, last_flush, left = 0, time.monotonic(), len(todo)
        try:
            while left:
                try:
                    items = _next_results(results, 0.25)
                except queue.Empty:
                    silent = time.monotonic() - self._last_heard
                    if self.fetch and silent > SILENT_SERVER_SECONDS:
                        self.stopped_because = (f"the server at {self.base} sent nothing at all for "
                                                f"{silent:.0f} s (it accepts connections but does not answer)")
                        break
                    continue
                left -= len(items)
                for item in items:
                    # A quota page or a 503 for every image is as hopeless as no server: stop early, not after hours.
                    lost_in_a_row = lost_in_a_row + 1 if record(item) in (UNREACHED, RETRY) else 0
                if lost_in_a_row >= GIVE_UP_AFTER:
                    self.stopped_because = f"{GIVE_UP_AFTER} images in a row failed"
                    break
                if time.monotonic() - last_flush > 5:
                    self._flush(images, status)
                    last_flush = time.monotonic()
        except KeyboardInterrupt:
            stop.set()
            done = int((status == DONE).sum())
            print(f"\nStopping: {done} of {len(self.image_ids)} images are stored in {self.folder}; "
                  f"the next run fetches only the rest.", file=sys.stderr, flush=True)
            raise
        finally:   # stopped (Ctrl-C, an error, giving up): keep every image already fetched
            stop.set()
            grace = time.monotonic() + STOP_GRACE_SECONDS   # fetches about to finish; blocked ones are left
            for thread in threads:
                thread.join(max(0.0, grace - time.monotonic()))
            while True:
                try:
                    item = results.get_nowait()
                except queue.Empty:
                    break
                if not isinstance(item, BaseException):
                    record(item)
            bar.close()
            self._flush(images, status)
        status = np.array(status)
        status[status == TODO] = UNREACHED          # never tried: the run stopped first
        return status, stats

    def reason(self, row: int, status) -> str:
        return self.reasons.get(row) or STATE_LABELS[int(status[row])]

    def failure_summary(self, rows, status) -> str:
        """What went wrong, most common first, with an address to open in a browser."""
        counts = Counter(re.sub(r" \(after \d+ tr(y|ies)\)$", "", self.reason(row, status)) for row in rows)
        lines = [f"  {count} x {reason}" for reason, count in counts.most_common(4)]
        if len(counts) > 4:
            lines.append(f"  ... and {len(counts) - 4} other reasons")
        if len(rows) and self.fetch:
            lines.append(f"Open {self.base}/{self.split}/{image_name(self.image_ids[rows[0]])} in a browser to see "
                         f"what the server says; check {URL_ENV_VAR} if you set it")
        return "\n".join(lines)

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
        self.identity_file.unlink(missing_ok=True)


def _next_results(results: queue.SimpleQueue, timeout: float) -> list:
    """The fetchers' next results: a short wait for the first (so the main thread sees Ctrl-C and a silent
    server), then every other one already there (one wake-up for many images)."""
    items = [results.get(timeout=timeout)]
    while True:
        try:
            items.append(results.get_nowait())
        except queue.Empty:
            return items


def disk_usage(path: str | os.PathLike) -> int:
    """Bytes used by the files under ``path`` (what the download command reports)."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0

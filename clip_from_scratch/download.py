"""Downloading files safely: resumable, checksummed, atomic, with a progress bar.

Every file the course fetches (OpenAI's vocabulary and weights, COCO, CIFAR)
goes through :func:`download`::

    path = download("https://example.com/model.pt", "data/model.pt", sha256="40d3...")

What it promises:

* **atomic** — bytes go to ``<name>.part`` and are renamed onto ``<name>`` only
  after the checksum matched, so a file with the final name is always complete;
* **resumable** — an interrupted download leaves its ``.part`` file, and the
  next call asks the server for the rest (an HTTP ``Range`` request);
* **checked** — a sha256 (or md5) mismatch deletes the partial file and raises
  :class:`ChecksumError`, naming both digests;
* **helpful offline** — when the server cannot be reached, :class:`DownloadError`
  says which file was wanted and where to put a copy by hand.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path

from tqdm.auto import tqdm

CHUNK = 1 << 20  # 1 MiB


class DownloadError(RuntimeError):
    """The file could not be fetched (no internet, server error, ...)."""


class ChecksumError(DownloadError):
    """The bytes fetched are not the bytes expected."""


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in chunks so large checkpoints fit in memory.

    >>> import tempfile; p = tempfile.mktemp(); _ = open(p, "wb").write(b"abc")
    >>> file_digest(p)[:16]
    'ba7816bf8f01cfea'
    """
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _expected(sha256: str | None, md5: str | None) -> tuple[str, str] | None:
    if sha256:
        return "sha256", sha256.lower()
    if md5:
        return "md5", md5.lower()
    return None


def verify(path: str | os.PathLike, sha256: str | None = None, md5: str | None = None) -> None:
    """Raise :class:`ChecksumError` unless ``path`` has the expected digest."""
    expected = _expected(sha256, md5)
    if expected is None:
        return
    algorithm, want = expected
    got = file_digest(path, algorithm)
    if got != want:
        raise ChecksumError(
            f"{path} has {algorithm} {got}, but {want} was expected. The file is "
            f"corrupt or not the one asked for; delete it and download it again.")


def download(url: str, path: str | os.PathLike, sha256: str | None = None,
             md5: str | None = None, progress: bool = True, timeout: float = 30.0) -> Path:
    """Fetch ``url`` to ``path`` unless a verified copy is already there.

    Returns the path. Raises :class:`ChecksumError` when the bytes do not match
    and :class:`DownloadError` when the server cannot be reached; in both cases
    no file with the final name is left behind.
    """
    path = Path(path)
    if path.exists():
        try:
            verify(path, sha256, md5)
            return path
        except ChecksumError:
            # A stale or damaged copy: set it aside and fetch a fresh one.
            path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    try:
        _fetch(url, part, progress=progress, timeout=timeout, label=path.name)
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        raise DownloadError(
            f"Could not download {url}: {reason}.\n"
            f"If this machine has no internet, fetch the file elsewhere and put it at "
            f"{path.resolve()} (a partial download, if any, is kept at {part.name} and "
            f"resumes on the next try).") from err
    try:
        verify(part, sha256, md5)
    except ChecksumError:
        part.unlink(missing_ok=True)
        raise
    os.replace(part, path)  # atomic on the same file system
    return path


def _fetch(url: str, part: Path, progress: bool, timeout: float, label: str) -> None:
    """Append the missing bytes of ``url`` to ``part``, resuming where it stopped."""
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "clip-from-scratch"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:  # the .part file already holds everything
            return
        raise
    with response:
        resumed = response.status == 206
        if have and not resumed:
            have = 0  # the server ignored the Range header: start over
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        mode = "ab" if resumed else "wb"
        with open(part, mode) as f, tqdm(total=total, initial=have, unit="B", unit_scale=True,
                                          unit_divisor=1024, desc=label, disable=not progress,
                                          leave=False) as bar:
            while True:
                block = response.read(CHUNK)
                if not block:
                    break
                f.write(block)
                bar.update(len(block))
    if total is not None and part.stat().st_size != total:
        raise DownloadError(f"The connection closed early: got {part.stat().st_size} of "
                            f"{total} bytes of {url}. Run the same command again to resume.")


def copy_into_cache(source: str | os.PathLike, path: str | os.PathLike,
                    sha256: str | None = None, md5: str | None = None) -> Path:
    """Copy a file the user already has (a USB stick at a workshop) into the cache, checked."""
    path = Path(path)
    verify(source, sha256, md5)
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    shutil.copyfile(source, part)
    os.replace(part, path)
    return path

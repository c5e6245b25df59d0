"""Downloading files safely: resumable, checksummed, atomic, with a progress bar.

Every file the course fetches (OpenAI's vocabulary and weights, COCO, CIFAR)
goes through :func:`download`::

    path = download("https://example.com/model.pt", "data/model.pt", sha256="40d3...")

What it promises:

* **atomic** — bytes go to ``<name>.part`` and are renamed onto ``<name>`` only
  after the checks passed, flushed to the disk first, so a file with the final
  name is always complete;
* **resumable** — an interrupted download leaves its ``.part`` file, and the
  next call asks the server for the rest (an HTTP ``Range`` request), checking
  that the server really sent the rest of *the same* file;
* **checked** — a sha256 (or md5) mismatch raises :class:`ChecksumError`,
  naming both digests; without a checksum, a body cut short or a web page
  sent in place of a file is refused;
* **nothing lost** — a file already at the path that fails its checksum (a
  copy made by hand, say) is renamed to ``<name>.bad-<digest>``, never deleted;
* **one writer** — processes fetching the same file (a workshop sharing one
  data folder) take turns through a lock file; the second finds the file done;
* **helpful offline** — when the server cannot be reached, :class:`DownloadError`
  says which file was wanted and where to put a copy by hand.
"""
from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
import warnings
from pathlib import Path

from tqdm.auto import tqdm

from .errors import CourseError
from .files import file_lock, fsync_replace

CHUNK = 1 << 20  # 1 MiB
HTML_SUFFIXES = (".html", ".htm", ".xhtml")


class DownloadError(CourseError, RuntimeError):
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
    """Raise :class:`ChecksumError` unless ``path`` has the expected digest.

    >>> import tempfile; p = tempfile.mktemp(); _ = open(p, "wb").write(b"abc")
    >>> verify(p, md5="900150983cd24fb0d6963f7d28e17f72")  # passes: returns None
    >>> verify(p, md5="0" * 32)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    clip_from_scratch.download.ChecksumError: ... has md5 9001...72, but 0000...00 was expected. ...
    """
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
    """Fetch ``url`` to ``path`` unless a verified copy is already there; returns the path.

    Raises :class:`ChecksumError` when the bytes do not match and
    :class:`DownloadError` when the file cannot be fetched; in both cases no
    file with the final name is left behind, and a file that was there is
    kept under another name (the error says which).

    >>> import tempfile; folder = Path(tempfile.mkdtemp()); _ = (folder / "a.txt").write_text("abc")
    >>> md5 = "900150983cd24fb0d6963f7d28e17f72"  # a.txt is there and checks out: no network
    >>> download("http://127.0.0.1:9/a.txt", folder / "a.txt", md5=md5).read_text()
    'abc'
    """
    path = Path(path)
    expected = _expected(sha256, md5)
    if path.is_dir():
        name = Path(urllib.parse.urlsplit(url).path).name or "the-file"
        raise DownloadError(f"{path} is a folder; give download() the file's path, "
                            f"e.g. {path / name}.")
    if _is_good(path, expected):
        return path  # the usual case, without waiting for anyone's lock
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DownloadError(f"Cannot create the folder {path.parent} for {path.name}: {err}. "
                            f"Choose another place for the data (e.g. set CLIP_DATA).") from err
    part = path.with_name(path.name + ".part")
    try:
        note = _download_under_lock(url, path, part, expected, progress, timeout)
    except OSError as err:  # the lock file itself (a read-only shared folder, say)
        raise DownloadError(f"Cannot write beside {path} (for {url}): {err}. Choose a folder "
                            f"you can write to (e.g. set CLIP_DATA), or put the file there "
                            f"by hand.") from err
    if note:
        warnings.warn(note.strip(), stacklevel=2)
    return path


def _download_under_lock(url: str, path: Path, part: Path, expected, progress: bool,
                     timeout: float) -> str:
    """Fetch under the lock; returns a note about a file set aside (or "")."""
    lock = path.with_name(path.name + ".lock")
    with file_lock(lock, waiting=f"Waiting for another process that is downloading {path.name}..."):
        if _is_good(path, expected):
            return ""  # that process finished it while we waited
        note = ""
        try:
            if path.exists() and expected is not None:
                note = _set_aside(path, expected)
            _fetch_and_check(url, path, part, expected, progress, timeout)
        except DownloadError as err:
            if not note:
                raise
            raise type(err)(f"{err}{note}") from err.__cause__
        except (PermissionError, IsADirectoryError, NotADirectoryError) as err:
            raise DownloadError(f"Cannot write {part} (for {url}): {err}. Choose a folder you "
                                f"can write to (e.g. set CLIP_DATA).{note}") from err
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as err:
            reason = getattr(err, "reason", None) or f"{type(err).__name__}: {err}"
            raise DownloadError(
                f"Could not download {url}: {reason}.\n"
                f"If this machine has no internet, fetch the file elsewhere and put it at "
                f"{path.resolve()} (a partial download, if any, is kept at {part.name} and "
                f"resumes on the next try).{note}") from err
    return note


def _is_good(path: Path, expected: tuple[str, str] | None) -> bool:
    """A file at ``path`` that passes the checksum (any file, when no checksum is given)."""
    if not path.is_file():
        return False
    return expected is None or file_digest(path, expected[0]) == expected[1]


def _set_aside(path: Path, expected: tuple[str, str]) -> str:
    """Rename a file that failed its checksum out of the way (never delete what a user put there)."""
    algorithm, want = expected
    got = file_digest(path, algorithm)
    aside = path.with_name(f"{path.name}.bad-{got[:8]}")  # same bytes -> same name: no pile-up
    os.replace(path, aside)
    return (f"\nThe file that was at {path} did not match ({algorithm} {got[:12]}..., expected "
            f"{want[:12]}...); it was kept as {aside.name}. Delete it when you no longer need it.")


def _fetch_and_check(url: str, path: Path, part: Path, expected, progress: bool,
                     timeout: float) -> None:
    """Fetch into ``part``, check, and rename onto ``path`` (the caller holds the lock)."""
    resumed, content_type = _fetch(url, part, expected, progress, timeout, path.name)
    if expected is not None:
        algorithm, want = expected
        got = file_digest(part, algorithm)
        if got != want and resumed:
            # The old .part held other bytes (an earlier version of the file, say): start over.
            _discard(part)
            _, content_type = _fetch(url, part, expected, progress, timeout, path.name)
            got = file_digest(part, algorithm)
        if got != want:
            _discard(part)
            hint = (f" The server sent a web page ({content_type}): an error, login or quota "
                    f"page; open {url} in a browser to read it." if _is_html(content_type) else "")
            raise ChecksumError(
                f"The file downloaded from {url} has {algorithm} {got}, but {want} was expected: "
                f"the server sent other bytes (a changed file or a broken mirror).{hint} "
                f"Nothing was kept.")
    fsync_replace(part, path)
    _meta_path(part).unlink(missing_ok=True)


# How resuming stays safe. A .part file is appended to only when we know it holds the start of
# the very file the server has now:
# * with a checksum, any .part may resume: a wrong splice fails the checksum, and we then
#   fetch once more from byte 0 (see _fetch_and_check);
# * without one, we resume only if we stored the server's validator (a strong ETag, else
#   Last-Modified) when the .part was begun, and we send it as If-Range: a server whose file
#   has changed then sends the whole new file (200) instead of the rest (206);
# * every 206 must say (Content-Range) that it starts at the byte we asked for.
# A .part with neither checksum nor validator is started again: nothing proves it matches.


def _fetch(url: str, part: Path, expected, progress: bool, timeout: float,
           label: str) -> tuple[bool, str]:
    """Fill ``part`` with the bytes of ``url``, resuming when safe. Returns (resumed, content type)."""
    have = part.stat().st_size if part.exists() else 0
    meta = _read_meta(part, url) if have else {}
    validator = meta.get("etag") or meta.get("last_modified")
    if have and expected is None and not validator:
        have = 0  # nothing proves the .part belongs to this file
    request = urllib.request.Request(url, headers={"User-Agent": "clip-from-scratch"})
    if have:
        request.add_header("Range", f"bytes={have}-")
        if validator:
            request.add_header("If-Range", validator)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:  # "nothing after byte `have`": complete, or another file
            total = _range_total(err.headers.get("Content-Range"))
            err.close()
            if total == have and (validator or expected is not None):
                return True, meta.get("content_type", "")
            _discard(part)
            return _fetch(url, part, expected, progress, timeout, label)
        raise
    with response:
        content_type = response.headers.get("Content-Type", "")
        if response.status == 206:
            start = _range_start(response.headers.get("Content-Range"))
            if start != have:  # the server sent another piece than the one asked for
                response.close()
                _discard(part)
                return _fetch(url, part, expected, progress, timeout, label)
        else:
            have = 0  # a full answer (200): the Range was ignored, or the file changed
        if have == 0:
            _check_not_a_web_page(url, part, content_type, expected)
            _write_meta(part, url, response.headers)
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        with open(part, "ab" if have else "wb") as f, tqdm(
                total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
                desc=label, disable=not progress, leave=False) as bar:
            try:
                while True:
                    block = response.read(CHUNK)
                    if not block:
                        break
                    f.write(block)
                    bar.update(len(block))
            except http.client.IncompleteRead as err:
                f.write(err.partial)  # keep what came, for the next try to resume
                total = total or -1
    size = part.stat().st_size
    if total is not None and size != total:
        meta = _read_meta(part, url)
        resumable = expected is not None or meta.get("etag") or meta.get("last_modified")
        again = "resume" if resumable else "try again"
        of = f" of {total}" if total >= 0 else ""
        raise DownloadError(f"The connection closed early: got {size}{of} bytes of {url}. "
                            f"Run the same command again to {again}.")
    return have > 0, content_type


def _check_not_a_web_page(url: str, part: Path, content_type: str, expected) -> None:
    """Refuse an HTML page sent (with status 200) in place of a file, when no checksum can tell."""
    names = (Path(urllib.parse.urlsplit(url).path).name, part.name[:-len(".part")])
    if expected is None and _is_html(content_type) and not any(
            n.lower().endswith(HTML_SUFFIXES) for n in names):
        _discard(part)
        raise DownloadError(
            f"The server sent a web page ({content_type}) instead of {names[1]}: usually an "
            f"error, login or quota page, or a link that has moved. Open {url} in a browser to "
            f"read it, then fetch the file by hand or from another address.")


def _is_html(content_type: str) -> bool:
    return content_type.split(";")[0].strip().lower() in ("text/html", "application/xhtml+xml")


def _range_start(header: str | None) -> int | None:
    """``"bytes 300-999/1000"`` -> 300."""
    match = re.fullmatch(r"\s*bytes\s+(\d+)-\d+/(\d+|\*)\s*", header or "")
    return int(match.group(1)) if match else None


def _range_total(header: str | None) -> int | None:
    """``"bytes */1000"`` -> 1000."""
    match = re.fullmatch(r"\s*bytes\s+\*/(\d+)\s*", header or "")
    return int(match.group(1)) if match else None


def _meta_path(part: Path) -> Path:
    return part.with_name(part.name + ".json")


def _read_meta(part: Path, url: str) -> dict:
    """What the server said about the file when ``part`` was begun (if it was this url)."""
    try:
        meta = json.loads(_meta_path(part).read_text())
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) and meta.get("url") == url else {}


def _write_meta(part: Path, url: str, headers) -> None:
    etag = headers.get("ETag")
    meta = {"url": url,
            "etag": etag if etag and not etag.startswith("W/") else None,  # If-Range: strong only
            "last_modified": headers.get("Last-Modified"),
            "content_type": headers.get("Content-Type", "")}
    _meta_path(part).write_text(json.dumps(meta))


def _discard(part: Path) -> None:
    part.unlink(missing_ok=True)
    _meta_path(part).unlink(missing_ok=True)

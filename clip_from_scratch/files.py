"""Writing files so that a crash, a full disk or a second process never leaves a broken one.

Three small tools, used by the downloader and by checkpoint saving::

    with atomic_write("run/checkpoint.pt") as f:   # a temporary file beside the target
        torch.save(state, f)                         # fails? the old checkpoint is untouched
    # here the new file is on disk (fsync) and has its final name (os.replace)

* :func:`fsync_replace` — flush a finished temporary file to the disk, then
  rename it onto its final name in one atomic step. Without the flush, a power
  cut soon after the rename can leave the *new name* on an empty file: the
  rename reached the disk before the data did.
* :func:`atomic_write` — the whole pattern as a ``with`` block, with a
  temporary name unique to this writer (two writers never share one) that is
  removed if the block fails.
* :func:`file_lock` — one process at a time (a workshop room downloading into
  one shared data folder): an exclusive ``flock`` on a ``.lock`` file
  (``msvcrt.locking`` on Windows).
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no flock; msvcrt.locking instead (see file_lock)
    fcntl = None
try:
    import msvcrt
except ImportError:  # everywhere but Windows
    msvcrt = None


def fsync_replace(tmp: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Flush ``tmp`` to the disk, then rename it onto ``path`` atomically.

    Readers see either the old ``path`` or the complete new one, never a mix.
    Both must be on one file system (put ``tmp`` beside ``path``).

    >>> import tempfile; folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "new.tmp").write_text("fresh"); _ = (folder / "data.txt").write_text("old")
    >>> fsync_replace(folder / "new.tmp", folder / "data.txt").read_text()
    'fresh'
    >>> sorted(p.name for p in folder.iterdir())
    ['data.txt']
    """
    path = Path(path)
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_folder(path.parent)  # the rename itself is an entry in the folder
    return path


def _fsync_folder(folder: Path) -> None:
    if os.name != "posix":
        return  # Windows cannot open a folder for fsync; NTFS journals renames
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems (network mounts) refuse; the data itself is already flushed
    finally:
        os.close(fd)


@contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb"):
    """Write ``path`` all at once: a ``with`` block gets a temporary file beside it.

    When the block ends normally, the file is flushed and renamed onto
    ``path`` (:func:`fsync_replace`); when it raises, the temporary file is
    deleted and ``path`` is left as it was. Each call gets its own temporary
    name, so two writers never write into one file.

    >>> import tempfile; target = Path(tempfile.mkdtemp()) / "notes.txt"
    >>> with atomic_write(target, "w") as f:
    ...     _ = f.write("all or nothing")
    >>> target.read_text()
    'all or nothing'
    >>> try:
    ...     with atomic_write(target, "w") as f:
    ...         _ = f.write("half")
    ...         raise KeyboardInterrupt
    ... except KeyboardInterrupt:
    ...     pass
    >>> target.read_text(), sorted(p.name for p in target.parent.iterdir())
    ('all or nothing', ['notes.txt'])
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            yield f
        fsync_replace(tmp, path)
    except BaseException:  # Ctrl-C too: never leave the temporary file behind
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def file_lock(path: str | os.PathLike, waiting: str | None = None):
    """Hold an exclusive lock on ``path`` (created if needed, removed afterwards).

    Other processes asking for the same lock wait until it is released. If
    ``waiting`` is given, it is printed once when we have to wait. On Linux
    and macOS the lock is ``flock``; on Windows, ``msvcrt.locking`` on the
    file's first byte (and the file stays: Windows cannot delete an open file).

    >>> import tempfile; lock = Path(tempfile.mkdtemp()) / "x.lock"
    >>> with file_lock(lock):
    ...     lock.exists()
    True
    >>> lock.exists()
    False
    """
    if fcntl is None:
        with _windows_lock(Path(path), waiting):
            yield
        return
    path = Path(path)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if waiting:
                    print(waiting, file=sys.stderr, flush=True)
                    waiting = None
                fcntl.flock(fd, fcntl.LOCK_EX)
            # The holder before us removes the file when done. If it did, our lock is on a
            # file no one else will open: start again on the file that has the name now.
            try:
                if os.path.samestat(os.fstat(fd), os.stat(path)):
                    break
            except FileNotFoundError:
                pass
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
    try:
        yield
    finally:
        Path(path).unlink(missing_ok=True)  # while still holding the lock: see above
        os.close(fd)


@contextmanager
def _windows_lock(path: Path, waiting: str | None, poll_seconds: float = 0.2):
    """``msvcrt.locking`` on byte 0 of ``path``: non-blocking tries, so Ctrl-C works while waiting."""
    if msvcrt is None:
        raise OSError("no file locking on this platform (neither fcntl nor msvcrt)")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        while True:
            try:
                os.lseek(fd, 0, os.SEEK_SET)
                msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
                break
            except OSError:          # held by another process
                if waiting:
                    print(waiting, file=sys.stderr, flush=True)
                    waiting = None
                time.sleep(poll_seconds)
        try:
            yield
        finally:
            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------- reading pickles safely
def pickle_asks_for_code(err: BaseException) -> bool:
    """Whether ``torch.load(..., weights_only=True)`` refused a file because its pickle asks for code.

    torch's own message then advises retrying with ``weights_only=False``, which would run that code:
    the course names the danger instead and never relays that advice.

    >>> pickle_asks_for_code(Exception("Weights only load failed. Unsupported global: GLOBAL posix.system"))
    True
    >>> pickle_asks_for_code(Exception("PytorchStreamReader failed reading zip archive"))
    False
    """
    return "unsupported global" in str(err).lower()


def load_error_words(err: BaseException) -> str:
    """``err`` in one line for a user, minus any advice to load with ``weights_only=False``.

    >>> load_error_words(RuntimeError("failed reading zip archive: failed finding central directory"))
    'RuntimeError: failed reading zip archive: failed finding central directory'
    >>> load_error_words(Exception("Weights only load failed. Re-running with weights_only=False will work"))
    'Exception'
    """
    first = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return type(err).__name__ + (f": {first}" if first and "weights_only" not in first else "")

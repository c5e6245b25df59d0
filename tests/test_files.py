"""Crash-safe file writing: the final name only ever holds a complete file; nothing is left over."""
import os
import threading
import time

import pytest

from clip_from_scratch import files
from clip_from_scratch.files import atomic_write, file_lock, fsync_replace


def test_atomic_write_replaces_the_file_only_when_the_block_succeeds(tmp_path):
    target = tmp_path / "checkpoint.pt"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_write(target) as f:
            f.write(b"half a checkpoint")
            raise RuntimeError("disk full")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no .tmp left behind
    with atomic_write(target) as f:
        f.write(b"new")
    assert target.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_two_writers_get_two_temporary_files(tmp_path):
    target = tmp_path / "x"
    with atomic_write(target) as first, atomic_write(target) as second:
        assert first.name != second.name
        first.write(b"one"), second.write(b"two")
    assert target.read_bytes() == b"one"  # the last to finish wins, whole


def test_fsync_replace_flushes_before_renaming(tmp_path, monkeypatch):
    calls = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(files.os, "fsync", lambda fd: calls.append("fsync") or real_fsync(fd))
    monkeypatch.setattr(files.os, "replace", lambda a, b: calls.append("replace") or real_replace(a, b))
    (tmp_path / "a.tmp").write_bytes(b"data")
    fsync_replace(tmp_path / "a.tmp", tmp_path / "a")
    assert calls[:2] == ["fsync", "replace"]
    assert (tmp_path / "a").read_bytes() == b"data" and not (tmp_path / "a.tmp").exists()


def holders_at_once(lock, threads: int, hold_seconds: float, waiting=None) -> list[int]:
    """How many threads were inside ``file_lock(lock)`` as each one came in (all 1s: they took turns)."""
    inside, overlaps = [], []

    def work():
        with file_lock(lock, waiting=waiting):
            inside.append(1)
            overlaps.append(len(inside))
            time.sleep(hold_seconds)
            inside.pop()

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(30)
    return overlaps


@pytest.mark.skipif(files.fcntl is None, reason="no flock on this platform")
def test_file_lock_lets_one_holder_in_at_a_time(tmp_path):
    lock = tmp_path / "data.lock"
    assert holders_at_once(lock, 4, 0.05) == [1, 1, 1, 1]
    assert not lock.exists()  # removed by the last holder


@pytest.mark.skipif(files.fcntl is None, reason="the stand-in below is built on flock")
def test_file_lock_on_windows_takes_turns_through_msvcrt_locking(tmp_path, monkeypatch, capsys):
    """Windows has no fcntl: the lock must come from msvcrt.locking, not be a silent no-op.

    msvcrt exists only on Windows, so a stand-in with its interface (non-blocking
    LK_NBLCK raising OSError when held, LK_UNLCK) plays it here, over flock.
    """
    import fcntl
    import types
    calls = []

    def locking(fd, mode, nbytes):
        calls.append(mode)
        fcntl.flock(fd, fcntl.LOCK_UN if mode == fake.LK_UNLCK else fcntl.LOCK_EX | fcntl.LOCK_NB)

    fake = types.SimpleNamespace(LK_NBLCK=2, LK_UNLCK=0, locking=locking)
    monkeypatch.setattr(files, "fcntl", None)
    monkeypatch.setattr(files, "msvcrt", fake)
    overlaps = holders_at_once(tmp_path / "data.lock", 3, 0.3, waiting="waiting for the other one")
    assert overlaps == [1, 1, 1] and fake.LK_UNLCK in calls
    assert "waiting for the other one" in capsys.readouterr().err


def test_file_lock_without_any_locking_refuses_rather_than_pretends(tmp_path, monkeypatch):
    monkeypatch.setattr(files, "fcntl", None)
    monkeypatch.setattr(files, "msvcrt", None)
    with pytest.raises(OSError, match="no file locking"):
        with file_lock(tmp_path / "x.lock"):
            pass

"""An SQLite journal left at a process's end (:attr:`Journal.process_ends_at_close`) has its WAL synced.

With ``synchronous=NORMAL`` a commit in WAL mode is not synced: the checkpoint
that :meth:`SqliteBackend.close` did made the run's commits durable, and
:meth:`SqliteBackend.leave`, which skips it, must sync the WAL in its stead.
Whether a sync reached the disk cannot be seen from a test without a power
cut; which file descriptor the process asked the kernel to sync can.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from flowxfer.journal import Journal, JournalError, NewFile, _sqlite


@pytest.fixture
def left_open(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, sqlite3.Connection]]:
    """The console script's setting, with this test's own connections kept (closed at its end)."""
    kept: dict[str, sqlite3.Connection] = {}
    monkeypatch.setattr(Journal, "process_ends_at_close", True)
    monkeypatch.setattr(_sqlite, "_LEFT_OPEN", kept)
    yield kept
    for conn in kept.values():
        conn.close()


@pytest.fixture
def synced(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """(inode, size) of each file the process asks the kernel to ``fdatasync``, as it asks."""
    seen: list[tuple[int, int]] = []
    real = os.fdatasync

    def recording(fd: int) -> None:
        st = os.fstat(fd)
        seen.append((st.st_ino, st.st_size))
        real(fd)

    monkeypatch.setattr(os, "fdatasync", recording)
    return seen


def _record(path: Path, name: str) -> None:
    journal = Journal.open(path)
    record, _, _ = journal.begin_transfer("upload", "http://x", "alice", {}, name)
    journal.add_files(record.id, [NewFile("/" + name, size=1)])
    journal.close()


def test_leaving_syncs_the_wal_after_the_last_commit(
    tmp_path: Path, synced: list[tuple[int, int]], left_open: dict[str, sqlite3.Connection]
) -> None:
    path = tmp_path / "journal.db"
    wal = path.with_name("journal.db-wal")
    _record(path, "a")
    assert wal.exists() and len(left_open) == 1
    # The WAL as it was once the journal was left, every commit of the run in it.
    assert (wal.stat().st_ino, wal.stat().st_size) in synced, synced
    synced.clear()
    _record(path, "b")  # the next command appends to the same WAL: synced again
    assert (wal.stat().st_ino, wal.stat().st_size) in synced, synced


def test_a_wal_that_cannot_be_synced_is_a_journal_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, left_open: dict[str, sqlite3.Connection]
) -> None:
    """A writeback that failed is the run's commits maybe lost: said, not ended on as if saved."""
    path = tmp_path / "journal.db"

    def failing(fd: int) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    journal = Journal.open(path)
    journal.begin_transfer("upload", "http://x", "alice", {}, "a")
    monkeypatch.setattr(os, "fdatasync", failing)
    with pytest.raises(JournalError, match="cannot sync journal"):
        journal.close()
    monkeypatch.undo()
    journal._backend.close()  # type: ignore[attr-defined]


_FAILING_SYNC = """
import errno, os, sys
def failing(fd):
    raise OSError(errno.EIO, os.strerror(errno.EIO))
os.fdatasync = failing
from flowxfer.cli import run
sys.argv = ["flowxfer", "--journal", sys.argv[1], *sys.argv[2:]]
run()
"""


@pytest.mark.parametrize("command", [["jobs"], ["show", "3fa9"]])
def test_a_journal_command_whose_journal_cannot_be_synced_says_so_without_a_traceback(
    tmp_path: Path, command: list[str]
) -> None:
    """``jobs`` and ``show`` close their journal as the process ends: a failed sync is a journal error (exit 2)."""
    path = tmp_path / "journal.db"
    env = {**os.environ, "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "config")}
    done = subprocess.run(
        [sys.executable, "-c", _FAILING_SYNC, str(path), *command], capture_output=True, text=True, env=env
    )
    assert "Traceback" not in done.stderr, done.stderr
    assert f"cannot sync journal {path}: Input/output error" in done.stderr, done.stderr
    assert done.returncode == 2, (done.returncode, done.stderr)


def test_a_journal_named_through_a_symlink_has_the_wal_sqlite_writes_synced(
    tmp_path: Path, synced: list[tuple[int, int]], left_open: dict[str, sqlite3.Connection]
) -> None:
    """SQLite resolves a symlinked database's path: its WAL is beside the target, not beside the link."""
    (tmp_path / "disk").mkdir()
    link = tmp_path / "journal.db"
    link.symlink_to(tmp_path / "disk" / "journal.db")
    wal = tmp_path / "disk" / "journal.db-wal"
    _record(link, "a")
    assert wal.exists() and not link.with_name("journal.db-wal").exists()
    assert (wal.stat().st_ino, wal.stat().st_size) in synced, synced


def test_a_journal_left_refuses_use_as_a_closed_one_does(
    tmp_path: Path, left_open: dict[str, sqlite3.Connection]
) -> None:
    """A commit after :meth:`Journal.close` fails, as it did when close closed: never one left unsynced."""
    journal = Journal.open(tmp_path / "journal.db")
    journal.close()
    with pytest.raises(JournalError, match="closed database"):
        journal.begin_transfer("upload", "http://x", "alice", {}, "late")
    assert len(left_open) == 1  # the connection itself is kept, for the process's end

"""The SQLite backend: one file, WAL mode, one connection guarded by a lock.

``PRAGMA user_version`` holds the schema version; every write transaction
starts with ``BEGIN IMMEDIATE`` (see :meth:`SqliteBackend.transaction`), so
read-then-write decisions are atomic across processes and
:attr:`Transaction.for_update` / :meth:`Transaction.lock` have nothing to add.
Reads are plain ``sqlite3`` cursors turned into dicts (:func:`_rows`): the
journal opens on every command's critical path, and importing sqlite-utils
cost more start-up (0.25-0.37 s) than the whole command may take (issue 20).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from ._backend import Params, Transaction
from ._errors import JournalBusyError, JournalCorruptError, JournalError, JournalVersionError
from ._location import JournalLocation
from ._schema import MIGRATIONS, SCHEMA_VERSION, split_sql
from ._states import IllegalTransition


@contextlib.contextmanager
def _translated(path: Path) -> Iterator[None]:
    """Map sqlite3 errors to journal errors: callers never see sqlite3."""
    try:
        yield
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            raise JournalBusyError(f"journal {path} is busy (another process holds it): {exc}") from exc
        if "disk I/O" in str(exc) or "full" in str(exc) or "readonly" in str(exc):
            raise JournalError(f"journal {path}: {exc}") from exc
        raise JournalCorruptError(f"journal {path} is damaged: {exc}") from exc
    except sqlite3.DatabaseError as exc:
        raise JournalCorruptError(f"journal {path} is not a usable flowxfer journal: {exc}") from exc


def _rows(cursor: sqlite3.Cursor) -> list[dict[str, Any]]:
    """A query's rows as dicts by column name (what every journal read returns)."""
    keys = [column[0] for column in cursor.description or ()]
    return [dict(zip(keys, row, strict=True)) for row in cursor]


class _SqliteTransaction:
    for_update = ""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Params = ()) -> sqlite3.Cursor:
        return self.conn.execute(sql, params)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> int:
        return self.conn.executemany(sql, rows).rowcount

    def lock(self, name: str) -> None:
        """Nothing to do: ``BEGIN IMMEDIATE`` already holds the database's one write lock."""

    def now(self) -> float:
        """This machine's clock: an SQLite journal is shared by the processes of one host only."""
        return time.time()

    def row_source(self, types: Sequence[str], rows: Sequence[Sequence[Any]]) -> Iterator[tuple[str, list[Any]]]:
        row = "(" + ", ".join("?" * len(types)) + ")"
        for start in range(0, len(rows), 200):
            part = rows[start : start + 200]
            yield f"(VALUES {', '.join([row] * len(part))}) AS v", [value for r in part for value in r]

    def pipeline(self) -> contextlib.nullcontext[None]:
        """Nothing to do: statements run in this process, there is no round trip to save."""
        return contextlib.nullcontext()

    def refusal(self, message: str) -> None:
        """None: SQLite's ``RAISE`` works only in triggers."""

    def refuse_if(self, sql: str, params: Params = ()) -> None:
        refused = self.conn.execute(sql, params).fetchone()
        if refused is not None:
            raise IllegalTransition(refused[0])


#: The connections :meth:`SqliteBackend.leave` kept open, one per journal file at most.
_LEFT_OPEN: dict[str, sqlite3.Connection] = {}


class SqliteBackend:
    """A journal file. :meth:`open` creates or migrates it."""

    def __init__(self, location: JournalLocation, conn: sqlite3.Connection) -> None:
        assert location.path is not None
        self.location = location
        self.path = location.path
        self._conn = conn
        self._lock = threading.RLock()
        self._tx = _SqliteTransaction(conn)

    @classmethod
    def open(cls, location: JournalLocation, *, busy_timeout: float) -> SqliteBackend:
        path = location.path
        assert path is not None
        if path.exists() and path.is_dir():
            raise JournalError(f"journal path {path} is a directory")
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise JournalError(f"cannot create the journal's folder {path.parent}: {exc.strerror}") from exc
        with _translated(path):
            try:
                conn = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None, check_same_thread=False)
            except sqlite3.OperationalError as exc:
                raise JournalError(f"cannot open journal {path}: {exc}") from exc
            try:
                backend = cls(location, conn)
                backend._prepare()
            except BaseException:
                conn.close()
                raise
        return backend

    def _prepare(self) -> None:
        conn = self._conn
        # Reading the schema is what fails on a file that is not a database.
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise JournalVersionError(
                f"journal {self.path} has schema version {version}, newer than this flowxfer "
                f"understands ({SCHEMA_VERSION}); upgrade flowxfer or use another --journal"
            )
        if version < 0:
            raise JournalCorruptError(f"journal {self.path} has schema version {version}: it is damaged")
        if version == 0 and tables:
            raise JournalCorruptError(f"{self.path} is an SQLite database but not a flowxfer journal")
        if conn.execute("PRAGMA journal_mode=WAL").fetchone()[0].lower() != "wal":
            raise JournalError(f"journal {self.path}: the filesystem does not support WAL mode")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        if version < SCHEMA_VERSION:
            with self.transaction():
                # Re-read under the write lock: another process may have migrated meanwhile.
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                for number in range(version, SCHEMA_VERSION):
                    for statement in split_sql(MIGRATIONS[number]):
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def leave(self) -> None:
        """End this journal's use in a process that ends next, without a teardown: its WAL synced, kept.

        :meth:`close` of the file's last connection checkpoints the WAL into
        the database and deletes it (a sync of each, an unlink), and the next
        process's first commit creates it again (its header synced, then the
        folder): 5 syncs a command, 15-35 ms of every command's end and start
        on this disk (issue 20), for a state that syncing the WAL alone makes
        as durable. The commits of a run are in the WAL, unsynced
        (``synchronous=NORMAL``); one ``fdatasync`` makes them durable, as the
        checkpoint did, and the next process opens the file, recovers the
        WAL from disk and appends to it (a crashed process leaves the same
        files, which every open already handles). SQLite checkpoints the WAL
        itself once it passes 1,000 pages. The connection is left open for the
        process's exit to drop (closing it would checkpoint); a later
        :meth:`leave` of the same file in this process closes the one left
        before, which, with this one open, is not the last and does not
        checkpoint.

        :raises JournalError: the WAL cannot be synced.
        """
        with self._lock:
            # The file SQLite opened, not the name given: it resolves a symlinked path, and keeps
            # the WAL beside the target (a WAL looked for beside the link is never synced).
            main = next((row[2] for row in self._conn.execute("PRAGMA database_list") if row[1] == "main"), "")
            try:
                fd = os.open(f"{main or self.path}-wal", os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                fd = None  # nothing was written through a WAL: nothing to make durable
            except OSError as exc:
                raise JournalError(f"cannot sync journal {self.path}: {exc.strerror}") from exc
            if fd is not None:
                try:
                    os.fdatasync(fd)  # Linux syncs the file's pages, whichever descriptor wrote them
                except OSError as exc:
                    raise JournalError(f"cannot sync journal {self.path}: {exc.strerror}") from exc
                finally:
                    os.close(fd)
            key = main or os.path.abspath(self.path)
            earlier = _LEFT_OPEN.pop(key, None)
            _LEFT_OPEN[key] = self._conn
            if earlier is not None and earlier is not self._conn:  # left twice: still the one kept
                earlier.close()
            # Used after this, the journal fails as a closed one does, instead of committing unsynced.
            closed = sqlite3.connect(":memory:")
            closed.close()
            self._conn = closed

    @contextlib.contextmanager
    def transaction(self, *, blind: bool = False) -> Iterator[_SqliteTransaction]:
        """A write transaction that takes the write lock at BEGIN (``blind`` changes nothing here).

        A deferred ``BEGIN`` (sqlite-utils' ``atomic()``, sqlite3's default): a transaction
        that reads then writes can then fail with "database is locked" without
        waiting, when another process wrote in between (WAL cannot upgrade a
        stale read snapshot). ``BEGIN IMMEDIATE`` waits for the lock up front,
        so read-then-write decisions (leases, bucket merges) are atomic across
        processes.
        """
        with self._lock, _translated(self.path):
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._tx
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def read(self, sql: str, params: Params = ()) -> list[dict[str, Any]]:
        with self._lock, _translated(self.path):
            return _rows(self._conn.execute(sql, params))

    def check_integrity(self) -> list[str]:
        """``PRAGMA quick_check``: an empty list when the file is healthy."""
        rows = self.read("PRAGMA quick_check")
        problems = [next(iter(row.values())) for row in rows]
        return [] if problems == ["ok"] else problems

    def columns(self, table: str) -> list[str]:
        return [row["name"] for row in self.read(f"PRAGMA table_info({table})")]

    def after_copy(self, tx: Transaction, table: str) -> None:
        """Nothing to do: an ``INTEGER PRIMARY KEY`` continues after the largest id by itself."""

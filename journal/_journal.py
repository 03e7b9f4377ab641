"""The SQLite journal: the one module that speaks SQL.

Everything else calls the named operations below. Methods are synchronous
and thread-safe (one connection guarded by a lock); the async engine calls
them from worker threads. Hot paths never commit per chunk: progress arrives
as a :class:`JournalBatch` that :meth:`Journal.commit` applies in one
transaction, after ``fdatasync``-ing the files whose chunks it marks written.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._samples import SampleTables
from ._schema import MIGRATIONS, SCHEMA_VERSION
from ._states import (
    ChunkState,
    FileState,
    TransferState,
    check_chunk_transition,
    check_file_transition,
)

# --- errors ----------------------------------------------------------------


class JournalError(Exception):
    """Any problem with the journal itself (not with a transfer)."""


class JournalCorruptError(JournalError):
    """The journal file is not a database, or not a flowxfer journal, or damaged."""


class JournalVersionError(JournalError):
    """The journal was written by a newer flowxfer than this one."""


class JournalBusyError(JournalError):
    """Another process held the journal's write lock for too long."""


class LeaseHeld(JournalError):
    """Another live process is running this work."""

    def __init__(self, key: str, pid: int, host: str, since: float, what: str) -> None:
        self.key, self.pid, self.host, self.since, self.what = key, pid, host, since, what
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since))
        super().__init__(f"already running ({what or key}): pid {pid} on {host}, since {started}")


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


# --- records ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TransferRecord:
    id: str
    kind: str
    status: str
    server: str
    username: str
    params: dict[str, Any]
    params_key: str
    state: dict[str, Any]
    created: float
    updated: float
    finished: float | None
    error: str | None


@dataclass(frozen=True, slots=True)
class FileRecord:
    id: int
    transfer_id: str
    local_path: str
    remote_name: str
    data_id: str | None
    size: int
    mtime_ns: int | None
    chunk_size: int
    checksum: str | None
    etag: str | None
    status: FileState
    bytes_done: int
    attempts: int
    error: str | None
    extra: dict[str, Any]


@dataclass(frozen=True, slots=True)
class NewFile:
    """A file to add to a transfer's plan."""

    local_path: str
    remote_name: str = ""
    size: int = 0
    mtime_ns: int | None = None
    data_id: str | None = None
    checksum: str | None = None
    status: FileState = FileState.PLANNED
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ChunkRecord:
    file_id: int
    idx: int
    offset: int
    size: int
    checksum: str | None
    state: ChunkState


@dataclass(frozen=True, slots=True)
class InventoryRecord:
    """What this machine knows to be on a server (up) or written from it (down).

    ``remote`` is the stored filename for uploads and the data id for
    downloads; (local_path, remote) together say "this local file is that
    remote data".
    """

    server: str
    username: str
    direction: str
    local_path: str
    remote: str
    size: int
    mtime_ns: int
    checksum: str | None
    data_id: str
    superseded: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PackRecord:
    """A packed tar known to be on a server (``sync --pack-small``).

    ``local_path`` is the tar's virtual path (its folder joined with its
    remote name); ``manifest`` the digest of its member list, which says
    whether the folder's small files are still exactly what was packed.
    """

    server: str
    username: str
    local_path: str
    remote: str
    manifest: str
    data_id: str
    size: int
    checksum: str | None
    members: int
    superseded: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PackMember:
    """One file inside a packed tar: its name in the tar and the local file it came from."""

    arcname: str
    local_path: str
    size: int
    mtime_ns: int


@dataclass(frozen=True, slots=True)
class TransferSummary:
    """Counts and bytes of one transfer, computed from its file rows."""

    files_total: int
    files_by_status: dict[str, int]
    bytes_total: int
    bytes_done: int
    bytes_skipped: int

    @property
    def files_finished(self) -> int:
        return self.files_by_status.get("done", 0) + self.files_by_status.get("skipped", 0)


# --- batches ---------------------------------------------------------------


class JournalBatch:
    """Progress events gathered between two commits.

    Events on the same key coalesce (last write wins), so a file that went
    ``active`` then ``done`` within one batch costs one row update. State
    changes are checked (:mod:`._states`) against the record's real state: a
    change following another in the same batch at once, the first one of a
    batch against the row when :meth:`Journal.commit` applies it, inside the
    transaction; an illegal one raises :class:`IllegalTransition` and nothing
    of the batch is written.
    Not thread-safe: fill it on one thread, hand it to :meth:`Journal.commit`.
    """

    __slots__ = (
        "chunk_plans",
        "file_updates",
        "file_from",
        "chunk_updates",
        "chunk_from",
        "verified_files",
        "inventory",
        "packs",
        "fds",
        "_events",
    )

    def __init__(self) -> None:
        self.chunk_plans: dict[int, list[tuple[int, int]]] = {}
        self.file_updates: dict[int, dict[str, Any]] = {}
        #: The first status each file is given in this batch: checked against its row at commit.
        self.file_from: dict[int, FileState] = {}
        self.chunk_updates: dict[tuple[int, int], tuple[ChunkState, str | None]] = {}
        #: The first state each chunk is given in this batch: checked against its row at commit.
        self.chunk_from: dict[tuple[int, int], ChunkState] = {}
        self.verified_files: set[int] = set()
        self.inventory: dict[tuple[str, str, str, str, str], InventoryRecord] = {}
        self.packs: dict[tuple[str, str, str], PackRecord] = {}
        self.fds: set[int] = set()
        self._events = 0

    def __len__(self) -> int:
        return self._events

    def plan_chunks(self, file_id: int, chunks: Sequence[tuple[int, int]]) -> None:
        """Replace a file's chunk plan with ``(offset, size)`` pairs, all ``planned``.

        Chunk events queued earlier for this file belonged to the old plan and are dropped.
        """
        self.chunk_plans[file_id] = list(chunks)
        for key in [key for key in self.chunk_updates if key[0] == file_id]:
            del self.chunk_updates[key]
            self.chunk_from.pop(key, None)
        self._events += 1

    def update_file(self, file_id: int, **fields: Any) -> None:
        """Set columns of a file row; its status changes only through :meth:`file_state`.

        :raises ValueError: ``status`` among the fields.
        """
        if "status" in fields:
            raise ValueError("a file's status changes through JournalBatch.file_state, which checks it")
        self.file_updates.setdefault(file_id, {}).update(fields)
        self._events += 1

    def file_state(self, file_id: int, new: FileState, **fields: Any) -> None:
        """Move a file to ``new``, setting other columns too.

        :raises IllegalTransition: at once when the file got another status earlier in this
            batch and ``new`` may not follow it; otherwise at commit, against its row.
        """
        earlier = self.file_updates.get(file_id, {}).get("status")
        if earlier is not None:
            check_file_transition(FileState(earlier), new)
        else:
            self.file_from[file_id] = new
        self.file_updates.setdefault(file_id, {}).update(fields, status=new.value)
        self._events += 1

    def chunk(self, file_id: int, idx: int, new: ChunkState, checksum: str | None = None) -> None:
        """Move chunk ``idx`` of a file to ``new``.

        :raises IllegalTransition: at once when the chunk changed earlier in this batch and
            ``new`` may not follow; otherwise at commit, against its row.
        """
        key = (file_id, idx)
        previous = self.chunk_updates.get(key)
        if previous is not None:
            check_chunk_transition(previous[0], new)
        else:
            self.chunk_from[key] = new
        if checksum is None and previous is not None:
            checksum = previous[1]
        self.chunk_updates[key] = (new, checksum)
        self._events += 1

    def verify_chunks(self, file_id: int) -> None:
        """Every ``acked`` chunk of the file is now ``verified`` (its whole file passed its check)."""
        self.verified_files.add(file_id)
        self._events += 1

    def remember(self, record: InventoryRecord) -> None:
        """Record that a local file is (now) the same as remote data."""
        key = (record.server, record.username, record.direction, record.local_path, record.remote)
        self.inventory[key] = record
        self._events += 1

    def remember_pack(self, record: PackRecord) -> None:
        """Record that a packed tar is on the server (see :meth:`Journal.remember_pack`).

        Queued with the tar's row going ``done``, both land in one commit: recorded
        apart, a kill between the two left the tar in the inventory and its row
        unfinished, and the next run, finding the tar unchanged, dropped the row.
        """
        self.packs[(record.server, record.username, record.local_path)] = record
        self._events += 1

    def sync_before_commit(self, fd: int) -> None:
        """``fdatasync(fd)`` before this batch commits: its writes must be on disk first."""
        self.fds.add(fd)


# --- leases ----------------------------------------------------------------


@dataclass(slots=True)
class Lease:
    """The right to run one piece of work; released on exit, taken over when stale."""

    journal: Journal
    key: str
    token: str

    def heartbeat(self) -> None:
        self.journal._heartbeat(self)

    def release(self) -> None:
        self.journal._release(self)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --- the journal -----------------------------------------------------------


def default_journal_path() -> Path:
    """``$XDG_STATE_HOME/flowxfer/journal.db`` (``~/.local/state/...`` by default)."""
    state_home = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(state_home) / "flowxfer" / "journal.db"


def _sqlite_utils_database(conn: sqlite3.Connection) -> Any:
    """A sqlite-utils ``Database`` on ``conn``; imported here, so commands that never open the journal
    (login, serve) do not pay for sqlite-utils at all."""
    if _lean_import and "sqlite_utils" not in sys.modules:
        hidden = [name for name in _ARRAY_LIBRARIES if name not in sys.modules]
        for name in hidden:
            sys.modules[name] = None  # type: ignore[assignment]
        try:
            import sqlite_utils  # noqa: F401
        finally:
            for name in hidden:
                if sys.modules.get(name, ...) is None:
                    del sys.modules[name]
    from sqlite_utils import Database

    return Database(conn)


def import_sqlite_utils_without_array_libraries() -> None:
    """Have the journal load sqlite-utils without numpy and pandas. For a process flowxfer owns (the CLI).

    sqlite-utils imports numpy and pandas at import time, when they are
    installed, only to map their scalar types to column types; the journal
    never stores such values. In a lab's Python environment both are usually
    there, and loading them costs 0.1–0.6 s of start-up on every command,
    and numpy's BLAS starts threads that spin on the two cores the transfer
    needs. With this set, they are hidden while sqlite-utils loads (``None``
    in ``sys.modules`` makes an import fail at once) and put back after, so
    a later ``import numpy`` works. Not the default, because the hiding is
    not undone inside sqlite-utils: a program that uses flowxfer as a library
    and sqlite-utils with numpy values itself would find them unsupported,
    and another thread importing numpy during those milliseconds would fail.
    """
    global _lean_import
    _lean_import = True


#: Imported by sqlite-utils when present, never needed by the journal (see above).
_ARRAY_LIBRARIES = ("numpy", "pandas")
_lean_import = False


def _file_row(transfer_id: str, f: NewFile, now: float) -> tuple[Any, ...]:
    """A new ``files`` row's first eleven columns, in the order every ``INSERT INTO files`` names them."""
    return (
        transfer_id,
        f.local_path,
        f.remote_name,
        f.data_id,
        f.size,
        f.mtime_ns,
        f.checksum,
        f.status.value,
        f.error,
        json.dumps(f.extra),
        now,
    )


class Journal(SampleTables):
    """A flowxfer journal on disk. Open with :meth:`open`; close when done.

    :raises JournalCorruptError: (from :meth:`open`) the file is not a flowxfer journal.
    :raises JournalVersionError: (from :meth:`open`) it was written by a newer flowxfer.
    """

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self._conn = conn
        self._db = _sqlite_utils_database(conn)
        self._lock = threading.RLock()
        self.host = socket.gethostname()
        self.pid = os.getpid()

    # -- opening -------------------------------------------------------

    @classmethod
    def open(cls, path: Path | str | None = None, *, busy_timeout: float = 30.0) -> Journal:
        path = Path(path) if path is not None else default_journal_path()
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
                journal = cls(path, conn)
                journal._prepare()
            except BaseException:
                conn.close()
                raise
        return journal

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
            with self._immediate():
                # Re-read under the write lock: another process may have migrated meanwhile.
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                for number in range(version, SCHEMA_VERSION):
                    for statement in _split_sql(MIGRATIONS[number]):
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _immediate(self) -> Iterator[sqlite3.Connection]:
        """A write transaction that takes the write lock at BEGIN.

        sqlite-utils' ``atomic()`` issues a deferred ``BEGIN``: a transaction
        that reads then writes can then fail with "database is locked" without
        waiting, when another process wrote in between (WAL cannot upgrade a
        stale read snapshot). ``BEGIN IMMEDIATE`` waits for the lock up front,
        so read-then-write decisions (leases, bucket merges) are atomic across
        processes. Reads go through sqlite-utils (:meth:`_read`).
        """
        with self._lock, _translated(self.path):
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _read(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[dict[str, Any]]:
        with self._lock, _translated(self.path):
            return list(self._db.query(sql, params))

    def check_integrity(self) -> list[str]:
        """``PRAGMA quick_check``: an empty list when the file is healthy (for ``doctor``)."""
        rows = self._read("PRAGMA quick_check")
        problems = [next(iter(row.values())) for row in rows]
        return [] if problems == ["ok"] else problems

    # -- transfers -----------------------------------------------------

    def begin_transfer(
        self,
        kind: str,
        server: str,
        username: str,
        params: dict[str, Any],
        params_key: str,
        *,
        what: str = "",
        stale_after: float = 60.0,
        resumable: bool = True,
    ) -> tuple[TransferRecord, Lease, bool]:
        """Continue the unfinished transfer of this exact command, or start a new one.

        Atomic: two processes running the same command at once get one
        transfer between them; the loser gets :class:`LeaseHeld`.

        :returns: the transfer, its lease, and whether it was resumed.
        :raises LeaseHeld: another live process runs it.
        """
        now = time.time()
        with self._immediate() as conn:
            row = None
            if resumable:
                row = conn.execute(
                    "SELECT id FROM transfers WHERE params_key = ? AND status != ? ORDER BY created DESC LIMIT 1",
                    (params_key, TransferState.COMPLETED.value),
                ).fetchone()
            if row is not None:
                transfer_id = row[0]
                lease = self._take_lease(conn, f"transfer:{transfer_id}", what, stale_after, now)
                conn.execute(
                    "UPDATE transfers SET status = ?, updated = ?, finished = NULL, error = NULL WHERE id = ?",
                    (TransferState.RUNNING.value, now, transfer_id),
                )
                resumed = True
            else:
                transfer_id = _new_id()
                lease = self._take_lease(conn, f"transfer:{transfer_id}", what, stale_after, now)
                conn.execute(
                    "INSERT INTO transfers (id, kind, status, server, username, params, params_key, "
                    "created, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        transfer_id,
                        kind,
                        TransferState.RUNNING.value,
                        server,
                        username,
                        json.dumps(params, sort_keys=True),
                        params_key,
                        now,
                        now,
                    ),
                )
                resumed = False
        record = self.get_transfer(transfer_id)
        assert record is not None
        return record, lease, resumed

    def reopen_transfer(
        self, transfer_id: str, *, what: str = "", stale_after: float = 60.0
    ) -> tuple[TransferRecord, Lease]:
        """Take the lease of an existing transfer to resume it (``flowxfer resume ID``).

        :raises KeyError: no such transfer.
        :raises LeaseHeld: another live process runs it.
        """
        now = time.time()
        with self._immediate() as conn:
            if conn.execute("SELECT 1 FROM transfers WHERE id = ?", (transfer_id,)).fetchone() is None:
                raise KeyError(transfer_id)
            lease = self._take_lease(conn, f"transfer:{transfer_id}", what, stale_after, now)
            conn.execute(
                "UPDATE transfers SET status = ?, updated = ?, finished = NULL, error = NULL WHERE id = ?",
                (TransferState.RUNNING.value, now, transfer_id),
            )
        record = self.get_transfer(transfer_id)
        assert record is not None
        return record, lease

    def finish_transfer(self, transfer_id: str, status: TransferState, error: str | None = None) -> None:
        now = time.time()
        finished = None if status in (TransferState.RUNNING, TransferState.INTERRUPTED) else now
        with self._immediate() as conn:
            conn.execute(
                "UPDATE transfers SET status = ?, updated = ?, finished = ?, error = ? WHERE id = ?",
                (status.value, now, finished, error, transfer_id),
            )

    def update_transfer_state(self, transfer_id: str, **changes: Any) -> dict[str, Any]:
        """Merge ``changes`` into a transfer's kind-specific state (e.g. a bulk job id); durable on return."""
        with self._immediate() as conn:
            row = conn.execute("SELECT state FROM transfers WHERE id = ?", (transfer_id,)).fetchone()
            if row is None:
                raise KeyError(transfer_id)
            state = json.loads(row[0])
            state.update(changes)
            conn.execute(
                "UPDATE transfers SET state = ?, updated = ? WHERE id = ?",
                (json.dumps(state, sort_keys=True), time.time(), transfer_id),
            )
        return state

    def get_transfer(self, transfer_id: str) -> TransferRecord | None:
        rows = self._read("SELECT * FROM transfers WHERE id = ?", (transfer_id,))
        return _transfer(rows[0]) if rows else None

    def find_transfers(self, prefix: str) -> list[TransferRecord]:
        """Transfers whose id starts with ``prefix`` (ids may be abbreviated, like git's)."""
        escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        rows = self._read("SELECT * FROM transfers WHERE id LIKE ? ESCAPE '\\'", (escaped + "%",))
        return [_transfer(row) for row in rows]

    def list_transfers(self, *, include_finished: bool = False, limit: int | None = None) -> list[TransferRecord]:
        sql = "SELECT * FROM transfers"
        if not include_finished:
            sql += " WHERE status != 'completed'"
        sql += " ORDER BY updated DESC"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [_transfer(row) for row in self._read(sql)]

    def unfinished_transfers(self) -> list[TransferRecord]:
        """Transfers ``resume`` would continue, oldest first."""
        rows = self._read("SELECT * FROM transfers WHERE status != 'completed' ORDER BY created")
        return [_transfer(row) for row in rows]

    def summary(self, transfer_id: str) -> TransferSummary:
        rows = self._read(
            "SELECT status, count(*) AS n, coalesce(sum(size), 0) AS size, "
            "coalesce(sum(bytes_done), 0) AS done FROM files WHERE transfer_id = ? GROUP BY status",
            (transfer_id,),
        )
        by_status = {row["status"]: row["n"] for row in rows}
        skipped = sum(row["size"] for row in rows if row["status"] == FileState.SKIPPED)
        done = sum(
            row["size"] if row["status"] == FileState.DONE else row["done"]
            for row in rows
            if row["status"] != FileState.SKIPPED
        )
        return TransferSummary(
            files_total=sum(by_status.values()),
            files_by_status=by_status,
            bytes_total=sum(row["size"] for row in rows),
            bytes_done=done,
            bytes_skipped=skipped,
        )

    def delete_transfer(self, transfer_id: str) -> None:
        with self._immediate() as conn:
            conn.execute("DELETE FROM transfers WHERE id = ?", (transfer_id,))

    # -- files ---------------------------------------------------------

    def add_files(self, transfer_id: str, files: Iterable[NewFile], *, batch_size: int = 2000) -> int:
        """Add files to a transfer's plan; a path already planned is left as it is.

        Streams: one transaction per ``batch_size`` files, so a million-file
        scan never sits in memory. Returns how many rows were added.
        """
        added = 0
        batch: list[tuple[Any, ...]] = []
        now = time.time()

        def flush() -> None:
            nonlocal added
            with self._immediate() as conn:
                before = conn.total_changes
                conn.executemany(
                    "INSERT OR IGNORE INTO files (transfer_id, local_path, remote_name, data_id, size, "
                    "mtime_ns, checksum, status, error, extra, updated) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    batch,
                )
                added += conn.total_changes - before
            batch.clear()

        for f in files:
            batch.append(_file_row(transfer_id, f, now))
            if len(batch) >= batch_size:
                flush()
        if batch:
            flush()
        return added

    def files_page(
        self,
        transfer_id: str,
        statuses: Iterable[FileState] | None = None,
        *,
        after_id: int = 0,
        limit: int = 1000,
    ) -> list[FileRecord]:
        """Up to ``limit`` files with id > ``after_id``, in plan order (keyset pagination)."""
        sql = "SELECT * FROM files WHERE transfer_id = ? AND id > ?"
        params: list[Any] = [transfer_id, after_id]
        if statuses is not None:
            wanted = [s.value for s in statuses]
            sql += f" AND status IN ({','.join('?' * len(wanted))})"
            params.extend(wanted)
        sql += f" ORDER BY id LIMIT {int(limit)}"
        return [_file(row) for row in self._read(sql, params)]

    def iter_files(
        self, transfer_id: str, statuses: Iterable[FileState] | None = None, *, page: int = 1000
    ) -> Iterator[FileRecord]:
        """The transfer's files in plan order, read a page at a time (flat memory)."""
        wanted = list(statuses) if statuses is not None else None
        after = 0
        while rows := self.files_page(transfer_id, wanted, after_id=after, limit=page):
            yield from rows
            after = rows[-1].id

    def get_file(self, file_id: int) -> FileRecord | None:
        rows = self._read("SELECT * FROM files WHERE id = ?", (file_id,))
        return _file(rows[0]) if rows else None

    def set_file(self, file_id: int, **fields: Any) -> None:
        """Update a file row now, in its own transaction (rare events: start, restart, finish)."""
        batch = JournalBatch()
        status = fields.pop("status", None)
        if status is not None:
            batch.file_state(file_id, FileState(status), **fields)
        else:
            batch.update_file(file_id, **fields)
        self.commit(batch)

    def reset_interrupted_files(self, transfer_id: str) -> int:
        """Files left ``active`` by a dead process go back to ``planned``; failed ones are retried."""
        with self._immediate() as conn:
            cursor = conn.execute(
                "UPDATE files SET status = 'planned', error = NULL, updated = ? "
                "WHERE transfer_id = ? AND status IN ('active', 'failed')",
                (time.time(), transfer_id),
            )
            return cursor.rowcount

    # -- chunks --------------------------------------------------------

    def chunks(self, file_id: int) -> list[ChunkRecord]:
        rows = self._read("SELECT * FROM chunks WHERE file_id = ? ORDER BY idx", (file_id,))
        return [
            ChunkRecord(r["file_id"], r["idx"], r["offset"], r["size"], r["checksum"], ChunkState(r["state"]))
            for r in rows
        ]

    # -- batches -------------------------------------------------------

    def commit(self, batch: JournalBatch) -> None:
        """Apply a batch in one transaction, after syncing the files it vouches for.

        The order is the invariant: bytes reach the disk before the journal
        says they did, so a crash between the two costs a refetch, never a hole.
        """
        for fd in batch.fds:
            try:
                os.fdatasync(fd)
            except OSError as exc:
                raise JournalError(f"cannot sync downloaded data to disk: {exc.strerror}") from exc
        if not (
            batch.chunk_plans
            or batch.file_updates
            or batch.chunk_updates
            or batch.verified_files
            or batch.inventory
            or batch.packs
        ):
            return
        now = time.time()
        with self._immediate() as conn:
            for file_id, plan in batch.chunk_plans.items():
                conn.execute("DELETE FROM chunks WHERE file_id = ?", (file_id,))
                conn.executemany(
                    "INSERT INTO chunks (file_id, idx, offset, size, state) VALUES (?, ?, ?, ?, 'planned')",
                    [(file_id, idx, offset, size) for idx, (offset, size) in enumerate(plan)],
                )
            _check_transitions(conn, batch)
            if batch.chunk_updates:
                conn.executemany(
                    "UPDATE chunks SET state = ?, checksum = coalesce(?, checksum) WHERE file_id = ? AND idx = ?",
                    [
                        (state.value, checksum, file_id, idx)
                        for (file_id, idx), (state, checksum) in batch.chunk_updates.items()
                    ],
                )
            if batch.verified_files:
                conn.executemany(
                    "UPDATE chunks SET state = 'verified' WHERE file_id = ? AND state = 'acked'",
                    [(file_id,) for file_id in batch.verified_files],
                )
            for file_id, fields in batch.file_updates.items():
                _update_file(conn, file_id, {**fields, "updated": now})
            if batch.inventory:
                conn.executemany(
                    "INSERT OR REPLACE INTO inventory (server, username, direction, local_path, remote, size, "
                    "mtime_ns, checksum, data_id, superseded, recorded) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    [
                        (
                            r.server,
                            r.username,
                            r.direction,
                            r.local_path,
                            r.remote,
                            r.size,
                            r.mtime_ns,
                            r.checksum,
                            r.data_id,
                            json.dumps(list(r.superseded)),
                            now,
                        )
                        for r in batch.inventory.values()
                    ],
                )
            for pack in batch.packs.values():  # after the file rows: a pack's cleanup looks at their status
                _write_pack(conn, pack, now)

    # -- inventory -----------------------------------------------------

    def lookup_inventory(
        self, server: str, username: str, direction: str, keys: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], InventoryRecord]:
        """Known records for many ``(local_path, remote)`` keys at once (one query per 500 keys).

        The query asks for the paths with ``IN`` (one index lookup each) and the
        remote names are matched here: SQLite evaluates an ``OR`` of 500
        ``(path, remote)`` pairs against every row of the user's inventory, which
        made a 10,000-file re-run quadratic.
        """
        found: dict[tuple[str, str], InventoryRecord] = {}
        wanted = set(keys)
        for start in range(0, len(keys), 500):
            part = keys[start : start + 500]
            paths = list(dict.fromkeys(local_path for local_path, _ in part))
            rows = self._read(
                "SELECT * FROM inventory WHERE server = ? AND username = ? AND direction = ? AND local_path IN "
                f"({','.join('?' * len(paths))})",
                [server, username, direction, *paths],
            )
            for row in rows:
                if (row["local_path"], row["remote"]) in wanted:
                    record = _inventory(row)
                    found[(record.local_path, record.remote)] = record
        return found

    def inventory_for_path(self, server: str, username: str, direction: str, local_path: str) -> list[InventoryRecord]:
        """Every record of one local path (any remote name): sync's change detection."""
        rows = self._read(
            "SELECT * FROM inventory WHERE server = ? AND username = ? AND direction = ? AND local_path = ?",
            (server, username, direction, local_path),
        )
        return [_inventory(row) for row in rows]

    def iter_inventory(self, server: str, username: str, direction: str, prefix: str = "") -> Iterator[InventoryRecord]:
        """Records under a local path prefix, in path order, a page at a time."""
        last = ("", "")
        while True:
            rows = self._read(
                "SELECT * FROM inventory WHERE server = ? AND username = ? AND direction = ? "
                "AND local_path >= ? AND (local_path, remote) > (?, ?) ORDER BY local_path, remote LIMIT 1000",
                (server, username, direction, prefix, *last),
            )
            if not rows:
                return
            for row in rows:
                if not row["local_path"].startswith(prefix):
                    return
                yield _inventory(row)
            last = (rows[-1]["local_path"], rows[-1]["remote"])

    # -- sync planning -------------------------------------------------

    def upsert_planned_files(
        self,
        transfer_id: str,
        rows: Iterable[tuple[NewFile, str | None]],
        generation: int,
        *,
        batch_size: int = 2000,
    ) -> int:
        """Plan ``(file, plan_key)`` rows for a re-plannable transfer (sync), streaming.

        A path not yet in the transfer is added. A path already there keeps
        its row -- and so an upload in progress -- when its size, mtime,
        remote name and plan key are unchanged; otherwise the row starts
        over (planned, no data id, no bytes done). Either way the row is
        stamped with ``generation``, so :meth:`drop_unplanned_files` can
        remove what this planning did not ask for. Returns how many rows
        were added or started over.
        """
        changed = 0
        batch: list[tuple[NewFile, str | None]] = []
        now = time.time()

        def flush() -> None:
            nonlocal changed
            with self._immediate() as conn:
                existing = conn.execute(
                    f"SELECT count(*) FROM files WHERE transfer_id = ? AND local_path IN "
                    f"({','.join('?' * len(batch))})",
                    [transfer_id, *(f.local_path for f, _ in batch)],
                ).fetchone()[0]
                before = conn.total_changes
                conn.executemany(
                    "UPDATE files SET remote_name = ?, size = ?, mtime_ns = ?, plan_key = ?, extra = ?, "
                    "status = ?, data_id = ?, checksum = ?, chunk_size = 0, bytes_done = 0, etag = NULL, "
                    "error = NULL, attempts = 0, updated = ? WHERE transfer_id = ? AND local_path = ? AND "
                    "(remote_name IS NOT ? OR size IS NOT ? OR mtime_ns IS NOT ? OR plan_key IS NOT ?)",
                    [
                        (
                            f.remote_name,
                            f.size,
                            f.mtime_ns,
                            key,
                            json.dumps(f.extra),
                            f.status.value,
                            f.data_id,
                            f.checksum,
                            now,
                            transfer_id,
                            f.local_path,
                            f.remote_name,
                            f.size,
                            f.mtime_ns,
                            key,
                        )
                        for f, key in batch
                    ],
                )
                changed += conn.total_changes - before + len(batch) - existing
                conn.executemany(
                    "INSERT INTO files (transfer_id, local_path, remote_name, data_id, size, mtime_ns, checksum, "
                    "status, error, extra, updated, plan_gen, plan_key) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?) "
                    "ON CONFLICT (transfer_id, local_path) DO UPDATE SET plan_gen = excluded.plan_gen",
                    [(*_file_row(transfer_id, f, now), generation, key) for f, key in batch],
                )
            batch.clear()

        for row in rows:
            batch.append(row)
            if len(batch) >= batch_size:
                flush()
        if batch:
            flush()
        return changed

    def drop_unplanned_files(self, transfer_id: str, generation: int) -> int:
        """Remove unfinished rows that planning ``generation`` did not ask for (gone, excluded, unstable).

        Finished (``done``) rows stay: they are the record of what this transfer did. So does
        the row of a tar the packs inventory holds, made ``done`` with the inventory's upload:
        a journal written before a tar and its row's ``done`` were one commit may hold the tar
        without the row (a kill between the two), and planning skips a tar it holds.
        """
        with self._immediate() as conn:
            conn.execute(_ADOPT_SENT_TARS, (time.time(), transfer_id, generation))
            cursor = conn.execute(
                "DELETE FROM files WHERE transfer_id = ? AND plan_gen != ? AND status != 'done'",
                (transfer_id, generation),
            )
            return cursor.rowcount

    def add_pack_members(self, manifest: str, members: Iterable[PackMember], *, batch_size: int = 5000) -> None:
        """Record which files make up the tar with ``manifest`` (once: a manifest never changes)."""
        if self._read("SELECT 1 FROM pack_members WHERE manifest = ? LIMIT 1", (manifest,)):
            return
        batch: list[tuple[Any, ...]] = []

        def flush() -> None:
            with self._immediate() as conn:
                conn.executemany(
                    "INSERT OR IGNORE INTO pack_members (manifest, arcname, local_path, size, mtime_ns) "
                    "VALUES (?,?,?,?,?)",
                    batch,
                )
            batch.clear()

        for m in members:
            batch.append((manifest, m.arcname, m.local_path, m.size, m.mtime_ns))
            if len(batch) >= batch_size:
                flush()
        if batch:
            flush()

    def pack_members(self, manifest: str) -> list[PackMember]:
        """The members of the tar with ``manifest``, in archive order (sorted by name)."""
        rows = self._read(
            "SELECT arcname, local_path, size, mtime_ns FROM pack_members WHERE manifest = ? ORDER BY arcname",
            (manifest,),
        )
        return [PackMember(r["arcname"], r["local_path"], r["size"], r["mtime_ns"]) for r in rows]

    def lookup_packs(self, server: str, username: str, local_paths: Sequence[str]) -> dict[str, PackRecord]:
        """Known packs for many virtual tar paths at once."""
        found: dict[str, PackRecord] = {}
        for start in range(0, len(local_paths), 500):
            part = list(local_paths[start : start + 500])
            marks = ",".join("?" * len(part))
            rows = self._read(
                f"SELECT * FROM packs WHERE server = ? AND username = ? AND local_path IN ({marks})",
                [server, username, *part],
            )
            for row in rows:
                found[row["local_path"]] = _pack(row)
        return found

    def iter_packs(self, server: str, username: str, prefix: str = "") -> Iterator[PackRecord]:
        """Packs under a folder prefix, in path order, a page at a time."""
        last = prefix
        first = True
        while True:
            rows = self._read(
                "SELECT * FROM packs WHERE server = ? AND username = ? AND "
                + ("local_path >= ?" if first else "local_path > ?")
                + " ORDER BY local_path LIMIT 500",
                (server, username, last),
            )
            first = False
            if not rows:
                return
            for row in rows:
                if not row["local_path"].startswith(prefix):
                    return
                yield _pack(row)
            last = rows[-1]["local_path"]

    def remember_pack(self, record: PackRecord) -> None:
        """Record that a packed tar is on the server, alone (a sync queues it in its batch instead)."""
        with self._immediate() as conn:
            _write_pack(conn, record, time.time())

    # -- rate-limit buckets ---------------------------------------------

    def update_buckets(
        self,
        server: str,
        username: str,
        merge: Callable[[dict[str, dict[str, Any]]], dict[str, dict[str, Any]]],
    ) -> dict[str, dict[str, Any]]:
        """Read the stored bucket states, let ``merge`` combine them with ours, store the result.

        One write transaction, so processes sharing a budget never lose each
        other's spending. ``merge`` receives ``{class: state}`` (possibly empty)
        and returns the states to store.
        """
        with self._immediate() as conn:
            rows = conn.execute(
                "SELECT class, state FROM buckets WHERE server = ? AND username = ?", (server, username)
            ).fetchall()
            stored = {name: json.loads(state) for name, state in rows}
            result = merge(stored)
            now = time.time()
            conn.executemany(
                "INSERT OR REPLACE INTO buckets (server, username, class, state, updated) VALUES (?,?,?,?,?)",
                [(server, username, name, json.dumps(state), now) for name, state in result.items()],
            )
        return result

    # -- leases --------------------------------------------------------

    def acquire_lease(self, key: str, *, what: str = "", stale_after: float = 60.0) -> Lease:
        """Take the lease ``key``, or raise :class:`LeaseHeld` if a live process has it."""
        with self._immediate() as conn:
            return self._take_lease(conn, key, what, stale_after, time.time())

    def _take_lease(self, conn: sqlite3.Connection, key: str, what: str, stale_after: float, now: float) -> Lease:
        row = conn.execute("SELECT pid, host, since, heartbeat, what FROM leases WHERE key = ?", (key,)).fetchone()
        if row is not None:
            pid, host, since, heartbeat, held_what = row
            ours = pid == self.pid and host == self.host
            dead = host == self.host and not _pid_alive(pid)
            stale = now - heartbeat > stale_after
            if not (ours or dead or stale):
                raise LeaseHeld(key, pid, host, since, held_what)
        token = secrets.token_hex(8)
        conn.execute(
            "INSERT OR REPLACE INTO leases (key, token, pid, host, since, heartbeat, what) VALUES (?,?,?,?,?,?,?)",
            (key, token, self.pid, self.host, now, now, what),
        )
        return Lease(self, key, token)

    def heartbeat_held(self, key: str) -> bool:
        """Renew the lease ``key`` if this process holds it; whether it does.

        For a long wait before a transfer's workers (and their heartbeat) start:
        ``download --execution --wait`` polls for hours under its lease.
        """
        with self._immediate() as conn:
            changed = conn.execute(
                "UPDATE leases SET heartbeat = ? WHERE key = ? AND pid = ? AND host = ?",
                (time.time(), key, self.pid, self.host),
            ).rowcount
        return bool(changed)

    def _heartbeat(self, lease: Lease) -> None:
        with self._immediate() as conn:
            conn.execute(
                "UPDATE leases SET heartbeat = ? WHERE key = ? AND token = ?", (time.time(), lease.key, lease.token)
            )

    def _release(self, lease: Lease) -> None:
        with self._immediate() as conn:
            conn.execute("DELETE FROM leases WHERE key = ? AND token = ?", (lease.key, lease.token))

    def lease_holder(self, key: str) -> tuple[int, str, float] | None:
        rows = self._read("SELECT pid, host, since FROM leases WHERE key = ?", (key,))
        return (rows[0]["pid"], rows[0]["host"], rows[0]["since"]) if rows else None


# --- helpers -----------------------------------------------------------------

_FILE_COLUMNS = frozenset(
    {
        "local_path",
        "remote_name",
        "data_id",
        "size",
        "mtime_ns",
        "chunk_size",
        "checksum",
        "etag",
        "status",
        "bytes_done",
        "attempts",
        "error",
        "extra",
        "updated",
    }
)


def _check_transitions(conn: sqlite3.Connection, batch: JournalBatch) -> None:
    """Each first state change of the batch against the row it changes (inside the commit's transaction).

    :raises IllegalTransition: the change is not legal from the row's state; the transaction rolls back.
    """
    files = list(batch.file_from)
    for start in range(0, len(files), 500):
        part = files[start : start + 500]
        rows = conn.execute(f"SELECT id, status FROM files WHERE id IN ({','.join('?' * len(part))})", part)
        for file_id, status in rows:
            check_file_transition(FileState(status), batch.file_from[file_id])
    by_file: dict[int, list[int]] = {}
    for file_id, idx in batch.chunk_from:
        by_file.setdefault(file_id, []).append(idx)
    for file_id, indexes in by_file.items():
        for start in range(0, len(indexes), 500):
            part = indexes[start : start + 500]
            rows = conn.execute(
                f"SELECT idx, state FROM chunks WHERE file_id = ? AND idx IN ({','.join('?' * len(part))})",
                [file_id, *part],
            )
            for idx, state in rows:
                check_chunk_transition(ChunkState(state), batch.chunk_from[(file_id, idx)])


def _update_file(conn: sqlite3.Connection, file_id: int, fields: dict[str, Any]) -> None:
    unknown = set(fields) - _FILE_COLUMNS
    if unknown:
        raise ValueError(f"unknown file columns: {sorted(unknown)}")
    values = {k: (json.dumps(v) if k == "extra" else v) for k, v in fields.items()}
    assignments = ", ".join(f"{column} = :{column}" for column in values)
    conn.execute(f"UPDATE files SET {assignments} WHERE id = :_id", {**values, "_id": file_id})


def _new_id() -> str:
    """Short, typable, unique enough ids (like git's abbreviated hashes)."""
    return secrets.token_hex(5)


def _split_sql(script: str) -> list[str]:
    return [statement.strip() for statement in script.split(";") if statement.strip()]


def _transfer(row: dict[str, Any]) -> TransferRecord:
    return TransferRecord(
        id=row["id"],
        kind=row["kind"],
        status=row["status"],
        server=row["server"],
        username=row["username"],
        params=json.loads(row["params"]),
        params_key=row["params_key"],
        state=json.loads(row["state"]),
        created=row["created"],
        updated=row["updated"],
        finished=row["finished"],
        error=row["error"],
    )


def _file(row: dict[str, Any]) -> FileRecord:
    return FileRecord(
        id=row["id"],
        transfer_id=row["transfer_id"],
        local_path=row["local_path"],
        remote_name=row["remote_name"],
        data_id=row["data_id"],
        size=row["size"],
        mtime_ns=row["mtime_ns"],
        chunk_size=row["chunk_size"],
        checksum=row["checksum"],
        etag=row["etag"],
        status=FileState(row["status"]),
        bytes_done=row["bytes_done"],
        attempts=row["attempts"],
        error=row["error"],
        extra=json.loads(row["extra"]),
    )


#: ``drop_unplanned_files``: an unfinished tar row whose tar (same virtual path and manifest) the
#: packs inventory holds is done, with the inventory's upload.
_ADOPT_SENT_TARS = """
UPDATE files SET
    status = 'done', error = NULL, bytes_done = size, updated = ?,
    data_id = (SELECT p.data_id FROM packs p JOIN transfers t ON t.id = files.transfer_id
               WHERE p.server = t.server AND p.username = t.username
               AND p.local_path = files.local_path AND p.manifest = files.plan_key),
    checksum = (SELECT p.checksum FROM packs p JOIN transfers t ON t.id = files.transfer_id
                WHERE p.server = t.server AND p.username = t.username
                AND p.local_path = files.local_path AND p.manifest = files.plan_key)
WHERE transfer_id = ? AND plan_gen != ? AND status != 'done' AND plan_key IS NOT NULL
AND EXISTS (SELECT 1 FROM packs p JOIN transfers t ON t.id = files.transfer_id
            WHERE p.server = t.server AND p.username = t.username
            AND p.local_path = files.local_path AND p.manifest = files.plan_key)
"""


def _write_pack(conn: sqlite3.Connection, record: PackRecord, now: float) -> None:
    """Record a packed tar as on the server; forget the member list of the tar it replaces.

    The old manifest's members are kept while an unfinished transfer may still need them.
    """
    old = conn.execute(
        "SELECT manifest FROM packs WHERE server = ? AND username = ? AND local_path = ?",
        (record.server, record.username, record.local_path),
    ).fetchone()
    conn.execute(
        "INSERT OR REPLACE INTO packs (server, username, local_path, remote, manifest, data_id, size, "
        "checksum, members, superseded, recorded) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
        (
            record.server,
            record.username,
            record.local_path,
            record.remote,
            record.manifest,
            record.data_id,
            record.size,
            record.checksum,
            record.members,
            json.dumps(list(record.superseded)),
            now,
        ),
    )
    if old is not None and old[0] != record.manifest:
        conn.execute(
            "DELETE FROM pack_members WHERE manifest = ? "
            "AND NOT EXISTS (SELECT 1 FROM packs WHERE manifest = ?) "
            "AND NOT EXISTS (SELECT 1 FROM files WHERE plan_key = ? AND status != 'done')",
            (old[0], old[0], old[0]),
        )


def _pack(row: dict[str, Any]) -> PackRecord:
    return PackRecord(
        server=row["server"],
        username=row["username"],
        local_path=row["local_path"],
        remote=row["remote"],
        manifest=row["manifest"],
        data_id=row["data_id"],
        size=row["size"],
        checksum=row["checksum"],
        members=row["members"],
        superseded=tuple(json.loads(row["superseded"])),
    )


def _inventory(row: dict[str, Any]) -> InventoryRecord:
    return InventoryRecord(
        server=row["server"],
        username=row["username"],
        direction=row["direction"],
        local_path=row["local_path"],
        remote=row["remote"],
        size=row["size"],
        mtime_ns=row["mtime_ns"],
        checksum=row["checksum"],
        data_id=row["data_id"],
        superseded=tuple(json.loads(row["superseded"])),
    )

"""All of the server's SQL: users, groups, data, chunks, grants, trees, jobs.

One module owns the schema and every statement, so the rest of the server
calls named operations. Methods are synchronous and thread-safe (one
connection behind a lock); the web layer calls them through a dedicated
single-thread executor (:meth:`Store.run`) so SQLite never blocks the event
loop.

Durability: WAL with ``synchronous=FULL``, so a transaction that returned is
on disk; the upload path commits a chunk's row only after the chunk's bytes
were ``fdatasync``ed, and answers 200 only after the commit.
"""

from __future__ import annotations

import asyncio
import functools
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from flowxfer._os import fsync_dir

from ._store_samples import GENERIC_KIND, DataKind, NewSample, SampleStoreMixin

P = ParamSpec("P")
T = TypeVar("T")

DB_NAME = "flowxfer-server.db"

_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE users (
        name     TEXT PRIMARY KEY,
        salt     BLOB NOT NULL,
        hash     BLOB NOT NULL,
        scrypt_n INTEGER NOT NULL,
        created  REAL NOT NULL
    );
    CREATE TABLE groups (
        name     TEXT PRIMARY KEY,
        created  REAL NOT NULL
    );
    CREATE TABLE group_members (
        group_name TEXT NOT NULL REFERENCES groups (name) ON DELETE CASCADE,
        user_name  TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
        PRIMARY KEY (group_name, user_name)
    ) WITHOUT ROWID;
    CREATE INDEX members_by_user ON group_members (user_name);
    CREATE TABLE data (
        id           TEXT PRIMARY KEY,
        owner        TEXT NOT NULL,
        filename     TEXT NOT NULL,
        data_type    TEXT,
        is_directory INTEGER NOT NULL DEFAULT 0,
        private      INTEGER NOT NULL DEFAULT 1,
        state        TEXT NOT NULL,
        size         INTEGER NOT NULL DEFAULT 0,
        checksum     TEXT,
        created      REAL NOT NULL,
        updated      REAL NOT NULL,
        error        TEXT
    );
    CREATE INDEX data_by_owner ON data (owner, created);
    CREATE INDEX data_by_state ON data (state, created);
    CREATE TABLE chunks (
        data_id  TEXT NOT NULL REFERENCES data (id) ON DELETE CASCADE,
        offset   INTEGER NOT NULL,
        size     INTEGER NOT NULL,
        checksum TEXT NOT NULL,
        PRIMARY KEY (data_id, offset)
    ) WITHOUT ROWID;
    CREATE TABLE grants (
        data_id TEXT NOT NULL REFERENCES data (id) ON DELETE CASCADE,
        kind    TEXT NOT NULL CHECK (kind IN ('user', 'group')),
        name    TEXT NOT NULL,
        level   INTEGER NOT NULL CHECK (level BETWEEN 1 AND 3),
        PRIMARY KEY (data_id, kind, name)
    ) WITHOUT ROWID;
    CREATE TABLE tree_files (
        data_id  TEXT NOT NULL REFERENCES data (id) ON DELETE CASCADE,
        path     TEXT NOT NULL,
        size     INTEGER NOT NULL,
        checksum TEXT NOT NULL,
        PRIMARY KEY (data_id, path)
    ) WITHOUT ROWID;
    CREATE TABLE jobs (
        id        TEXT PRIMARY KEY,
        owner     TEXT NOT NULL,
        name      TEXT NOT NULL,
        items     TEXT NOT NULL,
        status    TEXT NOT NULL,
        progress  REAL NOT NULL DEFAULT 0,
        size      INTEGER,
        checksum  TEXT,
        error     TEXT,
        created   REAL NOT NULL,
        completed REAL,
        expires   REAL
    );
    CREATE INDEX jobs_by_status ON jobs (status);
    """,
    # Samples (docs/protocol.md, "Samples"): projects, samples, their filesets and the data
    # linked into them in order. A data id appears in at most one fileset (UNIQUE), so a ready
    # file can never be linked twice, whatever a crash or a replay does.
    """
    ALTER TABLE data ADD COLUMN category INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE data ADD COLUMN reads1 TEXT;
    CREATE TABLE projects (
        id          TEXT PRIMARY KEY,
        owner       TEXT NOT NULL,
        name        TEXT NOT NULL,
        description TEXT NOT NULL DEFAULT '',
        private     INTEGER NOT NULL DEFAULT 1,
        created     REAL NOT NULL,
        UNIQUE (owner, name)
    );
    CREATE TABLE samples (
        id          TEXT PRIMARY KEY,
        owner       TEXT NOT NULL,
        name        TEXT NOT NULL,
        sample_type TEXT NOT NULL,
        project_id  TEXT REFERENCES projects (id),
        organism    TEXT,
        metadata    TEXT NOT NULL,
        private     INTEGER NOT NULL DEFAULT 1,
        created     REAL NOT NULL
    );
    CREATE INDEX samples_by_owner ON samples (owner, created);
    CREATE TABLE filesets (
        id        TEXT PRIMARY KEY,
        sample_id TEXT NOT NULL REFERENCES samples (id) ON DELETE CASCADE,
        created   REAL NOT NULL
    );
    CREATE INDEX filesets_by_sample ON filesets (sample_id);
    CREATE TABLE fileset_data (
        fileset_id TEXT NOT NULL REFERENCES filesets (id) ON DELETE CASCADE,
        position   INTEGER NOT NULL,
        data_id    TEXT NOT NULL UNIQUE REFERENCES data (id),
        PRIMARY KEY (fileset_id, position)
    ) WITHOUT ROWID;
    """,
)

# Data states. Only 'ready' is ever visible as data.
UPLOADING = "uploading"
FINALIZING = "finalizing"
READY = "ready"
FAILED = "failed"


@dataclass(frozen=True)
class _Call:
    """A store method waiting for its batch; ``flush_first``: a folder to ``fsync`` before the batch's commit."""

    fn: Callable[[], Any]
    flush_first: Path | None
    future: asyncio.Future[Any]


@dataclass(frozen=True)
class UserRow:
    name: str
    salt: bytes
    hash: bytes
    scrypt_n: int


@dataclass(frozen=True)
class DataRow:
    id: str
    owner: str
    filename: str
    data_type: str | None
    is_directory: bool
    private: bool
    state: str
    size: int
    checksum: str | None
    created: float
    updated: float
    error: str | None


@dataclass(frozen=True)
class ChunkRow:
    offset: int
    size: int
    checksum: str


@dataclass(frozen=True)
class TreeFile:
    path: str
    size: int
    checksum: str


@dataclass(frozen=True)
class JobRow:
    id: str
    owner: str
    name: str
    items: list[str]
    status: str
    progress: float
    size: int | None
    checksum: str | None
    error: str | None
    created: float
    completed: float | None
    expires: float | None


@dataclass(frozen=True)
class SearchFilter:
    """The /data/search filters, already validated by the web layer."""

    user: str
    filename: str | None = None
    owned: bool = False
    created_gt: float | None = None
    created_lt: float | None = None
    size_gt: int | None = None
    size_lt: int | None = None


_DATA_COLUMNS = (
    "d.id, d.owner, d.filename, d.data_type, d.is_directory, d.private, d.state, d.size, "
    "d.checksum, d.created, d.updated, d.error"
)

# Readable by :user: owner, public, or a grant to the user or one of their groups.
_READABLE_SQL = """(d.owner = :user OR d.private = 0 OR EXISTS (
    SELECT 1 FROM grants g WHERE g.data_id = d.id AND (
        (g.kind = 'user' AND g.name = :user) OR
        (g.kind = 'group' AND g.name IN (SELECT group_name FROM group_members WHERE user_name = :user)))))"""


def _data(row: Sequence[Any]) -> DataRow:
    return DataRow(
        row[0],
        row[1],
        row[2],
        row[3],
        bool(row[4]),
        bool(row[5]),
        row[6],
        row[7],
        row[8],
        row[9],
        row[10],
        row[11],
    )


def _job(row: Sequence[Any]) -> JobRow:
    return JobRow(
        row[0],
        row[1],
        row[2],
        json.loads(row[3]),
        row[4],
        row[5],
        row[6],
        row[7],
        row[8],
        row[9],
        row[10],
        row[11],
    )


class StoreError(Exception):
    """A metadata operation refused (unknown user, duplicate name...)."""


class FlushError(StoreError):
    """A folder named by :meth:`Store.run_after_flushing` could not be flushed: the call was not run."""


class Store(SampleStoreMixin):
    """The metadata database under the server's root."""

    def __init__(self, root: Path) -> None:
        self.path = Path(root) / DB_NAME
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute("PRAGMA foreign_keys=ON")
        self._conn.create_function(
            "casefold", 1, lambda s: s.casefold() if isinstance(s, str) else s, deterministic=True
        )
        self._grouping = False
        self._savepoints = 0
        self._pending: list[_Call] = []
        self._draining = False
        self._drainer: asyncio.Task[None] | None = None
        self._migrate()
        self._executor: ThreadPoolExecutor | None = None

    # --- plumbing ------------------------------------------------------------

    def _migrate(self) -> None:
        with self._tx() as c:
            version = c.execute("PRAGMA user_version").fetchone()[0]
            if version > len(_MIGRATIONS):
                raise StoreError(f"{self.path} was written by a newer flowxfer (schema {version})")
            for number in range(version, len(_MIGRATIONS)):
                for statement in _MIGRATIONS[number].split(";"):
                    if statement.strip():
                        c.execute(statement)
            c.execute(f"PRAGMA user_version = {len(_MIGRATIONS)}")

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction (writers queue instead of failing on upgrade).

        Inside a group commit (:meth:`_run_calls`, which holds the lock) it is a
        SAVEPOINT instead: the call's changes still stand or fall together, and
        the batch's one COMMIT makes them durable with the others'.
        """
        with self._lock:
            if self._grouping:
                self._savepoints += 1
                name = f"call{self._savepoints}"
                self._conn.execute(f"SAVEPOINT {name}")
                try:
                    yield self._conn
                except BaseException:
                    self._conn.execute(f"ROLLBACK TO {name}")
                    self._conn.execute(f"RELEASE {name}")
                    raise
                self._conn.execute(f"RELEASE {name}")
                return
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _query(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[Any]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """The connection, held for several reads in a row (no transaction: each read sees what is committed)."""
        with self._lock:
            yield self._conn

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run one store method in the store's own thread, off the event loop, with group commit.

        With ``synchronous=FULL`` every COMMIT waits for a disk flush, and one
        thread commits for every request: concurrent uploads queued behind each
        other's flushes. Calls that arrive while a batch is being committed now
        wait together and run as the next batch, in one transaction (each in
        its own SAVEPOINT, so one call's failure is its own), with one flush
        (and, before it, one of each folder :meth:`run_after_flushing` names).
        A call returns only after the COMMIT that holds it.
        """
        return await self._submit(functools.partial(fn, *args, **kwargs), None)

    async def run_after_flushing(self, folder: Path, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """:meth:`run`, with ``folder`` ``fsync``ed before the transaction that holds the call begins.

        For a row that names a file just created in ``folder`` (its bytes
        already flushed): the row is committed only once the file's name is
        durable too. One flush of a folder serves every call of its batch
        (3 small uploads at the median, 8 at p90). A flush per small whole
        upload, in the I/O thread that wrote it, made 10,000 uploads of
        16 KiB take 10.4 s instead of 8.8 s (medians of five alternating
        runs of ``flowxfer sync``): each flush wrote the folder's blocks
        again and cost ~0.15 ms of server CPU.

        :raises FlushError: the flush failed; the call was not run.
        """
        return await self._submit(functools.partial(fn, *args, **kwargs), folder)

    async def _submit(self, call: Callable[[], T], flush_first: Path | None) -> T:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="flowxfer-store")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.append(_Call(call, flush_first, future))
        if not self._draining:
            self._draining = True
            self._drainer = loop.create_task(self._drain())
        result: T = await future
        return result

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        batch: list[_Call] = []
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                assert self._executor is not None
                outcomes = await loop.run_in_executor(self._executor, self._run_batch, batch)
                for call, (ok, value) in zip(batch, outcomes, strict=True):
                    if call.future.done():
                        continue
                    if ok:
                        call.future.set_result(value)
                    else:
                        call.future.set_exception(value)
        except BaseException as exc:  # the executor is gone (shutdown): nobody waiting may hang
            for call in [*batch, *self._pending]:
                if not call.future.done():
                    call.future.set_exception(StoreError(f"the metadata store stopped: {exc!r}"))
            self._pending = []
            raise
        finally:
            self._draining = False

    def _run_batch(self, batch: Sequence[_Call]) -> list[tuple[bool, Any]]:
        """Flush the folders the batch names, then run its calls in one transaction (store thread).

        (ok, result or exception) for each call; a call whose folder could not
        be flushed is not run.
        """
        unflushed: dict[Path, FlushError] = {}
        for folder in dict.fromkeys(call.flush_first for call in batch if call.flush_first is not None):
            try:
                fsync_dir(folder)
            except OSError as exc:
                unflushed[folder] = FlushError(f"cannot make the names in {folder} durable: {exc}")
        runnable = [call.fn for call in batch if call.flush_first not in unflushed]
        outcomes = iter(self._run_calls(runnable))
        return [(False, unflushed[call.flush_first]) if call.flush_first in unflushed else next(outcomes)
                for call in batch]

    def _run_calls(self, calls: list[Callable[[], Any]]) -> list[tuple[bool, Any]]:
        """Run calls in one transaction; (ok, result or exception) for each."""
        if not calls:
            return []
        if len(calls) == 1:
            try:
                return [(True, calls[0]())]
            except Exception as exc:  # noqa: BLE001 - handed to its caller
                return [(False, exc)]
        outcomes: list[tuple[bool, Any]] = []
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:  # locked past the busy timeout, an I/O error: every caller hears it
                return [(False, StoreError(f"cannot start a transaction: {exc}"))] * len(calls)
            self._grouping = True
            try:
                for call in calls:
                    try:
                        outcomes.append((True, call()))
                    except Exception as exc:  # noqa: BLE001 - handed to its caller
                        outcomes.append((False, exc))
            finally:
                self._grouping = False
            try:
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                return [(False, StoreError(f"commit failed: {exc}"))] * len(calls)
        return outcomes

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        with self._lock:
            self._conn.close()

    # --- users and groups ----------------------------------------------------

    def put_user(self, name: str, salt: bytes, hash_: bytes, scrypt_n: int) -> bool:
        """Create the user or replace their password; True if created."""
        with self._tx() as c:
            existed = c.execute("SELECT 1 FROM users WHERE name = ?", (name,)).fetchone()
            if existed:
                c.execute(
                    "UPDATE users SET salt = ?, hash = ?, scrypt_n = ? WHERE name = ?",
                    (salt, hash_, scrypt_n, name),
                )
            else:
                c.execute("INSERT INTO users VALUES (?, ?, ?, ?, ?)", (name, salt, hash_, scrypt_n, time.time()))
            return not existed

    def remove_user(self, name: str) -> bool:
        with self._tx() as c:
            return c.execute("DELETE FROM users WHERE name = ?", (name,)).rowcount > 0

    def get_user(self, name: str) -> UserRow | None:
        rows = self._query("SELECT name, salt, hash, scrypt_n FROM users WHERE name = ?", (name,))
        return UserRow(*rows[0]) if rows else None

    def user_exists(self, name: str) -> bool:
        return bool(self._query("SELECT 1 FROM users WHERE name = ?", (name,)))

    def list_users(self) -> list[str]:
        return [r[0] for r in self._query("SELECT name FROM users ORDER BY name")]

    def add_group(self, name: str) -> bool:
        with self._tx() as c:
            return c.execute("INSERT OR IGNORE INTO groups VALUES (?, ?)", (name, time.time())).rowcount > 0

    def group_exists(self, name: str) -> bool:
        return bool(self._query("SELECT 1 FROM groups WHERE name = ?", (name,)))

    def add_member(self, group: str, user: str) -> bool:
        with self._tx() as c:
            if not c.execute("SELECT 1 FROM groups WHERE name = ?", (group,)).fetchone():
                raise StoreError(f"no such group: {group}")
            if not c.execute("SELECT 1 FROM users WHERE name = ?", (user,)).fetchone():
                raise StoreError(f"no such user: {user}")
            return c.execute("INSERT OR IGNORE INTO group_members VALUES (?, ?)", (group, user)).rowcount > 0

    def remove_member(self, group: str, user: str) -> bool:
        with self._tx() as c:
            return (
                c.execute("DELETE FROM group_members WHERE group_name = ? AND user_name = ?", (group, user)).rowcount
                > 0
            )

    def list_groups(self) -> dict[str, list[str]]:
        groups: dict[str, list[str]] = {r[0]: [] for r in self._query("SELECT name FROM groups ORDER BY name")}
        for group, user in self._query("SELECT group_name, user_name FROM group_members ORDER BY user_name"):
            groups[group].append(user)
        return groups

    # --- data ------------------------------------------------------------------

    def get_data(self, data_id: str) -> DataRow | None:
        rows = self._query(f"SELECT {_DATA_COLUMNS} FROM data d WHERE d.id = ?", (data_id,))
        return _data(rows[0]) if rows else None

    def data_in_state(self, state: str) -> list[DataRow]:
        return [_data(r) for r in self._query(f"SELECT {_DATA_COLUMNS} FROM data d WHERE d.state = ?", (state,))]

    def all_data_ids(self) -> set[str]:
        return {r[0] for r in self._query("SELECT id FROM data")}

    def level_of(self, data_id: str, user: str) -> int:
        """The permission level ``user`` holds on ``data_id`` (0 none, 1 read, 2 edit, 3 share).

        Owners hold share; public data gives every authenticated user read;
        group members inherit their groups' grants; the highest grant wins.
        """
        rows = self._query("SELECT owner, private FROM data WHERE id = ?", (data_id,))
        if not rows:
            return 0
        owner, private = rows[0]
        if owner == user:
            return 3
        level = 0 if private else 1
        grant = self._query(
            """SELECT MAX(level) FROM grants WHERE data_id = :id AND (
                   (kind = 'user' AND name = :user) OR
                   (kind = 'group' AND name IN
                        (SELECT group_name FROM group_members WHERE user_name = :user)))""",
            {"id": data_id, "user": user},
        )
        return max(level, grant[0][0] or 0)

    def readable_ready(self, data_ids: Sequence[str], user: str) -> dict[str, DataRow]:
        """Those of ``data_ids`` that are ready and readable by ``user``."""
        found: dict[str, DataRow] = {}
        with self._lock:
            for data_id in data_ids:
                rows = self._conn.execute(
                    f"SELECT {_DATA_COLUMNS} FROM data d WHERE d.id = :id AND d.state = 'ready' AND {_READABLE_SQL}",
                    {"id": data_id, "user": user},
                ).fetchall()
                if rows:
                    found[data_id] = _data(rows[0])
        return found

    def commit_chunk(
        self,
        data_id: str,
        offset: int,
        chunk: ChunkRow | None,
        *,
        new: DataRow | None = None,
        final_checksum: str | None = None,
        tree: Sequence[TreeFile] = (),
        ready: bool = False,
        kind: DataKind = GENERIC_KIND,
        sample: NewSample | None = None,
    ) -> None:
        """Record one received chunk in one transaction.

        ``new`` creates the upload's row (first chunk); ``final_checksum``
        marks the upload complete and verified (``finalizing``: its bytes may
        still sit in the partial folder), with the unpacked ``tree`` of a
        directory upload. Doing all of it in one transaction means a crash
        leaves either the chunk unrecorded (the client resends it) or the
        upload complete (start-up recovery finishes the move). ``ready``: the
        bytes are in the data folder already (a whole upload in one request),
        so the upload is recorded ``ready`` at once. ``kind``: the new row's
        category (and first multiplexed file); ``sample``: with the final
        chunk, the sample to create and link this upload into, in the same
        transaction.

        :raises SampleRefused: ``sample`` breaks a rule; nothing is recorded.
        :raises StoreError: if the upload is not open at ``offset`` (the
            caller's lock makes this a bug, not a race).
        """
        now = time.time()
        size = chunk.size if chunk else 0
        with self._tx() as c:
            if new is not None:
                c.execute(
                    "INSERT INTO data (id, owner, filename, data_type, is_directory, private, state, size, "
                    "checksum, created, updated, error, category, reads1) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        new.id,
                        new.owner,
                        new.filename,
                        new.data_type,
                        int(new.is_directory),
                        int(new.private),
                        UPLOADING,
                        size,
                        None,
                        now,
                        now,
                        None,
                        kind.category,
                        kind.reads1,
                    ),
                )
            else:
                changed = c.execute(
                    "UPDATE data SET size = size + ?, updated = ? WHERE id = ? AND state = 'uploading' AND size = ?",
                    (size, now, data_id, offset),
                ).rowcount
                if not changed:
                    raise StoreError(f"upload {data_id} does not hold {offset} bytes")
            if chunk is not None:
                c.execute(
                    "INSERT INTO chunks VALUES (?, ?, ?, ?)",
                    (data_id, chunk.offset, chunk.size, chunk.checksum),
                )
            if final_checksum is not None:
                c.execute(
                    "UPDATE data SET state = ?, checksum = ? WHERE id = ?",
                    (READY if ready else FINALIZING, final_checksum, data_id),
                )
                c.executemany(
                    "INSERT INTO tree_files VALUES (?, ?, ?, ?)",
                    [(data_id, f.path, f.size, f.checksum) for f in tree],
                )
                if sample is not None:
                    self._link_sample(c, sample, data_id)

    def replace_tree(self, data_id: str, tree: Sequence[TreeFile]) -> None:
        with self._tx() as c:
            c.execute("DELETE FROM tree_files WHERE data_id = ?", (data_id,))
            c.executemany(
                "INSERT INTO tree_files VALUES (?, ?, ?, ?)",
                [(data_id, f.path, f.size, f.checksum) for f in tree],
            )

    def set_state(self, data_id: str, state: str, error: str | None = None) -> None:
        with self._tx() as c:
            c.execute(
                "UPDATE data SET state = ?, error = ?, updated = ? WHERE id = ?",
                (state, error, time.time(), data_id),
            )

    def chunks(self, data_id: str) -> list[ChunkRow]:
        return [
            ChunkRow(*r)
            for r in self._query(
                "SELECT offset, size, checksum FROM chunks WHERE data_id = ? ORDER BY offset", (data_id,)
            )
        ]

    def tree(self, data_id: str, limit: int, offset: int) -> tuple[int, list[TreeFile]]:
        total = self._query("SELECT COUNT(*) FROM tree_files WHERE data_id = ?", (data_id,))[0][0]
        rows = self._query(
            "SELECT path, size, checksum FROM tree_files WHERE data_id = ? ORDER BY path LIMIT ? OFFSET ?",
            (data_id, limit, offset),
        )
        return total, [TreeFile(*r) for r in rows]

    def set_private(self, data_id: str, private: bool) -> None:
        with self._tx() as c:
            c.execute("UPDATE data SET private = ?, updated = ? WHERE id = ?", (int(private), time.time(), data_id))

    def set_grant(self, data_id: str, kind: str, name: str, level: int) -> None:
        """Grant ``level`` (1-3) to a user or group; level 0 removes the grant."""
        with self._tx() as c:
            if level == 0:
                c.execute("DELETE FROM grants WHERE data_id = ? AND kind = ? AND name = ?", (data_id, kind, name))
            else:
                c.execute(
                    "INSERT INTO grants VALUES (?, ?, ?, ?) ON CONFLICT (data_id, kind, name) "
                    "DO UPDATE SET level = excluded.level",
                    (data_id, kind, name, level),
                )

    def grants(self, data_id: str) -> list[tuple[str, str, int]]:
        return [
            tuple(r)
            for r in self._query(
                "SELECT kind, name, level FROM grants WHERE data_id = ? ORDER BY kind, name", (data_id,)
            )
        ]

    def _search_where(self, flt: SearchFilter) -> tuple[str, dict[str, Any]]:
        clauses = ["d.state = 'ready'", _READABLE_SQL]
        params: dict[str, Any] = {"user": flt.user}
        if flt.owned:
            clauses.append("d.owner = :user")
        if flt.filename:
            clauses.append("instr(casefold(d.filename), :fname) > 0")
            params["fname"] = flt.filename.casefold()
        for column, op, key in (
            ("created", ">", "created_gt"),
            ("created", "<", "created_lt"),
            ("size", ">", "size_gt"),
            ("size", "<", "size_lt"),
        ):
            value = getattr(flt, key)
            if value is not None:
                clauses.append(f"d.{column} {op} :{key}")
                params[key] = value
        return " AND ".join(clauses), params

    def search(self, flt: SearchFilter, limit: int, offset: int) -> tuple[int, list[DataRow]]:
        """One page of ready data readable by the user, newest first, and the total."""
        where, params = self._search_where(flt)
        total = self._query(f"SELECT COUNT(*) FROM data d WHERE {where}", params)[0][0]
        rows = self._query(
            f"SELECT {_DATA_COLUMNS} FROM data d WHERE {where} "
            "ORDER BY d.created DESC, d.id LIMIT :limit OFFSET :offset",
            {**params, "limit": limit, "offset": offset},
        )
        return total, [_data(r) for r in rows]

    def search_names(self, flt: SearchFilter) -> list[tuple[str, str]]:
        """(id, filename) of every match, newest first: the regex filter runs elsewhere."""
        where, params = self._search_where(flt)
        return [
            (r[0], r[1])
            for r in self._query(
                f"SELECT d.id, d.filename FROM data d WHERE {where} ORDER BY d.created DESC, d.id", params
            )
        ]

    def data_by_ids(self, ids: Sequence[str]) -> list[DataRow]:
        rows: list[DataRow] = []
        for data_id in ids:
            row = self.get_data(data_id)
            if row is not None:
                rows.append(row)
        return rows

    # --- jobs ------------------------------------------------------------------

    def create_job(self, job: JobRow) -> None:
        with self._tx() as c:
            c.execute(
                "INSERT INTO jobs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    job.id,
                    job.owner,
                    job.name,
                    json.dumps(job.items),
                    job.status,
                    job.progress,
                    job.size,
                    job.checksum,
                    job.error,
                    job.created,
                    job.completed,
                    job.expires,
                ),
            )

    def get_job(self, job_id: str) -> JobRow | None:
        rows = self._query("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return _job(rows[0]) if rows else None

    def jobs_in(self, statuses: Sequence[str]) -> list[JobRow]:
        marks = ",".join("?" * len(statuses))
        return [
            _job(r)
            for r in self._query(f"SELECT * FROM jobs WHERE status IN ({marks}) ORDER BY created", tuple(statuses))
        ]

    def update_job(self, job_id: str, **fields: Any) -> None:
        allowed = {"status", "progress", "size", "checksum", "error", "completed", "expires"}
        if not fields or set(fields) - allowed:
            raise ValueError(f"bad job fields: {sorted(fields)}")
        assignments = ", ".join(f"{name} = :{name}" for name in fields)
        with self._tx() as c:
            c.execute(f"UPDATE jobs SET {assignments} WHERE id = :id", {**fields, "id": job_id})

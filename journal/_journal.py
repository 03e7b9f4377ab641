"""The journal: its one interface over two backends (SQLite, PostgreSQL).

Everything else calls the named operations below; the SQL is written once,
in the dialect both backends accept (:mod:`._backend`), and each backend
module (:mod:`._sqlite`, :mod:`._postgres`) owns its connection, its
migrations and its locking. Methods are synchronous and thread-safe; the
async engine calls them from worker threads. Hot paths never commit per
chunk: progress arrives as a :class:`JournalBatch` that :meth:`Journal.commit`
applies in one transaction, after ``fdatasync``-ing the files whose chunks it
marks written.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import secrets
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, ClassVar

from ._backend import Backend, Params, Transaction
from ._batch import JournalBatch
from ._errors import JournalError
from ._inventory import InventoryTables
from ._leases import Lease, LeaseTables, resolve_host_id
from ._location import JournalLocation, parse_journal_location
from ._records import (
    ChunkRecord,
    FileRecord,
    NewFile,
    TransferRecord,
    TransferSummary,
    file_record,
    file_row,
    transfer_record,
)
from ._samples import SampleTables
from ._states import (
    ChunkState,
    FileState,
    TransferState,
    legal_changes,
)


class Journal(InventoryTables, SampleTables, LeaseTables):
    """A flowxfer journal: an SQLite file or a PostgreSQL database. Open with :meth:`open`; close when done.

    :raises JournalCorruptError: (from :meth:`open`) the file is not a flowxfer journal.
    :raises JournalVersionError: (from :meth:`open`) it was written by a newer flowxfer.
    :raises JournalUnavailableError: (from any method, PostgreSQL) the server cannot be reached now.
    """

    def __init__(self, backend: Backend, host: str) -> None:
        self._backend = backend
        self.location: JournalLocation = backend.location
        #: The journal file (SQLite); None for a database server.
        self.path: Path | None = backend.location.path
        #: Who writes here: recorded on every row this journal writes and on its leases.
        self.host = host
        self.pid = os.getpid()
        #: The leases every write of this journal is fenced by (:meth:`fenced`); none: unfenced.
        self.fences: tuple[Lease, ...] = ()

    # -- opening -------------------------------------------------------

    @classmethod
    def open(
        cls,
        location: Path | str | JournalLocation | None = None,
        *,
        busy_timeout: float = 30.0,
        host_id: str | None = None,
        connect_timeout: float = 10.0,
        max_connections: int = 8,
    ) -> Journal:
        """Open (creating or migrating) the journal at ``location``: a path, a URL, or None (the default path).

        See :func:`parse_journal_location` for what a string may be. ``busy_timeout``: how long a
        call waits for a lock another process or host holds (then :class:`JournalBusyError`).
        ``connect_timeout``: how long a PostgreSQL call waits for a connection before
        :class:`JournalUnavailableError`. ``host_id``: this host's name in a shared journal
        (default ``$FLOWXFER_HOST_ID``, else the hostname; :class:`HostIdError` if it cannot name one).
        """
        host = resolve_host_id(host_id)
        where = parse_journal_location(location)
        backend: Backend
        if where.backend == "postgresql":
            from ._postgres import PostgresBackend  # psycopg loads only for a PostgreSQL journal

            backend = PostgresBackend.open(
                where, connect_timeout=connect_timeout, busy_timeout=busy_timeout, max_connections=max_connections
            )
        else:
            from ._sqlite import SqliteBackend

            backend = SqliteBackend.open(where, busy_timeout=busy_timeout)
        return cls(backend, host)

    #: The process ends right after it closes its journals, without the interpreter's teardown
    #: (the console script, :func:`flowxfer.cli.run`): an SQLite journal's WAL is then synced and
    #: kept instead of checkpointed and deleted (:meth:`SqliteBackend.leave <._sqlite.SqliteBackend.leave>`).
    #: A library caller's process goes on: its :meth:`close` closes.
    process_ends_at_close: ClassVar[bool] = False

    def close(self) -> None:
        if self.process_ends_at_close and self.location.backend == "sqlite":
            from ._sqlite import SqliteBackend

            assert isinstance(self._backend, SqliteBackend)
            self._backend.leave()
        else:
            self._backend.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Journal {self.location.display} host={self.host!r}>"

    def fenced(self, *leases: Lease) -> Journal:
        """This journal with every write fenced by ``leases``: it writes nothing once one is another's.

        For the work a lease holds (a transfer): a holder frozen or cut off for longer than its TTL
        (SIGSTOP, a VM pause, a long GC) whose work another host took over must not write beside
        the new holder when it wakes -- mark the transfer done, reset a file, record a sample
        twice. Every write transaction of the returned journal (files, samples, transfer state and
        end, inventory, packs, progress batches) checks the leases inside itself (:meth:`_fence`),
        so either it commits before a takeover or it writes nothing and raises :class:`LeaseLost`.
        Several leases: a transfer's own and one that spans it (``sync --samples``' visit of a run).
        Leases and rate-limit budgets are not fenced: a lease checks its own token, and requests
        spent are spent whoever holds the work. The view shares this journal's connections:
        close this journal, not the view.
        """
        view = copy.copy(self)
        view.fences = (*self.fences, *leases)
        return view

    @contextmanager
    def _immediate(self) -> Iterator[Transaction]:
        """A write transaction, atomic across processes and hosts, fenced by :attr:`fences`.

        :raises LeaseLost: a fence's lease is another holder's now; nothing was written.
        """
        with self._losing(self.fences), self._backend.transaction() as conn:
            self._fence(conn, self.fences)
            yield conn

    def _unfenced(self) -> AbstractContextManager[Transaction]:
        """A write transaction whatever :attr:`fences` hold (leases, budgets: see :meth:`fenced`)."""
        return self._backend.transaction()

    def _read(self, sql: str, params: Params = ()) -> list[dict[str, Any]]:
        return self._backend.read(sql, params)

    def check_integrity(self) -> list[str]:
        """What is wrong with the journal, for ``doctor``: an empty list when it is healthy.

        SQLite: ``PRAGMA quick_check``. PostgreSQL: the server answers and the schema is current.
        """
        return self._backend.check_integrity()

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
        with self._unfenced() as conn:
            # Hosts running the same command at once: the second waits here and finds the first's transfer.
            conn.lock(f"command:{params_key}")
            row = None
            if resumable:
                row = conn.execute(
                    "SELECT id FROM transfers WHERE params_key = ? AND status != ? ORDER BY created DESC LIMIT 1",
                    (params_key, TransferState.COMPLETED.value),
                ).fetchone()
            if row is not None:
                transfer_id = row[0]
                lease = self._take_lease(conn, f"transfer:{transfer_id}", what, stale_after)
                conn.execute(
                    "UPDATE transfers SET status = ?, updated = ?, finished = NULL, error = NULL, host = ? "
                    "WHERE id = ?",
                    (TransferState.RUNNING.value, now, self.host, transfer_id),
                )
                resumed = True
            else:
                transfer_id = _new_id()
                lease = self._take_lease(conn, f"transfer:{transfer_id}", what, stale_after)
                conn.execute(
                    "INSERT INTO transfers (id, kind, status, server, username, params, params_key, "
                    "created, updated, host) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
                        self.host,
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
        with self._unfenced() as conn:
            if conn.execute("SELECT 1 FROM transfers WHERE id = ?", (transfer_id,)).fetchone() is None:
                raise KeyError(transfer_id)
            lease = self._take_lease(conn, f"transfer:{transfer_id}", what, stale_after)
            conn.execute(
                "UPDATE transfers SET status = ?, updated = ?, finished = NULL, error = NULL, host = ? WHERE id = ?",
                (TransferState.RUNNING.value, now, self.host, transfer_id),
            )
        record = self.get_transfer(transfer_id)
        assert record is not None
        return record, lease

    def finish_transfer(self, transfer_id: str, status: TransferState, error: str | None = None) -> None:
        now = time.time()
        finished = None if status in (TransferState.RUNNING, TransferState.INTERRUPTED) else now
        with self._immediate() as conn:
            conn.execute(
                "UPDATE transfers SET status = ?, updated = ?, finished = ?, error = ?, host = ? WHERE id = ?",
                (status.value, now, finished, error, self.host, transfer_id),
            )

    def update_transfer_state(self, transfer_id: str, **changes: Any) -> dict[str, Any]:
        """Merge ``changes`` into a transfer's kind-specific state (e.g. a bulk job id); durable on return."""
        with self._immediate() as conn:
            row = conn.execute("SELECT state FROM transfers WHERE id = ?" + conn.for_update, (transfer_id,)).fetchone()
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
        return transfer_record(rows[0]) if rows else None

    def find_transfers(self, prefix: str) -> list[TransferRecord]:
        """Transfers whose id starts with ``prefix`` (ids may be abbreviated, like git's)."""
        escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        rows = self._read("SELECT * FROM transfers WHERE id LIKE ? ESCAPE '\\'", (escaped + "%",))
        return [transfer_record(row) for row in rows]

    def list_transfers(self, *, include_finished: bool = False, limit: int | None = None) -> list[TransferRecord]:
        sql = "SELECT * FROM transfers"
        if not include_finished:
            sql += " WHERE status != 'completed'"
        sql += " ORDER BY updated DESC"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [transfer_record(row) for row in self._read(sql)]

    def unfinished_transfers(self) -> list[TransferRecord]:
        """Transfers ``resume`` would continue, oldest first."""
        rows = self._read("SELECT * FROM transfers WHERE status != 'completed' ORDER BY created")
        return [transfer_record(row) for row in rows]

    def summary(self, transfer_id: str) -> TransferSummary:
        rows = self._read(
            # CAST: PostgreSQL sums BIGINTs as NUMERIC (Python Decimal).
            "SELECT status, count(*) AS n, CAST(coalesce(sum(size), 0) AS BIGINT) AS size, "
            "CAST(coalesce(sum(bytes_done), 0) AS BIGINT) AS done FROM files WHERE transfer_id = ? GROUP BY status",
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
                added += conn.executemany(
                    "INSERT INTO files (transfer_id, local_path, remote_name, data_id, size, mtime_ns, checksum, "
                    "status, error, extra, updated, host) VALUES (?,?,?,?,?,?,?,?,?,?,?,?) "
                    "ON CONFLICT (transfer_id, local_path) DO NOTHING",
                    batch,
                )
            batch.clear()

        for f in files:
            batch.append(file_row(transfer_id, f, now, self.host))
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
        return [file_record(row) for row in self._read(sql, params)]

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
        return file_record(rows[0]) if rows else None

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

    def commit(self, batch: JournalBatch, fence: Lease | None = None) -> None:
        """Apply a batch in one transaction, after syncing the files it vouches for.

        The order is the invariant: bytes reach the disk before the journal
        says they did, so a crash between the two costs a refetch, never a hole.
        ``fence``: the transfer's lease (default: :attr:`fences`); when it is no longer ours the
        batch writes nothing and :class:`LeaseLost` is raised (see :meth:`_fence`).
        """
        fences = self.fences if fence is None else (fence,)
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
        # On a server the whole batch is one round trip, one implicit transaction (a blind one): its
        # state changes are checked in the database before its writes, and an illegal one rolls all
        # of it back. A pack's row is written after reading the one it replaces: not blind.
        with self._losing(fences), self._backend.transaction(blind=not batch.packs) as conn:
            with conn.pipeline():
                self._fence(conn, fences)
                for file_id, plan in batch.chunk_plans.items():
                    conn.execute("DELETE FROM chunks WHERE file_id = ?", (file_id,))
                    conn.executemany(
                        "INSERT INTO chunks (file_id, idx, \"offset\", size, state) VALUES (?, ?, ?, ?, 'planned')",
                        [(file_id, idx, offset, size) for idx, (offset, size) in enumerate(plan)],
                    )
                # Where the database can fail a statement from an expression, each chunk's change is
                # checked by the update that makes it: no second lookup of the batch's chunks.
                inline = conn.refusal("'chunk cannot go from ' || chunks.state || ' to ' || v.column5")
                _refuse_illegal_changes(conn, batch, chunks=inline is None)
                self._write_batch(conn, batch, now, inline)
            for pack in batch.packs.values():  # after the file rows: a pack's cleanup looks at their status
                self._write_pack(conn, pack, now)

    def _write_batch(self, conn: Transaction, batch: JournalBatch, now: float, chunk_refusal: str | None) -> None:
        """The batch's writes, after its transitions were checked: nothing here reads a result.

        ``chunk_refusal``: :meth:`Transaction.refusal`'s expression, when the chunks' first changes
        are to be checked by their update (each row carries it, ``v.column5``), else None.
        """
        if batch.chunk_updates:
            rows: list[tuple[Any, ...]] = [
                (file_id, idx, state.value, checksum)
                for (file_id, idx), (state, checksum) in batch.chunk_updates.items()
            ]
            check = None
            if chunk_refusal is not None:
                rows = [(*row, batch.chunk_from[row[0], row[1]].value) for row in rows]
                check = ("TEXT", f"{_legal('chunks.state', 'v.column5', ChunkState)} OR {chunk_refusal}")
            _bulk_update(
                conn,
                "chunks",
                {"file_id": "BIGINT", "idx": "BIGINT"},
                {"state": "TEXT", "checksum": "TEXT"},
                rows,
                assign={"checksum": "coalesce(v.column4, chunks.checksum)"},
                check=check,
            )
        if batch.verified_files:
            conn.executemany(
                "UPDATE chunks SET state = 'verified' WHERE file_id = ? AND state = 'acked'",
                [(file_id,) for file_id in batch.verified_files],
            )
        _update_files(conn, batch.file_updates, {"updated": now, "host": self.host})
        if batch.inventory:
            conn.executemany(
                "INSERT INTO inventory (server, username, direction, local_path, remote, size, mtime_ns, "
                "checksum, data_id, superseded, recorded, host) VALUES (?,?,?,?,?,?,?,?,?,?,?,?) "
                "ON CONFLICT (server, username, direction, local_path, remote) DO UPDATE SET "
                "size = excluded.size, mtime_ns = excluded.mtime_ns, checksum = excluded.checksum, "
                "data_id = excluded.data_id, superseded = excluded.superseded, recorded = excluded.recorded, "
                "host = excluded.host",
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
                        self.host,
                    )
                    for r in batch.inventory.values()
                ],
            )


# --- helpers -----------------------------------------------------------------

#: The columns an update may set, with their types (the casts a bulk update's VALUES need).
_FILE_COLUMNS = {
    "local_path": "TEXT",
    "remote_name": "TEXT",
    "data_id": "TEXT",
    "size": "BIGINT",
    "mtime_ns": "BIGINT",
    "chunk_size": "BIGINT",
    "checksum": "TEXT",
    "etag": "TEXT",
    "status": "TEXT",
    "bytes_done": "BIGINT",
    "attempts": "BIGINT",
    "error": "TEXT",
    "extra": "TEXT",
    "updated": "DOUBLE PRECISION",
    "host": "TEXT",
}


def _bulk_update(
    conn: Transaction,
    table: str,
    keys: dict[str, str],
    columns: dict[str, str],
    rows: Sequence[Sequence[Any]],
    assign: dict[str, str] | None = None,
    check: tuple[str, str] | None = None,
) -> None:
    """Update many rows of ``table`` in one statement (``UPDATE ... FROM`` the rows' values).

    ``keys`` and ``columns`` name the row's key columns then the columns to set, with their SQL
    types; each row gives their values in that order. ``assign`` overrides how a column is set
    (``v.columnN`` is the row's N-th value). One statement instead of one per row: on a database
    server each statement is a round of parsing, planning and protocol, the larger part of a
    small update's cost; SQLite runs it as fast as the prepared per-row statement. ``check``: the
    SQL type of one more value each row ends with, and a condition every matched row must meet.
    """
    head, tail, types = _bulk_update_sql(
        table, tuple(keys.items()), tuple(columns.items()), tuple((assign or {}).items()), check
    )
    for source, params in conn.row_source(types, rows):
        conn.execute(head + source + tail, params)


@functools.lru_cache(maxsize=64)
def _bulk_update_sql(
    table: str,
    keys: tuple[tuple[str, str], ...],
    columns: tuple[tuple[str, str], ...],
    assign: tuple[tuple[str, str], ...],
    check: tuple[str, str] | None,
) -> tuple[str, str, tuple[str, ...]]:
    """:func:`_bulk_update`'s statement, before and after its rows' table, and the rows' SQL types.

    Made once per shape: a batch's updates are the same few on every commit.
    """
    names = [name for name, _ in (*keys, *columns)]
    value = {name: f"v.column{number}" for number, name in enumerate(names, 1)}
    sets = ", ".join(f"{name} = {dict(assign).get(name, value[name])}" for name, _ in columns)
    match = " AND ".join(f"{table}.{name} = {value[name]}" for name, _ in keys)
    types = tuple(kind for _, kind in (*keys, *columns))
    if check is not None:
        types += (check[0],)
        match += f" AND ({check[1]})"
    return f"UPDATE {table} SET {sets} FROM ", f" WHERE {match}", types


def _refuse_illegal_changes(conn: Transaction, batch: JournalBatch, *, chunks: bool) -> None:
    """Check the batch's first state changes against their rows, in the database, before its writes.

    ``chunks``: the chunks' too (not when their update checks them, see :meth:`Journal.commit`).

    :raises IllegalTransition: (when the transaction ends, or at once) a change is not legal from
        its row's state; nothing of the batch is written.
    """
    files = [(file_id, new.value) for file_id, new in batch.file_from.items()]
    for source, params in conn.row_source(["BIGINT", "TEXT"], files):
        conn.refuse_if(
            "SELECT 'file cannot go from ' || files.status || ' to ' || v.column2 "
            f"FROM files JOIN {source} ON files.id = v.column1 "
            f"WHERE NOT ({_legal('files.status', 'v.column2', FileState)})",
            params,
        )
    changes = [(file_id, idx, new.value) for (file_id, idx), new in batch.chunk_from.items()] if chunks else []
    for source, params in conn.row_source(["BIGINT", "BIGINT", "TEXT"], changes):
        conn.refuse_if(
            "SELECT 'chunk cannot go from ' || chunks.state || ' to ' || v.column3 "
            f"FROM chunks JOIN {source} ON chunks.file_id = v.column1 AND chunks.idx = v.column2 "
            f"WHERE NOT ({_legal('chunks.state', 'v.column3', ChunkState)})",
            params,
        )


@functools.lru_cache(maxsize=16)
def _legal(current: str, new: str, machine: type[FileState] | type[ChunkState]) -> str:
    """SQL true when ``current -> new`` stays put or is one of the machine's legal changes (:mod:`._states`)."""
    legal = ", ".join(f"'{a}>{b}'" for a, b in legal_changes(machine))
    return f"{current} = {new} OR {current} || '>' || {new} IN ({legal})"


def _update_files(conn: Transaction, updates: dict[int, dict[str, Any]], common: dict[str, Any]) -> None:
    """Apply each file's column changes plus ``common``; files changing the same columns share one statement."""
    groups: dict[tuple[str, ...], list[tuple[Any, ...]]] = {}
    for file_id, fields in updates.items():
        unknown = set(fields) - _FILE_COLUMNS.keys()
        if unknown:
            raise ValueError(f"unknown file columns: {sorted(unknown)}")
        values = {**fields, **common}
        groups.setdefault(tuple(values), []).append(
            (file_id, *(json.dumps(v) if k == "extra" else v for k, v in values.items()))
        )
    for columns, rows in groups.items():
        _bulk_update(conn, "files", {"id": "BIGINT"}, {c: _FILE_COLUMNS[c] for c in columns}, rows)


def _new_id() -> str:
    """Short, typable, unique enough ids (like git's abbreviated hashes)."""
    return secrets.token_hex(5)

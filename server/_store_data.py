"""The store's SQL for data records, their chunks, their unpacked trees and their grants.

A part of :class:`._store.Store` over the shared connection (:class:`._store_base.StoreBase`):
what the upload path commits chunk by chunk, and what the data, download and
permission routes read. Searching the data is :mod:`._store_search`'s.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ._store_base import StoreBase, StoreError
from ._store_samples import GENERIC_KIND, DataKind, NewSample, link_sample

# Data states. Only 'ready' is ever visible as data.
UPLOADING = "uploading"
FINALIZING = "finalizing"
READY = "ready"
FAILED = "failed"


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


DATA_COLUMNS = (
    "d.id, d.owner, d.filename, d.data_type, d.is_directory, d.private, d.state, d.size, "
    "d.checksum, d.created, d.updated, d.error"
)

# Readable by :user: owner, public, or a grant to the user or one of their groups.
READABLE_SQL = """(d.owner = :user OR d.private = 0 OR EXISTS (
    SELECT 1 FROM grants g WHERE g.data_id = d.id AND (
        (g.kind = 'user' AND g.name = :user) OR
        (g.kind = 'group' AND g.name IN (SELECT group_name FROM group_members WHERE user_name = :user)))))"""


def data_row(row: Sequence[Any]) -> DataRow:
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


class DataStore(StoreBase):
    """Data records and what hangs off them: chunks, tree files, grants."""

    def get_data(self, data_id: str) -> DataRow | None:
        rows = self._query(f"SELECT {DATA_COLUMNS} FROM data d WHERE d.id = ?", (data_id,))
        return data_row(rows[0]) if rows else None

    def data_in_state(self, state: str) -> list[DataRow]:
        return [data_row(r) for r in self._query(f"SELECT {DATA_COLUMNS} FROM data d WHERE d.state = ?", (state,))]

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
                    f"SELECT {DATA_COLUMNS} FROM data d WHERE d.id = :id AND d.state = 'ready' AND {READABLE_SQL}",
                    {"id": data_id, "user": user},
                ).fetchall()
                if rows:
                    found[data_id] = data_row(rows[0])
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
                    link_sample(c, sample, data_id)

    def open_parallel(self, row: DataRow, total: int, chunk_size: int) -> None:
        """Record a new parallel-chunk upload [ext]: its data row (no bytes yet) and its slots' plan."""
        with self._tx() as c:
            c.execute(
                "INSERT INTO data (id, owner, filename, data_type, is_directory, private, state, size, "
                "checksum, created, updated, error) VALUES (?, ?, ?, ?, ?, ?, ?, 0, NULL, ?, ?, NULL)",
                (
                    row.id,
                    row.owner,
                    row.filename,
                    row.data_type,
                    int(row.is_directory),
                    int(row.private),
                    UPLOADING,
                    row.created,
                    row.updated,
                ),
            )
            c.execute("INSERT INTO parallel_uploads VALUES (?, ?, ?)", (row.id, total, chunk_size))

    def chunk_at(self, data_id: str, offset: int) -> ChunkRow | None:
        rows = self._query(
            "SELECT offset, size, checksum FROM chunks WHERE data_id = ? AND offset = ?", (data_id, offset)
        )
        return ChunkRow(*rows[0]) if rows else None

    def parallel_plan(self, data_id: str) -> tuple[int, int] | None:
        """``(total, chunk_size)`` of a parallel-chunk upload, None for a strict-order one."""
        rows = self._query("SELECT total, chunk_size FROM parallel_uploads WHERE data_id = ?", (data_id,))
        return (rows[0][0], rows[0][1]) if rows else None

    def commit_parallel_chunk(self, data_id: str, chunk: ChunkRow) -> ChunkRow | None:
        """Record a chunk of a parallel-chunk upload in its slot, unless the slot is taken.

        :returns: None when recorded; else the chunk the slot already holds
            (the caller compares: the same bytes again, or different ones).
        :raises StoreError: the upload is not open any more.
        """
        with self._tx() as c:
            held = c.execute(
                "SELECT offset, size, checksum FROM chunks WHERE data_id = ? AND offset = ?", (data_id, chunk.offset)
            ).fetchall()
            if held:
                return ChunkRow(*held[0])
            changed = c.execute(
                "UPDATE data SET size = size + ?, updated = ? WHERE id = ? AND state = 'uploading'",
                (chunk.size, time.time(), data_id),
            ).rowcount
            if not changed:
                raise StoreError(f"upload {data_id} is not open")
            c.execute("INSERT INTO chunks VALUES (?, ?, ?, ?)", (data_id, chunk.offset, chunk.size, chunk.checksum))
        return None

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

    def data_by_ids(self, ids: Sequence[str]) -> list[DataRow]:
        rows: list[DataRow] = []
        for data_id in ids:
            row = self.get_data(data_id)
            if row is not None:
                rows.append(row)
        return rows

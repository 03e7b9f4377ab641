"""The journal's inventory half: what is known to be on each server, sync's planning, packed tars.

Mixed into :class:`~._journal.Journal` (one object, one backend). Lookups go
in bulk (one query per 500 keys): a 10,000-file unchanged re-run must not
pay one round trip per file, least of all to a database server.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from ._backend import Params, Transaction
from ._records import InventoryRecord, NewFile, file_row, inventory_record

if TYPE_CHECKING:
    from ._pack_records import PackMember, PackRecord


class InventoryTables:
    """Inventory, sync planning and packs (see the module's docstring)."""

    host: str

    # Provided by Journal.
    def _immediate(self) -> AbstractContextManager[Transaction]:
        raise NotImplementedError

    def _read(self, sql: str, params: Params = ()) -> list[dict[str, Any]]:
        raise NotImplementedError

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
                    record = inventory_record(row)
                    found[(record.local_path, record.remote)] = record
        return found

    def downloaded_ids(self, server: str, username: str, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` this journal has downloaded before (to any path): their files may be there.

        A download by id ([ext]) fetches a file's first bytes with its description, from the
        hourly download budget; for an id downloaded before, the plan may find it identical and
        skip it, so it is described by ``/data`` instead (an API call, no bytes).
        """
        found: set[str] = set()
        for start in range(0, len(ids), 500):
            part = list(dict.fromkeys(ids[start : start + 500]))
            rows = self._read(
                "SELECT DISTINCT data_id FROM inventory WHERE server = ? AND username = ? AND direction = 'down' "
                f"AND data_id IN ({','.join('?' * len(part))})",
                [server, username, *part],
            )
            found.update(row["data_id"] for row in rows)
        return found

    def inventory_for_path(self, server: str, username: str, direction: str, local_path: str) -> list[InventoryRecord]:
        """Every record of one local path (any remote name): sync's change detection."""
        rows = self._read(
            "SELECT * FROM inventory WHERE server = ? AND username = ? AND direction = ? AND local_path = ?",
            (server, username, direction, local_path),
        )
        return [inventory_record(row) for row in rows]

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
                yield inventory_record(row)
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
                updated = conn.executemany(
                    "UPDATE files SET remote_name = ?, size = ?, mtime_ns = ?, plan_key = ?, extra = ?, "
                    "status = ?, data_id = ?, checksum = ?, chunk_size = 0, bytes_done = 0, etag = NULL, "
                    "error = NULL, attempts = 0, updated = ?, host = ? WHERE transfer_id = ? AND local_path = ? AND "
                    "(remote_name IS DISTINCT FROM ? OR size IS DISTINCT FROM ? OR mtime_ns IS DISTINCT FROM ? "
                    "OR plan_key IS DISTINCT FROM ?)",
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
                            self.host,
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
                changed += updated + len(batch) - existing
                conn.executemany(
                    "INSERT INTO files (transfer_id, local_path, remote_name, data_id, size, mtime_ns, checksum, "
                    "status, error, extra, updated, host, plan_gen, plan_key) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?) "
                    "ON CONFLICT (transfer_id, local_path) DO UPDATE SET plan_gen = excluded.plan_gen",
                    [(*file_row(transfer_id, f, now, self.host), generation, key) for f, key in batch],
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
                    "INSERT INTO pack_members (manifest, arcname, local_path, size, mtime_ns) "
                    "VALUES (?,?,?,?,?) ON CONFLICT (manifest, arcname) DO NOTHING",
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
        from ._pack_records import PackMember

        return [PackMember(r["arcname"], r["local_path"], r["size"], r["mtime_ns"]) for r in rows]

    def lookup_packs(self, server: str, username: str, local_paths: Sequence[str]) -> dict[str, PackRecord]:
        """Known packs for many virtual tar paths at once."""
        from ._pack_records import pack_record

        found: dict[str, PackRecord] = {}
        for start in range(0, len(local_paths), 500):
            part = list(local_paths[start : start + 500])
            marks = ",".join("?" * len(part))
            rows = self._read(
                f"SELECT * FROM packs WHERE server = ? AND username = ? AND local_path IN ({marks})",
                [server, username, *part],
            )
            for row in rows:
                found[row["local_path"]] = pack_record(row)
        return found

    def iter_packs(self, server: str, username: str, prefix: str = "") -> Iterator[PackRecord]:
        """Packs under a folder prefix, in path order, a page at a time."""
        from ._pack_records import pack_record

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
                yield pack_record(row)
            last = rows[-1]["local_path"]

    def remember_pack(self, record: PackRecord) -> None:
        """Record that a packed tar is on the server, alone (a sync queues it in its batch instead)."""
        with self._immediate() as conn:
            self._write_pack(conn, record, time.time())

    def _write_pack(self, conn: Transaction, record: PackRecord, now: float) -> None:
        """Record a packed tar as on the server; forget the member list of the tar it replaces.

        The old manifest's members are kept while an unfinished transfer may still need them.
        """
        old = conn.execute(
            "SELECT manifest FROM packs WHERE server = ? AND username = ? AND local_path = ?" + conn.for_update,
            (record.server, record.username, record.local_path),
        ).fetchone()
        conn.execute(
            "INSERT INTO packs (server, username, local_path, remote, manifest, data_id, size, checksum, "
            "members, superseded, recorded, host) VALUES (?,?,?,?,?,?,?,?,?,?,?,?) "
            "ON CONFLICT (server, username, local_path) DO UPDATE SET remote = excluded.remote, "
            "manifest = excluded.manifest, data_id = excluded.data_id, size = excluded.size, "
            "checksum = excluded.checksum, members = excluded.members, superseded = excluded.superseded, "
            "recorded = excluded.recorded, host = excluded.host",
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
                self.host,
            ),
        )
        if old is not None and old[0] != record.manifest:
            conn.execute(
                "DELETE FROM pack_members WHERE manifest = ? "
                "AND NOT EXISTS (SELECT 1 FROM packs WHERE manifest = ?) "
                "AND NOT EXISTS (SELECT 1 FROM files WHERE plan_key = ? AND status != 'done')",
                (old[0], old[0], old[0]),
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

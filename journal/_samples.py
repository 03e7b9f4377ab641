"""The journal's sample tables: each sample of a transfer, and the samples known to be on a server.

A sample is made by the server when the final chunk of its last file
arrives; everything before that is ordinary file uploads (rows of
``files``). What has to survive a crash is what that final chunk carried
and what it answered: the fields sent (the same on every chunk), the ids of
the earlier files (``previous_data``) and the sample's id. Sample rows are
written at once, in their own transaction (a handful per sample), not
batched: the id of a sample the server just made must not wait for a
flush.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from ._backend import Params, Transaction

if TYPE_CHECKING:
    from ._sample_records import NewSample, SampleInventoryRecord, SampleRecord

__all__ = ["SampleTables"]


_SAMPLE_COLUMNS = frozenset({"status", "previous_data", "sample_id", "started", "error", "fields"})


class SampleTables:
    """The sample half of :class:`~._journal.Journal` (mixed into it: one object, one connection)."""

    host: str

    # Provided by Journal.
    def _immediate(self) -> AbstractContextManager[Transaction]:
        raise NotImplementedError

    def _read(self, sql: str, params: Params = ()) -> list[dict[str, Any]]:
        raise NotImplementedError

    def add_samples(self, transfer_id: str, samples: Iterable[NewSample]) -> None:
        """Add a transfer's samples; a row already there is left as it is (a resumed plan)."""
        now = time.time()
        with self._immediate() as conn:
            conn.executemany(
                'INSERT INTO samples (transfer_id, "row", name, fields, status, sample_id, error, updated, host) '
                'VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (transfer_id, "row") DO NOTHING',
                [
                    (
                        transfer_id,
                        s.row,
                        s.name,
                        json.dumps(s.fields, sort_keys=True),
                        s.status.value,
                        s.sample_id,
                        s.error,
                        now,
                        self.host,
                    )
                    for s in samples
                ],
            )

    def samples_of(self, transfer_id: str) -> list[SampleRecord]:
        """The transfer's samples, in sheet order."""
        from ._sample_records import sample_record

        rows = self._read('SELECT * FROM samples WHERE transfer_id = ? ORDER BY "row"', (transfer_id,))
        return [sample_record(row) for row in rows]

    def get_sample(self, transfer_id: str, row: int) -> SampleRecord | None:
        from ._sample_records import sample_record

        rows = self._read('SELECT * FROM samples WHERE transfer_id = ? AND "row" = ?', (transfer_id, row))
        return sample_record(rows[0]) if rows else None

    def update_sample(self, transfer_id: str, row: int, **changes: Any) -> None:
        """Change a sample's row now, durably (``previous_data`` as a list, ``status`` a :class:`SampleState`)."""
        unknown = set(changes) - _SAMPLE_COLUMNS
        if unknown:
            raise ValueError(f"unknown sample columns: {sorted(unknown)}")
        values = {
            k: (
                json.dumps(list(v) if k == "previous_data" else v)
                if k in ("previous_data", "fields")
                else (v.value if isinstance(v, StrEnum) else v)
            )
            for k, v in changes.items()
        }
        assignments = ", ".join(f"{column} = :{column}" for column in values)
        with self._immediate() as conn:
            conn.execute(
                f"UPDATE samples SET {assignments}, updated = :_now, host = :_host "
                'WHERE transfer_id = :_t AND "row" = :_r',
                {**values, "_now": time.time(), "_host": self.host, "_t": transfer_id, "_r": row},
            )

    def sample_finished(self, transfer_id: str, row: int, record: SampleInventoryRecord) -> None:
        """The server made the sample: its id in the transfer and in the inventory, in one transaction."""
        from ._sample_records import SampleState

        now = time.time()
        with self._immediate() as conn:
            conn.execute(
                "UPDATE samples SET status = ?, sample_id = ?, error = NULL, updated = ?, host = ? "
                'WHERE transfer_id = ? AND "row" = ?',
                (SampleState.DONE.value, record.sample_id, now, self.host, transfer_id, row),
            )
            _remember(conn, record, now, self.host)

    def remember_sample(self, record: SampleInventoryRecord) -> None:
        """Note a sample found on the server (a lost answer recovered, a listing)."""
        with self._immediate() as conn:
            _remember(conn, record, time.time(), self.host)

    def lookup_samples(self, server: str, username: str, names: Sequence[str]) -> dict[str, SampleInventoryRecord]:
        """The known samples of these names on this server (one query per 500 names)."""
        from ._sample_records import inventory_record

        found: dict[str, SampleInventoryRecord] = {}
        wanted = list(dict.fromkeys(names))
        for start in range(0, len(wanted), 500):
            page = wanted[start : start + 500]
            rows = self._read(
                f"SELECT * FROM sample_inventory WHERE server = ? AND username = ? "
                f"AND name IN ({','.join('?' * len(page))})",
                [server, username, *page],
            )
            for row in rows:
                found[row["name"]] = inventory_record(row)
        return found

    def iter_sample_inventory(self, server: str, username: str) -> Iterator[SampleInventoryRecord]:
        from ._sample_records import inventory_record

        for row in self._read(
            "SELECT * FROM sample_inventory WHERE server = ? AND username = ? ORDER BY name", (server, username)
        ):
            yield inventory_record(row)


def _remember(conn: Transaction, record: SampleInventoryRecord, now: float, host: str) -> None:
    conn.execute(
        "INSERT INTO sample_inventory (server, username, name, sample_id, fields, data_ids, recorded, host) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (server, username, name) DO UPDATE SET "
        "sample_id = excluded.sample_id, fields = excluded.fields, data_ids = excluded.data_ids, "
        "recorded = excluded.recorded, host = excluded.host",
        (
            record.server,
            record.username,
            record.name,
            record.sample_id,
            json.dumps(record.fields, sort_keys=True),
            json.dumps(list(record.data_ids)),
            now,
            host,
        ),
    )

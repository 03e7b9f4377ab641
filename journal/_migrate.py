"""Copy one journal into another: a lab's SQLite journal onto the fleet's PostgreSQL database.

Every table is copied as it is, in batches, ids included (a file's chunks
point at it by id), so an unfinished transfer resumes from the copy exactly
where it stood. Leases are not copied: they belong to processes of the old
journal. The destination must be empty: merging two histories is not a copy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._backend import TABLES
from ._errors import JournalError

if TYPE_CHECKING:
    from ._journal import Journal


def migrate_journal(source: Journal, destination: Journal, *, batch_size: int = 5000) -> dict[str, int]:
    """Copy every row of ``source`` into the empty ``destination``; rows copied per table.

    One transaction on the destination: a copy that fails half-way leaves it empty, ready for
    another try. The source is read a page at a time, in key order (flat memory, linear time).

    :raises JournalError: the destination already holds rows.
    """
    src, dst = source._backend, destination._backend
    for table in TABLES:
        if dst.read(f"SELECT 1 AS found FROM {table} LIMIT 1"):
            raise JournalError(
                f"journal {destination.location.display} is not empty (its {table} table has rows): "
                "migrate into a new database"
            )
    counts: dict[str, int] = {}
    with dst.transaction() as tx:
        for table in TABLES:
            wanted = set(dst.columns(table))
            columns = [c for c in src.columns(table) if c in wanted]
            names = ", ".join(f'"{c}"' for c in columns)
            insert = f"INSERT INTO {table} ({names}) VALUES ({', '.join('?' * len(columns))})"
            key = _key(table)
            order = ", ".join(f'"{c}"' for c in key)
            after = f"({order}) > ({', '.join('?' * len(key))})"
            copied = 0
            last: tuple[object, ...] | None = None
            while True:
                where = "" if last is None else f" WHERE {after}"
                rows = src.read(f"SELECT {names} FROM {table}{where} ORDER BY {order} LIMIT {batch_size}", last or ())
                if not rows:
                    break
                tx.executemany(insert, [tuple(row[c] for c in columns) for row in rows])
                copied += len(rows)
                last = tuple(rows[-1][c] for c in key)
            dst.after_copy(tx, table)
            counts[table] = copied
    return counts


def _key(table: str) -> tuple[str, ...]:
    """The columns that order ``table``'s rows (its primary key)."""
    return {
        "transfers": ("id",),
        "files": ("id",),
        "chunks": ("file_id", "idx"),
        "inventory": ("server", "username", "direction", "local_path", "remote"),
        "buckets": ("server", "username", "class"),
        "packs": ("server", "username", "local_path"),
        "pack_members": ("manifest", "arcname"),
        "samples": ("transfer_id", "row"),
        "sample_inventory": ("server", "username", "name"),
    }[table]

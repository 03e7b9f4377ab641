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

    :raises JournalError: the destination already holds transfers, files or inventory.
    """
    src, dst = source._backend, destination._backend
    for table in TABLES:
        if dst.read(f"SELECT 1 AS found FROM {table} LIMIT 1"):
            raise JournalError(
                f"journal {destination.location.display} is not empty (its {table} table has rows): "
                "migrate into a new database"
            )
    counts: dict[str, int] = {}
    for table in TABLES:
        columns = [c for c in src.columns(table) if c in set(dst.columns(table))]
        names = ", ".join(f'"{c}"' for c in columns)
        insert = f"INSERT INTO {table} ({names}) VALUES ({', '.join('?' * len(columns))})"
        # Keyset pages would need each table's key; rowid-free OFFSET pages are fine on a source no one writes.
        order = ", ".join(f'"{c}"' for c in _key(table))
        copied = 0
        while rows := src.read(f"SELECT {names} FROM {table} ORDER BY {order} LIMIT {batch_size} OFFSET {copied}"):
            with dst.transaction() as tx:
                tx.executemany(insert, [tuple(row[c] for c in columns) for row in rows])
            copied += len(rows)
        dst.after_copy(table)
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

"""What a journal backend offers the journal's operations: transactions, reads, its own checks.

The operations (:mod:`._journal`, :mod:`._inventory`, :mod:`._samples`) are
written once, in the SQL both SQLite and PostgreSQL accept: ``?`` and
``:name`` placeholders (PostgreSQL's backend translates them, once per
statement), ``INSERT ... ON CONFLICT``, ``IS DISTINCT FROM``, quoted
``"offset"``/``"row"``. Where the engines truly differ, the backend says how:
:attr:`Transaction.for_update` (row locks PostgreSQL needs, SQLite's
``BEGIN IMMEDIATE`` makes needless) and :meth:`Transaction.lock` (a named
lock for read-then-insert decisions, which row locks cannot cover).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

from ._location import JournalLocation

Params = Sequence[Any] | Mapping[str, Any]


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Transaction(Protocol):
    """One write transaction; rows come back as tuples."""

    #: ``" FOR UPDATE"`` where a read inside a transaction must lock its rows, ``""`` where the
    #: whole transaction already holds the database's write lock (SQLite).
    for_update: str

    def execute(self, sql: str, params: Params = ()) -> Cursor: ...

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> int:
        """Run ``sql`` once per row; the number of rows changed."""
        ...

    def lock(self, name: str) -> None:
        """Hold the lock ``name`` until the transaction ends (no-op where transactions are serial)."""
        ...

    def now(self) -> float:
        """The time, in seconds since the epoch, by the database's clock where it has one.

        Lease heartbeats and their staleness are stamped with it: hosts whose clocks disagree
        must still agree on when a lease went stale.
        """
        ...

    def row_source(self, types: Sequence[str], rows: Sequence[Sequence[Any]]) -> Iterator[tuple[str, list[Any]]]:
        """``rows`` as a table to select from or join, ``v`` with columns ``column1``... of ``types``.

        Yields ``(sql, params)`` parts covering all rows, each ``sql`` usable after ``FROM``: SQLite
        gets a ``VALUES`` list (a few hundred rows a part), PostgreSQL one ``unnest`` of one array
        per column whatever the count (four parameters, not four per row: a statement psycopg
        prepares once and PostgreSQL parses once).
        """
        ...

    def pipeline(self) -> AbstractContextManager[object]:
        """Statements inside are sent without waiting for each answer (writes whose results nobody reads)."""
        ...

    def refusal(self, message: str) -> str | None:
        """An SQL expression that fails its statement with :class:`IllegalTransition`, or None.

        ``message``: SQL for the refusal's text. Used as ``... WHERE legal OR <refusal>``, the
        statement that would have changed a row illegally fails instead, checking each row as it
        changes it. None where a database cannot fail from an expression (SQLite): then
        :meth:`refuse_if`.
        """
        ...

    def refuse_if(self, sql: str, params: Params = ()) -> None:
        """The transaction fails with :class:`IllegalTransition` if ``sql`` returns a row.

        ``sql`` selects one text column, the refusal's message (the first row's is raised). The
        check runs in the database, in order: statements sent after it see nothing of a refused
        transaction, and no answer needs reading before the transaction ends (so a ``blind``
        transaction may carry it). Where the error surfaces: SQLite at once, PostgreSQL when the
        pipeline or the transaction it is in ends.
        """
        ...


class Backend(Protocol):
    location: JournalLocation

    def transaction(self, *, blind: bool = False) -> AbstractContextManager[Transaction]:
        """A write transaction. ``blind``: nothing inside reads an answer (writes, :meth:`Transaction.refuse_if`).

        A database server then gets it all in one round trip: PostgreSQL's statements of one
        pipeline sync with no ``BEGIN``/``COMMIT`` are one implicit transaction, all or nothing.
        """
        ...

    def read(self, sql: str, params: Params = ()) -> list[dict[str, Any]]:
        """Rows as dicts, outside any write transaction."""
        ...

    def check_integrity(self) -> list[str]: ...

    def columns(self, table: str) -> list[str]: ...

    def after_copy(self, tx: Transaction, table: str) -> None:
        """Called after rows with explicit ids were copied into ``table`` (identity sequences move on)."""
        ...

    def close(self) -> None: ...


#: Tables in the order rows may be copied (parents before children); ``leases`` belong to live
#: processes and are never copied.
TABLES = (
    "transfers",
    "files",
    "chunks",
    "inventory",
    "buckets",
    "packs",
    "pack_members",
    "samples",
    "sample_inventory",
)

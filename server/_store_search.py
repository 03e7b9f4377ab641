"""The store's SQL for ``/data/search`` and ``/data_types``: filters, sorts and counts over ready data.

A part of :class:`._store.Store` (:class:`._store_base.StoreBase`'s connection),
apart from :mod:`._store_data` because the search's filters (hosted Flow's,
many of them) make up a query of their own; a ``regex`` filter is applied
outside SQL, in a child process (:mod:`._regex`), to the names this returns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ._store_base import StoreBase
from ._store_data import DATA_COLUMNS, READABLE_SQL, DataRow, data_row


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
    #: hosted Flow's sort values: ``created``, ``-created``, ``filename``, ``-filename``
    sort: str = "-created"
    data_types: tuple[str, ...] = ()
    #: case-insensitive substring of the owner's name
    owner: str | None = None
    category: int | None = None
    #: True: data alone in its fileset (or in none); False: the first of several
    is_single: bool | None = None
    #: a filter no data here can meet (a pipeline or process: nothing is produced by one)
    nothing: bool = False


#: ``ORDER BY`` for each sort hosted Flow documents; id breaks ties so pages never overlap.
SORTS = {
    "-created": "d.created DESC, d.id",
    "created": "d.created ASC, d.id",
    "-filename": "d.filename DESC, d.id",
    "filename": "d.filename ASC, d.id",
}


class SearchStore(StoreBase):
    """Ready data readable by a user, filtered, sorted and paged."""

    def _search_where(self, flt: SearchFilter) -> tuple[str, dict[str, Any]]:
        clauses = ["d.state = 'ready'", READABLE_SQL]
        params: dict[str, Any] = {"user": flt.user}
        if flt.owned:
            clauses.append("d.owner = :user")
        if flt.filename:
            clauses.append("instr(casefold(d.filename), :fname) > 0")
            params["fname"] = flt.filename.casefold()
        if flt.owner:
            clauses.append("instr(casefold(d.owner), :owner) > 0")
            params["owner"] = flt.owner.casefold()
        if flt.data_types:
            names = [f":type{i}" for i in range(len(flt.data_types))]
            clauses.append(f"d.data_type IN ({', '.join(names)})")
            params.update({name[1:]: value for name, value in zip(names, flt.data_types, strict=True)})
        if flt.category is not None:
            clauses.append("d.category = :category")
            params["category"] = flt.category
        if flt.is_single is not None:
            # Single: alone in its fileset, or in none. Not single: the first of a fileset of several.
            shared = (
                "EXISTS (SELECT 1 FROM fileset_data me JOIN fileset_data other ON other.fileset_id = "
                "me.fileset_id AND other.data_id != me.data_id WHERE me.data_id = d.id)"
            )
            clauses.append(
                f"NOT {shared}"
                if flt.is_single
                else f"{shared} AND (SELECT position FROM fileset_data WHERE data_id = d.id) = 0"
            )
        if flt.nothing:  # no data here is produced by a pipeline
            clauses.append("0")
        # Inclusive bounds, as hosted Flow's (size >= size_gt).
        for column, op, key in (
            ("created", ">=", "created_gt"),
            ("created", "<=", "created_lt"),
            ("size", ">=", "size_gt"),
            ("size", "<=", "size_lt"),
        ):
            value = getattr(flt, key)
            if value is not None:
                clauses.append(f"d.{column} {op} :{key}")
                params[key] = value
        return " AND ".join(clauses), params

    def search(self, flt: SearchFilter, limit: int, offset: int) -> tuple[int, list[DataRow]]:
        """One page of ready data readable by the user, in ``flt.sort`` order, and the total."""
        where, params = self._search_where(flt)
        total = self._query(f"SELECT COUNT(*) FROM data d WHERE {where}", params)[0][0]
        rows = self._query(
            f"SELECT {DATA_COLUMNS} FROM data d WHERE {where} ORDER BY {SORTS[flt.sort]} LIMIT :limit OFFSET :offset",
            {**params, "limit": limit, "offset": offset},
        )
        return total, [data_row(r) for r in rows]

    def search_names(self, flt: SearchFilter) -> list[tuple[str, str]]:
        """(id, filename) of every match, in ``flt.sort`` order: the regex filter runs elsewhere."""
        where, params = self._search_where(flt)
        return [
            (r[0], r[1])
            for r in self._query(
                f"SELECT d.id, d.filename FROM data d WHERE {where} ORDER BY {SORTS[flt.sort]}", params
            )
        ]

    def data_type_counts(self) -> dict[str, int]:
        """``{data_type: number of ready data}`` for every type some ready data carries."""
        return dict(
            self._query(
                "SELECT data_type, COUNT(*) FROM data "
                "WHERE state = 'ready' AND data_type IS NOT NULL GROUP BY data_type"
            )
        )

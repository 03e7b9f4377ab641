"""The store's SQL for projects, samples, filesets and the data linked into them.

A mixin of :class:`~._store.Store` (it uses the store's connection, lock and
transactions), kept apart so each file has one job. The rule the schema
enforces: a data id sits in at most one fileset (``UNIQUE``), so a ready
file is never linked twice; the checks a sample's creation needs are run
inside the very transaction that commits its last chunk
(:func:`link_sample`), so nothing can slip between the
check and the link.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._store_base import StoreBase

#: Data categories (hosted Flow's ``category``).
GENERIC, ANNOTATION, MULTIPLEXED, DEMULTIPLEXED = 1, 2, 3, 4


class SampleRefused(Exception):
    """A sample (or a link) the rules refuse; ``body`` is the Django-style answer, ``{"error": ...}``."""

    def __init__(self, error: str | dict[str, list[str]]) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass(frozen=True)
class DataKind:
    """What a new data row is beyond its bytes: its category and, for a second multiplexed file, its first."""

    category: int = GENERIC
    reads1: str | None = None


GENERIC_KIND = DataKind()


@dataclass(frozen=True)
class NewSample:
    """A sample to create with the last chunk of its last file (ids chosen by the caller)."""

    id: str
    fileset_id: str
    owner: str
    name: str
    sample_type: str
    project_id: str | None
    organism: str | None
    metadata: dict[str, dict[str, str | None]]
    previous_data: tuple[str, ...] = ()


@dataclass(frozen=True)
class ProjectRow:
    id: str
    owner: str
    name: str
    description: str
    private: bool
    created: float


@dataclass(frozen=True)
class SampleRow:
    id: str
    owner: str
    name: str
    sample_type: str
    project_id: str | None
    project_name: str | None
    organism: str | None
    metadata: dict[str, dict[str, str | None]]
    private: bool
    created: float
    is_paired: bool


@dataclass(frozen=True)
class DataLinks:
    """A data's category and what links it: (id, name) of its sample and project, (id, filename) of its pair."""

    category: int
    sample: tuple[str, str] | None
    fileset_id: str | None
    project: tuple[str, str] | None
    paired: tuple[str, str] | None


@dataclass(frozen=True)
class FilesetRow:
    id: str
    created: float
    #: (data id, filename, size) in link order.
    data: list[tuple[str, str, int]] = field(default_factory=list)


@dataclass(frozen=True)
class SampleFilter:
    """The /samples/search filters, already validated by the web layer."""

    user: str
    owned: bool = False
    name: str | None = None
    project: str | None = None
    organism: str | None = None
    has_organism: bool | None = None
    sample_types: tuple[str, ...] = ()
    created_gt: float | None = None
    created_lt: float | None = None
    owner: str | None = None
    #: ``(attribute, text)``: a case-insensitive substring of the attribute's value; ``True``/``False``:
    #: has a value, or has none.
    metadata: tuple[tuple[str, str | bool], ...] = ()
    sort: str = "-created"


_SAMPLE_COLUMNS = (
    "s.id, s.owner, s.name, s.sample_type, s.project_id, p.name, s.organism, s.metadata, s.private, s.created, "
    "EXISTS (SELECT 1 FROM filesets f JOIN fileset_data fd ON fd.fileset_id = f.id "
    "        WHERE f.sample_id = s.id GROUP BY f.id HAVING COUNT(*) > 1)"
)
_SAMPLE_FROM = "samples s LEFT JOIN projects p ON p.id = s.project_id"
_SORTS = {
    "-created": "s.created DESC, s.id",
    "created": "s.created, s.id",
    "name": "s.name, s.id",
    "-name": "s.name DESC, s.id",
}
SAMPLE_SORTS = tuple(_SORTS)


def _sample(row: Sequence[Any]) -> SampleRow:
    return SampleRow(
        row[0], row[1], row[2], row[3], row[4], row[5], row[6], json.loads(row[7]), bool(row[8]), row[9], bool(row[10])
    )


def _project(row: Sequence[Any]) -> ProjectRow:
    return ProjectRow(row[0], row[1], row[2], row[3], bool(row[4]), row[5])


def link_problems(
    c: sqlite3.Connection,
    owner: str,
    project_id: str | None,
    previous_data: Sequence[str],
    this_data: str | None = None,
) -> dict[str, list[str]]:
    """What is wrong with a sample's project and earlier files, field by field (empty: nothing)."""
    problems: dict[str, list[str]] = {}
    if project_id is not None:
        found = c.execute("SELECT owner FROM projects WHERE id = ?", (project_id,)).fetchone()
        if found is None or found[0] != owner:
            problems["project"] = ["Project not found or not owned by you"]
    seen: set[str] = set()
    for data_id in previous_data:
        if data_id in seen or data_id == this_data:
            problems.setdefault("previous_data", []).append(f"{data_id} is given twice")
            continue
        seen.add(data_id)
        row = c.execute("SELECT owner, state FROM data WHERE id = ?", (data_id,)).fetchone()
        if row is None or row[0] != owner:
            problems.setdefault("previous_data", []).append(f"{data_id} is not your data")
        elif row[1] != "ready":
            problems.setdefault("previous_data", []).append(f"{data_id} is not ready")
        elif c.execute("SELECT 1 FROM fileset_data WHERE data_id = ?", (data_id,)).fetchone():
            problems.setdefault("previous_data", []).append(f"{data_id} is already in a sample")
    return problems


def link_sample(c: sqlite3.Connection, sample: NewSample, data_id: str) -> None:
    """Check again, then create the sample, its fileset and its links, inside the caller's transaction.

    :raises SampleRefused: the checks failed; the caller's transaction rolls back.
    """
    problems = link_problems(c, sample.owner, sample.project_id, sample.previous_data, data_id)
    if problems:
        raise SampleRefused(problems)
    now = time.time()
    c.execute(
        "INSERT INTO samples VALUES (?, ?, ?, ?, ?, ?, ?, 1, ?)",
        (
            sample.id,
            sample.owner,
            sample.name,
            sample.sample_type,
            sample.project_id,
            sample.organism,
            json.dumps(sample.metadata),
            now,
        ),
    )
    c.execute("INSERT INTO filesets VALUES (?, ?, ?)", (sample.fileset_id, sample.id, now))
    c.executemany(
        "INSERT INTO fileset_data VALUES (?, ?, ?)",
        [(sample.fileset_id, position, linked) for position, linked in enumerate([*sample.previous_data, data_id])],
    )


class SampleStoreMixin(StoreBase):
    """Projects and samples; a part of :class:`~._store.Store` over the shared connection."""

    # --- projects --------------------------------------------------------------

    def add_project(self, project_id: str, owner: str, name: str, description: str = "") -> tuple[str, bool]:
        """Create ``owner``'s project ``name`` unless it exists; (its id, whether it is new)."""
        with self._tx() as c:
            found = c.execute("SELECT id FROM projects WHERE owner = ? AND name = ?", (owner, name)).fetchone()
            if found:
                return str(found[0]), False
            c.execute(
                "INSERT INTO projects VALUES (?, ?, ?, ?, 1, ?)", (project_id, owner, name, description, time.time())
            )
            return project_id, True

    def owned_projects(self, owner: str, limit: int, offset: int) -> tuple[int, list[ProjectRow]]:
        total = self._query("SELECT COUNT(*) FROM projects WHERE owner = ?", (owner,))[0][0]
        rows = self._query(
            "SELECT * FROM projects WHERE owner = ? ORDER BY created, id LIMIT ? OFFSET ?", (owner, limit, offset)
        )
        return total, [_project(r) for r in rows]

    def list_projects(self) -> list[ProjectRow]:
        return [_project(r) for r in self._query("SELECT * FROM projects ORDER BY owner, name")]

    # --- linking a sample ------------------------------------------------------------

    def sample_link_problems(
        self, owner: str, project_id: str | None, previous_data: Sequence[str]
    ) -> dict[str, list[str]]:
        """:func:`link_problems` outside a transaction: the check made on each file's chunks."""
        with self._reading() as c:
            return link_problems(c, owner, project_id, previous_data)

    def sample_of_data(self, data_id: str) -> tuple[str, str] | None:
        """(sample id, sample name) of the sample ``data_id`` is linked into, if any."""
        rows = self._query(
            "SELECT s.id, s.name FROM fileset_data fd JOIN filesets f ON f.id = fd.fileset_id "
            "JOIN samples s ON s.id = f.sample_id WHERE fd.data_id = ?",
            (data_id,),
        )
        return (rows[0][0], rows[0][1]) if rows else None

    def sample_completed_by(self, data_id: str) -> str | None:
        """The sample whose last linked file is ``data_id`` (the one its final chunk created), if any."""
        rows = self._query(
            "SELECT f.sample_id FROM fileset_data fd JOIN filesets f ON f.id = fd.fileset_id WHERE fd.data_id = ? "
            "AND fd.position = (SELECT MAX(position) FROM fileset_data WHERE fileset_id = fd.fileset_id)",
            (data_id,),
        )
        return str(rows[0][0]) if rows else None

    def linked_before(self, data_id: str) -> list[str]:
        """The data linked ahead of ``data_id`` in its fileset, in order (its ``previous_data``)."""
        return [
            r[0]
            for r in self._query(
                "SELECT b.data_id FROM fileset_data a JOIN fileset_data b ON b.fileset_id = a.fileset_id "
                "AND b.position < a.position WHERE a.data_id = ? ORDER BY b.position",
                (data_id,),
            )
        ]

    def data_category(self, data_id: str) -> int | None:
        rows = self._query("SELECT category FROM data WHERE id = ?", (data_id,))
        return int(rows[0][0]) if rows else None

    def data_links(self, data_ids: Sequence[str]) -> dict[str, DataLinks]:
        """What ties each of ``data_ids`` to samples: one query for a page of data (``GET /data/<id>``, search).

        ``paired`` is the other file of a fileset holding exactly two ready data, as hosted Flow's.
        """
        if not data_ids:
            return {}
        marks = ", ".join("?" for _ in data_ids)
        rows = self._query(
            "SELECT d.id, d.category, s.id, s.name, f.id, p.id, p.name FROM data d "
            "LEFT JOIN fileset_data fd ON fd.data_id = d.id LEFT JOIN filesets f ON f.id = fd.fileset_id "
            "LEFT JOIN samples s ON s.id = f.sample_id LEFT JOIN projects p ON p.id = s.project_id "
            f"WHERE d.id IN ({marks})",
            list(data_ids),
        )
        filesets = {r[4] for r in rows if r[4] is not None}
        members: dict[str, list[tuple[str, str]]] = {}
        if filesets:
            for fileset_id, member_id, filename in self._query(
                "SELECT fd.fileset_id, d.id, d.filename FROM fileset_data fd JOIN data d ON d.id = fd.data_id "
                f"WHERE d.state = 'ready' AND fd.fileset_id IN ({', '.join('?' for _ in filesets)}) "
                "ORDER BY fd.fileset_id, fd.position",
                list(filesets),
            ):
                members.setdefault(fileset_id, []).append((member_id, filename))
        found: dict[str, DataLinks] = {}
        for data_id, category, sample_id, sample_name, fileset_id, project_id, project_name in rows:
            pair = members.get(fileset_id, []) if fileset_id is not None else []
            other = [m for m in pair if m[0] != data_id] if len(pair) == 2 else []
            found[data_id] = DataLinks(
                int(category),
                (sample_id, sample_name) if sample_id is not None else None,
                fileset_id,
                (project_id, project_name) if project_id is not None else None,
                other[0] if other else None,
            )
        return found

    # --- reading samples --------------------------------------------------------------

    def get_sample(self, sample_id: str) -> SampleRow | None:
        rows = self._query(f"SELECT {_SAMPLE_COLUMNS} FROM {_SAMPLE_FROM} WHERE s.id = ?", (sample_id,))
        return _sample(rows[0]) if rows else None

    def _sample_where(self, flt: SampleFilter) -> tuple[str, dict[str, Any]]:
        clauses = ["(s.owner = :user OR s.private = 0)"]
        params: dict[str, Any] = {"user": flt.user}
        if flt.owned:
            clauses.append("s.owner = :user")
        if flt.name:
            clauses.append("instr(casefold(s.name), :name) > 0")
            params["name"] = flt.name.casefold()
        if flt.project:
            clauses.append("instr(casefold(coalesce(p.name, '')), :project) > 0")
            params["project"] = flt.project.casefold()
        if flt.organism is not None:
            clauses.append("s.organism = :organism")
            params["organism"] = flt.organism
        if flt.has_organism is not None:
            clauses.append("s.organism IS NOT NULL" if flt.has_organism else "s.organism IS NULL")
        if flt.sample_types:
            marks = ", ".join(f":type{i}" for i in range(len(flt.sample_types)))
            clauses.append(f"s.sample_type IN ({marks})")
            params.update({f"type{i}": t for i, t in enumerate(flt.sample_types)})
        if flt.owner:
            clauses.append("instr(casefold(s.owner), :owner) > 0")
            params["owner"] = flt.owner.casefold()
        for i, (attribute, wanted) in enumerate(flt.metadata):
            # The catalog's identifiers are letters, digits and _ . + -: safe inside a quoted JSON path key.
            params[f"path{i}"] = f'$."{attribute}".value'
            if isinstance(wanted, bool):
                clauses.append(f"json_extract(s.metadata, :path{i}) IS {'NOT ' if wanted else ''}NULL")
            else:
                clauses.append(f"instr(casefold(coalesce(json_extract(s.metadata, :path{i}), '')), :meta{i}) > 0")
                params[f"meta{i}"] = wanted.casefold()
        if flt.created_gt is not None:
            clauses.append("s.created >= :created_gt")
            params["created_gt"] = flt.created_gt
        if flt.created_lt is not None:
            clauses.append("s.created <= :created_lt")
            params["created_lt"] = flt.created_lt
        return " AND ".join(clauses), params

    def search_samples(self, flt: SampleFilter, limit: int, offset: int) -> tuple[int, list[SampleRow]]:
        """One page of the samples ``flt.user`` may see, and the total."""
        where, params = self._sample_where(flt)
        total = self._query(f"SELECT COUNT(*) FROM {_SAMPLE_FROM} WHERE {where}", params)[0][0]
        rows = self._query(
            f"SELECT {_SAMPLE_COLUMNS} FROM {_SAMPLE_FROM} WHERE {where} ORDER BY {_SORTS[flt.sort]} "
            "LIMIT :limit OFFSET :offset",
            {**params, "limit": limit, "offset": offset},
        )
        return total, [_sample(r) for r in rows]

    def filesets(self, sample_id: str) -> list[FilesetRow]:
        """The sample's filesets with their ready data, in link order."""
        sets = self._query("SELECT id, created FROM filesets WHERE sample_id = ? ORDER BY created, id", (sample_id,))
        found: list[FilesetRow] = []
        for fileset_id, created in sets:
            data = self._query(
                "SELECT d.id, d.filename, d.size FROM fileset_data fd JOIN data d ON d.id = fd.data_id "
                "WHERE fd.fileset_id = ? AND d.state = 'ready' ORDER BY fd.position",
                (fileset_id,),
            )
            found.append(FilesetRow(fileset_id, created, [(r[0], r[1], r[2]) for r in data]))
        return found

    def integrity_problems(self) -> Iterator[str]:
        """Links that break the rules (for tests after a crash): a file not ready, a sample with no file."""
        for data_id, state in self._query(
            "SELECT d.id, d.state FROM fileset_data fd JOIN data d ON d.id = fd.data_id WHERE d.state != 'ready'"
        ):
            yield f"{data_id} is linked into a sample but {state}"
        for (sample_id,) in self._query(
            "SELECT s.id FROM samples s WHERE NOT EXISTS (SELECT 1 FROM filesets f JOIN fileset_data fd "
            "ON fd.fileset_id = f.id WHERE f.sample_id = s.id)"
        ):
            yield f"sample {sample_id} links no file"

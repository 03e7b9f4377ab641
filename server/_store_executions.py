"""The store's SQL for executions (pipeline runs) and the data their processes produced.

A mixin of :class:`~._store.Store`, like :mod:`._store_samples`. This server
runs no pipelines: ``flowxfer admin execution add`` registers a run with its
outputs (already-ready data rows) and a *schedule* of statuses, and the status
an execution shows is computed from the clock when it is read
(:meth:`ExecutionRow.status_at`), so a test can have a run turn ``OK`` or
``ERROR`` a few seconds later without anything running in the background.
An output's data id sits in at most one execution (``UNIQUE``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ._store_base import StoreBase

#: The statuses after which an execution never changes (hosted Flow's terminal values).
TERMINAL = ("OK", "ERROR", "CANCELED")


@dataclass(frozen=True)
class ExecutionRow:
    id: str
    identifier: str
    owner: str
    pipeline_name: str
    pipeline_version: str
    sample_id: str | None
    sample_name: str | None
    sample_private: bool | None
    project_id: str | None
    project_name: str | None
    private: bool
    nextflow_version: str
    #: ``(unix time, status)`` in time order; the first is the creation.
    schedule: tuple[tuple[float, str], ...]
    stdout: str
    stderr: str
    created: float

    def status_at(self, now: float) -> tuple[str, float | None]:
        """(status, finished): the last scheduled status whose time has come; ``finished`` once terminal.

        Nothing follows a terminal status in a schedule (:func:`~._admin_executions.schedule_problem`
        refuses it), so a terminal status is the last one an execution shows.
        """
        status, finished = "", None
        for when, scheduled in self.schedule:
            if when > now:
                break
            status = scheduled
            finished = when if scheduled in TERMINAL else None
        return status, finished

    def visible_to(self, user: str) -> bool:
        """Hosted Flow's rule: owned, public, or dependent on a public sample."""
        return self.owner == user or not self.private or self.sample_private is False


@dataclass(frozen=True)
class OutputRow:
    execution_id: str
    position: int
    process_name: str
    data_id: str
    filename: str
    size: int
    filetype: str | None
    created: float


@dataclass(frozen=True)
class NewExecution:
    id: str
    identifier: str
    owner: str
    pipeline_name: str
    pipeline_version: str
    sample_id: str | None
    private: bool
    schedule: tuple[tuple[float, str], ...]
    created: float
    nextflow_version: str = ""
    stdout: str = ""
    stderr: str = ""


@dataclass(frozen=True)
class NewOutput:
    """One output file, already in place under ``data/<data_id>``."""

    process_name: str
    data_id: str
    filename: str
    size: int
    checksum: str
    filetype: str | None
    #: ``(offset, size, checksum)`` of each chunk, as an upload records them.
    chunks: tuple[tuple[int, int, str], ...] = ()


_EXECUTION_SELECT = (
    "SELECT e.id, e.identifier, e.owner, e.pipeline_name, e.pipeline_version, e.sample_id, s.name, s.private, "
    "s.project_id, p.name, e.private, e.nextflow_version, e.schedule, e.stdout, e.stderr, e.created "
    "FROM executions e LEFT JOIN samples s ON s.id = e.sample_id LEFT JOIN projects p ON p.id = s.project_id"
)
_OUTPUT_SELECT = (
    "SELECT o.execution_id, o.position, o.process_name, d.id, d.filename, d.size, d.data_type, d.created "
    "FROM execution_outputs o JOIN data d ON d.id = o.data_id AND d.state = 'ready'"
)


def _execution(row: Sequence[Any]) -> ExecutionRow:
    schedule = tuple((float(when), str(status)) for when, status in json.loads(row[12]))
    return ExecutionRow(
        row[0],
        row[1],
        row[2],
        row[3],
        row[4],
        row[5],
        row[6],
        None if row[7] is None else bool(row[7]),
        row[8],
        row[9],
        bool(row[10]),
        row[11],
        schedule,
        row[13],
        row[14],
        row[15],
    )


def _output(row: Sequence[Any]) -> OutputRow:
    return OutputRow(row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7])


class ExecutionStoreMixin(StoreBase):
    """Executions and their outputs: one part of :class:`~._store.Store`."""

    def add_execution(self, execution: NewExecution, outputs: Sequence[NewOutput]) -> None:
        """The execution, its outputs' data rows (ready) and their links, in one transaction.

        :raises ValueError: the identifier is taken, or the sample is unknown.
        """
        with self._tx() as c:
            if c.execute("SELECT 1 FROM executions WHERE identifier = ?", (execution.identifier,)).fetchone():
                raise ValueError(f"an execution is already called {execution.identifier!r}")
            if (
                execution.sample_id is not None
                and not c.execute("SELECT 1 FROM samples WHERE id = ?", (execution.sample_id,)).fetchone()
            ):
                raise ValueError(f"no sample {execution.sample_id}")
            c.execute(
                "INSERT INTO executions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    execution.id,
                    execution.identifier,
                    execution.owner,
                    execution.pipeline_name,
                    execution.pipeline_version,
                    execution.sample_id,
                    int(execution.private),
                    execution.nextflow_version,
                    json.dumps(execution.schedule),
                    execution.stdout,
                    execution.stderr,
                    execution.created,
                ),
            )
            for position, output in enumerate(outputs):
                c.execute(
                    "INSERT INTO data (id, owner, filename, data_type, is_directory, private, state, size, checksum, "
                    "created, updated) VALUES (?, ?, ?, ?, 0, ?, 'ready', ?, ?, ?, ?)",
                    (
                        output.data_id,
                        execution.owner,
                        output.filename,
                        output.filetype,
                        int(execution.private),
                        output.size,
                        output.checksum,
                        execution.created,
                        execution.created,
                    ),
                )
                c.executemany(
                    "INSERT INTO chunks VALUES (?, ?, ?, ?)", [(output.data_id, *chunk) for chunk in output.chunks]
                )
                c.execute(
                    "INSERT INTO execution_outputs VALUES (?, ?, ?, ?)",
                    (execution.id, position, output.process_name, output.data_id),
                )

    def finish_execution(self, execution_id: str, status: str, now: float) -> bool:
        """End a running execution with ``status`` at ``now`` (its later scheduled steps dropped).

        False if there is no such execution.
        :raises ValueError: it has ended already (a terminal status never changes).
        """
        with self._tx() as c:
            row = c.execute("SELECT schedule FROM executions WHERE id = ?", (execution_id,)).fetchone()
            if row is None:
                return False
            past = [(float(when), str(step)) for when, step in json.loads(row[0]) if float(when) <= now]
            if past and past[-1][1] in TERMINAL:
                raise ValueError(f"execution {execution_id} has ended already ({past[-1][1]})")
            c.execute(
                "UPDATE executions SET schedule = ? WHERE id = ?", (json.dumps([*past, (now, status)]), execution_id)
            )
        return True

    def get_execution(self, execution_id: str) -> ExecutionRow | None:
        rows = self._query(f"{_EXECUTION_SELECT} WHERE e.id = ?", (execution_id,))
        return _execution(rows[0]) if rows else None

    def visible_executions(self, user: str, sample_id: str | None = None) -> list[ExecutionRow]:
        """Every execution ``user`` may see (of one sample), newest first.

        All of them, not a page: status and duration come from the clock, so
        the web layer filters and pages (a local server holds few runs).
        """
        where = "(e.owner = :user OR e.private = 0 OR s.private = 0)"
        params: dict[str, Any] = {"user": user}
        if sample_id is not None:
            where += " AND e.sample_id = :sample"
            params["sample"] = sample_id
        rows = self._query(f"{_EXECUTION_SELECT} WHERE {where} ORDER BY e.created DESC, e.id", params)
        return [_execution(r) for r in rows]

    def execution_outputs(self, execution_ids: Sequence[str]) -> dict[str, list[OutputRow]]:
        """The ready outputs of each execution, in the order they were registered."""
        found: dict[str, list[OutputRow]] = {i: [] for i in execution_ids}
        for start in range(0, len(execution_ids), 500):
            part = list(execution_ids[start : start + 500])
            marks = ", ".join("?" * len(part))
            for row in self._query(
                f"{_OUTPUT_SELECT} WHERE o.execution_id IN ({marks}) ORDER BY o.execution_id, o.position", part
            ):
                found[row[0]].append(_output(row))
        return found

    def identifier_taken(self, identifier: str) -> bool:
        return bool(self._query("SELECT 1 FROM executions WHERE identifier = ?", (identifier,)))

    def list_executions(self) -> list[ExecutionRow]:
        return [_execution(r) for r in self._query(f"{_EXECUTION_SELECT} ORDER BY e.created, e.id")]

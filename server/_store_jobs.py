"""The store's SQL for archive jobs: a job is a row first, so it survives a restart (:mod:`._jobs`).

A part of :class:`._store.Store` over the shared connection (:class:`._store_base.StoreBase`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ._store_base import StoreBase


@dataclass(frozen=True)
class JobRow:
    id: str
    owner: str
    name: str
    items: list[str]
    status: str
    progress: float
    size: int | None
    checksum: str | None
    error: str | None
    created: float
    completed: float | None
    expires: float | None


def _job(row: Sequence[Any]) -> JobRow:
    return JobRow(
        row[0],
        row[1],
        row[2],
        json.loads(row[3]),
        row[4],
        row[5],
        row[6],
        row[7],
        row[8],
        row[9],
        row[10],
        row[11],
    )


class JobStore(StoreBase):
    """Archive jobs: created, polled, updated as they build, read back at start-up."""

    def create_job(self, job: JobRow) -> None:
        with self._tx() as c:
            c.execute(
                "INSERT INTO jobs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    job.id,
                    job.owner,
                    job.name,
                    json.dumps(job.items),
                    job.status,
                    job.progress,
                    job.size,
                    job.checksum,
                    job.error,
                    job.created,
                    job.completed,
                    job.expires,
                ),
            )

    def get_job(self, job_id: str) -> JobRow | None:
        rows = self._query("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return _job(rows[0]) if rows else None

    def jobs_in(self, statuses: Sequence[str]) -> list[JobRow]:
        marks = ",".join("?" * len(statuses))
        return [
            _job(r)
            for r in self._query(f"SELECT * FROM jobs WHERE status IN ({marks}) ORDER BY created", tuple(statuses))
        ]

    def update_job(self, job_id: str, **fields: Any) -> None:
        allowed = {"status", "progress", "size", "checksum", "error", "completed", "expires"}
        if not fields or set(fields) - allowed:
            raise ValueError(f"bad job fields: {sorted(fields)}")
        assignments = ", ".join(f"{name} = :{name}" for name in fields)
        with self._tx() as c:
            c.execute(f"UPDATE jobs SET {assignments} WHERE id = :id", {**fields, "id": job_id})

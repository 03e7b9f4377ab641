"""The journal's sample records: a sample's state and rows, as :class:`~._samples.SampleTables` returns them.

Why a module of their own: every command opens the journal, whose class
carries the sample tables' methods, and defining these classes costs start-up
(issue 20: the fixed cost per command). Only samples commands use them; they
load with the first sample method called, or with ``flowxfer.journal.SampleState``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

__all__ = ["NewSample", "SampleInventoryRecord", "SampleRecord", "SampleState", "inventory_record", "sample_record"]


class SampleState(StrEnum):
    """A sample's state in one transfer (``samples.md``: its status in the report)."""

    PLANNED = "planned"
    ACTIVE = "active"  # its first byte may have left: a lost answer is looked for on the server
    DONE = "done"
    SKIPPED = "skipped"  # already on the server (an earlier run made it)
    FAILED = "failed"
    INVALID = "invalid"  # refused by validation: never sent


@dataclass(frozen=True, slots=True)
class NewSample:
    row: int
    name: str
    fields: dict[str, str]
    status: SampleState = SampleState.PLANNED
    sample_id: str | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class SampleRecord:
    transfer_id: str
    row: int
    name: str
    fields: dict[str, str]
    status: SampleState
    previous_data: tuple[str, ...]
    sample_id: str | None
    started: float | None
    error: str | None


@dataclass(frozen=True, slots=True)
class SampleInventoryRecord:
    """A sample known to be on a server: its name (unique per user for us), id, fields and files."""

    server: str
    username: str
    name: str
    sample_id: str
    fields: dict[str, str] = field(default_factory=dict)
    data_ids: tuple[str, ...] = ()


def sample_record(row: dict[str, Any]) -> SampleRecord:
    return SampleRecord(
        transfer_id=row["transfer_id"],
        row=row["row"],
        name=row["name"],
        fields=json.loads(row["fields"]),
        status=SampleState(row["status"]),
        previous_data=tuple(json.loads(row["previous_data"])),
        sample_id=row["sample_id"],
        started=row["started"],
        error=row["error"],
    )


def inventory_record(row: dict[str, Any]) -> SampleInventoryRecord:
    return SampleInventoryRecord(
        server=row["server"],
        username=row["username"],
        name=row["name"],
        sample_id=row["sample_id"],
        fields=json.loads(row["fields"]),
        data_ids=tuple(json.loads(row["data_ids"])),
    )

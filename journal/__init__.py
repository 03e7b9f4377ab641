"""The journal: what was planned, sent, acknowledged and verified.

Imports nothing else of flowxfer's. :class:`Journal` owns all SQL, on SQLite
(a file: the default) or PostgreSQL (a database a fleet of hosts shares:
``Journal.open("postgresql://USER@HOST/DB")``); the engine records progress
in :class:`JournalBatch` objects that commit in one transaction each, and
takes :class:`Lease` objects so one process at a time, on any host, runs a
given piece of work. :func:`parse_journal_location` says what a
``--journal`` value names; :func:`migrate_journal` copies a journal into
another.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._batch import JournalBatch
from ._errors import (
    HostIdError,
    JournalBusyError,
    JournalCorruptError,
    JournalError,
    JournalLocationError,
    JournalUnavailableError,
    JournalVersionError,
    LeaseHeld,
    LeaseLost,
)
from ._journal import Journal, Lease, resolve_host_id
from ._leases import HOST_ID_MAX, check_host_id
from ._location import JournalLocation, default_journal_path, mask_password, parse_journal_location
from ._migrate import migrate_journal
from ._records import (
    ChunkRecord,
    FileRecord,
    InventoryRecord,
    NewFile,
    TransferRecord,
    TransferSummary,
)
from ._schema import SCHEMA_VERSION
from ._states import (
    FINISHED_FILE_STATES,
    ChunkState,
    FileState,
    IllegalTransition,
    TransferState,
    check_chunk_transition,
    check_file_transition,
    transfer_outcome,
)

if TYPE_CHECKING:
    from ._pack_records import PackMember, PackRecord
    from ._sample_records import NewSample, SampleInventoryRecord, SampleRecord, SampleState

__all__ = [
    "HOST_ID_MAX",
    "check_host_id",
    "HostIdError",
    "FINISHED_FILE_STATES",
    "SCHEMA_VERSION",
    "ChunkRecord",
    "ChunkState",
    "FileRecord",
    "FileState",
    "IllegalTransition",
    "InventoryRecord",
    "Journal",
    "JournalBatch",
    "JournalBusyError",
    "JournalCorruptError",
    "JournalError",
    "JournalLocation",
    "JournalLocationError",
    "JournalUnavailableError",
    "JournalVersionError",
    "Lease",
    "LeaseHeld",
    "LeaseLost",
    "NewFile",
    "NewSample",
    "PackMember",
    "PackRecord",
    "SampleInventoryRecord",
    "SampleRecord",
    "SampleState",
    "TransferRecord",
    "TransferState",
    "TransferSummary",
    "check_chunk_transition",
    "check_file_transition",
    "default_journal_path",
    "mask_password",
    "migrate_journal",
    "parse_journal_location",
    "resolve_host_id",
    "transfer_outcome",
]


#: Records that load on first use: every command opens the journal, only samples commands use
#: the sample records and only a packing sync the pack records.
_LATER = {
    "NewSample": "._sample_records",
    "SampleInventoryRecord": "._sample_records",
    "SampleRecord": "._sample_records",
    "SampleState": "._sample_records",
    "PackMember": "._pack_records",
    "PackRecord": "._pack_records",
}


def __getattr__(name: str) -> Any:
    if name not in _LATER:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LATER[name], __name__), name)
    globals()[name] = value
    return value

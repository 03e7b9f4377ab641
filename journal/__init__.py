"""The SQLite journal: what was planned, sent, acknowledged and verified.

Imports nothing else of flowxfer's. :class:`Journal` owns all SQL; the engine
records progress in :class:`JournalBatch` objects that commit in one
transaction each, and takes :class:`Lease` objects so one process at a time
runs a given piece of work.
"""

from __future__ import annotations

from ._journal import (
    ChunkRecord,
    FileRecord,
    InventoryRecord,
    Journal,
    JournalBatch,
    JournalBusyError,
    JournalCorruptError,
    JournalError,
    JournalVersionError,
    Lease,
    LeaseHeld,
    NewFile,
    PackMember,
    PackRecord,
    TransferRecord,
    TransferSummary,
    default_journal_path,
    import_sqlite_utils_without_array_libraries,
)
from ._samples import NewSample, SampleInventoryRecord, SampleRecord, SampleState
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

__all__ = [
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
    "JournalVersionError",
    "Lease",
    "LeaseHeld",
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
    "import_sqlite_utils_without_array_libraries",
    "transfer_outcome",
]

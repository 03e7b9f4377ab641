"""The file and chunk state machines: which journal state changes are legal.

Pure logic, no I/O. The journal refuses an illegal transition instead of
silently recording it, because an illegal transition is a bug that could make
the journal claim more than the server (uploads) or the disk (downloads) holds:
every status change goes through :meth:`JournalBatch.file_state` or
:meth:`JournalBatch.chunk`, checked against the row's state when the batch
commits (``Journal.commit`` raises :class:`IllegalTransition`).

File states::

    planned ──start──► active ──finish──► done
       │                 │  └──fail────► failed ──retry──► planned
       │                 └──interrupt──► planned
       └──skip──► skipped

Chunk states (one row per planned chunk)::

    planned ──ack──► acked ──verify──► verified
                       └──lose──► planned   (resume found the server/disk holds less)

``acked`` means the server answered 2xx for the chunk (upload) or its bytes
were written and matched their hash and the file was fsynced (download).
``verified`` means the whole file it belongs to passed its final check.
There is no ``sent`` state: a chunk whose answer is lost is asked about (the
server says what it holds), so recording "sent" would cost a journal write
per chunk that nothing reads.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class FileState(StrEnum):
    PLANNED = "planned"
    ACTIVE = "active"
    DONE = "done"
    SKIPPED = "skipped"
    FAILED = "failed"


class ChunkState(StrEnum):
    PLANNED = "planned"
    ACKED = "acked"
    VERIFIED = "verified"


class TransferState(StrEnum):
    """A transfer's overall state, as ``cli.md`` names them (plus ``running``)."""

    RUNNING = "running"
    COMPLETED = "completed"
    PARTIAL = "partial"
    FAILED = "failed"
    INTERRUPTED = "interrupted"


FINISHED_FILE_STATES = frozenset({FileState.DONE, FileState.SKIPPED})

_FILE_TRANSITIONS: dict[FileState, frozenset[FileState]] = {
    FileState.PLANNED: frozenset({FileState.ACTIVE, FileState.SKIPPED, FileState.FAILED, FileState.DONE}),
    FileState.ACTIVE: frozenset({FileState.DONE, FileState.FAILED, FileState.PLANNED, FileState.SKIPPED}),
    FileState.FAILED: frozenset({FileState.PLANNED, FileState.ACTIVE}),
    FileState.DONE: frozenset(),
    FileState.SKIPPED: frozenset(),
}

_CHUNK_TRANSITIONS: dict[ChunkState, frozenset[ChunkState]] = {
    ChunkState.PLANNED: frozenset({ChunkState.ACKED}),
    ChunkState.ACKED: frozenset({ChunkState.VERIFIED, ChunkState.PLANNED}),
    ChunkState.VERIFIED: frozenset(),
}


def legal_changes(machine: type[FileState] | type[ChunkState]) -> list[tuple[str, str]]:
    """Every legal ``(current, new)`` change of a machine (staying put aside): for checks run in SQL."""
    table: dict[Any, frozenset[Any]] = _FILE_TRANSITIONS if machine is FileState else _CHUNK_TRANSITIONS
    return sorted((current.value, new.value) for current, targets in table.items() for new in targets)


class IllegalTransition(ValueError):
    """A state change the machine does not allow: a bug in the caller."""


def check_file_transition(current: FileState, new: FileState) -> None:
    """Raise :class:`IllegalTransition` unless ``current -> new`` is legal.

    Staying in the same state is always legal (idempotent replays after a
    crash re-record what was already recorded).
    """
    if current != new and new not in _FILE_TRANSITIONS[current]:
        raise IllegalTransition(f"file cannot go from {current} to {new}")


def check_chunk_transition(current: ChunkState, new: ChunkState) -> None:
    """Raise :class:`IllegalTransition` unless ``current -> new`` is legal."""
    if current != new and new not in _CHUNK_TRANSITIONS[current]:
        raise IllegalTransition(f"chunk cannot go from {current} to {new}")


def transfer_outcome(counts: dict[FileState, int], interrupted: bool) -> TransferState:
    """The transfer's state from how many of its files are in each state.

    :param interrupted: the run stopped early (signal, budget, deadline).
    """
    total = sum(counts.values())
    finished = counts.get(FileState.DONE, 0) + counts.get(FileState.SKIPPED, 0)
    failed = counts.get(FileState.FAILED, 0)
    if finished == total:
        return TransferState.COMPLETED
    if interrupted:
        return TransferState.INTERRUPTED
    if failed and finished:
        return TransferState.PARTIAL
    if failed:
        return TransferState.FAILED
    return TransferState.INTERRUPTED

"""Progress events: what the engine tells whoever watches (the CLI, another tool).

The engine calls one synchronous callback with these objects; it must be
cheap (the CLI only updates counters and redraws on its own clock). Events
carry no secrets.

The events of jobs, executions and samples live in :mod:`._job_events` and
load on first use (``events.SampleStarted`` works as before): a plain
upload or download never sends them, and each class costs its start-up.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

if TYPE_CHECKING:
    from ._job_events import (
        ExecutionWaiting,
        JobProgress,
        SampleAsking,
        SampleFile,
        SampleFinished,
        SamplesPlanned,
        SampleStarted,
    )

__all__ = [
    "TRANSFER_EVENTS",
    "BytesMoved",
    "Event",
    "ExecutionWaiting",
    "FileFinished",
    "FileStarted",
    "FileVerifying",
    "FilesPlanned",
    "JobProgress",
    "Notice",
    "ProgressCallback",
    "Retrying",
    "SampleAsking",
    "SampleFile",
    "SampleFinished",
    "SampleStarted",
    "SamplesPlanned",
    "TransferStarted",
    "Waiting",
    "ignore_events",
]


@dataclass(frozen=True, slots=True)
class TransferStarted:
    """The plan is made; ``files_done``/``bytes_done`` are what earlier runs (or skips) already did."""

    transfer_id: str
    kind: str
    files_total: int
    bytes_total: int
    resumed: bool
    files_done: int = 0
    bytes_done: int = 0


@dataclass(frozen=True, slots=True)
class FilesPlanned:
    """More files joined the plan (directory scans stream in)."""

    files: int
    bytes: int


@dataclass(frozen=True, slots=True)
class FileStarted:
    path: str
    name: str
    size: int
    bytes_done: int


@dataclass(frozen=True, slots=True)
class BytesMoved:
    path: str
    nbytes: int


@dataclass(frozen=True, slots=True)
class FileVerifying:
    path: str


@dataclass(frozen=True, slots=True)
class FileFinished:
    path: str
    name: str
    status: str
    size: int
    data_id: str | None
    error: str | None


@dataclass(frozen=True, slots=True)
class Waiting:
    """Waiting for rate-limit budget (or bandwidth); ``seconds`` is the expected wait."""

    rate_class: str
    seconds: float
    limit: str


@dataclass(frozen=True, slots=True)
class Retrying:
    what: str
    reason: str
    attempt: int
    max_attempts: int
    delay: float


@dataclass(frozen=True, slots=True)
class Notice:
    message: str


if TYPE_CHECKING:
    #: Every event the engine sends. At run time the union is built on first use (:func:`__getattr__`):
    #: some of its classes load on first use, and our own modules name it in annotations only.
    Event: TypeAlias = (
        TransferStarted
        | FilesPlanned
        | FileStarted
        | BytesMoved
        | FileVerifying
        | FileFinished
        | Waiting
        | Retrying
        | Notice
        | JobProgress
        | ExecutionWaiting
        | SamplesPlanned
        | SampleStarted
        | SampleAsking
        | SampleFinished
    )
    ProgressCallback: TypeAlias = Callable[[Event], None]

#: The events of every upload and download, defined here. A watcher that has handled these can
#: leave the rest (:mod:`._job_events`) to code that imports them: an object of one of those
#: classes exists only once its module is loaded.
TRANSFER_EVENTS = (
    TransferStarted,
    FilesPlanned,
    FileStarted,
    BytesMoved,
    FileVerifying,
    FileFinished,
    Waiting,
    Retrying,
    Notice,
)

#: The events of jobs, executions and samples: loaded on first use from :mod:`._job_events`.
_LATER = frozenset(
    {
        "JobProgress",
        "ExecutionWaiting",
        "SamplesPlanned",
        "SampleFile",
        "SampleStarted",
        "SampleAsking",
        "SampleFinished",
    }
)


def __getattr__(name: str) -> Any:
    if name in ("Event", "ProgressCallback"):
        # The public union as it always was, usable at run time (isinstance, typing.get_args).
        from . import _job_events as j

        union = TRANSFER_EVENTS + (j.JobProgress, j.ExecutionWaiting, j.SamplesPlanned, j.SampleStarted)
        event = functools.reduce(operator.or_, union + (j.SampleAsking, j.SampleFinished))
        globals().update(Event=event, ProgressCallback=Callable[[event], None])
        return globals()[name]
    if name not in _LATER:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from . import _job_events

    value = getattr(_job_events, name)
    globals()[name] = value
    return value


def ignore_events(event: Event) -> None:
    """The default callback: nobody is watching."""

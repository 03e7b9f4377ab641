"""Progress events: what the engine tells whoever watches (the CLI, another tool).

The engine calls one synchronous callback with these objects; it must be
cheap (the CLI only updates counters and redraws on its own clock). Events
carry no secrets.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TransferStarted:
    transfer_id: str
    kind: str
    files_total: int
    bytes_total: int
    resumed: bool


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


@dataclass(frozen=True, slots=True)
class JobProgress:
    """A server-side archive job's state while we poll it."""

    job_id: str
    status: str
    progress: float


Event = (
    TransferStarted | FilesPlanned | FileStarted | BytesMoved | FileVerifying | FileFinished | Waiting
    | Retrying | Notice | JobProgress
)
ProgressCallback = Callable[[Event], None]


def ignore_events(event: Event) -> None:
    """The default callback: nobody is watching."""


@dataclass(frozen=True, slots=True)
class SampleStarted:
    """A sample's files begin to go up (``samples upload-batch``): its row, name and file count."""

    row: int
    name: str
    files: int


@dataclass(frozen=True, slots=True)
class SampleFinished:
    """A sample ended: ``done`` (made now), ``skipped`` (made by an earlier run) or ``failed``."""

    row: int
    name: str
    status: str
    sample_id: str | None
    error: str | None

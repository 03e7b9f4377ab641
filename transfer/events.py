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


@dataclass(frozen=True, slots=True)
class JobProgress:
    """A server-side archive job's state while we poll it."""

    job_id: str
    status: str
    progress: float


@dataclass(frozen=True, slots=True)
class ExecutionWaiting:
    """A pipeline execution polled while we wait for it (``download --execution --wait``).

    ``status`` is the execution's (``""`` or ``"-"`` while it runs; ``OK``,
    ``ERROR``, ``CANCELED`` at the end); ``next_poll`` the seconds to the next
    poll, None once it is terminal or we stop waiting.
    """

    execution_id: str
    identifier: str
    status: str
    waited: float
    next_poll: float | None


@dataclass(frozen=True, slots=True)
class SamplesPlanned:
    """A samples transfer's plan: ``samples`` to make in all, ``done`` of them made already (earlier runs)."""

    samples: int
    done: int


@dataclass(frozen=True, slots=True)
class SampleFile:
    """One file of a sample as it stands when the sample starts: ``finished`` when an earlier run sent it."""

    path: str
    label: str
    size: int
    bytes_done: int
    finished: bool


@dataclass(frozen=True, slots=True)
class SampleStarted:
    """A sample's files begin to go up (``samples upload-batch``): its row, name and file count.

    ``reads`` are its files in the order they are sent (``path`` as in
    ``FileStarted``), so a watcher can tell which sample a file's bytes belong
    to and how far the whole sample is.
    """

    row: int
    name: str
    files: int
    reads: tuple[SampleFile, ...] = ()


@dataclass(frozen=True, slots=True)
class SampleAsking:
    """The server is asked whether it made the sample (its final answer may be lost): nothing is sent meanwhile."""

    row: int
    name: str


@dataclass(frozen=True, slots=True)
class SampleFinished:
    """A sample ended: ``done`` (made now), ``skipped`` (made by an earlier run) or ``failed``."""

    row: int
    name: str
    status: str
    sample_id: str | None
    error: str | None


Event = (
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
ProgressCallback = Callable[[Event], None]


def ignore_events(event: Event) -> None:
    """The default callback: nobody is watching."""

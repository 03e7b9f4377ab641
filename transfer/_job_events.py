"""Progress events of server-side jobs, executions and samples (re-exported by :mod:`.events`).

Why a module of their own: every command loads :mod:`.events`, and each
frozen dataclass costs about a millisecond to define at start-up (issue
20: the fixed cost per command). A plain upload or download never sends
these; the code that does (bulk archives, executions, samples) loads them.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "ExecutionWaiting",
    "JobProgress",
    "SampleAsking",
    "SampleFile",
    "SampleFinished",
    "SampleStarted",
    "SamplesPlanned",
]


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

"""What every worker of one transfer shares: the byte budget, the journal writer, the context.

Kept apart from the workers so that uploads, downloads, bulk and sync all run
on the same few mechanisms.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import anyio
from anyio.abc import TaskGroup

from flowxfer.journal import FileRecord, Journal, JournalBatch, JournalUnavailableError

from ._client import Capabilities, FlowClient
from ._config import TransferConfig
from ._pathmap import PathMap
from ._sources import ReadAhead

if TYPE_CHECKING:
    from .events import ProgressCallback


def _leaves(group: BaseExceptionGroup) -> list[BaseException]:
    leaves: list[BaseException] = []
    for exc in group.exceptions:
        leaves.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return leaves


@asynccontextmanager
async def task_group() -> AsyncIterator[TaskGroup]:
    """An anyio task group that re-raises the first real error instead of an ExceptionGroup.

    Our workers fail one at a time for one reason; callers want ``except
    StopRequested`` to work, not to unpack groups. Secondary errors (raised
    while the group was being cancelled because of the first) are chained as
    the first one's ``__context__`` by Python already, or are cancellations.
    """
    try:
        async with anyio.create_task_group() as group:
            yield group
    except BaseExceptionGroup as grouped:
        leaves = _leaves(grouped)
        cancelled = anyio.get_cancelled_exc_class()
        real = [leaf for leaf in leaves if not isinstance(leaf, cancelled)]
        raise (real or leaves)[0] from None


#: Automatic upload chunk sizes: large chunks mean few requests and few server fsyncs,
#: and cost no memory because chunks are streamed. Hosted Flow states no limit: 16 MiB
#: is large enough to be fast and small enough for common proxies; a 413 halves it.
AUTO_CHUNK_WITH_EXTENSIONS = 64 * 1024 * 1024
AUTO_CHUNK_HOSTED = 16 * 1024 * 1024


class ByteBudget:
    """A semaphore counted in bytes: bounds the memory held by reads and writes in flight.

    A request larger than the whole budget is admitted alone (when nothing
    else is held) instead of waiting forever. :meth:`release` is synchronous
    so that cleanup code running under cancellation can always give bytes back.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.peak = 0
        self._freed = anyio.Event()

    async def acquire(self, nbytes: int) -> None:
        while self.used and self.used + nbytes > self.limit:
            await self._freed.wait()
        self.used += nbytes
        self.peak = max(self.peak, self.used)

    def release(self, nbytes: int) -> None:
        self.used -= nbytes
        self._freed.set()
        self._freed = anyio.Event()


class JournalWriter:
    """Batches progress events and commits them every ``interval`` seconds or ``max_events`` events.

    Workers add events to :attr:`batch` (on the event loop) and call
    :meth:`added`; :meth:`flush` swaps the batch and commits it in a worker
    thread. After ``await flush()`` returns, every event added before the call
    is durable — which is what a worker awaits before it closes a file whose
    descriptor a batch still has to ``fdatasync``.
    """

    def __init__(
        self,
        journal: Journal,
        interval: float,
        max_events: int,
        on_unavailable: Callable[[JournalUnavailableError], None] | None = None,
    ) -> None:
        self.journal = journal
        self.interval = interval
        self.max_events = max_events
        self.batch = JournalBatch()
        self.commits = 0
        #: Batches a commit failed for (the database away): committed first, in order, by the next flush.
        self._unsaved: list[JournalBatch] = []
        self._on_unavailable = on_unavailable
        self._lock = anyio.Lock()
        self._wake = anyio.Event()

    def added(self) -> None:
        if len(self.batch) >= self.max_events:
            self._wake.set()

    async def flush(self) -> None:
        async with self._lock:
            # Once the batch is swapped out nothing may cancel its commit: a flush cancelled
            # while it waited for a worker thread (the transfer ending under it) lost every
            # event of the batch, e.g. a finished file's "done".
            # A batch whose commit failed (the journal's database away past --max-wait) is kept,
            # not dropped: the next flush commits it first, so a database that comes back in time
            # for the run's last flush loses nothing.
            with anyio.CancelScope(shield=True):
                batch, self.batch = self.batch, JournalBatch()
                if len(batch) or batch.fds:
                    self._unsaved.append(batch)
                while self._unsaved:
                    await anyio.to_thread.run_sync(self.journal.commit, self._unsaved[0])
                    self._unsaved.pop(0)
                    self.commits += 1

    async def run(self) -> None:
        """Commit periodically until cancelled (the caller does a final shielded flush)."""
        while True:
            with anyio.move_on_after(self.interval):
                await self._wake.wait()
            self._wake = anyio.Event()
            try:
                await self.flush()
            except JournalUnavailableError as exc:
                if self._on_unavailable is None:
                    raise
                self._on_unavailable(exc)


@dataclass
class Counters:
    """What a run did, for the report and the closing table."""

    bytes_transferred: int = 0
    bytes_resent: int = 0
    chunks_refetched: int = 0
    files_restarted: int = 0
    #: How the files of this run were verified (one phrase per method used).
    verified: set[str] = field(default_factory=set)


@dataclass
class TransferContext:
    """Everything a file worker needs, passed explicitly (no globals, easy to drive in tests)."""

    transfer_id: str
    client: FlowClient
    journal: Journal
    writer: JournalWriter
    config: TransferConfig
    capabilities: Capabilities
    budget: ByteBudget
    events: ProgressCallback
    server: str
    username: str
    stopping: Callable[[], bool]
    counters: Counters = field(default_factory=Counters)
    read_ahead: ReadAhead | None = None
    #: Which of the files still to do are handed to workers (None: all). A sample's worker
    #: takes the whole sample, its files in order, so only one file of each is handed out.
    feed: Callable[[FileRecord], bool] | None = None
    #: Held while a directory archive's body is being sent: one at a time (see :class:`_ChunkPayload`).
    archive_gate: anyio.Lock = field(default_factory=anyio.Lock)
    #: ``--path-map``: workers get records with this host's paths; the journal keeps the journal form.
    paths: PathMap = field(default_factory=PathMap)
    #: Files being uploaded now: a large file's parallel chunks take the connections that other
    #: files leave (:func:`._upload_parallel.parallel_streams`).
    uploads_active: int = 0
    #: The rate (bytes/s) an earlier transfer with this server carried in this one's direction,
    #: when recent (:mod:`._capcache`): the path's counts are fitted to it (:mod:`._pathfit`).
    measured_rate: float | None = None
    #: Set once the round trip measured beside the plan is known (``Runner.run(measure_early=True)``);
    #: None when no such measure was started (:func:`._pathfit.measure_round_trip` waits for it).
    early_measure: anyio.Event | None = None

    def chunk_size(self) -> int:
        """The upload chunk size: the one asked for, or the largest sensible one the server accepts."""
        limit = self.capabilities.max_chunk_size
        if self.config.chunk_size is not None:
            size = self.config.chunk_size
        elif limit:
            size = AUTO_CHUNK_WITH_EXTENSIONS
        else:
            size = AUTO_CHUNK_HOSTED
        if limit:
            size = min(size, limit)
        return max(1, size)

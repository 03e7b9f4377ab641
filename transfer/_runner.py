"""The runner: how every transfer runs, whatever it moves.

A transfer is planned into the journal, then worked by a pool of file
workers under one anyio task group, with a journal writer, a lease heartbeat
and a bucket-sharing loop beside them; the journal is left consistent
however the run ends. The facade (:class:`~._api.Flowxfer`) and the parts it
drives (uploads and downloads in :mod:`._workers`, :mod:`._bulk`,
:mod:`._sync`) hand the runner a planner and a file worker, and take it as an
argument for its events, its journal and its stop: none of them imports its
caller.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, cast

import anyio
from anyio.abc import ObjectReceiveStream, ObjectSendStream, TaskGroup

from flowxfer.journal import (
    FileRecord,
    FileState,
    IllegalTransition,
    Journal,
    JournalError,
    JournalUnavailableError,
    Lease,
    LeaseHeld,
    LeaseLost,
    TransferRecord,
    TransferState,
    transfer_outcome,
)

from ._client import Capabilities, FlowClient
from ._config import TransferConfig
from ._credentials import not_logged_in
from ._errors import AlreadyRunning, AuthError, BudgetExhausted, FlowxferError, JournalUnreachable, StopRequested
from ._journal_wait import PatientJournal
from ._limiter import RateLimiter, budget_server
from ._pathfit import fitted, measure_round_trip, needs_measure, recall_rate, remember_rate, warm_path
from ._pathmap import PathMap
from ._plan import params_key
from ._report import FileReport, TransferReport
from ._runtime import ByteBudget, JournalWriter, TransferContext, task_group
from ._sources import ReadAhead
from .events import FileFinished, Notice, TransferStarted

if TYPE_CHECKING:
    from .events import ProgressCallback

__all__ = ["Planner", "Runner", "Worker"]

#: Plans a transfer into the journal: ``(ctx, record, resumed)``.
Planner = Callable[[TransferContext, TransferRecord, bool], Awaitable[None]]
#: Works one file to its end and says how it ended.
Worker = Callable[[TransferContext, FileRecord], Awaitable[FileReport]]

#: Why a run stops when its heartbeat finds its lease another's.
TAKEN_OVER = "another host or process has taken over this transfer (its lease was stale)"

#: The statuses of the files a run still has to work on.
_TODO = (FileState.PLANNED, FileState.ACTIVE, FileState.FAILED)


def share_budget(limiter: RateLimiter, journal: Journal, server: str, username: str) -> None:
    """Spend the rate-limit budget of ``username`` on ``server`` with every process sharing ``journal``.

    On PostgreSQL (a journal shared by hosts) each request's token is taken
    from the stored bucket in a transaction, so the fleet together never
    overspends a window; on SQLite (one host) the limiter merges its own
    bucket every ``bucket_sync_interval``, at no cost per request.
    """
    limiter.store = partial(journal.update_buckets, budget_server(server), username)
    limiter.shared = journal.location.backend == "postgresql"


class Runner:
    """Runs the transfers of one :class:`~._api.Flowxfer`: its events, its journal, its stop.

    :param open_journal: opens the journal on first use (``login`` never needs one).
    """

    def __init__(
        self,
        base_url: str,
        config: TransferConfig,
        events: ProgressCallback,
        open_journal: Callable[[], Awaitable[Journal]],
    ) -> None:
        self.base_url = base_url
        self.config = config
        self.events = events
        self._open_journal = open_journal
        #: ``--path-map``: how this host's paths and the journal's differ (see :mod:`._pathmap`).
        self.paths = PathMap()
        self._client: FlowClient | None = None
        self._stopping = False
        self._stop_reason: str | None = None
        self._stop_event = anyio.Event()
        #: Set when this run's lease may be another host's now: the run must not write its end.
        self.lease_lost = False
        #: The scope of the running transfer's workers: cancelled at once when its lease is lost.
        self._workers: anyio.CancelScope | None = None
        #: Leases held around this runner's transfers (``sync --samples``' visit of a run): each
        #: transfer's writes are fenced by them as well as by its own lease.
        self.spanning: list[Lease] = []

    @property
    def client(self) -> FlowClient:
        if self._client is None:
            raise RuntimeError("use 'async with Flowxfer(...)'")
        return self._client

    def attach(self, client: FlowClient) -> None:
        """The HTTP client transfers use (set when the facade is entered)."""
        self._client = client

    @property
    def attached(self) -> bool:
        return self._client is not None

    async def journal(self) -> Journal:
        return await self._open_journal()

    def emit(self, event: Any) -> None:
        self.events(event)

    def _notice_from_any_thread(self, message: str) -> None:
        """Emit a :class:`Notice` from a worker thread (journal calls run there) or the event loop."""
        try:
            anyio.from_thread.run_sync(self.emit, Notice(message))
        except RuntimeError:  # already on the event loop's thread
            self.emit(Notice(message))

    def require_login(self) -> FlowClient:
        """:raises AuthError: no credentials (nothing would get past the server's login)."""
        client = self.client
        if client.tokens is None:
            raise not_logged_in(client.store, self.base_url)
        return client

    async def adopt_budget(self, journal: Journal) -> None:
        """Share rate-limit buckets through the journal and take what other runs left of them."""
        share_budget(self.client.limiter, journal, self.base_url, self.client.username)
        await self.client.limiter.sync()

    async def pause(self, seconds: float) -> None:
        """Wait for rate-limit budget or before a retry -- unless asked to stop.

        Nothing is in flight during such a wait, so a stop ends it at once
        (a SIGINT used to sit out a 30 s Retry-After, then the grace period).

        :raises StopRequested: the transfer is stopping.
        """
        if not self._stopping:
            with anyio.move_on_after(seconds):
                await self._stop_event.wait()
        if self._stopping:
            raise StopRequested(
                "stopped while waiting (for rate-limit budget, or to retry); the journal holds where it stopped"
            )

    def stop(self, reason: str = "stopped") -> None:
        """Stop taking new work; in-flight requests get ``grace_period`` to finish.

        Call from the event loop's thread (a signal handler task, a callback).
        """
        if not self._stopping:
            self._stopping = True
            self._stop_reason = self._stop_reason or reason
            self._stop_event.set()

    @property
    def stopping(self) -> bool:
        return self._stopping

    def clear_stop(self) -> None:
        """Take work again after a stop that was one transfer's own end (``--max-wait`` on an execution)."""
        self._stopping = False
        self._stop_reason = None
        self._stop_event = anyio.Event()

    async def run(
        self,
        kind: str,
        params: dict[str, Any],
        plan: Planner,
        work: Worker,
        *,
        transfer_id: str | None = None,
        extra_state: dict[str, Any] | None = None,
        leases: Sequence[str] = (),
        read_ahead: Callable[[FileRecord], bool] | None = None,
        feed: Callable[[FileRecord], bool] | None = None,
        measure_early: bool = False,
    ) -> TransferReport:
        """Plan, then work every file not yet finished, under a lease; always leave the journal consistent.

        :param read_ahead: which records are plain local files to upload: small ones are read
            ahead of their workers (:class:`ReadAhead`).
        :param measure_early: open the connection the path's measure uses while the journal
            opens and the plan runs (:func:`._pathfit.warm_path`): a plan that scans a folder
            lasts long enough to hide a new connection's handshake and first GET, so one
            round trip is left after the plan instead of a handshake and two.
        """
        async with task_group() as early:
            try:
                return await self._run(
                    kind,
                    params,
                    plan,
                    work,
                    transfer_id=transfer_id,
                    extra_state=extra_state,
                    leases=leases,
                    read_ahead=read_ahead,
                    feed=feed,
                    early=early if measure_early else None,
                )
            finally:
                early.cancel_scope.cancel()  # a GET still waiting has nobody left to serve

    async def _run(
        self,
        kind: str,
        params: dict[str, Any],
        plan: Planner,
        work: Worker,
        *,
        transfer_id: str | None,
        extra_state: dict[str, Any] | None,
        leases: Sequence[str],
        read_ahead: Callable[[FileRecord], bool] | None,
        feed: Callable[[FileRecord], bool] | None,
        early: TaskGroup | None,
    ) -> TransferReport:
        """:meth:`run` itself; ``early`` holds the connection's opening GET when it goes beside the plan."""
        client = self.require_login()
        # Counted from here, before the first await: a caller may have a request of this run's
        # in flight already (a download asks what its ids are while the journal opens).
        retries_before = client.retries
        requests_before = client.limiter.requests_by_class()
        # The capabilities probe (a round trip when not remembered) runs while the journal opens.
        probed: list[Capabilities] = []

        measured: anyio.Event | None = None
        if early is not None and needs_measure(self.config):
            measured = anyio.Event()

            async def measure() -> None:
                assert measured is not None
                try:
                    await warm_path(self.config, client)
                finally:
                    measured.set()

        async def probe() -> None:
            probed.append(await client.capabilities())
            if early is not None and measured is not None:
                early.start_soon(measure)  # after the probe: none needed when it asked the server

        async with task_group() as group:
            group.start_soon(probe)
            raw_journal = await self.journal()
        capabilities = probed[0]
        patient = PatientJournal(
            raw_journal,
            max_wait=self.config.max_wait,
            stopping=lambda: self._stopping,
            on_wait=self._notice_from_any_thread,
        )
        journal = cast(Journal, patient)
        server, username = self.base_url, client.username
        what = f"flowxfer {kind}"
        held: list[Lease] = []
        self.lease_lost = False
        try:
            for key in leases:
                held.append(
                    await anyio.to_thread.run_sync(
                        partial(journal.acquire_lease, key, what=what, stale_after=self.config.lease_stale_after)
                    )
                )
            if transfer_id is not None:
                record, lease = await anyio.to_thread.run_sync(
                    partial(journal.reopen_transfer, transfer_id, what=what, stale_after=self.config.lease_stale_after)
                )
                resumed = True
            else:
                record, lease, resumed = await anyio.to_thread.run_sync(
                    partial(
                        journal.begin_transfer,
                        kind,
                        server,
                        username,
                        params,
                        params_key(kind, server, username, params),
                        what=what,
                        stale_after=self.config.lease_stale_after,
                    )
                )
        except LeaseHeld as exc:
            for other in held:
                await anyio.to_thread.run_sync(other.release)
            raise AlreadyRunning(str(exc)) from None
        held.append(lease)
        patient.fence([*self.spanning, lease], self._lose_lease_from_any_thread)
        if extra_state:
            try:
                state = await anyio.to_thread.run_sync(partial(journal.update_transfer_state, record.id, **extra_state))
            except LeaseLost as exc:
                # Frozen between taking the lease and its first write: the work is another host's now.
                raise AlreadyRunning(str(exc)) from None
            record = dataclasses.replace(record, state=state)

        share_budget(client.limiter, journal, server, username)
        writer = JournalWriter(
            journal, self.config.journal_flush_interval, self.config.journal_flush_events, self._database_gone
        )
        ctx = TransferContext(
            transfer_id=record.id,
            client=client,
            journal=journal,
            writer=writer,
            config=self.config,
            capabilities=capabilities,
            budget=ByteBudget(self.config.byte_budget),
            events=self.emit,
            server=server,
            username=username,
            stopping=lambda: self._stopping,
            read_ahead=ReadAhead(read_ahead) if read_ahead is not None else None,
            feed=feed,
            paths=self.paths,
            early_measure=measured,
        )
        started = time.monotonic()
        failure: BaseException | None = None
        try:
            await client.limiter.sync()  # adopt the budget other processes left us
            if resumed:
                await anyio.to_thread.run_sync(journal.reset_interrupted_files, record.id)
            await plan(ctx, record, resumed)
            summary = await anyio.to_thread.run_sync(journal.summary, record.id)
            self.emit(
                TransferStarted(
                    record.id,
                    kind,
                    summary.files_total,
                    summary.bytes_total,
                    resumed,
                    summary.files_finished,
                    summary.bytes_done + summary.bytes_skipped,
                )
            )
            await recall_rate(ctx, kind)
            working = time.monotonic()
            await self._work(ctx, work, held, raw_journal)
            await remember_rate(ctx, kind, time.monotonic() - working)
        except StopRequested:
            pass  # a wait cut short while planning: an interrupted run like any other
        except LeaseLost:
            pass  # a write found the lease another host's: the run stopped (lease-lost), ends interrupted
        except BaseException as exc:
            failure = exc
            raise
        finally:
            with anyio.CancelScope(shield=True):
                try:
                    await self._finish(ctx, record, held, failure)
                except LeaseLost:
                    pass  # its end is the new holder's to write (the run stopped: lease-lost)
                except JournalUnavailableError as exc:
                    if failure is None:
                        raise JournalUnreachable(
                            f"the journal database is unreachable ({exc}); what the server acknowledged is safe "
                            "on the server, and the same command (or 'flowxfer resume') continues once it is back"
                        ) from None
        return await self._report(ctx, record, resumed, started, retries_before, requests_before)

    async def _finish(
        self, ctx: TransferContext, record: TransferRecord, held: list[Lease], failure: BaseException | None
    ) -> None:
        journal = ctx.journal
        illegal: IllegalTransition | None = None
        try:
            await ctx.writer.flush()
            await ctx.client.limiter.sync()
        except JournalError:
            if failure is None:
                raise
        except IllegalTransition as exc:
            # A bug, raised below; the batch rolled back, so the run still ends as recorded and frees its leases.
            illegal = exc
        summary = await anyio.to_thread.run_sync(journal.summary, record.id)
        counts = {FileState(k): v for k, v in summary.files_by_status.items()}
        interrupted = self._stopping or (failure is not None and not isinstance(failure, FlowxferError | JournalError))
        status = transfer_outcome(counts, interrupted)
        if failure is not None and status is TransferState.COMPLETED and summary.files_total == 0:
            status = TransferState.FAILED
        if interrupted and status is TransferState.COMPLETED and summary.files_total == 0:
            # Stopped while planning (a signal, --max-wait on an execution): nothing was done yet.
            status = TransferState.INTERRUPTED
        error = str(failure) if isinstance(failure, FlowxferError | JournalError) else None
        if self.lease_lost:
            # Another host may be running it now: its row, its leases and its end are that host's to write.
            return
        if failure is not None and summary.files_total == 0 and not record.state.get("planned"):
            # Planning itself failed (a bad id, a bad name): there is nothing to resume.
            await anyio.to_thread.run_sync(journal.delete_transfer, record.id)
        else:
            await anyio.to_thread.run_sync(journal.finish_transfer, record.id, status, error)
        for lease in held:
            await anyio.to_thread.run_sync(lease.release)
        if illegal is not None and failure is None:
            raise illegal

    async def _work(self, ctx: TransferContext, work: Worker, leases: list[Lease], raw_journal: Journal) -> None:
        async with task_group() as background:
            background.start_soon(ctx.writer.run)
            background.start_soon(self._heartbeat, raw_journal, leases)
            background.start_soon(self._share_budget, ctx)
            with anyio.CancelScope() as scope:
                self._workers = scope
                if self.lease_lost:
                    scope.cancel()
                background.start_soon(self._grace_watchdog, scope)
                try:
                    async with task_group() as workers:
                        send, receive = anyio.create_memory_object_stream[FileRecord](ctx.config.concurrency_for(None))

                        def hire(count: int) -> None:
                            """Start ``count`` workers; once the producer closes ``receive``, none more."""
                            for _ in range(count):
                                workers.start_soon(self._worker, ctx, receive.clone(), work)

                        hire(ctx.config.concurrency_for(None))
                        workers.start_soon(self._produce, ctx, send, receive, hire)
                finally:
                    self._workers = None
            background.cancel_scope.cancel()

    async def _fit_path(self, ctx: TransferContext, waiting: int, hire: Callable[[int], None]) -> int:
        """Choose the counts the path needs (journaled as ``path``); hire workers past the floor.

        With more files waiting than ``concurrency`` on a long path, each
        file's round trip would leave its worker idle: more files go at once
        (:meth:`TransferConfig.concurrency_for`). Fewer files need no measure
        here (two GETs more before a download's first byte): each file's
        streams are counted when it starts.
        """
        floor = ctx.config.concurrency_for(None)
        if waiting > floor:
            await measure_round_trip(ctx, again=True)
        chosen = fitted(ctx, waiting)
        hire(chosen["concurrency"] - floor)
        if (chosen["round_trip_ms"] is not None or chosen["measured_rate"] is not None) and not self._stopping:
            try:
                await anyio.to_thread.run_sync(partial(ctx.journal.update_transfer_state, ctx.transfer_id, path=chosen))
            except JournalUnavailableError:
                pass  # only a record of the choice: the page's own read will meet the outage
        return int(chosen["concurrency"])

    async def _produce(
        self,
        ctx: TransferContext,
        send: ObjectSendStream[FileRecord],
        receive: ObjectReceiveStream[FileRecord],
        hire: Callable[[int], None],
    ) -> None:
        """Feed workers from the journal a page at a time: memory stays flat for a million files.

        ``receive`` is the workers' stream, kept open until the first page has
        said how many workers the path needs (:meth:`_fit_path`): then closed,
        so that once every worker has returned a send fails instead of waiting.
        """
        async with send, receive:
            after = 0
            group = 0
            while not self._stopping:
                try:
                    page = await anyio.to_thread.run_sync(
                        partial(ctx.journal.files_page, ctx.transfer_id, _TODO, after_id=after, limit=500)
                    )
                except JournalUnavailableError as exc:
                    self._database_gone(exc)
                    return
                if not page:
                    return
                after = page[-1].id
                if ctx.feed is not None:
                    page = [record for record in page if ctx.feed(record)]
                if ctx.paths:
                    page = [dataclasses.replace(r, local_path=ctx.paths.to_local(r.local_path)) for r in page]
                if not group:
                    group = await self._fit_path(ctx, len(page), hire)
                    await receive.aclose()
                for start in range(0, len(page), group):
                    records = page[start : start + group]
                    if ctx.read_ahead is not None and not self._stopping:
                        await ctx.read_ahead.read(records)
                    for record in records:
                        if self._stopping:
                            return
                        try:
                            await send.send(record)
                        except anyio.BrokenResourceError:
                            return  # every worker has returned (stopping): nobody is left to feed

    async def _worker(self, ctx: TransferContext, receive: ObjectReceiveStream[FileRecord], work: Worker) -> None:
        async with receive:
            async for record in receive:
                if self._stopping:
                    return
                try:
                    result = await work(ctx, record)
                except StopRequested:
                    return
                except BudgetExhausted as exc:
                    self.emit(Notice(str(exc)))
                    self._stop_reason = "budget"
                    self.stop("budget")
                    return
                except JournalUnavailableError as exc:
                    self._database_gone(exc)
                    return
                except (AuthError, AlreadyRunning):
                    raise
                except FlowxferError as exc:
                    ctx.writer.batch.file_state(
                        record.id,
                        FileState.FAILED,
                        error=str(exc)[:1000],
                        attempts=record.attempts + 1,
                        extra={**record.extra, "error_kind": exc.kind},
                    )
                    ctx.writer.added()
                    self.emit(
                        FileFinished(
                            record.local_path, record.remote_name, "failed", record.size, record.data_id, str(exc)
                        )
                    )
                    continue
                self.emit(FileFinished(result.path, result.filename, result.status, result.size, result.id, None))

    async def _grace_watchdog(self, scope: anyio.CancelScope) -> None:
        await self._stop_event.wait()
        await anyio.sleep(self.config.grace_period)
        scope.cancel()

    def _database_gone(self, exc: JournalUnavailableError) -> None:
        """The journal database stayed away past ``--max-wait``: stop taking work (exit 75)."""
        if self._stopping and self._stop_reason == "database":
            return  # said already; the writer keeps trying once per interval
        self.emit(Notice(f"the journal database stayed unreachable: {exc}; stopping after the requests in flight"))
        self.stop("database")

    async def _heartbeat(self, journal: Journal, leases: list[Lease]) -> None:
        """Renew the leases; stop working the transfer as soon as they may be another host's.

        Against the raw journal, not the patient one: a heartbeat must not wait
        out a database outage, it must notice that the outage has lasted longer
        than the lease TTL, after which another host may rightly have taken
        the transfer over.
        """
        renewed = time.monotonic()
        while True:
            await anyio.sleep(self.config.heartbeat_period)
            try:
                held = [await anyio.to_thread.run_sync(journal.heartbeat_held, lease.key) for lease in leases]
            except JournalUnavailableError:
                if time.monotonic() - renewed > self.config.lease_stale_after:
                    self.lose_lease(
                        f"could not renew the lease for {self.config.lease_stale_after:g} s (the lease TTL) "
                        "while the journal database was unreachable: another host may have taken over"
                    )
                    return
                continue
            if not all(held):
                self.lose_lease(TAKEN_OVER)
                return
            renewed = time.monotonic()

    def _lose_lease_from_any_thread(self, why: str) -> None:
        """A fenced commit found the lease another's (journal calls run in worker threads)."""
        if not self.lease_lost:
            try:
                anyio.from_thread.run_sync(self.lose_lease, why)
            except RuntimeError:  # already on the event loop's thread
                self.lose_lease(why)

    def lose_lease(self, why: str) -> None:
        """Stop the transfer at once: its workers are cancelled, not given the grace period.

        Another host may be working the same files now; nothing an in-flight request of ours
        brings back can be recorded (every write is fenced), so finishing it only costs requests.
        """
        if self.lease_lost:
            return
        self.lease_lost = True
        self.emit(Notice(f"{why}; stopping work on it"))
        self.stop("lease-lost")
        if self._workers is not None:
            self._workers.cancel()

    async def _share_budget(self, ctx: TransferContext) -> None:
        while True:
            await anyio.sleep(self.config.bucket_sync_interval)
            try:
                await ctx.client.limiter.sync()
            except JournalUnavailableError as exc:
                self._database_gone(exc)

    async def _report(
        self,
        ctx: TransferContext,
        record: TransferRecord,
        resumed: bool,
        started: float,
        retries_before: int,
        requests_before: dict[str, int],
    ) -> TransferReport:
        journal = ctx.journal

        def collect() -> tuple[list[FileReport], dict[str, int], TransferRecord | None]:
            files = []
            kinds: dict[str, int] = {}
            for row in journal.iter_files(record.id):
                status = (
                    row.status.value
                    if row.status in (FileState.DONE, FileState.SKIPPED, FileState.FAILED)
                    else "pending"
                )
                path = row.local_path
                files.append(FileReport(path, row.data_id, row.remote_name, row.size, status, row.error))
                if status == "failed":
                    kinds[row.extra.get("error_kind", "other")] = kinds.get(row.extra.get("error_kind", "other"), 0) + 1
            return files, kinds, journal.get_transfer(record.id)

        files, kinds, final = await anyio.to_thread.run_sync(collect)
        summary = await anyio.to_thread.run_sync(journal.summary, record.id)
        requests = ctx.client.limiter.requests_by_class()
        return TransferReport(
            transfer_id=record.id,
            kind=record.kind,
            # A lost lease: the journal's status is the new holder's ("running"); ours was cut short.
            status="interrupted" if self.lease_lost else final.status if final else "failed",
            files=files,
            bytes_transferred=ctx.counters.bytes_transferred,
            bytes_skipped=summary.bytes_skipped,
            seconds=time.monotonic() - started,
            retries=ctx.client.retries - retries_before,
            resumed=resumed,
            stop_reason=self._stop_reason if self._stopping else None,
            requests={k: v - requests_before.get(k, 0) for k, v in requests.items()},
            error_kinds=kinds,
            verified="; ".join(sorted(ctx.counters.verified)) or None,
        )

"""The server's metadata store: all of its SQL, behind one :class:`Store`.

The schema and every statement live in the ``_store*`` modules, so the rest
of the server calls named operations; this one puts the parts together
(:mod:`._store_base` the connection and schema, :mod:`._store_data` data
and chunks, :mod:`._store_search` the search, :mod:`._store_jobs` archive
jobs, :mod:`._store_accounts` users, groups and keys, :mod:`._store_samples`
projects and samples) and names what callers import. Methods are
synchronous and thread-safe (one connection behind a lock); the web layer
calls them through a dedicated single-thread executor (:meth:`Store.run`),
with group commit, so SQLite never blocks the event loop.

Durability: WAL with ``synchronous=FULL``, so a transaction that returned is
on disk; the upload path commits a chunk's row only after the chunk's bytes
were ``fdatasync``ed, and answers 200 only after the commit.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from flowxfer._os import fsync_dir

from ._store_accounts import AccountStore, UserRow
from ._store_base import DB_NAME, StoreError
from ._store_data import FAILED, FINALIZING, READY, UPLOADING, ChunkRow, DataRow, DataStore, TreeFile
from ._store_executions import ExecutionStoreMixin
from ._store_jobs import JobRow, JobStore
from ._store_samples import SampleStoreMixin
from ._store_search import SORTS, SearchFilter, SearchStore

__all__ = [
    "DB_NAME",
    "FAILED",
    "FINALIZING",
    "READY",
    "SORTS",
    "UPLOADING",
    "ChunkRow",
    "DataRow",
    "FlushError",
    "JobRow",
    "SearchFilter",
    "Store",
    "StoreError",
    "TreeFile",
    "UserRow",
]

P = ParamSpec("P")
T = TypeVar("T")


@dataclass(frozen=True)
class _Call:
    """A store method waiting for its batch; ``flush_first``: a folder to ``fsync`` before the batch's commit."""

    fn: Callable[[], Any]
    flush_first: Path | None
    future: asyncio.Future[Any]


class FlushError(StoreError):
    """A folder named by :meth:`Store.run_after_flushing` could not be flushed: the call was not run."""


class Store(SampleStoreMixin, ExecutionStoreMixin, DataStore, SearchStore, JobStore, AccountStore):
    """The metadata database under the server's root: every table group's part, and the group commit."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self._pending: list[_Call] = []
        self._draining = False
        self._drainer: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run one store method in the store's own thread, off the event loop, with group commit.

        With ``synchronous=FULL`` every COMMIT waits for a disk flush, and one
        thread commits for every request: concurrent uploads queued behind each
        other's flushes. Calls that arrive while a batch is being committed now
        wait together and run as the next batch, in one transaction (each in
        its own SAVEPOINT, so one call's failure is its own), with one flush
        (and, before it, one of each folder :meth:`run_after_flushing` names).
        A call returns only after the COMMIT that holds it.
        """
        return await self._submit(functools.partial(fn, *args, **kwargs), None)

    async def run_after_flushing(self, folder: Path, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """:meth:`run`, with ``folder`` ``fsync``ed before the transaction that holds the call begins.

        For a row that names a file just created in ``folder`` (its bytes
        already flushed): the row is committed only once the file's name is
        durable too. One flush of a folder serves every call of its batch
        (3 small uploads at the median, 8 at p90). A flush per small whole
        upload, in the I/O thread that wrote it, made 10,000 uploads of
        16 KiB take 10.4 s instead of 8.8 s (medians of five alternating
        runs of ``flowxfer sync``): each flush wrote the folder's blocks
        again and cost ~0.15 ms of server CPU.

        :raises FlushError: the flush failed; the call was not run.
        """
        return await self._submit(functools.partial(fn, *args, **kwargs), folder)

    async def _submit(self, call: Callable[[], T], flush_first: Path | None) -> T:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="flowxfer-store")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.append(_Call(call, flush_first, future))
        if not self._draining:
            self._draining = True
            self._drainer = loop.create_task(self._drain())
        result: T = await future
        return result

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        batch: list[_Call] = []
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                assert self._executor is not None
                outcomes = await loop.run_in_executor(self._executor, self._run_batch, batch)
                for call, (ok, value) in zip(batch, outcomes, strict=True):
                    if call.future.done():
                        continue
                    if ok:
                        call.future.set_result(value)
                    else:
                        call.future.set_exception(value)
        except BaseException as exc:  # the executor is gone (shutdown): nobody waiting may hang
            for call in [*batch, *self._pending]:
                if not call.future.done():
                    call.future.set_exception(StoreError(f"the metadata store stopped: {exc!r}"))
            self._pending = []
            raise
        finally:
            self._draining = False

    def _run_batch(self, batch: Sequence[_Call]) -> list[tuple[bool, Any]]:
        """Flush the folders the batch names, then run its calls in one transaction (store thread).

        (ok, result or exception) for each call; a call whose folder could not
        be flushed is not run.
        """
        unflushed: dict[Path, FlushError] = {}
        for folder in dict.fromkeys(call.flush_first for call in batch if call.flush_first is not None):
            try:
                fsync_dir(folder)
            except OSError as exc:
                unflushed[folder] = FlushError(f"cannot make the names in {folder} durable: {exc}")
        runnable = [call.fn for call in batch if call.flush_first not in unflushed]
        outcomes = iter(self._run_calls(runnable))
        return [
            (False, unflushed[call.flush_first]) if call.flush_first in unflushed else next(outcomes) for call in batch
        ]

    def _run_calls(self, calls: list[Callable[[], Any]]) -> list[tuple[bool, Any]]:
        """Run calls in one transaction; (ok, result or exception) for each."""
        if not calls:
            return []
        if len(calls) == 1:
            try:
                return [(True, calls[0]())]
            except Exception as exc:  # noqa: BLE001 - handed to its caller
                return [(False, exc)]
        outcomes: list[tuple[bool, Any]] = []
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:  # locked past the busy timeout, an I/O error: every caller hears it
                return [(False, StoreError(f"cannot start a transaction: {exc}"))] * len(calls)
            self._grouping = True
            try:
                for call in calls:
                    try:
                        outcomes.append((True, call()))
                    except Exception as exc:  # noqa: BLE001 - handed to its caller
                        outcomes.append((False, exc))
            finally:
                self._grouping = False
            try:
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                return [(False, StoreError(f"commit failed: {exc}"))] * len(calls)
        return outcomes

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        super().close()

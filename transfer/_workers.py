"""The file workers the runner drives: one upload, one download, from start to journaled end.

An upload starts again (bounded) when its file changes under it; the same
rule serves ``upload`` and ``sync`` (:func:`upload_file`). The wire protocol
of each direction lives in :mod:`._upload` and :mod:`._download`.
"""

from __future__ import annotations

import dataclasses
import os
import stat
from collections.abc import Callable
from typing import TYPE_CHECKING

import anyio

from flowxfer.journal import FileRecord, InventoryRecord

from ._by_id import Prefetched
from ._client import Capabilities
from ._errors import LocalIOError, SourceChangedError
from ._report import FileReport
from ._runtime import TransferContext
from ._sources import FileSource, MemorySource, describe_mode
from .events import FileStarted, Notice

if TYPE_CHECKING:  # a download does not load the upload modules (issue 20: start-up cost)
    from ._upload import UploadOptions, UploadResult

__all__ = [
    "UploadWave",
    "download_one",
    "remember_upload",
    "start_over",
    "unsent",
    "upload_file",
    "upload_one",
    "upload_verification",
]

#: Called when a file changed since it was planned, with its new stat: raises to give the file up
#: for this run (``sync --min-age``: a file still being written is taken by a later run).
SettledCheck = Callable[[FileRecord, os.stat_result], None]


class UploadWave:
    """How many of a transfer's files start together with each one, in the order their workers take them.

    Files are handed to the workers one after another and each opens its
    source in a worker thread, so ``ctx.uploads_active`` counts the first
    files' companions late: the first of 16 files of 64 MiB found one
    upload under way (itself), chose 7 parallel streams and 8 MiB chunks, and
    the 16 connections carried 58 requests instead of 16. Counted here
    instead, when the worker takes the file (before any wait).

    :ivar todo: the files the transfer has to work (set once it is planned).
    """

    def __init__(self) -> None:
        self.todo = 0
        self._taken = 0

    def take(self, at_once: int) -> int:
        """The files on the way with the one taken now (itself included), at least 1.

        The first ``at_once`` files (the transfer's concurrency) all start at once: each counts
        all of them. A file taken later (one finished before it) counts those still to start,
        up to as many: the ones under way count themselves (``ctx.uploads_active``).
        """
        first = self._taken < at_once
        together = self.todo if first else self.todo - self._taken
        self._taken += 1
        return max(1, min(at_once, together))


def unsent(record: FileRecord) -> bool:
    """An ``upload`` record with nothing sent yet: worth reading ahead (a resumed one asks the server first)."""
    return not record.data_id


async def upload_one(ctx: TransferContext, record: FileRecord, options: UploadOptions) -> FileReport:
    """``upload``'s worker: send the file (again, if it changes), journal it done."""
    ctx.events(FileStarted(record.local_path, record.remote_name, record.size, record.bytes_done))
    record, result = await upload_file(ctx, record, options)
    assert record.mtime_ns is not None
    remember_upload(ctx, record, result, record.mtime_ns)
    ctx.counters.verified.add(upload_verification(ctx.capabilities))
    return FileReport(record.local_path, result.data_id, record.remote_name, record.size, "done")


async def upload_file(
    ctx: TransferContext, record: FileRecord, options: UploadOptions, settled: SettledCheck | None = None
) -> tuple[FileRecord, UploadResult]:
    """Upload a local file, starting again (bounded) when it changes while being read.

    A file changed since it was planned is found by a stat before any byte is
    sent and becomes a new upload at once (not counted: the plan was simply
    old). A change while it is being sent restarts it after a growing pause
    (2, 4, 8, 10 s), at most ``file_restarts`` times, then it fails. Bytes read
    ahead were checked against the planned size and mtime when they were read.

    :param settled: judges a file found changed since it was planned (see :data:`SettledCheck`).
    :returns: the record as uploaded (its size and mtime may be new) and the server's answer.
    """
    from ._upload import upload_source

    restarts = 0
    read_ahead = ctx.read_ahead.take(record) if ctx.read_ahead else None
    while True:
        source: FileSource | MemorySource
        if read_ahead is not None:
            source, read_ahead = read_ahead, None
        else:
            st = await stat_source(record.local_path)
            if not stat.S_ISREG(st.st_mode):
                # Replaced by a folder or a FIFO since it was planned: not a changed file, a gone one.
                raise LocalIOError(
                    f"cannot read {record.local_path}: not a regular file (now {describe_mode(st.st_mode)})"
                )
            if (st.st_size, st.st_mtime_ns) != (record.size, record.mtime_ns):
                # Changed since it was planned (or since the interrupted run): a new upload.
                record = start_over(ctx, record, st)
                if settled is not None:
                    settled(record, st)
            source = FileSource(record.local_path, record.size, record.mtime_ns)
        try:
            return record, await upload_source(ctx, record, source, options)
        except SourceChangedError as exc:
            restarts += 1
            ctx.counters.files_restarted += 1
            if restarts > ctx.config.file_restarts:
                raise SourceChangedError(f"{exc}; it kept changing, giving up after {restarts} tries") from None
            ctx.events(Notice(f"{record.local_path} changed while being uploaded; starting it again"))
            await anyio.sleep(min(2.0**restarts, 10.0))
            record = dataclasses.replace(record, data_id=None, chunk_size=0, bytes_done=0)


async def stat_source(path: str) -> os.stat_result:
    """A source's current size and times, before (re)sending it.

    :raises LocalIOError: it is gone or cannot be read (reported for this file alone).
    """
    try:
        return await anyio.to_thread.run_sync(os.stat, path)
    except FileNotFoundError:
        raise LocalIOError(f"{path} disappeared before it was uploaded") from None
    except OSError as exc:
        raise LocalIOError(f"cannot read {path}: {exc.strerror}") from None


def start_over(ctx: TransferContext, record: FileRecord, st: os.stat_result) -> FileRecord:
    """The file changed since it was planned: forget its upload, journal the new size and mtime.

    The upload already begun (if any) is abandoned, not continued: its
    bytes on the server are the old version's.
    """
    record = dataclasses.replace(
        record, size=st.st_size, mtime_ns=st.st_mtime_ns, data_id=None, chunk_size=0, bytes_done=0
    )
    ctx.writer.batch.update_file(
        record.id, size=record.size, mtime_ns=record.mtime_ns, data_id=None, chunk_size=0, bytes_done=0
    )
    ctx.writer.added()
    return record


def upload_verification(capabilities: Capabilities) -> str:
    """What a finished upload proves, in words (for reports)."""
    if capabilities.checksums:
        return "the server checked the xxh3-128 of every chunk and of the whole file"
    return "the size the server stored (hosted Flow offers no checksums)"


def remember_upload(ctx: TransferContext, record: FileRecord, result: UploadResult, mtime_ns: int) -> None:
    """Journal a finished upload: the file is done, its chunks verified, the inventory updated."""
    batch = ctx.writer.batch
    batch.upload_done(record.id, result.data_id, record.size, result.checksum)
    batch.remember(
        InventoryRecord(
            server=ctx.server,
            username=ctx.username,
            direction="up",
            local_path=ctx.paths.to_journal(record.local_path),
            remote=record.remote_name,
            size=record.size,
            mtime_ns=mtime_ns,
            checksum=result.checksum,
            data_id=result.data_id,
            superseded=tuple(record.extra.get("superseded", ())),
        )
    )
    ctx.writer.added()


async def download_one(ctx: TransferContext, record: FileRecord, prefetched: Prefetched | None = None) -> FileReport:
    """``download``'s worker: fetch, verify and rename the file into place.

    :param prefetched: the file's bytes as its description brought them ([ext] ``download_by_id``).
    """
    from ._download import download_file, fetch_remote  # here: an upload does not load the download modules

    assert record.data_id is not None
    ctx.events(FileStarted(record.local_path, record.remote_name, record.size, record.bytes_done))
    try:
        remote = await fetch_remote(
            ctx,
            record.data_id,
            record.remote_name,
            record.size,
            record.checksum,
            want_map=record.size > ctx.config.download_chunk_size,
            chunk_size_hint=prefetched.chunk_size if prefetched else None,
            bytes_left=record.size - record.bytes_done,
        )
        remote.prefetched = prefetched
        result = await download_file(ctx, record, remote)
    finally:
        if prefetched is not None:
            # Its held answer, taken by a stream or not (a resume past it, a failure before the
            # streams, in fetch_remote too): its connection goes now, not when it is collected.
            with anyio.CancelScope(shield=True):
                await prefetched.aclose()
    ctx.counters.verified.add(result.verified)
    return FileReport(record.local_path, record.data_id, record.remote_name, record.size, "done")

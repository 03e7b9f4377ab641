"""One sample sent: its files strictly in order, its id journaled, a lost final answer looked for.

A sample's files go up through the ordinary chunked upload
(:func:`~._upload.upload_source`: same chunk sizes, retries, rate limits and
byte budget) to ``/upload/sample``, the sample's fields on every chunk and
``previous_data`` the ids of its earlier files. The last file's final chunk
makes the sample: from then on an answer lost to a crash or the network is
looked for on the server (:func:`~._samples_remote.find_made_sample`) before
anything is sent again. This is the file worker of the ``samples`` transfer
that :mod:`._samples` plans and runs; a failure here fails its sample, not
the transfer, unless it ends every sample (login, budget, stop).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Awaitable
from functools import partial
from typing import Any

import anyio

from flowxfer.journal import FileRecord, FileState, SampleInventoryRecord, SampleRecord, SampleState

from ._concat import Part
from ._errors import (
    AlreadyRunning,
    AnswerLost,
    AuthError,
    BudgetExhausted,
    FlowxferError,
    ProtocolError,
    RejectedError,
    SourceChangedError,
    StopRequested,
)
from ._report import FileReport
from ._runner import Runner
from ._runtime import TransferContext
from ._samples_remote import FoundSample, LostFinal, find_made_sample
from ._upload import UploadOptions, UploadResult, upload_source
from ._validate import PlannedFile
from ._workers import upload_verification
from .events import FileFinished, FileStarted, Notice, SampleAsking, SampleFile, SampleFinished, SampleStarted

__all__ = ["SAMPLE_ENDPOINT", "SampleSender"]

SAMPLE_ENDPOINT = "/upload/sample"

#: Errors that end the whole transfer, not one sample.
_FATAL = (AuthError, AlreadyRunning, BudgetExhausted, StopRequested)


def _sample_file(record: FileRecord) -> SampleFile:
    """A sample's file as a watcher needs it: which sample its bytes count for, and how far it is."""
    finished = record.status is FileState.DONE
    return SampleFile(
        record.local_path,
        str(record.extra.get("label", "")),
        record.size,
        record.size if finished else record.bytes_done,
        finished,
    )


def _planned_file(record: FileRecord) -> PlannedFile:
    """The file as it was planned, from its journal row (its parts held to their planned sizes and mtimes)."""
    parts = tuple(Part(str(path), int(size), int(mtime)) for path, size, mtime in record.extra["parts"])
    return PlannedFile(str(record.extra.get("label", "")), parts, record.remote_name)


class _FileFailed(Exception):
    """A file of the sample failed: which one, and why (the journal marks that file failed)."""

    def __init__(self, record: FileRecord, error: FlowxferError) -> None:
        super().__init__(str(error))
        self.record, self.error = record, error


class SampleSender:
    """One sample, from its journal rows to the sample's id: its files in order, a lost answer looked for."""

    def __init__(self, ctx: TransferContext, runner: Runner, row: int, file_ids: list[int]) -> None:
        self.ctx, self.runner, self.row, self.file_ids = ctx, runner, row, file_ids

    async def _files(self) -> list[FileRecord]:
        journal = self.ctx.journal
        return [
            f for f in [await anyio.to_thread.run_sync(journal.get_file, i) for i in self.file_ids] if f is not None
        ]

    async def _update(self, **changes: Any) -> None:
        await anyio.to_thread.run_sync(
            partial(self.ctx.journal.update_sample, self.ctx.transfer_id, self.row, **changes)
        )

    async def run(self) -> FileReport:
        ctx = self.ctx
        sample = await anyio.to_thread.run_sync(ctx.journal.get_sample, ctx.transfer_id, self.row)
        assert sample is not None
        files = await self._files()
        if sample.status in (SampleState.DONE, SampleState.SKIPPED) and sample.sample_id:
            # Made (its id is journaled) before a crash left a file row behind: nothing to send.
            known = await anyio.to_thread.run_sync(
                partial(ctx.journal.lookup_samples, ctx.server, ctx.username, [sample.name])
            )
            found = known.get(sample.name)
            return await self._made(
                sample, files, FoundSample(sample.sample_id, found.data_ids if found else ()), recovered=False
            )
        self.runner.emit(SampleStarted(sample.row, sample.name, len(files), tuple(_sample_file(f) for f in files)))
        try:
            return await self._send(sample, files)
        except _FileFailed as failure:
            record, exc = failure.record, failure.error
            message = f"{sample.name}: {exc}"
            ctx.writer.batch.file_state(
                record.id,
                FileState.FAILED,
                error=str(exc)[:1000],
                attempts=record.attempts + 1,
                extra={**record.extra, "error_kind": exc.kind},
            )
            ctx.writer.added()
            await ctx.writer.flush()
            await self._update(status=SampleState.FAILED, error=message[:1000])
            self.runner.emit(SampleFinished(sample.row, sample.name, "failed", None, message))
            return FileReport(record.local_path, record.data_id, record.remote_name, record.size, "failed", str(exc))

    async def _send(self, sample: SampleRecord, files: list[FileRecord]) -> FileReport:
        ctx = self.ctx
        previous = list(sample.previous_data)
        if sample.started is not None:
            # An earlier run began to send the last file: its final answer may be lost.
            found = await self._guarded(files[-1], self._look_for(sample, files, previous))
            if found is not None:
                return await self._made(sample, files, found, recovered=True)
        if sample.status is not SampleState.ACTIVE:
            await self._update(status=SampleState.ACTIVE, error=None)
        for position, record in enumerate(files):
            last = position == len(files) - 1
            if not last and record.status is FileState.DONE and record.data_id:
                # Sent by an earlier run: its id is what the later files name.
                if previous[position : position + 1] != [record.data_id]:
                    previous = previous[:position] + [record.data_id]
                    await self._update(previous_data=previous)
                continue
            if last:
                # From here the server may make the sample: a lost answer must be looked for, not re-sent.
                if sample.started is None:
                    await self._update(started=time.time())
                    sample = dataclasses.replace(sample, started=time.time())
                return await self._send_last(sample, files, record, previous[:position])
            data_id = await self._send_file(sample, record, previous[:position], last=False)
            previous = previous[:position] + [data_id]
            await ctx.writer.flush()
            await self._update(previous_data=previous)
            self.runner.emit(FileFinished(record.local_path, record.remote_name, "done", record.size, data_id, None))
        raise AssertionError("a sample without files")  # pragma: no cover

    async def _send_last(
        self, sample: SampleRecord, files: list[FileRecord], record: FileRecord, previous: list[str]
    ) -> FileReport:
        """Send the file whose final chunk makes the sample; a lost or refused answer is looked for on the server."""
        ctx = self.ctx
        for _ in range(ctx.config.max_attempts):
            try:
                result = await self._upload(sample, record, previous, last=True)
            except AnswerLost:
                found = await self._after_loss(sample, files, previous)
            except RejectedError as exc:
                # A sample made by a final chunk whose answer was lost makes a second one refused
                # ("already in a sample"): the first is ours.
                found = await self._after_loss(sample, files, previous)
                if found is None:
                    raise _FileFailed(record, exc) from None
            else:
                self._finished_file(record, result)
                found = None
                if result.sample_id is not None:
                    found = FoundSample(result.sample_id, (*previous, result.data_id))
                else:
                    # The upload path recovered the data itself from a lost answer, not the sample's id.
                    await ctx.writer.flush()
                    found = await self._guarded(record, self._look_for(sample, files, previous, result.data_id))
                    if found is None:
                        raise _FileFailed(
                            record,
                            ProtocolError(
                                f"the server holds {record.remote_name} (data {result.data_id}) "
                                "but made no sample of it"
                            ),
                        )
                return await self._made(sample, files, found, recovered=result.sample_id is None)
            if found is not None:
                return await self._made(sample, files, found, recovered=True)
            ctx.events(
                Notice(
                    f"{sample.name}: the answer to its final chunk was lost and the server made no "
                    "sample; sending it again"
                )
            )
            fresh = await anyio.to_thread.run_sync(ctx.journal.get_file, record.id)
            record = fresh or record
        raise _FileFailed(
            record,
            AnswerLost(f"{record.remote_name}: the answer to the final chunk was lost {ctx.config.max_attempts} times"),
        )

    async def _after_loss(
        self, sample: SampleRecord, files: list[FileRecord], previous: list[str]
    ) -> FoundSample | None:
        await self.ctx.writer.flush()  # the last file's data id, if a chunk's answer gave it, is what we ask about
        return await self._guarded(files[-1], self._look_for(sample, files, previous))

    async def _send_file(self, sample: SampleRecord, record: FileRecord, previous: list[str], *, last: bool) -> str:
        result = await self._upload(sample, record, previous, last=last)
        self._finished_file(record, result)
        return result.data_id

    async def _upload(
        self, sample: SampleRecord, record: FileRecord, previous: list[str], *, last: bool
    ) -> UploadResult:
        ctx = self.ctx
        fields = [
            ("is_last_sample", "true" if last else "false"),
            *(("previous_data", data_id) for data_id in previous),
            *sample.fields.items(),
        ]
        options = UploadOptions(endpoint=SAMPLE_ENDPOINT, fields=tuple(fields), replay_final=not last)
        ctx.events(FileStarted(record.local_path, record.remote_name, record.size, record.bytes_done))
        try:
            return await upload_source(ctx, record, _planned_file(record).source(), options)
        except SourceChangedError as exc:
            if last:
                # Its final chunk never went whole (the change was found reading it), so no sample
                # was made: the next run plans the file again as it is then.
                await self._update(started=None)
            raise _FileFailed(
                record,
                SourceChangedError(f"{exc}; no sample is made from a changed file (run again to send it as it is now)"),
            ) from None
        except (AnswerLost, RejectedError) as exc:
            if last:
                raise  # the sample may have been made: the caller asks the server
            raise _FileFailed(record, exc) from None
        except _FATAL:
            raise
        except FlowxferError as exc:
            raise _FileFailed(record, exc) from None

    def _finished_file(self, record: FileRecord, result: UploadResult) -> None:
        ctx = self.ctx
        ctx.counters.verified.add(upload_verification(ctx.capabilities))
        ctx.writer.batch.upload_done(record.id, result.data_id, record.size, result.checksum)
        ctx.writer.added()

    async def _guarded(self, record: FileRecord, lookup: Awaitable[FoundSample | None]) -> FoundSample | None:
        """A server lookup whose failure fails the sample (with the file it concerns), not the transfer."""
        try:
            return await lookup
        except _FATAL:
            raise
        except FlowxferError as exc:
            raise _FileFailed(record, exc) from None

    async def _look_for(
        self, sample: SampleRecord, files: list[FileRecord], previous: list[str], last_data_id: str | None = None
    ) -> FoundSample | None:
        self.runner.emit(SampleAsking(sample.row, sample.name))
        last = files[-1]
        if last_data_id is None:
            fresh = await anyio.to_thread.run_sync(self.ctx.journal.get_file, last.id)
            last_data_id = fresh.data_id if fresh is not None else None
        first = previous[0] if previous and len(files) > 1 else None
        lost = LostFinal(sample.name, last_data_id, first, last.remote_name, last.size, sample.started or time.time())
        return await find_made_sample(self.ctx.client, lost, upload_status=self.ctx.capabilities.upload_status)

    async def _made(
        self, sample: SampleRecord, files: list[FileRecord], found: FoundSample, *, recovered: bool
    ) -> FileReport:
        """The server made the sample: journal its id (and its files' ids), durably, then say so."""
        ctx = self.ctx
        if recovered:
            self.runner.emit(
                Notice(
                    f"{sample.name}: the answer that made sample {found.id} was lost; "
                    "the server says it was made (nothing sent again)"
                )
            )
        for record, data_id in zip(files, found.data_ids, strict=False):
            ctx.writer.batch.file_state(record.id, FileState.DONE, data_id=data_id, bytes_done=record.size, error=None)
        ctx.writer.added()
        inventory = SampleInventoryRecord(
            ctx.server, ctx.username, sample.name, found.id, dict(sample.fields), found.data_ids
        )
        await anyio.to_thread.run_sync(ctx.journal.sample_finished, ctx.transfer_id, self.row, inventory)
        await ctx.writer.flush()
        self.runner.emit(SampleFinished(sample.row, sample.name, "done", found.id, None))
        last = files[-1]
        last_id = found.data_ids[len(files) - 1] if len(found.data_ids) >= len(files) else last.data_id
        return FileReport(last.local_path, last_id, last.remote_name, last.size, "done")

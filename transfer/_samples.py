"""Samples up, exactly once: every row of a sheet becomes one Flow sample, however often it runs.

The flow of ``samples upload-batch`` (and ``samples upload``, a sheet of one row):

1. **check** every row against the server's catalog and the disk before any
   byte moves (:func:`~._validate.plan_samples`): every problem at once;
2. **plan** the valid rows into the journal: a ``samples`` row each (the
   fields sent on every chunk) and a ``files`` row per file (reads1, then
   reads2; a merged cell's parts in ``extra``). A sample the journal knows
   is on the server already (an earlier run made it) is ``skipped``;
3. **send** samples concurrently (``concurrency`` workers), each sample's
   files strictly in order through the ordinary chunked upload
   (:func:`~._upload.upload_source`: same chunk sizes, retries, rate limits
   and byte budget) to ``/upload/sample``, the sample's fields on every
   chunk and ``previous_data`` the ids of its earlier files;
4. **record** the sample's id from the last file's final answer, in the same
   transaction as the inventory that makes a re-run skip it.

A final answer lost to a crash or the network is looked for on the server
(:func:`~._samples_remote.find_made_sample`) before anything is sent again.
A file that changed since it was planned fails its sample: nothing is linked.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Awaitable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import anyio

from flowxfer.journal import (
    FileRecord,
    FileState,
    Journal,
    NewFile,
    NewSample,
    SampleInventoryRecord,
    SampleRecord,
    SampleState,
    TransferRecord,
)

from ._concat import Part, concat_identity
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
    UsageError,
)
from ._illumina import Lanes, RunScan, scan_run, sheet_rows
from ._report import FileReport, TransferReport
from ._runner import Runner
from ._runtime import TransferContext
from ._samples_remote import FoundSample, LostFinal, fetch_catalog, find_made_sample
from ._sheets import ANNOTATION_SUFFIX, Problem, ReadsCell, SheetRow, parse_sheet
from ._upload import UploadOptions, UploadResult, upload_source
from ._validate import PlannedFile, PlannedSample, SamplePlan, look_at_disk, paths_to_look_at, plan_samples
from ._workers import upload_verification
from .events import (
    FileFinished,
    FilesPlanned,
    FileStarted,
    Notice,
    SampleAsking,
    SampleFile,
    SampleFinished,
    SamplesPlanned,
    SampleStarted,
)

__all__ = ["SAMPLE_ENDPOINT", "check_samples", "one_sample_row", "run_samples", "sample_reports", "sheet_input",
           "upload_samples"]

SAMPLE_ENDPOINT = "/upload/sample"

#: Errors that end the whole transfer, not one sample.
_FATAL = (AuthError, AlreadyRunning, BudgetExhausted, StopRequested)


async def check_samples(runner: Runner, rows: Sequence[SheetRow], sample_type: str, *,
                        sheet_problems: Sequence[Problem] = ()) -> SamplePlan:
    """Every row against the server's catalog and the disk (metadata requests only, nothing sent)."""
    client = runner.require_login()
    catalog = await fetch_catalog(client)
    disk = await anyio.to_thread.run_sync(look_at_disk, paths_to_look_at(rows))
    return plan_samples(rows, sample_type, catalog, disk, sheet_problems=sheet_problems)


def one_sample_row(name: str, reads1: str | os.PathLike[str], reads2: str | os.PathLike[str] | None = None, *,
                   project: str | None = None, organism: str | None = None,
                   metadata: Mapping[str, str] | None = None) -> SheetRow:
    """``samples upload``'s one sample as a sheet row (``<id>__annotation`` keys are annotations)."""
    plain, annotations = _split_metadata(metadata or {})
    cwd = Path.cwd()
    return SheetRow(1, name, ReadsCell.parse(os.fspath(reads1), cwd),
                    ReadsCell.parse(os.fspath(reads2), cwd) if reads2 else None,
                    project or None, organism or None, plain, annotations)


def run_input(run: Mapping[str, Any]) -> tuple[RunScan, list[SheetRow], dict[str, Any]]:
    """A run folder's samples as rows (``sync --samples``), from ``root`` and the run options (blocking).

    :raises SheetError: the run's sample sheet, or its FASTQs, have problems (all of them).
    """
    root = os.path.abspath(os.path.expanduser(os.fspath(run["root"])))
    lanes: Lanes = "separate" if run.get("lanes") == "separate" else "merge"
    scan = scan_run(root, sample_sheet=run.get("sample_sheet"), lanes=lanes)
    scan.check()
    metadata = dict(run.get("metadata") or {})
    plain, annotations = _split_metadata(metadata)
    rows = [dataclasses.replace(row, metadata=plain, annotations=annotations)
            for row in sheet_rows(scan, project=run.get("project"), organism=run.get("organism"))]
    params = {"run": {"root": root, "sample_sheet": run.get("sample_sheet"), "lanes": lanes,
                      "project": run.get("project"), "organism": run.get("organism"), "metadata": metadata}}
    return scan, rows, params


def _split_metadata(values: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """``<id>`` values and ``<id>__annotation`` texts apart, as a sheet's columns hold them."""
    annotations = {k[:-len(ANNOTATION_SUFFIX)]: v for k, v in values.items() if k.endswith(ANNOTATION_SUFFIX)}
    return {k: v for k, v in values.items() if not k.endswith(ANNOTATION_SUFFIX)}, annotations


def sheet_input(sheet: str | os.PathLike[str] | None, sample: Mapping[str, Any] | None,
                run: Mapping[str, Any] | None = None) -> tuple[list[SheetRow], tuple[Problem, ...], dict[str, Any]]:
    """The rows to send and the journal parameters that name them: a sheet's, one sample's or a run's (blocking).

    :raises SheetError: the sheet cannot be read (not CSV, not UTF-8, ...).
    """
    if run is not None and sheet is None and sample is None:
        _, rows, params = run_input(run)
        return rows, (), params
    if (sheet is None) == (sample is None):
        raise UsageError("name a sample sheet or one sample")
    if sheet is not None:
        path = Path(sheet).expanduser().absolute()
        parsed = parse_sheet(path)
        return list(parsed.rows), parsed.problems, {"sheet": str(path)}
    assert sample is not None
    resolved = {**sample, "reads1": os.path.abspath(sample["reads1"]),
                "reads2": os.path.abspath(sample["reads2"]) if sample.get("reads2") else None}
    row = one_sample_row(resolved["name"], resolved["reads1"], resolved["reads2"],
                         project=resolved.get("project"), organism=resolved.get("organism"),
                         metadata=resolved.get("metadata"))
    return [row], (), {"sample": resolved}


async def upload_samples(
    runner: Runner,
    *,
    sheet: str | os.PathLike[str] | None = None,
    sample: Mapping[str, Any] | None = None,
    run: Mapping[str, Any] | None = None,
    sample_type: str,
    skip_invalid: bool = False,
    stop_on_error: bool = False,
    transfer_id: str | None = None,
) -> TransferReport:
    """See :meth:`Flowxfer.upload_samples`."""
    rows, sheet_problems, params = await anyio.to_thread.run_sync(sheet_input, sheet, sample, run)
    params.update(sample_type=sample_type, skip_invalid=skip_invalid, stop_on_error=stop_on_error)
    plan = await check_samples(runner, rows, sample_type, sheet_problems=sheet_problems)
    plan.check(skip_invalid=skip_invalid)
    return await run_samples(runner, plan, rows, params, transfer_id=transfer_id, stop_on_error=stop_on_error)


def _file_entry(sample: PlannedSample, position: int, planned: PlannedFile, status: FileState,
                data_id: str | None) -> NewFile:
    """A sample's file as a journal row; a merged file keeps its parts and their identity."""
    parts = [[p.path, p.size, p.mtime_ns] for p in planned.parts]
    extra: dict[str, Any] = {"sample": sample.row, "position": position, "label": planned.label, "parts": parts}
    if len(planned.parts) > 1:
        extra["identity"] = concat_identity(planned.parts)
    return NewFile(";".join(p.path for p in planned.parts), planned.filename, planned.size,
                   max(p.mtime_ns for p in planned.parts), data_id=data_id, status=status, extra=extra)


def _sample_file(record: FileRecord) -> SampleFile:
    """A sample's file as a watcher needs it: which sample its bytes count for, and how far it is."""
    finished = record.status is FileState.DONE
    return SampleFile(record.local_path, str(record.extra.get("label", "")), record.size,
                      record.size if finished else record.bytes_done, finished)


def _planned_file(record: FileRecord) -> PlannedFile:
    """The file as it was planned, from its journal row (its parts held to their planned sizes and mtimes)."""
    parts = tuple(Part(str(path), int(size), int(mtime)) for path, size, mtime in record.extra["parts"])
    return PlannedFile(str(record.extra.get("label", "")), parts, record.remote_name)


async def run_samples(
    runner: Runner,
    plan: SamplePlan,
    rows: Sequence[SheetRow],
    params: dict[str, Any],
    *,
    transfer_id: str | None = None,
    stop_on_error: bool = False,
) -> TransferReport:
    """Send the valid samples of a checked plan (see :meth:`Flowxfer.upload_samples`)."""
    files_of: dict[int, list[int]] = {}
    names = {row.row: row.name for row in rows}
    problems_of: dict[int, list[str]] = {}
    for problem in plan.problems:
        if problem.row is not None and not problem.warning:
            problems_of.setdefault(problem.row, []).append(str(problem))

    async def plan_journal(ctx: TransferContext, record: TransferRecord, resumed: bool) -> None:
        journal = ctx.journal
        known = await anyio.to_thread.run_sync(partial(
            journal.lookup_samples, ctx.server, ctx.username, [s.name for s in plan.samples]))
        samples: list[NewSample] = []
        files: list[NewFile] = []
        for sample in plan.samples:
            found = known.get(sample.name)
            state = SampleState.SKIPPED if found else SampleState.PLANNED
            samples.append(NewSample(sample.row, sample.name, dict(sample.fields), state,
                                     found.sample_id if found else None))
            ids = list(found.data_ids) if found else []
            for position, planned in enumerate(sample.files):
                files.append(_file_entry(sample, position, planned,
                                         FileState.SKIPPED if found else FileState.PLANNED,
                                         ids[position] if position < len(ids) else None))
        samples += [NewSample(row, names.get(row, ""), {}, SampleState.INVALID,
                              error="; ".join(problems_of.get(row, [])))
                    for row in sorted(plan.invalid_rows)]
        # A resumed transfer keeps its rows (the fields as sent); rows new in the sheet join it,
        # and what was not sent yet takes the sheet and the disk as they are now.
        await anyio.to_thread.run_sync(journal.add_samples, record.id, samples)
        await anyio.to_thread.run_sync(journal.add_files, record.id, files)
        if resumed:
            await anyio.to_thread.run_sync(_replan_unsent, journal, record.id, samples, files)
        await anyio.to_thread.run_sync(partial(journal.update_transfer_state, record.id, planned=True))
        for row_record in await anyio.to_thread.run_sync(lambda: list(journal.iter_files(record.id))):
            files_of.setdefault(int(row_record.extra["sample"]), []).append(row_record.id)
        summary = await anyio.to_thread.run_sync(journal.summary, record.id)
        runner.emit(FilesPlanned(summary.files_total, summary.bytes_total))
        made = await anyio.to_thread.run_sync(journal.samples_of, record.id)
        runner.emit(SamplesPlanned(sum(s.status is not SampleState.INVALID for s in made),
                                   sum(s.status in (SampleState.DONE, SampleState.SKIPPED) for s in made)))
        for sample_record in made:
            if sample_record.status is SampleState.SKIPPED:
                runner.emit(SampleFinished(sample_record.row, sample_record.name, "skipped",
                                           sample_record.sample_id, None))

    fed: set[int] = set()

    def feed(record: FileRecord) -> bool:
        """One file of each sample goes to a worker, which takes the whole sample."""
        row = int(record.extra["sample"])
        if row in fed:
            return False
        fed.add(row)
        return True

    async def work(ctx: TransferContext, record: FileRecord) -> FileReport:
        row = int(record.extra["sample"])
        result = await _Sender(ctx, runner, row, files_of[row]).run()
        if result.status == "failed" and stop_on_error:
            runner.emit(Notice(f"stopping at the first failed sample (--stop-on-error): {result.error}"))
            runner.stop("error")
        return result

    report = await runner.run("samples", params, plan_journal, work, transfer_id=transfer_id, feed=feed)
    journal = await runner.journal()
    report.extra["samples"] = await anyio.to_thread.run_sync(sample_reports, journal, report.transfer_id)
    report.extra["problems"] = [p.to_json() for p in plan.problems]
    if report.status == "completed" and all(s["status"] == "skipped" for s in report.extra["samples"]):
        # Nothing made, nothing to resume: leave no trace, or cron every five minutes fills the journal.
        await anyio.to_thread.run_sync(journal.delete_transfer, report.transfer_id)
    return report


def _replan_unsent(journal: Journal, transfer_id: str, samples: Sequence[NewSample], files: Sequence[NewFile]) -> None:
    """Bring what an earlier run of this transfer has not sent up to date (blocking).

    A sample none of whose bytes left takes the sheet's fields as they are now
    (a value fixed after the server refused it), or is skipped when the
    inventory says it was made meanwhile. A file not finished whose parts
    changed on disk (it failed as changed) is planned again as it is now, its
    partial upload abandoned (nothing links it). A sample whose last file
    began is left alone: the server may have made it, and it is looked for.
    """
    records = list(journal.iter_files(transfer_id))
    began = {int(r.extra.get("sample", -1)) for r in records
             if r.data_id or r.bytes_done or r.status is FileState.DONE}
    wanted = {s.row: s for s in samples}
    leave: set[int] = set()
    for current in journal.samples_of(transfer_id):
        if current.started is not None or current.status in (SampleState.DONE, SampleState.SKIPPED):
            leave.add(current.row)
            continue
        new = wanted.get(current.row)
        if new is None or current.row in began:
            continue
        if current.status is SampleState.INVALID and new.status is not SampleState.INVALID:
            journal.update_sample(transfer_id, current.row, status=new.status, fields=new.fields,
                                  sample_id=new.sample_id, error=None)
        elif new.status is SampleState.SKIPPED:
            journal.update_sample(transfer_id, current.row, status=SampleState.SKIPPED, sample_id=new.sample_id)
            for record in records:
                if int(record.extra.get("sample", -1)) == current.row:
                    journal.set_file(record.id, status=FileState.SKIPPED.value)
        elif new.fields != current.fields:
            journal.update_sample(transfer_id, current.row, fields=new.fields)
    by_path = {f.local_path: f for f in files if f.status is FileState.PLANNED}
    for record in records:
        new_file = by_path.get(record.local_path)
        if (new_file is None or int(record.extra.get("sample", -1)) in leave
                or record.status in (FileState.DONE, FileState.SKIPPED)
                or record.extra.get("parts") == new_file.extra["parts"]):
            continue
        journal.set_file(record.id, size=new_file.size, mtime_ns=new_file.mtime_ns,
                         extra={**new_file.extra}, data_id=None, bytes_done=0, chunk_size=0)


def sample_reports(journal: Journal, transfer_id: str) -> list[dict[str, Any]]:
    """The ``samples`` of the JSON document (``samples.md``), from the journal (blocking)."""
    by_row: dict[int, list[dict[str, Any]]] = {}
    for record in journal.iter_files(transfer_id):
        status = record.status.value if record.status in (FileState.DONE, FileState.SKIPPED,
                                                           FileState.FAILED) else "pending"
        by_row.setdefault(int(record.extra.get("sample", -1)), []).append(
            {"path": record.local_path, "id": record.data_id, "size": record.size, "status": status})
    shown = {SampleState.PLANNED: "pending", SampleState.ACTIVE: "pending"}
    return [{"row": s.row, "name": s.name, "id": s.sample_id, "status": shown.get(s.status, s.status.value),
             "files": by_row.get(s.row, []), "error": s.error}
            for s in journal.samples_of(transfer_id)]


class _FileFailed(Exception):
    """A file of the sample failed: which one, and why (the journal marks that file failed)."""

    def __init__(self, record: FileRecord, error: FlowxferError) -> None:
        super().__init__(str(error))
        self.record, self.error = record, error


class _Sender:
    """One sample, from its journal rows to the sample's id: its files in order, a lost answer looked for."""

    def __init__(self, ctx: TransferContext, runner: Runner, row: int, file_ids: list[int]) -> None:
        self.ctx, self.runner, self.row, self.file_ids = ctx, runner, row, file_ids

    async def _files(self) -> list[FileRecord]:
        journal = self.ctx.journal
        return [f for f in [await anyio.to_thread.run_sync(journal.get_file, i) for i in self.file_ids]
                if f is not None]

    async def _update(self, **changes: Any) -> None:
        await anyio.to_thread.run_sync(partial(self.ctx.journal.update_sample, self.ctx.transfer_id, self.row,
                                               **changes))

    async def run(self) -> FileReport:
        ctx = self.ctx
        sample = await anyio.to_thread.run_sync(ctx.journal.get_sample, ctx.transfer_id, self.row)
        assert sample is not None
        files = await self._files()
        if sample.status in (SampleState.DONE, SampleState.SKIPPED) and sample.sample_id:
            # Made (its id is journaled) before a crash left a file row behind: nothing to send.
            known = await anyio.to_thread.run_sync(partial(ctx.journal.lookup_samples, ctx.server, ctx.username,
                                                           [sample.name]))
            found = known.get(sample.name)
            return await self._made(sample, files, FoundSample(sample.sample_id, found.data_ids if found else ()),
                                    recovered=False)
        self.runner.emit(SampleStarted(sample.row, sample.name, len(files), tuple(_sample_file(f) for f in files)))
        try:
            return await self._send(sample, files)
        except _FileFailed as failure:
            record, exc = failure.record, failure.error
            message = f"{sample.name}: {exc}"
            ctx.writer.batch.file_state(record.id, FileState.FAILED, error=str(exc)[:1000],
                                         attempts=record.attempts + 1,
                                         extra={**record.extra, "error_kind": exc.kind})
            ctx.writer.added()
            await ctx.writer.flush()
            await self._update(status=SampleState.FAILED, error=message[:1000])
            self.runner.emit(SampleFinished(sample.row, sample.name, "failed", None, message))
            return FileReport(record.local_path, record.data_id, record.remote_name, record.size, "failed",
                              str(exc))

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
                if previous[position:position + 1] != [record.data_id]:
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

    async def _send_last(self, sample: SampleRecord, files: list[FileRecord], record: FileRecord,
                         previous: list[str]) -> FileReport:
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
                        raise _FileFailed(record, ProtocolError(
                            f"the server holds {record.remote_name} (data {result.data_id}) but made no sample of it"))
                return await self._made(sample, files, found, recovered=result.sample_id is None)
            if found is not None:
                return await self._made(sample, files, found, recovered=True)
            ctx.events(Notice(f"{sample.name}: the answer to its final chunk was lost and the server made no "
                              "sample; sending it again"))
            fresh = await anyio.to_thread.run_sync(ctx.journal.get_file, record.id)
            record = fresh or record
        raise _FileFailed(record, AnswerLost(f"{record.remote_name}: the answer to the final chunk was lost "
                                             f"{ctx.config.max_attempts} times"))

    async def _after_loss(self, sample: SampleRecord, files: list[FileRecord],
                          previous: list[str]) -> FoundSample | None:
        await self.ctx.writer.flush()  # the last file's data id, if a chunk's answer gave it, is what we ask about
        return await self._guarded(files[-1], self._look_for(sample, files, previous))

    async def _send_file(self, sample: SampleRecord, record: FileRecord, previous: list[str], *, last: bool) -> str:
        result = await self._upload(sample, record, previous, last=last)
        self._finished_file(record, result)
        return result.data_id

    async def _upload(self, sample: SampleRecord, record: FileRecord, previous: list[str], *, last: bool
                      ) -> UploadResult:
        ctx = self.ctx
        fields = [("is_last_sample", "true" if last else "false"),
                  *(("previous_data", data_id) for data_id in previous), *sample.fields.items()]
        options = UploadOptions(endpoint=SAMPLE_ENDPOINT, fields=tuple(fields), replay_final=not last)
        ctx.events(FileStarted(record.local_path, record.remote_name, record.size, record.bytes_done))
        try:
            return await upload_source(ctx, record, _planned_file(record).source(), options)
        except SourceChangedError as exc:
            if last:
                # Its final chunk never went whole (the change was found reading it), so no sample
                # was made: the next run plans the file again as it is then.
                await self._update(started=None)
            raise _FileFailed(record, SourceChangedError(
                f"{exc}; no sample is made from a changed file (run again to send it as it is now)")) from None
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
        ctx.writer.batch.file_state(record.id, FileState.DONE, data_id=result.data_id,
                                     bytes_done=record.size, checksum=result.checksum, error=None)
        ctx.writer.batch.verify_chunks(record.id)
        ctx.writer.added()

    async def _guarded(self, record: FileRecord, lookup: Awaitable[FoundSample | None]) -> FoundSample | None:
        """A server lookup whose failure fails the sample (with the file it concerns), not the transfer."""
        try:
            return await lookup
        except _FATAL:
            raise
        except FlowxferError as exc:
            raise _FileFailed(record, exc) from None

    async def _look_for(self, sample: SampleRecord, files: list[FileRecord], previous: list[str],
                        last_data_id: str | None = None) -> FoundSample | None:
        self.runner.emit(SampleAsking(sample.row, sample.name))
        last = files[-1]
        if last_data_id is None:
            fresh = await anyio.to_thread.run_sync(self.ctx.journal.get_file, last.id)
            last_data_id = fresh.data_id if fresh is not None else None
        first = previous[0] if previous and len(files) > 1 else None
        lost = LostFinal(sample.name, last_data_id, first, last.remote_name, last.size,
                         sample.started or time.time())
        return await find_made_sample(self.ctx.client, lost, upload_status=self.ctx.capabilities.upload_status)

    async def _made(self, sample: SampleRecord, files: list[FileRecord], found: FoundSample,
                    *, recovered: bool) -> FileReport:
        """The server made the sample: journal its id (and its files' ids), durably, then say so."""
        ctx = self.ctx
        if recovered:
            self.runner.emit(Notice(f"{sample.name}: the answer that made sample {found.id} was lost; "
                                    "the server says it was made (nothing sent again)"))
        for record, data_id in zip(files, found.data_ids, strict=False):
            ctx.writer.batch.file_state(record.id, FileState.DONE, data_id=data_id,
                                         bytes_done=record.size, error=None)
        ctx.writer.added()
        inventory = SampleInventoryRecord(ctx.server, ctx.username, sample.name, found.id, dict(sample.fields),
                                          found.data_ids)
        await anyio.to_thread.run_sync(ctx.journal.sample_finished, ctx.transfer_id, self.row, inventory)
        await ctx.writer.flush()
        self.runner.emit(SampleFinished(sample.row, sample.name, "done", found.id, None))
        last = files[-1]
        last_id = found.data_ids[len(files) - 1] if len(found.data_ids) >= len(files) else last.data_id
        return FileReport(last.local_path, last_id, last.remote_name, last.size, "done")

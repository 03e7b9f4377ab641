"""Samples up, exactly once: every row of a sheet becomes one Flow sample, however often it runs.

The flow of ``samples upload-batch`` (and ``samples upload``, a sheet of one row):

1. **check** every row against the server's catalog and the disk before any
   byte moves (:mod:`._samples_rows`): every problem at once;
2. **plan** the valid rows into the journal (here): a ``samples`` row each
   (the fields sent on every chunk) and a ``files`` row per file (reads1,
   then reads2; a merged cell's parts in ``extra``). A sample the journal
   knows is on the server already (an earlier run made it) is ``skipped``;
3. **send** samples concurrently (``concurrency`` workers), each sample's
   files strictly in order (:class:`~._samples_send.SampleSender`, the
   transfer's file worker);
4. **record** the sample's id from the last file's final answer, in the same
   transaction as the inventory that makes a re-run skip it.

This module owns the ``samples`` transfer as a whole: its journal plan (a
resumed run's rows brought up to date with the sheet and the disk), its run
and its report.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import anyio

from flowxfer.journal import FileRecord, FileState, Journal, NewFile, NewSample, SampleState, TransferRecord

from ._concat import concat_identity
from ._report import FileReport, TransferReport
from ._runner import Runner
from ._runtime import TransferContext
from ._samples_rows import check_samples, sheet_input
from ._samples_send import SampleSender
from ._sheets import SheetRow
from ._validate import PlannedFile, PlannedSample, SamplePlan
from .events import FilesPlanned, Notice, SampleFinished, SamplesPlanned

__all__ = ["run_samples", "sample_reports", "upload_samples"]


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


def _file_entry(
    sample: PlannedSample, position: int, planned: PlannedFile, status: FileState, data_id: str | None
) -> NewFile:
    """A sample's file as a journal row; a merged file keeps its parts and their identity."""
    parts = [[p.path, p.size, p.mtime_ns] for p in planned.parts]
    extra: dict[str, Any] = {"sample": sample.row, "position": position, "label": planned.label, "parts": parts}
    if len(planned.parts) > 1:
        extra["identity"] = concat_identity(planned.parts)
    return NewFile(
        ";".join(p.path for p in planned.parts),
        planned.filename,
        planned.size,
        max(p.mtime_ns for p in planned.parts),
        data_id=data_id,
        status=status,
        extra=extra,
    )


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
        known = await anyio.to_thread.run_sync(
            partial(journal.lookup_samples, ctx.server, ctx.username, [s.name for s in plan.samples])
        )
        samples: list[NewSample] = []
        files: list[NewFile] = []
        for sample in plan.samples:
            found = known.get(sample.name)
            state = SampleState.SKIPPED if found else SampleState.PLANNED
            samples.append(
                NewSample(sample.row, sample.name, dict(sample.fields), state, found.sample_id if found else None)
            )
            ids = list(found.data_ids) if found else []
            for position, planned in enumerate(sample.files):
                files.append(
                    _file_entry(
                        sample,
                        position,
                        planned,
                        FileState.SKIPPED if found else FileState.PLANNED,
                        ids[position] if position < len(ids) else None,
                    )
                )
        samples += [
            NewSample(row, names.get(row, ""), {}, SampleState.INVALID, error="; ".join(problems_of.get(row, [])))
            for row in sorted(plan.invalid_rows)
        ]
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
        runner.emit(
            SamplesPlanned(
                sum(s.status is not SampleState.INVALID for s in made),
                sum(s.status in (SampleState.DONE, SampleState.SKIPPED) for s in made),
            )
        )
        for sample_record in made:
            if sample_record.status is SampleState.SKIPPED:
                runner.emit(
                    SampleFinished(sample_record.row, sample_record.name, "skipped", sample_record.sample_id, None)
                )

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
        result = await SampleSender(ctx, runner, row, files_of[row]).run()
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
    began = {int(r.extra.get("sample", -1)) for r in records if r.data_id or r.bytes_done or r.status is FileState.DONE}
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
            journal.update_sample(
                transfer_id, current.row, status=new.status, fields=new.fields, sample_id=new.sample_id, error=None
            )
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
        if (
            new_file is None
            or int(record.extra.get("sample", -1)) in leave
            or record.status in (FileState.DONE, FileState.SKIPPED)
            or record.extra.get("parts") == new_file.extra["parts"]
        ):
            continue
        journal.set_file(
            record.id,
            size=new_file.size,
            mtime_ns=new_file.mtime_ns,
            extra={**new_file.extra},
            data_id=None,
            bytes_done=0,
            chunk_size=0,
        )


def sample_reports(journal: Journal, transfer_id: str) -> list[dict[str, Any]]:
    """The ``samples`` of the JSON document (``samples.md``), from the journal (blocking)."""
    by_row: dict[int, list[dict[str, Any]]] = {}
    for record in journal.iter_files(transfer_id):
        status = (
            record.status.value if record.status in (FileState.DONE, FileState.SKIPPED, FileState.FAILED) else "pending"
        )
        by_row.setdefault(int(record.extra.get("sample", -1)), []).append(
            {"path": record.local_path, "id": record.data_id, "size": record.size, "status": status}
        )
    shown = {SampleState.PLANNED: "pending", SampleState.ACTIVE: "pending"}
    return [
        {
            "row": s.row,
            "name": s.name,
            "id": s.sample_id,
            "status": shown.get(s.status, s.status.value),
            "files": by_row.get(s.row, []),
            "error": s.error,
        }
        for s in journal.samples_of(transfer_id)
    ]

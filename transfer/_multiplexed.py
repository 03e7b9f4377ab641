"""``samples upload-multiplexed``: reads of many samples in one file, with the sheet that splits them.

As flowbio does it: the annotation sheet goes first (``/upload/annotation``,
checked by the server when its last chunk arrives), so reads are not sent
for a sheet the server refuses; its warnings are accepted
(``ignore_warnings``) unless ``reject_warnings``. Then reads1 and reads2 go
to ``/upload/multiplexed``, reads2 naming reads1's id on every chunk. One
transfer, its three files strictly in order through the ordinary chunked
upload; an interrupted run continues where it stopped.
"""

from __future__ import annotations

import dataclasses
import os
from functools import partial
from typing import Any

import anyio

from flowxfer.journal import FileRecord, FileState, NewFile, TransferRecord

from ._concat import stat_part
from ._errors import LocalIOError, RejectedError, UsageError
from ._report import FileReport, TransferReport
from ._runner import Runner
from ._runtime import TransferContext
from ._sources import FileSource
from ._upload import UploadOptions, upload_source
from ._workers import upload_verification
from .events import FileFinished, FilesPlanned, FileStarted, Notice

__all__ = ["upload_multiplexed"]

_ROLES = ("annotation", "reads1", "reads2")


def _planned(files: dict[str, str]) -> list[NewFile]:
    """The files in the order they go, each with its role (blocking: stats them)."""
    planned = []
    for role in _ROLES:
        if role in files:
            try:
                part = stat_part(files[role])
            except LocalIOError as exc:
                raise UsageError(str(exc)) from None  # an input named on the command line
            planned.append(
                NewFile(files[role], os.path.basename(files[role]), part.size, part.mtime_ns, extra={"role": role})
            )
    return planned


def _problems(body: dict[str, Any], key: str) -> list[str]:
    return [
        f"row {p.get('row')}: {p.get('message')}"
        if isinstance(p, dict) and p.get("row") is not None
        else str(p.get("message") if isinstance(p, dict) else p)
        for p in body.get(key) or []
    ]


async def upload_multiplexed(
    runner: Runner,
    reads1: str | os.PathLike[str],
    reads2: str | os.PathLike[str] | None,
    annotation: str | os.PathLike[str],
    *,
    reject_warnings: bool = False,
    transfer_id: str | None = None,
) -> TransferReport:
    """See :meth:`Flowxfer.upload_multiplexed`."""
    files = {"annotation": os.path.abspath(annotation), "reads1": os.path.abspath(reads1)}  # noqa: ASYNC240
    if reads2 is not None:
        files["reads2"] = os.path.abspath(reads2)  # noqa: ASYNC240
    planned = await anyio.to_thread.run_sync(_planned, files)
    outcome: dict[str, Any] = {"annotation_id": None, "data_ids": [], "warnings": [], "problems": []}

    async def plan(ctx: TransferContext, record: TransferRecord, resumed: bool) -> None:
        if not record.state.get("planned"):
            await anyio.to_thread.run_sync(ctx.journal.add_files, record.id, planned)
            await anyio.to_thread.run_sync(partial(ctx.journal.update_transfer_state, record.id, planned=True))
        runner.emit(FilesPlanned(len(planned), sum(f.size for f in planned)))

    fed: list[int] = []

    def feed(record: FileRecord) -> bool:
        """One worker takes the three files in order."""
        fed.append(record.id)
        return len(fed) == 1

    async def work(ctx: TransferContext, first: FileRecord) -> FileReport:
        records = await anyio.to_thread.run_sync(lambda: list(ctx.journal.iter_files(ctx.transfer_id)))
        ids: dict[str, str] = {}
        report = FileReport(first.local_path, first.data_id, first.remote_name, first.size, "done")
        for record in records:
            role = str(record.extra.get("role"))
            if record.status is FileState.DONE and record.data_id:
                ids[role] = record.data_id
                continue
            report = await _send(ctx, runner, record, role, ids, reject_warnings, outcome)
            if report.status != "done":
                return report
            assert report.id is not None
            ids[role] = report.id
            if role != records[-1].extra.get("role"):
                runner.emit(FileFinished(record.local_path, record.remote_name, "done", record.size, report.id, None))
        outcome["annotation_id"] = ids.get("annotation")
        outcome["data_ids"] = [ids[r] for r in ("reads1", "reads2") if r in ids]
        return report

    report = await runner.run(
        "multiplexed", {**files, "reject_warnings": reject_warnings}, plan, work, transfer_id=transfer_id, feed=feed
    )
    if not outcome["data_ids"]:
        journal = await runner.journal()
        done = {
            str(r.extra.get("role")): r.data_id
            for r in await anyio.to_thread.run_sync(lambda: list(journal.iter_files(report.transfer_id)))
            if r.status is FileState.DONE
        }
        outcome["annotation_id"] = done.get("annotation")
        outcome["data_ids"] = [done[r] for r in ("reads1", "reads2") if done.get(r)]
    report.extra.update(outcome)
    return report


async def _send(
    ctx: TransferContext,
    runner: Runner,
    record: FileRecord,
    role: str,
    ids: dict[str, str],
    reject_warnings: bool,
    outcome: dict[str, Any],
) -> FileReport:
    endpoint = "/upload/annotation" if role == "annotation" else "/upload/multiplexed"
    fields: tuple[tuple[str, str], ...] = (("reads1", ids["reads1"]),) if role == "reads2" else ()
    if role == "annotation" and record.extra.get("ignore_warnings"):
        fields = (("ignore_warnings", "true"),)
    ctx.events(FileStarted(record.local_path, record.remote_name, record.size, record.bytes_done))
    source = FileSource(record.local_path, record.size, record.mtime_ns)
    try:
        result = await upload_source(ctx, record, source, UploadOptions(endpoint=endpoint, fields=fields))
    except RejectedError as exc:
        if role != "annotation" or exc.status != 400:
            raise
        warnings, problems = _problems(exc.body, "warnings"), _problems(exc.body, "validation")
        if warnings and not problems and not reject_warnings:
            outcome["warnings"] = warnings
            runner.emit(
                Notice(f"the annotation sheet has {len(warnings)} warning(s), accepted: " + "; ".join(warnings[:3]))
            )
            retry = {**record.extra, "ignore_warnings": True}
            ctx.writer.batch.update_file(record.id, extra=retry, data_id=None, bytes_done=0, chunk_size=0)
            ctx.writer.added()
            again = dataclasses.replace(record, extra=retry, data_id=None, bytes_done=0, chunk_size=0)
            return await _send(ctx, runner, again, role, ids, reject_warnings, outcome)
        outcome["problems"] = problems or warnings
        raise RejectedError(
            "the annotation sheet was refused: " + "; ".join(problems or warnings), 400, exc.body
        ) from None
    ctx.counters.verified.add(upload_verification(ctx.capabilities))
    ctx.writer.batch.upload_done(record.id, result.data_id, record.size, result.checksum)
    ctx.writer.added()
    await ctx.writer.flush()
    return FileReport(record.local_path, result.data_id, record.remote_name, record.size, "done")

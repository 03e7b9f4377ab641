"""``sync DIR``: upload what is new or changed in a run folder, once it is ready.

Planned by :mod:`._syncplan` (the walk and the decisions), then worked like
any upload by the :class:`~._runner.Runner`, with two steps of its own:

- **readiness**: a marker file (``--ready-marker``) must exist before
  anything is planned; a file changed since it was planned is sent only once
  it has been left alone for ``--min-age``;
- **sharing**: each uploaded item is granted to the ``--share`` targets
  through the permissions API, each grant journaled as a step, before the
  item counts as done.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any
from urllib.parse import quote

import anyio

from flowxfer.journal import (
    FileRecord,
    Journal,
    NewFile,
    PackRecord,
    TransferRecord,
)

from ._errors import LocalIOError, RejectedError, SourceChangedError, UsageError
from ._packing import PackPlan, TarSource, members_in_folder
from ._report import FileReport, TransferReport
from ._runner import Runner
from ._runtime import TransferContext
from ._syncplan import (
    ShareGrant,
    SyncOptions,
    SyncSummary,
    plan_sync,
    stable,
)
from ._tokenbucket import TokenBucket
from ._upload import UploadOptions, UploadResult, upload_source
from ._workers import remember_upload, upload_file, upload_verification
from .events import FilesPlanned, FileStarted, Notice

__all__ = ["SyncPreview", "plain_and_unsent", "preview_sync", "run_sync"]

# --- previews ------------------------------------------------------------------------


@dataclass
class SyncPreview:
    """``sync --dry-run``: the plan and what it costs against the rate limits.

    :ivar requests: requests by rate-limit class (``upload``: one per new
        upload; continuing chunks are not counted; ``api``: the grants).
    :ivar waits: seconds the buckets would make the run wait, by class.
    :ivar seconds_bandwidth: seconds the bandwidth limit alone needs (None: unlimited).
    """

    root: str
    ready: bool
    waiting_for: str | None
    summary: SyncSummary
    requests: dict[str, int]
    waits: dict[str, float]
    limits: dict[str, str]
    seconds_bandwidth: float | None

    @property
    def seconds(self) -> float:
        return max([*self.waits.values(), self.seconds_bandwidth or 0.0])

    def to_json(self) -> dict[str, Any]:
        return {
            "dry_run": True,
            "root": self.root,
            "ready": self.ready,
            "waiting_for": self.waiting_for,
            **self.summary.to_json(),
            "requests": self.requests,
            "waits": self.waits,
            "limits": self.limits,
            "seconds_bandwidth": self.seconds_bandwidth,
            "seconds": self.seconds,
        }


def _resolve_root(root: str | os.PathLike[str]) -> str:
    path = os.path.abspath(os.path.expanduser(os.fspath(root)))
    if not os.path.isdir(path):
        raise UsageError(f"{root}: not a folder" if os.path.exists(path) else f"{root}: no such folder")
    return path


def _not_ready(root: str, options: SyncOptions) -> str | None:
    """The marker a run folder is still waiting for, or None."""
    if options.ready_marker and not os.path.isfile(os.path.join(root, options.ready_marker)):
        return options.ready_marker
    return None


def _journal_files(journal: Journal) -> frozenset[str]:
    """The journal's own files: never synced, even when the journal lives inside the folder."""
    if journal.path is None:  # a database server: no file of its own in any folder
        return frozenset()
    base = str(journal.path.resolve())
    return frozenset({base, base + "-wal", base + "-shm", base + "-journal"})


async def preview_sync(runner: Runner, root: str | os.PathLike[str], options: SyncOptions) -> SyncPreview:
    """The plan of a sync and its cost, sending nothing (the journal is only read, buckets aside)."""
    path = await anyio.to_thread.run_sync(_resolve_root, root)
    client = runner.require_login()
    journal = await runner.journal()
    marker = await anyio.to_thread.run_sync(_not_ready, path, options)
    summary = await anyio.to_thread.run_sync(
        partial(
            plan_sync,
            journal,
            runner.base_url,
            client.username,
            path,
            options,
            now=time.time(),
            rows=None,
            members=None,
            skip=_journal_files(journal),
        )
    )
    requests = {"upload": summary.uploads, "api": summary.uploads * len(options.shares)}
    await runner.adopt_budget(journal)  # what other runs left of the hourly budgets
    limiter = client.limiter
    now = time.time()
    waits: dict[str, float] = {}
    limits: dict[str, str] = {}
    for name, count in requests.items():
        bucket = TokenBucket.from_state(limiter.bucket(name).to_state())
        waits[name] = round(bucket.reserve(count, now), 1) if count else 0.0
        limits[name] = limiter.describe(name)
    seconds_bandwidth = None
    if limiter.bandwidth is not None:
        from datetime import datetime

        rate = limiter.bandwidth.rate_at(datetime.now())
        if rate:
            seconds_bandwidth = round(summary.bytes / rate, 1)
    return SyncPreview(path, marker is None, marker, summary, requests, waits, limits, seconds_bandwidth)


# --- the run -------------------------------------------------------------------------


#: Members of the tars a run keeps in memory from planning to upload (:class:`_PlannedPacks`).
_HANDED_MEMBERS = 25_000


class _PlannedPacks:
    """The tars this run planned, handed to their uploads as planned (layout included).

    An upload otherwise reads its member list back from the journal and lays
    the tar out again: for the first tars of a 10,000-file folder, work done
    on the client's one busy core just before the first byte, and done twice.
    The journal stays the record (a resume, or a tar beyond the bound, reads it);
    the bound keeps memory flat for a million small files. A plan is found by
    its tar's virtual path (which names its folder) and manifest together.
    """

    def __init__(self, limit: int) -> None:
        self._plans: dict[tuple[str, str], PackPlan] = {}
        self._room = limit

    def keep(self, path: str, plan: PackPlan) -> None:
        if len(plan.members) <= self._room:
            self._plans[(path, plan.manifest)] = plan
            self._room -= len(plan.members)

    def take(self, path: str, manifest: str) -> PackPlan | None:
        plan = self._plans.pop((path, manifest), None)
        if plan is not None:
            self._room += len(plan.members)
        return plan


async def run_sync(
    runner: Runner, root: str | os.PathLike[str], options: SyncOptions, *, transfer_id: str | None = None
) -> TransferReport:
    """Sync a run folder (see :meth:`Flowxfer.sync`)."""
    path = await anyio.to_thread.run_sync(_resolve_root, root)
    marker = await anyio.to_thread.run_sync(_not_ready, path, options)
    if marker is not None:
        return TransferReport(
            transfer_id="",
            kind="sync",
            status="waiting",
            files=[],
            bytes_transferred=0,
            bytes_skipped=0,
            seconds=0.0,
            retries=0,
            extra={"waiting_for": marker, "root": path},
        )
    found = SyncSummary()
    planned = _PlannedPacks(_HANDED_MEMBERS)

    async def plan(ctx: TransferContext, record: TransferRecord, resumed: bool) -> None:
        nonlocal found
        journal = ctx.journal
        generation = int(record.state.get("plan_gen", 0)) + 1
        await anyio.to_thread.run_sync(partial(journal.update_transfer_state, record.id, plan_gen=generation))

        def rows(batch: list[tuple[NewFile, str | None]]) -> None:
            journal.upsert_planned_files(record.id, batch, generation)

        def members(path: str, pack: PackPlan) -> None:
            journal.add_pack_members(pack.manifest, pack.members)
            planned.keep(path, pack)

        try:
            found = await anyio.to_thread.run_sync(
                partial(
                    plan_sync,
                    journal,
                    ctx.server,
                    ctx.username,
                    path,
                    options,
                    now=time.time(),
                    rows=rows,
                    members=members,
                    skip=_journal_files(journal),
                )
            )
        except BaseException:
            with anyio.CancelScope(shield=True):
                # Nothing planned by a failed planning may be worked, now or by a later resume.
                await anyio.to_thread.run_sync(journal.drop_unplanned_files, record.id, -1)
            raise
        await anyio.to_thread.run_sync(journal.drop_unplanned_files, record.id, generation)
        runner.emit(FilesPlanned(found.files + found.packs, found.bytes))
        if found.waiting:
            runner.emit(
                Notice(
                    f"{found.waiting} file(s) not yet stable (--min-age {options.min_age:g} s); "
                    "a later run uploads them"
                )
            )
        if found.deleted:
            runner.emit(
                Notice(
                    f"{found.deleted} file(s) uploaded earlier are gone locally (kept on Flow), e.g. "
                    + ", ".join(found.deleted_examples[:3])
                )
            )

    async def work(ctx: TransferContext, record: FileRecord) -> FileReport:
        return await _sync_one(ctx, record, options, planned)

    report = await runner.run(
        "sync",
        options.params(path),
        plan,
        work,
        transfer_id=transfer_id,
        leases=[f"sync:{path}"],
        read_ahead=plain_and_unsent,
        measure_early=True,  # the folder's scan and plan hide the round trip's GETs
    )
    report.bytes_skipped += found.unchanged_bytes
    report.extra.update(
        {
            "root": path,
            "unchanged": found.unchanged,
            "unchanged_bytes": found.unchanged_bytes,
            "packs": found.packs,
            "packed_files": found.packed_files,
            "waiting": found.waiting,
            "deleted_locally": found.deleted,
            "deleted_examples": found.deleted_examples,
        }
    )
    if report.status == "completed" and not report.files:
        # Nothing to do: leave no trace, or cron every five minutes fills the journal with empty runs.
        journal = await runner.journal()
        await anyio.to_thread.run_sync(journal.delete_transfer, report.transfer_id)
    return report


def plain_and_unsent(record: FileRecord) -> bool:
    """A file (not a tar of a folder's small files) with nothing sent yet: worth reading ahead."""
    return not record.data_id and "pack" not in record.extra


async def _sync_one(
    ctx: TransferContext, record: FileRecord, options: SyncOptions, planned: _PlannedPacks
) -> FileReport:
    """Upload one file or tar, grant it to the share targets, then journal it done (in that order)."""
    ctx.events(FileStarted(record.local_path, record.remote_name, record.size, record.bytes_done))
    manifest = record.extra.get("pack")
    # Taken whatever happens next, so a tar sent by an earlier run does not hold its room.
    pack = planned.take(record.local_path, str(manifest)) if manifest else None
    if record.extra.get("uploaded") and record.data_id:
        result = UploadResult(record.data_id, record.checksum)  # sent by an earlier run; grants were pending
    else:
        if manifest:
            result = await _upload_pack(ctx, record, str(manifest), options, pack)
        else:
            record, result = await upload_file(
                ctx, record, UploadOptions(data_type=options.data_type), partial(_check_settled, options)
            )
        if options.shares:
            # Grants follow: make "sent" durable first, so a crash before they are all made
            # resumes with the grants instead of uploading the item again.
            ctx.writer.batch.update_file(
                record.id,
                data_id=result.data_id,
                checksum=result.checksum,
                bytes_done=record.size,
                extra={**record.extra, "uploaded": True},
            )
            ctx.writer.added()
            await ctx.writer.flush()
            record = dataclasses.replace(
                record, data_id=result.data_id, checksum=result.checksum, extra={**record.extra, "uploaded": True}
            )
            record = await _grant(ctx, record, result.data_id, options.shares)
    if manifest:
        # The tar's inventory entry and its row's "done" go in one batch, so one commit: a later
        # sync trusts the inventory and drops unfinished rows, so neither may exist without the other.
        batch = ctx.writer.batch
        batch.upload_done(record.id, result.data_id, record.size, result.checksum)
        batch.remember_pack(
            PackRecord(
                ctx.server,
                ctx.username,
                record.local_path,
                record.remote_name,
                str(manifest),
                result.data_id,
                record.size,
                result.checksum,
                int(record.extra.get("members", 0)),
                tuple(record.extra.get("superseded", ())),
            )
        )
        ctx.writer.added()
    else:
        assert record.mtime_ns is not None
        remember_upload(ctx, record, result, record.mtime_ns)
    ctx.counters.verified.add(upload_verification(ctx.capabilities))
    return FileReport(record.local_path, result.data_id, record.remote_name, record.size, "done")


def _check_settled(options: SyncOptions, record: FileRecord, st: os.stat_result) -> None:
    """A file changed since it was planned is uploaded now only if it has been left alone for ``--min-age``.

    :raises SourceChangedError: it is still being written; a later run takes it.
    """
    if not stable(st.st_mtime_ns, st.st_ctime_ns, time.time(), options.min_age):
        raise SourceChangedError(
            f"{record.local_path} changed since it was planned and has not been "
            f"left alone for --min-age {options.min_age:g} s yet; a later run takes it"
        )


async def _upload_pack(
    ctx: TransferContext, record: FileRecord, manifest: str, options: SyncOptions, planned: PackPlan | None
) -> UploadResult:
    """Upload a packed tar, generated from its members as it goes (resumable mid-tar).

    :param planned: the tar as this run planned it, or None: read from the journal.
    """
    if planned is not None:
        source = TarSource(planned.members, planned.layout)
    else:
        members = await anyio.to_thread.run_sync(ctx.journal.pack_members, manifest)
        if not members:
            raise LocalIOError(
                f"{record.remote_name}: its member list is missing from the journal; "
                "the next sync packs the folder again"
            )
        source = TarSource(members_in_folder(record.local_path, members))
    if source.size != record.size:
        raise LocalIOError(
            f"{record.remote_name}: the tar would be {source.size} bytes, planned "
            f"{record.size}; the next sync packs the folder again"
        )
    try:
        return await upload_source(ctx, record, source, UploadOptions(data_type=options.data_type, is_directory=True))
    except SourceChangedError as exc:
        raise SourceChangedError(f"{exc}; the next sync packs the folder again") from None


async def _grant(ctx: TransferContext, record: FileRecord, data_id: str, shares: Sequence[ShareGrant]) -> FileRecord:
    """``PUT /data/<id>/permissions`` for each grant not yet journaled as made."""
    done = list(record.extra.get("shared", []))
    for grant in shares:
        if str(grant) in done:
            continue
        try:
            await ctx.client.json_request(
                "PUT",
                f"/data/{quote(data_id, safe='')}/permissions",
                rate_class="api",
                json_body={grant.kind: grant.name, "level": grant.level},
            )
        except RejectedError as exc:
            raise RejectedError(
                f"{record.local_path} was uploaded as {data_id}, but granting {grant} failed: {exc}",
                exc.status,
                exc.body,
            ) from None
        done.append(str(grant))
        record = dataclasses.replace(record, extra={**record.extra, "shared": done})
        ctx.writer.batch.update_file(record.id, extra=record.extra)
        ctx.writer.added()
        await ctx.writer.flush()
    return record

"""``bulk``: many data items as one server-built archive, and when ``download`` should use it.

Each single download costs a request against Flow's 500/hour download
budget; an archive job costs one ``POST``, a few polls (api class) and a
few ranged ``GET``s of one file. The flow of a bulk transfer:

1. **create** ``POST /downloads`` and journal the job id at once
   (``update_transfer_state`` is durable on return): an interrupted run, or
   ``resume``, re-attaches to the same job instead of creating another;
2. **poll** ``GET /downloads/jobs/<id>`` with a growing interval
   (:class:`PollSchedule`: from ``--poll-interval``, times 1.5, capped at
   30 s; a ``Retry-After`` on the answer is honoured; each poll takes an api
   token), emitting :class:`~.events.JobProgress`, until ``--timeout``;
3. an ``expired`` job (or a ``410`` archive, or a job the server no longer
   knows) is created again, once per run, with a message;
4. **download** the archive through the same resumable, ranged, verified
   path as single files (which checks it against the server's
   ``X-Checksum`` as a whole before it takes its name);
5. with ``--extract``, unpack it safely (:mod:`._extract`), verifying each
   file against its data item's checksum when the server has checksums,
   and remove the archive unless ``--keep-archive``.

:func:`~._advice.advise_download` is the pure arithmetic behind
``download --dry-run`` and ``--auto-bulk``.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio

from flowxfer import protocol
from flowxfer.journal import FileRecord, FileState, InventoryRecord, NewFile, TransferRecord

from ._checksums import local_checksum
from ._download import RemoteFile, download_file
from ._errors import GoneError, LocalIOError, NotFoundError, ProtocolError, RejectedError, StopRequested, UsageError
from ._extract import ExpectedMember, ExtractResult, extract_archive
from ._plan import RemoteData
from ._remote import describe
from ._report import FileReport, TransferReport
from ._retry import parse_retry_after
from ._runner import Runner
from ._runtime import TransferContext
from .events import FileStarted, FileVerifying, JobProgress, Notice

__all__ = ["DEFAULT_ARCHIVE_NAME", "PollSchedule", "run_bulk"]

DEFAULT_ARCHIVE_NAME = "flow-download.zip"
#: Where an archive whose members have set places (``placements``) is unpacked first, under the output folder.
STAGING = ".flowxfer-archive"


# --- polling ------------------------------------------------------------------------


@dataclass
class PollSchedule:
    """How long to wait before the next poll of a job (pure).

    Starts at ``start`` seconds and grows by ``factor`` to ``cap``; a
    server's ``Retry-After`` replaces the computed wait when it is longer.
    """

    start: float = 1.0
    factor: float = 1.5
    cap: float = 30.0
    _next: float = field(default=0.0, init=False)

    def __post_init__(self) -> None:
        if self.start <= 0 or self.factor < 1 or self.cap < self.start:
            raise ValueError("poll interval must be positive, grow, and stay under its cap")
        self._next = self.start

    def next_delay(self, retry_after: float | None = None) -> float:
        delay = self._next
        self._next = min(self._next * self.factor, self.cap)
        if retry_after is not None and retry_after > delay:
            delay = retry_after
        return delay


# --- the bulk transfer -----------------------------------------------------------------


def staging_name(out: Path, targets: Sequence[str]) -> str:
    """A folder name under ``out`` that no target path uses as its first part: :data:`STAGING`, or ``-2``... (pure)."""
    taken = set()
    for target in targets:
        path = Path(target)
        if path.is_relative_to(out) and path != out:
            taken.add(path.relative_to(out).parts[0].casefold())
    name, number = STAGING, 1
    while name.casefold() in taken:
        number += 1
        name = f"{STAGING}-{number}"
    return name


def check_archive_name(name: str) -> str:
    """:raises UsageError: for a name the server would refuse (a Flow filename ending in .zip, .tar.gz or .tgz).

    The name is only a name: what arrives may be either kind (hosted Flow builds tar.gz).
    """
    problem = protocol.filename_problem(name)
    if problem:
        raise UsageError(f"bad archive name {name!r}: {problem}")
    if not name.lower().endswith(protocol.ARCHIVE_SUFFIXES):
        raise UsageError(f"the archive name must end in {', '.join(protocol.ARCHIVE_SUFFIXES)}: {name!r}")
    return name


class _Job:
    """One transfer's server-side job: created once, journaled at once, polled, re-created once if it expired."""

    def __init__(
        self,
        runner: Runner,
        ctx: TransferContext,
        transfer_id: str,
        ids: list[str],
        name: str,
        job_id: str | None,
        poll_interval: float,
        timeout: float | None,
    ) -> None:
        self.runner, self.ctx, self.transfer_id = runner, ctx, transfer_id
        self.ids, self.name = ids, name
        self.id = job_id
        self.poll_interval, self.timeout = poll_interval, timeout
        self.recreated = False
        self.size: int | None = None

    async def create(self) -> str:
        answer = await self.ctx.client.json_request(
            "POST", "/downloads", rate_class="api", json_body={"data_ids": self.ids, "name": self.name}
        )
        job_id = answer.get("id")
        if not isinstance(job_id, str | int) or str(job_id) == "":
            raise ProtocolError("POST /downloads: the answer carries no job id")
        self.id = str(job_id)
        # Durable before anything else happens: a crash from here on re-attaches to this job.
        await anyio.to_thread.run_sync(
            partial(self.ctx.journal.update_transfer_state, self.transfer_id, job_id=self.id, job_created=time.time())
        )
        self.runner.emit(Notice(f"archive job {self.id} created for {len(self.ids)} data item(s)"))
        return self.id

    async def recreate(self, why: str) -> None:
        if self.recreated:
            raise GoneError(
                f"archive job {self.id} {why} again right after it was created anew; run the same command later", 410
            )
        self.recreated = True
        self.runner.emit(Notice(f"archive job {self.id} {why}; creating it again (once)"))
        await self.create()

    async def completed(self) -> dict[str, Any]:
        """Poll until the job is completed; returns its description.

        :raises StopRequested: ``timeout`` passed (the transfer stops, re-attachable).
        """
        assert self.id is not None
        schedule = PollSchedule(start=self.poll_interval, cap=max(30.0, self.poll_interval))
        deadline = time.monotonic() + self.timeout if self.timeout is not None else None
        while True:
            if self.ctx.stopping():
                raise StopRequested()
            try:
                job, response = await self.ctx.client.json_request_with_response(
                    "GET", f"/downloads/jobs/{quote(self.id, safe='')}", rate_class="api"
                )
                retry_after = parse_retry_after(response.headers.get("Retry-After"), time.time())
            except NotFoundError:
                await self.recreate("is unknown to the server")
                continue
            status = job.get("status")
            progress = job.get("progress")
            self.runner.emit(
                JobProgress(self.id, str(status), float(progress) if isinstance(progress, int | float) else 0.0)
            )
            if status == "completed":
                size = job.get("size")
                if not isinstance(job.get("download_url"), str) or not isinstance(size, int) or size < 0:
                    raise ProtocolError(f"archive job {self.id} is completed but names no archive")
                self.size = size
                return job
            if status == "expired":
                await self.recreate("expired before its archive was downloaded")
                schedule = PollSchedule(start=self.poll_interval, cap=max(30.0, self.poll_interval))
                continue
            if status == "failed":
                raise RejectedError(
                    f"archive job {self.id} failed on the server: {job.get('error') or 'no reason'}", 0, job
                )
            if status not in ("pending", "running"):
                raise ProtocolError(f"archive job {self.id} has an unknown status {status!r}")
            delay = schedule.next_delay(retry_after)
            if deadline is not None and time.monotonic() + delay > deadline:
                self.runner.emit(
                    Notice(
                        f"archive job {self.id} is still {status} after --timeout "
                        f"{self.timeout:g} s; run the same command again to pick it up"
                    )
                )
                self.runner.stop("timeout")
                raise StopRequested()
            await anyio.sleep(delay)


async def run_bulk(
    runner: Runner,
    ids: Sequence[str],
    *,
    name: str | None = None,
    output_dir: Path | str = ".",
    extract: bool = False,
    keep_archive: bool = False,
    poll_interval: float = 1.0,
    job_timeout: float | None = None,
    known: Sequence[RemoteData] | None = None,
    placements: Sequence[tuple[str, str]] | None = None,
    transfer_id: str | None = None,
) -> TransferReport:
    """See :meth:`Flowxfer.bulk`.

    :param placements: for each id, its filename and the path it must end at
        (``bulk --execution``): the archive is downloaded and extracted in a
        staging folder under ``output_dir`` (:func:`staging_name`), each member predicted for an id
        (:func:`flowxfer.protocol.archive_member_names`) is moved to its path and
        remembered there, and the staging folder is removed. Ids whose member
        was not found are listed in ``extra["unplaced"]``.
    """
    unique = list(dict.fromkeys(str(i) for i in ids))
    if not unique:
        raise UsageError("name at least one data id")
    if placements is not None and len(placements) != len(unique):
        raise UsageError("one placement for each distinct id")
    archive_name = check_archive_name(name or DEFAULT_ARCHIVE_NAME)
    if poll_interval <= 0:
        raise UsageError("--poll-interval must be more than 0 seconds")
    out = await anyio.to_thread.run_sync(lambda: Path(output_dir).expanduser().resolve())
    # With placements the archive and its members stay in a folder of their own, named so that no output is
    # in its way (and the same on a re-run, which re-attaches to this transfer by its parameters).
    staging = out / staging_name(out, [target for _, target in placements]) if placements is not None else None
    target = (staging or out) / archive_name
    extract = extract or placements is not None
    params: dict[str, Any] = {"ids": unique, "name": archive_name, "output_dir": str(out), "extract": extract}
    if placements is not None:
        params["placements"] = [list(p) for p in placements]
    outcome: dict[str, Any] = {"job_id": None, "archive": str(target), "archive_removed": False, "extracted": []}

    async def plan(ctx: TransferContext, record: TransferRecord, resumed: bool) -> None:
        journal = ctx.journal
        state = record.state
        if extract and "expected" not in state and ctx.capabilities.checksums:
            # Each description is an api request: worth it only where it brings a checksum to verify against.
            items = list(known) if known is not None else await describe(runner.client, unique)
            by_id = {item.id: item for item in items}
            expected = [[i, by_id[i].filename, by_id[i].size, by_id[i].checksum] for i in unique if i in by_id]
            state = await anyio.to_thread.run_sync(partial(journal.update_transfer_state, record.id, expected=expected))
        try:
            await anyio.to_thread.run_sync(partial(os.makedirs, target.parent, exist_ok=True))
        except OSError as exc:
            raise UsageError(f"cannot create output folder {out}: {exc.strerror}") from None
        if state.get("job_id"):
            outcome["job_id"] = state["job_id"]
            runner.emit(Notice(f"re-attaching to archive job {state['job_id']}"))
        else:
            job = _Job(runner, ctx, record.id, unique, archive_name, None, poll_interval, job_timeout)
            outcome["job_id"] = await job.create()
        await anyio.to_thread.run_sync(journal.add_files, record.id, [NewFile(str(target), archive_name, 0, None)])

    async def work(ctx: TransferContext, record: FileRecord) -> FileReport:
        current = await anyio.to_thread.run_sync(ctx.journal.get_transfer, ctx.transfer_id)
        assert current is not None  # the runner holds its lease
        state = current.state  # planning journaled the job id (created, or re-attached to)
        job = _Job(runner, ctx, ctx.transfer_id, unique, archive_name, state.get("job_id"), poll_interval, job_timeout)
        # The archive is done once it is extracted (with --extract), not once it is downloaded: a run
        # that stopped between the two extracts it on resume (a failed extraction left it failed).
        ctx.writer.batch.file_state(record.id, FileState.ACTIVE)
        size, checksum = await _fetch_archive(ctx, record, job, target)
        outcome["job_id"] = job.id
        outcome["verified"] = (
            "xxh3-128 of the whole archive against the server's checksum"
            if checksum
            else "size and ETag (the server offers no checksum)"
        )
        if extract:
            expected = None
            if state.get("expected") is not None:
                listed = [(str(i), str(n)) for i, n, _s, _c in state["expected"]]
                names = protocol.archive_member_names(listed)
                expected = [
                    ExpectedMember(member, str(i), int(s), c)
                    for member, (i, _n, s, c) in zip(names, state["expected"], strict=True)
                ]
            runner.emit(FileVerifying(record.local_path))
            into = staging / "members" if staging is not None else out
            result = await anyio.to_thread.run_sync(extract_archive, target, into, expected)
            if placements is not None:
                result.files, outcome["unplaced"] = await _place(ctx, expected, into, unique, placements)
            else:
                await _remember_extracted(ctx, result, expected, out)
            outcome["extracted"] = result.files
            outcome["extract_verified"] = result.verified
            if result.unverified and expected is not None:
                runner.emit(
                    Notice(
                        f"{len(result.unverified)} extracted file(s) matched no data item's checksum "
                        "(checked by size and CRC only)"
                    )
                )
            if not keep_archive or placements is not None:
                await anyio.to_thread.run_sync(target.unlink)
                outcome["archive_removed"] = True
            if staging is not None:
                await anyio.to_thread.run_sync(partial(shutil.rmtree, staging, ignore_errors=True))
            outcome["verified"] += (
                f"; {result.verified} extracted file(s) against their data's checksum"
                if result.verified
                else "; extracted files by size and CRC-32"
            )
        ctx.writer.batch.file_state(record.id, FileState.DONE, error=None)
        ctx.writer.added()
        return FileReport(record.local_path, job.id, archive_name, size, "done")

    report = await runner.run("bulk", params, plan, work, transfer_id=transfer_id)
    if report.stop_reason == "timeout":
        runner.clear_stop()  # the job's wait ended this transfer, not the client: its next call may go on
    report.extra.update(outcome)
    if report.status == "completed":
        report.verified = outcome.get("verified") or report.verified
    return report


async def _fetch_archive(ctx: TransferContext, record: FileRecord, job: _Job, target: Path) -> tuple[int, str | None]:
    """The archive on disk, downloaded (or found from an earlier run) and checked whole."""
    if record.checksum and record.size:
        # An earlier run downloaded and verified it (its extraction then failed): do not fetch it again.
        def same() -> bool:
            try:
                return os.path.getsize(target) == record.size and local_checksum(target) == record.checksum
            except OSError:
                return False

        if await anyio.to_thread.run_sync(same):
            return record.size, record.checksum
    while True:
        description = await job.completed()
        assert job.size is not None
        remote = RemoteFile(str(description["download_url"]), job.size)
        # Started once its size is known: before the job completes there is nothing to count against.
        ctx.events(FileStarted(record.local_path, target.name, job.size, min(record.bytes_done, job.size)))
        try:
            result = await download_file(ctx, record, remote, finish=False)
        except GoneError:
            await job.recreate("expired while its archive was being downloaded")
            continue
        except NotFoundError:
            await job.recreate("lost its archive")
            continue
        break
    # download_file checked the whole archive against the server's X-Checksum before it took its name.
    ctx.writer.batch.update_file(record.id, checksum=result.checksum, size=job.size)
    ctx.writer.added()
    return job.size, result.checksum


async def _place(
    ctx: TransferContext,
    expected: list[ExpectedMember] | None,
    out: Path,
    ids: list[str],
    placements: Sequence[tuple[str, str]],
) -> tuple[list[str], list[str]]:
    """Move each id's member from the staging folder to its path and remember it there.

    The member is found by the name the archive gives it (first holder of a
    filename keeps it, later ones ``name (id).ext``); extraction checked it
    against the data's checksum where the server gives one, else by size and
    CRC. A member never found is left to a single download.

    :returns: the placed paths, and the ids not placed.
    """
    checksums = {m.data_id: m.checksum for m in expected or []}
    names = protocol.archive_member_names([(i, filename) for i, (filename, _) in zip(ids, placements, strict=True)])

    def move() -> tuple[list[str], list[str], list[InventoryRecord]]:
        placed, unplaced, records = [], [], []
        for data_id, name, (_, path) in zip(ids, names, placements, strict=True):
            member = out / name
            if not member.is_file():
                unplaced.append(data_id)
                continue
            os.makedirs(os.path.dirname(path), exist_ok=True)
            os.replace(member, path)
            st = os.stat(path)
            placed.append(path)
            records.append(
                InventoryRecord(
                    ctx.server,
                    ctx.username,
                    "down",
                    path,
                    data_id,
                    st.st_size,
                    st.st_mtime_ns,
                    checksums.get(data_id),
                    data_id,
                )
            )
        return placed, unplaced, records

    try:
        placed, unplaced, records = await anyio.to_thread.run_sync(move)
    except OSError as exc:
        raise LocalIOError(f"cannot move an extracted file into place: {exc}") from None
    for record in records:
        ctx.writer.batch.remember(record)
    ctx.writer.added()
    return placed, unplaced


async def _remember_extracted(
    ctx: TransferContext, result: ExtractResult, expected: list[ExpectedMember] | None, out: Path
) -> None:
    """Record extracted files as downloaded, so a later ``download`` of those ids skips them."""
    if not expected:
        return
    by_path = {str(out / member.name): member for member in expected}

    def stats() -> list[InventoryRecord]:
        records = []
        for path in result.files:
            member = by_path.get(path)
            if member is None or member.checksum is None:
                continue
            st = os.stat(path)
            records.append(
                InventoryRecord(
                    ctx.server,
                    ctx.username,
                    "down",
                    path,
                    member.data_id,
                    st.st_size,
                    st.st_mtime_ns,
                    member.checksum,
                    member.data_id,
                )
            )
        return records

    for record in await anyio.to_thread.run_sync(stats):
        ctx.writer.batch.remember(record)
    ctx.writer.added()

"""Bulk archive jobs: ``POST /downloads``, ``GET /downloads/jobs/<id>``, the archive URL.

A job is a row in SQLite first (so it survives a restart), then an asyncio
task that runs :func:`build_archive` in a worker thread: never in the
request. Archives are ZIP64-capable and stored (bioinformatics files are
compressed already; storing keeps building disk-bound and ranges cheap),
or, with ``serve --archive-format tar.gz``, tar.gz as hosted Flow builds them,
written to a temporary name, fsynced, hashed, then renamed into place.
Completed archives expire ``job_ttl`` seconds after completion: the file is
deleted and the URL answers 410.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tarfile
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

from aiohttp import web

from flowxfer._os import fsync_dir
from flowxfer.protocol import ARCHIVE_SUFFIXES, archive_member_names, filename_problem

from ._downloads import serve_file, wants_direct
from ._http import ApiError, Bare404, bad_request, json_response, not_found, read_json
from ._ids import is_id, new_id
from ._sink import hash_file
from ._state import State, user_of
from ._store import JobRow

log = logging.getLogger("flowxfer.server.jobs")

PENDING, RUNNING, COMPLETED, FAILED, EXPIRED = "pending", "running", "completed", "failed", "expired"
DEFAULT_ARCHIVE_NAME = "flow-download.zip"
_COPY_BLOCK = 1024 * 1024


@dataclass(frozen=True)
class Member:
    path: Path
    arcname: str
    size: int
    mtime: float


ZIP, TAR_GZ = "zip", "tar.gz"
ARCHIVE_FORMATS = (ZIP, TAR_GZ)


class _Counted:
    """A file read through for :mod:`tarfile`, reporting each block it hands out."""

    def __init__(self, raw: IO[bytes], on_read: Callable[[int], None]) -> None:
        self._raw = raw
        self._on_read = on_read

    def read(self, size: int = -1) -> bytes:
        block = self._raw.read(size)
        self._on_read(len(block))
        return block


def _write_zip(members: Sequence[Member], tmp: Path, copied: Callable[[int], None]) -> None:
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for member in members:
            info = zipfile.ZipInfo(member.arcname, date_time=time.gmtime(max(member.mtime, 315532800))[:6])
            info.compress_type = zipfile.ZIP_STORED
            info.file_size = member.size
            info.external_attr = 0o644 << 16
            with (
                open(member.path, "rb", buffering=0) as src,
                zf.open(info, "w", force_zip64=member.size >= zipfile.ZIP64_LIMIT) as dst,
            ):
                while True:
                    block = src.read(_COPY_BLOCK)
                    if not block:
                        break
                    dst.write(block)
                    copied(len(block))


def _write_tar_gz(members: Sequence[Member], tmp: Path, copied: Callable[[int], None]) -> None:
    """A PAX tar (long and UTF-8 names) gzipped at level 1: most of what Flow holds is compressed already."""
    with tarfile.open(tmp, "w:gz", compresslevel=1, format=tarfile.PAX_FORMAT) as tf:
        for member in members:
            info = tarfile.TarInfo(member.arcname)
            info.size = member.size
            info.mtime = int(member.mtime)
            info.mode = 0o644
            with open(member.path, "rb", buffering=_COPY_BLOCK) as src:
                tf.addfile(info, _Counted(src, copied))


def build_archive(
    members: Sequence[Member], tmp: Path, final: Path, progress: Callable[[float], None], fmt: str = ZIP
) -> tuple[int, str]:
    """Write the archive (stored ZIP64, or tar.gz) to ``tmp``, then rename it to ``final`` (blocking).

    :returns: the archive's size and checksum.
    """
    total = sum(m.size for m in members) or 1
    done = 0

    def copied(count: int) -> None:
        nonlocal done
        done += count
        progress(min(done / total, 0.99))

    (_write_tar_gz if fmt == TAR_GZ else _write_zip)(members, tmp, copied)
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    size = tmp.stat().st_size
    checksum = hash_file(tmp, size)
    os.replace(tmp, final)
    fsync_dir(final.parent)
    return size, checksum


class JobManager:
    """Creates, builds, serves and expires archive jobs."""

    def __init__(self, state: State) -> None:
        self.state = state
        self.store = state.store
        self.folder = state.layout.archives
        self._progress: dict[str, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._semaphore = asyncio.Semaphore(state.config.job_concurrency)
        self._sweeper: asyncio.Task[None] | None = None

    def archive_path(self, job: JobRow) -> Path:
        """Where a job's archive lies; named by the format, so a restart in another format rebuilds it."""
        return self.folder / f"{job.id}.{self.state.config.archive_format}"

    # --- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        """Rebuild jobs a restart interrupted, and start the expiry sweeper."""
        for path in await asyncio.to_thread(lambda: list(self.folder.glob("*.tmp"))):
            await asyncio.to_thread(path.unlink, True)
        for job in await self.store.run(self.store.jobs_in, [PENDING, RUNNING, COMPLETED]):
            if job.status == COMPLETED:
                if not await asyncio.to_thread(self.archive_path(job).exists):
                    await self.store.run(self.store.update_job, job.id, status=PENDING, progress=0.0)
                    self._launch(job.id)
            else:
                if job.status == RUNNING:
                    await self.store.run(self.store.update_job, job.id, status=PENDING, progress=0.0)
                self._launch(job.id)
        self._sweeper = asyncio.create_task(self._sweep_forever())

    async def stop(self) -> None:
        tasks = list(self._tasks) + ([self._sweeper] if self._sweeper else [])
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def _launch(self, job_id: str) -> None:
        task = asyncio.create_task(self._build(job_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _build(self, job_id: str) -> None:
        async with self._semaphore:
            job = await self.store.run(self.store.get_job, job_id)
            if job is None or job.status != PENDING:
                return
            await self.store.run(self.store.update_job, job_id, status=RUNNING, progress=0.0)
            self._progress[job_id] = 0.0
            try:
                rows = await self.store.run(self.store.data_by_ids, job.items)
                names = archive_member_names([(r.id, r.filename) for r in rows])
                members = [
                    Member(self.state.layout.data / r.id, name, r.size, r.updated)
                    for r, name in zip(rows, names, strict=True)
                ]
                tmp = self.folder / f"{job_id}.archive.tmp"

                def progress(value: float) -> None:
                    self._progress[job_id] = value

                size, checksum = await asyncio.to_thread(
                    build_archive, members, tmp, self.archive_path(job), progress, self.state.config.archive_format
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("archive job %s failed: %s", job_id, exc)
                await self.store.run(self.store.update_job, job_id, status=FAILED, error=f"archive failed: {exc}")
            else:
                now = time.time()
                await self.store.run(
                    self.store.update_job,
                    job_id,
                    status=COMPLETED,
                    progress=1.0,
                    size=size,
                    checksum=checksum,
                    completed=now,
                    expires=now + self.state.config.job_ttl,
                )
            finally:
                self._progress.pop(job_id, None)

    async def _sweep_forever(self) -> None:
        interval = max(0.5, min(60.0, self.state.config.job_ttl / 2))
        while True:
            await asyncio.sleep(interval)
            for job in await self.store.run(self.store.jobs_in, [COMPLETED]):
                await self._expire_if_due(job)

    async def _expire_if_due(self, job: JobRow) -> JobRow:
        if job.status != COMPLETED or job.expires is None or time.time() < job.expires:
            return job
        path = self.archive_path(job)
        await asyncio.to_thread(path.unlink, True)
        await self.store.run(self.store.update_job, job.id, status=EXPIRED)
        expired = await self.store.run(self.store.get_job, job.id)
        assert expired is not None
        return expired

    # --- handlers ---------------------------------------------------------------------

    async def create(self, request: web.Request) -> web.StreamResponse:
        """``POST /downloads {"data_ids": [...], "name": "x.zip"}`` -> 202."""
        user = user_of(request)
        config = self.state.config
        body = await read_json(request, config.max_json_bytes, config.max_json_depth)
        unknown = set(body) - {"data_ids", "name"}
        if unknown:
            bad_request(f"unknown fields: {', '.join(sorted(unknown))}")
        ids = body.get("data_ids")
        if not isinstance(ids, list) or not ids:
            bad_request("data_ids must be a non-empty list of data ids")
        if len(ids) > config.max_job_items:
            bad_request(f"at most {config.max_job_items} data ids per job")
        if not all(isinstance(i, str | int) and not isinstance(i, bool) for i in ids):
            bad_request("data ids are strings")
        unique = list(dict.fromkeys(str(i) for i in ids))
        name = body.get("name", DEFAULT_ARCHIVE_NAME if config.archive_format == ZIP else "flow-download.tar.gz")
        if not isinstance(name, str):
            bad_request("name must be a string")
        problem = filename_problem(name)
        if problem:
            bad_request(f"bad archive name: {problem}")
        if not name.lower().endswith(ARCHIVE_SUFFIXES):
            bad_request(f"the archive name must end in {', '.join(ARCHIVE_SUFFIXES)}")
        readable = await self.store.run(self.store.readable_ready, [i for i in unique if is_id(i)], user)
        missing = [i for i in unique if i not in readable]
        if missing:
            raise ApiError(404, f"data not found: {', '.join(m[:40] for m in missing[:10])}")
        job = JobRow(new_id(), user, name, unique, PENDING, 0.0, None, None, None, time.time(), None, None)
        await self.store.run(self.store.create_job, job)
        self._launch(job.id)
        return json_response(self._job_json(request, job), status=202)

    async def _own_job(self, request: web.Request) -> JobRow:
        user = user_of(request)
        job_id = request.match_info["job_id"]
        job = await self.store.run(self.store.get_job, job_id) if is_id(job_id) else None
        if job is None or job.owner != user:
            not_found("no such job")
        return await self._expire_if_due(job)

    def _job_json(self, request: web.Request, job: JobRow) -> dict[str, Any]:
        progress = self._progress.get(job.id, job.progress)
        url = None
        if job.status == COMPLETED:
            url = f"{request.url.origin()}/downloads/jobs/{job.id}/{quote(job.name, safe='')}"
        return {
            "id": job.id,
            "status": job.status,
            "progress": round(progress, 4),
            "size": job.size,
            "name": job.name,
            "download_url": url,
            "error": job.error,
            "created": job.created,
            "expires": job.expires,
            "data_ids": job.items,
        }

    async def status(self, request: web.Request) -> web.StreamResponse:
        job = await self._own_job(request)
        return json_response(self._job_json(request, job))

    async def archive(self, request: web.Request) -> web.StreamResponse:
        try:
            job = await self._own_job(request)
        except ApiError as exc:
            if exc.status == 404:
                raise Bare404 from None
            raise
        if job.name != request.match_info["name"]:
            raise Bare404
        if job.status == EXPIRED:
            raise ApiError(410, "this archive has expired; create a new job")
        if job.status != COMPLETED or job.size is None or job.completed is None:
            raise Bare404
        return await serve_file(
            request,
            self.archive_path(job),
            size=job.size,
            checksum=job.checksum,
            filename=job.name,
            last_modified=job.completed,
            extensions=self.state.config.extensions,
            disposition=not wants_direct(request),
        )


#: The application's archive-job manager (started at start-up, stopped at cleanup).
JOBS = web.AppKey("flowxfer_jobs", JobManager)


def job_routes(jobs: JobManager) -> list[web.RouteDef]:
    return [
        web.post("/downloads", jobs.create, name="job_create"),
        web.get("/downloads/jobs/{job_id}", jobs.status, name="job_status", allow_head=False),
        web.get("/downloads/jobs/{job_id}/{name}", jobs.archive, name="job_archive"),
    ]


__all__ = ["JOBS", "JobManager", "job_routes", "build_archive"]

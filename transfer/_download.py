"""Downloading one file: few long ranged streams, every chunk hashed as it passes.

A large file is cut into a few contiguous segments fetched at once, each one
``GET`` with a ``Range`` (downloads are rate-limited per request, so few and
long beats many and short). Bytes are written with ``pwrite`` into a
preallocated ``.part`` file beside the target; each chunk's hash is checked
against the server's chunk map when there is one. A chunk is ``acked`` in the
journal only after the ``.part`` file was ``fdatasync``ed (the journal batch
does that before it commits). The ``.part`` file becomes the target, by an
atomic rename, only when every chunk checks and the whole file agrees with
the server's checksum (or, without extensions, its size and ETag). The
``.part`` file's own disk work (preallocation, writing, crash recovery,
local errors) is :mod:`._partfile`'s.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import aiohttp
import anyio
import xxhash

from flowxfer import protocol
from flowxfer.journal import ChunkRecord, ChunkState, FileRecord, FileState, InventoryRecord

from ._checksums import fd_checksum
from ._chunks import Chunk, chunk_checksums, chunks_from_map, plan_chunks, plan_segments
from ._errors import IntegrityError, ProtocolError, StopRequested, UnavailableError
from ._partfile import contiguous_runs, part_path, preallocate, rehash_chunks, write_block, write_error
from ._retry import RetryPolicy
from ._runtime import TransferContext, task_group
from .events import BytesMoved, FileVerifying, Notice, Retrying

_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
#: Tiny pieces (a slow proxy) flush a block early rather than keep thousands of views alive.
_MAX_IOV = 512
_STREAM_ERRORS = (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, asyncio.TimeoutError)


@dataclass
class RemoteFile:
    """What we know of the bytes to fetch before fetching them.

    :ivar url: API path (or absolute URL) of the bytes.
    :ivar checksum: whole-file ``xxh3-128:`` checksum, when the server gives one.
    :ivar chunk_checksums: the server's chunk map checksums, aligned with :attr:`chunks`.
    """

    url: str
    size: int
    checksum: str | None = None
    chunks: list[Chunk] | None = None
    chunk_checksums: list[str | None] | None = None


@dataclass
class DownloadResult:
    checksum: str | None
    etag: str | None
    verified: str


@dataclass
class _Shared:
    """What the streams of one file learn as they go."""

    etag: str | None
    x_checksum: str | None = None
    bad: set[int] = field(default_factory=set)
    acked: set[int] = field(default_factory=set)
    bytes_done: int = 0
    size: int = -1
    whole_checksum: str | None = None
    chunk_size: int = 0


class _ContentChanged(Exception):
    """The server's bytes changed under us (ETag differs, or a range was answered with the whole)."""


class _WholeMismatch(Exception):
    """Every chunk arrived but the whole file does not match the server's checksum."""


#: What a download's report says was verified.
_BY_MAP = "xxh3-128 of every chunk against the server's chunk map"
_BY_WHOLE = "xxh3-128 of the whole file against the server's checksum"
_SIZE_ONLY = "size and ETag only (the server offers no checksums)"


async def fetch_remote(
    ctx: TransferContext, data_id: str, filename: str, size: int, checksum: str | None, *, want_map: bool = True
) -> RemoteFile:
    """The download URL and, where the server offers it and it helps, the chunk map of one data item.

    :param want_map: fetch the chunk map (one API request). Not worth it for a
        file of one chunk: its whole-file checksum verifies it just as well.
    """
    checksum = protocol.canonical_checksum(checksum)
    remote = RemoteFile(f"/downloads/{quote(data_id, safe='')}/{quote(filename, safe='')}", size, checksum)
    if want_map and ctx.capabilities.chunk_maps and size > 0:
        answer = await ctx.client.json_request("GET", f"/data/{quote(data_id, safe='')}/chunks", rate_class="api")
        entries = answer.get("chunks")
        if not isinstance(entries, list):
            raise ProtocolError(f"data {data_id}: malformed chunk map")
        try:
            remote.chunks = chunks_from_map(entries, size)
            remote.chunk_checksums = chunk_checksums(entries)
        except ValueError as exc:
            raise ProtocolError(f"data {data_id}: the chunk map does not describe the file ({exc})") from None
        map_checksum = protocol.canonical_checksum(answer.get("checksum"))
        if map_checksum is not None:
            if checksum is not None and map_checksum != checksum:
                raise ProtocolError(f"data {data_id}: the chunk map's checksum differs from the data's")
            remote.checksum = map_checksum
    return remote


async def download_file(
    ctx: TransferContext, record: FileRecord, remote: RemoteFile, *, finish: bool = True
) -> DownloadResult:
    """Fetch ``remote`` into ``record.local_path``, resuming from the journal and the ``.part`` file.

    :param finish: journal the file ``done`` once it is in place; False when the caller has
        more to do before it is (``bulk --extract`` unpacks the archive first).

    :raises StopRequested: the transfer is stopping; acked chunks are durable.
    :raises IntegrityError: bytes kept failing verification.
    :raises LocalIOError: the disk refused (full, no permission).
    """
    target = Path(record.local_path)
    for restart in range(2):
        try:
            return await _download_once(ctx, record, remote, target, fresh=restart > 0, finish=finish)
        except _ContentChanged:
            if restart:
                raise IntegrityError(f"{target.name}: the server's content keeps changing") from None
            ctx.events(Notice(f"{target.name}: the server's copy changed; downloading it again from the start"))
            ctx.counters.files_restarted += 1
        except _WholeMismatch as exc:
            if restart:
                raise IntegrityError(f"{exc} (twice); the server's data or checksum is damaged") from None
            ctx.events(Notice(f"{exc}; downloading it again from the start"))
            ctx.counters.files_restarted += 1
    raise AssertionError("unreachable")  # pragma: no cover


async def _download_once(
    ctx: TransferContext, record: FileRecord, remote: RemoteFile, target: Path, fresh: bool, finish: bool
) -> DownloadResult:
    part = part_path(target)
    chunks = remote.chunks or plan_chunks(remote.size, ctx.config.download_chunk_size)
    sums = remote.chunk_checksums
    existing: list[ChunkRecord] = []
    if not fresh and record.chunk_size:
        existing = await anyio.to_thread.run_sync(ctx.journal.chunks, record.id)
    same_plan = bool(existing) and [(c.offset, c.size) for c in existing] == [(c.offset, c.size) for c in chunks]

    def open_part() -> tuple[int, bool]:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(part, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        try:
            resumable = same_plan and os.fstat(fd).st_size == remote.size
            if not resumable:
                os.ftruncate(fd, 0)
                preallocate(fd, remote.size)
        except BaseException:
            os.close(fd)
            raise
        return fd, resumable

    try:
        fd, resumable = await anyio.to_thread.run_sync(open_part)
    except OSError as exc:
        raise write_error(part, exc, remote.size) from None
    try:
        return await _download_into(ctx, record, remote, target, part, fd, chunks, sums, existing, resumable, finish)
    finally:
        # Whatever happened, what the journal was told must be on disk before the fd goes.
        with anyio.CancelScope(shield=True):
            await ctx.writer.flush()
            os.close(fd)


async def _download_into(
    ctx: TransferContext,
    record: FileRecord,
    remote: RemoteFile,
    target: Path,
    part: Path,
    fd: int,
    chunks: list[Chunk],
    sums: list[str | None] | None,
    existing: list[ChunkRecord],
    resumable: bool,
    finish: bool,
) -> DownloadResult:
    batch = ctx.writer.batch
    shared = _Shared(
        etag=record.etag if resumable else None,
        size=remote.size,
        whole_checksum=remote.checksum,
        chunk_size=ctx.config.download_chunk_size,
    )
    if resumable:
        shared.acked = {c.idx for c in existing if c.state in (ChunkState.ACKED, ChunkState.VERIFIED)}
        if sums is not None:
            # Chunks written but not yet journaled when we stopped: their bytes are on disk
            # (or not); the map tells which, and a local read is cheaper than a refetch.
            unknown = [c for c in chunks if c.index not in shared.acked]
            for idx in await anyio.to_thread.run_sync(rehash_chunks, fd, unknown, sums):
                batch.chunk(record.id, idx, ChunkState.ACKED, sums[idx])
                batch.sync_before_commit(fd)
                shared.acked.add(idx)
    else:
        batch.plan_chunks(record.id, [(c.offset, c.size) for c in chunks])
    shared.bytes_done = sum(c.size for c in chunks if c.index in shared.acked)
    batch.file_state(
        record.id,
        FileState.ACTIVE,
        chunk_size=ctx.config.download_chunk_size,
        size=remote.size,
        etag=shared.etag,
        bytes_done=shared.bytes_done,
    )
    ctx.writer.added()

    todo = [c for c in chunks if c.index not in shared.acked and c.size > 0]
    if todo:
        runs = contiguous_runs(todo)
        segments: list[list[Chunk]]
        if len(runs) == 1:
            segments = [
                list(s.chunks) for s in plan_segments(runs[0], ctx.config.segments, ctx.config.min_segment_size)
            ]
        else:
            segments = runs
        limiter = anyio.CapacityLimiter(ctx.config.segments)
        async with task_group() as tg:
            for segment in segments:
                tg.start_soon(_stream_segment, ctx, record, remote, fd, segment, sums, shared, limiter)
        for _ in range(ctx.config.max_attempts):
            if not shared.bad:
                break
            bad = sorted(shared.bad)
            shared.bad.clear()
            ctx.counters.chunks_refetched += len(bad)
            ctx.events(Notice(f"{target.name}: {len(bad)} chunk(s) failed verification; fetching them again"))
            for idx in bad:
                await _stream_segment(ctx, record, remote, fd, [chunks[idx]], sums, shared, None)
        if shared.bad:
            raise IntegrityError(
                f"{target.name}: chunks {sorted(shared.bad)[:5]} never matched the server's "
                "chunk map; the server's data or map is damaged"
            )

    ctx.events(FileVerifying(record.local_path))
    verified = _final_check(remote, shared, target.name)
    whole = remote.checksum or shared.x_checksum
    if verified == _SIZE_ONLY and whole is not None:
        # No chunk had a reference of its own (no chunk map: a bulk archive, a server without
        # maps), but the file has one: check every byte before the file takes its name.
        actual = await anyio.to_thread.run_sync(fd_checksum, fd, remote.size)
        if actual != whole:
            raise _WholeMismatch(f"{target.name}: the downloaded bytes hash to {actual}, the server says {whole}")
        verified = _BY_WHOLE
    await ctx.writer.flush()

    def publish() -> int:
        os.fsync(fd)
        os.replace(part, target)
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return os.stat(target).st_mtime_ns

    try:
        mtime_ns = await anyio.to_thread.run_sync(publish)
    except OSError as exc:
        raise write_error(target, exc, None, f"cannot move {part.name} into place as") from None
    checksum = remote.checksum or shared.x_checksum
    batch = ctx.writer.batch
    fields = {"bytes_done": remote.size, "checksum": checksum, "etag": shared.etag, "error": None}
    if finish:
        batch.file_state(record.id, FileState.DONE, **fields)
    else:
        batch.update_file(record.id, **fields)
    batch.verify_chunks(record.id)
    if record.data_id:
        batch.remember(
            InventoryRecord(
                server=ctx.server,
                username=ctx.username,
                direction="down",
                local_path=ctx.paths.to_journal(str(target)),
                remote=record.data_id,
                size=remote.size,
                mtime_ns=mtime_ns,
                checksum=checksum,
                data_id=record.data_id,
            )
        )
    ctx.writer.added()
    return DownloadResult(checksum, shared.etag, verified)


def _final_check(remote: RemoteFile, shared: _Shared, name: str) -> str:
    """Say what was verified, or raise :class:`ProtocolError` if the server contradicts itself."""
    if remote.checksum and shared.x_checksum and remote.checksum != shared.x_checksum:
        raise ProtocolError(
            f"{name}: the server's X-Checksum {shared.x_checksum} contradicts its metadata {remote.checksum}"
        )
    if remote.chunk_checksums is not None and all(s is not None for s in remote.chunk_checksums):
        return _BY_MAP
    single_chunk = remote.chunks is None and remote.size <= shared.chunk_size
    if single_chunk and (shared.whole_checksum or shared.x_checksum):
        return _BY_WHOLE
    return _SIZE_ONLY


async def _stream_segment(
    ctx: TransferContext,
    record: FileRecord,
    remote: RemoteFile,
    fd: int,
    chunks: list[Chunk],
    sums: list[str | None] | None,
    shared: _Shared,
    limiter: anyio.CapacityLimiter | None,
) -> None:
    """Fetch a run of contiguous chunks with one ranged GET, resuming it after cuts."""
    if limiter is not None:
        async with limiter:
            await _stream_segment(ctx, record, remote, fd, chunks, sums, shared, None)
        return
    policy = RetryPolicy(max_attempts=ctx.config.max_attempts, base=ctx.config.backoff_base, cap=ctx.config.backoff_cap)
    rng = random.Random()
    # Index into chunks of the first chunk not yet complete. A list, so that _consume advances it
    # in place: a stream cut mid-way must resume after the chunks it completed, not from the start.
    position = [0]
    failures = 0
    while position[0] < len(chunks):
        if ctx.stopping():
            raise StopRequested()
        first, last = chunks[position[0]], chunks[-1]
        headers = {"Range": f"bytes={first.offset}-{last.end - 1}"}
        if shared.etag:
            headers["If-Range"] = shared.etag
        before = position[0]
        try:
            async with ctx.client.stream("GET", remote.url, rate_class="download", headers=headers) as response:
                _check_answer(response, first.offset, last.end, remote.size, shared)
                await _consume(ctx, record, response, fd, chunks, position, sums, shared)
        except _STREAM_ERRORS as exc:
            progressed = position[0] > before
            failures = 0 if progressed else failures + 1
            if failures >= policy.max_attempts:
                raise UnavailableError(
                    f"{Path(record.local_path).name}: the download kept failing ({type(exc).__name__})"
                ) from None
            delay = policy.delay(failures or 1, rng, None)
            ctx.client.retries += 1
            ctx.events(
                Retrying(
                    f"GET {Path(record.local_path).name}",
                    f"stream cut ({type(exc).__name__})",
                    failures or 1,
                    policy.max_attempts,
                    delay,
                )
            )
            await ctx.client.pause(delay)
            continue
        if position[0] < len(chunks):
            # The server ended the body early without an error: treat like a cut.
            failures = 0 if position[0] > before else failures + 1
            if failures >= policy.max_attempts:
                raise UnavailableError(f"{Path(record.local_path).name}: the server keeps ending the download early")


def _check_answer(response: aiohttp.ClientResponse, start: int, end: int, size: int, shared: _Shared) -> None:
    etag = response.headers.get("ETag")
    if response.status == 206:
        match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
        if not match or int(match.group(1)) != start or int(match.group(2)) != end - 1:
            raise ProtocolError(f"asked for bytes {start}-{end - 1}, got {response.headers.get('Content-Range')!r}")
        if match.group(3) != "*" and int(match.group(3)) != size:
            raise _ContentChanged()
    elif response.status == 200:
        if shared.etag is not None and etag != shared.etag:
            raise _ContentChanged()
        if start != 0 or end != size:
            if shared.etag is not None:
                raise _ContentChanged()
            raise ProtocolError("the server ignored a Range request (no byte-range support)")
        length = response.content_length
        if length is not None and length != size:
            raise _ContentChanged()
    else:
        raise ProtocolError(f"unexpected answer {response.status} to a ranged download")
    if etag:
        if shared.etag is None:
            shared.etag = etag
        elif etag != shared.etag:
            raise _ContentChanged()
    header = response.headers.get(protocol.HEADER_CHECKSUM)
    if header:
        x_checksum = protocol.canonical_checksum(header)
        if x_checksum is None:
            raise ProtocolError(f"malformed {protocol.HEADER_CHECKSUM} header")
        if shared.x_checksum is not None and shared.x_checksum != x_checksum:
            raise _ContentChanged()
        shared.x_checksum = x_checksum


async def _consume(
    ctx: TransferContext,
    record: FileRecord,
    response: aiohttp.ClientResponse,
    fd: int,
    chunks: list[Chunk],
    cursor: list[int],
    sums: list[str | None] | None,
    shared: _Shared,
) -> None:
    """Stream the body into the ``.part`` file, advancing ``cursor[0]`` past every completed chunk.

    The cursor moves in place (not as a return value) so that it is right even when the
    stream is cut: the caller resumes at the first chunk not yet complete.
    """
    block_size = ctx.config.block_size
    limiter = ctx.client.limiter
    position = cursor[0]
    chunk = chunks[position]
    offset = chunk.offset
    hasher = xxhash.xxh3_128()
    block: list[memoryview] = []
    block_bytes = 0
    block_offset = offset
    await ctx.budget.acquire(block_size)
    try:
        async for piece in response.content.iter_any():
            await limiter.throttle_bytes(len(piece))
            view = memoryview(piece)
            while view:
                # Blocks end at block_size boundaries counted from the chunk's start (also after a
                # block flushed early): aligned on disk, so a block is written directly, not partly
                # through the page cache.
                take = min(len(view), chunk.end - offset, block_size - (offset - chunk.offset) % block_size)
                if take <= 0:
                    raise ProtocolError("the server sent more bytes than it announced")
                block.append(view[:take])
                block_bytes += take
                view = view[take:]
                offset += take
                complete = offset == chunk.end
                if complete or (offset - chunk.offset) % block_size == 0 or len(block) >= _MAX_IOV:
                    try:
                        await anyio.to_thread.run_sync(write_block, fd, block_offset, block, hasher)
                    except OSError as exc:
                        raise write_error(part_path(Path(record.local_path)), exc, None) from None
                    ctx.counters.bytes_transferred += block_bytes
                    ctx.events(BytesMoved(record.local_path, block_bytes))
                    block_offset += block_bytes
                    block = []
                    block_bytes = 0
                if complete:
                    _chunk_done(ctx, record, fd, chunk, protocol.format_checksum(hasher.hexdigest()), sums, shared)
                    position += 1
                    cursor[0] = position
                    if position == len(chunks):
                        if view:
                            raise ProtocolError("the server sent more bytes than it announced")
                        return
                    if ctx.stopping():
                        # Stop at a chunk boundary: everything received is acknowledged, nothing torn.
                        raise StopRequested()
                    chunk = chunks[position]
                    hasher = xxhash.xxh3_128()
    finally:
        ctx.budget.release(block_size)
        if offset > chunks[min(position, len(chunks) - 1)].offset and position < len(chunks):
            # The partial chunk is thrown away and fetched again: count it honestly.
            ctx.counters.bytes_resent += offset - chunks[position].offset


def _chunk_done(
    ctx: TransferContext,
    record: FileRecord,
    fd: int,
    chunk: Chunk,
    digest: str,
    sums: list[str | None] | None,
    shared: _Shared,
) -> None:
    if sums is not None:
        expected = sums[chunk.index]
    elif chunk.offset == 0 and chunk.size == shared.size:
        # A file of one chunk: its whole-file checksum is that chunk's.
        expected = shared.whole_checksum or shared.x_checksum
    else:
        expected = None
    if expected is not None and expected != digest:
        shared.bad.add(chunk.index)
        return
    batch = ctx.writer.batch
    batch.chunk(record.id, chunk.index, ChunkState.ACKED, digest)
    batch.sync_before_commit(fd)
    shared.acked.add(chunk.index)
    shared.bytes_done += chunk.size
    batch.update_file(record.id, bytes_done=shared.bytes_done, etag=shared.etag)
    ctx.writer.added()


__all__ = ["DownloadResult", "RemoteFile", "download_file", "fetch_remote", "part_path"]

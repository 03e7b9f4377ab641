"""Downloading one file: few long ranged streams, every chunk hashed as it passes.

A large file is cut into a few contiguous segments fetched at once, each one
``GET`` with a ``Range`` (downloads are rate-limited per request, so few and
long beats many and short): 4 on a short path, up to 8 on a long one (from
the round trip measured by the first API answers and the bandwidth-delay
product, :meth:`TransferConfig.segments_for`). A stream
that runs out of work takes the tail of the slowest one
(:mod:`._download_spans`, :mod:`._download_streams`). Bytes are written with
``pwrite`` into a preallocated ``.part`` file beside the target; each chunk's hash is checked
against the server's chunk map when there is one. A chunk is ``acked`` in the
journal only after the ``.part`` file was ``fdatasync``ed (the journal batch
does that before it commits). The ``.part`` file becomes the target, by an
atomic rename, only when every chunk checks and the whole file agrees with
the server's checksum (or, without extensions, its size and ETag). The
``.part`` file's own disk work (preallocation, writing, crash recovery,
local errors) is :mod:`._partfile`'s.

When the describing answer stated the map's layout ([ext] ``X-Chunk-Size``,
:mod:`._by_id`), a fresh download plans its chunks from it and starts its
streams at once; the map is fetched beside them, a round trip less before
the bytes (issue 20). Verification is as strict as with the map first: a
chunk that completes waits for the map's checksum before it is checked and
recorded (its stream goes on receiving meanwhile), and a map that differs
from the stated layout starts the download again from the map, nothing of
it recorded.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import quote

import anyio

from flowxfer import protocol
from flowxfer.journal import ChunkRecord, ChunkState, FileRecord, FileState, InventoryRecord

from ._by_id import Prefetched
from ._checksums import fd_checksum
from ._chunks import Chunk, chunk_checksums, chunks_from_map, plan_chunks, plan_segments
from ._client import FlowClient
from ._config import TransferConfig
from ._download_spans import Spans
from ._download_streams import ContentChanged, FileStreams, Shared
from ._errors import IntegrityError, NotFoundError, ProtocolError
from ._partfile import contiguous_runs, part_path, preallocate, rehash_chunks, write_error
from ._pathfit import path_rate
from ._pathmodel import path_rates
from ._runtime import TransferContext, task_group
from .events import FileVerifying, Notice


@dataclass
class RemoteFile:
    """What we know of the bytes to fetch before fetching them.

    :ivar url: API path (or absolute URL) of the bytes.
    :ivar checksum: whole-file ``xxh3-128:`` checksum, when the server gives one.
    :ivar chunk_checksums: the server's chunk map checksums, aligned with :attr:`chunks`.
    :ivar prefetched: the file's first bytes (a small file's all) as its description brought them
        ([ext] ``download_by_id``), written and verified as a stream's bytes instead of asked for; used once.
    :ivar map_later: the data id whose chunk map is still to fetch, beside the streams: :attr:`chunks`
        are planned from the layout the describing answer stated, :attr:`chunk_checksums` not known yet.
    """

    url: str
    size: int
    checksum: str | None = None
    chunks: list[Chunk] | None = None
    chunk_checksums: list[str | None] | None = None
    prefetched: Prefetched | None = None
    map_later: str | None = None

    def take_map(self, found: tuple[list[Chunk], list[str | None], str | None] | None) -> None:
        """Plan by the server's chunk map (:func:`_chunk_map`'s answer; None: it has none): no map is still to come."""
        self.map_later = None
        if found is not None:
            self.chunks, self.chunk_checksums, map_checksum = found
            self.checksum = map_checksum or self.checksum


@dataclass
class DownloadResult:
    checksum: str | None
    etag: str | None
    verified: str


class _WholeMismatch(Exception):
    """Every chunk arrived but the whole file does not match the server's checksum."""


class _LayoutWrong(Exception):
    """The chunk map differs from the layout the describing answer stated: plan again from the map."""


#: What a download's report says was verified.
_BY_MAP = "xxh3-128 of every chunk against the server's chunk map"
_BY_WHOLE = "xxh3-128 of the whole file against the server's checksum"
_SIZE_ONLY = "size and ETag only (the server offers no checksums)"


async def fetch_remote(
    ctx: TransferContext,
    data_id: str,
    filename: str,
    size: int,
    checksum: str | None,
    *,
    want_map: bool = True,
    chunk_size_hint: int | None = None,
    bytes_left: int | None = None,
) -> RemoteFile:
    """The download URL and, where the server offers it and it helps, the chunk map of one data item.

    :param want_map: fetch the chunk map (one API request). Not worth it for a
        file of one chunk: its whole-file checksum verifies it just as well.
    :param chunk_size_hint: the map's unit as the describing answer stated it ([ext]): the chunks
        are planned from it and the map is fetched later, beside the streams (:attr:`RemoteFile.map_later`).
    :param bytes_left: what is still to fetch (a resumed download's rest; None: all): the streams'
        connections are opened while the map is on its way, as many as that will use.
    """
    checksum = protocol.canonical_checksum(checksum)
    remote = RemoteFile(f"/downloads/{quote(data_id, safe='')}/{quote(filename, safe='')}", size, checksum)
    if want_map and ctx.capabilities.chunk_maps and size > 0:
        if chunk_size_hint is not None:
            remote.chunks = plan_chunks(size, chunk_size_hint)
            remote.map_later = data_id
            return remote
        warm_streams(ctx, size if bytes_left is None else bytes_left)
        remote.take_map(await _chunk_map(ctx, data_id, size, checksum))
    return remote


def warm_streams(ctx: TransferContext, left: int) -> None:
    """Open the connections a file's streams will need but one, while the map they wait for is on its way.

    The one is the map's own, idle again when it has come. As many as
    :func:`initial_spans` can give streams for ``left`` bytes at most, so a
    small rest opens none (a resumed file's gaps may give fewer: a bound).
    """
    _warm(ctx.client, ctx.config, left, path_rate(ctx))


def warm_described(client: FlowClient, config: TransferConfig, size: int) -> None:
    """:func:`warm_streams` for a file whose describing answer its first stream reads on ([ext], :mod:`._by_id`).

    Called when that answer's headers say the size, before there is a
    transfer: the one connection not opened is the answer's own. The rate is
    ``--bwlimit``'s or assumed (no earlier transfer's is recalled yet), so a
    path measured faster than assumed may give a stream or two more, which
    open their own connections as before.
    """
    bandwidth = client.limiter.bandwidth
    limit = bandwidth.rate_at(datetime.now()) if bandwidth is not None else None
    _warm(client, config, size, path_rates(limit, None)[0])


def _warm(client: FlowClient, config: TransferConfig, left: int, rate: float | None) -> None:
    count = config.segments_for(client.round_trip, rate)
    client.warm(min(count, -(-left // max(1, config.min_segment_size))) - 1)


async def _chunk_map(
    ctx: TransferContext, data_id: str, size: int, checksum: str | None
) -> tuple[list[Chunk], list[str | None], str | None] | None:
    """The server's chunk map of ``data_id``: chunks, their checksums, the whole file's; None: no map after all.

    :raises ProtocolError: a map that does not describe the file, or contradicts ``checksum``.
    """
    try:
        answer = await ctx.client.json_request("GET", f"/data/{quote(data_id, safe='')}/chunks", rate_class="api")
    except NotFoundError:
        # Remembered capabilities may be stale (the server restarted without extensions).
        fresh = await ctx.client.revalidate_capabilities(ctx.capabilities)
        if fresh is None:  # still claimed, yet the id is known (described): verify the whole file
            return None  # a data id gone since is the download's own 404
        ctx.capabilities = fresh
        return await _chunk_map(ctx, data_id, size, checksum) if fresh.chunk_maps else None
    entries = answer.get("chunks")
    if not isinstance(entries, list):
        raise ProtocolError(f"data {data_id}: malformed chunk map")
    try:
        chunks = chunks_from_map(entries, size)
        sums = chunk_checksums(entries)
    except ValueError as exc:
        raise ProtocolError(f"data {data_id}: the chunk map does not describe the file ({exc})") from None
    map_checksum = protocol.canonical_checksum(answer.get("checksum"))
    if map_checksum is not None and checksum is not None and map_checksum != checksum:
        raise ProtocolError(f"data {data_id}: the chunk map's checksum differs from the data's")
    return chunks, sums, map_checksum


class _MapBeside:
    """The chunk map fetched while the streams run: a completed chunk waits here for its checksum.

    The map is asked for once a stream is asking for its range, not before: the connection the
    describing answer left idle is then that stream's, whose bytes would otherwise wait a
    handshake's round trip, the map's (which no chunk needs yet) the new connection's.
    """

    def __init__(self, ctx: TransferContext, remote: RemoteFile, data_id: str, planned: list[Chunk]) -> None:
        self._ctx, self._remote, self._data_id, self._planned = ctx, remote, data_id, planned
        self._go = anyio.Event()
        self._ready = anyio.Event()
        self._sums: list[str | None] | None = None

    def asking(self) -> None:
        self._go.set()

    async def fetch(self, shared: Shared) -> None:
        """Fetch the map; what it says is what the streams check against, or :class:`_LayoutWrong`."""
        remote = self._remote
        await self._go.wait()
        found = await _chunk_map(self._ctx, self._data_id, remote.size, remote.checksum)
        remote.take_map(found)
        if found is not None:
            chunks, self._sums, map_checksum = found
            if [(c.offset, c.size) for c in chunks] != [(c.offset, c.size) for c in self._planned]:
                raise _LayoutWrong(f"data {self._data_id}: the chunk map differs from the layout its answer stated")
            shared.whole_checksum = shared.whole_checksum or map_checksum
        self._ready.set()

    async def sums(self) -> list[str | None] | None:
        """The map's checksums (None: the server has no map after all), once it has come.

        Waiting does not send for it: :meth:`asking` does (a stream about to ask, a chunk done).
        """
        await self._ready.wait()
        return self._sums


async def download_file(
    ctx: TransferContext, record: FileRecord, remote: RemoteFile, *, finish: bool = True
) -> DownloadResult:
    """Fetch ``remote`` into ``record.local_path``, resuming from the journal and the ``.part`` file.

    :param finish: journal the file ``done`` once it is in place; False when the caller has
        more to do before it is (``bulk --extract`` unpacks the archive first).

    :raises StopRequested: the transfer is stopping; acked chunks are durable.
    :raises IntegrityError: bytes kept failing verification.
    :raises LocalIOError: the disk refused (full, no permission).

    Tried again from the start when the server's copy changed or its stated layout was wrong.
    """
    target = Path(record.local_path)
    restart = fresh = False
    while True:
        try:
            return await _download_once(ctx, record, remote, target, fresh=fresh, finish=finish)
        except ContentChanged:
            if restart:
                raise IntegrityError(f"{target.name}: the server's content keeps changing") from None
            ctx.events(Notice(f"{target.name}: the server's copy changed; downloading it again from the start"))
            restart = True
        except _LayoutWrong as exc:
            # Not counted as a restart: it can happen once only (the map is known after it), and
            # may follow one (the copy changed before the map came, its layout still unchecked).
            ctx.events(Notice(f"{exc}; downloading it again from the start, planned from the map"))
        except _WholeMismatch as exc:
            if restart:
                raise IntegrityError(f"{exc} (twice); the server's data or checksum is damaged") from None
            ctx.events(Notice(f"{exc}; downloading it again from the start"))
            restart = True
        ctx.counters.files_restarted += 1
        fresh = True


async def _download_once(
    ctx: TransferContext, record: FileRecord, remote: RemoteFile, target: Path, fresh: bool, finish: bool
) -> DownloadResult:
    part = part_path(target)
    existing: list[ChunkRecord] = []
    if not fresh and record.chunk_size:
        existing = await anyio.to_thread.run_sync(ctx.journal.chunks, record.id)
    if existing and remote.map_later is not None:
        # Resuming: the map comes first, as without the stated layout (it tells which chunks on disk are good).
        warm_streams(ctx, sum(c.size for c in existing if c.state not in (ChunkState.ACKED, ChunkState.VERIFIED)))
        remote.take_map(await _chunk_map(ctx, remote.map_later, remote.size, remote.checksum))
    chunks = remote.chunks or plan_chunks(remote.size, ctx.config.download_chunk_size)
    sums = remote.chunk_checksums
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
    shared = Shared(
        etag=record.etag if resumable else None,
        size=remote.size,
        whole_checksum=remote.checksum,
        chunk_size=ctx.config.download_chunk_size,
    )
    head = _usable_head(remote, shared)
    # The describing answer's unread rest goes on with its head or not at all (download_one closes it).
    held = remote.prefetched.rest if remote.prefetched is not None and head is not None else None
    remote.prefetched = None  # once: a second attempt (the bytes did not verify) asks the server
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
    if held is not None and not (todo and todo[0].offset == 0):
        await held.aclose()  # no stream starts where its head is: its connection goes now, not at the end
        held = None
    beside = None if remote.map_later is None else _MapBeside(ctx, remote, remote.map_later, chunks)
    if todo:
        streams = FileStreams(ctx, record, remote.url, fd, todo, sums, shared, head, beside, held)
        count = ctx.config.segments_for(ctx.client.round_trip, path_rate(ctx))
        spans = initial_spans(todo, count, ctx.config.min_segment_size)
        async with task_group() as group:
            if beside is not None:
                group.start_soon(beside.fetch, shared)
            await streams.run(
                Spans(spans, ctx.config.block_size, max(ctx.config.block_size, ctx.config.min_segment_size // 4)),
                min(count, len(spans)),
            )
        for _ in range(ctx.config.max_attempts):
            if not shared.bad:
                break
            bad = sorted(shared.bad)
            shared.bad.clear()
            ctx.counters.chunks_refetched += len(bad)
            ctx.events(Notice(f"{target.name}: {len(bad)} chunk(s) failed verification; fetching them again"))
            for idx in bad:
                await streams.refetch(chunks[idx])
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


def _usable_head(remote: RemoteFile, shared: Shared) -> bytes | None:
    """The prefetched bytes if they are of the file being fetched; the answer's headers taken as a stream's."""
    head = remote.prefetched
    if head is None or len(head.body) > remote.size:
        return None
    if shared.etag is not None and head.etag != shared.etag:
        return None  # a resumed download of another version: its streams will say so
    if head.checksum is not None and remote.checksum is not None and head.checksum != remote.checksum:
        return None
    shared.etag = shared.etag or head.etag
    shared.x_checksum = head.checksum
    return head.body


def initial_spans(todo: list[Chunk], segments: int, min_segment_size: int) -> list[tuple[int, int]]:
    """The byte ranges the streams start with: a file still whole in a few balanced segments, else its gaps."""
    runs = contiguous_runs(todo)
    if len(runs) == 1:
        return [(s.offset, s.offset + s.size) for s in plan_segments(runs[0], segments, min_segment_size)]
    return [(run[0].offset, run[-1].end) for run in runs]


def _final_check(remote: RemoteFile, shared: Shared, name: str) -> str:
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


__all__ = ["DownloadResult", "RemoteFile", "download_file", "fetch_remote", "part_path", "warm_described"]

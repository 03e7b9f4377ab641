"""Uploading one file with the Flow chunk protocol.

Chunks go strictly in order (the protocol requires it; a large file against
our server's parallel-chunk extension goes on several connections instead,
:mod:`._upload_parallel`); the next chunk is
read and hashed in a worker thread while the current one is on the wire. A
chunk is ``acked`` in the journal only after the server's 2xx answer. When an
answer is lost, the server's own account of what it holds (``GET /upload/<id>``
where offered, otherwise the offset in its ``400`` answer) tells us where to
go on; we never guess.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import xxhash
from aiohttp import MultipartWriter
from aiohttp.payload import Payload

from flowxfer import protocol
from flowxfer.journal import ChunkRecord, ChunkState, FileRecord, FileState

from ._checksums import hash_range
from ._chunks import Chunk, plan_chunks
from ._errors import (
    ChecksumMismatchError,
    IntegrityError,
    NotFoundError,
    ProtocolError,
    RejectedError,
    StopRequested,
)
from ._pathfit import chunk_size_follows_path, measure_round_trip, path_chunk_size
from ._payloads import (
    ChunkPayload,
    InlineChunk,
    SourceErrorHolder,
    UploadOptions,
    chunk_form,
    form_fields,
)
from ._runtime import TransferContext
from ._sources import FileSource, MemorySource, Source
from ._upload_finish import (
    UploadResult,
    _confirm_by_reading,
    _finish,
    _is_count,
    _poll_ready,
    _UploadLost,
    upload_status,
)
from ._upload_parallel import MIN_PARALLEL_CHUNK, fits_parallel, most_streams, on_the_way, upload_parallel
from .events import Notice

#: The smallest chunk the automatic size shrinks to after 413 answers.
MIN_AUTO_CHUNK = 1024 * 1024

#: Files up to this size are read whole in one worker-thread call and sent as
#: one ready-made request body (:class:`InlineChunk`). For a 16 KiB file the
#: streamed path cost four thread hops and some thirty socket writes (one per
#: form part and header); per-file overhead is what bounds a folder of small
#: files. Small enough that ``concurrency`` of them in memory is nothing.
INLINE_LIMIT = 1024 * 1024


class _Realign(Exception):
    """The server holds a different number of bytes than we assumed; go on from ``held``."""

    def __init__(self, held: int) -> None:
        super().__init__(held)
        self.held = held


class _TooLarge(Exception):
    """The server refused a chunk as too large (413): try smaller chunks."""


def plan_from(size: int, chunk_size: int, boundary: int) -> list[Chunk]:
    """A chunk plan that has a boundary at ``boundary`` (where a resumed upload continues)."""
    if boundary <= 0 or boundary >= size:
        return plan_chunks(size, chunk_size)
    head = plan_chunks(boundary, chunk_size)
    tail = plan_chunks(size - boundary, chunk_size)
    return head + [Chunk(len(head) + c.index, boundary + c.offset, c.size) for c in tail]


def path_matters(ctx: TransferContext, options: UploadOptions) -> bool:
    """Whether this file's counts depend on the round trip: its streams, or its chunk size.

    With many files on the way (at most one stream each) and the chunk size at
    the server's limit, nothing is chosen from the path: the first chunk goes
    at once instead of after a measuring GET.
    """
    return most_streams(ctx, options) > 1 or chunk_size_follows_path(ctx)


async def upload_source(
    ctx: TransferContext, record: FileRecord, source: Source, options: UploadOptions
) -> UploadResult:
    """Upload ``source`` as the file ``record``, resuming what the journal and server hold.

    :raises SourceChangedError: the file changed under us (the caller restarts it).
    :raises StopRequested: the transfer is stopping; the journal says where we were.
    :raises ServerError: a refusal that retrying did not cure.
    """
    if isinstance(source, FileSource) and source.size <= INLINE_LIMIT:
        source = await anyio.to_thread.run_sync(source.load)
    elif not isinstance(source, MemorySource):
        await anyio.to_thread.run_sync(source.open)
    ctx.uploads_active += 1
    try:
        return await _upload_open_source(ctx, record, source, options)
    finally:
        ctx.uploads_active -= 1
        source.close()


@dataclass
class _Progress:
    """Where an upload stands, as the server confirmed it."""

    data_id: str | None
    held: int
    whole: xxhash.xxh3_128 | None


async def _upload_open_source(
    ctx: TransferContext, record: FileRecord, source: Source, options: UploadOptions
) -> UploadResult:
    size = source.size
    if ctx.capabilities.parallel_chunks and size > MIN_PARALLEL_CHUNK and path_matters(ctx, options):
        await measure_round_trip(ctx)
    if fits_parallel(ctx, size, options, resuming=bool(record.data_id)):
        parallel = await upload_parallel(ctx, record, source, options)
        if parallel is not None:
            return parallel
    chunk_size = record.chunk_size if (record.data_id and record.chunk_size) else path_chunk_size(ctx)
    progress = _Progress(None, 0, protocol.new_hasher())
    existing: list[ChunkRecord] = []
    if record.data_id:
        existing = await anyio.to_thread.run_sync(ctx.journal.chunks, record.id)
        try:
            held, finished = await _server_progress(ctx, record, record.data_id, existing, source)
        except _UploadLost:
            ctx.events(Notice(f"{record.local_path}: the server no longer holds the partial upload; restarting"))
        else:
            if finished is not None:
                return finished
            # The whole-file checksum can only be sent when this run reads every byte.
            progress = _Progress(record.data_id, held, protocol.new_hasher() if held == 0 else None)
    chunks = plan_from(size, chunk_size, progress.held)
    _journal_plan(ctx, record, chunks, progress, chunk_size, existing)
    restarts = 0
    stuck = 0  # realignments in a row that moved nothing on
    while True:
        held_before = progress.held
        try:
            return await _send_chunks(ctx, record, source, options, chunks, progress)
        except _Realign as realign:
            if realign.held > size:
                raise ProtocolError(f"the server claims to hold {realign.held} bytes of a {size}-byte file") from None
            # Bounded: a server that keeps naming an offset we cannot get past must not keep us
            # resending the same chunk for ever.
            stuck = stuck + 1 if realign.held <= held_before else 0
            if stuck > 3:
                raise ProtocolError(
                    f"{record.local_path}: the server keeps asking for offset "
                    f"{realign.held} and refusing what we send there"
                ) from None
            ctx.events(Notice(f"{record.local_path}: the server holds {realign.held} bytes; continuing there"))
            progress.held, progress.whole = realign.held, None
        except _UploadLost:
            restarts += 1
            if restarts > 2:
                raise ProtocolError(f"{record.local_path}: the server keeps losing the upload") from None
            ctx.events(Notice(f"{record.local_path}: the server lost the partial upload; starting it again"))
            progress = _Progress(None, 0, protocol.new_hasher())
        except _TooLarge:
            # Hosted Flow does not say how large a request may be: halve until it fits.
            if chunk_size <= MIN_AUTO_CHUNK:
                raise RejectedError(
                    f"{record.local_path}: the server refuses even {chunk_size}-byte chunks", 413
                ) from None
            chunk_size = max(MIN_AUTO_CHUNK, chunk_size // 2)
            ctx.events(
                Notice(
                    f"{record.local_path}: the server refused a large chunk; using "
                    f"{chunk_size // (1024 * 1024)} MiB chunks"
                )
            )
        chunks = plan_from(size, chunk_size, progress.held)
        _journal_plan(ctx, record, chunks, progress, chunk_size, [])


def _journal_plan(
    ctx: TransferContext,
    record: FileRecord,
    chunks: list[Chunk],
    progress: _Progress,
    chunk_size: int,
    existing: list[ChunkRecord],
) -> None:
    """Record the chunk plan (kept when unchanged) and the chunks the server confirmed it holds."""
    batch = ctx.writer.batch
    same_plan = [(c.offset, c.size) for c in existing] == [(c.offset, c.size) for c in chunks]
    states = {c.idx: c.state for c in existing} if same_plan else {}
    if not same_plan:
        batch.plan_chunks(record.id, [(c.offset, c.size) for c in chunks])
    for chunk in chunks:
        if progress.held and chunk.end <= progress.held:
            if states.get(chunk.index, ChunkState.PLANNED) not in (ChunkState.ACKED, ChunkState.VERIFIED):
                batch.chunk(record.id, chunk.index, ChunkState.ACKED)
    batch.file_state(
        record.id,
        FileState.ACTIVE,
        chunk_size=chunk_size,
        data_id=progress.data_id,
        bytes_done=progress.held,
        size=record.size,
    )
    ctx.writer.added()


async def _server_progress(
    ctx: TransferContext, record: FileRecord, data_id: str, ours: list[ChunkRecord], source: Source
) -> tuple[int, UploadResult | None]:
    """How much of an unfinished upload the server holds, confirmed against our journal.

    With the upload-status extension the server lists its chunks and their
    checksums, and each must match what we recorded when we sent it; without
    it we trust our journal's acked prefix and let a ``400`` correct us.
    """
    if not ctx.capabilities.upload_status:
        return record.bytes_done, None
    status = await upload_status(ctx, data_id)
    if status.get("is_ready"):
        if status.get("size") != record.size:
            raise _UploadLost()
        return record.size, UploadResult(data_id, None)
    held = status.get("size")
    server_chunks = status.get("chunks")
    if not isinstance(held, int) or held < 0 or held > record.size or not isinstance(server_chunks, list):
        raise ProtocolError(f"GET /upload/{data_id}: malformed upload status")
    if not all(isinstance(e, dict) and _is_count(e.get("offset")) and _is_count(e.get("size")) for e in server_chunks):
        raise ProtocolError(f"GET /upload/{data_id}: malformed chunk list")
    by_offset = {c.offset: c for c in ours}
    for entry in server_chunks:
        mine = by_offset.get(entry["offset"])
        if mine is None or mine.size != entry.get("size") or mine.checksum is None:
            # The server holds a chunk our journal never recorded (an answer lost before the
            # journal flushed): we cannot vouch for it without re-reading it, so read it.
            return await _confirm_by_reading(ctx, source, server_chunks, held), None
        if mine.checksum != protocol.canonical_checksum(entry.get("checksum")):
            raise _UploadLost()
    return held, None


async def _send_chunks(
    ctx: TransferContext,
    record: FileRecord,
    source: Source,
    options: UploadOptions,
    chunks: list[Chunk],
    progress: _Progress,
) -> UploadResult:
    """Send the chunks from ``progress.held`` on, in order, updating ``progress`` as answers arrive."""
    size = source.size
    pending = [c for c in chunks if c.offset >= progress.held and (c.size > 0 or size == 0)]
    if not pending:
        # Every byte is held but the final answer never reached us: resend the last chunk;
        # the server's 400 names the full size and we go on to ask whether it is ready.
        pending = [chunks[-1]]
    multi_chunk = len(chunks) > 1
    for chunk in pending:
        if ctx.stopping():
            raise StopRequested()
        is_last = chunk.end == size
        answer, digest, whole = await _post_chunk(ctx, record, source, options, chunk, progress, is_last)
        new_id = answer.get("data_id") or answer.get("id")
        if not isinstance(new_id, str | int) or str(new_id) == "":
            raise ProtocolError("the upload answer carries no data id")
        first = progress.data_id is None
        progress.data_id = str(new_id)
        progress.held = chunk.end
        progress.whole = whole
        batch = ctx.writer.batch
        batch.chunk(record.id, chunk.index, ChunkState.ACKED, digest)
        batch.update_file(record.id, bytes_done=chunk.end, data_id=progress.data_id)
        ctx.writer.added()
        if first and multi_chunk and not is_last:
            # The upload's id is what makes it resumable: make it durable before the next chunk.
            await ctx.writer.flush()
        if is_last:
            file_checksum = protocol.format_checksum(whole.hexdigest()) if whole is not None else None
            return await _finish(ctx, record, answer, progress.data_id, file_checksum)
    raise ProtocolError("the upload ended without a last chunk")  # pragma: no cover


async def _post_chunk(
    ctx: TransferContext,
    record: FileRecord,
    source: Source,
    options: UploadOptions,
    chunk: Chunk,
    progress: _Progress,
    is_last: bool,
) -> tuple[dict[str, Any], str | None, xxhash.xxh3_128 | None]:
    """POST one chunk, streamed; a checksum mismatch sends it again (bounded).

    :returns: the server's answer, the chunk's checksum and the file's hash after it.
    """
    send_checksums = ctx.capabilities.checksums
    data_id = progress.data_id
    inline = (
        InlineChunk(ctx, record, chunk, source.read(chunk.offset, chunk.size), progress.whole)
        if isinstance(source, MemorySource)
        else None
    )
    block = ctx.config.upload_block_for(on_the_way(ctx, options))
    for attempt in range(1, ctx.config.max_attempts + 1):
        holder = SourceErrorHolder()
        sent: list[ChunkPayload | InlineChunk] = []

        def build(
            holder: SourceErrorHolder = holder, sent: list[ChunkPayload | InlineChunk] = sent
        ) -> MultipartWriter | Payload:
            if holder.error is not None:
                raise holder.error  # a local problem, not the network's: stop retrying
            if sent:
                # An earlier attempt's bytes went nowhere: count them as re-sent.
                ctx.counters.bytes_resent += sent[-1].sent
            if inline is not None:
                inline.sent = 0  # one object for every attempt: count each attempt's bytes once
                sent.append(inline)
                return inline.body(
                    form_fields(record.remote_name, chunk.offset, is_last, data_id, options),
                    record.remote_name,
                    send_checksums,
                    file_checksum=is_last and progress.whole is not None,
                )
            payload = ChunkPayload(
                ctx,
                record,
                source,
                chunk,
                progress.whole,
                holder,
                gate=ctx.archive_gate if options.is_directory else None,
                block=block,
            )
            sent.append(payload)
            return chunk_form(
                record.remote_name,
                chunk.offset,
                is_last,
                data_id,
                options,
                payload,
                send_checksums,
                file_checksum=is_last and progress.whole is not None,
            )

        if inline is not None:
            # Before the request, not while writing its body: the token goes on the request
            # when it is built, and a long wait for the bandwidth limit could outlive it.
            await ctx.client.limiter.throttle_bytes(chunk.size)
        await ctx.budget.acquire(2 * block)
        try:
            answer = await ctx.client.json_request(
                "POST",
                options.endpoint,
                rate_class="upload" if data_id is None else None,
                form=build,
                replay=options.replay_final or not is_last,
            )
        except ChecksumMismatchError:
            if attempt == ctx.config.max_attempts:
                raise IntegrityError(
                    f"{record.local_path}: chunk at {chunk.offset} failed its checksum {attempt} times"
                ) from None
            ctx.events(Notice(f"{record.local_path}: chunk at {chunk.offset} arrived damaged; sending it again"))
            ctx.counters.bytes_resent += chunk.size
            continue
        except RejectedError as exc:
            expected = exc.body.get("expected_file_size")
            if exc.status == 400 and isinstance(expected, int | str) and str(expected).isdigit():
                held = int(expected)
                if held == chunk.end and data_id is not None:
                    # An earlier attempt arrived; only its answer was lost. The server has this
                    # chunk, so acknowledge it from the server's word and go on. (The server may
                    # refuse this attempt before its body is sent: then hash the chunk from disk.
                    # Requiring a fully sent attempt here made a lost *last* answer loop for ever:
                    # realign to the end, resend the last chunk, refused early, realign...)
                    digest, whole = await _chunk_hashes(ctx, source, chunk, progress.whole, sent)
                    if is_last:
                        return await _poll_ready(ctx, record, data_id), digest, whole
                    return {"id": data_id, "data_id": data_id, "size": held, "is_ready": False}, digest, whole
                raise _Realign(held) from None
            if exc.status == 413 and ctx.config.chunk_size is None:
                raise _TooLarge() from None
            if data_id is not None and exc.status in (400, 403, 409):
                # A continuation refused without an offset: the server does not know this
                # upload (any more), or (409) lost bytes of it and asks to start again. Start
                # afresh; a real refusal will recur on the first chunk.
                raise _UploadLost() from None
            raise
        except NotFoundError:
            if data_id is not None:
                raise _UploadLost() from None
            raise
        finally:
            ctx.budget.release(2 * block)
        payload = sent[-1]
        stored = answer.get("size")
        if isinstance(stored, int) and stored != chunk.end:
            if stored > source.size or stored < 0:
                raise ProtocolError(f"the server claims to hold {stored} bytes of a {source.size}-byte file")
            raise _Realign(stored)
        return answer, payload.digest, payload.whole
    raise AssertionError("unreachable")  # pragma: no cover


async def _chunk_hashes(
    ctx: TransferContext,
    source: Source,
    chunk: Chunk,
    whole_before: xxhash.xxh3_128 | None,
    sent: Sequence[ChunkPayload | InlineChunk],
) -> tuple[str, xxhash.xxh3_128 | None]:
    """The chunk's checksum and the file's hash after it: from an attempt that sent it whole, or from disk."""
    for payload in reversed(sent):
        if payload.digest is not None:
            return payload.digest, payload.whole

    def read() -> tuple[str, xxhash.xxh3_128 | None]:
        hasher = protocol.new_hasher()
        whole = whole_before.copy() if whole_before is not None else None
        hash_range(
            source.read, chunk.offset, chunk.size, [h for h in (hasher, whole) if h is not None], ctx.config.block_size
        )
        return protocol.format_checksum(hasher.hexdigest()), whole

    return await anyio.to_thread.run_sync(read)


__all__ = ["UploadOptions", "UploadResult", "upload_source"]

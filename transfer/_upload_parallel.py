"""Uploading one large file on several connections at once: the parallel-chunk extension [ext].

Where the server advertises ``parallel_chunks``, a large file's chunks need
not go one after another on one connection (:mod:`._upload`): the upload is
opened with its size and chunk size, ``upload_streams`` workers send the
chunks at their offsets, in any order, and ``finish`` asks the server to
assemble the file and compare its checksum with ours. On a path where one
connection carries a quarter of the link, this is what lets one file use all
of it. Against hosted Flow, or a server started with ``--no-extensions``,
nothing here runs.

Each chunk is ``acked`` in the journal only after the server's 2xx, as in
the strict protocol, but out of order: the journal's chunk rows have holes
until the end. A resumed upload asks the server which chunks it holds
(``GET /upload/<id>``), checks them against the journal (or, where the
journal never heard of a chunk, against the local bytes) and sends only the
others.
"""

from __future__ import annotations

from typing import Any

import anyio

from flowxfer import protocol
from flowxfer.journal import ChunkRecord, ChunkState, FileRecord, FileState

from ._checksums import hash_range
from ._chunks import Chunk, plan_chunks
from ._config import SHORT_PATH_UPLOAD_STREAMS
from ._errors import (
    ChecksumMismatchError,
    IntegrityError,
    NotFoundError,
    ProtocolError,
    RejectedError,
    StopRequested,
)
from ._pathfit import path_chunk_size, path_rate
from ._payloads import ChunkPayload, SourceErrorHolder, UploadOptions, chunk_form
from ._runtime import TransferContext, task_group
from ._sources import Source
from ._upload_finish import UploadResult, _confirm_by_reading, _finish, _is_count, _UploadLost, upload_status
from .events import Notice

MiB = 1024 * 1024
#: The smallest automatic parallel chunk: below it a chunk's fixed cost (a request, the
#: server's fdatasync and commit) starts to weigh.
MIN_PARALLEL_CHUNK = 8 * MiB
#: Chunks per stream the automatic size aims at: each stream ends with its own last chunk,
#: and the chunks that finish last run alone on their (capped) connections, so a whole number
#: of rounds per stream, each a quarter of its share, keeps that uneven tail short.
ROUNDS = 4

#: The plain form a chunk goes in (the upload's data type was given when it was opened).
_CHUNK_OPTIONS = UploadOptions()


def fits_parallel(ctx: TransferContext, size: int, options: UploadOptions, *, resuming: bool = False) -> bool:
    """Whether this upload goes on several connections: the server offers it and the file is large.

    Sample and multiplexed uploads keep the strict protocol (their endpoints
    and final steps are the strict chunk protocol's); a directory's archive
    (a ``sync --pack-small`` tar) goes too: the server unpacks it at finish.
    ``resuming``: the journal holds an upload of this file, which may be a
    parallel one whatever this run's streams: :func:`upload_parallel` asks
    the server, continues it (on one stream if need be) or hands a strict
    one back, rather than the strict path sending every chunk again.
    """
    return (
        ctx.capabilities.parallel_chunks
        and options.endpoint == "/upload"
        and not options.fields
        and (resuming or (parallel_streams(ctx, options) > 1 and size > parallel_chunk_size(ctx, size, options)))
    )


def on_the_way(ctx: TransferContext, options: UploadOptions) -> int:
    """The files on the way, this one included: those being uploaded, or those it started with, the more.

    The files a transfer starts at once open their sources one after another
    (a worker thread each): the first of 16 found none other under way and
    took 7 streams (a 64 MiB file in 8 MiB chunks, a finish request more),
    and its blocks were sized for one upload (4 MiB, not 1 MiB), which is
    why ``options.together`` counts them from the start.
    """
    return max(ctx.uploads_active, options.together)


def _others(ctx: TransferContext, options: UploadOptions) -> int:
    return on_the_way(ctx, options) - 1


def parallel_streams(ctx: TransferContext, options: UploadOptions) -> int:
    """Connections for this file's chunks: ``upload_streams``, less one for each other file on the way.

    Many files at once fill the path already, one connection each (16 × 64 MiB
    reached 91% of the lossy path's link in strict order); a file's extra
    streams would only add requests. One large file alone gets them all.
    """
    return ctx.config.upload_streams_for(ctx.client.round_trip, path_rate(ctx)) - _others(ctx, options)


def most_streams(ctx: TransferContext, options: UploadOptions) -> int:
    """The most :func:`parallel_streams` could be now, whatever the round trip and the rate.

    At most one: the file goes in strict order on any path, so there is no
    count to measure the path for (16 files of 64 MiB at once).
    """
    config = ctx.config
    if config.upload_streams is not None:
        most = config.upload_streams
    else:  # the model's ceiling (a ceiling below the floor gives the floor)
        most = max(SHORT_PATH_UPLOAD_STREAMS, config.max_upload_streams)
    return most - _others(ctx, options)


def parallel_chunk_size(ctx: TransferContext, size: int, options: UploadOptions) -> int:
    """The chunk size asked for; else one that gives every stream :data:`ROUNDS` chunks (whole MiB).

    1 GiB on 6 streams: 43 MiB chunks, 24 of them, four rounds of six. Bounded
    by the strict chunk size (the server's limit) and :data:`MIN_PARALLEL_CHUNK`.
    """
    if ctx.config.chunk_size is not None:
        return ctx.chunk_size()
    share = -(-size // (max(1, parallel_streams(ctx, options)) * ROUNDS))
    return max(1, min(path_chunk_size(ctx), max(MIN_PARALLEL_CHUNK, -(-share // MiB) * MiB)))


async def upload_parallel(
    ctx: TransferContext, record: FileRecord, source: Source, options: UploadOptions
) -> UploadResult | None:
    """Upload ``source`` with parallel chunks, resuming what the journal and the server hold.

    :returns: None when the journal's upload is a strict one (started before
        the server offered parallel chunks): the caller continues it in order.
    """
    restarts = 0
    data_id = record.data_id
    while True:
        try:
            return await _run(ctx, record, source, options, data_id)
        except _Strict:
            return None
        except _UploadLost:
            restarts += 1
            if restarts > 2:
                raise ProtocolError(f"{record.local_path}: the server keeps losing the upload") from None
            ctx.events(Notice(f"{record.local_path}: the server lost the partial upload; starting it again"))
            data_id = None


class _Strict(Exception):
    """The upload being resumed is a strict-order one."""


class _NotStarted(Exception):
    """A stop came while a chunk waited for its turn: it was not sent."""


async def _run(
    ctx: TransferContext, record: FileRecord, source: Source, options: UploadOptions, data_id: str | None
) -> UploadResult:
    size = source.size
    streams = max(1, parallel_streams(ctx, options))
    chunk_size = record.chunk_size if (data_id and record.chunk_size) else parallel_chunk_size(ctx, size, options)
    chunks = plan_chunks(size, chunk_size)
    # The streams' handshakes while the upload is opened (or asked about): on a long path a
    # request on a new connection waits a round trip for its handshake first.
    ctx.client.warm(min(streams, len(chunks)) - 1)
    existing: list[ChunkRecord] = []
    held: dict[int, str | None] = {}
    if data_id:
        existing = await anyio.to_thread.run_sync(ctx.journal.chunks, record.id)
        known = await _server_holds(ctx, record, source, data_id, chunk_size, existing)
        if isinstance(known, UploadResult):
            return known
        held = known
    else:
        try:
            answer = await ctx.client.json_request(
                "POST",
                "/upload/parallel",
                rate_class="upload",
                json_body={"filename": record.remote_name, "size": size, "chunk_size": chunk_size}
                | ({"data_type": options.data_type} if options.data_type else {})
                | ({"is_directory": True} if options.is_directory else {}),
            )
        except NotFoundError:
            # Remembered capabilities may be stale (the server restarted without extensions):
            # asked again, the file goes in strict order, which every server takes.
            fresh = await ctx.client.revalidate_capabilities(ctx.capabilities)
            if fresh is None:
                raise
            ctx.capabilities = fresh
            raise _Strict() from None
        if options.is_directory and answer.get("is_directory") is not True:
            raise _Strict()  # a server that would not unpack it: the opened upload is left unused
        new_id = answer.get("data_id") or answer.get("id")
        if not isinstance(new_id, str | int) or str(new_id) == "":
            raise ProtocolError("the upload answer carries no data id")
        data_id = str(new_id)
    _journal(ctx, record, chunks, existing, held, data_id, chunk_size)
    # The upload's id is what makes it resumable: durable before the first chunk.
    await ctx.writer.flush()
    whole = protocol.new_hasher()
    done = sum(c.size for c in chunks if c.offset in held)
    pending = [c for c in chunks if c.offset not in held]

    async def hash_whole() -> None:
        # Our own whole-file checksum, read in order while the chunks travel out of order.
        await anyio.to_thread.run_sync(hash_range, source.read, 0, size, [whole], ctx.config.block_size)

    async def worker() -> None:
        nonlocal done
        # A stop lets the chunks on the wire finish (and be acknowledged), as between strict chunks.
        while pending and not ctx.stopping():
            chunk = pending.pop(0)
            try:
                digest = await _post(ctx, record, source, data_id, chunk)
            except _NotStarted:
                pending.insert(0, chunk)
                return
            done += chunk.size
            ctx.writer.batch.chunk(record.id, chunk.index, ChunkState.ACKED, digest)
            ctx.writer.batch.update_file(record.id, bytes_done=done)
            ctx.writer.added()

    async def send() -> None:
        async with task_group() as workers:
            for _ in range(min(streams, len(pending))):
                workers.start_soon(worker)
        if pending:
            group.cancel_scope.cancel()  # stopping: our whole-file hash is not needed now

    async with task_group() as group:
        group.start_soon(hash_whole)
        group.start_soon(send)
    if pending:
        raise StopRequested()
    file_checksum = protocol.format_checksum(whole.hexdigest())
    try:
        answer = await ctx.client.json_request(
            "POST", f"/upload/parallel/{data_id}/finish", rate_class=None, json_body={"file_checksum": file_checksum}
        )
    except NotFoundError:
        raise _UploadLost() from None
    except RejectedError as exc:
        if exc.status == 400 and isinstance(exc.body.get("missing"), list):
            # The server lost chunks it had acknowledged: nothing it holds is trusted any more.
            raise _UploadLost() from None
        if exc.status == 422:
            raise IntegrityError(
                f"{record.local_path}: the server assembled a file whose checksum differs from ours"
            ) from None
        raise
    return await _finish(ctx, record, answer, data_id, file_checksum)


def _journal(
    ctx: TransferContext,
    record: FileRecord,
    chunks: list[Chunk],
    existing: list[ChunkRecord],
    held: dict[int, str | None],
    data_id: str,
    chunk_size: int,
) -> None:
    """Record the plan (kept when unchanged) and, chunk by chunk, what the server confirmed it holds."""
    batch = ctx.writer.batch
    same_plan = [(c.offset, c.size) for c in existing] == [(c.offset, c.size) for c in chunks]
    states = {c.idx: c.state for c in existing} if same_plan else {}
    if not same_plan:
        batch.plan_chunks(record.id, [(c.offset, c.size) for c in chunks])
    for chunk in chunks:
        state = states.get(chunk.index, ChunkState.PLANNED)
        if chunk.offset in held and state == ChunkState.PLANNED:
            # Acknowledged, but the journal never heard of it (killed before it flushed): the
            # server's checksum, which _server_holds compared with ours or with the local bytes.
            batch.chunk(record.id, chunk.index, ChunkState.ACKED, held[chunk.offset])
        elif chunk.offset not in held and state == ChunkState.ACKED:
            batch.chunk(record.id, chunk.index, ChunkState.PLANNED)  # the server holds less than we thought
    done = sum(c.size for c in chunks if c.offset in held)
    batch.file_state(
        record.id, FileState.ACTIVE, chunk_size=chunk_size, data_id=data_id, bytes_done=done, size=record.size
    )
    ctx.writer.added()


async def _server_holds(
    ctx: TransferContext,
    record: FileRecord,
    source: Source,
    data_id: str,
    chunk_size: int,
    ours: list[ChunkRecord],
) -> dict[int, str | None] | UploadResult:
    """The chunks the server holds of ``data_id`` (offset: checksum), each confirmed as ours.

    :raises _Strict: the upload is a strict-order one.
    :raises _UploadLost: the server does not know it, or holds bytes that are not ours.
    """
    status = await upload_status(ctx, data_id)
    if status.get("is_ready"):
        if status.get("size") != record.size:
            raise _UploadLost()
        return UploadResult(data_id, protocol.canonical_checksum(status.get("checksum")))
    plan = status.get("parallel")
    if plan is None:
        raise _Strict()
    if not isinstance(plan, dict) or (plan.get("total"), plan.get("chunk_size")) != (record.size, chunk_size):
        raise _UploadLost()  # a plan other than ours: start afresh rather than guess
    server_chunks: Any = status.get("chunks")
    if not isinstance(server_chunks, list) or not all(
        isinstance(e, dict) and _is_count(e.get("offset")) and _is_count(e.get("size")) for e in server_chunks
    ):
        raise ProtocolError(f"GET /upload/{data_id}: malformed chunk list")
    by_offset = {c.offset: c for c in ours}
    unknown = []
    for entry in server_chunks:
        mine = by_offset.get(entry["offset"])
        if mine is None or mine.size != entry["size"] or mine.checksum is None:
            # Acknowledged but never journaled (killed before the journal flushed): vouch for it by reading.
            unknown.append(entry)
        elif mine.checksum != protocol.canonical_checksum(entry.get("checksum")):
            raise _UploadLost()
    if unknown:
        await _confirm_by_reading(ctx, source, unknown, 0)
    return {entry["offset"]: protocol.canonical_checksum(entry.get("checksum")) for entry in server_chunks}


async def _post(ctx: TransferContext, record: FileRecord, source: Source, data_id: str, chunk: Chunk) -> str:
    """POST one chunk at its offset, streamed and hashed as it goes; a damaged arrival is sent again (bounded).

    :returns: the chunk's checksum, as the server confirmed it.
    """
    block = ctx.config.upload_block_for(ctx.uploads_active)
    for attempt in range(1, ctx.config.max_attempts + 1):
        holder = SourceErrorHolder()
        sent: list[ChunkPayload] = []

        def build(holder: SourceErrorHolder = holder, sent: list[ChunkPayload] = sent) -> Any:
            if holder.error is not None:
                raise holder.error  # a local problem, not the network's: stop retrying
            if sent:
                ctx.counters.bytes_resent += sent[-1].sent
            elif ctx.stopping():
                raise _NotStarted()  # the last moment before the request goes out
            payload = ChunkPayload(ctx, record, source, chunk, None, holder, block=block)
            sent.append(payload)
            return chunk_form(
                record.remote_name, chunk.offset, False, data_id, _CHUNK_OPTIONS, payload, True, file_checksum=False
            )

        await ctx.budget.acquire(2 * block)
        try:
            answer = await ctx.client.json_request("POST", f"/upload/parallel/{data_id}", rate_class=None, form=build)
        except ChecksumMismatchError:
            if attempt == ctx.config.max_attempts:
                raise IntegrityError(
                    f"{record.local_path}: chunk at {chunk.offset} failed its checksum {attempt} times"
                ) from None
            ctx.events(Notice(f"{record.local_path}: chunk at {chunk.offset} arrived damaged; sending it again"))
            ctx.counters.bytes_resent += chunk.size
            continue
        except NotFoundError:
            raise _UploadLost() from None
        except RejectedError as exc:
            if exc.status == 409:
                # The server holds other bytes at this offset (the file changed since they were
                # sent, or the server lost track): start the upload afresh.
                raise _UploadLost() from None
            raise
        finally:
            ctx.budget.release(2 * block)
        digest = sent[-1].digest
        if answer.get("offset") != chunk.offset or protocol.canonical_checksum(answer.get("checksum")) != digest:
            raise ProtocolError(f"{record.local_path}: the server's answer for the chunk at {chunk.offset} is not it")
        assert digest is not None
        return digest
    raise AssertionError("unreachable")  # pragma: no cover


__all__ = ["fits_parallel", "most_streams", "on_the_way", "upload_parallel"]

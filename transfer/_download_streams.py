"""The ranged streams of one download: each fetches spans of the file, hashing chunks as they pass.

A stream takes a span (:mod:`._download_spans`), fetches it with one ranged
``GET`` (resumed after cuts from the last byte on disk), and when it is done
takes another, or the back half of the largest span still in flight, so the
file's streams finish close together. Bytes are written with ``pwrite`` into
the ``.part`` file a block at a time; each block belongs to one chunk, and a
chunk's hash is fed as its blocks are written in order. A chunk that two
streams wrote (its tail taken by another stream) is hashed from disk once
complete. A complete chunk is checked against the server's chunk map (or,
for a file of one chunk, its checksum) and ``acked`` in the journal after an
``fdatasync`` of the ``.part`` file. On a short path a body is received in
place (:mod:`._recv_into`): straight into aligned buffers that are written
from where they are, a block written while the next one arrives.
"""

from __future__ import annotations

import asyncio
import bisect
import random
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import aiohttp
import anyio
import xxhash

from flowxfer import protocol
from flowxfer._os import DIRECT_ALIGN
from flowxfer.journal import ChunkState, FileRecord

from ._by_id import HeldAnswer
from ._chunks import Chunk
from ._download_spans import Span, Spans
from ._errors import ProtocolError, StopRequested, UnavailableError
from ._partfile import chunk_digest, part_path, write_block, write_error
from ._recv_into import BodyInto, aligned_buffer, takeover_worth_it
from ._retry import RetryPolicy
from ._runtime import TransferContext, task_group
from .events import BytesMoved, Retrying

_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
#: Tiny pieces (a slow proxy) flush a block early rather than keep thousands of views alive.
_MAX_IOV = 512
#: The block size in a span's last ``block_size`` bytes (the configured one, if smaller): a block is
#: written only once all its bytes came, so a span's last block is written after its last byte. With
#: 4 MiB blocks, streams that end together queued 4 MiB each on the disk at the very end: 70-90 ms
#: from the last byte to the streams' end at 50 ms (issue 20); with 1 MiB, a few ms each.
TAIL_BLOCK = 1024 * 1024
#: A file's last seconds' worth of chunks are acknowledged with its final flush, not one by one: a
#: periodic flush's ``fdatasync`` near the end (30-260 ms on this disk) held up the last writes and
#: then the final flush behind it, 110-240 ms from the last byte to the streams' end (issue 20).
ACK_HOLD = 0.5
#: How often a stream without work looks for a span worth splitting (a fraction of WORTH_SPLITTING);
#: it also looks, and returns once none is left, as soon as another stream finishes a span.
LOOK_AGAIN = 0.1
_STREAM_ERRORS = (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, asyncio.TimeoutError)


@dataclass
class Shared:
    """What the streams of one file learn as they go."""

    etag: str | None
    x_checksum: str | None = None
    bad: set[int] = field(default_factory=set)
    acked: set[int] = field(default_factory=set)
    bytes_done: int = 0
    size: int = -1
    whole_checksum: str | None = None
    chunk_size: int = 0


class LaterSums(Protocol):
    """The chunk map's checksums, fetched beside the streams ([ext] layout stated, :mod:`._download`)."""

    def asking(self) -> None:
        """A stream is about to ask for a range, or a chunk waits for the map: the map may go now."""

    async def sums(self) -> list[str | None] | None:
        """The map's checksums once it has come (None: the server has no map after all); waiting does not send."""


class ContentChanged(Exception):
    """The server's bytes changed under us (ETag differs, or a range was answered with the whole)."""


@dataclass(eq=False)
class _ChunkWork:
    """What one chunk has received: bytes on disk, and its hash while they came in order."""

    chunk: Chunk
    written: int = 0
    hashed_to: int = 0
    hasher: xxhash.xxh3_128 | None = None

    def restart(self) -> None:
        self.written = 0
        self.hashed_to = self.chunk.offset
        self.hasher = xxhash.xxh3_128()


class FileStreams:
    """The streams of one file: where its bytes go and what each of its missing chunks has received."""

    def __init__(
        self,
        ctx: TransferContext,
        record: FileRecord,
        url: str,
        fd: int,
        todo: list[Chunk],
        sums: list[str | None] | None,
        shared: Shared,
        head: bytes | None = None,
        later: LaterSums | None = None,
        held: HeldAnswer | None = None,
    ) -> None:
        """:param head: the file's first bytes, already received: what of a span they cover is not asked for.
        :param later: the chunk map's checksums, still to come (``sums`` is None till then):
            a completed chunk waits for them before it is checked and recorded.
        :param held: the describing answer's bytes after ``head``, still arriving: the stream whose
            span goes on where the head ends reads them instead of asking (closed by the caller).
        """
        self.ctx = ctx
        self._later = later
        self._head = head
        self._held = held
        self.record = record
        self.url = url
        self.fd = fd
        self.sums = sums
        self.shared = shared
        self._chunks = sorted(todo, key=lambda c: c.offset)
        self._offsets = [c.offset for c in self._chunks]
        self._work: dict[int, _ChunkWork] = {}
        for chunk in self._chunks:
            self._work[chunk.index] = work = _ChunkWork(chunk)
            work.restart()
        #: Set (and replaced) each time a stream finishes a span: idle streams look again at once.
        self._span_done = anyio.Event()
        #: Aligned buffers of streams that received in place and finished a span (see :meth:`_consume_into`).
        self._spare_buffers: list[memoryview] = []
        #: Chunks complete on disk, hashed, waiting for the map's checksums (:meth:`_when_the_map_comes`).
        self._waiting: list[tuple[Chunk, str]] = []
        #: The spans :meth:`run` shares out, told how long each request waited for its answer.
        self._spans: Spans | None = None
        #: Chunks verified and on disk whose ``acked`` waits for the file's end (:meth:`_hold`).
        self._acks_held: list[tuple[Chunk, str]] = []
        self._holding = False
        self._since = time.monotonic()
        #: Bytes to fetch, and written so far (a block written again after a cut counts twice: a bound).
        self._todo_bytes = sum(c.size for c in self._chunks)
        self._received = 0

    @property
    def name(self) -> str:
        return Path(self.record.local_path).name

    async def run(self, spans: Spans, streams: int) -> None:
        """Fetch every span with ``streams`` streams at once, idle streams splitting the largest span left."""
        self._spans = spans
        self._since = time.monotonic()
        try:
            async with task_group() as group:
                if self._later is not None:
                    group.start_soon(self._when_the_map_comes)
                for _ in range(max(1, streams)):
                    group.start_soon(self._stream, spans)
        except StopRequested:
            if self._later is not None and self._waiting:
                # A stop acknowledges what was received: the chunks on disk still wait for the map,
                # which is on its way (fetched beside this, bounded by the grace period).
                await self._when_the_map_comes()
            raise
        finally:
            self._release()

    async def _when_the_map_comes(self) -> None:
        """Check and record the chunks that completed before the map did, then stop waiting for it.

        A stream does not wait for the map itself: it parks a completed chunk
        (its digest) and goes on receiving, so the link is not left idle while
        the map's answer is on its way (issue 20: at 150 ms it came a third of
        a second after the first stream's bytes, and every stream that
        completed a chunk stopped reading till then). Nothing is recorded
        before it is checked: the chunks wait here, not in the journal.
        """
        assert self._later is not None
        sums = await self._later.sums()
        self.sums, self._later = sums, None
        waiting, self._waiting = self._waiting, []
        for chunk, digest in waiting:
            self._chunk_done(chunk, digest)

    async def refetch(self, chunk: Chunk) -> None:
        """Fetch one chunk again (it failed verification): from the server, not the head."""
        self._head = self._held = None
        self._work[chunk.index].restart()
        try:
            await self._fetch(Span(chunk.offset, chunk.end))
        finally:
            self._release()

    async def _stream(self, spans: Spans) -> None:
        """Take spans until none is left; while others still run, look again now and then.

        A span not worth splitting now may be later: its stream slows down or
        stalls. When another stream finishes, an idle one looks at once: the
        file is done when the last span is, not up to :data:`LOOK_AGAIN` later
        (a tenth of a second of every large download, issue 20).
        """
        while True:
            span = spans.take()
            if span is None:
                if not spans.active:
                    return
                with anyio.move_on_after(LOOK_AGAIN):
                    await self._span_done.wait()
                continue
            try:
                await self._fetch(span)
            finally:
                spans.done(span)
                self._span_done.set()
                self._span_done = anyio.Event()

    def _chunk_at(self, offset: int) -> _ChunkWork:
        chunk = self._chunks[bisect.bisect_right(self._offsets, offset) - 1]
        if not chunk.offset <= offset < chunk.end:
            raise AssertionError(f"byte {offset} is in no chunk still to fetch")  # pragma: no cover
        return self._work[chunk.index]

    async def _fetch(self, span: Span) -> None:
        """Fetch ``span`` with one ranged GET, resuming it after cuts; its end may move back meanwhile."""
        ctx = self.ctx
        head = self._head
        if head is not None and span.start < len(head):
            await self._consume(_pieces(head[span.start : span.end]), span, min(span.end, len(head)))
        policy = RetryPolicy(
            max_attempts=ctx.config.max_attempts, base=ctx.config.backoff_base, cap=ctx.config.backoff_cap
        )
        rng = random.Random()
        failures = 0
        held, self._held = (self._held, None) if self._held and self._held.start == span.start else (None, self._held)
        while span.start < span.end:
            if ctx.stopping():
                raise StopRequested()
            start = span.start
            if self._later is not None:
                self._later.asking()
            took = held is None
            try:
                async with self._answer(span, held) as (response, end):
                    held = None
                    span.answered(time.monotonic())
                    # The request's own wait (a held answer's was the description's): not the
                    # limiter's, nor a Retry-After sat out before it, which a new request need not wait.
                    waited = ctx.client.answered_in(response) if took else None
                    if waited is not None and self._spans is not None:
                        self._spans.answer_took(waited)
                    reader = self._take_over(response, start, end)
                    if reader is None:
                        await self._consume(response.content.iter_any(), span, end)
                    else:
                        try:
                            await self._consume_into(reader, span)
                        finally:
                            reader.close()
            except _STREAM_ERRORS as exc:
                failures = 0 if span.start > start else failures + 1
                if failures >= policy.max_attempts:
                    raise UnavailableError(f"{self.name}: the download kept failing ({type(exc).__name__})") from None
                delay = policy.delay(failures or 1, rng, None)
                ctx.client.retries += 1
                cause = f"stream cut ({type(exc).__name__})"
                ctx.events(Retrying(f"GET {self.name}", cause, failures or 1, policy.max_attempts, delay))
                await ctx.client.pause(delay)
                continue
            if span.start < span.end:
                # The server ended the body early without an error: treat like a cut.
                failures = 0 if span.start > start else failures + 1
                if failures >= policy.max_attempts:
                    raise UnavailableError(f"{self.name}: the server keeps ending the download early")

    @asynccontextmanager
    async def _answer(self, span: Span, held: HeldAnswer | None) -> AsyncIterator[tuple[aiohttp.ClientResponse, int]]:
        """An answer bringing ``span``'s bytes from its start, and where its bytes end.

        ``held``, the describing answer's rest (its bytes from ``span.start``), is
        taken as it is, no request sent: it may end before the span (a first
        stream asks for the rest then) or after it (left unread when the span
        ends, its connection dropped). Else one ranged GET for the span.
        """
        if held is not None:
            try:
                check_answer(held.response, 0, held.end, self.shared.size, self.shared)
                yield held.response, held.end
            finally:
                await held.aclose()
            return
        start, end = span.start, span.end
        headers = {"Range": f"bytes={start}-{end - 1}"}
        if self.shared.etag:
            headers["If-Range"] = self.shared.etag
        async with self.ctx.client.stream("GET", self.url, rate_class="download", headers=headers) as response:
            check_answer(response, start, end, self.shared.size, self.shared)
            yield response, end

    async def _consume(self, pieces: AsyncIterator[bytes], span: Span, asked_end: int) -> None:
        """Stream a body's ``pieces`` into the ``.part`` file up to ``span.end``, advancing ``span.start``.

        Blocks end where :func:`block_end` says (aligned on disk, so a block is
        written directly, not partly through the page cache). Bytes not yet
        written when the stream is cut are fetched again: ``span.start`` goes
        back to the last byte on disk.
        """
        ctx = self.ctx
        block_size = ctx.config.block_size
        limiter = ctx.client.limiter
        offset = written = span.start
        block: list[memoryview] = []
        work: _ChunkWork | None = None
        await ctx.budget.acquire(block_size)
        try:
            async for piece in pieces:
                await limiter.throttle_bytes(len(piece))
                view = memoryview(piece)
                while view:
                    if offset >= span.end:
                        if span.end < asked_end:
                            return  # another stream took the rest of this span
                        raise ProtocolError("the server sent more bytes than it announced")
                    if work is None or offset >= work.chunk.end:
                        work = self._chunk_at(offset)
                    end = block_end(work.chunk, offset, span.end, block_size)
                    take = min(len(view), end - offset)
                    block.append(view[:take])
                    view = view[take:]
                    offset += take
                    span.start = offset
                    if offset == end or len(block) >= _MAX_IOV:
                        completed = await self._write(work, written, block, offset - written)
                        written = offset
                        block = []
                        if completed and ctx.stopping() and offset < span.end:
                            # Stop at a chunk boundary: everything received is acknowledged, nothing torn.
                            raise StopRequested()
                if offset >= span.end and span.end < asked_end:
                    return  # another stream took the rest: do not wait for bytes that will be thrown away
            if block:
                # The body ended inside a block (the head, or a body ended early): keep what came.
                assert work is not None
                await self._write(work, written, block, offset - written)
                written = offset
        finally:
            ctx.budget.release(block_size)
            if written < offset:
                # The bytes not on disk are thrown away and fetched again: count them honestly.
                ctx.counters.bytes_resent += offset - written
                span.start = written

    def _take_over(self, response: aiohttp.ClientResponse, start: int, end: int) -> BodyInto | None:
        """The body received in place (:mod:`._recv_into`) where that pays, else None (through aiohttp)."""
        ctx = self.ctx
        if ctx.client.limiter.bandwidth is not None or response.content_length != end - start:
            return None  # a --bwlimit paces pieces as they come; a length we did not ask for is checked by aiohttp
        if not takeover_worth_it(ctx.client.round_trip, end - start):
            return None
        return BodyInto.take_over(response)

    async def _consume_into(self, reader: BodyInto, span: Span) -> None:
        """Receive a body in place, a block at a time, writing each block while the next one arrives.

        Blocks are those of :meth:`_consume` (:func:`block_end`). Two buffers take
        turns: while one block is written and hashed in a worker thread, the
        next is received into the other; a block is written only after the
        one before it (a chunk is hashed in order). A stream cut or stopped
        ends with no write in flight, and ``span.start`` at the last byte on
        disk, as in :meth:`_consume`.
        """
        ctx = self.ctx
        block_size = ctx.config.block_size
        spare = self._spare_buffers
        offset = span.start
        state = _InFlight(written=offset)
        await ctx.budget.acquire(2 * block_size)  # before the buffers are mapped: a stream waiting holds none
        buffers: list[memoryview] = []
        try:
            buffers = [spare.pop() if spare else memoryview(aligned_buffer(block_size)) for _ in range(2)]
            async with task_group() as group:
                try:
                    turn = 0
                    while offset < span.end:
                        if ctx.stopping():
                            await state.settled()
                            if state.written == offset and self._chunk_at(offset).chunk.offset == offset:
                                # Stop at a chunk boundary: everything received is acknowledged, nothing torn.
                                raise StopRequested()
                        work = self._chunk_at(offset)
                        limit = block_end(work.chunk, offset, span.end, block_size)
                        at = offset % DIRECT_ALIGN  # memory aligned as the file offset: written with no copy
                        region = buffers[turn][at : at + limit - offset]
                        await reader.fill(region, ctx.config.read_timeout)
                        await state.settled()  # the block before this one is written (and its buffer free)
                        state.begin()
                        group.start_soon(self._write_in_flight, state, work, offset, region)
                        offset = span.start = limit
                        turn ^= 1
                finally:
                    with anyio.CancelScope(shield=True):
                        await state.settled()
        finally:
            ctx.budget.release(2 * block_size)
            spare.extend(buffers)  # no write is in flight: the next span's stream reuses them, pages and all
            if state.written < offset:
                ctx.counters.bytes_resent += offset - state.written
            span.start = state.written

    async def _write_in_flight(self, state: _InFlight, work: _ChunkWork, offset: int, region: memoryview) -> None:
        try:
            await self._write(work, offset, [region], len(region))
            state.written = offset + len(region)
        finally:
            state.done.set()

    async def _write(self, work: _ChunkWork, offset: int, block: list[memoryview], nbytes: int) -> bool:
        """Write (and, in order, hash) one block of ``work``'s chunk; True when that completed the chunk."""
        ctx = self.ctx
        in_order = work.hasher is not None and work.hashed_to == offset
        hasher = work.hasher if in_order else None
        if not in_order:
            work.hasher = None  # a second stream writes this chunk: hash it from disk when complete
        try:
            await anyio.to_thread.run_sync(write_block, self.fd, offset, block, hasher)
        except OSError as exc:
            raise write_error(part_path(Path(self.record.local_path)), exc, None) from None
        if hasher is not None and work.hasher is hasher:
            work.hashed_to += nbytes
        work.written += nbytes
        self._received += nbytes
        ctx.counters.bytes_transferred += nbytes
        ctx.events(BytesMoved(self.record.local_path, nbytes))
        chunk = work.chunk
        if work.written < chunk.size:
            return False
        if work.hasher is not None and work.hashed_to == chunk.end:
            digest = protocol.format_checksum(work.hasher.hexdigest())
        else:
            digest = await anyio.to_thread.run_sync(chunk_digest, self.fd, chunk)
        if self._later is not None:
            # No chunk is checked, nor recorded, before the map came: this one waits for it, the stream goes on.
            self._waiting.append((chunk, digest))
            self._later.asking()  # the map is wanted now (one stream whose head completed a chunk)
            return True
        self._chunk_done(chunk, digest)
        return True

    def _chunk_done(self, chunk: Chunk, digest: str) -> None:
        shared = self.shared
        if self.sums is not None:
            expected = self.sums[chunk.index]
        elif chunk.offset == 0 and chunk.size == shared.size:
            # A file of one chunk: its whole-file checksum is that chunk's.
            expected = shared.whole_checksum or shared.x_checksum
        else:
            expected = None
        if expected is not None and expected != digest:
            shared.bad.add(chunk.index)
            return
        shared.acked.add(chunk.index)
        shared.bytes_done += chunk.size
        self._acks_held.append((chunk, digest))
        if not self._hold():
            self._release()

    def _hold(self) -> bool:
        """Whether the file's end is under :data:`ACK_HOLD` away (the bytes still to write at the rate
        written so far): from then on its chunks wait, verified and written, for the flush that ends it.

        Nothing is recorded before it is on disk either way (the flush ``fdatasync``s first); what
        waits is only the record, and a run killed meanwhile finds those chunks on disk and checks
        them against the map when it resumes (:func:`._partfile.rehash_chunks`).
        """
        if not self._holding:
            elapsed = time.monotonic() - self._since
            left = self._todo_bytes - self._received
            self._holding = left <= ACK_HOLD * self._received / max(elapsed, 1e-3)
        return self._holding

    def _release(self) -> None:
        """Hand the held chunks to the journal's batch (committed after an ``fdatasync`` of the file)."""
        if not self._acks_held:
            return
        held, self._acks_held = self._acks_held, []
        ctx, shared = self.ctx, self.shared
        batch = ctx.writer.batch
        for chunk, digest in held:
            batch.chunk(self.record.id, chunk.index, ChunkState.ACKED, digest)
        batch.sync_before_commit(self.fd)
        batch.update_file(self.record.id, bytes_done=shared.bytes_done, etag=shared.etag)
        ctx.writer.added()


class _InFlight:
    """The one block write a stream receiving in place may have in flight, and how far its writes got."""

    def __init__(self, written: int) -> None:
        #: The end of the last block written: where the stream resumes after a cut.
        self.written = written
        self.done = anyio.Event()
        self.done.set()

    def begin(self) -> None:
        self.done = anyio.Event()

    async def settled(self) -> None:
        await self.done.wait()


def block_end(chunk: Chunk, offset: int, span_end: int, block_size: int) -> int:
    """Where the block holding byte ``offset`` ends: never past its chunk or its span.

    At ``block_size`` boundaries counted from the chunk's start, and in the
    span's last ``block_size`` bytes at :data:`TAIL_BLOCK` boundaries (when
    smaller): what is left to write once the span's last byte came is one
    small block, not a large one. Either way a block starts aligned on disk.
    """
    step = block_size if span_end - offset > block_size else min(block_size, TAIL_BLOCK)
    return min(chunk.end, span_end, offset + step - (offset - chunk.offset) % step)


async def _pieces(body: bytes) -> AsyncIterator[bytes]:
    """Bytes already received, as a body's pieces."""
    yield body


def check_answer(response: aiohttp.ClientResponse, start: int, end: int, size: int, shared: Shared) -> None:
    """Is this the answer to ``Range: bytes=start-(end-1)`` of the bytes we have been fetching?

    :raises ContentChanged: the server's copy changed since the first answer.
    :raises ProtocolError: not an answer to the range asked.
    """
    etag = response.headers.get("ETag")
    if response.status == 206:
        match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
        if not match or int(match.group(1)) != start or int(match.group(2)) != end - 1:
            raise ProtocolError(f"asked for bytes {start}-{end - 1}, got {response.headers.get('Content-Range')!r}")
        if match.group(3) != "*" and int(match.group(3)) != size:
            raise ContentChanged()
    elif response.status == 200:
        if shared.etag is not None and etag != shared.etag:
            raise ContentChanged()
        if start != 0 or end != size:
            if shared.etag is not None:
                raise ContentChanged()
            raise ProtocolError("the server ignored a Range request (no byte-range support)")
        length = response.content_length
        if length is not None and length != size:
            raise ContentChanged()
    else:
        raise ProtocolError(f"unexpected answer {response.status} to a ranged download")
    if etag:
        if shared.etag is None:
            shared.etag = etag
        elif etag != shared.etag:
            raise ContentChanged()
    header = response.headers.get(protocol.HEADER_CHECKSUM)
    if header:
        x_checksum = protocol.canonical_checksum(header)
        if x_checksum is None:
            raise ProtocolError(f"malformed {protocol.HEADER_CHECKSUM} header")
        if shared.x_checksum is not None and shared.x_checksum != x_checksum:
            raise ContentChanged()
        shared.x_checksum = x_checksum


__all__ = ["TAIL_BLOCK", "ContentChanged", "FileStreams", "Shared", "block_end", "check_answer"]

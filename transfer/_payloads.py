"""The request bodies of an upload chunk: streamed, hashed as they go, in Flow's multipart form.

A chunk is streamed from its source a block at a time (:class:`ChunkPayload`)
or, small, sent from memory (:class:`InlineChunk`); either way its bytes are
hashed once, as they are read, for the chunk's and the whole file's checksum.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import anyio
import xxhash
from aiohttp import MultipartWriter
from aiohttp.abc import AbstractStreamWriter
from aiohttp.helpers import content_disposition_header
from aiohttp.payload import Payload

from flowxfer import protocol
from flowxfer.journal import FileRecord

from ._chunks import Chunk
from ._errors import (
    LocalIOError,
    SourceChangedError,
)
from ._runtime import TransferContext
from ._sources import Source
from .events import BytesMoved

__all__ = [
    "ChunkPayload",
    "InlineBody",
    "InlineChunk",
    "LateField",
    "SourceErrorHolder",
    "UploadOptions",
    "chunk_form",
    "form_fields",
    "read_block",
]


@dataclass(frozen=True)
class UploadOptions:
    """How a file is sent: its data type, as a directory archive, or to another upload endpoint.

    :ivar endpoint: ``/upload``, or ``/upload/sample`` (same chunk protocol, more fields).
    :ivar fields: sent after Flow's own fields on every chunk (a sample's fields), in this order;
        a name may repeat (a list is one form part per item).
    """

    data_type: str | None = None
    is_directory: bool = False
    endpoint: str = "/upload"
    fields: tuple[tuple[str, str], ...] = ()
    #: False: a lost answer to the file's final chunk raises :class:`AnswerLost` instead of
    #: sending it again (a sample's last file: the server may have made the sample).
    replay_final: bool = True
    #: The files that start with this one, itself included (``upload``'s first files: all of them
    #: at once): counted as on the way before their uploads are, when a large file's parallel
    #: streams are chosen (:func:`._upload_parallel.parallel_streams`).
    together: int = 1


class SourceErrorHolder:
    """Carries a local read error out of a request body.

    aiohttp turns any exception raised while writing a body into a retryable
    connection error; the form factory re-raises the real one on the retry.
    """

    error: BaseException | None = None


def read_block(
    source: Source, offset: int, length: int, hasher: xxhash.xxh3_128, whole: xxhash.xxh3_128 | None
) -> bytes | bytearray:
    """Read one block and feed it to the chunk's and the file's hash (worker thread): one read, no re-read."""
    data = source.read(offset, length)
    hasher.update(data)
    if whole is not None:
        whole.update(data)
    return data


class ChunkPayload(Payload):
    """A chunk's bytes streamed from the source a block at a time, hashed as they go.

    Memory per upload in flight is ``block`` (and the socket's copy of it), whatever the chunk size, so
    chunks can be large (few requests, few server fsyncs) without large RSS.
    Each attempt is a new payload that starts from a copy of the whole-file
    hash as it stood before this chunk, so a retried attempt never feeds the
    file's hash twice.

    A directory archive's body is sent under ``gate``, one at a time: the
    server answers an archive's last chunk only after unpacking it, so the
    next archive's bytes arrive while the last one is unpacked, instead of
    all of them arriving together and being unpacked together at the end
    (``sync --pack-small`` of 10,000 files in four tars: medians 1.71 s
    instead of 1.80 s over six alternating runs, 1.97 s instead of 2.15 s
    over four more). The gate is held for the body only, never while an
    answer is awaited.
    """

    def __init__(
        self,
        ctx: TransferContext,
        record: FileRecord,
        source: Source,
        chunk: Chunk,
        whole_before: xxhash.xxh3_128 | None,
        holder: SourceErrorHolder,
        gate: anyio.Lock | None = None,
        *,
        block: int,
    ) -> None:
        super().__init__(None, content_type="application/octet-stream")
        # Payload.__init__ swallows a ``size`` keyword: without _size the request went out with
        # ``Transfer-Encoding: chunked`` instead of a Content-Length (flowbio sends one; servers
        # behind WSGI may not take chunked bodies).
        self._size = chunk.size
        self._ctx, self._record, self._source, self._chunk = ctx, record, source, chunk
        self._whole_before = whole_before
        self._holder = holder
        self._gate = gate
        self._block = block
        self.digest: str | None = None
        self.whole: xxhash.xxh3_128 | None = None
        self.sent = 0

    async def write(self, writer: AbstractStreamWriter) -> None:
        if self._gate is None:
            await self._write(writer)
        else:
            async with self._gate:
                await self._write(writer)

    async def _write(self, writer: AbstractStreamWriter) -> None:
        ctx, chunk = self._ctx, self._chunk
        hasher = xxhash.xxh3_128()
        whole = self._whole_before.copy() if self._whole_before is not None else None
        block = self._block
        position = chunk.offset
        while position < chunk.end:
            length = min(block, chunk.end - position)
            try:
                data = await anyio.to_thread.run_sync(read_block, self._source, position, length, hasher, whole)
            except (SourceChangedError, LocalIOError) as exc:
                self._holder.error = exc
                raise
            await ctx.client.limiter.throttle_bytes(length)
            await writer.write(data)
            # Let the block go before the next is read: otherwise two blocks per upload are alive.
            del data
            position += length
            self.sent += length
            ctx.counters.bytes_transferred += length
            ctx.events(BytesMoved(self._record.local_path, length))
        self.digest = protocol.format_checksum(hasher.hexdigest())
        self.whole = whole

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        raise TypeError("a streamed chunk cannot be decoded")


class LateField(Payload):
    """A form field whose value is known only after the blob was sent (its checksum).

    Its length is fixed (``xxh3-128:`` and 32 hex digits), so the request
    still carries a Content-Length. The server reads every field before it
    judges a chunk, so checksum fields may follow the blob.
    """

    LENGTH = len(protocol.CHECKSUM_PREFIX) + 32

    def __init__(self, produce: Callable[[], str]) -> None:
        super().__init__(None, content_type="text/plain; charset=utf-8")
        self._size = self.LENGTH  # (see ChunkPayload: the keyword would be ignored)
        self._produce = produce

    async def write(self, writer: AbstractStreamWriter) -> None:
        data = self._produce().encode("ascii")
        if len(data) != self.LENGTH:
            raise AssertionError("checksum field of unexpected length")
        await writer.write(data)

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return self._produce()


class InlineChunk:
    """A chunk already in memory (:class:`MemorySource`): hashed once, sent as one ``bytes`` body.

    Its checksums are known before the request, so the whole multipart body
    (fields, blob, checksums, in the order :func:`chunk_form` uses) is joined once
    and goes out in one socket write with the request's headers. Every attempt
    sends the same bytes; ``sent`` counts what an attempt put on the wire.
    """

    def __init__(
        self, ctx: TransferContext, record: FileRecord, chunk: Chunk, data: bytes, whole_before: xxhash.xxh3_128 | None
    ) -> None:
        self._ctx, self._record = ctx, record
        self.data = data
        hasher = xxhash.xxh3_128(data)
        self.digest: str | None = protocol.format_checksum(hasher.hexdigest())
        if whole_before is None:
            self.whole: xxhash.xxh3_128 | None = None
        elif chunk.offset == 0:
            self.whole = hasher.copy()  # the file so far is this chunk: hashed once, not twice
        else:
            self.whole = whole_before.copy()
            self.whole.update(data)
        self.sent = 0

    def after_send(self) -> None:
        self.sent = len(self.data)
        self._ctx.counters.bytes_transferred += self.sent
        self._ctx.events(BytesMoved(self._record.local_path, self.sent))

    def body(
        self, fields: Sequence[tuple[str, str]], blob_name: str, send_checksums: bool, file_checksum: bool
    ) -> Payload:
        boundary = os.urandom(16).hex()
        parts: list[bytes] = []

        def part(headers: str, value: bytes) -> None:
            parts.extend((f"--{boundary}\r\n{headers}\r\n\r\n".encode(), value, b"\r\n"))

        late = [("checksum", self.digest or "")] if send_checksums else []
        if send_checksums and file_checksum and self.whole is not None:
            late.append(("file_checksum", protocol.format_checksum(self.whole.hexdigest())))
        for name, value in fields:
            part(f'Content-Disposition: form-data; name="{name}"', value.encode())
        part(
            f"Content-Disposition: {content_disposition_header('form-data', name='blob', filename=blob_name)}"
            "\r\nContent-Type: application/octet-stream",
            self.data,
        )
        for name, value in late:
            part(f'Content-Disposition: form-data; name="{name}"', value.encode())
        parts.append(f"--{boundary}--\r\n".encode())
        return InlineBody(b"".join(parts), self, content_type=f"multipart/form-data; boundary={boundary}")


class InlineBody(Payload):
    """An :class:`InlineChunk`'s request body, counted when it is written, not when built.

    A request that never reaches the server (connection refused while it
    restarts) builds a body and sends nothing; it must not count as bytes moved.
    A plain :class:`Payload` with a known size (so a Content-Length), not
    aiohttp's BytesPayload, which warns about bodies over 1 MiB in memory,
    as a file just under :data:`INLINE_LIMIT` makes with its form around it.
    Retries by the client's request loop (a 5xx, a lost connection) send the
    body again without waiting for ``--bwlimit`` once more: rare, and small.
    """

    def __init__(self, value: bytes, chunk: InlineChunk, *, content_type: str) -> None:
        super().__init__(value, content_type=content_type)
        self._size = len(value)  # (see ChunkPayload: the keyword would be ignored)
        self._body = value
        self._chunk = chunk

    async def write(self, writer: AbstractStreamWriter) -> None:
        await writer.write(self._body)
        self._chunk.after_send()

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return self._body.decode(encoding, errors)


def chunk_form(
    name: str,
    offset: int,
    is_last: bool,
    data_id: str | None,
    options: UploadOptions,
    payload: ChunkPayload,
    send_checksums: bool,
    *,
    file_checksum: bool,
) -> MultipartWriter:
    """The multipart body: Flow's fields before the blob (as flowbio sends them), checksums after it."""
    form = MultipartWriter("form-data")

    def field(field_name: str, value: str | Payload) -> None:
        part = form.append_payload(value) if isinstance(value, Payload) else form.append(value)
        part.set_content_disposition("form-data", name=field_name)

    for field_name, value in form_fields(name, offset, is_last, data_id, options):
        field(field_name, value)
    blob = form.append_payload(payload)
    blob.set_content_disposition("form-data", name="blob", filename=name)
    if send_checksums:
        field("checksum", LateField(lambda: payload.digest or ""))
        if file_checksum:
            field(
                "file_checksum",
                LateField(lambda: protocol.format_checksum(payload.whole.hexdigest()) if payload.whole else ""),
            )
    return form


def form_fields(
    name: str, offset: int, is_last: bool, data_id: str | None, options: UploadOptions
) -> list[tuple[str, str]]:
    """Flow's form fields before the blob, in the order flowbio sends them."""
    fields = [
        ("filename", name),
        ("expected_file_size", str(offset)),
        ("is_last", "true" if is_last else "false"),
        ("data", data_id or ""),
    ]
    if options.data_type:
        fields.append(("data_type", options.data_type))
    if options.is_directory:
        fields.append(("is_directory", "true"))
    fields.extend(options.fields)
    return fields

"""Writing a chunk's blob: hashed once per block, written in a worker thread, flushed before it is answered.

The byte-moving half of the upload path (:mod:`._uploads` decides where the
bytes go and what is recorded): each block of a blob is hashed for the chunk
and for the upload's running whole-file hash in the same worker-thread call
that writes it, so every byte is read from memory once for hashing and once
by the kernel.
"""

from __future__ import annotations

import asyncio
import contextlib
import mmap
import os
import queue
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flowxfer._os import Buffer, pwrite_pieces, read_direct, write_direct
from flowxfer.protocol import format_checksum, new_hasher

from ._http import ApiError

#: Bytes read back per call when a file is hashed again (:func:`feed_file`).
READ_BLOCK = 4 * 1024 * 1024

#: Bytes asked of each direct read when a file is hashed again past the page cache
#: (:func:`feed_file_direct`): a 1 GiB file on this project's test machine read back in
#: 2.7-3.2 s with 16 MiB reads against 3.4 s with 4 MiB (the buffered read: 2.4-2.9 s).
DIRECT_READ_BLOCK = 16 * 1024 * 1024

#: Read buffers kept between :func:`feed_file_direct` calls, 16 MiB each (a fresh mapping faults in every
#: page on its first read: per 32 MiB chunk that cost more than the direct read saved).
_READ_BUFFERS_KEPT = 1
_read_buffers: queue.SimpleQueue[mmap.mmap] = queue.SimpleQueue()

#: Bytes handed to a worker thread per write: large enough that thread hops
#: cost nothing next to the copy, small enough to bound memory per request.
WRITE_BLOCK = 1024 * 1024


def hash_file(path: Path, size: int) -> str:
    """The protocol checksum of the first ``size`` bytes of ``path`` (blocking)."""
    hasher = new_hasher()
    feed_file(path, 0, size, hasher)
    return format_checksum(hasher.hexdigest())


def feed_file(
    path: Path, offset: int, size: int, hasher: Any, also: Callable[[memoryview], None] | None = None
) -> None:
    """Feed ``size`` bytes of ``path`` from ``offset`` to ``hasher`` (blocking), and to ``also`` if given.

    Read into one buffer, reused: a fresh block per read is fresh memory for
    the kernel to fault in each time, on a virtual machine as slow as the read.
    ``also`` gets each block (valid only during the call) after the hasher.
    """
    remaining = size
    view = memoryview(bytearray(min(READ_BLOCK, size)))
    with open(path, "rb", buffering=0) as f:
        f.seek(offset)
        while remaining > 0:
            got = f.readinto(view[: min(len(view), remaining)])
            if not got:
                raise OSError(f"{path} is shorter than {offset + size} bytes")
            hasher.update(view[:got])
            if also is not None:
                also(view[:got])
            remaining -= got


def feed_file_direct(path: Path, offset: int, size: int, hasher: Any) -> None:
    """:func:`feed_file` for bytes written past the page cache (:func:`write_for_fdatasync`), read the same way.

    A parallel upload's chunks are read back to hash the whole file
    (``_upload_parallel``), and they are not in the page cache: a buffered
    read allocates a page-cache page for every 4 KiB and copies it out again,
    0.8-1.1 s of the server's CPU per GiB on a two-core machine where that
    CPU is the link's share; read straight into one aligned buffer it is
    0.25-0.31 s (the hash itself about 0.1 s).
    """
    got = 0
    try:
        buffer = _read_buffers.get_nowait()
    except queue.Empty:
        buffer = mmap.mmap(-1, DIRECT_READ_BLOCK, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    try:
        for view in read_direct(path, offset, size, buffer=buffer):
            with view:
                hasher.update(view)
                got += len(view)
    finally:
        if _read_buffers.qsize() < _READ_BUFFERS_KEPT:
            _read_buffers.put(buffer)
    if got != size:
        raise OSError(f"{path} is shorter than {offset + size} bytes")


def pwrite_all(fd: int, pieces: Sequence[Buffer], offset: int, hashers: tuple[Any, ...]) -> int:
    """Hash and write ``pieces`` back to back at ``offset`` (worker thread); the bytes written.

    The pieces are written as the socket delivered them (``pwritev``), so a
    blob's bytes are not joined into one block first: each is read once for
    every hasher and once by the kernel.
    """
    hash_pieces(pieces, hashers)
    return pwrite_pieces(fd, pieces, offset)


def write_for_fdatasync(fd: int, pieces: Sequence[Buffer], offset: int, hashers: tuple[Any, ...]) -> int:
    """Hash and write bytes that will be ``fdatasync``ed before the chunk is answered (worker thread).

    They go past the page cache where the filesystem allows
    (:func:`write_direct`): one copy into a reused aligned buffer, instead of
    a copy into fresh page-cache pages that the ``fdatasync`` then writes out,
    the slowest and least steady part of taking a large chunk on a virtual
    machine. What is written through the page cache has its writeback started
    at once, so the ``fdatasync`` waits only for the last blocks: a large
    chunk costs max(network, disk) rather than network + disk.
    """
    hash_pieces(pieces, hashers)
    return write_direct(fd, pieces, offset)


def hash_pieces(pieces: Sequence[Buffer], hashers: tuple[Any, ...]) -> None:
    for piece in pieces:
        for hasher in hashers:
            hasher.update(piece)


def write_and_sync(
    write: Callable[[int, Sequence[Buffer], int, tuple[Any, ...]], int],
    fd: int,
    pieces: Sequence[Buffer],
    offset: int,
    hashers: tuple[Any, ...],
    sync: bool,
) -> int:
    """The last write of a blob and, when it goes to a partial file, its ``fdatasync`` (worker thread)."""
    written = write(fd, pieces, offset, hashers) if pieces else 0
    if sync:
        os.fdatasync(fd)
    return written


def copy_spool(src: Path, fd: int, offset: int, size: int, hasher: Any | None) -> None:
    """Move a spooled blob to its place in the partial file, which is ``fdatasync``ed next (worker thread)."""
    with open(src, "rb", buffering=0) as f:
        while size > 0:
            block = f.read(min(WRITE_BLOCK, size))
            if not block:
                raise OSError("spool file shorter than its blob")
            write_for_fdatasync(fd, (block,), offset, (hasher,) if hasher is not None else ())
            offset += len(block)
            size -= len(block)


@dataclass
class Received:
    size: int = 0
    checksum: str = ""


class Sink:
    """Writes a blob's blocks at increasing offsets in a worker thread, one write in flight.

    Each block is hashed (chunk hasher, and the running whole-file hasher if
    any) in the same thread call that writes it, so every byte is read from
    memory once for hashing and once for the kernel.
    """

    def __init__(
        self,
        io: Executor,
        max_size: int,
        fd: int,
        offset: int,
        hashers: tuple[Any, ...],
        *,
        fsync: bool,
        keep: bool = True,
    ) -> None:
        self._io = io
        self._max_size = max_size
        #: Without a file: keep the blob (a whole upload) or only hash it (a replay).
        self._keep = keep
        self._fd = fd
        self._offset = offset
        self._hashers = hashers
        self._fsync = fsync
        self._pending: asyncio.Future[int] | None = None
        self._buffer: list[Buffer] = []
        self._buffered = 0
        self.size = 0

    async def feed(self, block: Buffer) -> None:
        """Take one piece of the blob (``bytes``, or a read-only view of the socket's bytes: kept, not copied)."""
        self.size += len(block)
        limit = self._max_size
        if self.size > limit:
            raise ApiError(413, f"chunk larger than the limit of {limit} bytes")
        if not self._keep:
            hash_pieces((block,), self._hashers)
            return
        self._buffer.append(block)
        self._buffered += len(block)
        if self._buffered >= WRITE_BLOCK and self._fd >= 0:
            await self._flush()

    def take_all(self) -> list[Buffer]:
        """A sink without a file (fd -1) keeps the blob: hand it over."""
        pieces, self._buffer, self._buffered = self._buffer, [], 0
        return pieces

    async def _flush(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            await pending
        if not self._buffer:
            return
        pieces, size = self._buffer, self._buffered
        self._buffer = []
        self._buffered = 0
        loop = asyncio.get_running_loop()
        write = write_for_fdatasync if self._fsync else pwrite_all
        self._pending = loop.run_in_executor(self._io, write, self._fd, pieces, self._offset, self._hashers)
        self._offset += size

    async def drain(self) -> None:
        """Wait for the write in flight, if any (before its fd may be closed or truncated)."""
        pending, self._pending = self._pending, None
        if pending is not None:
            with contextlib.suppress(Exception):
                await pending

    async def finish(self) -> Received:
        """Write what is buffered and, for a partial file, ``fdatasync`` it: in one thread call.

        A small blob is then written and made durable in a single hop to the
        worker thread, not three. A sink without a file keeps its blob for
        :meth:`take_all`; its checksum is left to the taker.
        """
        if self._fd < 0:
            return Received(self.size, "" if self._keep else format_checksum(self._hashers[0].hexdigest()))
        try:
            if self._pending is not None:
                pending, self._pending = self._pending, None
                await pending
            pieces, self._buffer, self._buffered = self._buffer, [], 0
            if pieces or self._fsync:
                write = write_for_fdatasync if self._fsync else pwrite_all
                self._pending = asyncio.get_running_loop().run_in_executor(
                    self._io, write_and_sync, write, self._fd, pieces, self._offset, self._hashers, self._fsync
                )
                self._offset += sum(len(piece) for piece in pieces)
                pending, self._pending = self._pending, None
                await pending
        finally:
            if self._pending is not None:
                with contextlib.suppress(Exception):
                    await self._pending
        return Received(self.size, format_checksum(self._hashers[0].hexdigest()))

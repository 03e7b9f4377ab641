"""A download body received straight into aligned buffers: one copy, kernel to the buffer the disk reads.

Through aiohttp, every byte of a body is copied three times on its way to
disk: by ``recv`` into a fresh ``bytes``, by the HTTP parser into another
(the body sliced from the headers), and into the aligned buffer a direct
write needs. On loopback, where the network costs nothing and both ends
share the CPU, those copies and the Python work per piece were most of a
1 GiB download (``perf``: ``memmove`` the largest user-space cost). Once a
ranged answer's headers are parsed, its connection is taken over: the
transport is given a :class:`asyncio.BufferedProtocol` whose buffer is the
next block's place in an aligned buffer, so ``recv_into`` lands each byte
where :func:`~flowxfer._os.write_direct` writes it from, and the stream's
Python code runs once per block instead of once per socket read.

The connection is not reused afterwards (aiohttp's parser never saw the
body): worth it only where a new connection costs nothing, a short path
(:func:`takeover_worth_it`). Plain HTTP only: under TLS the bytes are
decrypted into a buffer anyway.
"""

from __future__ import annotations

import asyncio
import mmap

import aiohttp

from flowxfer._os import DIRECT_ALIGN

#: Round trips up to this (seconds) count as a short path, where a connection is cheap to open.
SHORT_PATH = 0.02
#: Bodies smaller than this are read through aiohttp: a new connection afterwards costs more.
MIN_BODY = 256 * 1024


def takeover_worth_it(round_trip: float | None, body: int) -> bool:
    """Is receiving ``body`` bytes in place worth giving up its connection on a path with this round trip?"""
    return round_trip is not None and round_trip <= SHORT_PATH and body >= MIN_BODY


class BodyInto(asyncio.BufferedProtocol):
    """Fills one region of memory at a time from the socket; the reader awaits each region full.

    ``recv_into`` may not be given an empty buffer: between regions (the
    stream is writing the last one, or deciding what comes next) the
    transport is paused, so the bytes wait in the socket, as they did while
    aiohttp's reader was not read.
    """

    def __init__(self, transport: asyncio.Transport, leftover: bytes) -> None:
        self._transport = transport
        self._leftover = memoryview(leftover)
        self._region: memoryview | None = None
        self._filled = 0
        self._waiter: asyncio.Future[None] | None = None
        self._error: BaseException | None = None
        self._closed = False

    @classmethod
    def take_over(cls, response: aiohttp.ClientResponse) -> BodyInto | None:
        """Receive the rest of ``response``'s body in place, or None where its connection cannot be taken.

        Synchronous on purpose: from draining what aiohttp already received
        to the new protocol being in place nothing else runs on the loop,
        so no byte goes to the old reader after the drain.
        """
        connection = response.connection
        if connection is None or connection.transport is None or connection.protocol is None:
            return None
        transport = connection.transport
        if not isinstance(transport, asyncio.Transport) or transport.get_extra_info("sslcontext") is not None:
            return None
        if response.headers.get("Transfer-Encoding") or response.headers.get("Content-Encoding"):
            return None
        content = response.content
        if content.exception() is not None or content.is_eof():
            return None
        parts = []
        while piece := content.read_nowait(-1):
            parts.append(piece)
        # aiohttp's parser thinks the body is still coming: its connection is closed on release.
        connection.protocol.force_close()
        reader = cls(transport, b"".join(parts))
        transport.pause_reading()
        transport.set_protocol(reader)
        return reader

    async def fill(self, region: memoryview, stall: float | None) -> None:
        """Fill ``region`` from the body.

        :raises aiohttp.ClientPayloadError: the connection ended first (what aiohttp raises for a cut body).
        :raises TimeoutError: nothing arrived for ``stall`` seconds.
        """
        take = min(len(self._leftover), len(region))
        if take:
            region[:take] = self._leftover[:take]
            self._leftover = self._leftover[take:]
        if take == len(region):
            return
        if self._error is not None or self._closed:
            raise aiohttp.ClientPayloadError(f"the body ended early ({self._error or 'connection closed'})")
        self._region, self._filled = region, take
        self._waiter = asyncio.get_running_loop().create_future()
        self._transport.resume_reading()
        try:
            while True:
                before = self._filled
                try:
                    await asyncio.wait_for(asyncio.shield(self._waiter), stall)
                    break
                except TimeoutError:
                    if self._filled == before:
                        raise
        finally:
            if not self._closed:
                self._transport.pause_reading()
            self._region, self._waiter = None, None
        if self._filled < len(region):
            raise aiohttp.ClientPayloadError(f"the body ended early ({self._error or 'connection closed'})")

    def close(self) -> None:
        """Give the connection up (the body is done, or abandoned)."""
        self._transport.close()

    # -- asyncio.BufferedProtocol ------------------------------------

    def get_buffer(self, sizehint: int) -> memoryview:
        assert self._region is not None
        return self._region[self._filled :]

    def buffer_updated(self, nbytes: int) -> None:
        assert self._region is not None
        self._filled += nbytes
        if self._filled == len(self._region):
            self._transport.pause_reading()
            self._wake()

    def eof_received(self) -> bool:
        self._closed = True
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._error = exc
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


def aligned_buffer(size: int) -> mmap.mmap:
    """A page-aligned buffer of ``size`` bytes plus one alignment unit (a region starts where its offset does).

    Its pages are mapped at once (``MAP_POPULATE``, where there is one):
    every byte of it is received into anyway, and one call costs less than
    a page fault for each 4 KiB on the first pass.
    """
    flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | getattr(mmap, "MAP_POPULATE", 0)
    return mmap.mmap(-1, size + DIRECT_ALIGN, flags=flags)


__all__ = ["MIN_BODY", "SHORT_PATH", "BodyInto", "aligned_buffer", "takeover_worth_it"]

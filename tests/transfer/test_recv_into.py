"""A body received in place: every byte lands in the regions given, in order; a cut or a stall is said.

Real sockets: an aiohttp server on 127.0.0.1 sends the body (whole, cut
short, stalled or trickling) and an aiohttp client takes the connection over
once the answer's headers are in (:class:`BodyInto`), as a download stream does.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import pytest
from aiohttp import web

from flowxfer.transfer._recv_into import BodyInto, aligned_buffer, takeover_worth_it

KiB = 1024
MiB = 1024 * KiB
BODY = random.Random(20).randbytes(3 * MiB + 4321)


async def _send(request: web.Request) -> web.StreamResponse:
    """The body, or its first ``cut`` bytes and then a closed connection, or a pause after ``stall_at``."""
    cut = int(request.query.get("cut", len(BODY)))
    stall_at = int(request.query.get("stall_at", -1))
    trickle = float(request.query.get("trickle", 0))
    response = web.StreamResponse()
    response.content_length = len(BODY)
    await response.prepare(request)
    step = 64 * KiB
    for start in range(0, min(cut, len(BODY)), step):
        if start == stall_at:
            await asyncio.sleep(30)
        if trickle:
            await asyncio.sleep(trickle)
        await response.write(BODY[start : min(start + step, cut)])
    if cut < len(BODY):
        assert request.transport is not None
        request.transport.close()
    return response


@asynccontextmanager
async def _server() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_get("/body", _send)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/body"
    finally:
        await runner.cleanup()


async def _receive(reader: BodyInto, sizes: list[int], stall: float = 5.0) -> bytes:
    """Fill regions of ``sizes`` from one aligned buffer, as a stream does; what they received."""
    buffer = memoryview(aligned_buffer(max(sizes)))
    got = bytearray()
    for index, size in enumerate(sizes):
        at = index * 4099 % 4096  # regions start anywhere in their alignment unit, as file offsets do
        region = buffer[at : at + size]
        await reader.fill(region, stall)
        got += region
    return bytes(got)


async def test_every_byte_lands_in_order_including_those_aiohttp_had_already_read() -> None:
    async with _server() as url, aiohttp.ClientSession() as session, session.get(url) as response:
        await asyncio.sleep(0.2)  # aiohttp reads ahead into its own buffer meanwhile
        assert response.content.total_bytes > 0, "the test wants bytes read before the take-over"
        reader = BodyInto.take_over(response)
        assert reader is not None
        try:
            sizes = [1000, 64 * KiB - 3, 1 * MiB, 1 * MiB + 17, len(BODY) - 1000 - (64 * KiB - 3) - 2 * MiB - 17]
            assert await _receive(reader, sizes) == BODY
        finally:
            reader.close()
        # The connection is given up, not handed back: the next request on the session works.
        async with session.get(url) as again:
            assert await again.read() == BODY


async def test_a_body_cut_short_is_a_payload_error_like_aiohttp_s() -> None:
    async with _server() as url, aiohttp.ClientSession() as session, session.get(url, params={"cut": 2 * MiB}) as r:
        reader = BodyInto.take_over(r)
        assert reader is not None
        try:
            with pytest.raises(aiohttp.ClientPayloadError):
                await _receive(reader, [MiB] * 4)
        finally:
            reader.close()


async def test_a_stall_is_a_timeout_but_a_slow_body_still_arriving_is_not() -> None:
    async with _server() as url, aiohttp.ClientSession() as session:
        async with session.get(url, params={"stall_at": 2 * MiB}) as response:
            reader = BodyInto.take_over(response)
            assert reader is not None
            try:
                loop = asyncio.get_running_loop()
                began = loop.time()
                with pytest.raises(TimeoutError):
                    await _receive(reader, [len(BODY)], stall=0.5)
                assert loop.time() - began < 5
            finally:
                reader.close()
        # 64 KiB every 20 ms: the whole body takes about a second, longer than the stall limit.
        async with session.get(url, params={"trickle": 0.02}) as response:
            reader = BodyInto.take_over(response)
            assert reader is not None
            try:
                assert await _receive(reader, [len(BODY)], stall=0.5) == BODY
            finally:
                reader.close()


async def test_a_body_aiohttp_already_has_whole_is_left_to_it() -> None:
    async with _server() as url, aiohttp.ClientSession() as session:
        async with session.get(url, params={"cut": 0}) as response:
            await asyncio.sleep(0.1)
            assert BodyInto.take_over(response) is None  # its reader knows the body ended early


def test_the_connection_is_given_up_only_where_a_new_one_is_cheap_and_the_body_large() -> None:
    assert takeover_worth_it(0.001, 64 * MiB)
    assert not takeover_worth_it(None, 64 * MiB)  # not measured: maybe a long path
    assert not takeover_worth_it(0.05, 64 * MiB)  # a WAN path: a new connection costs a round trip
    assert not takeover_worth_it(0.001, 4 * KiB)

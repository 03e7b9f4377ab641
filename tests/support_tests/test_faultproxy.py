"""The fault proxy does what each rule says, against a real aiohttp server on loopback.

The server here is a tiny aiohttp application of this file's own (the project's
Flow server is not needed to test the proxy); raw asyncio sockets are used
where a test must see exact bytes, pipelining or a TCP reset.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web

from tests.support.faultproxy import (
    Bandwidth,
    DropResponse,
    FaultProxy,
    FlipBodyByte,
    FlipByte,
    Framing,
    HttpParseError,
    Latency,
    Match,
    Record,
    RequestHead,
    ResetAfter,
    ResetAtRandom,
    ResetMidBody,
    RespondWith,
    ResponseHead,
    Stall,
    StallMidBody,
    TruncateResponse,
    parse_request_head,
    parse_response_head,
    redact_headers,
    redact_target,
    request_framing,
    response_framing,
)

TIMEOUT = aiohttp.ClientTimeout(total=15)


def pattern(n: int, salt: int = 0) -> bytes:
    """Deterministic bytes in which every offset's value is easy to predict."""
    block = bytes((i * 7 + salt) % 251 for i in range(251))
    return (block * (n // 251 + 1))[:n]


# ----------------------------------------------------------------------------
# The upstream: a small aiohttp application.


@dataclass
class Upstream:
    port: int
    uploads: list[int] = field(default_factory=list)
    digests: list[str] = field(default_factory=list)
    hits: int = 0


async def _bytes(request: web.Request) -> web.StreamResponse:
    n = int(request.match_info["n"])
    return web.Response(body=pattern(n), content_type="application/octet-stream")


async def _chunked(request: web.Request) -> web.StreamResponse:
    n = int(request.match_info["n"])
    data = pattern(n)
    resp = web.StreamResponse()
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    for i in range(0, n, 10_000):
        await resp.write(data[i : i + 10_000])
    await resp.write_eof()
    return resp


async def _big(request: web.Request) -> web.StreamResponse:
    n = int(request.match_info["n"])
    block = pattern(1 << 20)
    resp = web.StreamResponse()
    resp.content_length = n
    await resp.prepare(request)
    while n:
        await resp.write(block[: min(n, len(block))])
        n -= min(n, len(block))
    return resp


async def _echo(request: web.Request) -> web.StreamResponse:
    body = await request.read()
    if request.query.get("chunked"):
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for i in range(0, len(body), 7_000):
            await resp.write(body[i : i + 7_000])
        await resp.write_eof()
        return resp
    return web.Response(body=body)


def _upstream_app(state: Upstream) -> web.Application:
    async def upload(request: web.Request) -> web.Response:
        body = await request.read()
        state.uploads.append(len(body))
        return web.json_response({"received": len(body), "count": len(state.uploads)})

    async def digest(request: web.Request) -> web.Response:
        body = await request.read()
        state.digests.append(hashlib.sha256(body).hexdigest())
        return web.json_response({"size": len(body), "sha256": state.digests[-1]})

    async def status(request: web.Request) -> web.Response:
        state.hits += 1
        return web.Response(status=int(request.match_info["code"]))

    async def secret(request: web.Request) -> web.Response:
        return web.Response(text="ok" if request.headers.get("Authorization") else "anonymous")

    app = web.Application()
    app.router.add_get("/bytes/{n}", _bytes)
    app.router.add_get("/chunked/{n}", _chunked)
    app.router.add_get("/big/{n}", _big)
    app.router.add_post("/echo", _echo)
    app.router.add_post("/upload", upload)
    app.router.add_post("/digest", digest)
    app.router.add_get("/status/{code}", status)
    app.router.add_get("/secret", secret)
    return app


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    state = Upstream(port=0)
    runner = web.AppRunner(_upstream_app(state), shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    state.port = runner.addresses[0][1]
    yield state
    await runner.cleanup()


@pytest.fixture
async def proxy(upstream: Upstream) -> AsyncIterator[FaultProxy]:
    async with FaultProxy("127.0.0.1", upstream.port, seed=1) as p:
        yield p


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=TIMEOUT) as s:
        yield s


# ----------------------------------------------------------------------------
# Raw-socket helpers.


class Collector(asyncio.Protocol):
    """Keeps every byte received and how the connection ended (data before a RST included)."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.lost: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.data += data

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set_result(exc)


async def collect(port: int, payload: bytes) -> tuple[bytes, Exception | None]:
    """Send ``payload`` and collect everything until the connection ends."""
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_connection(Collector, "127.0.0.1", port)
    try:
        transport.write(payload)
        exc = await asyncio.wait_for(proto.lost, 10)
    finally:
        transport.close()
    return bytes(proto.data), exc


async def read_response(reader: asyncio.StreamReader, method: str = "GET") -> tuple[ResponseHead, bytes]:
    """Read one response, framed as the proxy frames it."""
    head = parse_response_head(await reader.readuntil(b"\r\n\r\n"))
    framing = response_framing(head, method)
    if framing.kind == "length":
        assert framing.length is not None
        return head, await reader.readexactly(framing.length)
    if framing.kind == "chunked":
        body = bytearray()
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            body += await reader.readexactly(size)
            await reader.readexactly(2)
        await reader.readuntil(b"\r\n")
        return head, bytes(body)
    assert framing.kind == "none"
    return head, b""


@contextlib.asynccontextmanager
async def raw_server(
    handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> AsyncIterator[int]:
    """A plain TCP server (for non-HTTP streams and hand-made HTTP)."""

    async def wrapped(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    server = await asyncio.start_server(wrapped, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()


async def wait_until(predicate: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


# ----------------------------------------------------------------------------
# Pure parsing and redaction.


def test_parse_request_head() -> None:
    head = parse_request_head(
        b"\r\nPOST /upload?x=1 HTTP/1.1\r\nHost: h\r\nX-Long: a\r\n  b\r\nContent-Length: 5\r\n\r\n"
    )
    assert (head.method, head.target, head.path, head.version) == ("POST", "/upload?x=1", "/upload", "HTTP/1.1")
    assert head.header("x-long") == "a b"
    assert request_framing(head) == Framing("length", 5)
    absolute = parse_request_head(b"GET http://h:1/a/b?q HTTP/1.1\r\n\r\n")
    assert absolute.path == "/a/b"


@pytest.mark.parametrize(
    "raw",
    [
        b"GET /\r\n\r\n",
        b"GET / HTTP/2\r\n\r\n",
        b"G(T / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nNoColon\r\n\r\n",
        b"\r\n",
    ],
)
def test_parse_request_head_refuses(raw: bytes) -> None:
    with pytest.raises(HttpParseError):
        parse_request_head(raw)


def _req(*headers: tuple[str, str], method: str = "POST") -> RequestHead:
    return RequestHead(method, "/", "HTTP/1.1", headers)


def _resp(status: int, *headers: tuple[str, str]) -> ResponseHead:
    return ResponseHead("HTTP/1.1", status, "", headers)


def test_request_framing() -> None:
    assert request_framing(_req()) == Framing("none", 0)
    assert request_framing(_req(("Transfer-Encoding", "gzip, chunked"), ("Content-Length", "3"))).kind == "chunked"
    assert request_framing(_req(("Content-Length", "7, 7"))) == Framing("length", 7)
    for bad in [("Content-Length", "7, 8")], [("Content-Length", "-1")], [("Transfer-Encoding", "gzip")]:
        with pytest.raises(HttpParseError):
            request_framing(_req(*bad))


@pytest.mark.parametrize(
    ("status", "headers", "method", "expected"),
    [
        (200, [("Content-Length", "10")], "HEAD", Framing("none", 0)),
        (204, [], "GET", Framing("none", 0)),
        (304, [("Content-Length", "10")], "GET", Framing("none", 0)),
        (100, [], "POST", Framing("none", 0)),
        (200, [("Content-Length", "10")], "GET", Framing("length", 10)),
        (200, [("Content-Length", "0")], "GET", Framing("none", 0)),
        (200, [("Transfer-Encoding", "chunked")], "GET", Framing("chunked")),
        (200, [("Transfer-Encoding", "gzip")], "GET", Framing("eof")),
        (200, [], "GET", Framing("eof")),
        (200, [], "CONNECT", Framing("none", 0)),
    ],
)
def test_response_framing(status: int, headers: list[tuple[str, str]], method: str, expected: Framing) -> None:
    assert response_framing(_resp(status, *headers), method) == expected


def test_redaction() -> None:
    assert redact_target("/downloads/1/a.txt?token=abc&direct=yes") == "/downloads/1/a.txt?token=REDACTED&direct=yes"
    assert redact_target("/x?access_token=1&api-key=2&page=3") == "/x?access_token=REDACTED&api-key=REDACTED&page=3"
    assert redact_target("/plain") == "/plain"
    headers = redact_headers([("Authorization", "Bearer s3cret"), ("cookie", "a=b"), ("Range", "bytes=0-1")])
    assert headers == (("Authorization", "REDACTED"), ("cookie", "REDACTED"), ("Range", "bytes=0-1"))


def test_match_forms() -> None:
    head = RequestHead("POST", "/upload?x=1", "HTTP/1.1", ())
    assert RespondWith(503, match="POST ^/upload$").match.matches(head)
    assert not RespondWith(503, match="GET ^/upload$").match.matches(head)
    assert RespondWith(503, match="^/up").match.matches(head)
    assert Match(["PUT", "POST"], where=lambda h: h.target.endswith("x=1")).matches(head)
    with pytest.raises(ValueError):
        Match(nth=0)
    with pytest.raises(ValueError):
        TruncateResponse(keep_bytes=1, fraction=0.5)
    with pytest.raises(ValueError):
        ResetAfter(10, "sideways")  # type: ignore[arg-type]


# ----------------------------------------------------------------------------
# Plain forwarding.


async def test_forwards_keep_alive_requests_on_one_connection(
    upstream: Upstream, proxy: FaultProxy, session: aiohttp.ClientSession
) -> None:
    assert proxy.url == f"http://127.0.0.1:{proxy.port}"
    for n in (0, 1, 1000, 100_000):
        async with session.get(f"{proxy.url}/bytes/{n}") as resp:
            assert await resp.read() == pattern(n)
    assert proxy.stats.connections == 1
    assert proxy.stats.requests == proxy.stats.responses == 4
    assert proxy.stats.bytes_down > 101_001
    assert proxy.stats.bytes_up > 0
    assert not proxy.stats.faults_injected


async def test_head_204_304_have_no_body(upstream: Upstream, proxy: FaultProxy, session: aiohttp.ClientSession) -> None:
    async with session.head(f"{proxy.url}/bytes/5000") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Length"] == "5000"
        assert await resp.read() == b""
    for code in (204, 304):
        async with session.get(f"{proxy.url}/status/{code}") as resp:
            assert resp.status == code
    async with session.get(f"{proxy.url}/bytes/10") as resp:
        assert await resp.read() == pattern(10)
    assert proxy.stats.connections == 1
    assert proxy.stats.requests == 4


async def test_chunked_bodies_both_ways(upstream: Upstream, proxy: FaultProxy, session: aiohttp.ClientSession) -> None:
    record = proxy.add(Record())
    sent = pattern(123_457, salt=3)

    async def body() -> AsyncIterator[bytes]:
        for i in range(0, len(sent), 20_000):
            yield sent[i : i + 20_000]

    async with session.post(f"{proxy.url}/echo?chunked=1", data=body()) as resp:
        assert resp.headers["Transfer-Encoding"] == "chunked"
        assert await resp.read() == sent
    async with session.get(f"{proxy.url}/chunked/55555") as resp:
        assert await resp.read() == pattern(55_555)
    [echoed, fetched] = record.entries
    assert echoed.request_bytes == echoed.response_bytes == len(sent)
    assert dict(echoed.request_headers)["Transfer-Encoding"] == "chunked"
    assert (fetched.request_bytes, fetched.response_bytes, fetched.outcome) == (0, 55_555, "ok")
    assert proxy.stats.connections == 1


async def test_pipelined_requests_keep_their_order(upstream: Upstream, proxy: FaultProxy) -> None:
    answer = proxy.add(RespondWith(503, "busy", match="GET ^/bytes/20$"))
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        writer.write(
            b"GET /bytes/10 HTTP/1.1\r\nHost: x\r\n\r\n"
            b"HEAD /bytes/99 HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /bytes/20 HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /chunked/30000 HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /bytes/30 HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        await writer.drain()
        got = [await read_response(reader, method) for method in ("GET", "HEAD", "GET", "GET", "GET")]
    finally:
        writer.close()
        await writer.wait_closed()
    assert [head.status for head, _ in got] == [200, 200, 503, 200, 200]
    assert [body for _, body in got] == [pattern(10), b"", b"busy", pattern(30_000), pattern(30)]
    assert got[1][0].header("content-length") == "99"
    assert answer.hits == 1
    assert proxy.stats.requests == 5


async def test_expect_100_continue_passes_through(
    upstream: Upstream, proxy: FaultProxy, session: aiohttp.ClientSession
) -> None:
    async with session.post(f"{proxy.url}/upload", data=b"x" * 5000, expect100=True) as resp:
        assert (await resp.json())["received"] == 5000
    assert upstream.uploads == [5000]


async def test_eof_delimited_response_and_non_http_stream() -> None:
    async def http10(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n" + pattern(70_000))
        await writer.drain()

    async with raw_server(http10) as port, FaultProxy("127.0.0.1", port) as proxy:
        record = proxy.add(Record())
        async with aiohttp.ClientSession(timeout=TIMEOUT) as s, s.get(f"{proxy.url}/") as resp:
            assert await resp.read() == pattern(70_000)
        await wait_until(lambda: bool(record.entries))
        assert record.entries[0].response_bytes == 70_000

    async def banner(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 hello\n")  # the server speaks first: not HTTP
        await echo(reader, writer)

    async with raw_server(banner) as port, FaultProxy("127.0.0.1", port) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        assert await reader.readline() == b"220 hello\n"
        writer.write(b"GET / HTTP/1.1\r\n\r\n")
        assert await reader.readexactly(18) == b"GET / HTTP/1.1\r\n\r\n"
        writer.close()
        await writer.wait_closed()
        assert proxy.stats.requests == 0


# ----------------------------------------------------------------------------
# Byte-level rules.


async def test_flip_byte_on_a_raw_stream_changes_exactly_one_byte() -> None:
    sent = pattern(300_000)
    async with raw_server(echo) as port, FaultProxy("127.0.0.1", port) as proxy:
        flip = proxy.add(FlipByte(123_456, "down", bit=3))
        received = []
        for _ in range(2):
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            writer.write(sent)
            received.append(await reader.readexactly(len(sent)))
            writer.close()
            await writer.wait_closed()
        first, second = received
        assert [i for i in range(len(sent)) if first[i] != sent[i]] == [123_456]
        assert first[123_456] == sent[123_456] ^ 0b1000
        assert second == sent  # times=1: the second connection is intact
        assert proxy.stats.faults_injected == {"flip": 1}
        assert proxy.stats.rule_hits[flip] == 1


async def test_reset_after_delivers_exactly_n_bytes(upstream: Upstream, proxy: FaultProxy) -> None:
    reset = proxy.add(ResetAfter(5000, "down"))
    data, exc = await collect(proxy.port, b"GET /bytes/200000 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert isinstance(exc, ConnectionResetError)
    assert len(data) == 5000
    head_end = data.index(b"\r\n\r\n") + 4
    assert data[head_end:] == pattern(200_000)[: 5000 - head_end]
    assert reset.hits == 1 and proxy.stats.faults_injected["reset"] == 1
    # One-shot: the next connection is untouched, and the rule left the fast path.
    data, exc = await collect(proxy.port, b"GET /bytes/10 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert exc is None and data.endswith(pattern(10))


async def test_reset_after_upstream_sees_exactly_n_bytes() -> None:
    received: list[int] = []

    async def count(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        n = 0
        try:
            while data := await reader.read(65536):
                n += len(data)
        finally:
            received.append(n)

    async with raw_server(count) as port, FaultProxy("127.0.0.1", port) as proxy:
        proxy.add(ResetAfter(30_000, "up"))
        data, exc = await collect(proxy.port, b"\x00" * 100_000)
        assert isinstance(exc, ConnectionResetError) and data == b""
        await wait_until(lambda: bool(received))
    assert received == [30_000]
    assert proxy.stats.bytes_up == 30_000


async def test_reset_at_random_is_seeded(upstream: Upstream) -> None:
    cutoffs = []
    for _ in range(2):
        async with FaultProxy("127.0.0.1", upstream.port, seed=42) as proxy:
            proxy.add(ResetAtRandom(1000, 50_000, probability=1.0, direction="down"))
            data, exc = await collect(proxy.port, b"GET /bytes/100000 HTTP/1.1\r\nHost: x\r\n\r\n")
            assert isinstance(exc, ConnectionResetError)
            cutoffs.append(len(data))
    assert cutoffs[0] == cutoffs[1]
    assert 1000 <= cutoffs[0] <= 50_000
    async with FaultProxy("127.0.0.1", upstream.port) as proxy:
        never = proxy.add(ResetAtRandom(0, 10, probability=0.0))
        data, exc = await collect(proxy.port, b"GET /bytes/1000 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert exc is None and data.endswith(pattern(1000)) and never.hits == 0


async def test_latency_and_bandwidth_shape_but_keep_bytes(
    upstream: Upstream, proxy: FaultProxy, session: aiohttp.ClientSession
) -> None:
    latency = proxy.add(Latency(0.15, direction="down"))
    started = time.monotonic()
    async with session.get(f"{proxy.url}/bytes/1000") as resp:
        assert await resp.read() == pattern(1000)
    assert time.monotonic() - started >= 0.15
    assert latency.hits >= 1
    proxy.remove(latency)
    cap = proxy.add(Bandwidth(2_000_000, "down"))
    started = time.monotonic()
    async with session.get(f"{proxy.url}/bytes/400000") as resp:
        assert await resp.read() == pattern(400_000)
    assert time.monotonic() - started >= 0.15  # 400 kB at 2 MB/s: 0.2 s at least, but the first piece
    assert cap.hits >= 10
    assert not proxy.stats.faults_injected  # shaping is not a fault


async def test_stall_outlasts_a_read_timeout_then_ends(upstream: Upstream, proxy: FaultProxy) -> None:
    stall = proxy.add(Stall(after_bytes=50, direction="down", seconds=30))
    timeout = aiohttp.ClientTimeout(total=10, sock_read=0.3)
    async with aiohttp.ClientSession(timeout=timeout) as s:
        with pytest.raises(asyncio.TimeoutError):
            async with s.get(f"{proxy.url}/bytes/1000") as resp:
                await resp.read()
    assert stall.hits == 1 and proxy.stats.faults_injected["stall"] == 1
    # The client gave up and closed: the stalled connection ends long before 30 s.
    await wait_until(lambda: proxy.active_connections == 0, within=3)


async def test_stall_then_resume(upstream: Upstream, proxy: FaultProxy, session: aiohttp.ClientSession) -> None:
    proxy.add(Stall(after_bytes=3000, direction="down", seconds=0.2, then="resume"))
    started = time.monotonic()
    async with session.get(f"{proxy.url}/bytes/20000") as resp:
        assert await resp.read() == pattern(20_000)
    assert time.monotonic() - started >= 0.2


# ----------------------------------------------------------------------------
# HTTP-level rules.


async def test_respond_with_503_keeps_the_connection_usable(
    upstream: Upstream, proxy: FaultProxy, session: aiohttp.ClientSession
) -> None:
    busy = proxy.add(RespondWith.html_error(503, match="POST ^/digest$"))
    body = pattern(200_000, salt=9)
    async with session.post(f"{proxy.url}/digest", data=body) as resp:
        assert resp.status == 503
        assert resp.headers["Content-Type"] == "text/html"
        assert "<center>nginx</center>" in await resp.text()
    async with session.post(f"{proxy.url}/digest", data=body) as resp:
        assert (await resp.json())["sha256"] == hashlib.sha256(body).hexdigest()
    assert upstream.digests == [hashlib.sha256(body).hexdigest()]  # the server saw one request
    assert busy.hits == 1 and proxy.stats.faults_injected == {"respond": 1}
    assert proxy.stats.connections == 1


async def test_respond_with_429_json(upstream: Upstream, proxy: FaultProxy, session: aiohttp.ClientSession) -> None:
    proxy.add(RespondWith.rate_limited(retry_after=1, match="GET ^/bytes/", times=2))
    for _ in range(2):
        async with session.get(f"{proxy.url}/bytes/10") as resp:
            assert resp.status == 429
            assert resp.headers["Retry-After"] == "1"
            assert resp.headers["X-RateLimit-Remaining"] == "0"
            assert int(resp.headers["X-RateLimit-Reset"]) >= int(time.time())
            assert await resp.json() == {"error": "Rate limit exceeded"}
    async with session.get(f"{proxy.url}/bytes/10") as resp:
        assert resp.status == 200
    async with session.head(f"{proxy.url}/bytes/10") as resp:
        assert resp.status == 200


async def test_respond_with_close_ends_the_connection(
    upstream: Upstream, proxy: FaultProxy, session: aiohttp.ClientSession
) -> None:
    proxy.add(RespondWith(502, "bad gateway", close=True))
    async with session.post(f"{proxy.url}/upload", data=b"abc") as resp:
        assert resp.status == 502
        assert resp.headers["Connection"] == "close"
        assert await resp.read() == b"bad gateway"
    async with session.post(f"{proxy.url}/upload", data=b"abc") as resp:
        assert resp.status == 200
    assert proxy.stats.connections == 2
    assert upstream.uploads == [3]


async def test_respond_with_on_expect_continue_answers_and_closes(
    upstream: Upstream, proxy: FaultProxy, session: aiohttp.ClientSession
) -> None:
    proxy.add(RespondWith(413, "too large", match="POST ^/upload$"))
    async with session.post(f"{proxy.url}/upload", data=b"x" * 5000, expect100=True) as resp:
        assert resp.status == 413
    assert upstream.uploads == []


async def test_truncate_response_ends_early(
    upstream: Upstream, proxy: FaultProxy, session: aiohttp.ClientSession
) -> None:
    record = proxy.add(Record())
    proxy.add(TruncateResponse("GET ^/bytes/", keep_bytes=30_000))
    async with session.get(f"{proxy.url}/bytes/100000") as resp:
        assert resp.headers["Content-Length"] == "100000"  # the head is unchanged
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()
    proxy.add(TruncateResponse("GET ^/chunked/", fraction=0.5))
    async with session.get(f"{proxy.url}/chunked/100000") as resp:
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()
    async with session.get(f"{proxy.url}/bytes/100000") as resp:  # both rules are spent
        assert await resp.read() == pattern(100_000)
    first, second, third = record.entries
    assert (first.response_bytes, first.faults, first.outcome) == (30_000, ("truncate",), "aborted")
    assert 0 < second.response_bytes <= 10_000  # unknown length: cut inside the first piece
    assert third.outcome == "ok"
    assert proxy.stats.faults_injected == {"truncate": 2}


async def test_truncate_leaves_short_bodies_alone(
    upstream: Upstream, proxy: FaultProxy, session: aiohttp.ClientSession
) -> None:
    cut = proxy.add(TruncateResponse(keep_bytes=500))
    async with session.get(f"{proxy.url}/bytes/500") as resp:
        assert await resp.read() == pattern(500)
    assert cut.hits == 0


@pytest.mark.parametrize("path", ["/bytes/100000", "/chunked/100000"])
async def test_flip_body_byte_down(
    upstream: Upstream, proxy: FaultProxy, session: aiohttp.ClientSession, path: str
) -> None:
    proxy.add(FlipBodyByte(path, at=54_321, bit=7))
    async with session.get(proxy.url + path) as resp:
        got = await resp.read()
    sent = pattern(100_000)
    assert [i for i in range(len(sent)) if got[i] != sent[i]] == [54_321]
    assert got[54_321] == sent[54_321] ^ 0x80


@pytest.mark.parametrize("chunked", [False, True])
async def test_flip_body_byte_up(
    upstream: Upstream, proxy: FaultProxy, session: aiohttp.ClientSession, chunked: bool
) -> None:
    proxy.add(FlipBodyByte("POST ^/echo$", direction="up", at=77_777))
    sent = pattern(150_000, salt=5)

    async def stream() -> AsyncIterator[bytes]:
        for i in range(0, len(sent), 32_768):
            yield sent[i : i + 32_768]

    async with session.post(f"{proxy.url}/echo", data=stream() if chunked else sent) as resp:
        got = await resp.read()
    assert len(got) == len(sent)
    assert [i for i in range(len(sent)) if got[i] != sent[i]] == [77_777]


async def test_flip_body_byte_random_offset_is_seeded(upstream: Upstream) -> None:
    positions = []
    for _ in range(2):
        async with (
            FaultProxy("127.0.0.1", upstream.port, seed="flip") as proxy,
            aiohttp.ClientSession(timeout=TIMEOUT) as s,
        ):
            proxy.add(Record())  # rules take seeds in the order they are added
            proxy.add(FlipBodyByte())
            async with s.get(f"{proxy.url}/bytes/50000") as resp:
                got = await resp.read()
            sent = pattern(50_000)
            diff = [i for i in range(len(sent)) if got[i] != sent[i]]
            assert len(diff) == 1
            positions.append(diff[0])
    assert positions[0] == positions[1]


async def test_reset_mid_body_down(upstream: Upstream, proxy: FaultProxy, session: aiohttp.ClientSession) -> None:
    record = proxy.add(Record())
    proxy.add(ResetMidBody("^/bytes/", at_fraction=0.25))
    async with session.get(f"{proxy.url}/bytes/200000") as resp:
        with pytest.raises(aiohttp.ClientError):
            await resp.read()
    assert record.entries[0].response_bytes == 50_000
    assert proxy.stats.faults_injected == {"reset": 1}


async def test_reset_mid_body_up(upstream: Upstream, proxy: FaultProxy, session: aiohttp.ClientSession) -> None:
    record = proxy.add(Record())
    proxy.add(ResetMidBody("POST ^/upload$", direction="up", at_bytes=50_000))
    with pytest.raises(aiohttp.ClientError):
        async with session.post(f"{proxy.url}/upload", data=b"u" * 200_000) as resp:
            await resp.read()
    async with session.post(f"{proxy.url}/upload", data=b"u" * 1000) as resp:
        assert resp.status == 200
    assert upstream.uploads == [1000]  # the server never got the whole first body
    assert [(e.request_bytes, e.outcome) for e in record.entries] == [(50_000, "aborted"), (1000, "ok")]


async def test_stall_mid_body(upstream: Upstream, proxy: FaultProxy) -> None:
    record = proxy.add(Record())
    proxy.add(StallMidBody("^/bytes/", at_bytes=40_000, seconds=30))
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10, sock_read=0.3)) as s:
        async with s.get(f"{proxy.url}/bytes/100000") as resp:
            with pytest.raises(asyncio.TimeoutError):
                await resp.read()
        await wait_until(lambda: bool(record.entries), within=3)
        async with s.get(f"{proxy.url}/bytes/100000") as resp:
            assert await resp.read() == pattern(100_000)
    assert record.entries[0].response_bytes == 40_000
    assert record.entries[0].faults == ("stall",)


@pytest.mark.parametrize("reset", [False, True])
async def test_drop_response_loses_the_answer_of_a_processed_request(
    upstream: Upstream, proxy: FaultProxy, session: aiohttp.ClientSession, reset: bool
) -> None:
    record = proxy.add(Record("POST ^/upload$"))
    drop = proxy.add(DropResponse("POST ^/upload$", reset=reset))
    with pytest.raises(aiohttp.ClientConnectionError):
        async with session.post(f"{proxy.url}/upload", data=b"c" * 4096) as resp:
            await resp.read()
    assert upstream.uploads == [4096]  # the server stored the chunk
    async with session.post(f"{proxy.url}/upload", data=b"c" * 4096) as resp:
        assert (await resp.json())["count"] == 2
    assert drop.hits == 1
    assert [(e.status, e.outcome, e.response_bytes) for e in record.entries] == [
        (200, "dropped", 0),
        (200, "ok", len(json.dumps({"received": 4096, "count": 2}))),
    ]


async def test_match_nth_and_seeded_probability(upstream: Upstream, session: aiohttp.ClientSession) -> None:
    async with FaultProxy("127.0.0.1", upstream.port) as proxy:
        proxy.add(RespondWith(503, match=Match("GET", "^/bytes/", nth=3)))
        statuses = []
        for _ in range(5):
            async with session.get(f"{proxy.url}/bytes/1") as resp:
                statuses.append(resp.status)
        assert statuses == [200, 200, 503, 200, 200]

    runs = []
    for _ in range(2):
        async with FaultProxy("127.0.0.1", upstream.port, seed=3) as proxy:
            proxy.add(RespondWith(503, match=Match(path="^/bytes/", probability=0.5), times=None))
            statuses = []
            for _ in range(16):
                async with session.get(f"{proxy.url}/bytes/1") as resp:
                    statuses.append(resp.status)
            runs.append(statuses)
    assert runs[0] == runs[1]
    assert {200, 503} <= set(runs[0])


async def test_rules_change_while_running(
    upstream: Upstream, proxy: FaultProxy, session: aiohttp.ClientSession
) -> None:
    async def status() -> int:
        async with session.get(f"{proxy.url}/bytes/5") as resp:
            await resp.read()
            return resp.status

    assert await status() == 200
    rule = proxy.add(RespondWith(500, times=None))
    assert await status() == 500
    proxy.remove(rule)
    assert await status() == 200
    proxy.add(RespondWith(501, times=None))
    proxy.add(RespondWith(502, times=None))
    assert await status() == 501  # the first RespondWith wins
    proxy.clear()
    assert await status() == 200
    assert proxy.rules == ()
    assert proxy.stats.rule_hits[rule] == 1
    assert proxy.stats.connections == 1
    FaultProxy(upstream_port=upstream.port).add(rule)  # a removed rule may move to another proxy...
    with pytest.raises(ValueError):
        proxy.add(rule)  # ...but belongs to one at a time


async def test_record_never_keeps_credentials(
    upstream: Upstream, proxy: FaultProxy, session: aiohttp.ClientSession
) -> None:
    record = proxy.add(Record())
    headers = {"Authorization": "Bearer s3cret-access", "Cookie": "flow_refresh_token=s3cret-refresh"}
    async with session.get(f"{proxy.url}/secret?token=s3cret-query&page=2", headers=headers) as resp:
        assert await resp.text() == "ok"  # the server did get the credentials
    [entry] = record.entries
    assert "s3cret" not in repr(record.entries)
    assert entry.path == "/secret?token=REDACTED&page=2"
    assert dict(entry.request_headers)["Authorization"] == "REDACTED"
    assert record.select("GET", "^/secret$") == [entry]
    assert record.select("POST") == []


# ----------------------------------------------------------------------------
# Lifecycle and throughput.


async def test_close_and_drop_connections_with_clients_attached(upstream: Upstream) -> None:
    async with aiohttp.ClientSession(timeout=TIMEOUT) as s:
        async with FaultProxy("127.0.0.1", upstream.port) as proxy:
            async with s.get(f"{proxy.url}/bytes/10") as resp:
                await resp.read()
            assert proxy.active_connections == 1  # pooled by the client
            assert await proxy.drop_connections() == 1
            async with s.get(f"{proxy.url}/bytes/10") as resp:  # aiohttp reconnects
                assert await resp.read() == pattern(10)
            assert proxy.stats.connections == 2
            proxy.add(Stall(0, "down", seconds=60))
            task = asyncio.create_task(s.get(f"{proxy.url}/bytes/10"))
            await wait_until(lambda: proxy.stats.faults_injected["stall"] == 1)
        # Leaving the proxy cut the stalled connection at once.
        with pytest.raises(aiohttp.ClientError):
            await task


async def test_dead_upstream_resets_the_client() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with FaultProxy("127.0.0.1", port) as proxy:
        data, exc = await collect(proxy.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert data == b"" and isinstance(exc, ConnectionResetError)


async def test_64_mib_pass_through_intact(
    upstream: Upstream, proxy: FaultProxy, session: aiohttp.ClientSession
) -> None:
    size = 64 << 20
    expected = hashlib.sha256()
    block = pattern(1 << 20)
    for _ in range(64):
        expected.update(block)
    got = hashlib.sha256()
    async with session.get(f"{proxy.url}/big/{size}") as resp:
        async for chunk in resp.content.iter_chunked(1 << 20):
            got.update(chunk)
    assert got.hexdigest() == expected.hexdigest()
    assert proxy.stats.bytes_down > size


async def test_upstream_port_can_be_set_after_start(upstream: Upstream) -> None:
    async with FaultProxy() as proxy:
        data, exc = await collect(proxy.port, b"GET /bytes/1 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert data == b"" and isinstance(exc, ConnectionResetError)
        proxy.upstream_port = upstream.port
        data, exc = await collect(proxy.port, b"GET /bytes/1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert exc is None and data.startswith(b"HTTP/1.1 200 ") and data.endswith(pattern(1))

"""The engine against a misbehaving network: a real fault-injecting proxy between it and the real server.

Every test puts :class:`~tests.support.faultproxy.FaultProxy` between a
:class:`Flowxfer` and the local server, injects one kind of fault, and checks
the two things a user cares about: the bytes that end up on the server (or on
disk) are exactly the source's, and what was sent again is bounded (about one
chunk per fault, never the whole file). The proxy's :class:`Record` counts
the bytes on the wire, so the bound is measured, not taken from the engine's
own report.

Each test runs twice: against the server with our extensions (chunk
checksums, upload status, chunk maps) and without them, as hosted Flow
behaves. Without checksums a flipped byte cannot be detected by anyone: the
tests assert that documented limit instead of pretending (see
``test_flipped_upload_byte`` and ``test_flipped_download_byte``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from flowxfer.transfer import Flowxfer, TransferReport
from flowxfer.transfer.events import Retrying, Waiting
from tests.support.faultproxy import (
    Bandwidth,
    DropResponse,
    FlipBodyByte,
    Match,
    ResetMidBody,
    RespondWith,
    StallMidBody,
    TruncateResponse,
)
from tests.support.rig import Rig, rig, stored
from tests.support.server import RunningServer

from .conftest import KiB, client, write_random

CHUNK = 64 * KiB
#: The engine's write unit in these tests (conftest's block_size): a cut stream resumes at one.
BLOCK = 16 * KiB
MiB = 1024 * KiB
#: The multipart envelope and form fields around one chunk's blob (measured: ~600 bytes; generous).
ENVELOPE = 2 * KiB
#: A chunk request: strict (``/upload``) or, with extensions, a parallel chunk [ext].
UPLOAD_PATH = r"^/upload(/parallel/\d+)?$"
SIZE = 12 * CHUNK + 1234
#: What aiohttp may hold unread when a response ends early: it raises at once and drops its read
#: buffer (two 64 KiB reads), and an RST also drops what the kernel had not handed over yet. A cut
#: download therefore costs the partial chunk plus at most this much on the wire.
HTTP_BUFFER = 256 * KiB

pytestmark = pytest.mark.parametrize("extensions", [True, False], ids=["extensions", "hosted-flow"])


@asynccontextmanager
async def engine(r: Rig, home: Path, **config: Any) -> AsyncIterator[Flowxfer]:
    """A Flowxfer that talks to the server through the proxy (logged in through it too)."""
    settings: dict[str, Any] = {"read_timeout": 5.0, "connect_timeout": 5.0, **config}
    async with client(r.via_proxy, home, **settings) as fx:
        yield fx


def done(report: TransferReport) -> TransferReport:
    assert report.status == "completed", (report.status, report.stop_reason, [f.error for f in report.files])
    assert {f.status for f in report.files} == {"done"}, report.files
    return report


async def upload_through(r: Rig, tmp_path: Path, size: int = SIZE, **config: Any) -> tuple[bytes, str]:
    """Upload one file through the proxy; returns the source bytes and the data id."""
    src = write_random(tmp_path / "src" / "reads.bin", size, 3)
    async with engine(r, tmp_path / "home", **config) as fx:
        report = done(await fx.upload([src]))
    (item,) = report.files
    assert item.id
    for exchange in r.log.select("POST", UPLOAD_PATH):
        # Like flowbio's: a Content-Length, never a chunked body (WSGI servers may refuse those).
        names = {name.lower() for name, _ in exchange.request_headers}
        assert "content-length" in names and "transfer-encoding" not in names, exchange.request_headers
    return src.read_bytes(), item.id


async def upload_direct(srv: RunningServer, tmp_path: Path, size: int = SIZE) -> tuple[bytes, str]:
    """Upload one file straight to the server (the setup of a download test)."""
    src = write_random(tmp_path / "src" / "reads.bin", size, 4)
    async with client(srv, tmp_path / "uploader") as fx:
        (item,) = done(await fx.upload([src])).files
    assert item.id
    return src.read_bytes(), item.id


async def download_through(r: Rig, tmp_path: Path, data_id: str, **config: Any) -> tuple[TransferReport, bytes]:
    out = tmp_path / "out"
    async with engine(r, tmp_path / "home", **config) as fx:
        report = await fx.download([data_id], output_dir=out)
    assert not list(out.glob("*.part")) or report.status != "completed"
    data = (out / "reads.bin").read_bytes() if (out / "reads.bin").exists() else b""
    return report, data


def assert_download_resumed(r: Rig, cuts: int) -> None:
    """Each stream after a cut starts at a block boundary (the last byte on disk) after the last one's start
    (progress is kept), and the bytes on the wire exceed the file by at most a block plus the HTTP buffer per cut."""
    starts = [int(dict(e.request_headers)["Range"].split("=")[1].split("-")[0]) for e in r.log.select("GET", STREAM)]
    assert len(starts) == cuts + 1, starts
    assert all(start % BLOCK == 0 for start in starts), starts
    assert starts == sorted(set(starts)), starts
    assert r.download_bytes() <= SIZE + cuts * (BLOCK + HTTP_BUFFER)


def one_byte_differs(a: bytes, b: bytes) -> bool:
    return len(a) == len(b) and sum(x != y for x, y in zip(a, b, strict=True)) == 1


UPLOAD = "POST ^/upload$"
DOWNLOAD = "GET ^/downloads/"
#: A stream's ranged request (the named route); [ext] the describing ``GET /downloads/<id>`` is not one.
STREAM = r"^/downloads/[^/]+/"


# --- a flipped byte -----------------------------------------------------------------------


async def test_flipped_upload_byte(tmp_path: Path, extensions: bool) -> None:
    """Extensions: the server's 422 makes the engine send that chunk again, once.

    Hosted Flow has no chunk checksums: the damaged chunk is stored as it
    arrived and nobody can tell (the engine has no checksum to compare the
    server's copy with). That is the documented limit of the mode.
    """
    async with rig(tmp_path, extensions) as r:
        flip = r.proxy.add(FlipBodyByte(Match("POST", UPLOAD_PATH, nth=3), direction="up", at=4000))
        source, data_id = await upload_through(r, tmp_path)
        assert flip.hits == 1
        server_copy = (await stored(r.server, {"reads.bin": data_id}))["reads.bin"]
        requests = r.log.select("POST", UPLOAD_PATH)
        if extensions:
            assert server_copy == source
            assert [e.status for e in requests].count(422) == 1
            assert r.upload_bytes() <= SIZE + CHUNK + len(requests) * ENVELOPE
        else:
            assert one_byte_differs(server_copy, source)
            assert all(e.status == 200 for e in requests)
            assert len(requests) == 13


async def test_flipped_download_byte(tmp_path: Path, extensions: bool) -> None:
    """Extensions: the chunk map catches the bad chunk and only that chunk is fetched again.

    Without extensions there is no checksum anywhere (no chunk map, no
    X-Checksum): size and ETag match, so the damage is not detected. The
    engine says so: what it verified is "size and ETag only".
    """
    async with rig(tmp_path, extensions) as r:
        source, data_id = await upload_direct(r.server, tmp_path)
        flip = r.proxy.add(FlipBodyByte(DOWNLOAD, direction="down", at=5 * CHUNK + 77))
        report, data = await download_through(r, tmp_path, data_id, segments=1)
        assert flip.hits == 1
        done(report)
        if extensions:
            assert data == source
            assert SIZE + CHUNK >= r.download_bytes() >= SIZE + 1
        else:
            assert one_byte_differs(data, source)
            assert r.download_bytes() == SIZE


async def test_flipped_download_byte_with_several_segments(tmp_path: Path, extensions: bool) -> None:
    """Three ranged streams at once; a byte flipped in the middle one. Extensions: that chunk
    alone is fetched again (one ranged request for it). Hosted Flow: not detected."""
    async with rig(tmp_path, extensions) as r:
        source, data_id = await upload_direct(r.server, tmp_path)
        flip = r.proxy.add(FlipBodyByte(Match("GET", r"^/downloads/", nth=2), direction="down", at=CHUNK + 5))
        report, data = await download_through(r, tmp_path, data_id, segments=3)
        assert flip.hits == 1
        done(report)
        gets = r.log.select("GET", STREAM)
        if extensions:
            assert data == source
            assert len(gets) == 4 and r.download_bytes() == SIZE + CHUNK
            assert len(r.log.select("GET", r"^/downloads/[^/]+$")) == 1  # its first chunk came with its description
        else:
            assert one_byte_differs(data, source)
            assert len(gets) == 3 and r.download_bytes() == SIZE


async def test_flipped_download_byte_of_a_one_chunk_file(tmp_path: Path, extensions: bool) -> None:
    """A file of one chunk is checked against the whole-file checksum (no chunk map is fetched for
    it). Extensions: caught and fetched again. Hosted Flow: no checksum, not detected."""
    async with rig(tmp_path, extensions) as r:
        source, data_id = await upload_direct(r.server, tmp_path, size=CHUNK - 100)
        flip = r.proxy.add(FlipBodyByte(DOWNLOAD, direction="down", at=1000))
        report, data = await download_through(r, tmp_path, data_id)
        assert flip.hits == 1
        done(report)
        if extensions:
            assert data == source and r.download_bytes() == 2 * (CHUNK - 100)
        else:
            assert one_byte_differs(data, source)


# --- connections cut mid-stream -------------------------------------------------------------


async def test_upload_connection_cut_mid_chunk(tmp_path: Path, extensions: bool) -> None:
    async with rig(tmp_path, extensions) as r:
        cut = r.proxy.add(ResetMidBody(Match("POST", UPLOAD_PATH, nth=4), direction="up", at_fraction=0.5))
        source, data_id = await upload_through(r, tmp_path)
        assert cut.hits == 1
        assert (await stored(r.server, {"reads.bin": data_id}))["reads.bin"] == source
        assert r.upload_bytes() <= SIZE + CHUNK + len(r.log.select("POST", UPLOAD_PATH)) * ENVELOPE


async def test_download_connection_cut_mid_stream(tmp_path: Path, extensions: bool) -> None:
    async with rig(tmp_path, extensions) as r:
        source, data_id = await upload_direct(r.server, tmp_path)
        cut = r.proxy.add(ResetMidBody(DOWNLOAD, direction="down", at_bytes=3 * CHUNK + 999, times=2))
        report, data = await download_through(r, tmp_path, data_id, segments=1)
        done(report)
        assert cut.hits == 2
        assert data == source
        assert_download_resumed(r, cuts=2)


# --- a stall longer than the read timeout ----------------------------------------------------


async def test_download_stall_longer_than_read_timeout(tmp_path: Path, extensions: bool) -> None:
    async with rig(tmp_path, extensions) as r:
        source, data_id = await upload_direct(r.server, tmp_path)
        # A 2 s read timeout against an 8 s stall: only the stall trips it, not a slow moment of a loaded machine.
        stall = r.proxy.add(StallMidBody(DOWNLOAD, direction="down", at_bytes=3 * CHUNK + 5, seconds=8.0))
        report, data = await download_through(r, tmp_path, data_id, segments=1, read_timeout=2.0)
        done(report)
        assert stall.hits == 1 and report.retries >= 1
        assert data == source
        assert_download_resumed(r, cuts=1)


async def test_upload_answer_stalled_longer_than_read_timeout(tmp_path: Path, extensions: bool) -> None:
    """The chunk arrived, its answer hangs: the engine times out, sends again, and the
    server's 400 (it already holds those bytes) tells it to go on: nothing stored twice."""
    async with rig(tmp_path, extensions) as r:
        stall = r.proxy.add(
            StallMidBody(Match("POST", UPLOAD_PATH, nth=5), direction="down", at_fraction=0.5, seconds=8.0)
        )
        source, data_id = await upload_through(r, tmp_path, read_timeout=2.0)  # only the stall trips it
        assert stall.hits == 1
        assert (await stored(r.server, {"reads.bin": data_id}))["reads.bin"] == source
        assert r.upload_bytes() <= SIZE + CHUNK + len(r.log.select("POST", UPLOAD_PATH)) * ENVELOPE


# --- lost and truncated answers ----------------------------------------------------------------


@pytest.mark.parametrize("nth", [1, 2, 7, 13], ids=["first", "second", "middle", "last"])
async def test_lost_upload_answer(tmp_path: Path, extensions: bool, nth: int) -> None:
    """The server stored the chunk, the answer never came: realign from the server's word, never
    duplicate or skip a byte. (A lost answer to the *first* chunk cannot be recovered by any client:
    the data id was in it. The engine starts a new upload; the orphan stays partial on the server.)"""
    async with rig(tmp_path, extensions) as r:
        lost = r.proxy.add(DropResponse(Match("POST", UPLOAD_PATH, nth=nth)))
        source, data_id = await upload_through(r, tmp_path)
        assert lost.hits == 1
        assert (await stored(r.server, {"reads.bin": data_id}))["reads.bin"] == source
        assert r.upload_bytes() <= SIZE + CHUNK + len(r.log.select("POST", UPLOAD_PATH)) * ENVELOPE


@pytest.mark.parametrize("nth", [2, 3], ids=["middle", "last"])
async def test_lost_answer_to_a_large_chunk(tmp_path: Path, extensions: bool, nth: int) -> None:
    """With chunks larger than the socket buffers the server refuses the resent chunk (400, it
    holds those bytes already) before the engine has sent it all. Regression: for the last chunk
    the engine then realigned, resent it, was refused early again... for ever."""
    async with rig(tmp_path, extensions) as r:
        lost = r.proxy.add(DropResponse(Match("POST", UPLOAD_PATH, nth=nth)))
        size = 5 * MiB + 5
        source, data_id = await upload_through(r, tmp_path, size=size, chunk_size=2 * MiB)
        assert lost.hits == 1
        assert (await stored(r.server, {"reads.bin": data_id}))["reads.bin"] == source
        assert r.upload_bytes() <= size + 2 * MiB + len(r.log.select("POST", UPLOAD_PATH)) * ENVELOPE


async def test_server_that_lost_the_partial_upload_asks_to_start_again(tmp_path: Path, extensions: bool) -> None:
    """The local server answers 409 when its partial file is shorter than it recorded (a disk that
    lied about a sync): the engine starts the upload again instead of failing the file."""
    async with rig(tmp_path, extensions) as r:
        lost = r.proxy.add(
            RespondWith.json(
                409,
                {"error": "the server lost bytes of this upload; start it again"},
                match=Match("POST", UPLOAD_PATH, nth=4),
            )
        )
        events: list[Any] = []
        source, data_id = await upload_through(r, tmp_path, events=events)
        assert lost.hits == 1
        assert (await stored(r.server, {"reads.bin": data_id}))["reads.bin"] == source
        assert any("starting it again" in getattr(e, "message", "") for e in events)


async def test_truncated_answers(tmp_path: Path, extensions: bool) -> None:
    async with rig(tmp_path, extensions) as r:
        cut_up = r.proxy.add(TruncateResponse(Match("POST", UPLOAD_PATH, nth=6), fraction=0.5))
        cut_info = r.proxy.add(TruncateResponse("GET ^/data/", fraction=0.5))
        source, data_id = await upload_through(r, tmp_path)
        assert cut_up.hits == 1
        assert (await stored(r.server, {"reads.bin": data_id}))["reads.bin"] == source
        cut_down = r.proxy.add(TruncateResponse(DOWNLOAD, keep_bytes=4 * CHUNK + 3, times=2))
        r.log.clear()
        report, data = await download_through(r, tmp_path, data_id, segments=1)
        done(report)
        assert cut_down.hits == 2 and cut_info.hits == 1
        assert data == source
        assert_download_resumed(r, cuts=2)


# --- error pages and rate-limit storms -------------------------------------------------------------


async def test_bursts_of_html_502_and_503(tmp_path: Path, extensions: bool) -> None:
    async with rig(tmp_path, extensions) as r:
        r.proxy.add(RespondWith.html_error(502, match=Match("POST", UPLOAD_PATH, nth=2), times=3))
        r.proxy.add(RespondWith.html_error(503, match=Match("POST", UPLOAD_PATH, nth=9), times=2))
        events: list[Any] = []
        source, data_id = await upload_through(r, tmp_path, events=events)
        assert sum(isinstance(e, Retrying) for e in events) >= 5
        assert (await stored(r.server, {"reads.bin": data_id}))["reads.bin"] == source
        # Each error page cost the one chunk it answered, no more.
        assert r.upload_bytes() <= SIZE + 5 * CHUNK + len(r.log.select("POST", UPLOAD_PATH)) * ENVELOPE
        r.log.clear()
        r.proxy.add(RespondWith.html_error(503, match=DOWNLOAD, times=3))
        r.proxy.add(RespondWith.html_error(502, match="GET ^/data/", times=2))
        report, data = await download_through(r, tmp_path, data_id)
        done(report)
        assert data == source
        assert r.download_bytes() == SIZE  # error pages carry no file bytes: nothing fetched twice


async def test_429_storm_with_retry_after(tmp_path: Path, extensions: bool) -> None:
    async with rig(tmp_path, extensions) as r:
        storm = r.proxy.add(RespondWith.rate_limited(retry_after=1, match=Match("POST", UPLOAD_PATH, nth=3), times=3))
        events: list[Any] = []
        source, data_id = await upload_through(r, tmp_path, events=events)
        assert storm.hits == 3
        assert any(isinstance(e, Retrying | Waiting) for e in events)
        assert (await stored(r.server, {"reads.bin": data_id}))["reads.bin"] == source
        assert r.upload_bytes() <= SIZE + 3 * CHUNK + len(r.log.select("POST", UPLOAD_PATH)) * ENVELOPE
        r.log.clear()
        r.proxy.add(RespondWith.rate_limited(retry_after=1, match=DOWNLOAD, times=2))
        report, data = await download_through(r, tmp_path, data_id)
        done(report)
        assert data == source
        assert r.download_bytes() == SIZE  # a 429 carries no file bytes: nothing fetched twice


async def test_a_retried_stream_request_does_not_stop_a_slow_span_being_cut(tmp_path: Path, extensions: bool) -> None:
    """A span is cut past twice what a request waits for its answer (a round trip and the queue):
    a Retry-After sat out before one stream's answer is not that wait. One stream's first request
    is answered 503 (Retry-After: 1); when the other is done, the late stream's span still needs
    about a second at 1 MiB/s a connection: worth cutting (the back half on a connection of its own)."""
    half = 1024 * KiB
    async with rig(tmp_path, extensions) as r:
        source, data_id = await upload_direct(r.server, tmp_path, size=2 * half)
        r.proxy.add(Bandwidth(half, "down", per_connection=True))
        busy = RespondWith(503, "busy", [("Retry-After", "1")], match=Match("GET", STREAM))
        r.proxy.add(busy)
        report, data = await download_through(r, tmp_path, data_id, segments=2, min_segment_size=half)
        done(report)
        assert data == source and busy.hits == 1
        ranges = [dict(e.request_headers)["Range"] for e in r.log.select("GET", STREAM)]
        starts = [int(asked.split("=")[1].split("-")[0]) for asked in ranges]
        assert set(starts) - {0, half}, starts  # a request from a cut: the late span's back half

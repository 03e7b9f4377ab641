"""[ext] The chunk layout on ``GET /downloads/<id>``: a large file's streams start before its chunk map.

Through the recording fault proxy in front of the real server: the map is
held back and the streams are seen to carry the file meanwhile; a describing
answer that lies about the layout cannot get a chunk recorded against the
wrong checksum (the download starts again from the map and ends exact); the
layout is not on the named route nor without extensions. The pure parts
(the server's layout of a map, the client's reading of the headers) are
tested directly. Resuming after ``kill -9`` with the layout stated:
tests/cli/test_cli_crash.py (``test_kill9_mid_download_then_the_same_command``,
extensions: by id, 1 MiB chunks stated, the map fetched first when resuming).
"""

from __future__ import annotations

import re
from pathlib import Path

import aiohttp
import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from flowxfer.journal import ChunkState, Journal
from flowxfer.protocol import HEADER_CHUNK_COUNT, HEADER_CHUNK_SIZE, checksum_of
from flowxfer.server._downloads import LAYOUT_FROM, uniform_chunk_size
from flowxfer.transfer import TransferReport
from flowxfer.transfer._by_id import MAX_STATED_CHUNKS, chunk_layout
from flowxfer.transfer._chunks import plan_chunks
from flowxfer.transfer.events import BytesMoved
from tests.support.faultproxy import FlipBodyByte, Match, RespondWith, StallMidBody
from tests.support.rig import Rig, rig
from tests.support.server import login

from .conftest import StopAfter
from .test_faults import BLOCK, CHUNK, SIZE, STREAM, done, download_through, engine, upload_direct

KiB = 1024

DESCRIBE = r"^/downloads/[^/]+$"
MAP = r"^/data/[^/]+/chunks$"


async def test_the_streams_carry_the_file_while_the_map_is_on_its_way(tmp_path: Path) -> None:
    """The map's answer is held for a second: streams' answers arrive meanwhile."""
    async with rig(tmp_path, True) as r:
        source, data_id = await upload_direct(r.server, tmp_path)
        r.proxy.add(StallMidBody(Match("GET", MAP), at_bytes=10, seconds=1.0, then="resume"))
        report, data = await download_through(r, tmp_path, data_id, segments=3)
        done(report)
        assert data == source
        (describe,) = r.log.select("GET", DESCRIBE)
        headers = dict(describe.response_headers)
        assert (headers[HEADER_CHUNK_SIZE], headers[HEADER_CHUNK_COUNT]) == (str(CHUNK), str(-(-SIZE // CHUNK)))
        order = [e.path for e in r.log.entries if e.path != "/login"]
        streams = [i for i, e in enumerate(r.log.entries) if e.method == "GET" and re.match(STREAM, e.path)]
        (map_at,) = [i for i, e in enumerate(r.log.entries) if e.path.endswith("/chunks")]
        # A stream's answer came whole before the map's (each waits for the map to record a chunk).
        assert streams and min(streams) < map_at, order
        assert "chunk map" in (report.verified or "")


async def test_a_stream_not_the_map_takes_the_connection_the_description_left(tmp_path: Path) -> None:
    """The one idle connection goes to bytes: the map (needed only when a chunk completes) opens its own."""
    async with rig(tmp_path, True) as r:
        source, data_id = await upload_direct(r.server, tmp_path)
        report, data = await download_through(r, tmp_path, data_id, segments=3)
        done(report)
        assert data == source
        (describe,) = r.log.select("GET", DESCRIBE)
        (chunk_map,) = r.log.select("GET", MAP)
        streams = r.log.select("GET", STREAM)
        assert chunk_map.connection != describe.connection
        assert describe.connection in {e.connection for e in streams}


async def test_without_the_layout_the_map_comes_first(tmp_path: Path) -> None:
    """The describing answer without the layout (a server before it): the map before any stream."""
    async with rig(tmp_path, True) as r:
        source, data_id = await upload_direct(r.server, tmp_path)
        head = source[:CHUNK]
        r.proxy.add(RespondWith(206, head, _describing_headers(source, CHUNK), match=Match("GET", DESCRIBE)))
        report, data = await download_through(r, tmp_path, data_id, segments=3)
        done(report)
        assert data == source
        (map_at,) = [i for i, e in enumerate(r.log.entries) if e.path.endswith("/chunks")]
        streams = [i for i, e in enumerate(r.log.entries) if e.method == "GET" and re.match(STREAM, e.path)]
        assert streams and min(streams) > map_at


def _describing_headers(source: bytes, limit: int, layout: tuple[int, int] | None = None) -> dict[str, str]:
    """What the server's describing answer says of ``source``, ``layout`` (chunk size, count) as given."""
    checksum = checksum_of(source)
    headers = {
        "Content-Disposition": "attachment; filename=\"reads.bin\"; filename*=UTF-8''reads.bin",
        "Content-Range": f"bytes 0-{limit - 1}/{len(source)}",
        "ETag": f'"{checksum.rpartition(":")[2]}"',
        "X-Checksum": checksum,
    }
    if layout is not None:
        headers.update({HEADER_CHUNK_SIZE: str(layout[0]), HEADER_CHUNK_COUNT: str(layout[1])})
    return headers


@pytest.mark.parametrize("unit", [CHUNK // 2, 2 * CHUNK, 3 * CHUNK + 7], ids=["half", "double", "odd"])
async def test_a_layout_that_lies_is_found_out_before_any_chunk_is_recorded(tmp_path: Path, unit: int) -> None:
    """A stated chunk size other than the map's (its count consistent, so it is believed): the map
    disagrees, the download starts again planned from the map, and ends with exactly the bytes."""
    async with rig(tmp_path, True) as r:
        source, data_id = await upload_direct(r.server, tmp_path)
        layout = (unit, -(-len(source) // unit))
        lie = RespondWith(206, source[:CHUNK], _describing_headers(source, CHUNK, layout), match=Match("GET", DESCRIBE))
        r.proxy.add(lie)
        events: list[object] = []
        report, data = await download_through(r, tmp_path, data_id, segments=3, events=events)
        done(report)
        assert lie.hits == 1 and data == source
        assert "chunk map" in (report.verified or "")
        assert any("differs from the layout" in str(getattr(e, "message", "")) for e in events), events
        assert len(r.log.select("GET", MAP)) == 1


async def test_a_layout_that_does_not_add_up_is_ignored(tmp_path: Path) -> None:
    """A chunk count that does not fit the size and chunk size: no layout, the map first, as before."""
    async with rig(tmp_path, True) as r:
        source, data_id = await upload_direct(r.server, tmp_path)
        layout = (CHUNK // 2, 3)
        r.proxy.add(
            RespondWith(206, source[:CHUNK], _describing_headers(source, CHUNK, layout), match=Match("GET", DESCRIBE))
        )
        events: list[object] = []
        report, data = await download_through(r, tmp_path, data_id, segments=3, events=events)
        done(report)
        assert data == source
        assert not [e for e in events if "layout" in str(getattr(e, "message", ""))]
        (map_at,) = [i for i, e in enumerate(r.log.entries) if e.path.endswith("/chunks")]
        streams = [i for i, e in enumerate(r.log.entries) if e.method == "GET" and re.match(STREAM, e.path)]
        assert streams and min(streams) > map_at


@pytest.mark.parametrize("extensions", [True, False], ids=["extensions", "no-extensions"])
async def test_only_the_by_id_route_states_the_layout_and_only_with_extensions(
    tmp_path: Path, extensions: bool
) -> None:
    async with rig(tmp_path, extensions) as r:
        _, data_id = await upload_direct(r.server, tmp_path)
        async with aiohttp.ClientSession() as session:
            token = await login(session, r.server.base_url, "alice", r.server.users["alice"])
            auth = {"Authorization": f"Bearer {token}", "Range": "bytes=0-99"}
            seen = {}
            for path in (f"/downloads/{data_id}", f"/downloads/{data_id}/reads.bin"):
                async with session.get(r.server.base_url + path, headers=auth) as answer:
                    seen[path] = (answer.status, answer.headers.get(HEADER_CHUNK_SIZE))
            whole = {}  # an answer that brings the whole file has no streams after it: no layout
            for asked in (None, f"bytes=0-{SIZE - 1}", f"bytes=0-{SIZE + 5}", "bytes=0-", f"bytes=0-{SIZE - 2}"):
                headers = {"Authorization": f"Bearer {token}", **({"Range": asked} if asked else {})}
                async with session.get(f"{r.server.base_url}/downloads/{data_id}", headers=headers) as answer:
                    whole[asked] = answer.headers.get(HEADER_CHUNK_SIZE)
    named = f"/downloads/{data_id}/reads.bin"
    if extensions:
        assert seen == {f"/downloads/{data_id}": (206, str(CHUNK)), named: (206, None)}
        assert list(whole.values()) == [None, None, None, None, str(CHUNK)], whole
    else:
        assert seen[f"/downloads/{data_id}"][0] == 404 and seen[named] == (206, None)


@given(size=st.integers(1, 10**6), unit=st.integers(1000, 2 * 10**6))
def test_a_planned_map_is_told_in_two_numbers_and_read_back(size: int, unit: int) -> None:
    chunks = [(c.offset, c.size) for c in plan_chunks(size, unit)]
    stated = uniform_chunk_size(size, chunks)
    assert stated == (unit if len(chunks) > 1 else size)
    headers = {HEADER_CHUNK_SIZE: str(stated), HEADER_CHUNK_COUNT: str(len(chunks))}
    assert chunk_layout(headers, size) == stated
    assert [(c.offset, c.size) for c in plan_chunks(size, stated)] == chunks


@pytest.mark.parametrize(
    ("size", "chunks"),
    [
        (10, [(0, 4), (4, 3), (7, 3)]),  # a short chunk before the last
        (10, [(0, 4), (4, 4)]),  # does not cover the file
        (10, [(0, 4), (4, 4), (8, 4)]),  # past the end
        (10, [(0, 4), (5, 4), (9, 1)]),  # a gap
        (0, [(0, 0)]),  # empty
        (10, []),
    ],
)
def test_an_irregular_map_is_not_told(size: int, chunks: list[tuple[int, int]]) -> None:
    assert uniform_chunk_size(size, chunks) is None


@pytest.mark.parametrize(
    ("size", "unit", "count"),
    [(10, "4", "2"), (10, "0", "1"), (10, "-4", "3"), (10, "4", ""), (10, "x", "3"), (0, "4", "0"), (10, "٤", "3")],
)
def test_headers_that_do_not_add_up_state_no_layout(size: int, unit: str, count: str) -> None:
    assert chunk_layout({HEADER_CHUNK_SIZE: unit, HEADER_CHUNK_COUNT: count}, size) is None


def test_a_layout_of_more_chunks_than_a_plan_may_have_is_ignored() -> None:
    """A chunk per byte of a 10 GiB file adds up, but planning it would exhaust memory: no layout."""
    size = 10 * 1024**3
    assert chunk_layout({HEADER_CHUNK_SIZE: "1", HEADER_CHUNK_COUNT: str(size)}, size) is None
    most = -(-size // MAX_STATED_CHUNKS)
    assert chunk_layout({HEADER_CHUNK_SIZE: str(most), HEADER_CHUNK_COUNT: str(-(-size // most))}, size) == most


async def test_a_byte_damaged_before_the_map_came_is_caught_by_the_map(tmp_path: Path) -> None:
    """A stream's byte flipped while the map is held back: its chunk waits for the map's checksum,
    fails it, and is fetched again; nothing is recorded unchecked."""
    async with rig(tmp_path, True) as r:
        source, data_id = await upload_direct(r.server, tmp_path)
        r.proxy.add(StallMidBody(Match("GET", MAP), at_bytes=10, seconds=1.0, then="resume"))
        flip = r.proxy.add(FlipBodyByte(Match("GET", STREAM), direction="down", at=1000))
        events: list[object] = []
        report, data = await download_through(r, tmp_path, data_id, segments=3, events=events)
        done(report)
        assert flip.hits == 1 and data == source
        assert any("1 chunk(s) failed verification" in str(getattr(e, "message", "")) for e in events), events


async def test_a_stream_goes_on_receiving_while_its_chunks_wait_for_the_map(tmp_path: Path) -> None:
    """One stream, the map's answer held for a second and a half: the stream does not stop at its
    first complete chunk, every byte is on disk before the map has come, and only then are the
    chunks checked and recorded (the file ends verified by the map)."""
    async with rig(tmp_path, True) as r:
        source, data_id = await upload_direct(r.server, tmp_path)
        r.proxy.add(StallMidBody(Match("GET", MAP), at_bytes=10, seconds=1.5, then="resume"))
        moved: list[int] = []
        result: list[tuple[TransferReport, bytes]] = []

        async def download() -> None:
            result.append(await download_through(r, tmp_path, data_id, segments=1, progress=moved_bytes))

        def moved_bytes(event: object) -> None:
            if isinstance(event, BytesMoved):
                moved.append(event.nbytes)

        async with anyio.create_task_group() as group:
            group.start_soon(download)
            for _ in range(3000):  # the map is logged once its answer has gone whole
                if r.log.select("GET", MAP):
                    break
                await anyio.sleep(0.01)
            at_map = sum(moved)
        ((report, data),) = result
        done(report)
        assert data == source and "chunk map" in (report.verified or "")
        assert at_map == len(source), (at_map, len(source))


async def test_one_stream_whose_head_completes_a_chunk_still_gets_the_map(tmp_path: Path) -> None:
    """One stream, and the describing answer's bytes are a whole chunk: that chunk waits for the map
    before the stream asks for anything, so waiting must itself send for the map."""
    async with rig(tmp_path, True) as r:
        source, data_id = await upload_direct(r.server, tmp_path)
        with anyio.fail_after(30):
            report, data = await download_through(r, tmp_path, data_id, segments=1)
        done(report)
        assert data == source and len(r.log.select("GET", MAP)) == 1


async def _download_with_the_map_held(r: Rig, tmp_path: Path, data_id: str) -> tuple[TransferReport, bytes, int]:
    """Download on 3 streams with the chunk map's answer held for a second mid-body.

    Returns the report, the bytes, and how many connections the proxy had seen when the map was
    asked for: a test compares it with the count at the end (none opened after the map).
    """
    r.proxy.add(StallMidBody(Match("GET", MAP), at_bytes=10, seconds=1.0, then="resume"))
    opened: list[int] = []
    result: list[tuple[TransferReport, bytes]] = []

    async def download() -> None:
        result.append(await download_through(r, tmp_path, data_id, segments=3))

    async with anyio.create_task_group() as group:
        group.start_soon(download)
        while not r.log.select("GET", MAP):
            opened.append(r.proxy.stats.connections)
            await anyio.sleep(0.01)
    ((report, data),) = result
    return report, data, opened[-1]


async def test_the_streams_connections_open_while_the_map_they_wait_for_is_held(tmp_path: Path) -> None:
    """Without a layout the map comes first: the streams' connections (all but the map's) are open
    before it has come, so the streams after it start without a handshake each."""
    async with rig(tmp_path, True) as r:
        source, data_id = await upload_direct(r.server, tmp_path)
        r.proxy.add(RespondWith(206, source[:CHUNK], _describing_headers(source, CHUNK), match=Match("GET", DESCRIBE)))
        report, data, before_map = await _download_with_the_map_held(r, tmp_path, data_id)
        done(report)
        assert data == source
        # Streams 2 and 3's connections were there while the map was held; none opened after it.
        assert r.proxy.stats.connections == before_map, (before_map, r.proxy.stats.connections)


async def test_a_resumed_download_opens_its_streams_connections_while_the_map_comes_first(tmp_path: Path) -> None:
    """Stopped mid-file, then resumed: the map comes first (it says which bytes on disk are good),
    and the connections for the rest's streams open meanwhile; the file ends exact."""
    size = 40 * CHUNK + 99
    async with rig(tmp_path, True) as r:
        source, data_id = await upload_direct(r.server, tmp_path, size=size)
        stopper = StopAfter(8 * CHUNK)
        async with engine(r, tmp_path / "home", progress=stopper, segments=3, grace_period=5) as fx:
            stopper.fx = fx
            first = await fx.download([data_id], output_dir=tmp_path / "out")
        assert first.status == "interrupted"
        r.log.clear()
        report, data, before_map = await _download_with_the_map_held(r, tmp_path, data_id)
        done(report)
        assert data == source and report.resumed
        assert r.proxy.stats.connections == before_map, (before_map, r.proxy.stats.connections)


async def test_a_copy_changed_before_the_map_came_then_a_lying_layout_still_ends_exact(tmp_path: Path) -> None:
    """The streams find the copy changed (another ETag) while the map is held back, so the first try
    ends with the layout still unchecked; the second try finds it out: one more start, no traceback."""
    async with rig(tmp_path, True) as r:
        source, data_id = await upload_direct(r.server, tmp_path)
        layout = (2 * CHUNK, -(-len(source) // (2 * CHUNK)))
        headers = _describing_headers(source, CHUNK, layout)
        headers["ETag"] = '"an-older-copy"'
        lie = r.proxy.add(RespondWith(206, source[:CHUNK], headers, match=Match("GET", DESCRIBE)))
        r.proxy.add(StallMidBody(Match("GET", MAP), at_bytes=10, seconds=1.0, then="resume"))
        events: list[object] = []
        report, data = await download_through(r, tmp_path, data_id, segments=3, events=events)
        done(report)
        assert lie.hits == 1 and data == source
        messages = [str(getattr(e, "message", "")) for e in events]
        assert any("copy changed" in m for m in messages) and any("differs from the layout" in m for m in messages)


# --- the describing answer goes on as the first stream --------------------------------------

#: A first segment four chunks long: the first id's describing answer asks for that much, reads its
#: head (one chunk) and leaves the rest to the file's first stream.
FIRST = 4 * CHUNK


def _starts(r: Rig) -> list[int]:
    """Where each ranged stream request began (the describing answers not counted)."""
    return sorted(
        int(dict(e.request_headers)["Range"].split("=")[1].split("-")[0]) for e in r.log.select("GET", STREAM)
    )


async def test_the_describing_answer_goes_on_as_the_first_stream(tmp_path: Path) -> None:
    """The first stream reads on past the head where the describing answer goes, asking only
    from the first segment's end: no request for the bytes right after the head."""
    async with rig(tmp_path, True) as r:
        source, data_id = await upload_direct(r.server, tmp_path)
        report, data = await download_through(r, tmp_path, data_id, segments=2, min_segment_size=FIRST)
        done(report)
        assert data == source and "chunk map" in (report.verified or "")
        (describe,) = r.log.select("GET", DESCRIBE)
        assert dict(describe.request_headers)["Range"] == f"bytes=0-{FIRST - 1}"
        assert describe.response_bytes == FIRST
        starts = _starts(r)
        assert CHUNK not in starts, starts  # the head's end: those bytes came in the describing answer
        # Nothing asked for below what the describing answer brought; past it, the first segment's rest
        # and the second (an idle stream may later split a busy one's range: a start further on).
        assert min(starts) == FIRST and len(starts) >= 2, starts


async def test_a_file_no_longer_than_the_first_segment_comes_whole_in_its_describing_answer(tmp_path: Path) -> None:
    """One request brings the file (the map beside it checks its chunks): no stream asks for anything."""
    async with rig(tmp_path, True) as r:
        source, data_id = await upload_direct(r.server, tmp_path, size=3 * CHUNK + 17)
        report, data = await download_through(r, tmp_path, data_id, segments=3, min_segment_size=FIRST)
        done(report)
        assert data == source and "chunk map" in (report.verified or "")
        assert _starts(r) == [] and len(r.log.select("GET", DESCRIBE)) == 1


async def test_a_describing_answer_cut_after_its_head_is_resumed_by_a_ranged_stream(tmp_path: Path) -> None:
    """The held rest cut mid-body: the first stream asks again from the last block on disk, the
    bytes end exact and every chunk checks."""
    async with rig(tmp_path, True) as r:
        source, data_id = await upload_direct(r.server, tmp_path)
        cut = r.proxy.add(StallMidBody(Match("GET", DESCRIBE), at_bytes=CHUNK + 40 * KiB, seconds=0.1, then="reset"))
        report, data = await download_through(r, tmp_path, data_id, segments=3, min_segment_size=FIRST)
        done(report)
        assert cut.hits == 1 and data == source and "chunk map" in (report.verified or "")
        # Resumed at a block boundary of what was on disk (an idle stream may split the rest later).
        resumed = [s for s in _starts(r) if CHUNK < s < FIRST]
        assert resumed and resumed[0] % BLOCK == 0 and resumed[0] <= CHUNK + 40 * KiB, _starts(r)


async def test_a_byte_damaged_in_the_held_rest_is_caught_by_the_map(tmp_path: Path) -> None:
    """A byte flipped after the head, in what the first stream reads on: its chunk fails the map's
    checksum and is fetched again from the named route; nothing recorded unchecked."""
    async with rig(tmp_path, True) as r:
        source, data_id = await upload_direct(r.server, tmp_path)
        flip = r.proxy.add(FlipBodyByte(Match("GET", DESCRIBE), direction="down", at=2 * CHUNK + 5))
        events: list[object] = []
        report, data = await download_through(r, tmp_path, data_id, segments=3, min_segment_size=FIRST, events=events)
        done(report)
        assert flip.hits == 1 and data == source
        assert any("1 chunk(s) failed verification" in str(getattr(e, "message", "")) for e in events), events


async def test_stopped_while_the_first_stream_reads_the_held_rest_then_resumed(tmp_path: Path) -> None:
    """Stopped mid-file with the describing answer's rest being read, then the same download again:
    it resumes (the map first), a new describing answer's rest is let go where no stream needs it,
    and the file ends exact."""
    size = 40 * CHUNK + 99
    async with rig(tmp_path, True) as r:
        source, data_id = await upload_direct(r.server, tmp_path, size=size)
        stopper = StopAfter(2 * CHUNK)
        config = {"segments": 3, "min_segment_size": FIRST, "grace_period": 5}
        async with engine(r, tmp_path / "home", progress=stopper, **config) as fx:
            stopper.fx = fx
            first = await fx.download([data_id], output_dir=tmp_path / "out")
        assert first.status == "interrupted"
        assert dict(r.log.select("GET", DESCRIBE)[0].request_headers)["Range"] == f"bytes=0-{FIRST - 1}"
        with anyio.fail_after(60):
            report, data = await download_through(r, tmp_path, data_id, **config)
        done(report)
        assert data == source and report.resumed


async def test_a_whole_answer_states_the_layout_when_the_file_is_larger_than_a_describing_head(
    tmp_path: Path,
) -> None:
    """Above 1 MiB an answer with the whole file is a first stream's (a map to check it comes beside
    it): it states the layout; at 1 MiB or less (a small file's whole download) it does not."""
    async with rig(tmp_path, True) as r:
        seen = {}
        for size in (LAYOUT_FROM, LAYOUT_FROM + 5):
            _, data_id = await upload_direct(r.server, tmp_path / str(size), size=size)
            async with aiohttp.ClientSession() as session:
                token = await login(session, r.server.base_url, "alice", r.server.users["alice"])
                for asked in (None, f"bytes=0-{2 * size}", "bytes=0-99"):
                    headers = {"Authorization": f"Bearer {token}", **({"Range": asked} if asked else {})}
                    async with session.get(f"{r.server.base_url}/downloads/{data_id}", headers=headers) as answer:
                        seen[size, asked is None, asked == "bytes=0-99"] = answer.headers.get(HEADER_CHUNK_SIZE)
    small, large = LAYOUT_FROM, LAYOUT_FROM + 5
    assert seen == {
        (small, True, False): None,
        (small, False, False): None,
        (small, False, True): str(CHUNK),
        (large, True, False): str(CHUNK),
        (large, False, False): str(CHUNK),
        (large, False, True): str(CHUNK),
    }, seen


async def test_a_stop_while_the_map_is_on_its_way_records_the_chunks_received(tmp_path: Path) -> None:
    """Stopped at a chunk boundary while the map's answer is held: the chunks complete on disk wait
    for the map (within the grace period) and are checked and recorded, as a stop promises
    (everything received acknowledged), not left for the next run to read and hash again."""
    async with rig(tmp_path, True) as r:
        source, data_id = await upload_direct(r.server, tmp_path)
        r.proxy.add(StallMidBody(Match("GET", MAP), at_bytes=10, seconds=1.5, then="resume"))
        stopper = StopAfter(4 * CHUNK)
        config = {"segments": 1, "bwlimit": "1M", "grace_period": 5}
        async with engine(r, tmp_path / "home", progress=stopper, **config) as fx:
            stopper.fx = fx
            first = await fx.download([data_id], output_dir=tmp_path / "out")
        assert first.status == "interrupted"
        assert len(r.log.select("GET", MAP)) == 1  # the map came (after the stop)
        journal = Journal.open(tmp_path / "home" / "journal.db")
        try:
            (row,) = journal.iter_files(first.transfer_id)
            acked = sorted(c.offset for c in journal.chunks(row.id) if c.state is ChunkState.ACKED)
        finally:
            journal.close()
        part = (tmp_path / "out" / "reads.bin.part").read_bytes()
        assert acked == [i * CHUNK for i in range(len(acked))] and len(acked) >= 4, acked
        assert row.bytes_done == len(acked) * CHUNK
        assert part[: row.bytes_done] == source[: row.bytes_done]

"""The WAN path (benchmarks/wanpath.py): its scheduling arithmetic, then the proxy on real sockets.

The socket tests assert only what the physics of the modelled path
guarantees on any machine, however loaded: lower bounds on elapsed time
(bytes / rate, round trips) and exact bytes. Upper bounds would measure the
shared test machine, not the proxy.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from benchmarks.wanpath import (
    LinkTrace,
    MiB,
    PathSpec,
    WanPath,
    first_departure,
    schedule,
    spec_from_args,
    stats_writer,
    trace_writer,
)

#: How early asyncio may run a timer, plus the path's own allowance (TIMER_SLACK): lower bounds give this much.
EARLY = 0.01

rates = st.one_of(st.none(), st.floats(min_value=1e3, max_value=1e10))
specs = st.builds(
    PathSpec,
    rtt=st.floats(min_value=0, max_value=1),
    link_rate=rates,
    connection_rate=rates,
    window=st.integers(min_value=1, max_value=64 * MiB),
)
sizes = st.integers(min_value=1, max_value=4 * MiB)


def slowest(spec: PathSpec) -> float | None:
    """The rate one connection alone can reach: the lower of the link and its cap."""
    limits = [r for r in (spec.link_rate, spec.connection_rate) if r]
    return min(limits) if limits else None


# ----------------------------------------------------------------------------
# The arithmetic


@given(spec=specs, size=sizes, now=st.floats(min_value=0, max_value=1e6))
def test_a_block_on_an_idle_path_takes_its_serialisation_and_half_the_round_trip(
    spec: PathSpec, size: int, now: float
) -> None:
    slot = schedule(now, size, 0.0, 0.0, spec)
    rate = slowest(spec)
    expected = now + (size / rate if rate else 0.0) + spec.rtt / 2
    assert slot.arrives_at == pytest.approx(expected, rel=1e-12, abs=1e-9)
    assert slot.acked_at == pytest.approx(slot.arrives_at + spec.rtt / 2, rel=1e-12, abs=1e-9)


@given(spec=specs, blocks=st.lists(st.tuples(sizes, st.floats(min_value=0, max_value=0.5)), min_size=1, max_size=40))
def test_one_connection_never_beats_its_rate_and_keeps_its_order(
    spec: PathSpec, blocks: list[tuple[int, float]]
) -> None:
    now = first = 10.0
    link = connection = 0.0
    arrivals = []
    sent = 0
    for size, gap in blocks:
        now += gap
        slot = schedule(now, size, link, connection, spec)
        link, connection = slot.link_free_at, slot.connection_free_at
        arrivals.append(slot.arrives_at)
        sent += size
        rate = slowest(spec)
        # Everything sent so far has crossed the path no sooner than rate and delay allow.
        assert slot.arrives_at >= first + (sent / rate if rate else 0.0) + spec.rtt / 2 - 1e-6
        assert slot.arrives_at >= now + spec.rtt / 2
    assert arrivals == sorted(arrivals)


@given(
    spec=specs,
    blocks=st.lists(
        st.tuples(st.integers(0, 7), sizes, st.floats(min_value=0, max_value=0.01)), min_size=1, max_size=60
    ),
)
def test_connections_share_one_link_and_each_keeps_its_own_cap(
    spec: PathSpec, blocks: list[tuple[int, int, float]]
) -> None:
    now = first = 5.0
    link = 0.0
    connections: dict[int, float] = {}
    total = 0
    per_connection: dict[int, int] = {}
    for number, size, gap in blocks:
        now += gap
        slot = schedule(now, size, link, connections.get(number, 0.0), spec)
        link = slot.link_free_at
        connections[number] = slot.connection_free_at
        total += size
        per_connection[number] = per_connection.get(number, 0) + size
        if spec.link_rate:
            assert link >= first + total / spec.link_rate - 1e-6
        if spec.connection_rate:
            assert slot.arrives_at >= first + per_connection[number] / spec.connection_rate + spec.rtt / 2 - 1e-6


def test_capped_connections_share_the_link_each_at_its_cap() -> None:
    spec = PathSpec(rtt=0.0, link_rate=100.0, connection_rate=25.0)
    one = schedule(0.0, 100, 0.0, 0.0, spec)
    other = schedule(0.0, 100, one.link_free_at, 0.0, spec)
    assert one.arrives_at == pytest.approx(4.0)  # 100 bytes at its own 25/s
    assert other.arrives_at == pytest.approx(4.0)  # the link carries both at once: 50/s of its 100/s


def test_a_connection_with_a_backlog_does_not_hold_the_link_for_the_others() -> None:
    spec = PathSpec(rtt=0.0, link_rate=100.0, connection_rate=50.0)
    # One connection is 10 s behind (a deep queue at its cap, or its handshake still under way)...
    behind = schedule(0.0, 100, 0.0, 10.0, spec)
    assert behind.arrives_at == pytest.approx(12.0)
    # ... and another, idle, goes now: the link's clock moved by 1 s, not to 12 s.
    other = schedule(0.0, 100, behind.link_free_at, 0.0, spec)
    assert behind.link_free_at == pytest.approx(1.0)
    assert other.arrives_at == pytest.approx(2.0)


@given(connected=st.floats(min_value=0, max_value=1e6), rtt=st.floats(min_value=0, max_value=1))
def test_a_new_connection_waits_one_round_trip_for_its_handshake(connected: float, rtt: float) -> None:
    assert first_departure(connected, PathSpec(rtt=rtt)) == connected + rtt
    assert first_departure(connected, PathSpec(rtt=rtt, handshake=False)) == connected


@pytest.mark.parametrize("bad", [{"rtt": -0.1}, {"link_rate": 0}, {"connection_rate": -5.0}, {"window": 0}])
def test_a_path_that_cannot_exist_is_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        PathSpec(**bad)  # type: ignore[arg-type]


def test_figures_as_people_quote_them() -> None:
    spec = spec_from_args(50, 1000, 250, 16 * MiB)
    assert (spec.rtt, spec.link_rate, spec.connection_rate) == (0.05, 125e6, 31.25e6)
    assert spec.describe() == "50 ms RTT, 1000 Mbit/s link, 16 MiB window, 250 Mbit/s per connection"
    assert spec_from_args(150, 0, 0, MiB).describe() == "150 ms RTT, unlimited link, 1 MiB window"


# ----------------------------------------------------------------------------
# The proxy on real sockets, in front of a tiny line protocol of this file's own:
# "GET n\n" answers n bytes; "PUT n\n" + n bytes answers their sha256; then the server closes.


def pattern(n: int) -> bytes:
    block = bytes((i * 7) % 251 for i in range(251))
    return (block * (n // 251 + 1))[:n]


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    verb, count = (await reader.readline()).split()
    if verb == b"GET":
        writer.write(pattern(int(count)))
    else:
        digest = hashlib.sha256()
        left = int(count)
        while left:
            piece = await reader.read(min(left, 1 << 20))
            if not piece:
                break
            digest.update(piece)
            left -= len(piece)
        writer.write(digest.hexdigest().encode())
    await writer.drain()
    writer.close()


@pytest.fixture
async def upstream() -> AsyncIterator[int]:
    server = await asyncio.start_server(_serve, "127.0.0.1", 0)
    yield int(server.sockets[0].getsockname()[1])
    server.close()


async def get(port: int, n: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {n}\n".encode())
    data = await reader.read(-1)
    writer.close()
    return data


async def put(port: int, data: bytes) -> str:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"PUT {len(data)}\n".encode())
    writer.write(data)
    await writer.drain()
    writer.write_eof()
    answer = await reader.read(-1)
    writer.close()
    return answer.decode()


async def test_a_download_takes_the_round_trips_and_the_link_time_and_arrives_intact(upstream: int) -> None:
    n = 3 * MiB
    spec = PathSpec(rtt=0.05, link_rate=20e6)
    async with WanPath(spec, upstream) as path:
        started = time.monotonic()
        data = await get(path.port, n)
        elapsed = time.monotonic() - started
    assert data == pattern(n)
    # Handshake, request and answer: two round trips; then n bytes at 20 MB/s.
    assert elapsed >= 2 * spec.rtt + n / 20e6 - EARLY
    assert path.stats.delivered["down"] == n and path.stats.connections == 1


async def test_an_upload_is_paced_by_the_window_as_tcp_would_be(upstream: int) -> None:
    n = 4 * MiB
    spec = PathSpec(rtt=0.1, link_rate=None, window=256 * 1024)
    async with WanPath(spec, upstream) as path:
        started = time.monotonic()
        answer = await put(path.port, pattern(n))
        elapsed = time.monotonic() - started
    assert answer == hashlib.sha256(pattern(n)).hexdigest()
    # At most a window plus one read (256 KiB) is unacknowledged at once, and an
    # acknowledgement takes a round trip: no faster than (window + read) per rtt.
    assert elapsed >= n / (spec.window + 256 * 1024) * spec.rtt - EARLY


async def test_connections_share_the_link_but_not_their_caps(upstream: int) -> None:
    n = 2 * MiB
    shared = PathSpec(rtt=0.02, link_rate=10e6)
    async with WanPath(shared, upstream) as path:
        started = time.monotonic()
        results = await asyncio.gather(get(path.port, n), get(path.port, n))
        elapsed = time.monotonic() - started
    assert results == [pattern(n)] * 2
    assert elapsed >= 2 * n / 10e6 - EARLY  # one link: the two take turns

    capped = PathSpec(rtt=0.02, link_rate=None, connection_rate=10e6)
    async with WanPath(capped, upstream) as path:
        started = time.monotonic()
        answers = await asyncio.gather(put(path.port, pattern(n)), put(path.port, pattern(n)))
        elapsed = time.monotonic() - started
    assert answers == [hashlib.sha256(pattern(n)).hexdigest()] * 2
    assert elapsed >= n / 10e6 - EARLY  # each alone at its cap


async def test_a_sender_whose_receiver_stops_reading_is_held_to_its_window() -> None:
    stuck = asyncio.Event()

    async def never_reads(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await stuck.wait()
        writer.close()

    server = await asyncio.start_server(never_reads, "127.0.0.1", 0, limit=1024)
    spec = PathSpec(rtt=0.01, link_rate=None, window=MiB)
    async with WanPath(spec, server.sockets[0].getsockname()[1]) as path:
        _, writer = await asyncio.open_connection("127.0.0.1", path.port)
        block = bytes(MiB)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(3):
                for _ in range(256):  # far more than the window and every buffer on the way
                    writer.write(block)
                    await writer.drain()
        # What the proxy took from the sender: its window and one read, plus what the
        # receiver's kernel and the proxy's write buffer hold -- not the 256 MiB offered.
        assert path.stats.received["up"] - path.stats.delivered["up"] <= spec.window + 256 * 1024
        assert path.stats.received["up"] < 64 * MiB
        writer.close()
    stuck.set()
    server.close()


async def test_a_client_of_a_dead_upstream_is_cut_off() -> None:
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = int(probe.sockets[0].getsockname()[1])
    probe.close()
    await probe.wait_closed()
    async with WanPath(PathSpec(rtt=0.01), port) as path:
        reader, writer = await asyncio.open_connection("127.0.0.1", path.port)
        writer.write(b"GET 10\n")
        async with asyncio.timeout(5):
            try:
                data = await reader.read(-1)
            except ConnectionResetError:
                data = b""
        assert data == b""
        writer.close()


async def test_the_stats_file_counts_each_connection_as_it_is_accepted(upstream: int, tmp_path: Path) -> None:
    """What bench_wan reads to count a tool's handshakes: one more per connection, none per request."""
    where = tmp_path / "stats.json"
    write = stats_writer(str(where))
    assert json.loads(where.read_text()) == {"connections": 0}
    async with WanPath(PathSpec(rtt=0.01, link_rate=None), upstream, on_accept=write) as path:
        await get(path.port, 10)
        assert json.loads(where.read_text()) == {"connections": 1}
        await asyncio.gather(get(path.port, 10), put(path.port, b"x" * 10))
    assert json.loads(where.read_text()) == {"connections": 3}


def test_a_link_trace_sums_its_idle_spells_and_each_connection_s_bytes() -> None:
    trace = LinkTrace()
    trace.connections[1] = [0.0, -1.0, 0.0, 0]
    trace.connections[2] = [0.0, -1.0, 0.0, 0]
    trace.block(1, 1.0, 2.0, 100)
    trace.block(2, 2.0, 2.5, 50)  # back to back: no idle spell
    trace.block(1, 2.501, 2.6, 10)  # 1 ms idle: summed, not listed
    trace.block(2, 3.6, 4.0, 40)  # 1 s idle
    assert trace.busy == pytest.approx(1.0 + 0.5 + 0.099 + 0.4)
    assert trace.idle == pytest.approx(0.001 + 1.0)
    assert trace.gaps == [(2.6, 3.6)]
    assert trace.connections == {1: [0.0, 1.0, 2.6, 110], 2: [0.0, 2.0, 4.0, 90]}


async def test_a_traced_path_writes_each_connection_s_bytes_and_the_link_s_idle_time(
    upstream: int, tmp_path: Path
) -> None:
    where = tmp_path / "trace.json"
    spec = PathSpec(rtt=0.02, link_rate=50e6)
    async with WanPath(spec, upstream, trace=LinkTrace(), on_close=trace_writer(str(where))) as path:
        assert await get(path.port, MiB) == pattern(MiB)
        await asyncio.sleep(0.1)  # idle between the two
        assert await get(path.port, 2 * MiB) == pattern(2 * MiB)
        await asyncio.sleep(0.05)
    written = json.loads(where.read_text())
    assert [c[3] for c in written["connections"].values()] == [MiB, 2 * MiB]
    assert written["busy"] == pytest.approx(3 * MiB / 50e6)
    # Between the two: the second's handshake and request, and the sleep: at least 0.1 + 2 round trips.
    assert written["idle"] >= 0.1 + 2 * spec.rtt - EARLY
    assert written["last"] - written["first"] == pytest.approx(written["busy"] + written["idle"])

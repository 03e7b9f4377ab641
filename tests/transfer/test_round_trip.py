"""The client's round trip, which the path model counts streams from: a new connection's handshake left out.

Through the WAN path emulator (``benchmarks/wanpath.py``) in front of the
real server, where a new connection's first byte leaves a round trip late
(its handshake). An answer on a new connection once counted whole, and the
counts chosen from it were those of a path twice as long (issue 20); it now
counts half (an upper bound still: the handshake took a round trip at
least), and an answer on a reused connection counts whole.
"""

from __future__ import annotations

from pathlib import Path

from benchmarks.wanpath import PathSpec, WanPath
from flowxfer.transfer._client import FlowClient
from tests.support.server import running_server

#: Long, so that the bound below leaves a loaded machine a quarter of a second.
RTT = 0.5
#: How early asyncio may run the path's timers (as in tests/wan/test_wanpath.py).
EARLY = 0.01


async def _capabilities(client: FlowClient) -> None:
    await client.json_request("GET", "/capabilities", rate_class=None, authenticated=False)


async def test_a_new_connection_s_handshake_is_not_taken_for_the_path(tmp_path: Path) -> None:
    async with running_server(tmp_path / "root") as srv:
        port = int(srv.base_url.rsplit(":", 1)[1])
        async with WanPath(PathSpec(rtt=RTT, link_rate=None), port) as path, FlowClient(path.url) as client:
            await _capabilities(client)  # a new connection: its handshake, then the request
            first = client.round_trip
            assert first is not None and RTT - EARLY <= first < 1.5 * RTT, "the handshake counted as path"
            await _capabilities(client)  # the same connection: the request alone, which replaces the guess
            assert client.round_trip_settled
            assert client.round_trip is not None and RTT - EARLY <= client.round_trip < 1.5 * RTT


async def test_warmed_connections_carry_the_requests_that_follow_without_a_handshake(tmp_path: Path) -> None:
    """``warm(3)`` while an answer is awaited (here: a round trip's sleep): three requests at once
    after it each take one round trip, not two (handshake, then request), and open nothing more."""
    import time

    import anyio

    async with running_server(tmp_path / "root") as srv:
        port = int(srv.base_url.rsplit(":", 1)[1])
        async with WanPath(PathSpec(rtt=RTT, link_rate=None), port) as path, FlowClient(path.url) as client:
            client.warm(3)
            await anyio.sleep(RTT)
            took: list[float] = []

            async def timed() -> None:
                start = time.monotonic()
                await _capabilities(client)
                took.append(time.monotonic() - start)

            async with anyio.create_task_group() as group:
                for _ in range(3):
                    group.start_soon(timed)
            assert len(took) == 3 and max(took) < 1.5 * RTT, took
            connector = client.session.connector
            assert connector is not None and len(connector._conns) == 1  # one origin's pool
            assert sum(len(v) for v in connector._conns.values()) == 3  # nothing opened beside the warmed


async def test_the_early_socket_s_first_answer_is_one_round_trip(tmp_path: Path) -> None:
    """The console script's early socket (``._preconnect``) finished its handshake before the first
    request: that request's answer took one round trip and counts whole, not half (at 50 ms, half
    once gave one large file 4 upload streams instead of 6), and needs no second answer to confirm it."""
    import anyio

    from flowxfer.transfer import _preconnect

    async with running_server(tmp_path / "root") as srv:
        port = int(srv.base_url.rsplit(":", 1)[1])
        async with WanPath(PathSpec(rtt=RTT, link_rate=None), port) as path:
            host, path_port = path.url.split("//", 1)[1].rsplit(":", 1)
            assert _preconnect.start(host, int(path_port))
            try:
                await anyio.sleep(1.5 * RTT)  # the handshake is over, as during the imports
                async with FlowClient(path.url) as client:
                    await _capabilities(client)  # on the early socket
                    assert client.round_trip is not None and RTT - EARLY <= client.round_trip < 1.5 * RTT
                    assert client.round_trip_settled
            finally:
                _preconnect.discard()


async def test_an_answer_on_an_open_connection_outweighs_half_a_new_one_s(tmp_path: Path) -> None:
    """Half a new connection's first answer is a guess: where its handshake cost nothing (here a proxy
    that delays only answers), it is half the path. The next answer, on the open connection, is
    the round trip itself and replaces it, though longer (the quicker of the two was kept once)."""
    from tests.support.faultproxy import FaultProxy, Latency

    async with running_server(tmp_path / "root") as srv:
        async with FaultProxy("127.0.0.1", int(srv.base_url.rsplit(":", 1)[1])) as proxy:
            proxy.add(Latency(RTT, direction="down"))
            async with FlowClient(proxy.url) as client:
                await _capabilities(client)  # a new connection, its handshake free: counted half
                guess = client.round_trip
                assert guess is not None and guess >= RTT / 2 - EARLY and not client.round_trip_settled
                await _capabilities(client)  # as long, on the open connection: the whole of it
                assert client.round_trip_settled
                assert client.round_trip is not None and client.round_trip >= 1.5 * guess


async def test_a_streamed_get_measures_the_round_trip_at_its_headers(tmp_path: Path) -> None:
    """A download by id with the capabilities remembered sends no JSON GET before its streams: its
    describing answer is a streamed (ranged) GET. Its headers measure the path like any GET's, or
    the streams would be counted for a path of no length (4 at 50 ms where the model gives 8)."""
    async with running_server(tmp_path / "root") as srv:
        port = int(srv.base_url.rsplit(":", 1)[1])
        async with WanPath(PathSpec(rtt=RTT, link_rate=None), port) as path, FlowClient(path.url) as client:
            await client.login("alice", "alice-pw-1")  # a POST: measures nothing
            assert client.round_trip is None
            async with client.stream("GET", "/capabilities", rate_class=None) as response:
                assert response.status == 200  # measured at the headers, before the body is read
                assert client.round_trip_settled
                assert client.round_trip is not None and RTT - EARLY <= client.round_trip < 1.5 * RTT

"""A WAN path on loopback: a userspace TCP proxy with delay, a shared link rate and TCP-like windows.

Why it exists: every benchmark before issue 20 ran on loopback, where a
round trip costs nothing. Labs reach Flow over 20-200 ms paths whose link
is shared by every connection and where, on long paths, a little loss caps
what one TCP connection carries. Kernel netem is not available on these
machines, so this proxy plays the path between a client and a server::

    python -m benchmarks.wanpath --upstream http://127.0.0.1:8000 --rtt-ms 50 --link-mbit 1000
    # prints "listening on http://127.0.0.1:PORT"; point the client at that

or in-process (tests)::

    async with WanPath(PathSpec(rtt=0.05, link_rate=125e6), upstream_port=port) as path:
        ...  # path.url

The model, per direction (up: client -> server, down: server -> client):

- every block read from one side becomes due at the far side ``rtt / 2``
  after it has been serialised, as a timestamp on the queued block (the
  proxy never sleeps per read, so delay costs no throughput);
- one link rate shared by every connection: blocks take turns on a virtual
  clock (a serialisation queue), as on one uplink;
- an optional per-connection rate cap: what loss does to one TCP connection
  on a long path (its congestion window stays small), while others still
  share the link;
- at most ``window`` bytes in flight per connection: a block counts from the
  moment it is read until its acknowledgement would be back (due time plus
  ``rtt / 2``); at the window the proxy stops reading that socket, so the
  sender feels back-pressure as from TCP, and one connection carries at most
  ``window / rtt``;
- a new connection's first byte leaves one round trip after the connect
  (the TCP handshake the loopback connect skipped).

Not modelled: slow start (every connection opens at its full window), TLS
round trips, random loss and retransmission timeouts (the per-connection
cap stands in for their average effect), queue limits at the bottleneck
(blocks wait on the virtual clock, however many).

The scheduling arithmetic is :func:`schedule`, a pure function tested
directly; the proxy is asyncio protocols with 256 KiB reads, so that it is
not the bottleneck at 1 Gbit/s (``bench_wan`` measures its ceiling with curl).
A fault proxy (``tests/support/faultproxy.py``) chained in front of this one
gives faults on a WAN path; its own ``Latency`` delays each segment before
the next is read, a stall model rather than a pipe.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

Direction = Literal["up", "down"]

MiB = 1024 * 1024

#: How early a timer may fire and its block still go: asyncio's timers run a
#: little before their time, and re-arming for a few microseconds would spin.
TIMER_SLACK = 0.0005

#: The proxy's write buffer towards each socket before it stops delivering and
#: waits for the receiver (its back-pressure); blocks not yet written stay queued.
WRITE_HIGH_WATER = 1 * MiB


@dataclass(frozen=True)
class PathSpec:
    """One path's figures; rates in bytes per second each way, None for unlimited.

    :param rtt: round-trip time in seconds; each direction delays by half.
    :param link_rate: the link, shared by all connections in one direction.
    :param connection_rate: each connection's own cap in one direction.
    :param window: bytes in flight per connection and direction.
    :param handshake: delay a connection's first byte by one round trip.
    """

    rtt: float = 0.05
    link_rate: float | None = 125e6
    connection_rate: float | None = None
    window: int = 16 * MiB
    handshake: bool = True

    def __post_init__(self) -> None:
        if self.rtt < 0:
            raise ValueError(f"rtt must be >= 0, not {self.rtt}")
        for name in ("link_rate", "connection_rate"):
            rate = getattr(self, name)
            if rate is not None and rate <= 0:
                raise ValueError(f"{name} must be > 0 or None, not {rate}")
        if self.window <= 0:
            raise ValueError(f"window must be > 0, not {self.window}")

    @property
    def one_way(self) -> float:
        return self.rtt / 2

    def describe(self) -> str:
        """``50 ms RTT, 1000 Mbit/s link, 16 MiB window`` (+ ``, 250 Mbit/s per connection``)."""
        parts = [
            f"{self.rtt * 1000:g} ms RTT",
            f"{self.link_rate * 8 / 1e6:g} Mbit/s link" if self.link_rate else "unlimited link",
            f"{self.window / MiB:g} MiB window",
        ]
        if self.connection_rate:
            parts.append(f"{self.connection_rate * 8 / 1e6:g} Mbit/s per connection")
        return ", ".join(parts)


@dataclass(frozen=True)
class Slot:
    """When one block occupies the path: the clocks after it, its arrival and its acknowledgement."""

    link_free_at: float
    connection_free_at: float
    arrives_at: float
    acked_at: float


def schedule(now: float, size: int, link_free_at: float, connection_free_at: float, spec: PathSpec) -> Slot:
    """Where a block of ``size`` bytes, read at ``now``, goes on the path.

    Two clocks bound it, each a serialisation queue: the link shared by all
    connections (``size / link_rate`` after the link's earlier blocks) and its
    own connection (``size / connection_rate`` after that connection's earlier
    blocks, and not before its handshake). It arrives ``rtt / 2`` after the
    later of the two, and its window space comes back ``rtt / 2`` after that.

    The two run side by side from ``now``, not one after the other: a
    connection with a backlog (its cap, its handshake) must not hold the link
    for the others until its turn comes, as a single start time for both
    would.
    """
    link_done = max(now, link_free_at) + (size / spec.link_rate if spec.link_rate else 0.0)
    connection_done = max(now, connection_free_at) + (size / spec.connection_rate if spec.connection_rate else 0.0)
    arrives = max(link_done, connection_done) + spec.one_way
    return Slot(link_done, connection_done, arrives, arrives + spec.one_way)


def first_departure(connected_at: float, spec: PathSpec) -> float:
    """The earliest a new connection's first byte may leave: after the handshake's round trip."""
    return connected_at + (spec.rtt if spec.handshake else 0.0)


@dataclass
class PathStats:
    """Connections accepted; bytes read from senders and written to receivers, by direction."""

    connections: int = 0
    received: dict[Direction, int] = field(default_factory=lambda: {"up": 0, "down": 0})
    delivered: dict[Direction, int] = field(default_factory=lambda: {"up": 0, "down": 0})


#: Idle spells of a link shorter than this are not listed one by one in a trace (only summed).
TRACE_MIN_GAP = 0.002
#: The direction a trace follows: downloads' (the default) or, with ``WANPATH_TRACE_DIRECTION=up``,
#: uploads' (``benchmarks.trace_upload --link``).
_TRACED: Direction = "up" if os.environ.get("WANPATH_TRACE_DIRECTION") == "up" else "down"


@dataclass
class LinkTrace:
    """Where a link (one direction) was busy and idle, and each connection's first and last byte on it.

    Kept when the path is asked to (``--trace-file``): a benchmark reads it to
    see where a transfer left the link idle (issue 20: the share of the link
    a download misses is exactly these idle spells between its first and last
    byte). Times are the link's own clock: when a block's serialisation
    began and ended, on ``loop.time()`` (``clock_offset`` turns them into
    wall-clock seconds).
    """

    clock_offset: float = 0.0
    first: float | None = None
    #: When the link's last block so far has been serialised.
    last: float = 0.0
    busy: float = 0.0
    idle: float = 0.0
    #: Idle spells of at least :data:`TRACE_MIN_GAP`: (start, end) on the link's clock.
    gaps: list[tuple[float, float]] = field(default_factory=list)
    #: Per connection (numbered by acceptance): [accepted, first byte's start, last byte's end, bytes].
    connections: dict[int, list[float]] = field(default_factory=dict)

    def block(self, connection: int, began: float, ended: float, size: int) -> None:
        """A block of ``connection`` occupied the link from ``began`` to ``ended``."""
        if self.first is None:
            self.first = began
        elif began > self.last:
            self.idle += began - self.last
            if began - self.last >= TRACE_MIN_GAP:
                self.gaps.append((self.last, began))
        self.busy += ended - began
        self.last = max(self.last, ended)
        entry = self.connections.get(connection)
        if entry is not None:
            if entry[1] < 0:
                entry[1] = began
            entry[2] = ended
            entry[3] += size

    def as_json(self) -> dict[str, object]:
        """Wall-clock seconds throughout."""
        offset = self.clock_offset
        return {
            "first": None if self.first is None else self.first + offset,
            "last": self.last + offset,
            "busy": self.busy,
            "idle": self.idle,
            "gaps": [(a + offset, b + offset) for a, b in self.gaps],
            "connections": {
                str(n): [accepted + offset, first + offset if first >= 0 else None, last + offset, size]
                for n, (accepted, first, last, size) in self.connections.items()
            },
        }


class _Pipe:
    """One direction of one connection: blocks read from ``source``, queued until due, written to ``sink``."""

    def __init__(self, path: WanPath, direction: Direction, free_at: float, number: int = 0) -> None:
        self.path = path
        self.direction = direction
        self.free_at = free_at
        self.number = number
        self.queue: deque[tuple[float, float, bytes]] = deque()
        self.in_flight = 0
        self.source: _Side | None = None
        self.sink: _Side | None = None
        self.reading_paused = False
        self.sink_paused = False
        self.ended = False  # the source sent EOF or went away: end the sink once the queue is empty
        self.abort = False  # ... and end it with a reset
        self.timer: asyncio.TimerHandle | None = None

    def feed(self, data: bytes) -> None:
        path = self.path
        loop = path.loop
        now = loop.time()
        slot = schedule(now, len(data), path.link_free_at[self.direction], self.free_at, path.spec)
        if path.trace is not None and self.direction == _TRACED and path.spec.link_rate:
            began = max(now, path.link_free_at[_TRACED])  # the link's clock: this block's serialisation starts
            path.trace.block(self.number, began, slot.link_free_at, len(data))
        path.link_free_at[self.direction] = slot.link_free_at
        self.free_at = slot.connection_free_at
        self.queue.append((slot.arrives_at, slot.acked_at, data))
        self.in_flight += len(data)
        path.stats.received[self.direction] += len(data)
        if self.in_flight >= path.spec.window and not self.reading_paused and self.source is not None:
            self.reading_paused = True
            self.source.pause()
        self._arm()

    def end(self, abort: bool) -> None:
        self.ended = True
        self.abort = self.abort or abort
        self._arm()

    def _arm(self) -> None:
        if self.timer is not None or self.sink_paused:
            return
        if self.queue:
            self.timer = self.path.loop.call_at(self.queue[0][0], self.deliver)
        elif self.ended and self.sink is not None:
            # The end travels the path too: a FIN or RST arrives rtt/2 after the last byte.
            self.timer = self.path.loop.call_later(self.path.spec.one_way, self._finish)

    def deliver(self) -> None:
        self.timer = None
        sink = self.sink
        if sink is None or sink.transport is None:
            self.queue.clear()
            return
        loop = self.path.loop
        now = loop.time() + TIMER_SLACK
        while self.queue and self.queue[0][0] <= now and not self.sink_paused:
            _, acked_at, data = self.queue.popleft()
            sink.transport.write(data)
            self.path.stats.delivered[self.direction] += len(data)
            # Delivered late (the receiver was slow): its acknowledgement is late too.
            loop.call_at(max(acked_at, loop.time() + self.path.spec.one_way), self._ack, len(data))
        if self.queue or not self.ended:
            self._arm()
        else:
            self._finish()

    def _finish(self) -> None:
        self.timer = None
        if self.sink is not None:
            self.sink.close_write(self.abort)

    def _ack(self, nbytes: int) -> None:
        self.in_flight -= nbytes
        if self.reading_paused and self.in_flight < self.path.spec.window and self.source is not None:
            self.reading_paused = False
            self.source.resume()

    def sink_blocked(self, blocked: bool) -> None:
        self.sink_paused = blocked
        if blocked and self.timer is not None:
            self.timer.cancel()
            self.timer = None
        elif not blocked:
            self.deliver()

    def drop(self) -> None:
        """The sink is gone: nothing more can be delivered."""
        self.queue.clear()
        self.sink = None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


class _Side(asyncio.Protocol):
    """One socket of a connection (the client's or the server's): reads feed ``outbound``, writes come from ``inbound``.

    The socket closes once both directions are done: its peer's end was passed
    on to it (``eof_sent``) and it ended its own (``read_done``).
    """

    def __init__(self, outbound: _Pipe, inbound: _Pipe) -> None:
        self.outbound = outbound
        self.inbound = inbound
        self.transport: asyncio.Transport | None = None
        self.lost = False
        self.read_done = False
        self.eof_sent = False
        self.want_paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        if self.want_paused:
            transport.pause_reading()

    def data_received(self, data: bytes) -> None:
        self.outbound.feed(data)

    def eof_received(self) -> bool:
        self.read_done = True
        self.outbound.end(abort=False)
        self._maybe_close()
        return True  # half-close: the other direction may still carry data

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.lost = self.read_done = True
        self.outbound.end(abort=exc is not None)
        self.inbound.drop()
        self.outbound.path.forget(self)

    def pause_writing(self) -> None:
        self.inbound.sink_blocked(True)

    def resume_writing(self) -> None:
        self.inbound.sink_blocked(False)

    def pause(self) -> None:
        self.want_paused = True
        if self.transport is not None:
            self.transport.pause_reading()

    def resume(self) -> None:
        self.want_paused = False
        if self.transport is not None:
            self.transport.resume_reading()

    def close_write(self, abort: bool) -> None:
        """The other side ended: pass its FIN (or RST) on."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if abort:
            transport.abort()
            return
        self.eof_sent = True
        if transport.can_write_eof():
            transport.write_eof()
        self._maybe_close()

    def _maybe_close(self) -> None:
        if self.read_done and self.eof_sent and self.transport is not None:
            self.transport.close()


class WanPath:
    """The proxy: listens on ``host:port`` (a free port by default) and relays to the upstream through the path.

    :param spec: the path's delay, rates and window.
    :param upstream_host: where every connection is relayed to.
    :param upstream_port: the upstream's port.
    :param on_accept: called with the stats after each connection is accepted (``--stats-file``).
    """

    def __init__(
        self,
        spec: PathSpec,
        upstream_port: int,
        upstream_host: str = "127.0.0.1",
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        on_accept: Callable[[PathStats], None] | None = None,
        trace: LinkTrace | None = None,
        on_close: Callable[[LinkTrace], None] | None = None,
    ) -> None:
        """:param trace: keep the downward link's busy and idle spells here (None: not traced).
        :param on_close: called with ``trace`` each time a client's connection is gone (``--trace-file``).
        """
        self.spec = spec
        self.on_accept = on_accept
        self.trace = trace
        self.on_close = on_close
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.host = host
        self._requested_port = port
        self._server: asyncio.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.link_free_at: dict[Direction, float] = {"up": 0.0, "down": 0.0}
        self.stats = PathStats()
        self._sides: set[_Side] = set()
        self._connecting: set[asyncio.Task[None]] = set()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None, "WanPath not started"
        return self._loop

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("WanPath not started")
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> WanPath:
        self._loop = asyncio.get_running_loop()
        if self.trace is not None:
            self.trace.clock_offset = time.time() - self._loop.time()
        self._server = await self._loop.create_server(self._accept, self.host, self._requested_port)
        return self

    async def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for side in list(self._sides):
            if side.transport is not None:
                side.transport.abort()
        if server is not None:
            await server.wait_closed()

    async def __aenter__(self) -> WanPath:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def forget(self, side: _Side) -> None:
        self._sides.discard(side)
        if self.trace is not None and self.on_close is not None and side.inbound.direction == "down":
            self.on_close(self.trace)  # a client's side: its connection is over

    def _accept(self) -> _Side:
        """A client connected: its side reads nothing until the upstream connection is open."""
        self.stats.connections += 1
        if self.on_accept is not None:
            self.on_accept(self.stats)
        now = self.loop.time()
        up = _Pipe(self, "up", first_departure(now, self.spec), self.stats.connections)
        down = _Pipe(self, "down", 0.0, self.stats.connections)
        if self.trace is not None:
            self.trace.connections[self.stats.connections] = [now, -1.0, 0.0, 0]
        client = _Side(up, down)
        client.want_paused = True
        up.source = client
        down.sink = client
        self._sides.add(client)
        task = self.loop.create_task(self._connect_upstream(client, up, down))
        self._connecting.add(task)  # held, or the loop might collect it half-way
        task.add_done_callback(self._connecting.discard)
        return client

    async def _connect_upstream(self, client: _Side, up: _Pipe, down: _Pipe) -> None:
        server = _Side(down, up)
        try:
            await self.loop.create_connection(lambda: server, self.upstream_host, self.upstream_port)
        except OSError:
            if client.transport is not None:
                client.transport.abort()
            return
        self._sides.add(server)
        down.source = server
        if client.lost:  # the client left while we connected
            up.sink = server
            up.end(abort=True)
            return
        up.sink = server
        client.resume()
        up.deliver()


def _parse_upstream(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname or not parts.port:
        raise argparse.ArgumentTypeError(f"upstream must look like http://127.0.0.1:8000, not {url!r}")
    return parts.hostname, parts.port


def spec_from_args(rtt_ms: float, link_mbit: float, connection_mbit: float, window: int) -> PathSpec:
    """A :class:`PathSpec` from the figures people quote (ms, Mbit/s; 0 for unlimited)."""
    return PathSpec(
        rtt=rtt_ms / 1000,
        link_rate=link_mbit * 1e6 / 8 if link_mbit else None,
        connection_rate=connection_mbit * 1e6 / 8 if connection_mbit else None,
        window=window,
    )


def trace_writer(where: str) -> Callable[[LinkTrace], None]:
    """Keep ``where`` holding the downward link's trace (:class:`LinkTrace`) as JSON, rewritten as connections end."""

    def write(trace: LinkTrace) -> None:
        with open(where, "w", encoding="utf-8") as handle:
            json.dump(trace.as_json(), handle)

    return write


def stats_writer(where: str) -> Callable[[PathStats], None]:
    """Keep ``where`` holding the connections accepted so far, as JSON: how a benchmark in another
    process counts the connections (each a handshake's round trip) a client opened through the path.
    """

    def write(stats: PathStats) -> None:
        with open(where, "w", encoding="utf-8") as handle:
            json.dump({"connections": stats.connections}, handle)

    write(PathStats())
    return write


async def _serve(
    spec: PathSpec, host: str, port: int, stats_file: str | None = None, trace_file: str | None = None
) -> None:
    on_accept = stats_writer(stats_file) if stats_file else None
    trace, on_close = (LinkTrace(), trace_writer(trace_file)) if trace_file else (None, None)
    async with WanPath(spec, port, host, on_accept=on_accept, trace=trace, on_close=on_close) as path:
        print(f"listening on {path.url}", flush=True)
        print(f"path: {spec.describe()}", file=sys.stderr, flush=True)
        await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A WAN path on loopback in front of an HTTP server.")
    parser.add_argument("--upstream", required=True, type=_parse_upstream, help="e.g. http://127.0.0.1:8000")
    parser.add_argument("--rtt-ms", type=float, default=50.0, help="round-trip time (default 50)")
    parser.add_argument(
        "--link-mbit",
        type=float,
        default=1000.0,
        help="link rate each way, shared by all connections; 0: unlimited (default 1000)",
    )
    parser.add_argument(
        "--connection-mbit", type=float, default=0.0, help="each connection's own cap each way; 0: none (default)"
    )
    parser.add_argument("--window-mib", type=float, default=16.0, help="bytes in flight per connection (default 16)")
    parser.add_argument("--stats-file", help="keep this file holding the connections accepted so far (JSON)")
    parser.add_argument("--trace-file", help="keep this file holding the downward link's busy and idle spells (JSON)")
    args = parser.parse_args(argv)
    host, port = args.upstream
    spec = spec_from_args(args.rtt_ms, args.link_mbit, args.connection_mbit, int(args.window_mib * MiB))
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(spec, host, port, args.stats_file, args.trace_file))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

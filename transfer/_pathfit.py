"""A transfer's counts fitted to its path: :mod:`._pathmodel` fed from the running client.

The model is pure; this is where its inputs come from (the client's measured
round trip, ``--bwlimit``'s rate, the rate an earlier transfer with the same
server carried, the server's chunk limit), where a transfer's own rate is
remembered for the next (:func:`remember_rate`), and where the choice is
written down: the transfer's journal state gets ``path``, so a run
says what it chose (``journal show``, ``--json`` readers of the journal).
"""

from __future__ import annotations

import weakref
from datetime import datetime
from typing import Any

import anyio

from . import _pathmodel
from ._client import FlowClient
from ._config import TransferConfig
from ._errors import FlowxferError
from ._runtime import TransferContext

#: Small GETs that measure the round trip: the first pays a new connection's handshake (counted half).
MEASURES = 2

#: One measure at a time per client: the files that start together wait for its answer instead of
#: each sending GETs of its own (16 files of 64 MiB sent 17 through a 50 ms path, and the first chunk
#: went 0.13-0.17 s after the plan instead of one round trip).
_MEASURING: weakref.WeakKeyDictionary[FlowClient, anyio.Lock] = weakref.WeakKeyDictionary()

#: The direction each kind of transfer moves its bytes in: the rate is remembered per direction
#: (a lab's uplink and downlink differ). Kinds not here move too little, or both ways.
DIRECTIONS = {"upload": "upload", "sync": "upload", "samples": "upload", "download": "download", "results": "download"}


def bwlimit(ctx: TransferContext) -> float | None:
    """``--bwlimit``'s rate now, bytes/s, or None."""
    bandwidth = ctx.client.limiter.bandwidth
    return bandwidth.rate_at(datetime.now()) if bandwidth is not None else None


def path_rate(ctx: TransferContext) -> float | None:
    """The rate connections are counted from, bytes/s (:func:`._pathmodel.path_rates`); None: assumed."""
    return _pathmodel.path_rates(bwlimit(ctx), ctx.measured_rate)[0]


async def recall_rate(ctx: TransferContext, kind: str) -> None:
    """Set ``ctx.measured_rate`` from what an earlier ``kind`` transfer with this server carried."""
    cache, direction = ctx.client.capability_cache, DIRECTIONS.get(kind)
    if cache is not None and direction is not None:
        ctx.measured_rate = await anyio.to_thread.run_sync(cache.rate, ctx.client.base_url, direction)


async def remember_rate(ctx: TransferContext, kind: str, seconds: float) -> None:
    """Remember the rate this transfer carried, when it was long enough to measure the path.

    Not under ``--bwlimit``: that measures the limit, not the path.
    """
    cache, direction = ctx.client.capability_cache, DIRECTIONS.get(kind)
    if cache is None or direction is None or ctx.client.limiter.bandwidth is not None:
        return
    rate = _pathmodel.measured_rate(ctx.counters.bytes_transferred, seconds, ctx.client.round_trip)
    if rate is not None:
        await anyio.to_thread.run_sync(cache.save_rate, ctx.client.base_url, direction, rate)


def chunk_size_follows_path(ctx: TransferContext) -> bool:
    """Whether the round trip can change :func:`path_chunk_size` (it cannot when the base is the ceiling already).

    Against our server the base is its limit (64 MiB by default), which is also
    the ceiling: the round trip would stretch the chunk past what the server takes.
    """
    if ctx.config.chunk_size is not None:
        return False
    return ctx.chunk_size() < (ctx.capabilities.max_chunk_size or _pathmodel.HOSTED_CHUNK_CEILING)


def path_chunk_size(ctx: TransferContext) -> int:
    """The upload chunk size: the one asked for; else the automatic one fitted to the path.

    The automatic size (the server's limit, or 16 MiB against hosted Flow) is
    stretched on a long fat path so that a chunk lasts several round trips,
    and shrunk on a slow link so that a resume repeats little
    (:func:`._pathmodel.chunk_size`), never past the server's limit.
    """
    base = ctx.chunk_size()
    if ctx.config.chunk_size is not None:
        return base
    ceiling = ctx.capabilities.max_chunk_size or _pathmodel.HOSTED_CHUNK_CEILING
    rate, sending = _pathmodel.path_rates(bwlimit(ctx), ctx.measured_rate)
    return _pathmodel.chunk_size(ctx.client.round_trip, rate, base, ceiling, sending)


async def measure_round_trip(ctx: TransferContext, *, again: bool = False) -> None:
    """Make sure the path's round trip is known before counts are chosen from it.

    A transfer may send no GET before its first file (the capabilities
    remembered, the token fresh): two small GETs then, two round trips against
    a transfer's seconds. Two, because the first on a new connection also
    waits for its handshake (TCP, and TLS against hosted Flow): through a
    50 ms path it took 112 ms. The client counts such an answer half (56 ms;
    whole, the counts chosen were those of a 100 ms path) until the second,
    on the open connection, measures the round trip itself.
    Nothing to measure when every count is pinned.

    A round trip known only from a new connection's first answer (half of
    it, a guess) gets one GET more, on the open connection: the console
    script's early handshake (:mod:`._preconnect`) is over before the first
    request, so half its answer made a 50 ms path look like a 28 ms one and
    one large file got 4 upload streams instead of 6 (on the lossy path,
    4 × 250 Mbit/s is the link itself: every chunk's answer idled it).

    Callers at once share one measure (the files a transfer starts together):
    a caller that waited for another's finds the round trip measured and
    sends nothing.

    :param again: one GET more even when the round trip is known: the answer
        that measured it may have been a new connection's first (once per
        transfer, where many files make the count matter).
    """
    early = ctx.early_measure
    if early is not None:
        # A GET sent beside the plan (a sync, :func:`warm_path`): wait for it rather than race it,
        # then one GET on the connection it opened, now that the plan no longer holds the CPU.
        await early.wait()
        if ctx.early_measure is early:
            ctx.early_measure = None
            again = True
    client = ctx.client
    if not needs_measure(ctx.config):
        return
    if client.round_trip is not None and client.round_trip_settled and not again:
        return
    lock = _MEASURING.setdefault(client, anyio.Lock())
    measured = lock.locked()
    async with lock:
        if measured and client.round_trip_settled:
            return  # measured by the caller this one waited for, on an open connection
        for sent in range(MEASURES if client.round_trip is None else 1):
            if sent and client.round_trip_settled:
                return  # the first answer was the round trip itself (the console script's early socket)
            if not await _measuring_get(client):
                return  # no measure: the short path's counts


def needs_measure(config: TransferConfig) -> bool:
    """Some count is chosen from the round trip (not every one pinned by a flag)."""
    return config.path_fitted or config.chunk_size is None


async def warm_path(config: TransferConfig, client: FlowClient) -> None:
    """Open the connection a later measure will use, beside local work (a sync's scan and plan).

    One GET when nothing has been sent yet (the capabilities remembered): the
    new connection's handshake and its half-counted answer leave the path
    before the plan ends. The measure itself stays after the plan
    (:func:`measure_round_trip`, one GET on the open connection): answers
    read while the plan's thread holds the CPU came 5-30 ms late through a
    50 ms path, and on a short path that would choose the counts of a long one.
    A failure is left to that measure, which meets it again.
    """
    if needs_measure(config) and client.round_trip is None:
        await _measuring_get(client)


async def _measuring_get(client: FlowClient) -> bool:
    """One small unauthenticated GET, whose answer the client times (:attr:`FlowClient.round_trip`); whether it came."""
    try:
        await client.json_request("GET", "/capabilities", rate_class=None, authenticated=False)
    except FlowxferError:
        return False
    return True


def fitted(ctx: TransferContext, files: int) -> dict[str, Any]:
    """What this path gets: files at once (for ``files`` waiting), streams, segments, chunk size."""
    round_trip, rate = ctx.client.round_trip, path_rate(ctx)
    config = ctx.config
    floor = config.concurrency_for(None)
    return {
        "round_trip_ms": None if round_trip is None else round(round_trip * 1000, 1),
        "rate": rate,
        "measured_rate": None if ctx.measured_rate is None else round(ctx.measured_rate),
        "concurrency": config.concurrency_for(round_trip) if files > floor else floor,
        "segments": config.segments_for(round_trip, rate),
        "upload_streams": config.upload_streams_for(round_trip, rate),
        "chunk_size": path_chunk_size(ctx),
    }

"""A transfer's counts fitted to its path: :mod:`._pathmodel` fed from the running client.

The model is pure; this is where its inputs come from (the client's measured
round trip, ``--bwlimit``'s rate, the server's chunk limit) and where the
choice is written down: the transfer's journal state gets ``path``, so a run
says what it chose (``journal show``, ``--json`` readers of the journal).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from . import _pathmodel
from ._errors import FlowxferError
from ._runtime import TransferContext

#: Small GETs that measure the round trip: the first pays a new connection's handshake.
MEASURES = 2


def path_rate(ctx: TransferContext) -> float | None:
    """The rate the path is known to carry at most, bytes/s: ``--bwlimit``'s now, else None (not known)."""
    bandwidth = ctx.client.limiter.bandwidth
    return bandwidth.rate_at(datetime.now()) if bandwidth is not None else None


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
    return _pathmodel.chunk_size(ctx.client.round_trip, path_rate(ctx), base, ceiling)


async def measure_round_trip(ctx: TransferContext, *, again: bool = False) -> None:
    """Make sure the path's round trip is known before counts are chosen from it.

    A transfer may send no GET before its first file (the capabilities
    remembered, the token fresh): two small GETs then, two round trips against
    a transfer's seconds. Two, because the first on a new connection also
    waits for its handshake (TCP, and TLS against hosted Flow): through a
    50 ms path it took 112 ms, and the counts chosen from it were those of a
    100 ms path. The client keeps the quicker. Nothing to measure when every
    count is pinned.

    :param again: one GET more even when the round trip is known: the answer
        that measured it may have been a new connection's first (once per
        transfer, where many files make the count matter).
    """
    if not (ctx.config.path_fitted or ctx.config.chunk_size is None):
        return
    if ctx.client.round_trip is not None and not again:
        return
    for _ in range(MEASURES if ctx.client.round_trip is None else 1):
        try:
            await ctx.client.json_request("GET", "/capabilities", rate_class=None, authenticated=False)
        except FlowxferError:
            return  # no measure: the short path's counts


def fitted(ctx: TransferContext, files: int) -> dict[str, Any]:
    """What this path gets: files at once (for ``files`` waiting), streams, segments, chunk size."""
    round_trip, rate = ctx.client.round_trip, path_rate(ctx)
    config = ctx.config
    floor = config.concurrency_for(None)
    return {
        "round_trip_ms": None if round_trip is None else round(round_trip * 1000, 1),
        "rate": rate,
        "concurrency": config.concurrency_for(round_trip) if files > floor else floor,
        "segments": config.segments_for(round_trip, rate),
        "upload_streams": config.upload_streams_for(round_trip, rate),
        "chunk_size": path_chunk_size(ctx),
    }

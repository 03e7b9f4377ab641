"""Defaults that fit the path: streams, files in flight and chunk size from its round trip and rate.

Pure arithmetic, no I/O: :class:`~._config.TransferConfig` turns a measured
round trip (``FlowClient.round_trip``) and a rate (``--bwlimit`` where one is
set, else :data:`ASSUMED_RATE`) into counts between its floors (``concurrency``,
``segments``, ``upload_streams``: what a short path gets) and its ceilings
(``max_*``: a flag sets both, so a flag always wins).

The one quantity behind all of them is the bandwidth-delay product, the
bytes that must be in flight for the link to stay busy::

    bdp = rate × round_trip

- **Connections per large file** (upload streams, download segments): one
  TCP connection on a long path keeps about :data:`CONNECTION_WINDOW` in
  flight (loss caps its window: roughly MSS / √loss), so a file needs
  ``⌈bdp / CONNECTION_WINDOW⌉`` connections.
- **Files in flight** (``concurrency``) for many small files: each file one
  by one costs at least one round trip, during which a slot moves nothing;
  the floor already keeps the client busy on a short path (16 was where more
  gained nothing on loopback), so a path adds ``⌊round_trip / FILE_COST⌋``
  slots, enough that the round trips overlap as the client's own work did.
- **Chunk size** (uploads, when none is asked for): in strict order each
  chunk ends with one round trip with its connection idle, so a chunk that
  takes :data:`CHUNK_ROUND_TRIPS` round trips to send loses at most
  1/:data:`CHUNK_ROUND_TRIPS` to it: ``chunk ≥ CHUNK_ROUND_TRIPS × bdp``. On a
  slow link (a known low rate) a chunk is at most :data:`RESUME_SECONDS` of
  sending, so a resume repeats little.

The rate comes from ``--bwlimit`` when one is set (a flag wins), else from
what an earlier transfer with the same server in the same direction carried
(:func:`measured_rate`, remembered by :mod:`._capcache`), else the assumption.
A measure only ever *raises* the rate the connections are counted from
(:func:`path_rates`): a transfer's rate is a lower bound on what the path
carries, and a low one cannot tell a slow link (where more connections only
share it) from a lossy one (where each connection is capped and fewer of them
would carry less, measure less next time, and spiral down: the 23% of the
issue). A low measure still shortens the chunk to :data:`RESUME_SECONDS` of
sending at it: at any faster real rate a chunk only takes less time, still
many round trips (it holds ≥ 1 MiB and ≥ 30 s × rate ≫ rate × round trip).
"""

from __future__ import annotations

import math

MiB = 1024 * 1024

#: The link assumed where no rate is known: the top of a lab's usual 100 Mbit/s - 1 Gbit/s,
#: so a long path gets enough streams for a fast link (more than a slow link needs only
#: share it; too few leave a fast one idle).
ASSUMED_RATE = 125_000_000.0
#: Bytes one connection keeps in flight on a long path with a little loss. The WAN
#: benchmark's lossy path (250 Mbit/s per connection at 50 ms) is 1.5 MiB; a clean one more.
CONNECTION_WINDOW = 1 * MiB
#: A download's ranged streams each stand idle a round trip between their requests and when
#: one takes over the rest of a slower one's range, so they need a quarter more than the bytes in
#: flight alone: 1 GiB through the 50 ms benchmark path (1 Gbit/s) took 9.67-9.71 s on 6 streams
#: (bdp / window) and 9.27-9.42 s on 8 (2026-12-07, alternating, a quiet machine).
DOWNLOAD_MARGIN = 1.25
#: The client's own time per small file when nothing waits on the network: a path adds one
#: file at once per this much round trip. 2,000 files of 64 KiB through a 50 ms path took
#: 3.9-4.3 s with 64 at once and 4.3-4.9 s with 41-42 (2 ms here), one to three rounds each
#: on a loaded machine; on loopback 16 at once are what the client's own work allows.
FILE_COST = 0.001
#: Round trips one upload chunk should last: the idle round trip after it costs at most 1/8.
CHUNK_ROUND_TRIPS = 8
#: The most seconds of sending one chunk holds on a link of known rate: what a resume repeats.
RESUME_SECONDS = 30.0
#: The largest automatic chunk against hosted Flow, which states no limit: our server's
#: default limit, under the 100 MB many proxies in front of web apps take; a 413 halves it.
HOSTED_CHUNK_CEILING = 64 * MiB
#: The smallest chunk the model picks (a chunk's request and the server's fsync weigh below it).
MIN_MODEL_CHUNK = 1 * MiB


#: Shortest transfer whose rate is trusted: below, slow start and the first round trips weigh.
MEASURE_SECONDS = 3.0
#: A trusted measure moved at least this many bandwidth-delay products: bytes sitting in
#: socket buffers, and a transfer made of round trips, weigh little against it.
MEASURE_BDPS = 32


def measured_rate(nbytes: int, seconds: float, round_trip: float | None) -> float | None:
    """The rate a transfer carried, bytes/s, when it is long enough to say something; else None.

    Shorter than :data:`MEASURE_SECONDS`, or fewer than :data:`MEASURE_BDPS`
    bandwidth-delay products at its own rate (``seconds < MEASURE_BDPS ×
    round_trip``): it is bounded by its round trips, not by the link.
    """
    if nbytes <= 0 or not seconds >= MEASURE_SECONDS:
        return None
    rate = nbytes / seconds
    if nbytes < MEASURE_BDPS * in_flight(round_trip, rate):
        return None
    return rate


def path_rates(limit: float | None, measured: float | None) -> tuple[float | None, float | None]:
    """``(rate, sending)``: the rate connections are counted from, and the one a chunk is sent at.

    ``--bwlimit`` (``limit``) is both, whatever was measured. Else a measure
    raises the rate above :data:`ASSUMED_RATE`, never lowers it (see the
    module's docstring), while a chunk is sized for the measured rate itself.
    None: nothing known, the model assumes.
    """
    if limit is not None and limit > 0:
        return limit, limit
    if measured is not None and measured > 0:
        return max(measured, ASSUMED_RATE), measured
    return None, None


def in_flight(round_trip: float | None, rate: float | None = None) -> float:
    """The bandwidth-delay product in bytes: 0 when the round trip is not measured."""
    if round_trip is None or round_trip <= 0:
        return 0.0
    return (rate if rate and rate > 0 else ASSUMED_RATE) * round_trip


def connections(round_trip: float | None, rate: float | None, floor: int, ceiling: int, margin: float = 1.0) -> int:
    """Connections one large file needs on this path, between ``floor`` and ``ceiling``.

    ``margin``: how many more than the bytes in flight alone ask for (:data:`DOWNLOAD_MARGIN`).
    """
    wanted = math.ceil(margin * in_flight(round_trip, rate) / CONNECTION_WINDOW)
    return _between(wanted, floor, ceiling)


def files_in_flight(round_trip: float | None, floor: int, ceiling: int) -> int:
    """Small files at once on this path: ``floor`` plus one per :data:`FILE_COST` of round trip."""
    extra = math.floor(round_trip / FILE_COST) if round_trip is not None and round_trip > 0 else 0
    return _between(floor + extra, floor, ceiling)


def chunk_size(
    round_trip: float | None, rate: float | None, base: int, ceiling: int, sending: float | None = None
) -> int:
    """Bytes per upload chunk: ``base`` stretched to :data:`CHUNK_ROUND_TRIPS` × bdp, capped at ``ceiling``.

    :param base: the size for a short path (today's constant: the server's limit or 16 MiB).
    :param ceiling: the largest chunk the server takes (its advertised limit, or hosted
        Flow's practical one); never exceeded.
    :param sending: the rate a chunk is sent at, when known (default ``rate``): a chunk
        holds at most :data:`RESUME_SECONDS` of it.
    """
    wanted = max(base, _whole_mib(CHUNK_ROUND_TRIPS * in_flight(round_trip, rate)))
    sending = rate if sending is None else sending
    if sending and sending > 0:
        wanted = min(wanted, max(MIN_MODEL_CHUNK, _whole_mib(sending * RESUME_SECONDS)))
    return max(1, min(ceiling, wanted))


def _between(wanted: int, floor: int, ceiling: int) -> int:
    """``wanted`` within ``floor`` .. ``ceiling`` (a ceiling below the floor: the floor)."""
    return max(floor, min(ceiling, wanted))


def _whole_mib(nbytes: float) -> int:
    return int(math.ceil(nbytes / MiB)) * MiB

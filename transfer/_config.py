"""Every bound of the engine, named and documented in one place."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from . import _pathmodel

MiB = 1024 * 1024

#: The official client's (flowbio): a flowbio user's habits and scripts carry over.
DEFAULT_BASE_URL = "https://app.flow.bio/api"

#: The counts a short path (loopback, a LAN) gets where none is given: the model's floors.
SHORT_PATH_CONCURRENCY = 16
SHORT_PATH_SEGMENTS = 4
SHORT_PATH_UPLOAD_STREAMS = 1

#: What the blocks of all uploads in flight together aim at (:meth:`TransferConfig.upload_block_for`).
UPLOAD_BUFFERS = 32 * MiB

#: Seconds between two polls of a running execution: hosted Flow asks for "≥ 60 seconds".
DEFAULT_POLL_INTERVAL = 60.0


@dataclass(frozen=True)
class TransferConfig:
    """How a transfer runs. Defaults suit a lab network and hosted Flow.

    Counts that fit the path: ``concurrency``, ``segments`` and
    ``upload_streams`` left at None are chosen by :mod:`._pathmodel` from the
    measured round trip and the rate (``bwlimit``'s where one is set): the
    ``SHORT_PATH_*`` values on loopback or a LAN, more on a longer path, up to
    ``max_concurrency``, ``max_segments`` and ``max_upload_streams``. A count
    given (a flag, or a value in code) is used whatever the path.

    Peak memory of the bytes in flight is bounded by ``byte_budget``. An
    upload request holds two blocks while it sends (the block read and the
    socket's copy of what it could not send at once), whatever the chunk
    size; the block shrinks as more files go at once (:meth:`upload_block_for`),
    so 16 large files hold 32 MiB, not 128. Downloads hold
    ``block_size`` per stream (``concurrency × segments`` of them, up to the
    budget). Uploads also hold the small files read ahead of their workers
    (``ReadAhead``): at most ``2 × concurrency`` files of up to 256 KiB.

    :param chunk_size: bytes per upload request, or None to choose: the
        server's advertised maximum up to 64 MiB, else 16 MiB, stretched on a
        long path to last several round trips (:func:`._pathmodel.chunk_size`),
        halved after a 413. Chunks are streamed from disk a block at a time, so a large chunk
        costs no memory; it saves requests and server-side fsyncs.
    :param download_chunk_size: the unit in which a download is hashed and
        journaled when the server gives no chunk map of its own.
    :param concurrency: files transferred at once, or None to fit the path. 16 on a
        short path: a small file's upload
        is mostly waiting for the server's flushes (and, across a network, for
        the round trip), so requests in flight are what a folder of small
        files needs. Against the local server 10,000 files of 16 KiB went
        11-14% faster with 8 than with 4, and ~20% faster again with 16 than
        with 8; 32 gained nothing over 16. A large file's bytes are bounded
        by ``byte_budget`` either way.
    :param segments: ranged streams per large download file, or None to fit the
        path (4 on a short one). Each costs one request against the download budget,
        hence few and long.
    :param max_segments: the most streams per large file a long path may raise
        the automatic ``segments`` to. Loss caps each TCP connection at roughly
        MSS / (RTT × √loss), so the longer the path the more connections one
        link needs; and with more streams, one that finishes early or stalls
        costs the link less.
    :param min_segment_size: a file is split into segments only when each
        segment would get at least this many bytes.
    :param block_size: bytes a download stream gathers before one write+hash
        in a worker thread.
    :param upload_block_size: the smallest block an upload reads, hashes and writes to
        its socket at a time, used when many files go at once (``block_size`` when few).
        1 MiB: 16 × 64 MiB on loopback peaked at 179 MiB RSS with 4 MiB blocks (the
        socket's buffer holds a copy of each block it cannot send at once) and at 80 MiB
        with 1 MiB, and went faster.
    :param byte_budget: the most bytes buffered in memory at once, across files.
    :param max_attempts: attempts per request before giving up (retryable errors).
    :param backoff_base: first retry waits up to this long (full jitter, doubling).
    :param backoff_cap: longest wait between two attempts (Retry-After may ask for more).
    :param connect_timeout: seconds to establish a connection.
    :param read_timeout: seconds without a byte from the server before a request is abandoned.
    :param max_wait: longest single wait for rate-limit budget, or for a journal database
        that went away, before stopping cleanly (None: wait as long as needed; a database
        outage longer than ``lease_stale_after`` still stops the run, see below).
    :param bwlimit: bandwidth timetable text (``10M``, ``"08:00,10M 19:00,off"``), None for no limit.
    :param journal_flush_interval: seconds between journal commits of progress.
    :param journal_flush_events: commit earlier when this many events are waiting.
    :param upload_streams: connections one large file's chunks share when the server
        offers parallel chunks [ext] (against hosted Flow a file's chunks go in order on
        one), or None to fit the path. 1 on a short path: on loopback or a LAN one connection fills the link, and
        more only add the server's work (1 GiB on loopback took 10.2 s on six against
        7.3 s on one, medians of five on a loaded machine).
    :param max_upload_streams: the most connections a long path may give one large
        file's parallel chunks. There one connection carries less than the link (loss
        caps its window): 1 GiB through a 50 ms path capped at 250 Mbit/s per connection
        moved at 24% of a 1 Gbit/s link on one, see RESULTS.md for six.
    :param file_restarts: how often a file that changes under us is restarted before it fails.
    :param grace_period: after a stop request, how long in-flight requests may take to finish.
    :param lease_stale_after: the lease TTL: a lease whose heartbeat is older than this is
        taken over by another process or host (``--lease-ttl``). A run that could not renew
        its own lease for this long stops working the transfer, since another host may now
        hold it.
    :param journal_timeout: how long one journal call waits for a database server (PostgreSQL)
        that does not answer before the run's outage handling takes over: that says so once,
        then retries with backoff for up to ``max_wait`` (see ``_journal_wait.py``). Long enough
        that a busy pool (every connection lent out) is not taken for an outage.
    :param heartbeat_interval: the longest time between two heartbeats; the runner beats
        at least four times per TTL (:attr:`heartbeat_period`), so a short TTL in tests, or
        one a database outage eats into, still leaves room for a few missed beats.
    """

    #: The smallest ``chunk_size``: each chunk is a request and a journal write, so 1-byte chunks
    #: crawl (270 B/s); 64 KiB is the least the tests' slow uploads use (the official client: 1 MB).
    MIN_CHUNK_SIZE: ClassVar[int] = 64 * 1024

    chunk_size: int | None = None
    download_chunk_size: int = 8 * MiB
    concurrency: int | None = None
    max_concurrency: int = 64
    segments: int | None = None
    max_segments: int = 8
    min_segment_size: int = 32 * MiB
    block_size: int = 4 * MiB
    upload_block_size: int = 1 * MiB
    byte_budget: int = 128 * MiB
    max_attempts: int = 8
    backoff_base: float = 0.5
    backoff_cap: float = 60.0
    connect_timeout: float = 15.0
    read_timeout: float = 60.0
    max_wait: float | None = None
    bwlimit: str | None = None
    journal_flush_interval: float = 0.1
    journal_flush_events: int = 512
    upload_streams: int | None = None
    max_upload_streams: int = 8
    file_restarts: int = 3
    grace_period: float = 10.0
    lease_stale_after: float = 60.0
    heartbeat_interval: float = 15.0
    journal_timeout: float = 5.0
    bucket_sync_interval: float = 2.0
    user_agent: str = field(default="flowxfer")

    def segments_for(self, round_trip: float | None, rate: float | None = None) -> int:
        """Ranged streams per large download on a path with this round trip (None: not measured yet)."""
        if self.segments is not None:
            return self.segments
        return _pathmodel.connections(
            round_trip, rate, SHORT_PATH_SEGMENTS, self.max_segments, _pathmodel.DOWNLOAD_MARGIN
        )

    def upload_streams_for(self, round_trip: float | None, rate: float | None = None) -> int:
        """Connections for one large file's parallel chunks on a path with this round trip."""
        if self.upload_streams is not None:
            return self.upload_streams
        return _pathmodel.connections(round_trip, rate, SHORT_PATH_UPLOAD_STREAMS, self.max_upload_streams)

    def concurrency_for(self, round_trip: float | None) -> int:
        """Files at once on a path with this round trip (None: the short path's)."""
        if self.concurrency is not None:
            return self.concurrency
        return _pathmodel.files_in_flight(round_trip, SHORT_PATH_CONCURRENCY, self.max_concurrency)

    @property
    def path_fitted(self) -> bool:
        """Whether any count follows the path (one left at None)."""
        return None in (self.concurrency, self.segments, self.upload_streams)

    @property
    def connection_limit(self) -> int:
        """Connections open at once, at most: every file's streams at the most files at once, and a few."""
        files = self.concurrency if self.concurrency is not None else self.max_concurrency
        streams = max(self.segments_for(1.0), self.upload_streams_for(1.0))
        return max(8, files * (streams + 1) + 4)

    def upload_block_for(self, uploads: int) -> int:
        """Bytes an upload reads and writes at a time while ``uploads`` files are being sent.

        Each request in flight holds two blocks (the block read and the socket's
        copy of what it could not send at once), so the blocks of all uploads
        together stay near :data:`UPLOAD_BUFFERS`: ``block_size`` (4 MiB) for up
        to four files, down to ``upload_block_size`` (1 MiB) for sixteen and
        more. Large blocks cost less CPU per byte (1 GiB on loopback: 2.7 s
        with 4 MiB blocks, 3.6 s with 1 MiB, one run each on a loaded machine).
        """
        share = UPLOAD_BUFFERS // max(1, 2 * uploads)
        return max(self.upload_block_size, min(self.block_size, share // MiB * MiB))

    def __post_init__(self) -> None:
        if self.chunk_size is not None and self.chunk_size < self.MIN_CHUNK_SIZE:
            raise ValueError(f"chunk_size must be at least {self.MIN_CHUNK_SIZE} bytes")
        if self.download_chunk_size <= 0 or self.block_size <= 0:
            raise ValueError("download_chunk_size and block_size must be positive")
        if any(count is not None and count < 1 for count in (self.concurrency, self.segments, self.upload_streams)):
            raise ValueError("concurrency, segments and upload_streams must be at least 1")
        floors = (SHORT_PATH_CONCURRENCY, SHORT_PATH_SEGMENTS, SHORT_PATH_UPLOAD_STREAMS)
        ceilings = (self.max_concurrency, self.max_segments, self.max_upload_streams)
        if any(most < least for most, least in zip(ceilings, floors, strict=True)):
            raise ValueError("max_concurrency, max_segments and max_upload_streams must be at least 16, 4 and 1")
        if self.upload_block_size <= 0:
            raise ValueError("upload_block_size must be positive")
        if self.byte_budget < 2 * max(self.block_size, self.upload_block_size):
            raise ValueError("byte_budget must hold at least one block")
        if self.lease_stale_after <= 0:
            raise ValueError("the lease TTL must be more than 0 seconds")

    @property
    def heartbeat_period(self) -> float:
        """Seconds between two lease heartbeats: ``heartbeat_interval``, or a quarter of the TTL if shorter."""
        return min(self.heartbeat_interval, self.lease_stale_after / 4)

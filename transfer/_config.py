"""Every bound of the engine, named and documented in one place."""

from __future__ import annotations

from dataclasses import dataclass, field

MiB = 1024 * 1024

#: The official client's (flowbio): a flowbio user's habits and scripts carry over.
DEFAULT_BASE_URL = "https://app.flow.bio/api"

#: A round trip from which a path counts as long (:attr:`TransferConfig.long_path_segments`): a
#: lab's WAN to hosted Flow is 20-200 ms; a campus network or loopback a few.
LONG_PATH = 0.03

#: Seconds between two polls of a running execution: hosted Flow asks for "≥ 60 seconds".
DEFAULT_POLL_INTERVAL = 60.0


@dataclass(frozen=True)
class TransferConfig:
    """How a transfer runs. Defaults suit a lab network and hosted Flow.

    Peak memory of the bytes in flight is bounded by ``byte_budget``; with
    the defaults it is in practice ``concurrency × block_size`` for uploads
    (chunks are streamed: 64 MiB) and ``concurrency × segments × block_size``
    for downloads of large files (the whole budget, 256 MiB, when 16 files of
    64 MiB or more download at once), plus socket buffers. Uploads also hold
    the small files read ahead of their workers (``ReadAhead``): at most
    ``2 × concurrency`` files of up to 256 KiB, 8 MiB at the defaults.

    :param chunk_size: bytes per upload request, or None to choose: the
        server's advertised maximum up to 64 MiB, else 16 MiB, halved after a
        413. Chunks are streamed from disk a block at a time, so a large chunk
        costs no memory; it saves requests and server-side fsyncs.
    :param download_chunk_size: the unit in which a download is hashed and
        journaled when the server gives no chunk map of its own.
    :param concurrency: files transferred at once. 16: a small file's upload
        is mostly waiting for the server's flushes (and, across a network, for
        the round trip), so requests in flight are what a folder of small
        files needs. Against the local server 10,000 files of 16 KiB went
        11-14% faster with 8 than with 4, and ~20% faster again with 16 than
        with 8; 32 gained nothing over 16. A large file's bytes are bounded
        by ``byte_budget`` either way.
    :param segments: ranged streams per large download file. Each costs one
        request against the download budget, hence few and long.
    :param long_path_segments: the streams per large file on a long path (a
        round trip of :data:`LONG_PATH` or more, as measured by the first API
        answers), or None to keep ``segments`` whatever the path. Loss caps
        each TCP connection at roughly MSS / (RTT × √loss), so the longer the
        path the more connections one link needs; and with more streams, one
        that finishes early or stalls costs the link less. An explicit
        ``--segments`` sets both.
    :param min_segment_size: a file is split into segments only when each
        segment would get at least this many bytes.
    :param block_size: bytes a download stream gathers before one write+hash
        in a worker thread.
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
        one), on a short path. 1: on loopback or a LAN one connection fills the link, and
        more only add the server's work (1 GiB on loopback took 10.2 s on six against
        7.3 s on one, medians of five on a loaded machine).
    :param long_path_upload_streams: the same on a path with a round trip of
        :data:`LONG_PATH` or more, or None to keep ``upload_streams`` whatever the path.
        There one connection carries less than the link (loss caps its window): 1 GiB
        through a 50 ms path capped at 250 Mbit/s per connection moved at 24% of a
        1 Gbit/s link on one, see RESULTS.md for six. Each request in flight holds a
        block of ``byte_budget``, which bounds them all. An explicit ``--streams`` sets both.
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

    chunk_size: int | None = None
    download_chunk_size: int = 8 * MiB
    concurrency: int = 16
    segments: int = 4
    long_path_segments: int | None = 8
    min_segment_size: int = 32 * MiB
    block_size: int = 4 * MiB
    byte_budget: int = 256 * MiB
    max_attempts: int = 8
    backoff_base: float = 0.5
    backoff_cap: float = 60.0
    connect_timeout: float = 15.0
    read_timeout: float = 60.0
    max_wait: float | None = None
    bwlimit: str | None = None
    journal_flush_interval: float = 0.1
    journal_flush_events: int = 512
    upload_streams: int = 1
    long_path_upload_streams: int | None = 6
    file_restarts: int = 3
    grace_period: float = 10.0
    lease_stale_after: float = 60.0
    heartbeat_interval: float = 15.0
    journal_timeout: float = 5.0
    bucket_sync_interval: float = 2.0
    user_agent: str = field(default="flowxfer")

    def segments_for(self, round_trip: float | None) -> int:
        """Ranged streams per large file on a path with this round trip (None: not measured yet)."""
        if self.long_path_segments is None or round_trip is None or round_trip < LONG_PATH:
            return self.segments
        return self.long_path_segments

    def upload_streams_for(self, round_trip: float | None) -> int:
        """Connections for one large file's chunks on a path with this round trip (None: not measured)."""
        if self.long_path_upload_streams is None or round_trip is None or round_trip < LONG_PATH:
            return self.upload_streams
        return self.long_path_upload_streams

    def __post_init__(self) -> None:
        if self.chunk_size is not None and self.chunk_size <= 0:
            raise ValueError("chunk_size must be positive")
        if self.download_chunk_size <= 0 or self.block_size <= 0:
            raise ValueError("download_chunk_size and block_size must be positive")
        if self.concurrency < 1 or self.segments < 1 or self.upload_streams < 1:
            raise ValueError("concurrency, segments and upload_streams must be at least 1")
        if self.long_path_segments is not None and self.long_path_segments < 1:
            raise ValueError("long_path_segments must be at least 1")
        if self.long_path_upload_streams is not None and self.long_path_upload_streams < 1:
            raise ValueError("long_path_upload_streams must be at least 1")
        if self.byte_budget < self.block_size:
            raise ValueError("byte_budget must hold at least one block")
        if self.lease_stale_after <= 0:
            raise ValueError("the lease TTL must be more than 0 seconds")

    @property
    def heartbeat_period(self) -> float:
        """Seconds between two lease heartbeats: ``heartbeat_interval``, or a quarter of the TTL if shorter."""
        return min(self.heartbeat_interval, self.lease_stale_after / 4)

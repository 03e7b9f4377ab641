"""The server's settings: one object holds every bound, so each is named once."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from flowxfer.protocol import RateLimit, parse_rate_limit_spec

MiB = 1024 * 1024
GiB = 1024 * MiB

#: Room for the multipart envelope and the small form fields around a chunk's
#: blob: a request may exceed ``max_chunk_size`` by this much before it is a 413.
MULTIPART_OVERHEAD = 64 * 1024
#: The same room for a sample's chunk, whose form carries its metadata too.
SAMPLE_MULTIPART_OVERHEAD = 1024 * 1024


@dataclass
class ServerConfig:
    """Everything ``flowxfer serve`` can be told, with hosted Flow's defaults.

    Memory: each upload request holds at most one read buffer of the socket
    (``read_bufsize``) plus one block being written (1 MiB) and a 64-byte
    hasher per open upload; downloads are sent with ``sendfile`` and hold no
    file bytes in Python. So peak memory is about ``connections x 3 MiB``,
    independent of chunk and file sizes.

    :param root: the folder holding the metadata database, the signing secret
        and every byte stored; created if missing.
    :param users: ``{name: password}`` created or re-passworded at start-up.
    :param rate_limits: a spec string (``off``, ``default``,
        ``api=1000,download=3/10s``), an already parsed mapping, or None (off).
    :param max_chunk_size: the largest blob one ``POST /upload`` may carry;
        bigger bodies are refused with 413 before they are read.
    """

    root: Path
    host: str = "127.0.0.1"
    port: int = 8000
    users: Mapping[str, str] = field(default_factory=dict)
    rate_limits: str | Mapping[str, RateLimit] | None = None
    access_ttl: float = 300.0
    refresh_ttl: float = 7 * 86400.0
    job_ttl: float = 3600.0
    extensions: bool = True
    max_chunk_size: int = 64 * MiB
    tls_cert: Path | None = None
    tls_key: Path | None = None
    #: Largest JSON request body (login, permissions, bulk jobs).
    max_json_bytes: int = 64 * 1024
    #: Deepest JSON nesting accepted; our bodies are two levels deep.
    max_json_depth: int = 16
    #: Most multipart parts in one upload request (flowbio sends 5-7).
    max_form_parts: int = 32
    #: Largest non-file form field (filenames are at most 255 bytes).
    max_form_field_bytes: int = 8 * 1024
    #: Most ids in one bulk archive job.
    max_job_items: int = 10_000
    #: Archive jobs built at the same time (each is disk-bound).
    job_concurrency: int = 2
    #: What archive jobs build: "zip" (stored), or "tar.gz" as hosted Flow does.
    archive_format: str = "zip"
    #: Bounds on unpacking an ``is_directory`` upload (zip bombs, tar bombs).
    max_archive_members: int = 100_000
    max_unpacked_bytes: int = 64 * GiB
    max_unpacked_ratio: float = 1000.0
    #: Longest ``pattern`` regex accepted by /data/search, and the time its
    #: evaluation may take (it runs in a separate process that is killed on
    #: overrun, so a catastrophic regex cannot stall the server).
    max_pattern_length: int = 256
    pattern_timeout: float = 2.0
    #: scrypt cost (2**14: ~50 ms and 16 MiB per hash, OWASP's floor).
    scrypt_n: int = 2**14
    #: Seconds an upload body may send nothing before it is dropped. A client
    #: that vanished (a half-open connection) otherwise holds its upload's
    #: lock until TCP gives up, hours later, and every retry waits behind it.
    body_stall_timeout: float = 60.0
    #: Socket read buffer per connection; bigger buffers mean fewer wake-ups
    #: when chunks of several MiB stream in.
    read_bufsize: int = 1 * MiB
    #: Bytes of small uploads held in memory at once, across all requests (see
    #: ``WHOLE_IN_MEMORY`` in ``_upload_whole``). Beyond it a small upload is
    #: written as it arrives, like a large one: memory does not grow with the
    #: number of clients sending small files at once.
    whole_uploads_in_memory: int = 64 * MiB
    #: Most multipart parts in one ``POST /upload/sample`` chunk: the base
    #: fields, ~60 metadata attributes with their annotations, and the
    #: sample's earlier files.
    max_sample_form_parts: int = 256
    #: Largest annotation sheet (``POST /upload/annotation``), checked whole
    #: when its last chunk arrives; and the rows and columns read from it.
    max_annotation_bytes: int = 16 * MiB
    max_annotation_rows: int = 10_000
    max_annotation_columns: int = 200
    #: ``serve --catalog``: the sample types, organisms and metadata
    #: attributes (None: the default catalog, see ``_catalog.py``).
    catalog: Path | None = None
    #: ``serve --project OWNER:NAME``: projects created at start-up if missing.
    projects: Sequence[tuple[str, str]] = ()

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        if isinstance(self.rate_limits, str):
            self.rate_limits = parse_rate_limit_spec(self.rate_limits)
        if self.max_chunk_size <= 0:
            raise ValueError("max_chunk_size must be positive")
        if self.whole_uploads_in_memory < 0:
            raise ValueError("whole_uploads_in_memory must not be negative")
        for name in ("access_ttl", "refresh_ttl", "job_ttl"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.archive_format not in ("zip", "tar.gz"):
            raise ValueError("archive_format must be zip or tar.gz")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("give both tls_cert and tls_key, or neither")

    @property
    def limits(self) -> Mapping[str, RateLimit] | None:
        """The parsed rate limits (None: unlimited)."""
        assert not isinstance(self.rate_limits, str)
        return self.rate_limits

    @property
    def scheme(self) -> str:
        return "https" if self.tls_cert else "http"

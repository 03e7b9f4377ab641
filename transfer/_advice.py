r"""Whether ``download`` should take the archive path: the pure arithmetic of ``--dry-run`` and ``--auto-bulk``.

Each single download costs a request of Flow's 500/hour download budget; an
archive job (:mod:`._bulk`) costs one ``POST``, a few polls and a few ranged
``GET``\ s. Apart from :mod:`._bulk` because it is plain arithmetic on what
the server described, with no I/O, and :mod:`._executions` and
:mod:`._auto_bulk` use it too.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ._chunks import plan_chunks, plan_segments
from ._client import Capabilities
from ._config import TransferConfig
from ._limiter import RateLimiter
from ._plan import RemoteData
from ._sizes import format_duration, format_size
from ._tokenbucket import TokenBucket

__all__ = ["BULK_MIN_FILES", "BULK_SMALL_FILE", "DownloadAdvice", "advise_download", "bulk_hint", "split_small"]

#: ``download`` suggests (or with ``--auto-bulk`` takes) the archive path when it is asked
#: for more than this many files smaller than :data:`BULK_SMALL_FILE`: fifty single
#: downloads are a tenth of the hourly download budget, and below 8 MiB a file's
#: request costs more than its bytes.
BULK_MIN_FILES = 50
BULK_SMALL_FILE = 8 * 1024 * 1024
#: Polls a typical job needs (a guess for the dry run's arithmetic).
_TYPICAL_POLLS = 8


# --- advice for download -------------------------------------------------------------


def download_requests(size: int, config: TransferConfig, capabilities: Capabilities) -> dict[str, int]:
    """Requests one single download of ``size`` bytes costs, by rate-limit class (pure)."""
    chunk = config.download_chunk_size
    streams = config.segments_for(None)
    segments = len(plan_segments(plan_chunks(size, chunk), streams, config.min_segment_size)) if size > 0 else 0
    api = 1 if capabilities.chunk_maps and size > chunk else 0
    return {"download": segments, "api": api}


def _add(total: dict[str, int], more: dict[str, int]) -> None:
    for key, value in more.items():
        total[key] = total.get(key, 0) + value


@dataclass(frozen=True)
class DownloadAdvice:
    """What a download would cost one by one, and with its small files as one archive.

    :ivar small: the files under :data:`BULK_SMALL_FILE` (what an archive would hold).
    :ivar bulk_advised: more than :data:`BULK_MIN_FILES` small files.
    :ivar single: requests by class, every file downloaded on its own.
    :ivar bulk: requests by class, small files as one archive, large ones on their own.
    :ivar waits_single, waits_bulk: seconds the rate-limit buckets would make each path wait.
    """

    files: int
    bytes: int
    small: tuple[RemoteData, ...]
    large: tuple[RemoteData, ...]
    bulk_advised: bool
    single: dict[str, int]
    bulk: dict[str, int]
    waits_single: dict[str, float]
    waits_bulk: dict[str, float]
    limits: dict[str, str]

    def lines(self) -> list[str]:
        """The arithmetic, for people."""

        def cost(requests: dict[str, int], waits: dict[str, float]) -> str:
            parts = []
            for name in ("download", "api"):
                count = requests.get(name, 0)
                wait = waits.get(name, 0.0)
                text = f"{count} {name} request{'s' if count != 1 else ''} (budget {self.limits.get(name, '?')}"
                text += f": waits ~{format_duration(wait)})" if wait > 0 else ": no wait)"
                parts.append(text)
            return ", ".join(parts)

        small_bytes = sum(item.size for item in self.small)
        lines = [
            f"{self.files} files, {format_size(self.bytes)}; {len(self.small)} under "
            f"{format_size(BULK_SMALL_FILE)} ({format_size(small_bytes)})",
            f"one by one: {cost(self.single, self.waits_single)}",
            f"small files as one archive: {cost(self.bulk, self.waits_bulk)}",
        ]
        if self.bulk_advised:
            lines.append(
                f"bulk is advised (more than {BULK_MIN_FILES} files under {format_size(BULK_SMALL_FILE)}):"
                " use --auto-bulk, or 'flowxfer bulk ID... --extract'"
            )
        else:
            lines.append(
                f"bulk is not needed (it pays off above {BULK_MIN_FILES} files under {format_size(BULK_SMALL_FILE)})"
            )
        return lines

    def to_json(self) -> dict[str, Any]:
        return {
            "dry_run": True,
            "files": self.files,
            "bytes": self.bytes,
            "small_files": len(self.small),
            "small_bytes": sum(item.size for item in self.small),
            "bulk_advised": self.bulk_advised,
            "threshold": {"files": BULK_MIN_FILES, "size": BULK_SMALL_FILE},
            "requests_single": self.single,
            "requests_bulk": self.bulk,
            "waits_single": self.waits_single,
            "waits_bulk": self.waits_bulk,
            "limits": self.limits,
        }


def split_small(items: Sequence[RemoteData]) -> tuple[list[RemoteData], list[RemoteData]]:
    small = [item for item in items if item.size < BULK_SMALL_FILE]
    large = [item for item in items if item.size >= BULK_SMALL_FILE]
    return small, large


def bulk_hint(items: Sequence[RemoteData]) -> str | None:
    """The suggestion ``download`` prints when an archive would serve better, or None (pure)."""
    small, _ = split_small(items)
    if len(small) <= BULK_MIN_FILES:
        return None
    return (
        f"{len(small)} of these files are under {format_size(BULK_SMALL_FILE)}: each costs a download "
        "request (500/hour on Flow); 'download --auto-bulk' fetches them as one archive "
        "(see 'download --dry-run')"
    )


def advise_download(
    items: Sequence[RemoteData],
    config: TransferConfig,
    capabilities: Capabilities,
    limiter: RateLimiter | None = None,
    now: float | None = None,
) -> DownloadAdvice:
    """The cost of downloading ``items`` one by one and with an archive (pure but for the buckets' copies)."""
    small, large = split_small(items)
    single: dict[str, int] = {}
    for item in items:
        _add(single, download_requests(item.size, config, capabilities))
    bulk: dict[str, int] = {"api": 1 + _TYPICAL_POLLS}
    if small:
        # A stored zip adds about a hundred bytes per member; the archive has no chunk map.
        archive = sum(item.size for item in small) + 128 * len(small)
        _add(bulk, {"download": download_requests(archive, config, Capabilities())["download"]})
    for item in large:
        _add(bulk, download_requests(item.size, config, capabilities))
    waits_single: dict[str, float] = {}
    waits_bulk: dict[str, float] = {}
    limits: dict[str, str] = {}
    if limiter is not None:
        moment = time.time() if now is None else now
        for name in ("download", "api"):
            limits[name] = limiter.describe(name)
            for requests, waits in ((single, waits_single), (bulk, waits_bulk)):
                count = requests.get(name, 0)
                bucket = TokenBucket.from_state(limiter.bucket(name).to_state())
                waits[name] = round(bucket.reserve(count, moment), 1) if count else 0.0
    return DownloadAdvice(
        len(items),
        sum(item.size for item in items),
        tuple(small),
        tuple(large),
        len(small) > BULK_MIN_FILES,
        single,
        bulk,
        waits_single,
        waits_bulk,
        limits,
    )

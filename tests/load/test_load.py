"""Load, small: several client processes against one rate-limited server (the full run: benchmarks/bench_load).

The same code as ``python -m benchmarks.bench_load``, at a size CI can
afford: every command exits 0, every file comes back exact, the server
answers only successes and 429s (and some 429s are met: the limits are set
so that clients sharing a user must wait for each other), and its memory
stays under ``RSS_BOUND``. ``pytest -m long tests/load`` runs the full
20 clients x 50 files.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.bench_load import ALLOWED_STATUSES, DEFAULT_LIMITS, KiB, run_load
from tests.chaos.figures import record

#: The server's resident memory may not exceed this, whatever the load (it streams; nothing is held whole).
RSS_BOUND_MIB = 300


def _check(result: object) -> None:
    from benchmarks.bench_load import LoadResult

    assert isinstance(result, LoadResult)
    assert not result.failures, result.failures[:3]
    assert not result.mismatched, result.mismatched[:5]
    assert set(result.statuses) <= ALLOWED_STATUSES, result.statuses
    assert result.rate_limited > 0, "no 429 was met: the limits did not bite, nothing was tested"
    assert result.bytes_down == result.bytes_up
    assert result.server_rss_peak_mib < RSS_BOUND_MIB, result.server_rss_peak_mib
    record(
        "load",
        clients=result.clients,
        files=result.files,
        requests=result.requests,
        rate_limited=result.rate_limited,
        seconds=round(result.seconds, 1),
        max_requests_per_second=round(result.requests_per_second, 1),
        max_mib_per_second=round(result.mib_per_second, 2),
        max_server_rss_mib=round(result.server_rss_peak_mib),
        bytes_lost=0,
    )


@pytest.mark.timeout(300)
def test_load_small(tmp_path: Path) -> None:
    result = run_load(
        tmp_path / "load",
        clients=6,
        files=8,
        users=2,
        sizes=(4 * KiB, 256 * KiB),
        rate_limits="api=2000/20s,upload=10/4s,download=400/10s,search=300/10s",
    )
    _check(result)


@pytest.mark.long
@pytest.mark.timeout(3600)
def test_load_full(tmp_path: Path) -> None:
    _check(run_load(tmp_path / "load", clients=20, files=50, users=4, rate_limits=DEFAULT_LIMITS))

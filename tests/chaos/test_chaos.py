"""The chaos suite: a mixed workload through a misbehaving network ends exact, with bounded re-sends.

Each scenario puts the fault proxy (``tests/support/faultproxy.py``) between
the engine and the real local server, arms one kind of trouble, and runs the
same *mixed workload* through it: large and small files (an empty one, one
of a single byte, one exactly a chunk, multi-chunk ones) uploaded, the same
data downloaded again, and a bulk archive job of the small ones created,
polled, downloaded and extracted. Then:

- **exact**: the server holds exactly the source bytes (fetched directly,
  not through the proxy), the downloaded and the extracted files are exactly
  the sources, and no ``.part`` file is left;
- **bounded re-sends**, measured on the wire by the proxy's ``Record``:
  request-body bytes of ``POST /upload`` exceed the payload by at most
  ``ENVELOPE`` per request plus ``2 × CHUNK`` per fault injected (a lost
  answer costs the chunk sent again and, without the upload-status
  extension, one probe refused with the server's offset); response-body bytes
  of ``GET /downloads/...`` (files and archive) exceed theirs by at most
  ``CHUNK + HTTP_BUFFER`` per fault (the partial chunk thrown away, and what
  aiohttp had buffered when the stream broke). Shaping alone (latency,
  bandwidth) injects no fault, so there the bound is zero re-sent bytes.

Every scenario runs against the server with extensions and as hosted Flow.
CI runs one seed each; ``pytest -m long tests/chaos`` runs every scenario
over ``FLOWXFER_CHAOS_SEEDS`` seeds (default 10) with a larger workload.
"""

from __future__ import annotations

import dataclasses
import os
import time
import zipfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from flowxfer.transfer import Flowxfer, TransferReport
from tests.chaos.figures import record
from tests.support.faultproxy import (
    Bandwidth,
    Latency,
    Match,
    ResetAtRandom,
    RespondWith,
    Rule,
    StallMidBody,
    TruncateResponse,
)
from tests.support.rig import Rig, rig, stored
from tests.transfer.conftest import client, write_random

KiB = 1024
MiB = 1024 * KiB
CHUNK = 64 * KiB
#: Multipart boundaries and form fields around one chunk (measured ~600 bytes; generous).
ENVELOPE = 2 * KiB
#: What aiohttp may have buffered, unprocessed, when a stream is cut (two 64 KiB reads plus socket buffers).
HTTP_BUFFER = 256 * KiB
#: Paths whose answers are data bytes: single files and archives, not the job polls.
BYTES_PATH = r"^/downloads/(?!jobs/[^/]+$)"
LONG_SEEDS = int(os.environ.get("FLOWXFER_CHAOS_SEEDS", "10"))

#: The scenario whose faults are reads that stall: only there must the engine's read timeout be short.
#: Elsewhere a short one is a fault of its own: on two loaded cores a chunk's answer (the server's
#: fsync) can take over a second, the engine gives up and re-sends, and "nothing re-sent without a
#: fault" fails for a reason the scenario did not inject.
STALLS = "stalls beyond the read timeout"


#: Each scenario: a name and a factory of the rules it arms (given the seed).
Scenario = Callable[[int], list[Rule]]
SCENARIOS: dict[str, Scenario] = {
    "latency+jitter": lambda seed: [Latency(0.004, jitter=0.004)],
    "bandwidth cap": lambda seed: [Bandwidth(6 * MiB)],
    "resets at random offsets": lambda seed: [
        ResetAtRandom(2_000, 400_000, probability=0.6, direction="down", times=4),
        ResetAtRandom(2_000, 400_000, probability=0.6, direction="up", times=4),
    ],
    STALLS: lambda seed: [
        StallMidBody(
            Match("GET", r"^/downloads/", probability=0.5),
            direction="down",
            at_fraction=0.4,
            seconds=3.0,
            then="close",
            times=2,
        ),
        StallMidBody(
            Match("POST", r"^/upload$", probability=0.2),
            direction="down",
            at_fraction=0.5,
            seconds=3.0,
            then="close",
            times=1,
        ),
    ],
    "503 bursts with HTML": lambda seed: [RespondWith.html_error(503, match=Match(probability=0.2), times=12)],
    "429 storms with Retry-After": lambda seed: [
        RespondWith.rate_limited(retry_after=1, match=Match(probability=0.15), times=5)
    ],
    "responses that end early": lambda seed: [
        TruncateResponse(Match("GET", r"^/downloads/", probability=0.4), fraction=0.5, times=3),
        TruncateResponse(Match(probability=0.1), fraction=0.5, times=3),
    ],
}


@dataclasses.dataclass
class Workload:
    """The files of one run, by name, and what they should be."""

    sources: dict[str, Path]
    bulk_names: list[str]

    @property
    def payload(self) -> int:
        return sum(p.stat().st_size for p in self.sources.values())


def make_workload(root: Path, seed: int, large: int) -> Workload:
    """Large and small files: empty, one byte, exactly one chunk, a chunk and a byte, multi-chunk ones."""
    sizes = {
        "empty.txt": 0,
        "one.txt": 1,
        "small.csv": 5_000,
        "chunk.bin": CHUNK,
        "chunk1.bin": CHUNK + 1,
        "mid.fastq.gz": 5 * CHUNK + 17,
        "large_R1.fastq.gz": large + 4321,
        "large_R2.fastq.gz": large // 2,
    }
    sources = {
        name: write_random(root / name, size, seed * 31 + index) for index, (name, size) in enumerate(sizes.items())
    }
    return Workload(sources, ["one.txt", "small.csv", "chunk1.bin", "mid.fastq.gz"])


@asynccontextmanager
async def engine(r: Rig, home: Path, scenario: str) -> AsyncIterator[Flowxfer]:
    settings: dict[str, Any] = {
        "read_timeout": 1.0 if scenario == STALLS else 10.0,
        "connect_timeout": 5.0,
        "max_attempts": 12,
        "segments": 2,
        "concurrency": 3,
        "backoff_cap": 0.3,
    }
    async with client(r.via_proxy, home, **settings) as fx:
        yield fx


def done(report: TransferReport) -> TransferReport:
    assert report.status == "completed", (report.status, report.stop_reason, [f.error for f in report.files])
    return report


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


async def run_workload(tmp_path: Path, extensions: bool, scenario: str, seed: int, large: int) -> None:
    work = make_workload(tmp_path / "src", seed, large)
    expected = {name: path.read_bytes() for name, path in work.sources.items()}
    started = time.monotonic()
    async with rig(tmp_path, extensions, seed=seed) as r:
        async with engine(r, tmp_path / "home", scenario) as fx:
            rules = [r.proxy.add(rule) for rule in SCENARIOS[scenario](seed)]
            up = done(await fx.upload(list(work.sources.values())))
            ids = {f.filename: f.id or "" for f in up.files}
            out = tmp_path / "out"
            done(await fx.download(list(ids.values()), output_dir=out))
            bulk_dir = tmp_path / "bulk"
            done(
                await fx.bulk(
                    [ids[n] for n in work.bulk_names],
                    name="mix.zip",
                    output_dir=bulk_dir,
                    extract=True,
                    keep_archive=True,
                    poll_interval=0.1,
                )
            )
        for rule in rules:
            r.proxy.remove(rule)
        faults = sum(r.proxy.stats.faults_injected.values())
        # Exact: on the server, in the download folder, in the extracted archive.
        assert await stored(r.server, ids) == expected
        assert _tree(out) == expected
        archive = bulk_dir / "mix.zip"
        extracted = {n: b for n, b in _tree(bulk_dir).items() if n != "mix.zip"}
        assert extracted == {n: expected[n] for n in work.bulk_names}
        assert not list(out.glob("*.part")) and not list(bulk_dir.glob("*.part"))

        # Bounded re-sends, on the wire.
        posts = r.log.select("POST", r"^/upload$")
        wire_up = r.wire("POST", r"^/upload$", "request_bytes")
        resent_up = wire_up - work.payload
        assert resent_up <= len(posts) * ENVELOPE + faults * 2 * CHUNK, (resent_up, len(posts), faults)
        payload_down = work.payload + archive.stat().st_size
        wire_down = r.wire("GET", BYTES_PATH, "response_bytes", statuses=(200, 206))
        resent_down = wire_down - payload_down
        assert 0 <= resent_down <= faults * (CHUNK + HTTP_BUFFER), (resent_down, faults)
        if scenario not in ("latency+jitter", "bandwidth cap"):
            assert faults > 0, "the scenario injected nothing: it tested nothing"
        else:
            assert faults == 0 and resent_down == 0
    record(
        "chaos",
        scenario=scenario,
        extensions=extensions,
        seed=seed,
        faults=faults,
        bytes_lost=0,
        payload_up=work.payload,
        wire_up=wire_up,
        requests_up=len(posts),
        resent_up_ratio=max(0, resent_up - len(posts) * ENVELOPE) / work.payload,
        payload_down=payload_down,
        wire_down=wire_down,
        resent_down_ratio=resent_down / payload_down,
        seconds=round(time.monotonic() - started, 2),
    )


modes = pytest.mark.parametrize("extensions", [True, False], ids=["extensions", "hosted-flow"])


@modes
@pytest.mark.parametrize("scenario", list(SCENARIOS))
async def test_mixed_workload_survives(tmp_path: Path, extensions: bool, scenario: str) -> None:
    await run_workload(tmp_path, extensions, scenario, seed=1, large=MiB)


@pytest.mark.long
@pytest.mark.timeout(900)
@modes
@pytest.mark.parametrize("scenario", list(SCENARIOS))
@pytest.mark.parametrize("seed", range(2, 2 + LONG_SEEDS))
async def test_mixed_workload_survives_long(tmp_path: Path, extensions: bool, scenario: str, seed: int) -> None:
    await run_workload(tmp_path, extensions, scenario, seed=seed, large=6 * MiB)


def test_the_archive_is_a_real_zip_of_the_small_files(tmp_path: Path) -> None:
    """The workload's own helper: a guard that the bulk part checks what it claims (names, not paths)."""
    work = make_workload(tmp_path, 0, CHUNK)
    assert set(work.bulk_names) <= set(work.sources) and work.payload > 0
    with zipfile.ZipFile(tmp_path / "x.zip", "w") as zf:
        for name in work.bulk_names:
            zf.write(work.sources[name], name)
    assert sorted(zipfile.ZipFile(tmp_path / "x.zip").namelist()) == sorted(work.bulk_names)

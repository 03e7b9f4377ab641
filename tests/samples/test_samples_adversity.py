"""Exactly one sample per row through expiring tokens, 429s and a server killed and restarted mid-batch.

The engine against the real server (a subprocess where it must die), with and
without extensions; afterwards the server's samples are read without the engine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from flowxfer.transfer.events import BytesMoved
from tests.support.faultproxy import Match, RespondWith
from tests.support.rig import rig
from tests.support.samples import server_samples, write_sheet
from tests.support.server import RunningServer, ServerProcess
from tests.transfer.conftest import KiB, client, write_random
from tests.transfer.test_server_restart import PATIENT, as_running, kill_and_restart_when

pytestmark = pytest.mark.parametrize("extensions", [True, False], ids=["extensions", "hosted-flow"])


def batch(folder: Path, samples: int = 3, size: int = 200 * KiB) -> tuple[Path, dict[str, list[bytes]]]:
    rows, reads = [], {}
    for n in range(1, samples + 1):
        r1 = write_random(folder / f"A{n}_R1.fq.gz", size + n, seed=n)
        r2 = write_random(folder / f"A{n}_R2.fq.gz", size - n, seed=50 + n)
        rows.append([f"A{n}", r1.name, r2.name, "forward"])
        reads[f"A{n}"] = [r1.read_bytes(), r2.read_bytes()]
    return write_sheet(folder / "sheet.csv", ["name", "reads1", "reads2", "strandedness"], rows), reads


async def one_each(srv: RunningServer, reads: dict[str, list[bytes]]) -> None:
    held = await server_samples(srv)
    assert sorted(held) == sorted(reads)
    for name, files in reads.items():
        assert len(held[name]) == 1, held[name]
        assert [d["size"] for d in held[name][0]["data"]] == [len(b) for b in files]


async def test_expiring_tokens_and_429s_mid_batch(tmp_path: Path, extensions: bool) -> None:
    sheet, reads = batch(tmp_path / "run")
    async with rig(tmp_path, extensions, access_ttl=2) as r:
        limited = r.proxy.add(
            RespondWith.rate_limited(retry_after=1, match=Match("POST", r"^/upload/sample$", probability=0.15), times=4)
        )
        async with client(r.via_proxy, tmp_path / "home", concurrency=2, bwlimit="300k", max_wait=30.0) as fx:
            report = await fx.upload_samples(sheet, sample_type="RNA-Seq")
        assert report.status == "completed", report.to_json()
        assert limited.hits >= 1
        assert r.log.select("GET", r"^/token$")  # the access token expired mid-batch and was refreshed
        await one_each(r.server, reads)


async def test_server_killed_and_restarted_mid_batch(tmp_path: Path, extensions: bool) -> None:
    sheet, reads = batch(tmp_path / "run", size=400 * KiB)
    args = [] if extensions else ["--no-extensions"]
    async with ServerProcess(tmp_path / "root", *args) as proc:
        moved = [0]

        def progress(event: Any) -> None:
            if isinstance(event, BytesMoved):
                moved[0] += event.nbytes

        done = anyio.Event()
        async with client(
            as_running(proc), tmp_path / "home", progress=progress, bwlimit="1M", concurrency=2, **PATIENT
        ) as fx:
            async with anyio.create_task_group() as group:
                group.start_soon(kill_and_restart_when, moved, 1200 * KiB, proc, done)
                report = await fx.upload_samples(sheet, sample_type="RNA-Seq")
                done.set()
        assert report.status == "completed", report.to_json()
        await one_each(as_running(proc), reads)

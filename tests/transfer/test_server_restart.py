"""The server dies (SIGKILL) mid-transfer and comes back: the engine's retries carry the transfer through.

A real ``flowxfer serve`` subprocess is killed while chunks are on the wire
and restarted on the same port and root a moment later. The engine sees
resets and refused connections, retries (with enough attempts to outlast the
restart), asks the server what it holds, and finishes: the bytes are exactly
the source's, on the server and on disk. With extensions and as hosted Flow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from flowxfer.transfer.events import BytesMoved, Retrying
from tests.support.server import RunningServer, ServerProcess

from .conftest import KiB, client, write_random

MiB = 1024 * KiB
#: Enough attempts (backoff capped at 0.5 s) to outlast a server restart on a loaded machine.
PATIENT = {"max_attempts": 40, "backoff_base": 0.05, "backoff_cap": 0.5, "connect_timeout": 2.0}

pytestmark = pytest.mark.parametrize("extensions", [True, False], ids=["extensions", "hosted-flow"])


def as_running(proc: ServerProcess) -> RunningServer:
    return RunningServer(proc.base_url, proc.root, proc.users, config=None)  # type: ignore[arg-type]


async def kill_and_restart_when(moved: list[int], threshold: int, proc: ServerProcess, done: anyio.Event) -> None:
    """SIGKILL the server once ``threshold`` bytes have moved, restart it half a second later."""
    while moved[0] < threshold:
        if done.is_set():
            raise AssertionError("the transfer ended before the server could be killed")
        await anyio.sleep(0.01)
    await proc.akill()
    await anyio.sleep(0.5)
    await proc.arestart()


async def test_server_killed_and_restarted_mid_upload(tmp_path: Path, extensions: bool) -> None:
    files = [write_random(tmp_path / "src" / f"r{i}.fastq", 1 * MiB + 7 * i, i) for i in range(2)]
    args = [] if extensions else ["--no-extensions"]
    async with ServerProcess(tmp_path / "root", *args) as proc:
        moved = [0]
        events: list[Any] = []

        def progress(event: Any) -> None:
            if isinstance(event, BytesMoved):
                moved[0] += event.nbytes

        done = anyio.Event()
        async with client(
            as_running(proc),
            tmp_path / "home",
            progress=progress,
            events=events,
            bwlimit="1M",
            concurrency=2,
            **PATIENT,
        ) as fx:
            async with anyio.create_task_group() as group:
                group.start_soon(kill_and_restart_when, moved, 800 * KiB, proc, done)
                report = await fx.upload([tmp_path / "src"])
                done.set()
        assert report.status == "completed", [f.error for f in report.files]
        assert any(isinstance(e, Retrying) for e in events)
        # Nothing acknowledged was sent again: at most a chunk per file in flight (and, as hosted
        # Flow, one chunk per file refused at a stale offset).
        total = sum(f.stat().st_size for f in files)
        assert report.bytes_transferred <= total + 2 * 2 * 64 * KiB
        ids = {f.filename: f.id for f in report.files}
        async with client(as_running(proc), tmp_path / "home2") as check:
            down = await check.download(list(ids.values()), output_dir=tmp_path / "out")
        assert down.status == "completed"
    for f in files:
        assert (tmp_path / "out" / f.name).read_bytes() == f.read_bytes()


async def test_server_killed_and_restarted_mid_download(tmp_path: Path, extensions: bool) -> None:
    """Several files, two at a time: a stream in flight may be cut (or finish from socket buffers,
    which hold a lot on loopback), and the next files meet a dead server until it is back."""
    files = [write_random(tmp_path / "src" / f"part{i}.tsv", 512 * KiB + i, 9 + i) for i in range(6)]
    args = [] if extensions else ["--no-extensions"]
    async with ServerProcess(tmp_path / "root", *args) as proc:
        async with client(as_running(proc), tmp_path / "uploader") as fx:
            ids = [f.id or "" for f in (await fx.upload([tmp_path / "src"])).files]
        moved = [0]
        events: list[Any] = []

        def progress(event: Any) -> None:
            if isinstance(event, BytesMoved):
                moved[0] += event.nbytes

        done = anyio.Event()
        async with client(
            as_running(proc),
            tmp_path / "home",
            progress=progress,
            events=events,
            bwlimit="2M",
            concurrency=2,
            **PATIENT,
        ) as fx2:
            async with anyio.create_task_group() as group:
                group.start_soon(kill_and_restart_when, moved, 1 * MiB, proc, done)
                report = await fx2.download(ids, output_dir=tmp_path / "out")
                done.set()
        assert report.status == "completed", [f.error for f in report.files]
        assert any(isinstance(e, Retrying) for e in events)
        # Streams resume at chunk boundaries: per file in flight at most the chunk that was cut.
        assert report.bytes_transferred <= sum(f.stat().st_size for f in files) + 2 * 64 * KiB
    for f in files:
        assert (tmp_path / "out" / f.name).read_bytes() == f.read_bytes()

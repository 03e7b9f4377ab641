"""``kill -9`` of the client, and of the server, while one file's chunks travel on several connections.

The parallel-chunk extension acknowledges chunks out of order, so the
journal's acked chunks have holes; the promise is the strict protocol's,
chunk by chunk: every chunk the journal calls acked is held by the server at
that offset with exactly the journaled checksum (nothing acknowledged lost),
nothing is assembled from a torn or missing chunk (the data is ready only
when whole and exact), and the resumed command finishes with exact bytes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import anyio

from flowxfer.journal import FileState
from flowxfer.transfer.events import BytesMoved
from tests.chaos.test_crash_consistency import ACKED, _cli_rig, _journal_rows, kill_loop
from tests.support.rig import stored
from tests.support.server import RunningServer, ServerProcess, login, running_server
from tests.transfer.conftest import client, write_random

from .test_crash_consistency import Tally

KiB = 1024
MiB = 1024 * KiB
SIZES = {"big_R1.fastq.gz": 2 * MiB + 123, "big_R2.fastq.gz": MiB + 7}


async def check_parallel_uploads(journal: Path, srv_url: str, kinds: tuple[str, ...] = ("upload",)) -> int:
    """Every journaled acked chunk is on the server with its checksum; a finished file is ready and whole."""
    rows = await anyio.to_thread.run_sync(_journal_rows, journal, kinds)
    checked = 0
    async with aiohttp.ClientSession() as session:
        token = await login(session, srv_url, "alice", "alice-pw-1")
        for f, chunks in rows:
            acked = {(c.offset, c.size, c.checksum) for c in chunks if c.state in ACKED}
            if not f.data_id:
                assert not acked, f"{f.local_path}: acked chunks without an upload id"
                continue
            async with session.get(f"{srv_url}/upload/{f.data_id}", headers={"Authorization": f"Bearer {token}"}) as r:
                assert r.status == 200, (f.data_id, r.status)
                status = await r.json()
            if f.status is FileState.DONE:
                assert status["is_ready"] and status["size"] == f.size, f.local_path
            elif acked:
                assert "parallel" in status, f"{f.local_path}: a multi-chunk upload went in strict order"
            held = {(c["offset"], c["size"], c["checksum"]) for c in status["chunks"]}
            assert acked <= held, f"{f.local_path}: acked but not held: {sorted(acked - held)}"
            checked += 1
    return checked


async def test_client_kill9_mid_parallel_upload(tmp_path: Path) -> None:
    src = {name: write_random(tmp_path / "run" / name, size, i) for i, (name, size) in enumerate(SIZES.items())}
    tally = Tally()
    async with running_server(tmp_path / "root") as srv:
        cli = await _cli_rig(srv, tmp_path)
        command = [
            "--json",
            "upload",
            str(tmp_path / "run"),
            "--chunk-size",
            "64k",
            "--streams",
            "4",
            "--bwlimit",
            "700k",
        ]

        async def check() -> None:
            tally.checks += await check_parallel_uploads(cli.journal, srv.base_url)

        await kill_loop(cli, command, 3, 7, check, tally, (0.4, 3.0))
        final = (await cli.run(*command)).json()
        assert final["status"] == "completed"
        ids = {Path(f["path"]).name: f["id"] for f in final["files"]}
        assert await stored(srv, ids) == {n: p.read_bytes() for n, p in src.items()}
    assert tally.kills >= 1 and tally.checks >= 1, tally


async def test_server_kill9_mid_parallel_upload(tmp_path: Path) -> None:
    src = {name: write_random(tmp_path / "run" / name, size, i) for i, (name, size) in enumerate(SIZES.items())}
    moved = [0]
    thresholds = {600 * KiB: anyio.Event(), 1800 * KiB: anyio.Event()}

    def progress(event: Any) -> None:
        if isinstance(event, BytesMoved):
            moved[0] += event.nbytes
            for threshold, reached in thresholds.items():
                if moved[0] >= threshold:
                    reached.set()

    async with ServerProcess(tmp_path / "root") as proc:
        srv = RunningServer(proc.base_url, proc.root, proc.users, config=None)  # type: ignore[arg-type]
        async with client(
            srv,
            tmp_path / "home",
            progress=progress,
            bwlimit="1M",
            upload_streams=4,
            max_attempts=40,
            connect_timeout=2.0,
        ) as fx:
            async with anyio.create_task_group() as group:

                async def kill_twice() -> None:
                    for reached in thresholds.values():
                        await reached.wait()
                        await proc.akill()
                        await anyio.sleep(0.3)
                        await proc.arestart()
                        assert await check_parallel_uploads(tmp_path / "home" / "journal.db", proc.base_url) >= 1

                group.start_soon(kill_twice)
                report = await fx.upload([tmp_path / "run"])
        assert report.status == "completed", [f.error for f in report.files]
        assert await check_parallel_uploads(tmp_path / "home" / "journal.db", proc.base_url) == 2
        ids = {f.filename: f.id for f in report.files}
        assert await stored(srv, ids) == {n: p.read_bytes() for n, p in src.items()}

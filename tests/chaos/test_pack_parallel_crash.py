"""``kill -9`` of a ``sync --pack-small`` whose tar travels on several connections [ext], then resume.

The tar is virtual (any byte range is generated again from its members), and
its chunks are acknowledged out of order: the journal's acked chunks have
holes. Each kill lands once the journal records acknowledged chunks of the
tar (a different number each time); then every chunk the journal calls
acked must be held by the server at that offset with that checksum, and the
run that follows must continue the same upload, on the same extension, and
finish with every small file unpacked on the server byte for byte.
"""

from __future__ import annotations

import signal
import sqlite3
import sys
from pathlib import Path

import anyio

from tests.chaos.test_crash_consistency import check_packed_run
from tests.chaos.test_parallel_crash import check_parallel_uploads
from tests.cli.conftest import Cli
from tests.support.server import running_server
from tests.sync.test_sync_parallel import make_run, unpacked

#: The engine as a script drives it: four connections for the tar's 64 KiB chunks, slowly.
_ENGINE = """
import sys, anyio
from flowxfer.transfer import Flowxfer, SyncOptions, TransferConfig

async def main() -> None:
    config = TransferConfig(
        upload_streams=4, chunk_size=64 * 1024, bwlimit="400k",
        journal_flush_interval=0.2,
    )
    async with Flowxfer(config=config) as fx:
        report = await fx.sync(sys.argv[1], SyncOptions(pack_small=64 * 1024))
    sys.exit(0 if report.status == "completed" else 3)

anyio.run(main)
"""
#: Kill when the journal holds this many acked chunks of the tar (of about 20).
KILL_AT = (3, 9, 14)


def _acked(journal: Path) -> int:
    if not journal.exists():
        return 0
    db = sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=5)
    try:
        return int(db.execute("SELECT count(*) FROM chunks WHERE state = 'acked'").fetchone()[0])
    except sqlite3.OperationalError:
        return 0  # not migrated yet
    finally:
        db.close()


def _data_ids(journal: Path) -> set[str]:
    db = sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=5)
    try:
        return {r[0] for r in db.execute("SELECT data_id FROM files WHERE data_id IS NOT NULL")}
    finally:
        db.close()


async def test_kill9_mid_parallel_packed_upload_then_resume(tmp_path: Path) -> None:
    run = tmp_path / "runs" / "bcl"
    local = make_run(run)
    async with running_server(tmp_path / "root") as srv:
        cli = Cli(srv.base_url, tmp_path / "home")
        await cli.login("alice", srv.users["alice"])
        command = [sys.executable, "-c", _ENGINE, str(run)]
        kills, ids = 0, set()
        for threshold in KILL_AT:
            async with await anyio.open_process(command, env=cli.env()) as engine:
                for _ in range(3000):  # a minute at most
                    if engine.returncode is not None or _acked(cli.journal) >= threshold:
                        break
                    await anyio.sleep(0.02)
                if engine.returncode is None:
                    engine.send_signal(signal.SIGKILL)
                    kills += 1
                await engine.wait()
            # Nothing acknowledged lost: every acked chunk is held, on a parallel upload.
            assert await check_parallel_uploads(cli.journal, srv.base_url, ("sync",)) >= 1
            ids |= _data_ids(cli.journal)
        assert kills >= 2
        async with await anyio.open_process(command, env=cli.env()) as engine:
            with anyio.fail_after(120):
                await engine.wait()
            assert engine.returncode == 0, (await engine.stderr.receive())[-3000:] if engine.stderr else None
        assert _data_ids(cli.journal) == ids and len(ids) == 1  # the same upload all along, continued
        await check_packed_run(cli.journal, srv, run)
        (data_id,) = ids
        assert unpacked(srv.root, data_id) == {rel.split("/", 1)[1]: data for rel, data in local.items()}

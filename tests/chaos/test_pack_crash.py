"""``kill -9`` right after a packed tar is finished on the server: the sync still accounts for it.

A tar of small files (``sync --pack-small``) is done once the server holds
it whole; the journal then records two things: the tar in the ``packs``
inventory (what a later sync compares against) and its file row ``done``
(what the transfer did). Recorded in two commits, a kill between them left
the inventory saying "on the server" and the row unfinished; the next run
found the tar unchanged, dropped the unfinished row as no longer planned,
and reported success without the tar among its files (the crash suite once
found the 12 ``InterOp`` files in none of the done tars this way).

The kill lands deterministically at the first moment the journal records
the tar anywhere: the engine runs in a child process with a journal flush
interval of a minute and a slow second file after the tar, so a progress
commit is far away once the tar is done; the test polls the journal and
kills the child as soon as either record appears. Before the fix that was
the inventory alone, seconds before the row; now both come in one commit.
"""

from __future__ import annotations

import random
import signal
import sqlite3
import sys
from pathlib import Path

import anyio

from tests.chaos.test_crash_consistency import check_packed_run
from tests.cli.conftest import Cli
from tests.support.server import running_server

KiB = 1024
MiB = 1024 * KiB

#: The engine, as a script would drive it: one run, a tar first (concurrency 1), then a slow FASTQ.
_ENGINE = """
import sys, anyio
from flowxfer.transfer import Flowxfer, SyncOptions, TransferConfig

async def main() -> None:
    config = TransferConfig(
        journal_flush_interval=60, journal_flush_events=1_000_000, concurrency=1, bwlimit="300k"
    )
    async with Flowxfer(config=config) as fx:
        await fx.sync(sys.argv[1], SyncOptions(pack_small=64 * 1024))

anyio.run(main)
"""


def _tar_recorded(journal: Path) -> bool:
    """Whether the journal records the tar as sent: in the packs inventory or as a done row."""
    if not journal.exists():
        return False
    db = sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=5)
    try:
        packs = db.execute("SELECT count(*) FROM packs").fetchone()[0]
        done = db.execute("SELECT count(*) FROM files WHERE plan_key IS NOT NULL AND status = 'done'").fetchone()[0]
    except sqlite3.OperationalError:
        return False  # not migrated yet
    finally:
        db.close()
    return bool(packs or done)


def _unaccounted_packs(journal: Path) -> list[str]:
    """Tars the packs inventory holds whose sync row is not done with that very upload."""
    db = sqlite3.connect(f"file:{journal}?mode=ro", uri=True)
    try:
        rows = db.execute(
            "SELECT p.local_path FROM packs p WHERE NOT EXISTS (SELECT 1 FROM files f WHERE "
            "f.local_path = p.local_path AND f.plan_key = p.manifest AND f.data_id = p.data_id "
            "AND f.status = 'done')"
        ).fetchall()
    finally:
        db.close()
    return [r[0] for r in rows]


async def test_kill_after_the_tar_is_sent_loses_nothing(tmp_path: Path) -> None:
    rng = random.Random(5)
    run = tmp_path / "runs" / "bcl"
    (run / "InterOp").mkdir(parents=True)
    for index in range(12):
        (run / "InterOp" / f"s_1_{1101 + index}.bin").write_bytes(rng.randbytes(rng.randint(8 * KiB, 16 * KiB)))
    (run / "S1_R1.fastq.gz").write_bytes(rng.randbytes(MiB))
    async with running_server(tmp_path / "root") as srv:
        cli = Cli(srv.base_url, tmp_path / "home")
        await cli.login("alice", srv.users["alice"])
        async with await anyio.open_process([sys.executable, "-c", _ENGINE, str(run)], env=cli.env()) as engine:
            for _ in range(3000):  # a minute at most
                if engine.returncode is not None or await anyio.to_thread.run_sync(_tar_recorded, cli.journal):
                    break
                await anyio.sleep(0.02)
            if engine.returncode is None:
                engine.send_signal(signal.SIGKILL)
            await engine.wait()
        # What the journal says is on the server, the transfer says it sent.
        assert _unaccounted_packs(cli.journal) == []
        final = await cli.run("--json", "sync", str(run), "--pack-small", "64k", within=120)
        assert final.code == 0, final.stderr[-3000:]
        # The tar is among the done rows (of the transfer the kill cut short, or of a finished one).
        await check_packed_run(cli.journal, srv, run)

"""A fleet on one machine: several ``flowxfer`` hosts (host ids), one PostgreSQL journal, the local server.

Each host is the real CLI in a subprocess (:class:`tests.cli.conftest.Cli`)
with its own home (credentials), ``FLOWXFER_HOST_ID`` and the shared
``FLOWXFER_JOURNAL`` URL of a fresh database of the throwaway cluster
(``postgres_url``, ``tests/support/postgres.py``). Uploads are slowed with
``--bwlimit`` so that a kill -9 or a database outage lands mid-transfer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import psycopg

from flowxfer.journal import Journal
from flowxfer.journal._backend import TABLES
from tests.cli.conftest import Cli, Result
from tests.support.rig import stored
from tests.support.server import RunningServer
from tests.transfer.conftest import write_random

KiB = 1024

#: What a run folder holds: a few chunked files and a small one (about 1.9 MiB in all).
SIZES = {"a_R1.fastq.gz": 700 * KiB + 3, "a_R2.fastq.gz": 600 * KiB, "b_R1.fastq.gz": 600 * KiB + 1, "sheet.csv": 999}

#: Slow enough (~5 s) that a kill or an outage lands mid-upload; chunks small enough that each file has many.
SLOW_UPLOAD = ("--chunk-size", "64k", "--concurrency", "2", "--bwlimit", "400k")
#: The same work (a bandwidth limit is no part of a transfer: the journal keeps none) at full speed,
#: for the run that finishes what a killed or frozen host left: nothing has to land mid-way in it.
FULL_SPEED = SLOW_UPLOAD[:4]


def make_run(folder: Path, seed: int = 1) -> dict[str, bytes]:
    """A run folder of :data:`SIZES`; returns ``{filename: bytes}``."""
    return {
        name: write_random(folder / name, size, seed + i).read_bytes() for i, (name, size) in enumerate(SIZES.items())
    }


async def host(srv: RunningServer, home: Path, name: str, journal: str, **env: str) -> Cli:
    """A logged-in host ``name`` of the fleet on the shared ``journal``."""
    cli = Cli(srv.base_url, home, {"FLOWXFER_JOURNAL": journal, "FLOWXFER_HOST_ID": name, **env})
    await cli.login("alice", srv.users["alice"])
    return cli


async def hosts(srv: RunningServer, root: Path, journal: str, *names: str, **env: str) -> list[Cli]:
    """:func:`host` for each of ``names`` (home ``root / name``), logged in all at once: each start costs seconds."""
    made: dict[str, Cli] = {}

    async def one(name: str) -> None:
        made[name] = await host(srv, root / name, name, journal, **env)

    async with anyio.create_task_group() as group:
        for name in names:
            group.start_soon(one, name)
    return [made[name] for name in names]


async def assert_uploaded(srv: RunningServer, result: Result, expected: dict[str, bytes]) -> None:
    """``result`` (an ``upload``/``resume`` ``--json`` run) completed, and the server holds exactly ``expected``."""
    assert result.code == 0, result.stderr[-3000:]
    document = result.json()
    reports = document.get("transfers", [document])
    files = [f for report in reports for f in report["files"]]
    assert all(report["status"] == "completed" for report in reports), reports
    ids = {Path(f["path"]).name: f["id"] for f in files}
    assert await stored(srv, ids) == expected


def age_leases(url: str, seconds: float) -> None:
    """Make every lease's last heartbeat ``seconds`` older: what a host frozen or cut off that long leaves."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE leases SET heartbeat = heartbeat - %s", (seconds,))


def journal_rows(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every table a lease holder writes for its work, sorted (budgets aside: requests spent are spent)."""
    with Journal.open(url, host_id="observer") as journal:
        return {
            table: sorted((tuple(row.values()) for row in journal._read(f"SELECT * FROM {table}")), key=repr)
            for table in (*TABLES, "leases")
            if table != "buckets"
        }

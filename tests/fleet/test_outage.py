"""The journal's PostgreSQL server goes away mid-upload: briefly (wait and finish) or for too long (exit 75).

The cluster is stopped with ``pg_ctl -m fast`` (sessions cut, as in a crash
or a failover) while the real CLI uploads through the local server, and
started again on the same port.
"""

from __future__ import annotations

import time
from pathlib import Path

import anyio

from flowxfer.journal import Journal
from tests.cli.conftest import Cli, Result, Running
from tests.fleet.conftest import FULL_SPEED, SLOW_UPLOAD, assert_uploaded, host, make_run
from tests.support.postgres import PostgresCluster
from tests.support.server import RunningServer

KiB = 1024


def _statuses(journal_url: str) -> list[str]:
    with Journal.open(journal_url, host_id="observer") as journal:
        return [t.status for t in journal.list_transfers(include_finished=True)]


async def _upload_through_an_outage(
    a: Cli, run: Path, cluster: PostgresCluster, max_wait: float
) -> tuple[int, float, Running]:
    """``a`` uploads ``run`` slowly; its database stops for good mid-run: the exit code, and how long after the stop."""
    command = ["--json", "upload", str(run), *SLOW_UPLOAD, "--max-wait", f"{max_wait:g}s"]
    try:
        async with a.start("--log-format", "json", *command) as running:
            await running.until_moved(300 * KiB)
            await anyio.to_thread.run_sync(cluster.stop)
            stopped = time.monotonic()
            code = await running.wait(60)
        return code, time.monotonic() - stopped, running
    finally:
        await anyio.to_thread.run_sync(cluster.start)


async def test_a_restart_mid_run_is_waited_out_and_nothing_is_lost(
    server: RunningServer, tmp_path: Path, postgres_cluster: PostgresCluster, postgres_url: str
) -> None:
    expected = make_run(tmp_path / "run")
    a = await host(server, tmp_path / "a", "a", postgres_url)
    async with a.start("--json", "--log-format", "json", "upload", str(tmp_path / "run"), *SLOW_UPLOAD) as running:
        await running.until_moved(300 * KiB)
        await anyio.to_thread.run_sync(postgres_cluster.stop)
        moved = running.moved
        await anyio.sleep(7)  # longer than a journal call waits for its database (journal_timeout, 5 s)
        assert running.process.returncode is None, running.stderr[-2000:]
        assert running.moved > moved, "the transfer stopped moving while the database was away"
        await anyio.to_thread.run_sync(postgres_cluster.start)
        code = await running.wait(120)
    await assert_uploaded(server, Result(code, running.stdout, running.stderr), expected)
    notices = [e["message"] for e in running.events() if e.get("event") == "notice"]
    said = "\n".join(line for line in running.stderr.splitlines() if "bytes_moved" not in line)
    assert sum("journal database is unreachable" in m for m in notices) == 1, said
    assert await anyio.to_thread.run_sync(_statuses, postgres_url) == ["completed"]


async def test_an_outage_longer_than_max_wait_exits_75_and_a_rerun_finishes(
    server: RunningServer, tmp_path: Path, postgres_cluster: PostgresCluster, postgres_url: str
) -> None:
    expected = make_run(tmp_path / "run")
    a = await host(server, tmp_path / "a", "a", postgres_url)
    code, took, running = await _upload_through_an_outage(a, tmp_path / "run", postgres_cluster, 3.0)
    assert code == 75, running.stderr[-3000:]
    assert took < 30, took
    assert "journal database" in running.stderr and "flowxfer resume" in running.stderr
    document = running.stdout and Result(code, running.stdout, "").json()
    assert document["exit_code"] == 75, document

    again = await a.run("--json", "upload", str(tmp_path / "run"), *FULL_SPEED, "--max-wait", "3s")
    await assert_uploaded(server, again, expected)
    assert await anyio.to_thread.run_sync(_statuses, postgres_url) == ["completed"]


#: The run's --max-wait in the test below, and how long past it a run may take to end: its last
#: flush and its transfer's end each tried once, no journal call waiting out a timeout of its own.
MAX_WAIT = 3.0
PROMPT = 5.0


async def test_a_database_gone_mid_run_ends_the_run_promptly_after_max_wait(
    server: RunningServer, tmp_path: Path, postgres_cluster: PostgresCluster, postgres_url: str
) -> None:
    """Once ``--max-wait`` is over, the calls left (the last flush, the transfer's end) fail at once.

    The database is gone, not slow: the server's port refuses connections. Each of those calls
    once waited a whole ``journal_timeout`` for a pool that could not connect, so the run ended
    ~15 s after its database went away, whatever ``--max-wait`` said.
    """
    make_run(tmp_path / "run")
    a = await host(server, tmp_path / "a", "a", postgres_url)
    code, took, running = await _upload_through_an_outage(a, tmp_path / "run", postgres_cluster, MAX_WAIT)
    said = "\n".join(line for line in running.stderr.splitlines() if "bytes_moved" not in line)
    assert code == 75, said
    assert took < MAX_WAIT + PROMPT, f"the run ended {took:.1f} s after its database went away:\n{said}"
    assert "journal database is unreachable" in said and "flowxfer resume" in said, said
    assert Result(code, running.stdout, "").json()["exit_code"] == 75

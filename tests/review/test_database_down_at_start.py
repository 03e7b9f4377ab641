"""Issue 21: ``--max-wait`` "bounds every wait: budget, database, an execution".

``tests/fleet/test_outage.py`` stops PostgreSQL *mid-run*: the run waits it out
(or exits 75 after ``--max-wait``). Not covered: the database already away
when a cron'd host starts, e.g. during the same restart. Then the journal is
opened before any :class:`PatientJournal` exists, and the command gives up
after one ``journal_timeout`` (5 s) whatever ``--max-wait`` says: with
``--max-wait 60s`` and the database back after 8 s it exits 75 instead of
finishing, while the same outage a second later would have been waited out.
"""

from __future__ import annotations

import time
from pathlib import Path

import anyio

from tests.fleet.conftest import assert_uploaded, host, make_run
from tests.support.postgres import PostgresCluster
from tests.support.server import RunningServer

#: Longer than one journal call's own wait (journal_timeout, 5 s), well inside --max-wait.
OUTAGE = 8.0


async def test_a_database_away_at_start_is_waited_for_up_to_max_wait(
    server: RunningServer, tmp_path: Path, postgres_cluster: PostgresCluster, postgres_url: str
) -> None:
    expected = make_run(tmp_path / "run")
    a = await host(server, tmp_path / "a", "a", postgres_url)
    await anyio.to_thread.run_sync(postgres_cluster.stop)
    try:
        async with anyio.create_task_group() as tasks:

            async def back_after_the_outage() -> None:
                await anyio.sleep(OUTAGE)
                await anyio.to_thread.run_sync(postgres_cluster.start)

            tasks.start_soon(back_after_the_outage)
            result = await a.run("--json", "upload", str(tmp_path / "run"), "--max-wait", "60s", within=90)
    finally:
        await anyio.to_thread.run_sync(postgres_cluster.start)
    await assert_uploaded(server, result, expected)


async def test_a_database_away_past_max_wait_at_start_exits_75_as_interrupted(
    server: RunningServer, tmp_path: Path, postgres_cluster: PostgresCluster, postgres_url: str
) -> None:
    """Past ``--max-wait`` the command ends with 75, and its JSON says so as a mid-run outage does:
    ``interrupted`` (nothing lost, try again later), not ``failed``."""
    make_run(tmp_path / "run")
    a = await host(server, tmp_path / "a", "a", postgres_url)
    await anyio.to_thread.run_sync(postgres_cluster.stop)
    try:
        began = time.monotonic()
        result = await a.run("--json", "upload", str(tmp_path / "run"), "--max-wait", "3s", within=60)
        took = time.monotonic() - began
    finally:
        await anyio.to_thread.run_sync(postgres_cluster.start)
    assert result.code == 75, result
    assert 3 < took < 30, took
    document = result.json()
    assert document["status"] == "interrupted" and document["exit_code"] == 75, document
    assert "unreachable" in result.stderr and "Traceback" not in result.stderr, result.stderr

"""Whose lease it is: judged by the holder's own TTL, and a host that lost it records nothing more.

Two hosts on one PostgreSQL journal, the real CLI and the local server. A
host running with a long ``--lease-ttl`` heartbeats rarely; a host with a
short TTL must still wait out the holder's TTL, not its own. A host frozen
past its TTL (a paused VM, a host cut off) whose transfer another host took
over may still have progress to record: its commits are fenced by the lease,
write nothing, and stop it, so the journal keeps only the new holder's records.
"""

from __future__ import annotations

import signal
from pathlib import Path

import anyio

from flowxfer.journal import Journal
from tests.cli.conftest import Result, no_traceback
from tests.fleet.conftest import SLOW_UPLOAD, age_leases, assert_uploaded, host, hosts, make_run
from tests.support.server import RunningServer

KiB = 1024


async def test_a_host_with_a_short_ttl_waits_out_the_holder_s_long_one(
    server: RunningServer, tmp_path: Path, postgres_url: str
) -> None:
    make_run(tmp_path / "run")
    a = await host(server, tmp_path / "a", "a", postgres_url, FLOWXFER_LEASE_TTL="600s")
    b = await host(server, tmp_path / "b", "b", postgres_url, FLOWXFER_LEASE_TTL="2s")
    command = ["--json", "upload", str(tmp_path / "run"), *SLOW_UPLOAD]
    async with a.start("--log-format", "json", *command) as running:
        await running.until_moved(300 * KiB)
        running.signal(signal.SIGSTOP)  # a's heartbeats stop; by b's TTL a would be stale in 2 s
        await anyio.sleep(3)
        refused = await b.run(*command)
        running.signal(signal.SIGCONT)
        code_a = await running.wait(60)
    assert refused.code == 75, refused
    assert "already running" in refused.stderr and " on a," in refused.stderr, refused.stderr
    assert code_a == 0, running.stderr[-3000:]


def _journal_rows(url: str) -> tuple[set[tuple[str, str]], set[str], list[tuple[str, str]]]:
    """The files' (host, status), the chunks' states, and every transfer's (status, host)."""
    with Journal.open(url, host_id="observer") as journal:
        files = {(r["host"], r["status"]) for r in journal._read("SELECT host, status FROM files")}
        chunks = {r["state"] for r in journal._read("SELECT state FROM chunks")}
        transfers = [(r["status"], r["host"]) for r in journal._read("SELECT status, host FROM transfers")]
    return files, chunks, transfers


def _written_by_a_since(url: str, since: float) -> list[str]:
    """Files rows host a wrote after ``since`` (epoch seconds)."""
    with Journal.open(url, host_id="observer") as journal:
        rows = journal._read("SELECT local_path FROM files WHERE host = 'a' AND updated > ?", (since,))
    return [row["local_path"] for row in rows]


async def test_a_host_that_lost_its_lease_writes_nothing_beside_the_new_holder(
    server: RunningServer, tmp_path: Path, postgres_url: str
) -> None:
    """a's lease goes stale while a still works (its next heartbeat is 15 s away); b takes over.

    a's next progress commit, fenced by the lease it no longer holds, writes nothing and stops a
    at once: the rows of the transfer are b's alone, and b finishes it.
    """
    expected = make_run(tmp_path / "run")
    a, b = await hosts(server, tmp_path, postgres_url, "a", "b")  # the default TTL, 60 s: a heartbeat every 15 s
    command = ["--json", "upload", str(tmp_path / "run"), *SLOW_UPLOAD]
    # a at a quarter of b's pace: its first file ends ~12 s in, long after b's start-up (seconds on a
    # loaded machine) has taken the lease; at 400k a finished a file while b started, now and then.
    async with a.start("--log-format", "json", *command[:-1], "100k") as losing:
        await losing.until_moved(200 * KiB)
        await anyio.to_thread.run_sync(age_leases, postgres_url, 120.0)
        async with b.start("--log-format", "json", *command) as taking_over:
            await taking_over.until(lambda r: "transfer_started" in r.stderr)
            (started,) = [e["ts"] for e in taking_over.events() if e["event"] == "transfer_started"]
            code_a = await losing.wait(10)  # well before a's next heartbeat would have told it
            assert taking_over.process.returncode is None, taking_over.stderr[-3000:]  # b still at work
            assert await anyio.to_thread.run_sync(_written_by_a_since, postgres_url, started) == []
            code_b = await taking_over.wait(120)
    assert code_a == 75, losing.stderr[-3000:]
    no_traceback(losing.stderr)
    assert "another host or process has taken over" in losing.stderr, losing.stderr[-3000:]
    assert Result(code_a, losing.stdout, "").json()["status"] == "interrupted"
    await assert_uploaded(server, Result(code_b, taking_over.stdout, taking_over.stderr), expected)
    files, chunks, transfers = await anyio.to_thread.run_sync(_journal_rows, postgres_url)
    assert files == {("b", "done")}
    assert chunks <= {"verified"}
    assert transfers == [("completed", "b")]

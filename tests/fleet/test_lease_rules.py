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
import time
from pathlib import Path

import anyio

from flowxfer.journal import Journal
from tests.cli.conftest import Result, no_traceback
from tests.fleet.conftest import SLOW_UPLOAD, age_leases, assert_uploaded, host, hosts, journal_rows, make_run
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
        # Stale by b's TTL, live by a's: the state 3 s of waiting leaves (a, at 600 s, heartbeats
        # every 150 s, so none is in flight), made on the database's clock without the wait.
        await anyio.to_thread.run_sync(age_leases, postgres_url, 3.0)
        refused = await b.run(*command)
        running.signal(signal.SIGCONT)
        code_a = await running.wait(60)
    assert refused.code == 75, refused
    assert "already running" in refused.stderr and " on a," in refused.stderr, refused.stderr
    assert code_a == 0, running.stderr[-3000:]


def _outcome(url: str) -> tuple[set[tuple[str, str]], set[str], list[tuple[str, str]]]:
    """The files' (host, status), the chunks' states, and every transfer's (status, host)."""
    with Journal.open(url, host_id="observer") as journal:
        files = {(r["host"], r["status"]) for r in journal._read("SELECT host, status FROM files")}
        chunks = {r["state"] for r in journal._read("SELECT state FROM chunks")}
        transfers = [(r["status"], r["host"]) for r in journal._read("SELECT status, host FROM transfers")]
    return files, chunks, transfers


async def test_a_host_that_lost_its_lease_writes_nothing_beside_the_new_holder(
    server: RunningServer, tmp_path: Path, postgres_url: str
) -> None:
    """a is frozen with chunks in flight, its lease aged past the TTL; b takes over, and is frozen in turn.

    Then a wakes with its heartbeat ~10 s away and its chunks' answers coming in: only the fence on its
    first progress commit can stop it. That commit writes nothing (the journal is exactly as b left
    it, b being frozen: every change would be a's), and a exits 75 saying its lease is no longer its
    own. b, woken, finishes the transfer; its rows are b's alone. Without the fence a's commits are
    legal to the state machine (b has only reset a's files to planned), so they would be written.
    """
    expected = make_run(tmp_path / "run")
    a, b = await hosts(server, tmp_path, postgres_url, "a", "b")  # the default TTL, 60 s: a heartbeat every 15 s
    command = ["--json", "upload", str(tmp_path / "run"), *SLOW_UPLOAD]
    # a at a quarter of b's pace: a 64 KiB chunk every ~1.3 s on each of its two streams.
    async with a.start("--log-format", "json", *command[:-1], "100k") as losing:
        # ~1.5 s into its work: a's first heartbeat is 15 s after the work began, so after its
        # freeze (b's start-up, a few seconds) a still has several seconds before it.
        await losing.until_moved(128 * KiB)
        losing.signal(signal.SIGSTOP)
        await anyio.to_thread.run_sync(age_leases, postgres_url, 120.0)
        async with b.start("--log-format", "json", *command) as taking_over:
            await taking_over.until(lambda r: "transfer_started" in r.stderr)  # b holds the lease now
            taking_over.signal(signal.SIGSTOP)
            await anyio.sleep(0.5)  # a commit b sent before it stopped has landed
            left_by_b = await anyio.to_thread.run_sync(journal_rows, postgres_url)
            losing.signal(signal.SIGCONT)
            woke = time.monotonic()
            code_a = await losing.wait(30)
            stopped_after = time.monotonic() - woke
            # Checked before b wakes: b would trip over what a wrote (a file a finished), and say so first.
            assert await anyio.to_thread.run_sync(journal_rows, postgres_url) == left_by_b, "a wrote after b took over"
            # The fence's words (LeaseLost), not the heartbeat's: what stopped a was its own refused commit.
            assert "is no longer ours: another host or process has taken over" in losing.stderr, losing.stderr[-3000:]
            taking_over.signal(signal.SIGCONT)
            code_b = await taking_over.wait(120)
    assert code_a == 75, losing.stderr[-3000:]
    no_traceback(losing.stderr)
    assert stopped_after < 10, f"a took {stopped_after:.1f} s to stop after it woke"
    assert Result(code_a, losing.stdout, "").json()["status"] == "interrupted"
    await assert_uploaded(server, Result(code_b, taking_over.stdout, taking_over.stderr), expected)
    files, chunks, transfers = await anyio.to_thread.run_sync(_outcome, postgres_url)
    assert files == {("b", "done")}
    assert chunks <= {"verified"}
    assert transfers == [("completed", "b")]

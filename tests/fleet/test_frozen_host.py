"""A host frozen past its lease TTL wakes after another host finished its run: it writes nothing more.

Two host processes (``FLOWXFER_HOST_ID`` a and b) sync one run folder with
``--samples`` through one journal (PostgreSQL, or an SQLite file both
use). a is stopped (SIGSTOP: a paused VM, a long GC) while it sends the
samples' FASTQs; b runs the same command once a's lease has gone stale, takes the
run over and finishes it. Then a wakes (SIGCONT) with its progress, its file
and sample records and its transfer's end still to write: every one of them
is fenced by the lease it lost, so the journal stays exactly as b left it,
the server holds each sample once, and a exits 75, saying why.

Two ways to lose the lease: a stopped past a short TTL (a wakes with its
heartbeat due, which usually tells it first), and a stopped just after a
heartbeat with the default TTL (60 s, a heartbeat every 15 s) while its lease
is aged past the TTL in the database: a wakes with ten seconds to its next
heartbeat, so what stops it is the fence on its first write (of the samples
transfer, fenced by its own lease and by the run's visit lease).
"""

from __future__ import annotations

import signal
from pathlib import Path

import anyio
import pytest

from flowxfer.journal import Journal
from tests.cli.conftest import Running, no_traceback
from tests.fleet.conftest import age_leases, hosts, journal_rows
from tests.support.fleet import make_runs
from tests.support.samples import server_samples
from tests.support.server import RunningServer

KiB = 1024
#: The short TTL of the first way.
TTL = 3.0
SYNC = ["sync", "--samples", "--sample-type", "RNA-Seq", "--metadata", "strandedness=reverse", "--pack-small", "1M"]
#: a is slow enough to be stopped mid-sample, in many chunks (b is not): 2.4 MiB of FASTQs take ~6 s at
#: 400 KiB/s, ~24 s at 100 KiB/s (past the first heartbeat, 15 s into the transfer with the default TTL).
CHUNKS = ["--chunk-size", "64k", "--concurrency", "2"]
BWLIMIT = {"ttl": "400k", "fence": "100k"}


def _heartbeat(url: str) -> float:
    """The last heartbeat of host a's transfer lease (0 when it holds none)."""
    with Journal.open(url, host_id="observer") as journal:
        rows = journal._read("SELECT max(heartbeat) AS h FROM leases WHERE host = 'a' AND key LIKE ?", ("transfer:%",))
    return float(rows[0]["h"] or 0)


def _sending_samples(running: Running) -> bool:
    """a has started its samples transfer and sent some of it."""
    kinds = [e.get("kind") for e in running.events() if e.get("event") == "transfer_started"]
    return "samples" in kinds and running.moved >= 400 * KiB


async def _just_after_a_heartbeat(url: str) -> None:
    """Return as soon as host a renews its transfer's lease (it does every 15 s by default)."""
    before = await anyio.to_thread.run_sync(_heartbeat, url)
    with anyio.fail_after(30):
        while True:
            if await anyio.to_thread.run_sync(_heartbeat, url) > before:  # not a release (0)
                return
            await anyio.sleep(0.05)


@pytest.mark.parametrize(("way", "backend"), [("ttl", "postgresql"), ("ttl", "sqlite"), ("fence", "postgresql")])
async def test_a_host_frozen_past_its_ttl_writes_nothing_after_another_finished_its_run(
    server: RunningServer, tmp_path: Path, request: pytest.FixtureRequest, way: str, backend: str
) -> None:
    """On SQLite, a and b are two processes of one machine sharing the journal file (as two cron jobs)."""
    (run,) = make_runs(tmp_path / "seq", 1, samples=2, fastq_size=600 * KiB)
    journal = request.getfixturevalue("postgres_url") if backend == "postgresql" else str(tmp_path / "journal.db")
    env = {"FLOWXFER_LEASE_TTL": f"{TTL:g}s"} if way == "ttl" else {}
    a, b = await hosts(server, tmp_path, journal, "a", "b", **env)
    command = ["--json", SYNC[0], str(run), *SYNC[1:]]

    async with a.start("--log-format", "json", *command, *CHUNKS, "--bwlimit", BWLIMIT[way]) as frozen:
        await frozen.until(_sending_samples, within=60)
        if way == "ttl":
            frozen.signal(signal.SIGSTOP)
            await anyio.sleep(TTL + 0.5)
        else:
            await _just_after_a_heartbeat(journal)
            frozen.signal(signal.SIGSTOP)
            await anyio.to_thread.run_sync(age_leases, journal, 120.0)
        finished = await b.run(*command, *CHUNKS, within=120)
        assert finished.code == 0, finished.stderr[-3000:]
        left_by_b = await anyio.to_thread.run_sync(journal_rows, journal)
        frozen.signal(signal.SIGCONT)
        code_a = await frozen.wait(60)

    assert code_a == 75, frozen.stderr[-3000:]
    no_traceback(frozen.stderr)
    assert "taken over" in frozen.stderr, frozen.stderr[-3000:]
    if way == "fence":  # the fence's words (LeaseLost), not the heartbeat's: its refused write stopped a
        assert "is no longer ours" in frozen.stderr, frozen.stderr[-3000:]
    assert await anyio.to_thread.run_sync(journal_rows, journal) == left_by_b
    made = await server_samples(server)
    assert {name: len(samples) for name, samples in made.items()} == {"R00Sample1": 1, "R00Sample2": 1}
    assert all(len(sample["data"]) == 2 for samples in made.values() for sample in samples), made
    assert {s["name"] for s in finished.json()["samples"]} == set(made)

    jobs = (await b.run("--json", "jobs", "--all")).json()["transfers"]
    assert {j["status"] for j in jobs} == {"completed"}, jobs
    assert [j["host"] for j in jobs if j["kind"] == "samples"] == ["b"], jobs

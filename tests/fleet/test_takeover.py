"""kill -9 of one host mid-upload: another host waits out the lease TTL, then finishes the work.

Two hosts (``FLOWXFER_HOST_ID`` a and b) share one PostgreSQL journal and
see the run folder either at the same path or, with ``--path-map``, under
their own mount point. While a's lease is live, b exits 75 at once; once its
heartbeat is older than the TTL, b resumes a's transfer: the server ends up
with exactly the files' bytes, and b sends no more than a single-host
resume would (what the journal had not yet seen acknowledged).
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import anyio

from flowxfer.journal import Journal
from tests.cli.conftest import Cli, Result
from tests.fleet.conftest import FULL_SPEED, SLOW_UPLOAD, age_leases, assert_uploaded, host, hosts, make_run
from tests.support.postgres import PostgresCluster
from tests.support.rig import stored
from tests.support.server import RunningServer

KiB = 1024
#: Short enough for a test, long enough that b's start-up (~1-2 s) lands inside it after the kill.
TTL = 8.0


async def two_short_ttl_hosts(server: RunningServer, tmp_path: Path, postgres_url: str) -> tuple[Cli, Cli]:
    """Hosts a and b of the fleet on one journal, each holding its leases for :data:`TTL` only."""
    a, b = await hosts(server, tmp_path, postgres_url, "a", "b", FLOWXFER_LEASE_TTL=f"{TTL:g}s")
    return a, b


def _remaining(journal_url: str) -> tuple[str, int]:
    """The one unfinished transfer and the bytes the journal has not seen acknowledged."""
    with Journal.open(journal_url, host_id="observer") as journal:
        (record,) = journal.unfinished_transfers()
        summary = journal.summary(record.id)
        return record.id, summary.bytes_total - summary.bytes_done - summary.bytes_skipped


async def past_the_ttl(postgres_url: str, killed: float) -> None:
    """The journal as waiting out the TTL of a host killed at ``killed`` leaves it, without the wait.

    The TTL is read on the database's clock, against each lease's last heartbeat: aging every
    heartbeat by what is left of the TTL (and half a second) is the state the sleep left, a few
    seconds sooner. :func:`test_a_dead_hosts_upload_is_finished_by_another_after_the_ttl` and
    ``test_frozen_host.py``'s ``ttl`` cases still wait the TTL out on the clock.
    """
    await anyio.to_thread.run_sync(age_leases, postgres_url, max(0.0, killed + TTL + 0.5 - time.monotonic()))


async def _kill_mid_upload(a: Cli, *command: str) -> float:
    """Run ``command`` on host a and kill -9 it once some of it is sent; when it died (monotonic)."""
    async with a.start("--log-format", "json", *command) as running:
        await running.until_moved(300 * KiB)
        await running.kill9()
    return time.monotonic()


async def _refused_while_live(b: Cli, killed: float, *command: str) -> None:
    result = await b.run(*command)
    assert time.monotonic() - killed < TTL, "b started too late to see a's lease live"
    assert result.code == 75, result
    assert "already running" in result.stderr and " on a," in result.stderr, result.stderr


async def test_a_dead_hosts_upload_is_finished_by_another_after_the_ttl(
    server: RunningServer, tmp_path: Path, postgres_url: str
) -> None:
    expected = make_run(tmp_path / "shared" / "run1")
    a, b = await two_short_ttl_hosts(server, tmp_path, postgres_url)
    command = ["upload", str(tmp_path / "shared" / "run1"), *SLOW_UPLOAD]

    killed = await _kill_mid_upload(a, *command)
    await _refused_while_live(b, killed, "--json", *command)
    await _refused_while_live(b, killed, "--json", "resume")

    transfer_id, remaining = await anyio.to_thread.run_sync(_remaining, postgres_url)
    assert remaining > 0
    await anyio.sleep(max(0.0, killed + TTL + 0.5 - time.monotonic()))
    finished = await b.run("--json", "resume")
    await assert_uploaded(server, finished, expected)
    (report,) = finished.json()["transfers"]
    assert report["transfer_id"] == transfer_id and report["resumed"] is True
    assert report["bytes_transferred"] <= remaining, (report["bytes_transferred"], remaining)

    jobs = (await b.run("--json", "jobs", "--all")).json()["transfers"]
    assert [(j["transfer_id"], j["status"], j["host"]) for j in jobs] == [(transfer_id, "completed", "b")]


async def test_a_path_map_makes_both_mounts_one_piece_of_work(
    server: RunningServer, tmp_path: Path, postgres_url: str
) -> None:
    """a sees the run at mnt_a/run1, b at data/run1: one transfer, one lease, b finishes a's."""
    mnt_a, data = tmp_path / "mnt_a", tmp_path / "data"
    expected = make_run(mnt_a / "run1")
    a, b = await two_short_ttl_hosts(server, tmp_path, postgres_url)
    mapping = ("--path-map", f"{mnt_a}={data}")

    killed = await _kill_mid_upload(a, "upload", str(mnt_a / "run1"), *SLOW_UPLOAD)
    # Host b's mount: the same files (same sizes and times), another path; a's path is gone here.
    (mnt_a).rename(data)
    await _refused_while_live(b, killed, "--json", "upload", str(data / "run1"), *SLOW_UPLOAD, *mapping)

    transfer_id, remaining = await anyio.to_thread.run_sync(_remaining, postgres_url)
    await past_the_ttl(postgres_url, killed)
    without = await b.run("--json", "resume")
    assert without.code != 0, "b resumed a's files without knowing where they are"
    finished = await b.run("--json", "upload", str(data / "run1"), *FULL_SPEED, *mapping)
    await assert_uploaded(server, finished, expected)
    report = finished.json()
    assert report["transfer_id"] == transfer_id
    assert report["bytes_transferred"] <= remaining, (report["bytes_transferred"], remaining)
    # The journal keeps a's form of the paths: the same run for every host.
    shown = (await b.run("--json", "show", transfer_id)).json()
    assert {Path(f["path"]).parent for f in shown["files"]} == {mnt_a / "run1"}


async def test_a_frozen_host_that_wakes_after_a_takeover_stops_and_leaves_the_work_to_the_new_one(
    server: RunningServer, tmp_path: Path, postgres_url: str
) -> None:
    """SIGSTOP a past the TTL (a host cut off), b takes over; a wakes, finds its lease gone, exits 75."""
    expected = make_run(tmp_path / "run")
    a, b = await hosts(server, tmp_path, postgres_url, "a", "b", FLOWXFER_LEASE_TTL="3s")
    command = ["--json", "upload", str(tmp_path / "run"), *SLOW_UPLOAD]
    async with a.start("--log-format", "json", *command) as frozen:
        await frozen.until_moved(300 * KiB)
        frozen.signal(signal.SIGSTOP)
        await anyio.sleep(3.5)
        async with b.start("--log-format", "json", *command) as taking_over:
            await taking_over.until(lambda r: "transfer_started" in r.stderr)
            frozen.signal(signal.SIGCONT)
            code_a = await frozen.wait(60)
            code_b = await taking_over.wait(120)
    assert code_a == 75, frozen.stderr[-3000:]
    assert "another host or process has taken over" in frozen.stderr
    assert Result(code_a, frozen.stdout, "").json()["status"] == "interrupted"
    await assert_uploaded(server, Result(code_b, taking_over.stdout, taking_over.stderr), expected)
    jobs = (await b.run("--json", "jobs", "--all")).json()["transfers"]
    assert [(j["status"], j["host"]) for j in jobs] == [("completed", "b")]


async def test_a_host_that_cannot_renew_its_lease_for_the_ttl_stops_working(
    server: RunningServer, tmp_path: Path, postgres_cluster: PostgresCluster, postgres_url: str
) -> None:
    """The database away longer than the TTL (no --max-wait): the lease may be another host's, so a stops."""
    make_run(tmp_path / "run")
    a = await host(server, tmp_path / "a", "a", postgres_url, FLOWXFER_LEASE_TTL="3s")
    try:
        async with a.start("--log-format", "json", "upload", str(tmp_path / "run"), *SLOW_UPLOAD) as running:
            await running.until_moved(300 * KiB)
            await anyio.to_thread.run_sync(postgres_cluster.stop)
            code = await running.wait(60)
    finally:
        await anyio.to_thread.run_sync(postgres_cluster.start)
    assert code == 75, running.stderr[-3000:]
    assert "could not renew the lease for 3 s" in running.stderr


async def test_resume_takes_over_the_dead_hosts_work_and_skips_the_live_ones(
    server: RunningServer, tmp_path: Path, postgres_url: str
) -> None:
    """A cron'd ``resume`` on b: a is dead (its upload is b's now), c is alive (its upload stays c's)."""
    expected = make_run(tmp_path / "run1")
    make_run(tmp_path / "run2", seed=5)
    a, b, c = await hosts(server, tmp_path, postgres_url, "a", "b", "c", FLOWXFER_LEASE_TTL="3s")
    killed = await _kill_mid_upload(a, "upload", str(tmp_path / "run1"), *SLOW_UPLOAD)
    dead_id, _ = await anyio.to_thread.run_sync(_remaining, postgres_url)
    live = ["--log-format", "json", "upload", str(tmp_path / "run2"), "--chunk-size", "64k", "--bwlimit", "150k"]
    async with c.start(*live) as alive:
        await alive.until(lambda r: "transfer_started" in r.stderr)
        await anyio.sleep(max(0.0, killed + 3.5 - time.monotonic()))
        result = await b.run("--json", "resume")
        assert alive.process.returncode is None, "c ended before b's resume: nothing live was skipped"
        code_c = await alive.wait(60)
    assert result.code == 75, result
    document = result.json()
    assert [(t["transfer_id"], t["status"]) for t in document["transfers"]] == [(dead_id, "completed")]
    ((skipped),) = document["running_elsewhere"]
    assert skipped.startswith(alive.transfer_id()) and " on c," in skipped
    files = {Path(f["path"]).name: f["id"] for f in document["transfers"][0]["files"]}
    assert await stored(server, files) == expected
    assert code_c == 0, alive.stderr[-2000:]


async def test_a_dead_hosts_sync_is_taken_over_by_the_next_hosts_sync(
    server: RunningServer, tmp_path: Path, postgres_url: str
) -> None:
    """The fleet's usual case: cron runs the same ``sync`` on every host; a's dies, b's finishes it."""
    expected = make_run(tmp_path / "shared" / "run1")
    a, b = await two_short_ttl_hosts(server, tmp_path, postgres_url)
    command = ["sync", str(tmp_path / "shared" / "run1"), *SLOW_UPLOAD]

    killed = await _kill_mid_upload(a, *command)
    await _refused_while_live(b, killed, "--json", *command)
    transfer_id, remaining = await anyio.to_thread.run_sync(_remaining, postgres_url)
    await past_the_ttl(postgres_url, killed)
    finished = await b.run("--json", *command[:2], *FULL_SPEED)
    await assert_uploaded(server, finished, expected)
    assert finished.json()["transfer_id"] == transfer_id
    assert finished.json()["bytes_transferred"] <= remaining
    again = await a.run("--json", *command)  # a back from the dead: nothing left to send
    assert again.code == 0 and again.json()["bytes_transferred"] == 0, again

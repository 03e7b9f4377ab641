"""A host whose lease is taken over stops at its next heartbeat, cancelling its requests in flight.

Whatever an in-flight request of the old holder brings back can no longer be
recorded (its writes are fenced), so the host does not give it the grace
period a SIGINT gets: its heartbeat, finding the lease another host's,
cancels the workers at once and the command exits 75. Here the upload sends
1 MiB chunks at 100 KiB/s, so a chunk in flight has seconds to go when the
lease is taken (by a row update that is what a takeover writes): the host
must be gone long before that chunk, or the 10 s grace period, could end.
A ``download --execution --wait`` waiting for its run (no workers yet, its
lease renewed by the wait) stops as soon as its renewal finds the lease gone.
"""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import pytest

from flowxfer.cli._exits import TEMPFAIL, exception_exit_code
from flowxfer.journal import Journal, JournalError, LeaseLost
from tests.cli.conftest import Running, no_traceback
from tests.cli.test_cli_executions import lab, waiting
from tests.fleet.conftest import host
from tests.support.server import RunningServer
from tests.transfer.conftest import write_random

MiB = 1024 * 1024
TTL = 2.0  # a heartbeat every 0.5 s


def _take_over(location: str) -> None:
    """Host b takes host a's transfer lease, as a takeover after the TTL writes it."""
    with Journal.open(location, host_id="b") as b, b._unfenced() as conn:
        taken = conn.execute(
            "UPDATE leases SET token = 'b-token', host = 'b', pid = 1, heartbeat = ? WHERE host = 'a'", (time.time(),)
        ).rowcount
    assert taken == 1


async def _stopped_after_takeover(losing: Running, location: str) -> float:
    """Take ``losing``'s lease; the seconds it then took to exit 75, saying why, without a traceback."""
    await anyio.to_thread.run_sync(_take_over, location)
    taken = time.monotonic()
    code = await losing.wait(30)
    stopped_after = time.monotonic() - taken
    assert code == 75, losing.stderr[-3000:]
    no_traceback(losing.stderr)
    assert "another host or process has taken over this transfer" in losing.stderr, losing.stderr[-3000:]
    return stopped_after


def _files(running: Running, event: str = "file_started") -> set[str]:
    """The names of the files ``event`` was said of."""
    return {e["name"] for e in running.events() if e.get("event") == event}


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
async def test_a_lost_lease_cancels_the_requests_in_flight_at_the_next_heartbeat(
    server: RunningServer, tmp_path: Path, request: pytest.FixtureRequest, backend: str
) -> None:
    write_random(tmp_path / "run" / "big.bin", 4 * MiB, 3)
    write_random(tmp_path / "run" / "small.bin", 1000, 4)
    location = request.getfixturevalue("postgres_url") if backend == "postgresql" else str(tmp_path / "journal.db")
    a = await host(server, tmp_path / "a", "a", location, FLOWXFER_LEASE_TTL=f"{TTL:g}s")
    command = ["--log-format", "json", "upload", str(tmp_path / "run"), "--chunk-size", "1M", "--bwlimit", "100k"]
    async with a.start(*command) as losing:
        # small.bin is acknowledged within a second; big.bin's first chunk, sent beside it, has ~10 s to go.
        await losing.until(lambda r: _files(r, "file_finished") == {"small.bin"} and "big.bin" in _files(r))
        await anyio.sleep(0.5)  # small.bin's commit (every 0.1 s) is made: the heartbeat is the next to ask
        assert "big.bin" not in _files(losing, "file_finished"), "no request was in flight to cancel"
        stopped_after = await _stopped_after_takeover(losing, location)
    assert stopped_after < 4.0, f"a took {stopped_after:.1f} s to stop after its lease was taken"


async def test_a_wait_for_an_execution_stops_once_its_lease_is_taken(tmp_path: Path) -> None:
    async with lab(tmp_path) as r:
        execution_id, _ = await r.register("--status", "-")  # pending until finished: never, here
        r.cli.env_extra.update({"FLOWXFER_HOST_ID": "a", "FLOWXFER_LEASE_TTL": f"{TTL:g}s"})
        command = ["--log-format", "json", "download", "--execution", execution_id, "--wait", "-o", str(tmp_path / "o")]
        async with r.cli.start(*command) as losing:
            await losing.until(waiting)
            stopped_after = await _stopped_after_takeover(losing, str(r.cli.journal))
    assert stopped_after < 3.0, f"the wait went on {stopped_after:.1f} s after its lease was taken"


def test_a_lost_lease_that_ends_a_command_is_try_again_later() -> None:
    """A :class:`LeaseLost` no run caught (a journal error, otherwise a usage error: 2) exits 75."""
    assert exception_exit_code(LeaseLost("transfer:abc")) == TEMPFAIL == 75
    assert exception_exit_code(JournalError("bad journal")) == 2

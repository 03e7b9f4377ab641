"""A fleet's cron visits are cheap: a run another host holds, or a run already done, costs (almost) no request.

Every host of a fleet visits every run folder each time cron fires. A visit to
a run another live host is sending exits 75 before asking the server anything
(the run's visit lease is taken first); a visit to a run whose samples the
shared journal records as made, as the sheet stands, checks nothing against
the server's catalog. Requests are counted in the real server's access log.
"""

from __future__ import annotations

from pathlib import Path

from flowxfer.journal import Journal
from tests.cli.conftest import Cli
from tests.support.fleet import make_runs
from tests.support.server import ServerProcess

SYNC = ["sync", "--samples", "--sample-type", "RNA-Seq", "--metadata", "strandedness=reverse", "--pack-small", "1M"]


def _requests(server: ServerProcess) -> int:
    """Requests the server has logged so far (one access-log line each)."""
    return sum(" aiohttp.access " in line for line in server.log_path.read_text().splitlines())


async def test_a_held_run_exits_75_without_a_request_and_a_done_one_asks_at_most_once(
    tmp_path: Path, postgres_url: str
) -> None:
    (run,) = make_runs(tmp_path / "seq", 1, samples=1)
    key = f"visit:{run.resolve()}"  # the run as sync names it (tmp_path may be under a symlink)
    with ServerProcess(tmp_path / "flow-root") as server:
        env = {"FLOWXFER_JOURNAL": postgres_url, "FLOWXFER_HOST_ID": "b"}
        b = Cli(server.base_url, tmp_path / "b", env)
        await b.login("alice", server.users["alice"])
        with Journal.open(postgres_url, host_id="a") as journal:
            lease = journal.acquire_lease(key, what="flowxfer sync --samples")
            before = _requests(server)
            held = await b.run(*SYNC[:1], str(run), *SYNC[1:])
            assert held.code == 75, held
            assert "already running" in held.stderr and " on a," in held.stderr, held.stderr
            assert _requests(server) == before, "a visit to a run another host holds asked the server"
            lease.release()

        a = Cli(server.base_url, tmp_path / "a", {**env, "FLOWXFER_HOST_ID": "a"})
        await a.login("alice", server.users["alice"])
        first = await a.run("--json", *SYNC[:1], str(run), *SYNC[1:])
        assert first.code == 0, first.stderr
        before = _requests(server)
        again = await b.run("--json", *SYNC[:1], str(run), *SYNC[1:])
        assert again.code == 0, again.stderr
        assert _requests(server) - before <= 1, "a visit to a run another host did asked the server more than once"
        samples = again.json()["samples"]
        assert [s["status"] for s in samples] == ["skipped"], samples

"""``flowxfer download --execution`` as a lab runs it: the real command against the real server.

The lab scenario end to end (a sample uploaded, a run registered with outputs
and a delayed OK, ``download --execution ID --wait`` waits, downloads,
verifies; a re-run moves 0 bytes), the documented exit codes (6: the run
failed, 75: try later), and ``kill -9`` while waiting and while downloading,
then the same command: every output exactly once, verified, and no storm of
polls (each counted on the wire by a recording proxy).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import anyio

from flowxfer.server import Admin
from tests.server.conftest import Api
from tests.server.test_samples import upload_file
from tests.support.faultproxy import FaultProxy, Match, Record, RespondWith
from tests.support.server import RunningServer, running_server
from tests.transfer.conftest import file_sizes, tree_bytes, write_random

from .conftest import Cli, KiB, MiB, Result, Running


@dataclass
class Lab:
    server: RunningServer
    cli: Cli
    log: Record
    proxy: FaultProxy

    async def register(self, *args: str) -> tuple[str, str]:
        """``flowxfer admin execution add alice ...``: (id, identifier)."""
        result = await self.cli.run(
            "admin",
            "--root",
            str(self.server.root),
            "execution",
            "add",
            "alice",
            "--pipeline",
            "RNA-Seq",
            "--version",
            "3.4",
            *args,
        )
        assert result.code == 0, result
        _, _, execution_id, identifier = result.stdout.split()
        return execution_id, identifier

    def polls(self, execution_id: str) -> int:
        """Trimmed polls of the execution that reached the server (``include=finished``: not the listing)."""
        return sum(1 for e in self.log.select("GET", f"^/executions/{execution_id}$") if "include=finished" in e.path)

    async def finish(self, execution_id: str, status: str = "OK") -> None:
        """``admin execution finish``, in a thread (the server answers on this loop)."""

        def end() -> None:
            with Admin(self.server.root) as admin:
                admin.finish_execution(execution_id, status)

        await anyio.to_thread.run_sync(end)

    async def finish_after_polls(self, execution_id: str, polls: int, status: str = "OK") -> None:
        """End the run once ``polls`` polls of it were answered (the proxy records an exchange when
        its answer is delivered): a wait counted in polls, not seconds, so however slowly a loaded
        machine starts the command, it sees the run pending ``polls`` times, then the end."""
        while self.polls(execution_id) < polls:  # noqa: ASYNC110 (a Record has no event to wait on)
            await anyio.sleep(0.05)
        await self.finish(execution_id, status)

    async def run_finishing(self, execution_id: str, polls: int, status: str, *command: str) -> Result:
        """Run ``command`` while the run ends after ``polls`` polls (never, if the command polls fewer)."""
        async with anyio.create_task_group() as group:
            group.start_soon(self.finish_after_polls, execution_id, polls, status)
            result = await self.cli.run(*command)
            group.cancel_scope.cancel()
        return result


@asynccontextmanager
async def lab(tmp_path: Path) -> AsyncIterator[Lab]:
    async with running_server(tmp_path / "root") as srv:
        port = int(srv.base_url.rsplit(":", 1)[1])
        async with FaultProxy("127.0.0.1", port) as proxy:
            log = proxy.add(Record())
            cli = Cli(proxy.url, tmp_path / "home")
            await cli.login("alice", srv.users["alice"])
            yield Lab(srv, cli, log, proxy)


def waiting(run: Running) -> bool:
    """The command said it waits for the run (``--log-format json``)."""
    return any(e.get("event") == "execution_waiting" for e in run.events())


def outputs(tmp_path: Path, sizes: dict[str, int]) -> tuple[list[str], dict[str, bytes]]:
    """``--output PROCESS=FILE`` arguments for files of these sizes (``{"process/name": size}``) and their bytes."""
    args, expected = [], {}
    for seed, (relative, size) in enumerate(sizes.items()):
        path = write_random(tmp_path / "made" / relative, size, seed)
        args += ["--output", f"{relative.split('/')[0]}={path}"]
        expected[relative] = path.read_bytes()
    return args, expected


async def test_the_lab_scenario_waits_downloads_verifies_and_a_rerun_moves_nothing(tmp_path: Path) -> None:
    async with lab(tmp_path) as r:
        async with aiohttp.ClientSession() as http:
            sample = await upload_file(
                Api(http, r.server.base_url, r.server.users), "alice", b"ACGT" * 100, filename="reads.fq", name="liver1"
            )
        made, expected = outputs(
            tmp_path, {"fastqc/report.html": 30 * KiB, "multiqc/report.html": 70 * KiB, "salmon/quant.sf": 5 * KiB}
        )
        execution_id, identifier = await r.register("--sample", str(sample["sample_id"]), *made, "--status", "-")
        out = tmp_path / "results"
        command = [
            "--json",
            "download",
            "--execution",
            execution_id,
            "--wait",
            "--poll-interval",
            "0.5",
            "-o",
            str(out),
        ]
        first = await r.run_finishing(execution_id, 1, "OK", *command)
        assert first.code == 0, first.stderr
        document = first.json()
        assert document["status"] == "completed" and "checksum" in document["verified"]
        assert document["executions"] == {execution_id: {"identifier": identifier, "status": "OK"}}
        assert tree_bytes(out) == expected  # both report.html, each in its process's folder
        assert r.polls(execution_id) >= 2  # it did wait: the run was pending at the first poll
        assert r.log.select("GET", "^/downloads/") and not r.log.select("POST", "^/downloads")

        again = await r.cli.run(*command)
        assert again.code == 0 and again.json()["bytes_transferred"] == 0, again.stderr
        assert tree_bytes(out) == expected


async def test_an_error_after_a_wait_exits_6_naming_the_run(tmp_path: Path) -> None:
    async with lab(tmp_path) as r:
        made, _ = outputs(tmp_path, {"salmon/quant.sf": KiB})
        execution_id, identifier = await r.register(*made, "--schedule", "0s=-,1h=ERROR")
        result = await r.run_finishing(
            execution_id,
            1,
            "ERROR",
            *("download", "--execution", execution_id, "--wait", "--poll-interval", "0.3", "-o", str(tmp_path / "out")),
        )
        assert result.code == 6, result
        assert f"execution {execution_id} ({identifier}) ended ERROR" in result.stderr
        assert f"execution {execution_id} ({identifier}): running, waited" in result.stderr  # the wait, shown
        assert not (tmp_path / "out").exists()
        partial = await r.cli.run("download", "--execution", execution_id, "--partial", "-o", str(tmp_path / "out"))
        assert partial.code == 6 and (tmp_path / "out" / "salmon" / "quant.sf").exists(), partial


async def test_a_run_that_never_finishes_stops_at_max_wait_with_75(tmp_path: Path) -> None:
    async with lab(tmp_path) as r:
        execution_id, _ = await r.register("--status", "-")
        result = await r.cli.run(
            "download",
            "--execution",
            execution_id,
            "--wait",
            "--poll-interval",
            "0.3",
            "--max-wait",
            "1.5",
            "-o",
            str(tmp_path / "out"),
            within=20,
        )
        assert result.code == 75, result
        assert "after --max-wait" in result.stderr and execution_id in result.stderr
        assert 3 <= r.polls(execution_id) <= 7
        unfinished = await r.cli.run("download", "--execution", execution_id, "-o", str(tmp_path / "out"))
        assert unfinished.code == 75 and "still running" in unfinished.stderr, unfinished


async def test_kill9_while_waiting_then_the_same_command_polls_on_schedule(tmp_path: Path) -> None:
    """The kill lands right after the first poll; the run ends once the second run says it waits.

    Polling every 6 s, the second run's first poll is due 6 s after the first run's (journaled):
    it says so, then finds OK at once. Without that memory it would poll on start, find it running,
    and poll again. (6 s: the second command must start within it, even on a loaded machine.)
    """
    async with lab(tmp_path) as r:
        made, expected = outputs(tmp_path, {"multiqc/report.html": 20 * KiB})
        execution_id, _ = await r.register(*made, "--status", "-")
        command = [
            "--log-format",
            "json",
            "--json",
            "download",
            "--execution",
            execution_id,
            "--wait",
            "--poll-interval",
            "6",
            "-o",
            str(tmp_path / "out"),
        ]
        async with r.cli.start(*command) as first:
            await first.until(waiting)
            await first.kill9()
        assert r.polls(execution_id) == 1
        r.log.clear()
        async with r.cli.start(*command) as second:
            await second.until(waiting)
            await r.finish(execution_id)
            assert await second.wait() == 0, second.stderr
        assert json.loads(second.stdout)["resumed"] is True  # the same transfer, whose state holds the first poll
        assert r.polls(execution_id) == 1, [e.path for e in r.log.entries]
        waits = [e for e in second.events() if e.get("event") == "execution_waiting"]
        assert waits[0]["next_poll"] > 0 and waits[-1]["status"] == "OK"
        assert tree_bytes(tmp_path / "out") == expected


async def test_kill9_while_downloading_then_the_same_command_delivers_each_output_once(tmp_path: Path) -> None:
    async with lab(tmp_path) as r:
        made, expected = outputs(
            tmp_path, {"star/aligned.bam": 12 * MiB + 77, "star/log.txt": 3 * KiB, "salmon/log.txt": 4 * KiB}
        )
        execution_id, _ = await r.register(*made)
        out = tmp_path / "out"
        command = [
            "--log-format",
            "json",
            "--json",
            "download",
            "--execution",
            execution_id,
            "--wait",
            "-o",
            str(out),
            "--bwlimit",
            "6M",
            "--concurrency",
            "1",
        ]
        async with r.cli.start(*command) as first:
            await first.until_moved(4 * MiB)
            await first.kill9()
        moved_before = first.moved
        assert (out / "star" / "aligned.bam.part").exists() and not (out / "star" / "aligned.bam").exists()
        r.log.clear()
        second = await r.cli.run(*command)
        assert second.code == 0, second.stderr
        document = second.json()
        assert document["transfer_id"] == first.transfer_id() and document["resumed"] is True
        assert tree_bytes(out) == expected and not list(out.rglob("*.part"))
        assert not r.log.select("GET", "^/executions/")  # the journal knew the run and its outputs
        total = sum(file_sizes(out).values())
        refetched = moved_before + document["bytes_transferred"] - total
        # Below zero by a block at most: one on disk (and kept by the resume's check against the
        # chunk map) whose bytes_moved line the kill cut off.
        assert -MiB <= refetched <= MiB, (moved_before, document["bytes_transferred"])


def many_outputs(count: int) -> dict[str, int]:
    """Many small outputs, and names (report.html, versions.yml) that every process shares."""
    sizes = {f"fastqc/s{i}_fastqc.zip": KiB + i for i in range(count)}
    for process in ("fastqc", "multiqc", "salmon"):
        sizes[f"{process}/report.html"] = 2 * KiB + len(process)
        sizes[f"{process}/versions.yml"] = 100 + len(process)
    return sizes


async def test_many_small_outputs_come_as_one_archive_laid_out_by_process(tmp_path: Path) -> None:
    """``download --execution --auto-bulk`` and ``bulk --execution``: one POST /downloads, one archive GET."""
    async with lab(tmp_path) as r:
        made, expected = outputs(tmp_path, many_outputs(55))
        execution_id, identifier = await r.register(*made, "--finish-in", "1s")
        out = tmp_path / "results"
        command = [
            "--json",
            "download",
            "--execution",
            execution_id,
            "--wait",
            "--poll-interval",
            "0.5",
            "--auto-bulk",
            "-o",
            str(out),
        ]
        first = await r.cli.run(*command)
        assert first.code == 0, first.stderr
        document = first.json()
        assert [t["kind"] for t in document["transfers"]] == ["results", "bulk"]
        assert document["executions"] == {execution_id: {"identifier": identifier, "status": "OK"}}
        assert tree_bytes(out) == expected  # three report.html, three versions.yml, none overwritten
        assert len(r.log.select("POST", "^/downloads$")) == 1
        assert not r.log.select("GET", f"^/downloads/(?!jobs/)[^/]+/{'report.html'}$")  # no single downloads
        r.log.clear()
        again = await r.cli.run(*command)
        assert again.code == 0, again.stderr
        assert [t["bytes_transferred"] for t in again.json()["transfers"]] == [0]
        assert not r.log.select("POST", "^/downloads$") and tree_bytes(out) == expected

        flat = tmp_path / "flat"
        archived = await r.cli.run("bulk", "--execution", execution_id, "--layout", "flat", "-o", str(flat))
        assert archived.code == 0, archived.stderr
        singly = await r.cli.run(
            "download", "--execution", execution_id, "--layout", "flat", "-o", str(tmp_path / "singly")
        )
        assert singly.code == 0 and tree_bytes(flat) == tree_bytes(tmp_path / "singly"), singly.stderr
        assert len(tree_bytes(flat)) == len(expected) and not (flat / ".flowxfer-archive").exists()


async def test_bulk_execution_refuses_what_it_cannot_do(tmp_path: Path) -> None:
    async with lab(tmp_path) as r:
        execution_id, _ = await r.register("--status", "-")
        for args in (
            ["bulk", "--execution", execution_id, "123"],
            ["bulk", "--execution", execution_id, "--extract"],
            ["bulk"],
            ["bulk", "123", "--partial"],
        ):
            result = await r.cli.run(*args)
            assert result.code == 2 and "Traceback" not in result.stderr, result
        running = await r.cli.run("bulk", "--execution", execution_id, "-o", str(tmp_path / "out"))
        assert running.code == 75 and "still running" in running.stderr, running


async def test_bulk_execution_whose_job_outlasts_timeout_is_75_then_a_rerun_finishes(tmp_path: Path) -> None:
    """``--timeout`` ends the archive job's wait: try again later (75, as plain ``bulk``), not a failure;
    the same command then re-attaches to the job and finishes."""
    async with lab(tmp_path) as r:
        made, expected = outputs(tmp_path, {f"salmon/s{i}.quant.sf": 1 * KiB + i for i in range(30)})
        execution_id, _ = await r.register(*made)
        out = tmp_path / "out"
        command = ["--json", "bulk", "--execution", execution_id, "--poll-interval", "0.1", "-o", str(out)]
        still = {"status": "running", "progress": 0.1}
        running = r.proxy.add(RespondWith.json(200, still, match=Match("GET", "^/downloads/jobs/"), times=None))
        first = await r.cli.run(*command, "--timeout", "0.5")
        assert first.code == 75, first
        assert first.json()["transfers"][-1]["stop_reason"] == "timeout"
        r.proxy.remove(running)
        second = await r.cli.run(*command)
        assert second.code == 0, second.stderr
        assert len(r.log.select("POST", "^/downloads$")) == 1  # the same job
        assert sorted(tree_bytes(out).values()) == sorted(expected.values())


async def test_kill9_while_the_archive_downloads_then_the_same_command_reattaches(tmp_path: Path) -> None:
    """The same ``bulk --execution`` after a kill re-attaches to its job: one POST /downloads, each output once."""
    async with lab(tmp_path) as r:
        made, expected = outputs(
            tmp_path,
            {f"salmon/s{i}.quant.sf": 40 * KiB + i for i in range(60)}
            | {"multiqc/report.html": 3 * KiB, "salmon/report.html": 4 * KiB},
        )
        execution_id, _ = await r.register(*made)
        out = tmp_path / "out"
        command = [
            "--log-format",
            "json",
            "--json",
            "bulk",
            "--execution",
            execution_id,
            "--layout",
            "flat",
            "-o",
            str(out),
            "--bwlimit",
            "600k",
        ]
        async with r.cli.start(*command) as first:
            await first.until_moved(600 * KiB)
            await first.kill9()
        assert not (out / "report.html").exists()  # nothing placed yet: the archive was still coming
        second = await r.cli.run(*command)
        assert second.code == 0, second.stderr
        assert [t["kind"] for t in second.json()["transfers"]] == ["results", "bulk"]
        assert second.json()["transfers"][1]["resumed"] is True
        assert len(r.log.select("POST", "^/downloads$")) == 1  # re-attached to the first run's job
        got = tree_bytes(out)
        assert sorted(got.values()) == sorted(expected.values()) and len(got) == len(expected)
        assert "report.html" in got and not (out / ".flowxfer-archive").exists()

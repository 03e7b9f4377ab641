"""``flowxfer sync`` as cron runs it: real processes, a real server process, exit codes and output."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.runfolder import make_run_folder, run_files
from tests.support.server import ServerProcess
from tests.transfer.conftest import KiB, write_random


class Cli:
    """``flowxfer`` subprocesses sharing one config dir and journal, logged in as alice."""

    def __init__(self, base_url: str, home: Path) -> None:
        self.env = {
            **os.environ,
            "FLOW_API_URL": base_url,
            "FLOWXFER_CONFIG_DIR": str(home / "config"),
            "FLOWXFER_JOURNAL": str(home / "journal.db"),
            "PYTHONUNBUFFERED": "1",
        }
        result = self.run("login", "-u", "alice", "--password-stdin", stdin="alice-pw-1\n")
        assert result.returncode == 0, result.stderr

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-c", "from flowxfer.cli import main; main()", *args]

    def run(self, *args: str, stdin: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command(*args), input=stdin, capture_output=True, text=True, env=self.env, timeout=timeout
        )

    def start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.command(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=self.env
        )


@pytest.fixture
def flow(tmp_path: Path) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path / "root") as srv:
        yield srv


def test_waiting_then_ready_then_nothing_to_do(flow: ServerProcess, tmp_path: Path) -> None:
    cli = Cli(flow.base_url, tmp_path / "home")
    run = make_run_folder(tmp_path / "runs", lanes=1, samples=1, small_files=8, complete=False)
    waiting = cli.run("sync", str(run), "--ready-marker", "CopyComplete.txt", "--pack-small", "64k")
    assert waiting.returncode == 0, waiting.stderr
    assert waiting.stdout.strip() == f"waiting for CopyComplete.txt in {run} (nothing sent)"
    (run / "CopyComplete.txt").write_text("done\n")
    first = cli.run("--json", "sync", str(run), "--ready-marker", "CopyComplete.txt", "--pack-small", "64k")
    assert first.returncode == 0, first.stderr
    document = json.loads(first.stdout)
    assert document["kind"] == "sync" and document["status"] == "completed"
    assert document["packed_files"] + 2 == len(run_files(run)) and document["unchanged"] == 0
    again = cli.run("sync", str(run), "--ready-marker", "CopyComplete.txt", "--pack-small", "64k")
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines()[0] == f"sync: {len(run_files(run))} unchanged"
    assert "completed: 0 uploaded, 0 skipped, 0 failed" in again.stdout


def test_dry_run_shows_the_plan_and_the_rate_limit_arithmetic(tmp_path: Path) -> None:
    with ServerProcess(tmp_path / "root", "--rate-limits", "default") as flow:
        cli = Cli(flow.base_url, tmp_path / "home")
        run = tmp_path / "run"
        for i in range(150):
            write_random(run / "tiles" / f"t{i:03d}.bin", 200, seed=i)
        for i in range(3):
            write_random(run / f"big{i}.fastq.gz", 100 * KiB, seed=i)
        plain = cli.run("sync", str(run), "--dry-run")
        assert plain.returncode == 0, plain.stderr
        assert "in 153 upload(s)" in plain.stdout
        assert "153 upload (budget 100/h: ~" in plain.stdout  # 53 more than an hour's budget: waits
        packed = cli.run("--json", "sync", str(run), "--dry-run", "--pack-small", "64k", "--share", "group:lab=read")
        assert packed.returncode == 0, packed.stderr
        document = json.loads(packed.stdout)
        assert document["dry_run"] and document["packs"] == 1 and document["packed_files"] == 150
        assert document["requests"] == {"upload": 4, "api": 4} and document["seconds"] == 0
        # Nothing was sent, nothing journaled as a transfer.
        assert cli.run("--json", "jobs", "--all").stdout.strip() == '{"transfers": []}'


def test_rule_order_on_the_command_line_decides(flow: ServerProcess, tmp_path: Path) -> None:
    cli = Cli(flow.base_url, tmp_path / "home")
    run = tmp_path / "run"
    for name in ("keep.log", "drop.log", "a.fastq.gz"):
        write_random(run / name, 100)
    result = cli.run("--json", "sync", str(run), "--exclude", "*.log", "--include=keep.log", "--include", "*.gz")
    assert result.returncode == 0, result.stderr
    assert sorted(f["filename"] for f in json.loads(result.stdout)["files"]) == ["a.fastq.gz", "keep.log"]


def test_json_log_lines_are_events_and_a_summary(flow: ServerProcess, tmp_path: Path) -> None:
    cli = Cli(flow.base_url, tmp_path / "home")
    run = make_run_folder(tmp_path / "runs", lanes=1, samples=1, small_files=4)
    result = cli.run("--log-format", "json", "sync", str(run), "--pack-small", "64k")
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stderr.splitlines()]
    kinds = [e["event"] for e in events]
    # Two FASTQs on their own; the run's top folder, InterOp and one cycle folder as tars.
    assert kinds.count("file_started") == kinds.count("file_finished") == 5
    assert kinds[-1] == "summary" and events[-1]["status"] == "completed" and events[-1]["packs"] == 3


def start_up(cli: Cli) -> float:
    """Seconds a command takes to start, import the engine, open the journal and end (``jobs``)."""
    started = time.monotonic()
    assert cli.run("jobs").returncode == 0
    return time.monotonic() - started


def test_overlapping_runs_second_exits_75_at_once_then_resume_finishes(flow: ServerProcess, tmp_path: Path) -> None:
    cli = Cli(flow.base_url, tmp_path / "home")
    run = tmp_path / "run"
    for i in range(8):
        write_random(run / f"S{i}_R1_001.fastq.gz", 256 * KiB, seed=i)
    args = ("sync", str(run), "--bwlimit", "256k", "--chunk-size", "64k", "--concurrency", "2")
    first = cli.start("--log-format", "json", *args)
    try:
        assert first.stderr is not None
        deadline = time.monotonic() + 30
        while True:  # wait until the first run is really uploading
            line = first.stderr.readline()
            assert line and time.monotonic() < deadline, "the first sync never started"
            if '"event": "file_started"' in line:
                break
        # The first run frozen holds its lease however slowly the second starts on a loaded machine;
        # a second run that waited for the holder would never end (the timeout says so).
        first.send_signal(signal.SIGSTOP)
        try:
            before = start_up(cli)
            started = time.monotonic()
            second = cli.run(*args, timeout=30)
            elapsed = time.monotonic() - started
            after = start_up(cli)
        finally:
            first.send_signal(signal.SIGCONT)
        assert second.returncode == 75, second.stderr
        assert "already running (flowxfer sync): pid" in second.stderr and str(first.pid) in second.stderr
        # "At once": about as long as a command that opens the journal takes (measured just before
        # and just after, as the machine's load changes); twice that and a second is the margin.
        baseline = max(before, after)
        assert elapsed < 2 * baseline + 1.0, (
            f"the second run took {elapsed:.2f} s to give up ({baseline:.2f} s to start)"
        )
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=30) == 143
    finally:
        if first.poll() is None:
            first.kill()
        first.communicate()
    resumed = cli.run("--json", "resume")
    assert resumed.returncode == 0, resumed.stderr
    (report,) = json.loads(resumed.stdout)["transfers"]
    assert report["kind"] == "sync" and report["status"] == "completed"
    final = cli.run("--json", "sync", *args[1:])
    assert json.loads(final.stdout)["unchanged"] == 8
    data = json.loads(cli.run("--json", "jobs", "--all").stdout)["transfers"]
    assert [(t["kind"], t["files_done"], t["files_total"]) for t in data] == [("sync", 8, 8)]


def test_blocking_api_sync_then_bulk(flow: ServerProcess, tmp_path: Path) -> None:
    """What a script without an event loop does: the same calls, blocking."""
    from flowxfer.transfer import SyncOptions, blocking

    options = {"base_url": flow.base_url, "config_dir": tmp_path / "config", "journal": tmp_path / "journal.db"}
    blocking.login("alice", "alice-pw-1", **options)
    run = make_run_folder(tmp_path / "runs", lanes=1, samples=1, small_files=4)
    report = blocking.sync(run, SyncOptions(pack_small=64 * KiB, ready_marker="CopyComplete.txt"), **options)
    assert report.status == "completed"
    fastqs = [f.id for f in report.files if f.filename.endswith(".fastq.gz") and f.id]
    fetched = blocking.bulk(fastqs, output_dir=tmp_path / "back", extract=True, **options)
    assert fetched.status == "completed" and len(fetched.extra["extracted"]) == 2
    for path in fetched.extra["extracted"]:
        assert Path(path).read_bytes() == (run / "Fastq" / "L001" / Path(path).name).read_bytes()


def test_help_and_usage_errors(flow: ServerProcess, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from flowxfer.cli import main

    for command in ("sync", "bulk", "download"):
        result = CliRunner().invoke(main, [command, "--help"])
        assert result.exit_code == 0 and "Example:" in result.output, command
    cli = Cli(flow.base_url, tmp_path / "home")
    for args, message in (
        (["sync", str(tmp_path), "--share", "team:lab=read"], "group:NAME=LEVEL"),
        (["sync", str(tmp_path), "--include", "[unclosed"], "unclosed"),
        (["sync", str(tmp_path / "missing")], "no such folder"),
        (["bulk", "123", "--name", "x.tar"], "must end in .zip"),
        (["bulk", "123", "--name", "a b.zip"], "Spaces"),
    ):
        result = cli.run(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert message in result.stderr and "Traceback" not in result.stderr, (args, result.stderr)

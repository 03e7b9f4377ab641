"""What a person sees: bars on a terminal (a real pty), plain lines in a pipe, JSON events for shippers."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

from tests.samples.test_samples_upload_cli import paired_sheet
from tests.support.server import ServerProcess
from tests.transfer.conftest import write_random

CLI = [sys.executable, "-c", "from flowxfer.cli import main; main()"]


def _env(server: ServerProcess, tmp: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "FLOW_API_URL": server.base_url,
        "FLOWXFER_CONFIG_DIR": str(tmp / "cfg"),
        "FLOWXFER_JOURNAL": str(tmp / "j.db"),
        "FLOWXFER_PROGRESS_INTERVAL": "0.2",
        "COLUMNS": "100",
    }
    subprocess.run(
        [*CLI, "login", "-u", "alice", "--password-stdin"],
        input=server.users["alice"] + "\n",
        text=True,
        env=env,
        check=True,
        capture_output=True,
    )
    return env


def _slow_upload(tmp: Path, name: str) -> list[str]:
    """An upload that lasts about two seconds (bandwidth-limited), so progress has time to show."""
    path = write_random(tmp / name, 3 * 1024 * 1024)
    return [*CLI, "upload", "--bwlimit", "1536k", "--chunk-size", "256k", str(path)]


def test_a_terminal_shows_bars(tmp_path: Path) -> None:
    with ServerProcess(tmp_path / "root") as server:
        env = _env(server, tmp_path)
        leader, follower = pty.openpty()
        proc = subprocess.Popen(
            _slow_upload(tmp_path, "a.bin"), env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=follower
        )
        os.close(follower)
        seen = b""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.5)
            if ready:
                try:
                    piece = os.read(leader, 65536)
                except OSError:  # the child closed its side
                    break
                if not piece:
                    break
                seen += piece
            elif proc.poll() is not None:
                break
        out, _ = proc.communicate(timeout=60)
        os.close(leader)
    assert proc.returncode == 0
    text = seen.decode(errors="replace")
    assert "\x1b[" in text  # rich redraws with ANSI control sequences
    assert "files" in text and "a.bin" in text  # the overall bar and a line for the active file
    assert "━" in text  # a drawn bar
    assert b"uploaded " in out  # result lines stay on stdout, intact


def test_a_pipe_gets_plain_lines_only(tmp_path: Path) -> None:
    with ServerProcess(tmp_path / "root") as server:
        env = _env(server, tmp_path)
        done = subprocess.run(
            _slow_upload(tmp_path, "b.bin"), env=env, capture_output=True, text=True, timeout=60, check=False
        )
    assert done.returncode == 0, done.stderr
    assert "\r" not in done.stderr and "\x1b" not in done.stderr
    progress = [line for line in done.stderr.splitlines() if " files, " in line]
    assert len(progress) >= 2, done.stderr  # periodic lines while it runs
    assert all("moved" in line for line in progress)
    assert done.stdout.startswith("uploaded ") and "completed:" in done.stdout


def test_a_pipe_counts_samples_in_its_plain_lines(tmp_path: Path) -> None:
    sheet, _ = paired_sheet(tmp_path / "run", 3, 1024 * 1024)
    with ServerProcess(tmp_path / "root") as server:
        env = _env(server, tmp_path)
        done = subprocess.run(
            [
                *CLI,
                "samples",
                "upload-batch",
                "--sheet",
                str(sheet),
                "--sample-type",
                "RNA-Seq",
                "--bwlimit",
                "2M",
                "--chunk-size",
                "256k",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if " files, " in line]
    # Once the batch is planned (a line may come before), every line counts its samples.
    progress = lines[next((n for n, line in enumerate(lines) if " samples, " in line), len(lines)) :]
    assert len(progress) >= 2, done.stderr
    counted = [line.split(" ", 2)[1] for line in progress]
    assert all(line.split(" ", 2)[2].startswith("samples, ") for line in progress), progress
    assert all(n.endswith("/3") and 0 <= int(n.split("/")[0]) <= 3 for n in counted), progress


def test_json_log_lines_parse(tmp_path: Path) -> None:
    with ServerProcess(tmp_path / "root") as server:
        env = _env(server, tmp_path)
        done = subprocess.run(
            [*CLI, "--log-format", "json", *_slow_upload(tmp_path, "c.bin")[len(CLI) :]],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stderr.splitlines() if line.strip()]
    kinds = {record["event"] for record in records}
    assert {"transfer_started", "file_started", "bytes_moved", "file_finished"} <= kinds
    assert all("ts" in record for record in records)
    finished = [r for r in records if r["event"] == "file_finished"]
    assert finished[0]["status"] == "done" and finished[0]["data_id"]

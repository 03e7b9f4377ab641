"""``flowxfer demo``: the README's first command, run for real (small size)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

CLI = [sys.executable, "-c", "from flowxfer.cli import main; main()"]


def test_demo_passes_every_check_and_reports_json(tmp_path: Path) -> None:
    done = subprocess.run(
        [*CLI, "--json", "demo", "--size", "4M", "--keep", str(tmp_path / "kept")],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    document = json.loads(done.stdout)  # nothing but the document on stdout
    assert document["ok"] is True
    names = [step["name"] for step in document["steps"]]
    assert names == [
        "not ready, nothing sent",
        "interrupted part-way",
        "resumed to completion",
        "archive downloaded, verified, extracted",
        "byte-for-byte identical",
        "samples made exactly once",
    ]
    assert all(step["ok"] for step in document["steps"])
    summary = document["summary"]
    assert summary["result"] == "every check passed"
    assert summary["re-sent after the interruption"] == "0 B"
    assert summary["samples"] == "4 made from the run; a re-run made 0"
    assert "upload" in summary["requests spent (against limits)"]
    assert "Traceback" not in done.stderr
    kept = tmp_path / "kept"
    assert (kept / "home" / "journal.db").is_file() and (kept / "server").is_dir()
    assert any((kept / "results").iterdir())


def test_demo_human_output_has_the_closing_table(tmp_path: Path) -> None:
    # A user's settings for hosted Flow must not leak into the demo's own server: its token
    # would be sent there (and refused) instead of the demo's login.
    env = {**os.environ, "FLOW_API_TOKEN": "abc.def.ghi", "FLOW_API_URL": "http://127.0.0.1:9"}
    done = subprocess.run(
        [*CLI, "demo", "--size", "2M"], capture_output=True, text=True, timeout=240, check=False, env=env
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for line in ("byte-for-byte identical", "requests spent (against limits)", "every check passed"):
        assert line in done.stdout
    assert "\r" not in done.stderr  # not a terminal: plain lines, no carriage returns


def test_demo_refuses_a_non_empty_keep_folder(tmp_path: Path) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    done = subprocess.run(
        [*CLI, "demo", "--keep", str(tmp_path / "full")], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2 and "not empty" in done.stderr

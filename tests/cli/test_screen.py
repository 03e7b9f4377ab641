"""The screen a person watches: commands in a real pty, replayed on a virtual terminal (pyte).

Each test reads the final screen (and every frame on the way) as a person
would: narration and result lines whole, in order, never overwritten by the
live display; no counter past its total; nothing drawn before there is
something to show; a resumed file's overall bar agreeing with its row.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from flowxfer.cli._runfolder import make_run_folder
from tests.samples.test_samples_upload_cli import paired_sheet
from tests.support.screen import Screen, counters, run_on_screen
from tests.support.server import ServerProcess
from tests.transfer.conftest import write_random

CLI = [sys.executable, "-c", "from flowxfer.cli import main; main()"]
MiB = 1024 * 1024

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A logged-in user of a local server (a real subprocess), with their own config and journal."""
    with ServerProcess(tmp_path / "root") as server:
        environment = {
            **os.environ,
            "FLOW_API_URL": server.base_url,
            "FLOWXFER_CONFIG_DIR": str(tmp_path / "cfg"),
            "FLOWXFER_JOURNAL": str(tmp_path / "j.db"),
            "XDG_STATE_HOME": str(tmp_path / "state"),
        }
        subprocess.run(
            [*CLI, "login", "-u", "alice", "--password-stdin"],
            input=server.users["alice"] + "\n",
            text=True,
            env=environment,
            check=True,
            capture_output=True,
        )
        yield environment


def assert_counters_within_totals(screen: Screen) -> None:
    for number, frame in enumerate(screen.frames):
        for line in frame:
            for done, total in counters(line):
                assert done <= total * 1.001, f"frame {number}: a counter past its total: {line.rstrip()!r}"


def assert_nothing_unknown_drawn(screen: Screen) -> None:
    """No bar with nothing to show (``0/? bytes ?``) at any moment."""
    for number, frame in enumerate(screen.frames):
        for line in frame:
            assert "/?" not in line, f"frame {number}: a bar with nothing to show: {line.rstrip()!r}"


def assert_lines_whole(screen: Screen, *prefixes: str) -> None:
    """Every line holding one of ``prefixes`` starts with it: no result glued to a bar."""
    for line in screen.lines:
        for prefix in prefixes:
            if prefix in line:
                assert line.startswith(prefix), f"{prefix!r} glued to something: {line.rstrip()!r}\n{screen.text}"


def bar_lines(screen: Screen) -> list[str]:
    """The final screen's lines with a bar: what stays of the live display once it is done."""
    return [line.split("━")[0].strip() for line in screen.lines if "━" in line]


def test_demo_shows_every_step_its_checks_and_its_table_top_to_bottom(tmp_path: Path) -> None:
    screen = run_on_screen([*CLI, "demo", "--size", "8M"], {**os.environ, "TMPDIR": str(tmp_path)}, within=180)
    assert screen.code == 0, screen.text
    # Nothing drawn before the first step is told.
    assert screen.lines[0].startswith("1. A local Flow server is listening on"), screen.text
    steps = [
        "1. A local Flow server",
        "2. A sequencing run is being written",
        "[ok  ] not ready, nothing sent",
        "3. The instrument wrote",
        "[ok  ] interrupted part-way",
        "4. A new session resumes from the journal",
        "[ok  ] resumed to completion",
        "5. Fetching all",
        "[ok  ] archive downloaded, verified, extracted",
        "6. Comparing every file",
        "[ok  ] byte-for-byte identical",
        "7. Making one Flow sample per Sample_ID",
        "[ok  ] samples made exactly once",
        "result",
    ]
    rows = [screen.where(step) for step in steps]
    missing = [step for step, row in zip(steps, rows, strict=True) if row < 0]
    assert not missing, f"missing: {missing}\n{screen.text}"
    assert rows == sorted(rows), f"out of order: {rows}\n{screen.text}"
    assert "every check passed" in screen.lines[rows[-1]]
    # Of the live display, each phase's final line stays, once: no file row, no stale copy.
    # The samples re-run made none and sent nothing: it leaves no second line.
    assert bar_lines(screen) == ["upload", "upload", "archive job", "download", "extract", "samples"], screen.text
    assert_nothing_unknown_drawn(screen)
    assert_counters_within_totals(screen)
    assert_lines_whole(screen, "1. ", "2. ", "3. ", "4. ", "5. ", "6. ", "7. ")
    for number, frame in enumerate(screen.frames):
        bars = [line for line in frame if "━" in line]
        if any("archive" in line or "demo-run.zip" in line for line in bars):
            stale = [line.rstrip() for line in bars if ".fastq.gz" in line]
            assert not stale, f"frame {number}: upload rows under the archive job: {stale}"


def test_upload_prints_whole_result_lines_below_its_bar(env: dict[str, str], tmp_path: Path) -> None:
    path = write_random(tmp_path / "a.bin", 3 * MiB)
    screen = run_on_screen([*CLI, "upload", "--bwlimit", "2M", "--chunk-size", "256k", str(path)], env)
    assert screen.code == 0, screen.text
    assert_lines_whole(screen, "uploaded ", "completed: ")
    assert screen.where("completed: 1 uploaded") > screen.where(f"uploaded {path} -> ") >= 0, screen.text
    assert bar_lines(screen) == ["upload"], screen.text
    assert_nothing_unknown_drawn(screen)
    assert_counters_within_totals(screen)


def test_download_prints_whole_result_lines_below_its_bar(env: dict[str, str], tmp_path: Path) -> None:
    path = write_random(tmp_path / "a.bin", 3 * MiB)
    uploaded = subprocess.run(
        [*CLI, "--json", "upload", str(path)], env=env, capture_output=True, text=True, check=True
    )
    data_id = json.loads(uploaded.stdout)["files"][0]["id"]
    out = tmp_path / "out"
    screen = run_on_screen([*CLI, "download", "--bwlimit", "2M", "-o", str(out), data_id], env)
    assert screen.code == 0, screen.text
    assert_lines_whole(screen, "downloaded ", "completed: ")
    assert screen.where("completed: 1 downloaded") > screen.where(f"downloaded {data_id} -> {out / 'a.bin'}") >= 0, (
        screen.text
    )
    assert bar_lines(screen) == ["download"], screen.text
    assert_nothing_unknown_drawn(screen)
    assert_counters_within_totals(screen)


def _overall_and_row(frame: list[str], name: str) -> tuple[float, float] | None:
    """(overall done, row done) in bytes, when a frame shows both the overall bar and ``name``'s row."""
    overall = [line for line in frame if re.search(r"\d+/\d+ files", line) and name not in line]
    rows = [line for line in frame if name in line and "━" in line]
    if not overall or not rows:
        return None
    sizes = [c for c in counters(overall[0]) if c[1] > 100]
    row_sizes = counters(rows[0])
    if not sizes or not row_sizes:
        return None
    return sizes[0][0], row_sizes[0][0]


def test_a_resumed_upload_shows_the_whole_file_done_so_far(env: dict[str, str], tmp_path: Path) -> None:
    path = write_random(tmp_path / "big.bin", 8 * MiB)
    command = [*CLI, "upload", "--bwlimit", "2M", "--chunk-size", "256k", str(path)]
    sent: list[bool] = []

    def interrupt(screen: Screen, process: subprocess.Popen[bytes]) -> None:
        """Ctrl-C once the file's row shows 1.5 MiB done (whenever that is, on a busy machine)."""
        rows = [line for line in screen.frames[-1] if "big.bin" in line and "━" in line]
        if not sent and any(done >= 1.5 * MiB for line in rows for done, _ in counters(line)):
            sent.append(True)
            process.send_signal(signal.SIGINT)

    first = run_on_screen(command, env, on_output=interrupt)
    assert first.code == 130, first.text
    second = run_on_screen(command, env)
    assert second.code == 0, second.text
    pairs = [pair for frame in second.frames if (pair := _overall_and_row(frame, "big.bin")) is not None]
    assert pairs, second.text
    overall, row = pairs[0]
    assert row >= 1 * MiB, f"the resumed row starts at {row} bytes: nothing was resumed?\n{second.text}"
    for overall, row in pairs:
        assert abs(overall - row) <= 0.06 * MiB, f"overall {overall} against the file's {row}\n{second.text}"
    assert_counters_within_totals(second)
    assert_lines_whole(second, "uploaded ", "completed: ")


def test_sync_prints_its_lines_whole_below_nothing_stale(env: dict[str, str], tmp_path: Path) -> None:
    run = make_run_folder(tmp_path / "instrument", lanes=1, samples=2, fastq_size=1 * MiB, small_files=30)
    screen = run_on_screen(
        [
            *CLI,
            "sync",
            "--pack-small",
            "64k",
            "--bwlimit",
            "4M",
            "--chunk-size",
            "256k",
            "--ready-marker",
            "CopyComplete.txt",
            str(run),
        ],
        env,
    )
    assert screen.code == 0, screen.text
    assert_lines_whole(screen, "uploaded ", "sync: ", "completed: ")
    assert screen.where("completed: ") > screen.where("sync: ") >= 0, screen.text
    assert bar_lines(screen) == ["upload"], screen.text
    assert_nothing_unknown_drawn(screen)
    assert_counters_within_totals(screen)


def test_samples_upload_batch_shows_samples_in_flight_and_each_result_whole(
    env: dict[str, str], tmp_path: Path
) -> None:
    sheet, reads = paired_sheet(tmp_path / "run", 4, 1 * MiB)
    screen = run_on_screen(
        [
            *CLI,
            "samples",
            "upload-batch",
            "--sheet",
            str(sheet),
            "--sample-type",
            "RNA-Seq",
            "--concurrency",
            "2",
            "--bwlimit",
            "2M",
            "--chunk-size",
            "256k",
        ],
        env,
    )
    assert screen.code == 0, screen.text
    results = [screen.where(f"sample {name} (row {name[1:]}) -> ") for name in reads]
    assert min(results) >= 0, screen.text
    assert screen.where("samples: 4 made, 0 already on Flow") > screen.where("completed: ") > max(results), screen.text
    assert_lines_whole(screen, "sample ", "completed: ", "samples: ")
    # A line per sample, none per file (those come with -v).
    assert not [line for frame in [*screen.frames, screen.lines] for line in frame if "uploaded " in line], screen.text
    # What stays of the live display is the samples phase's final line, counting every sample.
    assert bar_lines(screen) == ["samples"], screen.text
    assert "4/4 samples" in screen.lines[next(n for n, line in enumerate(screen.lines) if "━" in line)]
    assert_nothing_unknown_drawn(screen)
    assert_counters_within_totals(screen)
    # While it ran: a row per sample in flight (its files, what it is doing, its bytes), none per file.
    rows = [line.rstrip() for frame in screen.frames for line in frame if "━" in line and re.match(r"\s+P\d\s", line)]
    assert any(re.search(r"[01]/2 files  sending reads[12]  [\d.]+ \w?i?B/2 MiB", line) for line in rows), rows[:20]
    for number, frame in enumerate(screen.frames):
        files = [line.rstrip() for line in frame if "━" in line and ".fastq.gz" in line]
        assert not files, f"frame {number}: a file row in a samples batch: {files}"
        in_flight = [line for line in frame if "━" in line and re.match(r"\s+P\d\s", line)]
        assert len(in_flight) <= 2, f"frame {number}: more samples drawn than in flight:\n" + "\n".join(frame)

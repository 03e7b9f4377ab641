"""When ``download`` should take the archive path: the arithmetic, the hint, ``--dry-run`` and ``--auto-bulk``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from flowxfer.transfer import TransferConfig
from flowxfer.transfer._advice import BULK_MIN_FILES, BULK_SMALL_FILE, advise_download, bulk_hint
from flowxfer.transfer._bulk import PollSchedule
from flowxfer.transfer._client import Capabilities
from flowxfer.transfer._plan import RemoteData
from flowxfer.transfer.events import Notice
from tests.support.server import RunningServer, ServerProcess
from tests.sync.test_sync_cli import Cli
from tests.transfer.conftest import client, write_random

MiB = 1024 * 1024


def _items(small: int, large: int = 0) -> list[RemoteData]:
    return [RemoteData(str(i), f"s{i}.bin", 1000, None) for i in range(small)] + [
        RemoteData(str(1000 + i), f"l{i}.bam", 100 * MiB, None) for i in range(large)
    ]


def test_threshold_is_more_than_fifty_files_under_eight_mib() -> None:
    assert bulk_hint(_items(BULK_MIN_FILES, 10)) is None
    assert bulk_hint(_items(BULK_MIN_FILES + 1)) is not None
    edge = [RemoteData("x", "x", BULK_SMALL_FILE, None)] * 100  # exactly 8 MiB is not small
    assert bulk_hint(edge) is None


def test_arithmetic_counts_segments_chunk_maps_and_the_archive() -> None:
    config = TransferConfig(segments=4, min_segment_size=32 * MiB)
    advice = advise_download(_items(60, 2), config, Capabilities(extensions=True, chunk_maps=True))
    assert advice.bulk_advised and len(advice.small) == 60 and len(advice.large) == 2
    # One by one: 60 small files one GET each; 100 MiB files in 3 segments of >= 32 MiB, plus a chunk map each.
    assert advice.single == {"download": 60 + 2 * 3, "api": 2}
    # Archive: one POST and a few polls, one GET for 60 kB of archive; the large files as before.
    assert advice.bulk["download"] == 1 + 2 * 3 and advice.bulk["api"] >= 2 + 1
    assert any("bulk is advised" in line for line in advice.lines())
    hosted = advise_download(_items(3), config, Capabilities())
    assert not hosted.bulk_advised and hosted.single == {"download": 3, "api": 0}


def test_poll_schedule_grows_to_its_cap_and_honours_retry_after() -> None:
    schedule = PollSchedule(start=1.0, factor=2.0, cap=5.0)
    assert [schedule.next_delay() for _ in range(5)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert schedule.next_delay(retry_after=12.0) == 12.0
    assert schedule.next_delay(retry_after=0.5) == 5.0


async def test_plain_download_of_many_small_files_suggests_bulk(server: RunningServer, tmp_path: Path) -> None:
    files = [write_random(tmp_path / "src" / f"f{i:02d}.txt", 100, seed=i) for i in range(BULK_MIN_FILES + 1)]
    events: list[Any] = []
    async with client(server, tmp_path / "home", events=events) as fx:
        ids = [f.id for f in (await fx.upload(files)).files]
        assert not any(isinstance(e, Notice) and "--auto-bulk" in e.message for e in events)
        report = await fx.download([i for i in ids if i], output_dir=tmp_path / "out")
    assert report.status == "completed"
    assert any(isinstance(e, Notice) and "51 of these files are under 8 MiB" in e.message for e in events)


def test_cli_dry_run_and_auto_bulk(tmp_path: Path) -> None:
    with ServerProcess(tmp_path / "root", "--rate-limits", "default") as flow:
        cli = Cli(flow.base_url, tmp_path / "home")
        src = tmp_path / "src"
        for i in range(BULK_MIN_FILES + 5):
            write_random(src / f"r{i:02d}.txt", 100 + i, seed=i)
        write_random(src / "big.bam", 9 * MiB, seed=1)
        uploaded = json.loads(cli.run("--json", "upload", str(src)).stdout)
        ids = [f["id"] for f in uploaded["files"]]
        dry = cli.run("download", *ids, "--dry-run", "-o", str(tmp_path / "out"))
        assert dry.returncode == 0, dry.stderr
        assert "56 files" in dry.stdout and "55 under 8 MiB" in dry.stdout
        assert "one by one: 56 download requests (budget 500/h: no wait)" in dry.stdout
        assert "bulk is advised" in dry.stdout
        assert not (tmp_path / "out").exists()  # only metadata requests were sent
        result = cli.run("--json", "download", *ids, "--auto-bulk", "-o", str(tmp_path / "out"))
        assert result.returncode == 0, result.stderr
        kinds = [(t["kind"], t["status"]) for t in json.loads(result.stdout)["transfers"]]
        assert kinds == [("bulk", "completed"), ("download", "completed")]
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == {
        p.name: p.read_bytes() for p in src.iterdir()
    }

"""``Flowxfer.bulk`` against the real local server: jobs, re-attaching, expiry, extraction."""

from __future__ import annotations

import dataclasses
import zipfile
from pathlib import Path
from typing import Any

import anyio

from flowxfer.journal import Journal
from flowxfer.transfer import Flowxfer
from flowxfer.transfer.events import JobProgress, Notice
from tests.support.faultproxy import FaultProxy, FlipBodyByte, Match, Record, RespondWith
from tests.support.server import RunningServer, running_server
from tests.transfer.conftest import KiB, StopAfter, client, write_random


async def _upload(fx: Flowxfer, files: list[Path]) -> list[str]:
    report = await fx.upload(files)
    assert report.status == "completed"
    by_path = {f.path: f.id for f in report.files}
    return [str(by_path[str(p)]) for p in files]


def _files(root: Path, sizes: list[int]) -> list[Path]:
    return [write_random(root / f"d{i}" / f"sample{i}.fastq.gz", size, seed=i) for i, size in enumerate(sizes)]


async def test_extract_verifies_every_file_and_names_clashes_like_flow(server: RunningServer, tmp_path: Path) -> None:
    files = _files(tmp_path / "src", [1000, 70 * KiB, 0, 5])
    twin = write_random(tmp_path / "src" / "other" / "sample0.fastq.gz", 333, seed=99)  # same filename
    out = tmp_path / "out"
    async with client(server, tmp_path / "home") as fx:
        ids = await _upload(fx, [*files, twin])
        report = await fx.bulk(ids, name="results.zip", output_dir=out, extract=True)
    assert report.status == "completed", report
    extra = report.extra
    assert extra["archive"] == str(out / "results.zip") and extra["archive_removed"]
    assert extra["extract_verified"] == 5 and report.verified is not None and "checksum" in report.verified
    expected = {f.name: f.read_bytes() for f in files} | {f"sample0 ({ids[-1]}).fastq.gz": twin.read_bytes()}
    assert {Path(p).name for p in extra["extracted"]} == set(expected)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == expected
    assert report.to_json()["job_id"] == extra["job_id"]


async def test_keep_archive_and_no_extract(server: RunningServer, tmp_path: Path) -> None:
    files = _files(tmp_path / "src", [100, 200])
    async with client(server, tmp_path / "home") as fx:
        ids = await _upload(fx, files)
        plain = await fx.bulk(ids, output_dir=tmp_path / "a")
        kept = await fx.bulk(ids, output_dir=tmp_path / "b", extract=True, keep_archive=True)
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["flow-download.zip"]
    assert plain.extra["extracted"] == [] and not plain.extra["archive_removed"]
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == [
        "flow-download.zip",
        "sample0.fastq.gz",
        "sample1.fastq.gz",
    ]
    assert not kept.extra["archive_removed"]


async def test_interrupted_after_creation_and_mid_download_reattaches_to_one_job(
    server: RunningServer, tmp_path: Path
) -> None:
    files = _files(tmp_path / "src", [400 * KiB, 300 * KiB, 500 * KiB])
    out = tmp_path / "out"
    async with FaultProxy("127.0.0.1", int(server.base_url.rsplit(":", 1)[1])) as proxy:
        log = proxy.add(Record())
        via_proxy = dataclasses.replace(server, base_url=proxy.url)
        async with client(via_proxy, tmp_path / "home") as fx:
            ids = await _upload(fx, files)

        def stop_once_created(event: Any) -> None:
            if isinstance(event, Notice) and "created" in event.message:
                fx.stop()

        async with client(via_proxy, tmp_path / "home", progress=stop_once_created) as fx:
            first = await fx.bulk(ids, output_dir=out, extract=True)
        assert first.status == "interrupted" and first.extra["job_id"]
        assert not log.select("GET", "^/downloads/jobs/")  # stopped before the first poll

        stop_mid_download = StopAfter(300 * KiB + 1)
        async with client(via_proxy, tmp_path / "home", progress=stop_mid_download) as fx:
            stop_mid_download.fx = fx
            second = await fx.bulk(ids, output_dir=out, extract=True)
        assert second.status == "interrupted" and second.transfer_id == first.transfer_id
        assert second.extra["job_id"] == first.extra["job_id"]
        journal = Journal.open(tmp_path / "home" / "journal.db")
        try:
            (row,) = journal.files_page(first.transfer_id)
            assert 0 < row.bytes_done < row.size
        finally:
            journal.close()

        events: list[Any] = []
        async with client(via_proxy, tmp_path / "home", events=events) as fx:
            third = await fx.resume(first.transfer_id)
        (report,) = third
        assert report.status == "completed" and report.extra["job_id"] == first.extra["job_id"]
        assert report.bytes_transferred <= row.size - row.bytes_done
        assert any(isinstance(e, Notice) and "re-attaching" in e.message for e in events)
        assert any(isinstance(e, JobProgress) and e.status == "completed" for e in events)
        assert len(log.select("POST", "^/downloads$")) == 1
    assert {p.name: p.read_bytes() for p in out.iterdir()} == {f.name: f.read_bytes() for f in files}


async def test_an_expired_job_is_created_again(tmp_path: Path) -> None:
    files = _files(tmp_path / "src", [1000, 2000])
    async with running_server(tmp_path / "root", job_ttl=1.0) as srv:
        async with client(srv, tmp_path / "home") as fx:
            ids = await _upload(fx, files)

        def stop_once_created(event: Any) -> None:
            if isinstance(event, Notice) and "created" in event.message:
                fx.stop()

        async with client(srv, tmp_path / "home", progress=stop_once_created) as fx:
            first = await fx.bulk(ids, output_dir=tmp_path / "out")
        await anyio.sleep(2.5)  # built, then expired
        events: list[Any] = []
        async with client(srv, tmp_path / "home", events=events) as fx:
            second = await fx.bulk(ids, output_dir=tmp_path / "out", poll_interval=0.1)
    assert second.status == "completed" and second.transfer_id == first.transfer_id
    assert second.extra["job_id"] != first.extra["job_id"]
    notices = [e.message for e in events if isinstance(e, Notice)]
    assert any(f"archive job {first.extra['job_id']} expired" in n and "creating it again (once)" in n for n in notices)


async def test_a_410_while_downloading_recreates_the_job_once(server: RunningServer, tmp_path: Path) -> None:
    files = _files(tmp_path / "src", [1000, 2000])
    async with FaultProxy("127.0.0.1", int(server.base_url.rsplit(":", 1)[1])) as proxy:
        log = proxy.add(Record())
        gone = proxy.add(
            RespondWith.json(
                410,
                {"error": "this archive has expired; create a new job"},
                match="GET ^/downloads/jobs/[0-9]+/",
                times=1,
            )
        )
        via_proxy = dataclasses.replace(server, base_url=proxy.url)
        async with client(via_proxy, tmp_path / "home") as fx:
            ids = await _upload(fx, files)
            report = await fx.bulk(ids, output_dir=tmp_path / "out", extract=True)
    assert gone.hits == 1
    assert report.status == "completed" and len(log.select("POST", "^/downloads$")) == 2
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["sample0.fastq.gz", "sample1.fastq.gz"]


async def test_extracted_files_are_known_to_download(server: RunningServer, tmp_path: Path) -> None:
    files = _files(tmp_path / "src", [1000, 2000])
    async with client(server, tmp_path / "home") as fx:
        ids = await _upload(fx, files)
        await fx.bulk(ids, output_dir=tmp_path / "out", extract=True)
        again = await fx.download(ids, output_dir=tmp_path / "out")
    assert {f.status for f in again.files} == {"skipped"} and again.requests["download"] == 0


async def test_unknown_ids_create_no_job(server: RunningServer, tmp_path: Path) -> None:
    async with client(server, tmp_path / "home") as fx:
        try:
            await fx.bulk(["404404"], output_dir=tmp_path / "out")
        except Exception as exc:  # noqa: BLE001 - the type is checked below
            assert type(exc).__name__ == "NotFoundError"
        else:
            raise AssertionError("an unknown id must be refused")
        journal = await fx.journal()
        assert journal.list_transfers(include_finished=True) == []


async def test_an_archive_damaged_in_transit_never_takes_its_name(server: RunningServer, tmp_path: Path) -> None:
    """An archive has no chunk map: its whole-file checksum is checked before the rename, and a
    mismatch fetches it again (a bit flipped by the network, headers intact, as only checksums see)."""
    files = _files(tmp_path / "src", [200 * KiB, 150 * KiB, 90 * KiB])
    out = tmp_path / "out"
    async with FaultProxy("127.0.0.1", int(server.base_url.rsplit(":", 1)[1])) as proxy:
        via_proxy = dataclasses.replace(server, base_url=proxy.url)
        events: list[Any] = []
        async with client(via_proxy, tmp_path / "home", events=events) as fx:
            ids = await _upload(fx, files)
            flip = proxy.add(FlipBodyByte(Match("GET", r"^/downloads/jobs/[^/]+/.+"), at=1000))
            report = await fx.bulk(ids, name="run.zip", output_dir=out, extract=True, keep_archive=True)
    assert flip.hits == 1
    assert report.status == "completed", (report.status, [f.error for f in report.files])
    assert any(isinstance(e, Notice) and "downloading it again" in e.message for e in events)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.name != "run.zip"} == {
        f.name: f.read_bytes() for f in files
    }
    assert zipfile.ZipFile(out / "run.zip").testzip() is None

"""Samples go up exactly once: the engine against the real local server (with and without extensions).

Each test writes real files and a real sheet, runs :meth:`Flowxfer.upload_samples`
and reads back what the server holds (its samples, their filesets, their
bytes) without the engine.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from flowxfer.transfer._sheets import SheetError
from tests.support.faultproxy import DropResponse, Match, RespondWith
from tests.support.rig import rig, stored
from tests.support.samples import server_samples, write_sheet
from tests.support.server import RunningServer
from tests.transfer.conftest import KiB, any_server, client, write_random

__all__ = ["any_server"]  # the fixture, imported to be used here

HEADER = ["name", "reads1", "reads2", "project", "organism", "strandedness", "condition", "condition__annotation"]


def paired_run(folder: Path, samples: int = 2, size: int = 150 * KiB) -> Path:
    """A sheet of paired samples; the first has two lanes per read (a ';' cell), the rest one file each."""
    rows = []
    for n in range(1, samples + 1):
        if n == 1:
            r1 = [
                write_random(folder / f"S{n}_L00{lane}_R1.fastq.gz", size + lane, seed=10 * n + lane) for lane in (1, 2)
            ]
            r2 = [
                write_random(folder / f"S{n}_L00{lane}_R2.fastq.gz", size + 7 * lane, seed=20 * n + lane)
                for lane in (1, 2)
            ]
        else:
            r1 = [write_random(folder / f"S{n}_R1.fastq.gz", size, seed=10 * n)]
            r2 = [write_random(folder / f"S{n}_R2.fastq.gz", size // 3, seed=20 * n)]
        rows.append(
            [
                f"S{n}",
                ";".join(p.name for p in r1),
                ";".join(p.name for p in r2),
                "",
                "Hs",
                "forward",
                "treated",
                "24 h",
            ]
        )
    return write_sheet(folder / "sheet.csv", HEADER, rows)


def cell_bytes(folder: Path, cell: str) -> bytes:
    return b"".join((folder / name).read_bytes() for name in cell.split(";"))


async def check_server(srv: RunningServer, folder: Path, sheet: Path) -> dict[str, str]:
    """Exactly one sample per row, its files linked in order, byte for byte; returns name -> sample id."""
    held = await server_samples(srv)
    rows = [line.split(",") for line in sheet.read_text().splitlines()[1:]]  # noqa: ASYNC240 - a small test file
    assert sorted(held) == sorted(row[0] for row in rows)
    ids = {}
    for row in rows:
        (sample,) = held[row[0]]
        data = sample["data"]
        assert len(data) == 2
        got = await stored(srv, {d["filename"]: d["id"] for d in data})
        assert got[data[0]["filename"]] == cell_bytes(folder, row[1])
        assert got[data[1]["filename"]] == cell_bytes(folder, row[2])
        ids[row[0]] = sample["id"]
    return ids


async def test_paired_samples_with_merged_lanes_then_a_rerun_creates_nothing(
    any_server: RunningServer, tmp_path: Path
) -> None:
    sheet = paired_run(tmp_path / "run", samples=3)
    async with client(any_server, tmp_path / "home", concurrency=3) as fx:
        report = await fx.upload_samples(sheet, sample_type="RNA-Seq")
        assert report.status == "completed", report.to_json()
        document = report.to_json()
        assert document["kind"] == "samples"
        ids = await check_server(any_server, tmp_path / "run", sheet)
        assert {s["name"]: s["id"] for s in document["samples"]} == ids
        assert all(s["status"] == "done" for s in document["samples"])
        first = document["samples"][0]["files"]
        assert [f["status"] for f in first] == ["done", "done"] and ";" in first[0]["path"]

        again = await fx.upload_samples(sheet, sample_type="RNA-Seq")
        journal = await fx.journal()
        assert journal.get_transfer(again.transfer_id) is None  # a re-run that made nothing leaves no trace
        assert journal.get_transfer(report.transfer_id) is not None
    assert again.status == "completed"
    assert again.bytes_transferred == 0 and again.requests.get("upload", 0) == 0
    assert {s["name"]: (s["id"], s["status"]) for s in again.to_json()["samples"]} == {
        name: (sample_id, "skipped") for name, sample_id in ids.items()
    }
    assert await check_server(any_server, tmp_path / "run", sheet) == ids


async def test_one_sample_with_metadata(any_server: RunningServer, tmp_path: Path) -> None:
    reads = write_random(tmp_path / "one.fastq.gz", 70 * KiB)
    async with client(any_server, tmp_path / "home") as fx:
        report = await fx.upload_samples(
            sample={
                "name": "single",
                "reads1": str(reads),
                "organism": "Mm",
                "metadata": {"purification_target": "H3K4me3"},
            },
            sample_type="ChIP-Seq",
        )
    assert report.status == "completed"
    (sample,) = (await server_samples(any_server))["single"]
    assert [d["filename"] for d in sample["data"]] == ["one.fastq.gz"]
    assert report.to_json()["samples"][0]["id"] == sample["id"]


async def test_invalid_rows_stop_everything_and_name_every_problem(any_server: RunningServer, tmp_path: Path) -> None:
    folder = tmp_path / "run"
    write_random(folder / "a.fq.gz", 10 * KiB)
    write_random(folder / "b.fq.gz", 10 * KiB)
    sheet = write_sheet(
        folder / "sheet.csv",
        ["name", "reads1", "organism", "strandedness"],
        [
            ["good", "a.fq.gz", "Hs", "forward"],
            ["bad name", "missing.fq.gz", "Xx", "sideways"],
            ["good", "b.fq.gz", "Hs", ""],
        ],
    )
    async with client(any_server, tmp_path / "home") as fx:
        with pytest.raises(SheetError) as caught:
            await fx.upload_samples(sheet, sample_type="RNA-Seq")
        text = str(caught.value)
        for needle in ("'bad name'", "missing.fq.gz", "'Xx'", "'sideways'", "row 3", "strandedness"):
            assert needle in text, (needle, text)
        assert await server_samples(any_server) == {}
        skipped = await fx.upload_samples(sheet, sample_type="RNA-Seq", skip_invalid=True)
    # Rows 1 and 3 share a name: both are invalid; row 2 is invalid; nothing is valid.
    assert {s["row"]: s["status"] for s in skipped.to_json()["samples"]} == {1: "invalid", 2: "invalid", 3: "invalid"}
    assert await server_samples(any_server) == {}


def _single_sheet(folder: Path, reads2_size: int) -> Path:
    write_random(folder / "x_R1.fq.gz", 100 * KiB, seed=1)
    write_random(folder / "x_R2.fq.gz", reads2_size, seed=2)
    return write_sheet(
        folder / "sheet.csv",
        ["name", "reads1", "reads2", "strandedness"],
        [["x", "x_R1.fq.gz", "x_R2.fq.gz", "reverse"]],
    )


@pytest.mark.parametrize("extensions", [True, False], ids=["extensions", "hosted-flow"])
@pytest.mark.parametrize("reads2_size", [100 * KiB, 10 * KiB], ids=["several-chunks", "one-chunk"])
async def test_a_lost_final_answer_is_asked_about_not_resent(
    tmp_path: Path, extensions: bool, reads2_size: int
) -> None:
    """The proxy drops the answer of the chunk that made the sample: the engine asks the server
    (GET /upload/<id>, or GET /data/<id> and /samples/search) instead of sending it again."""
    sheet = _single_sheet(tmp_path / "run", reads2_size)
    chunks = 2 + (2 if reads2_size > 64 * KiB else 1)
    async with rig(tmp_path, extensions) as r:
        lost = r.proxy.add(DropResponse(Match("POST", r"^/upload/sample$", nth=chunks)))
        events: list[Any] = []
        async with client(r.via_proxy, tmp_path / "home", events=events, read_timeout=5.0) as fx:
            report = await fx.upload_samples(sheet, sample_type="RNA-Seq")
        assert lost.hits == 1
        assert report.status == "completed", report.to_json()
        assert len(r.log.select("POST", r"^/upload/sample$")) == chunks  # nothing sent again
        held = await server_samples(r.server)
        assert [s["id"] for s in held["x"]] == [report.to_json()["samples"][0]["id"]]
        assert any("was lost" in getattr(e, "message", "") for e in events)


async def test_a_file_changed_since_it_was_planned_is_not_linked(any_server: RunningServer, tmp_path: Path) -> None:
    sheet = paired_run(tmp_path / "run", samples=2)
    changed = tmp_path / "run" / "S2_R2.fastq.gz"
    seen: list[Any] = []

    def change_it(event: Any) -> None:
        seen.append(event)
        if type(event).__name__ == "FilesPlanned":
            with open(changed, "ab") as handle:
                handle.write(b"more")
            os.utime(changed, ns=(1, 1))

    async with client(any_server, tmp_path / "home", progress=change_it, concurrency=1) as fx:
        report = await fx.upload_samples(sheet, sample_type="RNA-Seq")
    assert report.status == "partial"
    statuses = {s["name"]: (s["status"], s["error"]) for s in report.to_json()["samples"]}
    assert statuses["S1"][0] == "done"
    assert statuses["S2"][0] == "failed" and "changed" in statuses["S2"][1]
    assert sorted(await server_samples(any_server)) == ["S1"]
    async with client(any_server, tmp_path / "home") as fx:
        again = await fx.upload_samples(sheet, sample_type="RNA-Seq")  # the file as it is now
    assert again.status == "completed" and again.resumed
    held = await server_samples(any_server)
    assert sorted(held) == ["S1", "S2"] and len(held["S2"]) == 1
    assert held["S2"][0]["data"][1]["size"] == changed.stat().st_size  # noqa: ASYNC240 - a test's stat


async def test_a_sample_the_server_refuses_fails_alone(tmp_path: Path) -> None:
    """The server refuses a sample's first file (400, Django-style): that sample fails with the server's
    words, the others are made, and the report says which."""
    sheet = paired_run(tmp_path / "run", samples=3)
    async with rig(tmp_path, True) as r:
        refusal = r.proxy.add(
            RespondWith.json(
                400, {"error": {"strandedness": ["not today"]}}, match=Match("POST", r"^/upload/sample$", nth=1)
            )
        )
        async with client(r.via_proxy, tmp_path / "home", concurrency=1) as fx:
            report = await fx.upload_samples(sheet, sample_type="RNA-Seq")
        assert refusal.hits == 1
        assert report.status == "partial"
        samples = {s["name"]: s for s in report.to_json()["samples"]}
        assert samples["S1"]["status"] == "failed" and "not today" in samples["S1"]["error"]
        assert [f["status"] for f in samples["S1"]["files"]] == ["failed", "pending"]
        assert {samples["S2"]["status"], samples["S3"]["status"]} == {"done"}
        assert sorted(await server_samples(r.server)) == ["S2", "S3"]
        async with client(r.via_proxy, tmp_path / "home") as fx:
            again = await fx.upload_samples(sheet, sample_type="RNA-Seq")
        assert again.status == "completed"
        assert sorted(await server_samples(r.server)) == ["S1", "S2", "S3"]


@pytest.mark.parametrize("extensions", [True, False], ids=["extensions", "hosted-flow"])
async def test_a_gateway_error_on_the_final_chunk_is_asked_about(tmp_path: Path, extensions: bool) -> None:
    """A 502 instead of the final answer (the server never saw it): the engine asks, finds nothing,
    then sends the chunk once more; one sample."""
    sheet = _single_sheet(tmp_path / "run", 10 * KiB)
    async with rig(tmp_path, extensions) as r:
        bad = r.proxy.add(RespondWith.html_error(502, match=Match("POST", r"^/upload/sample$", nth=3)))
        async with client(r.via_proxy, tmp_path / "home") as fx:
            report = await fx.upload_samples(sheet, sample_type="RNA-Seq")
        assert bad.hits == 1 and report.status == "completed", report.to_json()
        assert len(r.log.select("POST", r"^/upload/sample$")) == 4
        assert len((await server_samples(r.server))["x"]) == 1

"""``flowxfer samples upload-batch`` and ``samples upload`` as a user (or cron) runs them: real subprocesses.

The server is real (in-process, or behind the recording fault proxy); what it
holds afterwards is read without the CLI (:func:`server_samples`, :func:`stored`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import aiohttp
import anyio
import pytest

from tests.cli.conftest import Cli
from tests.cli.test_cli_crash import Rig, rig
from tests.support.faultproxy import Match, StallMidBody
from tests.support.rig import stored
from tests.support.runfolder import complete_run, make_run_folder
from tests.support.samples import server_samples, write_sheet
from tests.support.server import RunningServer, login, running_server
from tests.transfer.conftest import KiB, write_random

CHUNK = 64 * KiB
modes = pytest.mark.parametrize("extensions", [True, False], ids=["extensions", "hosted-flow"])


def sample_posts(r: Rig) -> list[int]:
    """Request bytes of every ``POST /upload/sample`` that reached the proxy."""
    return [e.request_bytes for e in r.log.select("POST", r"^/upload/sample$")]


def paired_sheet(folder: Path, samples: int, size: int) -> tuple[Path, dict[str, tuple[bytes, bytes]]]:
    """A sheet of paired samples, their reads' bytes by name."""
    rows, reads = [], {}
    for n in range(1, samples + 1):
        r1 = write_random(folder / f"P{n}_R1.fastq.gz", size + n, seed=n)
        r2 = write_random(folder / f"P{n}_R2.fastq.gz", size - n, seed=100 + n)
        rows.append([f"P{n}", r1.name, r2.name, "Hs", "reverse"])
        reads[f"P{n}"] = (r1.read_bytes(), r2.read_bytes())
    return write_sheet(folder / "sheet.csv", ["name", "reads1", "reads2", "organism", "strandedness"], rows), reads


async def owned_names(srv: RunningServer, part: str) -> list[str]:
    """The filenames of alice's data whose name holds ``part`` (read without the CLI)."""
    async with aiohttp.ClientSession() as session:
        token = await login(session, srv.base_url, "alice", srv.users["alice"])
        async with session.get(
            f"{srv.base_url}/data/search",
            params={"filename": part, "owned": "true", "count": "100"},
            headers={"Authorization": f"Bearer {token}"},
        ) as response:
            assert response.status == 200
            return sorted(item["filename"] for item in (await response.json())["data"])


async def exactly_once(srv: RunningServer, reads: dict[str, tuple[bytes, bytes]]) -> dict[str, str]:
    """One sample per row, reads1 then reads2 linked, byte for byte."""
    held = await server_samples(srv)
    assert sorted(held) == sorted(reads), held
    ids = {}
    for name, (r1, r2) in reads.items():
        assert len(held[name]) == 1, (name, held[name])
        data = held[name][0]["data"]
        got = await stored(srv, {d["filename"]: d["id"] for d in data})
        assert [got[d["filename"]] for d in data] == [r1, r2]
        ids[name] = held[name][0]["id"]
    return ids


async def test_a_sheet_made_by_flowbio_batch_template_uploads_unchanged(tmp_path: Path) -> None:
    async with running_server(tmp_path / "root") as srv:
        async with aiohttp.ClientSession() as session:
            token = await login(session, srv.base_url, "alice", srv.users["alice"])
        template = tmp_path / "run" / "sheet.csv"
        template.parent.mkdir()
        env = {**os.environ, "FLOW_API_URL": srv.base_url, "FLOW_API_TOKEN": token}

        def flowbio_template() -> subprocess.CompletedProcess[str]:
            flowbio = Path(sys.executable).with_name("flowbio")
            return subprocess.run(
                [str(flowbio), "samples", "batch-template", "--sample-type", "RNA-Seq", "-o", str(template)],
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )

        done = await anyio.to_thread.run_sync(flowbio_template)
        assert done.returncode == 0, done.stderr
        header = template.read_text().strip().split(",")
        assert header[:5] == ["name", "reads1", "reads2", "project", "organism"]
        values = {
            "name": "A",
            "reads1": "A_R1.fq",
            "reads2": "A_R2.fq",
            "organism": "Hs",
            "strandedness": "forward",
            "condition": "ctrl",
        }
        b_values = {"name": "B", "reads1": "B_R1.fq", "organism": "Mm", "strandedness": "unstranded"}
        with open(template, "a") as handle:  # noqa: ASYNC230 - a two-line test file
            for row in (values, b_values):
                handle.write(",".join(row.get(column, "") for column in header) + "\n")
        for name in ("A_R1.fq", "A_R2.fq", "B_R1.fq"):
            write_random(tmp_path / "run" / name, 5000, seed=len(name))

        cli = Cli(srv.base_url, tmp_path / "home")
        await cli.login("alice", srv.users["alice"])
        first = await cli.run("--json", "samples", "upload-batch", "--sheet", str(template), "--sample-type", "RNA-Seq")
        assert first.code == 0, first.stderr
        document = first.json()
        assert document["kind"] == "samples" and document["status"] == "completed"
        assert [(s["row"], s["name"], s["status"]) for s in document["samples"]] == [(1, "A", "done"), (2, "B", "done")]
        held = await server_samples(srv)
        assert {name: [d["filename"] for d in s[0]["data"]] for name, s in held.items()} == {
            "A": ["A_R1.fq", "A_R2.fq"],
            "B": ["B_R1.fq"],
        }

        again = await cli.run("samples", "upload-batch", "--sheet", str(template), "--sample-type", "RNA-Seq")
        assert again.code == 0, again.stderr
        assert "samples: 0 made, 2 already on Flow" in again.stdout
        assert sorted(await server_samples(srv)) == ["A", "B"]


async def test_validation_names_every_problem_exits_2_and_sends_nothing(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    write_random(folder / "ok.fq", 1000)
    write_random(folder / "shared.fq", 1000)
    write_random(folder / "three.fq", 1000)
    sheet = write_sheet(
        folder / "sheet.csv",
        ["name", "reads1", "reads2", "organism", "strandedness"],
        [
            ["ok", "ok.fq", "", "Hs", "forward"],
            ["one", "shared.fq", "", "Hs", "forward"],
            ["two", "shared.fq", "gone.fq", "Zz", "maybe"],
            ["three", "", "three.fq", "Hs", ""],
        ],
    )
    async with rig(tmp_path, True) as r:
        result = await r.cli.run("--json", "samples", "upload-batch", "--sheet", str(sheet), "--sample-type", "RNA-Seq")
        assert result.code == 2, result
        problems = result.json()["problems"]
        named = {(p["row"], p["column"], p["value"]) for p in problems if not p["warning"]}
        for expected in [(3, "reads2", "gone.fq"), (3, "organism", "Zz"), (3, "strandedness", "maybe")]:
            assert expected in named, (expected, problems)
        assert {p["row"] for p in problems} >= {2, 3, 4}
        assert sample_posts(r) == []
        human = await r.cli.run("samples", "upload-batch", "--sheet", str(sheet), "--sample-type", "RNA-Seq")
        assert human.code == 2 and "'Zz'" in human.stderr and "'maybe'" in human.stderr
        unknown_type = await r.cli.run("samples", "upload-batch", "--sheet", str(sheet), "--sample-type", "Nope")
        assert unknown_type.code == 2 and "'Nope'" in unknown_type.stderr
        not_csv = await r.cli.run(
            "samples", "upload-batch", "--sheet", str(folder / "ok.fq"), "--sample-type", "RNA-Seq"
        )
        assert not_csv.code == 2 and ".csv" in not_csv.stderr
        skip = await r.cli.run(
            "--json", "samples", "upload-batch", "--sheet", str(sheet), "--sample-type", "RNA-Seq", "--skip-invalid"
        )
        assert skip.code == 1, skip
        assert {s["name"]: s["status"] for s in skip.json()["samples"]} == {
            "ok": "done",
            "one": "invalid",
            "two": "invalid",
            "three": "invalid",
        }
        assert sorted(await server_samples(r.server)) == ["ok"]
        assert sample_posts(r) != []


async def test_samples_upload_one_sample(tmp_path: Path) -> None:
    r1 = write_random(tmp_path / "s_R1.fq.gz", 3 * CHUNK + 5, seed=1)
    r2 = write_random(tmp_path / "s_R2.fq.gz", 2 * CHUNK, seed=2)
    async with rig(tmp_path, True) as r:
        args = [
            "--json",
            "samples",
            "upload",
            "--name",
            "s1",
            "--sample-type",
            "RNA-Seq",
            "--reads1",
            str(r1),
            "--reads2",
            str(r2),
            "--organism",
            "Hs",
            "--metadata",
            "strandedness=forward",
            "--metadata-json",
            '{"condition": "ctrl"}',
            "--chunk-size",
            "64k",
        ]
        result = await r.cli.run(*args)
        assert result.code == 0, result.stderr
        assert await exactly_once(r.server, {"s1": (r1.read_bytes(), r2.read_bytes())}) == {
            "s1": result.json()["samples"][0]["id"]
        }
        again = await r.cli.run(*args)
        assert again.code == 0 and again.json()["samples"][0]["status"] == "skipped"
        clash = await r.cli.run(
            "samples",
            "upload",
            "--name",
            "x",
            "--sample-type",
            "RNA-Seq",
            "--reads1",
            str(r1),
            "--metadata",
            "a=1",
            "--metadata-json",
            '{"a": "2"}',
        )
        assert clash.code == 2 and "both" in clash.stderr


@modes
@pytest.mark.parametrize("fraction", [0.3, 0.7])
async def test_kill9_mid_batch_then_the_same_command(tmp_path: Path, extensions: bool, fraction: float) -> None:
    size = 8 * CHUNK
    sheet, reads = paired_sheet(tmp_path / "run", 3, size)
    total = sum(len(a) + len(b) for a, b in reads.values())
    async with rig(tmp_path, extensions) as r:
        command = [
            "samples",
            "upload-batch",
            "--sheet",
            str(sheet),
            "--sample-type",
            "RNA-Seq",
            "--chunk-size",
            "64k",
            "--concurrency",
            "2",
        ]
        async with r.cli.start("--log-format", "json", *command, "--bwlimit", "768k") as first:
            await first.until_moved(int(total * fraction))
            await first.kill9()
        second = await r.cli.run("--json", *command)
        assert second.code == 0, second.stderr
        ids = await exactly_once(r.server, reads)
        assert {s["name"]: s["id"] for s in second.json()["samples"]} == ids
        posts = sample_posts(r)
        envelope = max(posts) - CHUNK
        assert 0 < envelope < 2 * KiB
        resent = sum(posts) - total - len(posts) * envelope
        # At most one chunk per file in flight when killed (two samples at once, one file each).
        assert resent <= 2 * CHUNK, (resent, len(posts))
        third = await r.cli.run("--json", *command)
        assert third.code == 0 and {s["status"] for s in third.json()["samples"]} == {"skipped"}
        assert len(sample_posts(r)) == len(posts)


@modes
@pytest.mark.parametrize("reads2_size", [2 * CHUNK, CHUNK // 2], ids=["several-chunks", "one-chunk"])
async def test_kill9_after_the_final_chunk_before_its_answer(
    tmp_path: Path, extensions: bool, reads2_size: int
) -> None:
    """The server made the sample; the CLI dies before the answer reaches it. The same command then
    asks the server and finds the sample: nothing is sent again, no second sample is made."""
    folder = tmp_path / "run"
    r1 = write_random(folder / "k_R1.fq.gz", 2 * CHUNK, seed=1)
    r2 = write_random(folder / "k_R2.fq.gz", reads2_size, seed=2)
    sheet = write_sheet(
        folder / "sheet.csv", ["name", "reads1", "reads2", "strandedness"], [["k", r1.name, r2.name, "forward"]]
    )
    final = 2 + (2 if reads2_size > CHUNK else 1)
    async with rig(tmp_path, extensions) as r:
        stall = r.proxy.add(
            StallMidBody(Match("POST", r"^/upload/sample$", nth=final), direction="down", at_bytes=0, seconds=60)
        )
        command = ["samples", "upload-batch", "--sheet", str(sheet), "--sample-type", "RNA-Seq", "--chunk-size", "64k"]
        async with r.cli.start(*command) as first:
            with anyio.fail_after(30):
                while not stall.hits:  # noqa: ASYNC110 - the proxy's rules count, they signal nothing
                    await anyio.sleep(0.02)
            await first.kill9()
        r.proxy.remove(stall)
        made = await server_samples(r.server)
        assert len(made["k"]) == 1  # the server made it before the answer was lost
        sent = len(sample_posts(r))
        second = await r.cli.run("--json", *command)
        assert second.code == 0, second.stderr
        assert second.json()["samples"][0]["id"] == made["k"][0]["id"]
        assert len(sample_posts(r)) == sent  # nothing sent again
        assert await exactly_once(r.server, {"k": (r1.read_bytes(), r2.read_bytes())}) == {"k": made["k"][0]["id"]}


async def test_jobs_show_and_resume_know_sample_transfers(tmp_path: Path) -> None:
    sheet, reads = paired_sheet(tmp_path / "run", 2, 6 * CHUNK)
    total = sum(len(a) + len(b) for a, b in reads.values())
    async with rig(tmp_path, True) as r:
        async with r.cli.start(
            "--log-format",
            "json",
            "samples",
            "upload-batch",
            "--sheet",
            str(sheet),
            "--sample-type",
            "RNA-Seq",
            "--chunk-size",
            "64k",
            "--concurrency",
            "1",
            "--bwlimit",
            "512k",
        ) as first:
            await first.until_moved(total // 3)
            await first.kill9()
        transfer_id = first.transfer_id()
        jobs = await r.cli.run("--json", "jobs")
        assert [(t["transfer_id"], t["kind"]) for t in jobs.json()["transfers"]] == [(transfer_id, "samples")]
        shown = await r.cli.run("--json", "show", transfer_id)
        assert shown.code == 0 and [s["name"] for s in shown.json()["samples"]] == ["P1", "P2"]
        assert {s["status"] for s in shown.json()["samples"]} <= {"pending", "done"}
        human = await r.cli.run("show", transfer_id)
        assert human.code == 0 and "P2" in human.stdout
        resumed = await r.cli.run("--json", "resume")
        assert resumed.code == 0, resumed.stderr
        (report,) = resumed.json()["transfers"]
        assert report["kind"] == "samples" and report["status"] == "completed"
        assert await exactly_once(r.server, reads) == {s["name"]: s["id"] for s in report["samples"]}


async def test_the_catalog_and_the_templates(tmp_path: Path) -> None:
    async with running_server(tmp_path / "root", projects=[("alice", "Liver atlas")]) as srv:
        cli = Cli(srv.base_url, tmp_path / "home")
        await cli.login("alice", srv.users["alice"])
        types = await cli.run("--json", "samples", "types")
        assert {"RNA-Seq", "ChIP-Seq", "ATAC-Seq", "generic"} <= {t["identifier"] for t in types.json()["sample_types"]}
        metadata = (await cli.run("--json", "samples", "metadata", "--sample-type", "RNA-Seq")).json()
        by_id = {a["identifier"]: a for a in metadata["attributes"]}
        assert by_id["strandedness"]["required_here"] and by_id["strandedness"]["options"] == [
            "forward",
            "reverse",
            "unstranded",
        ]
        assert not by_id["condition"]["required_here"]
        organisms = (await cli.run("--json", "samples", "organisms")).json()["organisms"]
        assert {o["id"] for o in organisms} >= {"Hs", "Mm"}
        projects = (await cli.run("--json", "samples", "projects")).json()["projects"]
        assert [p["name"] for p in projects] == ["Liver atlas"]
        table = await cli.run("samples", "metadata", "--sample-type", "RNA-Seq")
        assert table.code == 0 and "strandedness" in table.stdout and "unstranded" in table.stdout
        unknown = await cli.run("samples", "metadata", "--sample-type", "Nope")
        assert unknown.code == 2 and "'Nope'" in unknown.stderr

        ours = await cli.run("samples", "batch-template", "--sample-type", "ChIP-Seq")
        async with aiohttp.ClientSession() as session:
            token = await login(session, srv.base_url, "alice", srv.users["alice"])
        env = {**os.environ, "FLOW_API_URL": srv.base_url, "FLOW_API_TOKEN": token}

        def flowbio_header() -> str:
            flowbio = Path(sys.executable).with_name("flowbio")
            return subprocess.run(
                [str(flowbio), "samples", "batch-template", "--sample-type", "ChIP-Seq"],
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
                check=True,
            ).stdout

        assert ours.stdout.strip() == (await anyio.to_thread.run_sync(flowbio_header)).strip()
        template = await cli.run(
            "samples", "annotation-template", "--sample-type", "RNA-Seq", "-o", str(tmp_path / "a.xlsx")
        )
        assert template.code == 0 and (tmp_path / "a.xlsx").read_bytes()[:2] == b"PK"


@modes
async def test_sync_samples_from_a_run_with_a_kill9_in_the_middle(tmp_path: Path, extensions: bool) -> None:
    """A v2 run of two lanes, synced from a cron-like loop: waiting, then killed mid-way, then done; exactly one
    sample per Sample_ID with its lanes merged, the FASTQs not also loose data, and a re-run that makes nothing."""
    run = make_run_folder(
        tmp_path / "runs", lanes=2, samples=2, fastq_size=5 * CHUNK, small_files=10, complete=False, sample_sheet="v2"
    )
    command = [
        "sync",
        str(run),
        "--samples",
        "--sample-type",
        "RNA-Seq",
        "--organism",
        "Hs",
        "--metadata",
        "strandedness=reverse",
        "--ready-marker",
        "CopyComplete.txt",
        "--name-from-path",
        "--chunk-size",
        "64k",
        "--concurrency",
        "2",
    ]
    fastqs = sorted(run.rglob("*.fastq.gz"))
    total = sum(p.stat().st_size for p in fastqs)
    expected = {}
    for n in (1, 2):
        r1 = b"".join(p.read_bytes() for p in fastqs if p.name.startswith(f"Sample{n}_") and "_R1_" in p.name)
        r2 = b"".join(p.read_bytes() for p in fastqs if p.name.startswith(f"Sample{n}_") and "_R2_" in p.name)
        expected[f"Sample{n}"] = (r1, r2)
    async with rig(tmp_path, extensions) as r:
        waiting = await r.cli.run("--json", *command)
        assert waiting.code == 0 and waiting.json()["status"] == "waiting"
        assert sample_posts(r) == []
        complete_run(run)
        async with r.cli.start("--log-format", "json", *command, "--bwlimit", "512k") as first:
            await first.until(lambda x: x.moved >= total // 2 and "sample_started" in x.stderr)
            await first.kill9()
        second = await r.cli.run("--json", *command)
        assert second.code == 0, second.stderr
        document = second.json()
        ids = await exactly_once(r.server, expected)
        assert {s["name"]: s["id"] for s in document["samples"]} == ids
        assert not [f for f in document["files"] if ".fastq" in f["path"]]
        assert await owned_names(r.server, "RunInfo") == ["RunInfo.xml"]
        # The only FASTQs on Flow are the samples' (lanes merged): none went up as loose data.
        assert await owned_names(r.server, "fastq") == sorted(
            f"Sample{n}_S{n}_R{read}_001.fastq.gz" for n in (1, 2) for read in (1, 2)
        )
        held = await server_samples(r.server)
        assert [d["filename"] for d in held["Sample1"][0]["data"]] == [
            "Sample1_S1_R1_001.fastq.gz",
            "Sample1_S1_R2_001.fastq.gz",
        ]
        posts = len(sample_posts(r))
        again = await r.cli.run("--json", *command)
        assert again.code == 0, again.stderr
        assert {s["status"] for s in again.json()["samples"]} == {"skipped"}
        assert len(sample_posts(r)) == posts


async def test_download_the_files_of_samples_and_projects(tmp_path: Path) -> None:
    async with running_server(tmp_path / "root", projects=[("alice", "Atlas")]) as srv:
        cli = Cli(srv.base_url, tmp_path / "home")
        await cli.login("alice", srv.users["alice"])
        project = (await cli.run("--json", "samples", "projects")).json()["projects"][0]["id"]
        sheet, reads = paired_sheet(tmp_path / "run", 2, CHUNK)
        made = await cli.run("--json", "samples", "upload-batch", "--sheet", str(sheet), "--sample-type", "RNA-Seq")
        assert made.code == 0, made.stderr
        ids = {s["name"]: s["id"] for s in made.json()["samples"]}
        r3 = write_random(tmp_path / "run" / "P3.fq", 5000, seed=3)
        in_project = await cli.run(
            "--json",
            "samples",
            "upload",
            "--name",
            "P3",
            "--sample-type",
            "RNA-Seq",
            "--reads1",
            str(r3),
            "--project",
            project,
            "--metadata",
            "strandedness=forward",
        )
        assert in_project.code == 0, in_project.stderr

        one = await cli.run("--json", "download", "--sample", ids["P1"], "-o", str(tmp_path / "one"))
        assert one.code == 0, one.stderr
        got = {p.name: p.read_bytes() for p in (tmp_path / "one").iterdir()}
        assert got == {"P1_R1.fastq.gz": reads["P1"][0], "P1_R2.fastq.gz": reads["P1"][1]}
        by_project = await cli.run("--json", "download", "--project", project, "-o", str(tmp_path / "proj"))
        assert by_project.code == 0, by_project.stderr
        assert [p.name for p in (tmp_path / "proj").iterdir()] == ["P3.fq"]
        dry = await cli.run("--json", "download", "--sample", ids["P2"], "--dry-run")
        assert dry.code == 0 and dry.json()["files"] == 2
        unknown = await cli.run("download", "--sample", "123456789012345678", "-o", str(tmp_path / "none"))
        assert unknown.code == 4 and "123456789012345678" in unknown.stderr


async def test_upload_multiplexed_sends_the_sheet_first(tmp_path: Path) -> None:
    r1 = write_random(tmp_path / "mux_R1.fq.gz", 3 * CHUNK, seed=1)
    r2 = write_random(tmp_path / "mux_R2.fq.gz", 3 * CHUNK, seed=2)
    good = tmp_path / "good.csv"
    good.write_text("name,barcode,organism\nA,ACGTACGT,Hs\nB,TTGGCCAA,Hs\n")
    warned = tmp_path / "warned.csv"
    warned.write_text("name,barcode,organism\nA,ACGTACGT,Hs\nB,TTGGCCAA,\n")
    bad = tmp_path / "bad.csv"
    bad.write_text("name,barcode,organism\nA,NOT-BASES!,Hs\nA,ACGT,Zz\n")
    async with rig(tmp_path, True) as r:

        def mux_posts() -> int:
            return len(r.log.select("POST", r"^/upload/multiplexed$"))

        refused = await r.cli.run(
            "samples", "upload-multiplexed", "--reads1", str(r1), "--annotation", str(bad), "--chunk-size", "64k"
        )
        assert refused.code == 5, refused
        assert "row 2" in refused.stderr and "row 3" in refused.stderr
        assert mux_posts() == 0
        rejected = await r.cli.run(
            "samples", "upload-multiplexed", "--reads1", str(r1), "--annotation", str(warned), "--reject-warnings"
        )
        assert rejected.code == 5 and mux_posts() == 0
        accepted = await r.cli.run(
            "--json",
            "samples",
            "upload-multiplexed",
            "--reads1",
            str(r1),
            "--reads2",
            str(r2),
            "--annotation",
            str(warned),
            "--chunk-size",
            "64k",
        )
        assert accepted.code == 0, accepted.stderr
        document = accepted.json()
        assert document["kind"] == "multiplexed" and len(document["data_ids"]) == 2 and document["warnings"]
        assert document["annotation_id"]
        got = await stored(r.server, {"mux_R1.fq.gz": document["data_ids"][0], "mux_R2.fq.gz": document["data_ids"][1]})
        assert got == {"mux_R1.fq.gz": r1.read_bytes(), "mux_R2.fq.gz": r2.read_bytes()}
        clean = await r.cli.run(
            "--json", "samples", "upload-multiplexed", "--reads1", str(r1), "--annotation", str(good)
        )
        assert clean.code == 0 and clean.json()["warnings"] == []


async def test_sync_samples_refuses_a_run_it_cannot_make_samples_of(tmp_path: Path) -> None:
    """A sample without FASTQs, R1 without R2 in a paired run: exit 2, every problem, not a byte sent."""
    run = make_run_folder(tmp_path / "runs", lanes=1, samples=3, fastq_size=1000, small_files=2, sample_sheet="v2")
    for path in run.rglob("Sample2_*"):
        path.unlink()
    for path in run.rglob("Sample3_*_R2_*"):
        path.unlink()
    async with rig(tmp_path, True) as r:
        base = ["sync", str(run), "--samples", "--metadata", "strandedness=forward", "--name-from-path"]
        result = await r.cli.run("--json", *base, "--sample-type", "RNA-Seq")
        assert result.code == 2, result
        text = json.dumps(result.json()["problems"])
        assert "Sample2" in text and "Sample3" in text
        assert r.log.select("POST", r"^/upload") == []
        missing_type = await r.cli.run(*base)
        assert missing_type.code == 2 and "--sample-type" in missing_type.stderr
        no_sheet = await r.cli.run(*base, "--sample-type", "RNA-Seq", "--sample-sheet", str(tmp_path / "none.csv"))
        assert no_sheet.code == 2 and "none.csv" in no_sheet.stderr


async def test_download_sample_takes_its_reads_and_the_outputs_of_its_runs(tmp_path: Path) -> None:
    """``--sample``: every file related to it (hosted's ``/samples/<id>/data``); ``--raw-only``: its reads alone."""
    async with running_server(tmp_path / "root") as srv:
        cli = Cli(srv.base_url, tmp_path / "home")
        await cli.login("alice", srv.users["alice"])
        r1 = write_random(tmp_path / "liver_R1.fq.gz", CHUNK + 3, seed=1)
        made = await cli.run(
            "--json",
            "samples",
            "upload",
            "--name",
            "liver",
            "--sample-type",
            "RNA-Seq",
            "--reads1",
            str(r1),
            "--metadata",
            "strandedness=reverse",
        )
        assert made.code == 0, made.stderr
        sample = made.json()["samples"][0]["id"]
        fastqc = write_random(tmp_path / "made" / "fastqc" / "report.html", 3000, seed=5)
        multiqc = write_random(tmp_path / "made" / "multiqc" / "report.html", 4000, seed=6)
        quant = write_random(tmp_path / "made" / "quant.sf", 500, seed=7)
        added = await cli.run(
            "admin",
            "--root",
            str(srv.root),
            "execution",
            "add",
            "alice",
            "--pipeline",
            "RNA-Seq",
            "--version",
            "3.4",
            "--sample",
            sample,
            "--output",
            f"fastqc={fastqc}",
            "--output",
            f"multiqc={multiqc}",
            "--output",
            f"salmon={quant}",
        )
        assert added.code == 0, added.stderr

        out = tmp_path / "all"
        every = await cli.run("--json", "download", "--sample", sample, "-o", str(out))
        assert every.code == 0, every.stderr
        got = sorted(p.read_bytes() for p in out.iterdir())
        assert got == sorted(p.read_bytes() for p in (r1, fastqc, multiqc, quant))  # both report.html kept
        assert "report.html" in {p.name for p in out.iterdir()}
        again = await cli.run("--json", "download", "--sample", sample, "-o", str(out))
        assert again.code == 0 and again.json()["bytes_transferred"] == 0, again.stderr

        raw = await cli.run("--json", "download", "--sample", sample, "--raw-only", "-o", str(tmp_path / "raw"))
        assert raw.code == 0, raw.stderr
        assert [p.name for p in (tmp_path / "raw").iterdir()] == [r1.name]
        archived = await cli.run("bulk", "--sample", sample, "--extract", "-o", str(tmp_path / "bulk"))
        assert archived.code == 0, archived.stderr
        assert {p.name: p.read_bytes() for p in (tmp_path / "bulk").iterdir()} == {
            p.name: p.read_bytes() for p in out.iterdir()
        }  # the archive names same-named files as download does
        alone = await cli.run("download", "--raw-only", "123")
        assert alone.code == 2 and "--raw-only goes with --sample" in alone.stderr


async def test_a_batch_says_a_line_per_sample_and_its_files_only_with_verbose(tmp_path: Path) -> None:
    """Plain output (not a terminal): a line per sample made or on Flow already, and no line per file
    (``-v`` adds them)."""
    async with running_server(tmp_path / "root") as srv:
        cli = Cli(srv.base_url, tmp_path / "home")
        await cli.login("alice", srv.users["alice"])
        sheet, _ = paired_sheet(tmp_path / "run", 2, 20 * KiB)
        batch = ["samples", "upload-batch", "--sheet", str(sheet), "--sample-type", "RNA-Seq"]
        first = await cli.run(*batch)
        assert first.code == 0, first.stderr
        lines = first.stdout.splitlines()
        made = sorted(line.split(" -> ")[0] for line in lines if line.startswith("sample "))
        assert made == ["sample P1 (row 1)", "sample P2 (row 2)"], first.stdout
        assert not [line for line in lines if line.startswith("uploaded ")], first.stdout
        again = await cli.run(*batch)
        assert again.code == 0 and "sample P1 (row 1) already on Flow (" in again.stdout, again.stdout
        assert "uploaded " not in again.stdout
        other, _ = paired_sheet(tmp_path / "other", 1, 20 * KiB)
        other.write_text(other.read_text().replace("P1,", "V1,"))
        verbose = await cli.run("-v", "samples", "upload-batch", "--sheet", str(other), "--sample-type", "RNA-Seq")
        assert verbose.code == 0, verbose.stderr
        uploaded = [line for line in verbose.stdout.splitlines() if line.startswith("uploaded ")]
        assert [line.split(" -> ")[0] for line in uploaded] == [
            f"uploaded {tmp_path / 'other' / 'P1_R1.fastq.gz'}",
            f"uploaded {tmp_path / 'other' / 'P1_R2.fastq.gz'}",
        ], verbose.stdout
        assert "sample V1 (row 1) -> " in verbose.stdout

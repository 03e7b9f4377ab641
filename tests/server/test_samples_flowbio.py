"""The official client's sample calls (flowbio v2, unchanged) and its CLI's batch upload, against our server."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from flowbio.v2.exceptions import AnnotationValidationError, BadRequestError, FlowApiError, NotFoundError
from openpyxl import load_workbook

from tests.server.conftest import Api, flowbio_client
from tests.support.server import RunningServer, running_server

CHUNK = 64 * 1024
PROJECTS = [("alice", "lab"), ("bob", "theirs")]


@pytest.fixture
async def server(server_root: Path) -> AsyncIterator[RunningServer]:
    async with running_server(server_root, projects=PROJECTS) as srv:
        yield srv


async def _with_client(srv: RunningServer, call: Callable[[Any], Any], user: str = "alice") -> Any:
    def run() -> Any:
        with flowbio_client(srv, CHUNK, user) as client:
            return call(client)

    return await anyio.to_thread.run_sync(run)


async def _project_id(srv: RunningServer, user: str, name: str) -> str:
    projects = await _with_client(srv, lambda c: list(c.samples.get_owned_projects()), user)
    return next(p.id for p in projects if p.name == name)


async def _nothing_left(api: Api, user: str = "alice") -> None:
    samples = (await api.call("GET", "/samples/owned", user)).json()
    data = (await api.call("GET", "/data/owned", user)).json()
    assert samples["count"] == 0 and samples["samples"] == []
    assert data["count"] == 0, data


async def test_paired_sample_with_metadata_project_and_organism(
    server: RunningServer, api: Api, tmp_path: Path
) -> None:
    reads1, reads2 = os.urandom(3 * CHUNK + 17), os.urandom(2 * CHUNK)
    (tmp_path / "S1_R1.fastq.gz").write_bytes(reads1)
    (tmp_path / "S1_R2.fastq.gz").write_bytes(reads2)
    lab = await _project_id(server, "alice", "lab")
    sample = await _with_client(
        server,
        lambda c: c.samples.upload_sample(
            name="S1",
            sample_type="RNA-Seq",
            data={"reads2": tmp_path / "S1_R2.fastq.gz", "reads1": tmp_path / "S1_R1.fastq.gz"},
            metadata={"strandedness": "reverse", "condition": "treated", "condition__annotation": "2 h"},
            project_id=lab,
            organism_id="Hs",
        ),
    )
    detail = (await api.call("GET", f"/samples/{sample.id}", "alice")).json()
    assert detail["name"] == "S1" and detail["sample_type"] == "RNA-Seq"
    assert detail["project"] == {"id": lab, "name": "lab"}
    assert detail["organism"] == {"id": "Hs", "name": "Human"}
    assert detail["metadata"]["strandedness"]["value"] == "reverse"
    assert detail["metadata"]["condition"]["annotation"] == "2 h"
    [fileset] = detail["filesets"]
    assert [d["filename"] for d in fileset["data"]] == ["S1_R1.fastq.gz", "S1_R2.fastq.gz"]
    for entry, content in zip(fileset["data"], (reads1, reads2), strict=True):
        got = await api.call("GET", f"/downloads/{entry['id']}/{entry['filename']}", "alice")
        assert got.status == 200 and got.body == content
    first, second = (d["id"] for d in fileset["data"])
    status = (await api.call("GET", f"/upload/{second}", "alice")).json()
    assert status["sample_id"] == sample.id and status["previous_data"] == [first]
    found = (await api.call("GET", "/samples/search?owned=true&name=s1", "alice")).json()
    assert [s["id"] for s in found["samples"]] == [sample.id] and found["samples"][0]["is_paired"] is True
    assert (await api.call("GET", f"/samples/{sample.id}", "bob")).status == 404
    listed = (await api.call("GET", f"/samples/{sample.id}/data", "alice")).json()
    assert [d["id"] for d in listed["data"]] == [first, second]


async def test_the_catalog_as_flowbio_reads_it(server: RunningServer) -> None:
    def read(client: Any) -> tuple[Any, ...]:
        s = client.samples
        return s.get_types(), s.get_metadata_attributes(), s.get_organisms(), list(s.get_owned_projects())

    types, attributes, organisms, projects = await _with_client(server, read)
    assert {"RNA-Seq", "ChIP-Seq", "ATAC-Seq", "generic"} <= {t.identifier for t in types}
    by_id = {a.identifier: a for a in attributes}
    assert by_id["strandedness"].options == ["forward", "reverse", "unstranded"]
    assert by_id["strandedness"].required_for_sample_types == ["RNA-Seq"]
    assert by_id["purification_target"].required_for_sample_types == ["ChIP-Seq"]
    assert by_id["condition"].allow_annotation and by_id["scientist"].options is None
    assert {(o.id, o.name, o.latin_name) for o in organisms} >= {
        ("Hs", "Human", "Homo sapiens"),
        ("Mm", "Mouse", "Mus musculus"),
    }
    assert [p.name for p in projects] == ["lab"]


@pytest.mark.parametrize(
    ("case", "fields"),
    [
        ("missing required metadata", {"sample_type": "RNA-Seq", "metadata": {"condition": "x"}}),
        ("unknown sample type", {"sample_type": "Nanopore-Seq"}),
        ("unknown organism", {"organism_id": "Xx"}),
        ("another user's project", {"project": "bob"}),
        ("option outside the list", {"metadata": {"strandedness": "sideways"}}),
        (
            "annotation not allowed",
            {"metadata": {"strandedness": "forward", "scientist__annotation": "x", "scientist": "ada"}},
        ),
    ],
)
async def test_refusals_are_bad_requests_and_leave_nothing(
    server: RunningServer, api: Api, tmp_path: Path, case: str, fields: dict[str, Any]
) -> None:
    (tmp_path / "R1.fq").write_bytes(os.urandom(2 * CHUNK + 3))
    (tmp_path / "R2.fq").write_bytes(os.urandom(100))
    kwargs: dict[str, Any] = {
        "name": "bad",
        "sample_type": "RNA-Seq",
        "metadata": {"strandedness": "forward"},
        "data": {"reads1": tmp_path / "R1.fq", "reads2": tmp_path / "R2.fq"},
    }
    if fields.pop("project", None):
        kwargs["project_id"] = await _project_id(server, "bob", "theirs")
    kwargs.update(fields)
    with pytest.raises(BadRequestError) as caught:
        await _with_client(server, lambda c: c.samples.upload_sample(**kwargs))
    assert caught.value.status_code == 400, case
    await _nothing_left(api)


async def test_multiplexed_upload_with_its_annotation(server: RunningServer, api: Api, tmp_path: Path) -> None:
    (tmp_path / "mux_R1.fq.gz").write_bytes(os.urandom(CHUNK + 1))
    (tmp_path / "mux_R2.fq.gz").write_bytes(os.urandom(CHUNK + 2))
    sheet = tmp_path / "annotation.csv"
    sheet.write_text("name,barcode,organism,strandedness\nA1,ACGT,Hs,forward\nA2,TTGA,,reverse\n")
    reads = {"reads1": tmp_path / "mux_R1.fq.gz", "reads2": tmp_path / "mux_R2.fq.gz"}
    result = await _with_client(server, lambda c: c.samples.upload_multiplexed_data(reads, sheet))
    assert len(result.data_ids) == 2 and result.annotation_id
    assert result.warnings == [{"row": 3, "message": "no organism given"}]
    with pytest.raises(AnnotationValidationError):  # warnings refused when asked
        await _with_client(server, lambda c: c.samples.upload_multiplexed_data(reads, sheet, ignore_warnings=False))
    sheet.write_text("name,barcode\nA 1,ACGT\nA2,XYZ\n")
    with pytest.raises(AnnotationValidationError) as caught:
        await _with_client(server, lambda c: c.samples.upload_multiplexed_data(reads, sheet))
    assert [e["row"] for e in caught.value.errors] == [2, 3]


async def test_annotation_sheet_as_xlsx_and_the_template(server: RunningServer, tmp_path: Path) -> None:
    template = await _with_client(server, lambda c: c.samples.get_annotation_template("RNA-Seq"))
    workbook = load_workbook(io.BytesIO(template))
    header = [cell.value for cell in workbook.worksheets[0][1]]
    assert header[:2] == ["name", "barcode"] and "strandedness" in header and "purification_target" not in header
    generic = await _with_client(server, lambda c: c.samples.get_annotation_template())
    assert [c.value for c in load_workbook(io.BytesIO(generic)).worksheets[0][1]] == [
        "name",
        "barcode",
        "organism",
        "project",
    ]
    with pytest.raises(NotFoundError):
        await _with_client(server, lambda c: c.samples.get_annotation_template("no-such-type"))
    sheet = workbook.worksheets[0]
    sheet.append(["X1", "ACGT", "Mm", None, "forward"])
    path = tmp_path / "filled.xlsx"
    workbook.save(path)
    (tmp_path / "mux.fq").write_bytes(b"@r\nACGT\n+\nIIII\n")
    result = await _with_client(
        server, lambda c: c.samples.upload_multiplexed_data({"reads1": tmp_path / "mux.fq"}, path)
    )
    assert result.warnings == [] and len(result.data_ids) == 1


async def test_flowbio_cli_upload_batch_makes_two_samples(server: RunningServer, api: Api, tmp_path: Path) -> None:
    for name in ("A_R1.fq", "A_R2.fq", "B_R1.fq"):
        (tmp_path / name).write_bytes(os.urandom(1000))
    sheet = tmp_path / "sheet.csv"
    sheet.write_text(
        "name,reads1,reads2,organism,strandedness,condition\n"
        "A,A_R1.fq,A_R2.fq,Hs,forward,ctrl\n"
        "B,B_R1.fq,,Mm,reverse,\n"
    )
    done = await _flowbio_cli(server, api, "samples", "upload-batch", "--sheet", str(sheet), "--sample-type", "RNA-Seq")
    uploaded = json.loads(done.stdout)
    assert len(uploaded["uploaded"]) == 2, uploaded
    listed = (await api.call("GET", "/samples/owned", "alice")).json()
    assert sorted(s["name"] for s in listed["samples"]) == ["A", "B"]
    assert {s["name"]: s["is_paired"] for s in listed["samples"]} == {"A": True, "B": False}


async def _flowbio_cli(server: RunningServer, api: Api, *args: str) -> subprocess.CompletedProcess[str]:
    """The official CLI as a user runs it (token and URL from the environment); it must succeed."""
    env = {**os.environ, "FLOW_API_URL": server.base_url, "FLOW_API_TOKEN": await api.token("alice")}

    def run() -> subprocess.CompletedProcess[str]:
        flowbio = Path(sys.executable).with_name("flowbio")
        return subprocess.run(
            [str(flowbio), "--json", "--no-progress", *args], env=env, capture_output=True, text=True, timeout=120
        )

    done = await anyio.to_thread.run_sync(run)
    assert done.returncode == 0, done.stderr
    return done


async def test_flowbio_cli_other_sample_verbs(server: RunningServer, api: Api, tmp_path: Path) -> None:
    (tmp_path / "one.fq").write_bytes(os.urandom(500))
    single = await _flowbio_cli(
        server,
        api,
        "samples",
        "upload",
        "--name",
        "solo",
        "--sample-type",
        "ChIP-Seq",
        "--reads1",
        str(tmp_path / "one.fq"),
        "--metadata",
        "purification_target=CTCF",
        "--organism",
        "Mm",
    )
    sample_id = json.loads(single.stdout)["id"]
    detail = (await api.call("GET", f"/samples/{sample_id}", "alice")).json()
    assert detail["metadata"]["purification_target"]["value"] == "CTCF" and detail["organism"]["id"] == "Mm"
    await _flowbio_cli(
        server, api, "samples", "batch-template", "--sample-type", "RNA-Seq", "-o", str(tmp_path / "batch.csv")
    )
    assert "strandedness" in (tmp_path / "batch.csv").read_text().splitlines()[0]
    await _flowbio_cli(
        server, api, "samples", "annotation-template", "--sample-type", "RNA-Seq", "-o", str(tmp_path / "t.xlsx")
    )
    assert load_workbook(tmp_path / "t.xlsx").worksheets[0]["A1"].value == "name"
    (tmp_path / "ann.csv").write_text("name,barcode,organism\nM1,ACGT,Hs\n")
    mux = await _flowbio_cli(
        server,
        api,
        "samples",
        "upload-multiplexed",
        "--reads1",
        str(tmp_path / "one.fq"),
        "--annotation",
        str(tmp_path / "ann.csv"),
    )
    assert len(json.loads(mux.stdout)["data_ids"]) == 1


async def test_sample_imports_are_a_clear_501(server: RunningServer) -> None:
    from flowbio.v2.samples import SampleImportSpec

    spec = SampleImportSpec(accession="ERR1160845", sample_type="RNA-Seq")
    for call in (lambda c: c.samples.import_samples([spec]), lambda c: c.samples.get_import("123")):
        with pytest.raises(FlowApiError) as caught:
            await _with_client(server, call)
        assert caught.value.status_code == 501 and "public repositories" in str(caught.value.message)

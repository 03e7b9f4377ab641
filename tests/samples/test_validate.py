"""Validation of sample-sheet rows against a catalog and the disk: pure, every problem at once."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowxfer.transfer import ProtocolError
from flowxfer.transfer._catalog import Catalog, attributes_with_options
from flowxfer.transfer._concat import Part
from flowxfer.transfer._sheets import Problem, ReadsCell, SheetError, SheetRow, parse_sheet_text
from flowxfer.transfer._validate import FileInfo, look_at_disk, paths_to_look_at, plan_samples

BASE = Path("/runs")

METADATA: list[dict[str, Any]] = [
    {
        "identifier": "strandedness",
        "name": "Strandedness",
        "description": "",
        "required": False,
        "sample_type_links": [{"sample_type_identifier": "RNA-Seq", "required": True}],
        "has_options": True,
        "allow_user_terms": False,
        "allow_annotation": False,
    },
    {
        "identifier": "purification_target",
        "name": "Target",
        "description": "",
        "required": False,
        "sample_type_links": [{"sample_type_identifier": "ChIP-Seq", "required": True}],
        "has_options": False,
        "allow_user_terms": False,
        "allow_annotation": False,
    },
    {
        "identifier": "condition",
        "name": "Condition",
        "description": "",
        "required": False,
        "sample_type_links": [],
        "has_options": False,
        "allow_user_terms": True,
        "allow_annotation": True,
    },
    {
        "identifier": "scientist",
        "name": "Scientist",
        "description": "",
        "required": False,
        "sample_type_links": [],
        "has_options": True,
        "allow_user_terms": True,
        "allow_annotation": False,
    },
    {
        "identifier": "sequencer",
        "name": "Sequencer",
        "description": "",
        "required": True,
        "sample_type_links": [],
        "has_options": False,
        "allow_user_terms": False,
        "allow_annotation": False,
    },
]
OPTIONS = {
    "strandedness": {
        "count": 3,
        "total_count": 3,
        "options": [
            {"id": "1", "value": "forward", "validated": True},
            {"id": "2", "value": "reverse", "validated": True},
            {"id": "3", "value": "unstranded", "validated": True},
        ],
    }
}


def catalog() -> Catalog:
    return Catalog.from_api(
        [{"identifier": t, "name": t, "description": ""} for t in ("RNA-Seq", "ChIP-Seq", "ATAC-Seq", "generic")],
        METADATA,
        OPTIONS,
        [
            {"id": "Hs", "name": "Human", "latin_name": "Homo sapiens"},
            {"id": "Mm", "name": "Mouse", "latin_name": "Mus musculus"},
        ],
        [{"id": "11", "name": "Liver", "description": ""}, {"id": "12", "name": "Brain", "description": ""}],
    )


def disk_of(names: dict[str, int]) -> dict[Path, FileInfo | str]:
    return {BASE / name: FileInfo(size, 1_000 + i, (1, i)) for i, (name, size) in enumerate(names.items())}


HEADER = "name,reads1,reads2,project,organism,strandedness,sequencer,condition,condition__annotation\n"


def test_catalog_from_the_api_answers() -> None:
    made = catalog()
    assert set(made.sample_types) == {"RNA-Seq", "ChIP-Seq", "ATAC-Seq", "generic"}
    strandedness = made.attributes["strandedness"]
    assert strandedness.options == ("forward", "reverse", "unstranded")
    assert strandedness.is_required("RNA-Seq") and not strandedness.is_required("ChIP-Seq")
    assert made.attributes["scientist"].options is None  # user terms: any value
    assert made.attributes["sequencer"].is_required("generic")
    assert made.organisms["Hs"] == ("Human", "Homo sapiens") and made.projects == {"11": "Liver", "12": "Brain"}
    assert attributes_with_options(METADATA) == ["strandedness"]


@pytest.mark.parametrize(
    "broken",
    [
        {"types": {"identifier": "x"}},
        {"metadata": [{"name": "no identifier"}]},
        {"options": {}},
        {"organisms": [{"id": 5, "name": "numeric id"}]},
        {"projects": ["not an object"]},
    ],
)
def test_a_malformed_catalog_answer_is_a_protocol_error(broken: dict[str, Any]) -> None:
    answers: dict[str, Any] = {"types": [], "metadata": METADATA, "options": OPTIONS, "organisms": [], "projects": []}
    answers.update(broken)
    with pytest.raises(ProtocolError):
        Catalog.from_api(**answers)


def test_a_valid_sheet_becomes_planned_samples() -> None:
    sheet = parse_sheet_text(
        HEADER + "S1,Fastq/L001/S1_S1_L001_R1_001.fastq.gz;Fastq/L002/S1_S1_L002_R1_001.fastq.gz,"
        "Fastq/L001/S1_S1_L001_R2_001.fastq.gz;Fastq/L002/S1_S1_L002_R2_001.fastq.gz,"
        "11,Hs,reverse,NovaSeq,ko,by hand\n" + "S2,single.fq.gz,,,,forward,MiSeq,,\n",
        BASE,
    )
    disk = disk_of(
        {
            "Fastq/L001/S1_S1_L001_R1_001.fastq.gz": 10,
            "Fastq/L002/S1_S1_L002_R1_001.fastq.gz": 20,
            "Fastq/L001/S1_S1_L001_R2_001.fastq.gz": 30,
            "Fastq/L002/S1_S1_L002_R2_001.fastq.gz": 40,
            "single.fq.gz": 5,
        }
    )
    plan = plan_samples(sheet.rows, "RNA-Seq", catalog(), disk)
    assert plan.problems == () and plan.invalid_rows == frozenset()
    plan.check()
    first, second = plan.samples
    assert first.fields == {
        "sample_name": "S1",
        "sample_type": "RNA-Seq",
        "project": "11",
        "organism": "Hs",
        "strandedness": "reverse",
        "sequencer": "NovaSeq",
        "condition": "ko",
        "condition__annotation": "by hand",
    }
    reads1, reads2 = first.files
    assert (reads1.label, reads1.filename, reads1.size) == ("reads1", "S1_S1_R1_001.fastq.gz", 30)
    assert reads1.parts == (
        Part(str(BASE / "Fastq/L001/S1_S1_L001_R1_001.fastq.gz"), 10, 1000),
        Part(str(BASE / "Fastq/L002/S1_S1_L002_R1_001.fastq.gz"), 20, 1001),
    )
    assert (reads2.filename, reads2.size) == ("S1_S1_R2_001.fastq.gz", 70)
    assert [(f.label, f.filename) for f in second.files] == [("reads1", "single.fq.gz")]
    assert second.fields == {
        "sample_name": "S2",
        "sample_type": "RNA-Seq",
        "strandedness": "forward",
        "sequencer": "MiSeq",
    }


def test_every_problem_at_once_each_with_row_column_and_value() -> None:
    sheet = parse_sheet_text(
        HEADER
        # 1: space, unknown project, organism by name, option in another case
        + "S 1,a.fq.gz,,99,Human,Reverse,x,,\n"
        # 2: reads2 without reads1, annotation without value
        + "S3,,b.fq.gz,,,forward,x,,note\n"
        # 3: duplicate name, missing file, a.fq.gz again, no strandedness
        + "S3,missing.fq.gz,a.fq.gz,,,,x,,\n"
        # 4: no name, a folder, parts mismatch, bad option, no sequencer
        + ",dir.fq.gz,c.fq.gz;d.fq.gz,,Mm,sideways,,,\n",
        BASE,
    )
    disk: dict[Path, FileInfo | str] = {
        **disk_of({"a.fq.gz": 1, "b.fq.gz": 1, "c.fq.gz": 1, "d.fq.gz": 1}),
        BASE / "dir.fq.gz": "a folder, not a file",
    }
    plan = plan_samples(sheet.rows, "RNA-Seq", catalog(), disk)
    found = {(p.row, p.column, p.value) for p in plan.problems}
    assert found == {
        (1, "name", "S 1"),
        (1, "project", "99"),
        (1, "organism", "Human"),
        (1, "strandedness", "Reverse"),
        (1, "reads1", "a.fq.gz"),
        (2, "reads1", None),
        (2, "condition__annotation", "note"),
        (2, "name", "S3"),
        (3, "name", "S3"),
        (3, "reads1", "missing.fq.gz"),
        (3, "reads2", "a.fq.gz"),
        (3, "strandedness", None),
        (4, "name", None),
        (4, "reads1", "dir.fq.gz"),
        (4, "reads2", "c.fq.gz;d.fq.gz"),
        (4, "strandedness", "sideways"),
        (4, "sequencer", None),
    }
    text = {str(p) for p in plan.problems}
    assert "row 1, organism 'Human': not an organism on this server (did you mean the id 'Hs'?)" in text
    assert (
        "row 1, strandedness 'Reverse': not one of the options: forward, reverse, unstranded "
        "(did you mean 'reverse'?)" in text
    )
    assert "row 1, reads1 'a.fq.gz': the same file as row 3 reads2: a file can be in one sample only" in text
    assert "row 2, reads1: missing: reads2 is given, and reads1 is sent first" in text
    assert "row 3, strandedness: missing: required for RNA-Seq" in text
    assert "row 4, sequencer: missing: required" in text
    assert [p.row for p in plan.problems] == sorted(p.row or 0 for p in plan.problems)
    assert plan.samples == () and plan.invalid_rows == {1, 2, 3, 4}
    with pytest.raises(SheetError) as caught:
        plan.check()
    assert "17 problems" in str(caught.value) and str(caught.value).count("\n  row ") == 17
    plan.check(skip_invalid=True)  # skipping: each row is reported invalid, and nothing is sent


def test_sheet_wide_problems_stop_everything_even_when_skipping_invalid_rows() -> None:
    sheet = parse_sheet_text("name,reads1,sequencer,filename,colour\nS1,a.fq.gz,x,f,red\n", BASE)
    plan = plan_samples(sheet.rows, "Nanopore", catalog(), disk_of({"a.fq.gz": 3}))
    assert [(p.column, p.value, p.warning) for p in plan.problems] == [
        ("--sample-type", "Nanopore", False),
        ("filename", None, False),
        ("colour", None, True),
    ]
    assert plan.samples == () and plan.invalid_rows == frozenset()
    with pytest.raises(SheetError, match="not a sample type on this server"):
        plan.check(skip_invalid=True)


def test_skip_invalid_sends_the_valid_rows_and_warnings_do_not_stop() -> None:
    sheet = parse_sheet_text("name,reads1,sequencer,colour\nS1,a.fq.gz,x,red\nS2,gone.fq.gz,x,\nS3,e.fq.gz,x,\n", BASE)
    plan = plan_samples(sheet.rows, "generic", catalog(), disk_of({"a.fq.gz": 3, "e.fq.gz": 0}))
    assert [p.warning for p in plan.problems] == [True, False, True]  # colour, gone, empty file
    assert [s.name for s in plan.samples] == ["S1", "S3"] and plan.invalid_rows == {2}
    with pytest.raises(SheetError):
        plan.check()
    plan.check(skip_invalid=True)


def test_flowbio_filenames_flow_refuses() -> None:
    sheet = parse_sheet_text("name,reads1,sequencer\nS1,my reads.fq.gz,x\n", BASE)
    plan = plan_samples(sheet.rows, "generic", catalog(), disk_of({"my reads.fq.gz": 3}))
    assert [(p.column, p.value) for p in plan.errors] == [("reads1", "my reads.fq.gz")]
    assert "Spaces in filename" in plan.errors[0].message


def test_look_at_disk(tmp_path: Path) -> None:
    (tmp_path / "a.fq.gz").write_bytes(b"abc")
    (tmp_path / "link.fq.gz").symlink_to(tmp_path / "a.fq.gz")
    (tmp_path / "folder").mkdir()
    (tmp_path / "secret.fq.gz").write_bytes(b"x")
    (tmp_path / "secret.fq.gz").chmod(0)
    sheet = parse_sheet_text(
        "name,reads1,reads2,sequencer\nA,a.fq.gz,folder,x\nB,link.fq.gz,secret.fq.gz,x\nC,none.fq.gz;a.fq.gz,,x\n",
        tmp_path,
    )
    paths = paths_to_look_at(sheet.rows)
    assert tmp_path / "none.fq.gz;a.fq.gz" in paths and tmp_path / "none.fq.gz" in paths
    disk = look_at_disk(paths)
    info = disk[tmp_path / "a.fq.gz"]
    assert isinstance(info, FileInfo) and info.size == 3 and info.key == disk[tmp_path / "link.fq.gz"].key  # type: ignore[union-attr]
    assert disk[tmp_path / "folder"] == "a folder, not a file"
    assert tmp_path / "none.fq.gz" not in disk
    if os.geteuid() != 0:  # root reads anything
        assert disk[tmp_path / "secret.fq.gz"] == "cannot read it: permission denied"
    plan = plan_samples(sheet.rows, "generic", catalog(), disk)
    columns = {(p.row, p.column) for p in plan.errors}
    # The symbolic link is the same file as row A's reads1; C's a.fq.gz too.
    assert {(1, "reads1"), (1, "reads2"), (2, "reads1"), (3, "reads1")} <= columns


# --- the property: whatever is broken, it is reported at its row and column ----------------------

FAULTS = [
    "space",
    "no_name",
    "duplicate",
    "no_reads1",
    "missing_file",
    "folder",
    "shared_file",
    "project",
    "organism",
    "option",
    "required",
    "annotation",
    "parts",
]


@settings(max_examples=200, deadline=None)
@given(
    st.integers(2, 6).flatmap(
        lambda n: st.tuples(st.just(n), st.dictionaries(st.integers(1, n), st.sampled_from(FAULTS), max_size=n))
    )
)
def test_each_fault_is_reported_at_its_row_and_column(case: tuple[int, dict[int, str]]) -> None:
    count, faults = case
    rows: list[SheetRow] = []
    disk: dict[Path, FileInfo | str] = {}
    expected: dict[int, set[str]] = {}

    def file(name: str) -> Path:
        disk[BASE / name] = FileInfo(10, 1, (1, len(disk)))
        return BASE / name

    for number in range(1, count + 1):
        fault = faults.get(number)
        name = f"S{number}"
        reads1: ReadsCell | None = ReadsCell.of([file(f"{name}_R1.fq.gz")], None)
        reads2: ReadsCell | None = ReadsCell.of([file(f"{name}_R2.fq.gz")], None)
        project, organism = "11", "Hs"
        metadata = {"strandedness": "forward", "sequencer": "NovaSeq"}
        annotations: dict[str, str] = {}
        column = {
            "space": "name",
            "no_name": "name",
            "duplicate": "name",
            "no_reads1": "reads1",
            "missing_file": "reads1",
            "folder": "reads2",
            "shared_file": "reads2",
            "project": "project",
            "organism": "organism",
            "option": "strandedness",
            "required": "sequencer",
            "annotation": "strandedness__annotation",
            "parts": "reads2",
        }.get(fault or "")
        if fault == "space":
            name = f"S {number}"
        elif fault == "no_name":
            name = ""
        elif fault == "duplicate":
            name = "S1" if number != 1 else "S2"
        elif fault == "no_reads1":
            reads1 = None
        elif fault == "missing_file":
            reads1 = ReadsCell.of([BASE / f"gone{number}.fq.gz"], None)
        elif fault == "folder":
            disk[BASE / f"dir{number}"] = "a folder, not a file"
            reads2 = ReadsCell.of([BASE / f"dir{number}"], None)
        elif fault == "shared_file":
            reads2 = ReadsCell.of([BASE / f"S{1 if number != 1 else 2}_R1.fq.gz"], None)
        elif fault == "project":
            project = "999"
        elif fault == "organism":
            organism = "Zz"
        elif fault == "option":
            metadata["strandedness"] = "both"
        elif fault == "required":
            del metadata["sequencer"]
        elif fault == "annotation":
            annotations["strandedness"] = "why"
        elif fault == "parts":
            reads1 = ReadsCell.of([file(f"{name}_a.fq.gz"), file(f"{name}_b.fq.gz")], None)
        if column and fault not in ("duplicate", "shared_file"):
            expected[number] = {column}
        rows.append(SheetRow(number, name, reads1, reads2, project, organism, metadata, annotations))
    # The faults that meet another row (unless that row's own fault took away what they meet) are
    # reported on both rows.
    for number, fault in faults.items():
        other, row = rows[(1 if number != 1 else 2) - 1], rows[number - 1]
        if fault == "duplicate" and other.name == row.name:
            expected.setdefault(number, set()).add("name")
            expected.setdefault(other.row, set()).add("name")
        if (
            fault == "shared_file"
            and other.reads1 is not None
            and row.reads2 is not None
            and other.reads1.parts == row.reads2.parts
        ):
            expected.setdefault(number, set()).add("reads2")
            expected.setdefault(other.row, set()).add("reads1")
    plan = plan_samples(rows, "RNA-Seq", catalog(), disk)
    reported: dict[int, set[str]] = {}
    for problem in plan.errors:
        assert problem.row is not None and problem.column is not None
        reported.setdefault(problem.row, set()).add(problem.column)
    for number, columns in expected.items():
        assert columns <= reported.get(number, set()), (number, faults, [str(p) for p in plan.problems])
    assert plan.invalid_rows == set(reported)
    # A row nobody broke is planned.
    untouched = set(range(1, count + 1)) - set(reported)
    assert {s.row for s in plan.samples} == untouched
    assert all(isinstance(p, Problem) for p in plan.problems)


def test_a_planned_file_reads_from_its_parts(tmp_path: Path) -> None:
    from flowxfer.transfer._concat import ConcatSource
    from flowxfer.transfer._sources import FileSource

    for name, data in (("L1.fq.gz", b"one"), ("L2.fq.gz", b"two!"), ("solo.fq.gz", b"solo")):
        (tmp_path / name).write_bytes(data)
    sheet = parse_sheet_text("name,reads1,reads2,sequencer\nS1,L1.fq.gz;L2.fq.gz,,x\nS2,solo.fq.gz,,x\n", tmp_path)
    plan = plan_samples(sheet.rows, "generic", catalog(), look_at_disk(paths_to_look_at(sheet.rows)))
    merged, solo = (sample.files[0].source() for sample in plan.samples)
    assert isinstance(merged, ConcatSource) and isinstance(solo, FileSource)
    for source, expected in ((merged, b"onetwo!"), (solo, b"solo")):
        source.open()
        try:
            assert source.size == len(expected) and bytes(source.read(0, source.size)) == expected
        finally:
            source.close()

"""Illumina run folders: sample sheets v1 and v2, FASTQs at any depth, lanes, and everything that does not fit."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowxfer.transfer import UsageError
from flowxfer.transfer._illumina import (
    Fastq,
    RunScan,
    SampleSheet,
    match_fastqs,
    parse_fastq_name,
    parse_sample_sheet,
    scan_run,
    sheet_rows,
    upload_filename,
)
from flowxfer.transfer._sheets import SheetError
from tests.support.runfolder import illumina_sample_sheet, make_run_folder

V2 = """[Header]
FileFormatVersion,2
RunName,run42
[Reads]
Read1Cycles,151
Read2Cycles,151
Index1Cycles,8
[BCLConvert_Settings]
SoftwareVersion,4.2.7
[BCLConvert_Data]
Lane,Sample_ID,Index
1,Liver_1,ACGTACGT
2,Liver_1,ACGTACGT
1,Brain-2,TGCATGCA
[Cloud_Data]
Sample_ID,ProjectName
Liver_1,P
"""


def test_v2_sample_sheet() -> None:
    sheet = parse_sample_sheet(V2)
    assert sheet.version == 2 and sheet.paired is True
    assert [(s.sample_id, s.number, s.line) for s in sheet.samples] == [("Liver_1", 1, 12), ("Brain-2", 2, 14)]


def test_v1_sample_sheet_with_trailing_commas_and_names() -> None:
    sheet = parse_sample_sheet(illumina_sample_sheet("v1", lanes=2, samples=3))
    assert sheet.version == 1 and sheet.paired is True
    assert [(s.sample_id, s.sample_name, s.number) for s in sheet.samples] == [
        ("LIB001", "Sample1", 1),
        ("LIB002", "Sample2", 2),
        ("LIB003", "Sample3", 3),
    ]
    single = parse_sample_sheet("[Reads]\n75\n\n[Data]\nSampleID,SampleName\nA,a\n")
    assert single.paired is False and single.samples[0].sample_name == "a"
    assert parse_sample_sheet("[Data]\nSample_ID\nA\n").paired is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[Header]\nFileFormatVersion,2\n", r"no \[Data\]"),
        ("[Data]\nLane,Sample_Name\n1,A\n", "no Sample_ID column"),
        ("[Data]\nLane,Sample_ID\n1,A\n2,\n", "line 4: no Sample_ID"),
        ("[BCLConvert_Data]\n", r"no \[Data\]"),
    ],
)
def test_sample_sheets_that_name_no_samples(text: str, message: str) -> None:
    with pytest.raises(SheetError, match=message) as caught:
        parse_sample_sheet(text)
    assert isinstance(caught.value, UsageError)


def test_fastq_names() -> None:
    parsed = parse_fastq_name(Path("x/Sample_1_S12_L003_R2_001.fastq.gz"))
    assert parsed == Fastq("Sample_1", 12, 3, "R2", 1, Path("x/Sample_1_S12_L003_R2_001.fastq.gz"))
    no_lane = parse_fastq_name(Path("A_S1_R1_002.fastq.gz"))
    assert no_lane is not None and no_lane.lane is None and no_lane.chunk == 2
    assert parse_fastq_name(Path("A_S1_I1_001.fastq.gz")) is not None
    for name in ("A_S1_L001_R1_001.fastq", "A_L001_R1_001.fastq.gz", "A_S1_L1_R1_001.fastq.gz", "README"):
        assert parse_fastq_name(Path(name)) is None, name


def test_upload_filenames() -> None:
    lanes = [Path("L001/S1_S1_L001_R1_001.fastq.gz"), Path("L002/S1_S1_L002_R1_001.fastq.gz")]
    assert upload_filename(lanes) == "S1_S1_R1_001.fastq.gz"
    assert upload_filename(lanes[:1]) == "S1_S1_L001_R1_001.fastq.gz"
    assert upload_filename([Path("a.fq.gz"), Path("b.fq.gz")]) == "a.fq.gz"
    assert upload_filename([lanes[0], Path("L002/S2_S2_L002_R1_001.fastq.gz")]) == lanes[0].name


def fastqs(*names: str) -> list[Fastq]:
    found = [parse_fastq_name(Path("/run") / name) for name in names]
    assert all(found)
    return [f for f in found if f is not None]


SHEET = parse_sample_sheet("[Data]\nSample_ID,Sample_Name\nLIB1,Liver\nLIB2,Brain\n")


def test_lanes_merged_in_lane_order_matched_by_id_or_name() -> None:
    scan = match_fastqs(
        SHEET,
        fastqs(
            "b/L002/Liver_S1_L002_R1_001.fastq.gz",
            "a/L001/Liver_S1_L001_R1_001.fastq.gz",
            "a/L001/Liver_S1_L001_R2_001.fastq.gz",
            "b/L002/Liver_S1_L002_R2_001.fastq.gz",
            "LIB2_S2_L001_R1_001.fastq.gz",
            "LIB2_S2_L001_R2_001.fastq.gz",
            "LIB2_S2_L001_I1_001.fastq.gz",
            "Undetermined_S0_L001_R1_001.fastq.gz",
        ),
    )
    assert scan.problems == ()
    liver, brain = scan.samples
    assert liver.name == "LIB1" and liver.lane is None
    assert liver.reads1 == (
        Path("/run/a/L001/Liver_S1_L001_R1_001.fastq.gz"),
        Path("/run/b/L002/Liver_S1_L002_R1_001.fastq.gz"),
    )
    assert liver.reads2 == (
        Path("/run/a/L001/Liver_S1_L001_R2_001.fastq.gz"),
        Path("/run/b/L002/Liver_S1_L002_R2_001.fastq.gz"),
    )
    assert brain.name == "LIB2" and len(brain.reads1) == 1 and len(brain.reads2) == 1
    assert scan.ignored == (Path("/run/LIB2_S2_L001_I1_001.fastq.gz"),)
    assert scan.undetermined == (Path("/run/Undetermined_S0_L001_R1_001.fastq.gz"),)


def test_lanes_separate_and_undetermined_on_request() -> None:
    scan = match_fastqs(
        SHEET,
        fastqs(
            "Liver_S1_L001_R1_001.fastq.gz",
            "Liver_S1_L002_R1_001.fastq.gz",
            "LIB2_S2_R1_001.fastq.gz",
            "Undetermined_S0_L001_R1_001.fastq.gz",
            "Undetermined_S0_L002_R1_001.fastq.gz",
        ),
        lanes="separate",
        undetermined=True,
    )
    assert scan.problems == ()
    assert [(s.name, s.lane, [p.name for p in s.reads1]) for s in scan.samples] == [
        ("LIB1_L001", 1, ["Liver_S1_L001_R1_001.fastq.gz"]),
        ("LIB1_L002", 2, ["Liver_S1_L002_R1_001.fastq.gz"]),
        ("LIB2", None, ["LIB2_S2_R1_001.fastq.gz"]),
        ("Undetermined_L001", 1, ["Undetermined_S0_L001_R1_001.fastq.gz"]),
        ("Undetermined_L002", 2, ["Undetermined_S0_L002_R1_001.fastq.gz"]),
    ]


def test_everything_that_does_not_fit_is_reported_at_once() -> None:
    sheet = parse_sample_sheet("[Data]\nSample_ID,Sample_Name\nA,X\nX,Y\nC,\nD,\n")
    scan = match_fastqs(
        sheet,
        fastqs(
            "X_S9_L001_R1_001.fastq.gz",  # X is A's name and another's id; S9 decides neither
            "Stray_S5_L001_R1_001.fastq.gz",  # no such sample
            "C_S3_L001_R1_001.fastq.gz",
            "again/C_S3_L001_R1_001.fastq.gz",
            "C_S3_L001_R2_001.fastq.gz",
            "D_S4_L001_R1_001.fastq.gz",
            "D_S4_L002_R1_001.fastq.gz",
            "D_S4_L002_R2_001.fastq.gz",
            "Y_S2_L001_R2_001.fastq.gz",
        ),
    )
    text = [str(p) for p in scan.problems]
    assert any("X_S9_L001_R1_001.fastq.gz'" in t and "fits several samples" in t for t in text), text
    assert any("Stray_S5_L001_R1_001.fastq.gz'" in t and "no sample" in t for t in text), text
    looked_for = "A_S1_..._R1_001.fastq.gz or X_S1_"
    assert any(t.startswith("Sample_ID 'A'") and "no FASTQ found" in t and looked_for in t for t in text), text
    assert any(t.startswith("Sample_ID 'C'") and "found twice" in t for t in text), text
    assert any(t.startswith("Sample_ID 'D'") and "R1 without its R2" in t and "L001" in t for t in text), text
    assert any(t.startswith("Sample_ID 'X'") and "R2 without its R1" in t for t in text), text
    assert len(scan.problems) == 6
    with pytest.raises(SheetError) as caught:
        scan.check()
    assert str(caught.value).startswith("the run folder: 6 problems:")


def test_the_s_number_decides_between_an_id_and_a_name() -> None:
    sheet = parse_sample_sheet("[Data]\nSample_ID,Sample_Name\nA,B\nB,C\n")
    scan = match_fastqs(sheet, fastqs("B_S1_R1_001.fastq.gz", "B_S2_R1_001.fastq.gz"))
    assert scan.problems == ()
    assert [(s.name, [p.name for p in s.reads1]) for s in scan.samples] == [
        ("A", ["B_S1_R1_001.fastq.gz"]),
        ("B", ["B_S2_R1_001.fastq.gz"]),
    ]


def test_a_paired_sample_sheet_needs_r2_even_when_none_was_found() -> None:
    sheet = parse_sample_sheet("[Reads]\n151\n151\n[Data]\nSample_ID\nA\n")
    scan = match_fastqs(sheet, fastqs("A_S1_L001_R1_001.fastq.gz"))
    assert [p.message.split(":")[0] for p in scan.problems] == ["R1 without its R2 in a paired run"]


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_scan_a_generated_run(tmp_path: Path, version: str) -> None:
    run = make_run_folder(tmp_path, lanes=2, samples=3, fastq_size=64, small_files=6, sample_sheet=version)
    scan = scan_run(run)
    assert scan.problems == () and scan.sheet.version == int(version[1])
    expected_ids = [f"LIB{n:03d}" for n in (1, 2, 3)] if version == "v1" else ["Sample1", "Sample2", "Sample3"]
    assert [s.name for s in scan.samples] == expected_ids
    for number, sample in enumerate(scan.samples, start=1):
        assert [p.relative_to(run).as_posix() for p in sample.reads1] == [
            f"Fastq/L00{lane}/Sample{number}_S{number}_L00{lane}_R1_001.fastq.gz" for lane in (1, 2)
        ]
        assert len(sample.reads2) == 2
    rows = sheet_rows(scan, project="11", organism="Hs")
    assert [(r.row, r.name, r.project, r.organism) for r in rows] == [
        (i + 1, name, "11", "Hs") for i, name in enumerate(expected_ids)
    ]
    assert rows[0].reads1 is not None and rows[0].reads1.parts == scan.samples[0].reads1


def test_scan_finds_fastqs_at_any_depth_and_takes_another_sheet(tmp_path: Path) -> None:
    run = tmp_path / "run"
    deep = run / "Analysis" / "1" / "Data" / "fastq" / "Proj"
    deep.mkdir(parents=True)
    for read in ("R1", "R2"):
        (deep / f"A_S1_{read}_001.fastq.gz").write_bytes(b"x")
    (tmp_path / "other.csv").write_text("[BCLConvert_Data]\nSample_ID\nA\n")
    with pytest.raises(SheetError, match="--sample-sheet"):
        scan_run(run)
    scan = scan_run(run, sample_sheet=tmp_path / "other.csv")
    assert scan.problems == () and [s.reads2 for s in scan.samples] == [(deep / "A_S1_R2_001.fastq.gz",)]


def test_scan_errors(tmp_path: Path) -> None:
    with pytest.raises(SheetError, match="no such folder"):
        scan_run(tmp_path / "missing")
    (tmp_path / "SampleSheet.csv").write_bytes(b"\xff\xfe[Data]")
    with pytest.raises(SheetError, match="not UTF-8"):
        scan_run(tmp_path)
    (tmp_path / "SampleSheet.csv").write_text("[Data]\nSample_ID\nA\n")
    scan = scan_run(tmp_path)
    assert isinstance(scan, RunScan) and "no FASTQ found" in scan.problems[0].message


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(
    lanes=st.integers(1, 4), samples=st.integers(1, 5), version=st.sampled_from(["v1", "v2"]), separate=st.booleans()
)
def test_every_generated_run_gives_one_sample_per_sample_id(
    tmp_path_factory: pytest.TempPathFactory, lanes: int, samples: int, version: str, separate: bool
) -> None:
    run = make_run_folder(
        tmp_path_factory.mktemp("runs"),
        lanes=lanes,
        samples=samples,
        fastq_size=16,
        small_files=0,
        sample_sheet=version,
    )
    scan = scan_run(run, lanes="separate" if separate else "merge")
    assert scan.problems == ()
    per_sample = lanes if separate else 1
    assert len(scan.samples) == samples * per_sample
    assert {len(s.reads1) for s in scan.samples} == {lanes // per_sample}
    assert all(len(s.reads1) == len(s.reads2) for s in scan.samples)
    every = [p for s in scan.samples for p in (*s.reads1, *s.reads2)]
    assert len(every) == len(set(every)) == 2 * lanes * samples


def test_sheet_from_an_empty_sheet_section_is_typed() -> None:
    assert isinstance(parse_sample_sheet("[Data]\nSample_ID\nA\n"), SampleSheet)


def test_the_walk_skips_the_instrument_s_small_file_folders_not_bcl2fastq_output(tmp_path: Path) -> None:
    from flowxfer.transfer._illumina import _FASTQ_FILTER

    for folder in ("Data/Intensities/BaseCalls/L001/C1.1", "Thumbnail_Images", "InterOp"):
        assert _FASTQ_FILTER.prune_dir(folder), folder
    for folder in ("Data/Intensities/BaseCalls", "Data/Intensities/BaseCalls/Proj", "Fastq/L001", "Analysis/1"):
        assert not _FASTQ_FILTER.prune_dir(folder), folder
    assert not _FASTQ_FILTER.matches("Data/Intensities/BaseCalls/L001/C1.1/s_1_1101.bcl.gz")
    run = tmp_path / "run"
    (run / "Data/Intensities/BaseCalls/Proj/A").mkdir(parents=True)
    (run / "Data/Intensities/BaseCalls/L001/C1.1").mkdir(parents=True)
    (run / "Data/Intensities/BaseCalls/Proj/A/A_S1_L001_R1_001.fastq.gz").write_bytes(b"x")
    (run / "Data/Intensities/BaseCalls/L001/C1.1/A_S1_L002_R1_001.fastq.gz").write_bytes(b"x")
    (run / "SampleSheet.csv").write_text("[Data]\nSample_ID\nA\n")
    scan = scan_run(run)
    assert scan.problems == ()
    assert scan.samples[0].reads1 == (run / "Data/Intensities/BaseCalls/Proj/A/A_S1_L001_R1_001.fastq.gz",)


_sample_id = st.text("ABCab01_-", min_size=1, max_size=8).filter(lambda s: s != "Undetermined")


@settings(max_examples=200, deadline=None)
@given(st.lists(_sample_id, min_size=1, max_size=6, unique=True), st.integers(1, 3), st.booleans())
def test_ids_with_underscores_and_s_numbers_still_get_their_own_files(
    ids: list[str], lanes: int, lane_in_name: bool
) -> None:
    """bcl-convert names files ``<Sample_ID>_S<n>_...``; an id may itself look like ``x_S1``."""
    sheet = parse_sample_sheet("[BCLConvert_Data]\nSample_ID\n" + "\n".join(ids) + "\n")
    names = []
    for number, sample_id in enumerate(ids, start=1):
        for lane in range(1, (lanes if lane_in_name else 1) + 1):
            for read in ("R1", "R2"):
                lane_part = f"_L{lane:03d}" if lane_in_name else ""
                names.append(f"{sample_id}_S{number}{lane_part}_{read}_001.fastq.gz")
    scan = match_fastqs(sheet, fastqs(*names))
    assert scan.problems == ()
    assert [s.name for s in scan.samples] == ids
    for number, sample in enumerate(scan.samples, start=1):
        expected = [f"{sample.sample_id}_S{number}" for _ in sample.reads1]
        assert [p.name.rsplit("_", 3 if lane_in_name else 2)[0] for p in sample.reads1] == expected
        assert len(sample.reads1) == len(sample.reads2) == (lanes if lane_in_name else 1)

"""``flowxfer samples sheet RUN_DIR`` as a user runs it, on generated run folders."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from flowbio.cli._sheet import parse_sheet as flowbio_parse_sheet

from flowxfer.cli import main
from flowxfer.transfer._sheets import parse_sheet
from tests.support.runfolder import make_run_folder

FLOWXFER = [sys.executable, "-c", "from flowxfer.cli import main; main()"]


def run_cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr, result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def test_samples_commands_have_help_with_an_example() -> None:
    for args in (["samples"], ["samples", "sheet"]):
        code, out, _ = run_cli(*args, "--help")
        assert code == 0 and "Example:" in out, args
    assert "--lanes [merge|separate]" in run_cli("samples", "sheet", "--help")[1]


def test_a_v2_run_with_two_lanes_becomes_a_sheet_of_merged_cells(tmp_path: Path) -> None:
    run = make_run_folder(tmp_path / "runs", lanes=2, samples=2, fastq_size=100, small_files=4, sample_sheet="v2")
    out_path = tmp_path / "sheets" / "run42.csv"
    out_path.parent.mkdir()
    code, out, err = run_cli(
        "samples",
        "sheet",
        str(run),
        "--sample-type",
        "RNA-Seq",
        "--project",
        "11",
        "--organism",
        "Hs",
        "-o",
        str(out_path),
    )
    assert code == 0, err
    assert out.strip() == f"wrote {out_path}: 2 samples, 2 with lanes merged"
    assert f"flowxfer samples upload-batch --sheet {out_path} --sample-type RNA-Seq" in err
    lines = out_path.read_text().splitlines()
    assert lines[0] == "name,reads1,reads2,project,organism"
    fastq = "../runs/241129_A01234_0042_BHXXXXDSX5/Fastq"
    assert lines[1] == (
        f"Sample1,{fastq}/L001/Sample1_S1_L001_R1_001.fastq.gz;{fastq}/L002/Sample1_S1_L002_R1_001."
        f"fastq.gz,{fastq}/L001/Sample1_S1_L001_R2_001.fastq.gz;{fastq}/L002/Sample1_S1_L002_R2_001."
        "fastq.gz,11,Hs"
    )
    sheet = parse_sheet(out_path)
    assert [row.name for row in sheet.rows] == ["Sample1", "Sample2"]
    cell = sheet.rows[1].reads2
    assert cell is not None
    assert tuple(path.resolve() for path in cell.resolve(Path.exists)) == (
        (run / "Fastq/L001/Sample2_S2_L001_R2_001.fastq.gz").resolve(),
        (run / "Fastq/L002/Sample2_S2_L002_R2_001.fastq.gz").resolve(),
    )


def test_separate_lanes_make_a_sheet_flowbio_itself_reads(tmp_path: Path) -> None:
    run = make_run_folder(tmp_path, lanes=2, samples=1, fastq_size=100, small_files=0, sample_sheet="v1")
    out_path = tmp_path / "lanes.csv"
    code, _, err = run_cli(
        "samples", "sheet", str(run), "--sample-type", "generic", "--lanes", "separate", "-o", str(out_path)
    )
    assert code == 0, err
    theirs = flowbio_parse_sheet(out_path)
    assert [(r.name, r.reads1.name if r.reads1 else None) for r in theirs.rows] == [
        ("LIB001_L001", "Sample1_S1_L001_R1_001.fastq.gz"),
        ("LIB001_L002", "Sample1_S1_L002_R1_001.fastq.gz"),
    ]
    assert all(
        r.reads1 is not None and r.reads1.is_file() and r.reads2 is not None and r.reads2.is_file() for r in theirs.rows
    )


def test_stdout_sheet_has_absolute_paths_and_json_describes_the_samples(tmp_path: Path) -> None:
    run = make_run_folder(tmp_path, lanes=1, samples=2, fastq_size=100, small_files=0, sample_sheet="v2")
    (run / "Fastq" / "L001" / "Undetermined_S0_L001_R1_001.fastq.gz").write_bytes(b"u")
    (run / "Fastq" / "L001" / "Undetermined_S0_L001_R2_001.fastq.gz").write_bytes(b"u")
    code, out, err = run_cli("samples", "sheet", str(run), "--sample-type", "generic")
    assert code == 0, err
    rows = out.splitlines()
    assert len(rows) == 3 and rows[1].split(",")[1] == str(run / "Fastq/L001/Sample1_S1_L001_R1_001.fastq.gz")
    assert "2 Undetermined FASTQs left out (--undetermined)" in err
    code, out, err = run_cli("--json", "samples", "sheet", str(run), "--sample-type", "generic", "--undetermined")
    assert code == 0, err
    document = json.loads(out)
    assert document["status"] == "completed" and document["sheet"] is None and document["sample_sheet_version"] == 2
    assert [s["name"] for s in document["samples"]] == ["Sample1", "Sample2", "Undetermined"]
    assert document["csv"].splitlines()[3].startswith("Undetermined,")


def test_metadata_goes_into_every_row_as_a_sheet_column_would(tmp_path: Path) -> None:
    """``--metadata K=V`` (repeatable) gives every row the column K; ``<id>__annotation`` is the
    attribute's annotation column, right after it; the sheet reads back (ours and flowbio's) with them."""
    run = make_run_folder(tmp_path, lanes=1, samples=2, fastq_size=100, small_files=0, sample_sheet="v2")
    out_path = tmp_path / "meta.csv"
    code, _, err = run_cli(
        "samples",
        "sheet",
        str(run),
        "--sample-type",
        "RNA-Seq",
        "--metadata",
        "strandedness=reverse",
        "--metadata",
        "condition__annotation=24 h",
        "--metadata",
        "condition=treated=yes",
        "-o",
        str(out_path),
    )
    assert code == 0, err
    lines = out_path.read_text().splitlines()
    assert lines[0] == "name,reads1,reads2,project,organism,strandedness,condition,condition__annotation"
    assert all(line.endswith(",reverse,treated=yes,24 h") for line in lines[1:]) and len(lines) == 3
    rows = parse_sheet(out_path).rows
    assert [(dict(r.metadata), dict(r.annotations)) for r in rows] == [
        ({"strandedness": "reverse", "condition": "treated=yes"}, {"condition": "24 h"})
    ] * 2
    theirs = flowbio_parse_sheet(out_path)
    assert [r.metadata for r in theirs.rows] == [
        {"strandedness": "reverse", "condition": "treated=yes", "condition__annotation": "24 h"}
    ] * 2


def test_metadata_without_an_equals_sign_is_exit_2(tmp_path: Path) -> None:
    run = make_run_folder(tmp_path, lanes=1, samples=1, fastq_size=10, small_files=0, sample_sheet="v2")
    code, _, err = run_cli("samples", "sheet", str(run), "--sample-type", "T", "--metadata", "strandedness")
    assert code == 2 and "invalid --metadata 'strandedness': expected KEY=VALUE" in err


def test_every_problem_of_a_run_is_reported_with_exit_2_and_no_sheet(tmp_path: Path) -> None:
    run = make_run_folder(tmp_path, lanes=2, samples=3, fastq_size=100, small_files=0, sample_sheet="v2")
    (run / "Fastq" / "L002" / "Sample2_S2_L002_R2_001.fastq.gz").unlink()
    for lane in ("L001", "L002"):
        for read in ("R1", "R2"):
            (run / "Fastq" / lane / f"Sample3_S3_{lane}_{read}_001.fastq.gz").unlink()
    (run / "Fastq" / "L001" / "Extra_S9_L001_R1_001.fastq.gz").write_bytes(b"x")
    out_path = tmp_path / "never.csv"
    code, out, err = run_cli("samples", "sheet", str(run), "--sample-type", "RNA-Seq", "-o", str(out_path))
    assert code == 2 and out == "" and not out_path.exists()
    assert "the run folder: 3 problems:" in err
    assert "Fastq/L001/Extra_S9_L001_R1_001.fastq.gz" in err
    assert "Sample_ID 'Sample2': R1 without its R2 in a paired run: Fastq/L002/Sample2_S2_L002_R1_001.fastq.gz" in err
    assert "Sample_ID 'Sample3': no FASTQ found" in err
    code, out, _ = run_cli("--json", "samples", "sheet", str(run), "--sample-type", "RNA-Seq")
    document = json.loads(out)
    assert code == 2 and document["exit_code"] == 2 and len(document["problems"]) == 3
    assert {p["value"] for p in document["problems"]} == {
        "Fastq/L001/Extra_S9_L001_R1_001.fastq.gz",
        "Sample2",
        "Sample3",
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["samples", "sheet", "MISSING", "--sample-type", "T"], "no such folder"),
        (["samples", "sheet", "RUN", "--sample-type", "T"], "SampleSheet.csv': no such file (name another with"),
        (["samples", "sheet", "RUN", "--sample-type", "T", "--sample-sheet", "BAD"], "no [Data] (v1) or"),
        (["samples", "sheet", "RUN", "--sample-type", "T", "--lanes", "both"], "Invalid value for '--lanes'"),
        (["samples", "sheet", "RUN"], "Missing option '--sample-type'"),
    ],
)
def test_bad_input_is_exit_2_with_a_message_in_a_real_process(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "RUN").mkdir()
    (tmp_path / "BAD").write_text("[Header]\nx,y\n")
    paths = {"MISSING": tmp_path / "missing", "RUN": tmp_path / "RUN", "BAD": tmp_path / "BAD"}
    argv = [str(paths[a]) if a in paths else a for a in args]
    result = subprocess.run(FLOWXFER + argv, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_an_output_that_cannot_be_written_is_exit_2(tmp_path: Path) -> None:
    run = make_run_folder(tmp_path, lanes=1, samples=1, fastq_size=10, small_files=0, sample_sheet="v2")
    code, _, err = run_cli(
        "samples", "sheet", str(run), "--sample-type", "T", "-o", str(tmp_path / "no" / "such" / "dir.csv")
    )
    assert code == 2 and "cannot write" in err

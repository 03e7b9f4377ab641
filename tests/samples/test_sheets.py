"""Sample sheets: flowbio's format read as flowbio reads it, our ';' cells, problems instead of tracebacks."""

from __future__ import annotations

import string
from pathlib import Path

import pytest
from flowbio.cli._sheet import parse_sheet as flowbio_parse_sheet
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowxfer.transfer import UsageError
from flowxfer.transfer._sheets import (
    Problem,
    ReadsCell,
    SheetError,
    SheetRow,
    format_sheet,
    parse_sheet,
    parse_sheet_text,
)


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8", newline="")
    return path


def test_a_flowbio_batch_template_sheet(tmp_path: Path) -> None:
    sheet_path = write(
        tmp_path / "sheets" / "batch.csv",
        (
            "name,reads1,reads2,project,organism,strandedness,condition,condition__annotation\n"
            "S1,../reads/S1_R1.fastq.gz,../reads/S1_R2.fastq.gz,7,Hs,reverse,treated,2h heat\n"
            "S2,/abs/S2_R1.fastq.gz,,,, , ,\n"
        ),
    )
    sheet = parse_sheet(sheet_path)
    assert sheet.problems == () and sheet.columns[:5] == ("name", "reads1", "reads2", "project", "organism")
    first, second = sheet.rows
    assert first.row == 1 and first.name == "S1" and first.project == "7" and first.organism == "Hs"
    assert first.reads1 is not None and first.reads1.whole == tmp_path / "sheets" / "../reads/S1_R1.fastq.gz"
    assert first.reads1.parts == (first.reads1.whole,)
    assert first.metadata == {"strandedness": "reverse", "condition": "treated"}
    assert first.annotations == {"condition": "2h heat"}
    assert first.metadata_fields() == {
        "strandedness": "reverse",
        "condition": "treated",
        "condition__annotation": "2h heat",
    }
    # Empty (and blank) cells are absent, as in flowbio.
    assert second.reads2 is None and second.project is None and second.metadata == {} and second.annotations == {}
    assert second.reads1 is not None and second.reads1.whole == Path("/abs/S2_R1.fastq.gz")


def test_several_files_in_a_cell_are_read_only_when_no_file_has_the_whole_name(tmp_path: Path) -> None:
    cell = ReadsCell.parse("L001/a.fq.gz ; L002/a.fq.gz;", tmp_path)
    assert cell.parts == (tmp_path / "L001/a.fq.gz", tmp_path / "L002/a.fq.gz")
    assert cell.resolve(lambda path: False) == cell.parts
    # A file really named like the whole cell wins: that is how flowbio reads the cell.
    assert cell.resolve(lambda path: path == cell.whole) == (cell.whole,)
    single = ReadsCell.parse("odd;name.fq.gz", tmp_path)
    assert single.resolve(lambda path: path == tmp_path / "odd;name.fq.gz") == (tmp_path / "odd;name.fq.gz",)
    assert ReadsCell.parse("plain.fq.gz", tmp_path).candidates() == (tmp_path / "plain.fq.gz",)


def test_a_byte_order_mark_and_all_empty_rows(tmp_path: Path) -> None:
    sheet = parse_sheet(write(tmp_path / "s.csv", b"\xef\xbb\xbfname,reads1\r\nA,a.fq\r\n,\r\n\r\nB,b.fq\r\n,,\r\n"))
    assert [(r.row, r.name) for r in sheet.rows] == [(1, "A"), (3, "B")]


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("samples.xlsx", b"PK\x03\x04", "must be a .csv file"),
        ("samples.tsv", b"name\treads1\n", "must be a .csv file"),
        ("binary.csv", b"PK\x03\x04\x14\x00\xff\xfe", "not UTF-8"),
        ("nul.csv", b"name,reads1\nA,a\x00b\n", "NUL"),
        ("quote.csv", b'name,reads1\nA,"a.fq\nB,b.fq\n', "never closed"),
    ],
)
def test_not_a_csv_is_a_usage_error_naming_the_file(tmp_path: Path, name: str, data: bytes, message: str) -> None:
    with pytest.raises(SheetError) as caught:
        parse_sheet(write(tmp_path / name, data))
    assert isinstance(caught.value, UsageError) and message in str(caught.value)
    assert name in str(caught.value)


def test_missing_sheet_and_folder(tmp_path: Path) -> None:
    with pytest.raises(SheetError, match="no such file"):
        parse_sheet(tmp_path / "absent.csv")
    (tmp_path / "dir.csv").mkdir()
    with pytest.raises(SheetError, match="folder"):
        parse_sheet(tmp_path / "dir.csv")


def test_sheet_problems_name_row_column_and_value(tmp_path: Path) -> None:
    sheet = parse_sheet_text("name,reads1,name,,strandedness\nA,a.fq,A2,x,forward\nB,b.fq,,,reverse,extra,\n", tmp_path)
    messages = [str(p) for p in sheet.problems]
    assert messages[0] == "name: two columns have this name"
    assert any(p.row == 2 and p.value == "extra" and "more cell" in p.message for p in sheet.problems)
    assert len(sheet.rows) == 2  # problems are reported, rows still parsed, so all surface together


def test_problem_text() -> None:
    problem = Problem("no such file", row=3, column="reads1", value="a b.fq")
    assert str(problem) == "row 3, reads1 'a b.fq': no such file"
    assert str(Problem("unknown", column="--sample-type", value="X")) == "--sample-type 'X': unknown"
    assert str(Problem("odd", warning=True)) == "warning: odd"
    assert Problem("m", row=1).to_json() == {"row": 1, "column": None, "value": None, "message": "m", "warning": False}


def test_format_writes_paths_relative_to_the_sheet_and_joins_parts(tmp_path: Path) -> None:
    reads = tmp_path / "run" / "Fastq"
    row = SheetRow(
        1,
        "S1",
        ReadsCell.of([reads / "L001/a.fq.gz", reads / "L002/a.fq.gz"], None),
        None,
        project="p",
        metadata={"strandedness": "forward"},
        annotations={"condition": "note"},
    )
    text = format_sheet([row], tmp_path / "sheets")
    assert text.splitlines() == [
        "name,reads1,reads2,project,organism,strandedness,condition,condition__annotation",
        "S1,../run/Fastq/L001/a.fq.gz;../run/Fastq/L002/a.fq.gz,,p,,forward,,note",
    ]
    assert format_sheet([row], None).splitlines()[1].startswith(f"S1,{reads}/L001/a.fq.gz;{reads}/L002/a.fq.gz,")


def test_cells_that_cannot_be_written() -> None:
    with pytest.raises(ValueError, match="';'"):
        ReadsCell.of([Path("/x/a;b.fq"), Path("/x/c.fq")], None)
    with pytest.raises(ValueError, match="cannot be written"):
        ReadsCell.of([Path("/x/a\nb.fq")], None)
    with pytest.raises(ValueError):
        ReadsCell.of([], None)
    assert ReadsCell.of([Path("/x/a;b.fq")], None).text == "/x/a;b.fq"  # alone, a ';' is fine


# --- properties ----------------------------------------------------------------------------------

_word = st.text(string.ascii_letters + string.digits + "-_.", min_size=1, max_size=8)
_value = (
    st.text(string.ascii_letters + string.digits + " ,\"'-_.é", min_size=1, max_size=12).map(str.strip).filter(bool)
)
_rel_path = st.lists(_word.filter(lambda w: w not in (".", "..")), min_size=1, max_size=3).map("/".join)
_attribute = st.sampled_from(["strandedness", "condition", "scientist", "sequencer"])


@st.composite
def rows(draw: st.DrawFn, *, multi: bool) -> list[SheetRow]:
    count = draw(st.integers(1, 5))
    made = []
    for number in range(1, count + 1):

        def cell() -> ReadsCell | None:
            if not draw(st.booleans()):
                return None
            paths = draw(st.lists(_rel_path, min_size=1, max_size=3 if multi else 1))
            return ReadsCell.of([Path("/base") / p for p in paths], None)

        metadata = draw(st.dictionaries(_attribute, _value, max_size=3))
        annotations = draw(st.dictionaries(_attribute, _value, max_size=2))
        made.append(
            SheetRow(
                number,
                draw(_word),
                cell(),
                cell(),
                draw(st.none() | _word),
                draw(st.none() | _word),
                metadata,
                annotations,
            )
        )
    return made


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows(multi=True))
def test_format_then_parse_gives_the_rows_back(made: list[SheetRow]) -> None:
    text = format_sheet(made, Path("/base"))
    sheet = parse_sheet_text(text, Path("/base"))
    assert sheet.problems == ()
    for before, after in zip(made, sheet.rows, strict=True):
        assert (after.name, after.project, after.organism) == (before.name, before.project, before.organism)
        assert dict(after.metadata) == dict(before.metadata) and dict(after.annotations) == dict(before.annotations)
        for was, now in ((before.reads1, after.reads1), (before.reads2, after.reads2)):
            assert (was is None and now is None) or (was is not None and now is not None and was.parts == now.parts)


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(rows(multi=False))
def test_a_flowbio_sheet_reads_as_flowbio_reads_it(tmp_path: Path, made: list[SheetRow]) -> None:
    """Differential: the official client's parser and ours agree on every sheet it can read."""
    path = write(tmp_path / "sub" / "sheet.csv", format_sheet(made, tmp_path / "sub"))
    theirs = flowbio_parse_sheet(path)
    ours = parse_sheet(path)
    assert len(theirs.rows) == len(ours.rows)
    for their, our in zip(theirs.rows, ours.rows, strict=True):
        assert their.row_number == our.row and their.name == our.name
        assert (their.project, their.organism) == (our.project, our.organism)
        assert their.metadata == our.metadata_fields()
        for their_path, our_cell in ((their.reads1, our.reads1), (their.reads2, our.reads2)):
            if their_path is None:
                assert our_cell is None
            else:
                assert our_cell is not None
                assert our_cell.resolve(lambda p: True) == (their_path.absolute(),)

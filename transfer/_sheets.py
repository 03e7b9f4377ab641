"""Sample sheets in flowbio's format, read and written; and the problems a sheet can have.

A sample sheet is a CSV, one sample a row, as ``flowbio samples
batch-template`` makes it: columns ``name``, ``reads1``, ``reads2``,
``project``, ``organism``, then metadata attribute ids and ``<id>__annotation``
companions. A sheet made for the official client must work here unchanged, so
the reading is flowbio's (``flowbio/cli/_sheet.py``, 0.14): ``.csv`` only,
UTF-8 with an optional byte-order mark, cells stripped, empty cells absent,
every non-reserved column a metadata column, reads paths relative to the
sheet's folder, rows numbered from 1 for the first data row.

**Our extension: several files in one reads cell.** A cell may name several
files separated by ``;`` (``L001/S1_R1.fastq.gz;L002/S1_R1.fastq.gz``):
they are sent as one Flow file, their concatenation in the order written
(a sample's lanes). A flowbio sheet never means this by accident: a cell is
first read as one path, exactly as flowbio reads it, and only when no file
has that whole name is it split on ``;`` (:meth:`ReadsCell.resolve`). Every
sheet flowbio accepts names existing files, so it reads the same here.

Where we are stricter than flowbio (each reported as a :class:`Problem`, all
at once, never a traceback): two columns with one name, cells beyond the
header that hold values (a comma in an unquoted value shifts every cell
after it), a column with no name that holds values. Rows whose cells are
all empty (a spreadsheet's trailing ``,,,,`` lines) are left out, keeping
the other rows' numbers.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._errors import UsageError

__all__ = [
    "ANNOTATION_SUFFIX",
    "PARTS_SEPARATOR",
    "RESERVED_COLUMNS",
    "Problem",
    "ReadsCell",
    "Sheet",
    "SheetError",
    "SheetRow",
    "format_sheet",
    "parse_sheet",
    "parse_sheet_text",
    "split_metadata",
]

RESERVED_COLUMNS = ("name", "reads1", "reads2", "project", "organism")
ANNOTATION_SUFFIX = "__annotation"
#: Separates the files of one reads cell that are sent as one file (see the module doc).
PARTS_SEPARATOR = ";"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the input, naming where it is: row, column and offending value.

    :ivar message: what is wrong, in words.
    :ivar row: the sheet row (1 = first data row, as flowbio counts), or None for the whole sheet.
    :ivar column: the column (or option, ``--sample-type``), or None.
    :ivar value: the offending value as written, or None.
    :ivar warning: True when it does not stop the upload (it is reported all the same).
    """

    message: str
    row: int | None = None
    column: str | None = None
    value: str | None = None
    warning: bool = False

    def __str__(self) -> str:
        where = []
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.column is not None:
            where.append(self.column)
        place = ", ".join(where)
        if self.value is not None:
            place = f"{place} {self.value!r}" if place else repr(self.value)
        prefix = "warning: " if self.warning else ""
        return f"{prefix}{place}: {self.message}" if place else f"{prefix}{self.message}"

    def to_json(self) -> dict[str, Any]:
        return {
            "row": self.row,
            "column": self.column,
            "value": self.value,
            "message": self.message,
            "warning": self.warning,
        }


class SheetError(UsageError):
    """Input that cannot be used: every :class:`Problem` found, all at once.

    :ivar problems: the problems (warnings included, for the record).
    """

    def __init__(self, problems: Sequence[Problem], what: str = "the sample sheet") -> None:
        self.problems = list(problems)
        errors = [p for p in self.problems if not p.warning]
        lines = "\n".join(f"  {p}" for p in self.problems)
        count = f"{len(errors)} problem{'s' if len(errors) != 1 else ''}"
        super().__init__(f"{what}: {count}:\n{lines}")


@dataclass(frozen=True)
class ReadsCell:
    """A reads cell: one path as flowbio reads it, or (our extension) several joined by ``;``.

    :ivar text: the cell as written (stripped).
    :ivar whole: the cell read as one path, resolved against the sheet's folder (flowbio's reading).
    :ivar parts: the cell split on ``;``, each resolved; ``(whole,)`` when there is no ``;``.
    """

    text: str
    whole: Path
    parts: tuple[Path, ...]

    @classmethod
    def parse(cls, text: str, base_dir: Path) -> ReadsCell:
        pieces = [piece.strip() for piece in text.split(PARTS_SEPARATOR)]
        whole = _resolve(text, base_dir)
        parts = tuple(_resolve(piece, base_dir) for piece in pieces if piece)
        return cls(text, whole, parts if len(parts) > 1 else (whole,))

    @classmethod
    def of(cls, paths: Sequence[Path], sheet_dir: Path | None) -> ReadsCell:
        """The cell naming ``paths`` (relative to ``sheet_dir`` where given, else absolute).

        :raises ValueError: for no paths, or a path that cannot be written in a
            cell of several (it holds ``;``) or in a cell at all (a line break,
            or spaces around it, which reading strips).
        """
        if not paths:
            raise ValueError("a reads cell names at least one file")
        texts = [_relative(Path(path), sheet_dir) for path in paths]
        for text in texts:
            if text != text.strip() or "\n" in text or "\r" in text:
                raise ValueError(f"{text!r} cannot be written in a sample sheet cell")
            if len(texts) > 1 and PARTS_SEPARATOR in text:
                raise ValueError(f"{text!r} holds {PARTS_SEPARATOR!r}: it cannot be one of several files in a cell")
        base = sheet_dir if sheet_dir is not None else Path("/")
        return cls.parse(PARTS_SEPARATOR.join(texts), base)

    def resolve(self, exists: Callable[[Path], bool]) -> tuple[Path, ...]:
        """The files this cell names: the whole cell if a file has that name (as flowbio), else the parts."""
        if len(self.parts) == 1 or exists(self.whole):
            return (self.whole,)
        return self.parts

    def candidates(self) -> tuple[Path, ...]:
        """Every path :meth:`resolve` may look at."""
        return (self.whole,) if len(self.parts) == 1 else (self.whole, *self.parts)


@dataclass(frozen=True)
class SheetRow:
    """One data row of a sample sheet.

    ``name``/``reads1`` may be empty: validation reports that (with every
    other problem) rather than the parser refusing the sheet.

    :ivar row: the row number (1 = the first data row).
    :ivar metadata: attribute id -> value, in column order (non-empty cells only).
    :ivar annotations: attribute id -> annotation text, from the ``<id>__annotation`` columns.
    """

    row: int
    name: str
    reads1: ReadsCell | None
    reads2: ReadsCell | None
    project: str | None = None
    organism: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)

    def metadata_fields(self) -> dict[str, str]:
        """The metadata as sent on the wire: ``<id>`` and ``<id>__annotation`` fields (as flowbio sends them)."""
        fields = dict(self.metadata)
        fields.update({f"{key}{ANNOTATION_SUFFIX}": value for key, value in self.annotations.items()})
        return fields


def split_metadata(values: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """``<id>`` values and ``<id>__annotation`` texts apart, as a sheet's columns hold them.

    What ``--metadata K=V`` gives every sample of a run (``sync --samples``,
    ``samples sheet``) means what the same column of a sheet means.
    """
    annotations = {k[: -len(ANNOTATION_SUFFIX)]: v for k, v in values.items() if k.endswith(ANNOTATION_SUFFIX)}
    return {k: v for k, v in values.items() if not k.endswith(ANNOTATION_SUFFIX)}, annotations


@dataclass(frozen=True)
class Sheet:
    """A parsed sample sheet.

    :ivar path: the file it came from (None for text).
    :ivar columns: the header, as written.
    :ivar rows: the data rows (all-empty rows left out).
    :ivar problems: what is wrong with the sheet as a whole (columns, misaligned cells).
    """

    path: Path | None
    columns: tuple[str, ...]
    rows: tuple[SheetRow, ...]
    problems: tuple[Problem, ...] = ()


def parse_sheet(path: str | os.PathLike[str]) -> Sheet:
    """Read the sample sheet at ``path`` (blocking): flowbio's format, with ``;`` cells.

    :raises SheetError: not a ``.csv``, unreadable, not UTF-8 text, or not CSV.
    """
    path = Path(path)
    if path.suffix.lower() != ".csv":
        raise SheetError(
            [
                Problem(
                    f"a sample sheet must be a .csv file (export the spreadsheet to CSV), "
                    f"not {path.suffix or 'a file without extension'}",
                    value=str(path),
                )
            ]
        )
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise SheetError([Problem("no such file", value=str(path))]) from None
    except IsADirectoryError:
        raise SheetError([Problem("is a folder, not a sample sheet", value=str(path))]) from None
    except OSError as exc:
        raise SheetError([Problem(f"cannot read it: {exc.strerror}", value=str(path))]) from None
    try:
        # utf-8-sig drops the byte-order mark that Excel's "CSV UTF-8" export writes first.
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SheetError(
            [Problem(f"not UTF-8 text (byte {exc.start}): is it really a CSV?", value=str(path))]
        ) from None
    return parse_sheet_text(text, path.parent.absolute(), path=path)


def parse_sheet_text(text: str, base_dir: Path, *, path: Path | None = None) -> Sheet:
    """Parse sample-sheet CSV ``text``; relative reads paths are resolved against ``base_dir``.

    :raises SheetError: when the text is not CSV (NUL bytes, a quote never closed).
    """
    if "\0" in text:
        raise SheetError([Problem("holds NUL bytes: not a CSV text file", value=str(path) if path else None)])
    # Read leniently, as flowbio does (a stray quote inside a value is kept), except for a quote
    # never closed: the lenient reader would swallow every row after it into one cell.
    try:
        list(csv.reader(io.StringIO(text, newline=""), strict=True))
    except csv.Error as exc:
        if "unexpected end of data" in str(exc):
            raise SheetError(
                [Problem("not valid CSV: a quoted cell is never closed", value=str(path) if path else None)]
            ) from None
    try:
        records = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as exc:  # a cell over csv's field size limit
        raise SheetError([Problem(f"not valid CSV: {exc}", value=str(path) if path else None)]) from None
    # csv.DictReader (flowbio's reader) skips lines with no cells at all, header included.
    records = [record for record in records if record]
    if not records:
        return Sheet(path, (), ())
    header = tuple(cell.strip() for cell in records[0])
    problems = _header_problems(header)
    rows = []
    for number, record in enumerate(records[1:], start=1):
        if not any(cell.strip() for cell in record):
            continue
        extra = [cell.strip() for cell in record[len(header) :] if cell.strip()]
        if extra:
            problems.append(
                Problem(
                    f"{len(extra)} more cell(s) than the header has columns (an unquoted comma in a value?)",
                    row=number,
                    value=extra[0],
                )
            )
        rows.append(_row(number, header, record, base_dir))
    return Sheet(path, header, tuple(rows), tuple(problems))


def _header_problems(header: Sequence[str]) -> list[Problem]:
    problems = []
    seen: set[str] = set()
    for column in header:
        if column in seen:
            problems.append(Problem("two columns have this name", column=column))
        seen.add(column)
    return problems


def _row(number: int, header: Sequence[str], record: Sequence[str], base_dir: Path) -> SheetRow:
    cells: dict[str, str] = {}
    for column, cell in zip(header, record, strict=False):
        value = cell.strip()
        if value:
            cells[column] = value  # a repeated column: the last wins, as in flowbio (reported apart)
    metadata: dict[str, str] = {}
    annotations: dict[str, str] = {}
    for column, value in cells.items():
        if column in RESERVED_COLUMNS:
            continue
        if column.endswith(ANNOTATION_SUFFIX) and len(column) > len(ANNOTATION_SUFFIX):
            annotations[column[: -len(ANNOTATION_SUFFIX)]] = value
        else:
            metadata[column] = value
    return SheetRow(
        row=number,
        name=cells.get("name", ""),
        reads1=ReadsCell.parse(cells["reads1"], base_dir) if "reads1" in cells else None,
        reads2=ReadsCell.parse(cells["reads2"], base_dir) if "reads2" in cells else None,
        project=cells.get("project"),
        organism=cells.get("organism"),
        metadata=metadata,
        annotations=annotations,
    )


def _resolve(text: str, base_dir: Path) -> Path:
    path = Path(text)
    return path if path.is_absolute() else base_dir / path


def _relative(path: Path, sheet_dir: Path | None) -> str:
    if sheet_dir is None:
        return str(path.absolute())
    try:
        return os.path.relpath(path.absolute(), sheet_dir.absolute())
    except ValueError:  # another drive (Windows): only an absolute path can name it
        return str(path.absolute())


def format_sheet(rows: Iterable[SheetRow], sheet_dir: Path | None, *, metadata_columns: Sequence[str] = ()) -> str:
    """The CSV text of a sample sheet with ``rows``, readable by flowbio and by :func:`parse_sheet`.

    Reads paths are written relative to ``sheet_dir`` (the folder the sheet
    will be saved in), or absolute when it is None (a sheet printed to
    stdout); several files in a cell are joined by ``;``. Columns: the
    reserved ones, then ``metadata_columns``, then any other attribute a row
    uses (each followed by its ``__annotation`` column where a row has one).
    """
    rows = list(rows)
    attributes = list(dict.fromkeys([*metadata_columns, *(k for r in rows for k in (*r.metadata, *r.annotations))]))
    columns = list(RESERVED_COLUMNS)
    for attribute in attributes:
        columns.append(attribute)
        if any(attribute in row.annotations for row in rows):
            columns.append(f"{attribute}{ANNOTATION_SUFFIX}")
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        cells = {
            "name": row.name,
            "reads1": _cell(row.reads1, sheet_dir),
            "reads2": _cell(row.reads2, sheet_dir),
            "project": row.project or "",
            "organism": row.organism or "",
            **row.metadata_fields(),
        }
        writer.writerow([cells.get(column, "") for column in columns])
    return out.getvalue()


def _cell(cell: ReadsCell | None, sheet_dir: Path | None) -> str:
    if cell is None:
        return ""
    return ReadsCell.of(cell.parts, sheet_dir).text

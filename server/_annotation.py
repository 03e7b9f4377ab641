"""Annotation sheets of multiplexed uploads: reading ``.csv``/``.xlsx``, checking rows, making templates.

One row per sample held in the multiplexed reads: its ``name``, its
``barcode``, optionally ``organism`` and ``project``, then metadata
attribute identifiers (``<id>__annotation`` for an attribute's free-text
companion), as in flowbio's batch sheets. Hosted Flow's own sheet columns
are not public; this layout is inferred from flowbio's batch sheet and the
hosted docs' description ("names, file paths, metadata"), and stated in
docs/protocol.md.

Problems come as hosted Flow's bodies expect them: hard ones
(``validation``) and warnings, each ``{"row", "message"}`` with ``row`` the
spreadsheet's row number (the header is row 1; ``None`` for the file).
"""

from __future__ import annotations

import csv
import io
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openpyxl import Workbook, load_workbook

from ._catalog import ANNOTATION_SUFFIX, Catalog, name_problem

BASE_COLUMNS = ("name", "barcode", "organism", "project")
_BARCODE = re.compile(r"^[ACGTN]+([+-][ACGTN]+)?$")
#: Unpacked bytes an ``.xlsx`` may hold (its members' sizes, read before openpyxl opens it): a zip bomb stops here.
MAX_XLSX_UNPACKED = 128 * 1024 * 1024

Problem = dict[str, Any]


@dataclass(frozen=True)
class SheetLimits:
    max_bytes: int
    max_rows: int
    max_columns: int


@dataclass
class Sheet:
    """A read sheet: its header and its rows as ``(row number, {column: text})``, or why it could not be read."""

    header: list[str] = field(default_factory=list)
    rows: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    problem: str | None = None


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def _from_table(table: list[list[str]], limits: SheetLimits) -> Sheet:
    if not table:
        return Sheet(problem="the sheet is empty")
    header = [h.strip() for h in table[0]]
    while header and not header[-1]:
        header.pop()
    sheet = Sheet(header=header)
    for number, values in enumerate(table[1:], start=2):
        if not any(v.strip() for v in values):
            continue
        sheet.rows.append(
            (
                number,
                {column: (values[i].strip() if i < len(values) else "") for i, column in enumerate(header) if column},
            )
        )
    if len(sheet.rows) > limits.max_rows:
        sheet.problem = f"the sheet has more than {limits.max_rows} rows"
    return sheet


def _read_csv(data: bytes, limits: SheetLimits) -> Sheet:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return Sheet(problem="a .csv sheet must be UTF-8 text")
    table: list[list[str]] = []
    try:
        for values in csv.reader(io.StringIO(text, newline="")):
            if len(table) > limits.max_rows + 1:
                return Sheet(problem=f"the sheet has more than {limits.max_rows} rows")
            table.append(values[: limits.max_columns])
    except csv.Error as exc:
        return Sheet(problem=f"not a readable .csv sheet: {exc}")
    return _from_table(table, limits)


def _read_xlsx(path: Path, limits: SheetLimits) -> Sheet:
    try:
        with zipfile.ZipFile(path) as archive:
            if sum(member.file_size for member in archive.infolist()) > MAX_XLSX_UNPACKED:
                return Sheet(problem="the .xlsx sheet unpacks to too many bytes")
        # A file object: openpyxl refuses a path whose name does not end in .xlsx (ours are data ids).
        workbook = load_workbook(io.BytesIO(path.read_bytes()), read_only=True, data_only=True)
        try:
            worksheet = workbook.worksheets[0]
            table = [
                [_cell(v) for v in values]
                for values in worksheet.iter_rows(
                    max_row=limits.max_rows + 2, max_col=limits.max_columns, values_only=True
                )
            ]
        finally:
            workbook.close()
    except Exception as exc:  # noqa: BLE001 - openpyxl fails in many ways on a damaged file; each is the sheet's fault
        return Sheet(problem=f"not a readable .xlsx sheet ({type(exc).__name__})")
    return _from_table(table, limits)


def read_sheet(path: Path, filename: str, limits: SheetLimits) -> Sheet:
    """Read an uploaded sheet by its name's extension (blocking: run in a worker thread)."""
    suffix = Path(filename).suffix.lower()
    if path.stat().st_size > limits.max_bytes:
        return Sheet(problem=f"annotation sheets are at most {limits.max_bytes} bytes")
    if suffix == ".csv":
        return _read_csv(path.read_bytes(), limits)
    if suffix == ".xlsx":
        return _read_xlsx(path, limits)
    return Sheet(problem="an annotation sheet must be a .csv or .xlsx file")


def check_sheet(catalog: Catalog, sheet: Sheet) -> tuple[list[Problem], list[Problem]]:
    """(hard problems, warnings) of a read sheet against the catalog."""
    if sheet.problem is not None:
        return [{"row": None, "message": sheet.problem}], []
    errors: list[Problem] = []
    warnings: list[Problem] = []
    for column in ("name", "barcode"):
        if column not in sheet.header:
            errors.append({"row": 1, "message": f"the sheet has no {column} column"})
    for column in sheet.header:
        base = column[: -len(ANNOTATION_SUFFIX)] if column.endswith(ANNOTATION_SUFFIX) else column
        if column and column not in BASE_COLUMNS and catalog.attribute(base) is None:
            warnings.append({"row": 1, "message": f"column {column[:100]!r} is not a metadata attribute; ignored"})
    if errors:
        return errors, warnings
    if not sheet.rows:
        return [{"row": None, "message": "the sheet has no samples"}], warnings
    names: dict[str, int] = {}
    barcodes: dict[str, int] = {}
    for number, row in sheet.rows:

        def refuse(message: str, number: int = number) -> None:
            errors.append({"row": number, "message": message})

        name, barcode = row.get("name", ""), row.get("barcode", "").upper()
        problem = name_problem(name)
        if problem:
            refuse(f"name: {problem}")
        elif name in names:
            refuse(f"name {name!r} is also on row {names[name]}")
        else:
            names[name] = number
        if not _BARCODE.match(barcode):
            refuse("barcode must be bases (A, C, G, T, N), two indexes joined by + or -")
        elif barcode in barcodes:
            refuse(f"barcode {barcode} is also on row {barcodes[barcode]}")
        else:
            barcodes[barcode] = number
        organism = row.get("organism", "")
        if not organism:
            warnings.append({"row": number, "message": "no organism given"})
        elif catalog.organism(organism) is None:
            refuse(f"unknown organism {organism[:40]!r}")
        for attribute in catalog.attributes:
            value = row.get(attribute.identifier, "")
            if attribute.required and not value:
                refuse(f"{attribute.identifier} is required")
            elif (
                value
                and attribute.options is not None
                and not attribute.allow_user_terms
                and value not in attribute.options
            ):
                refuse(f"{attribute.identifier}: {value[:40]!r} is not one of {', '.join(attribute.options)}")
    return errors, warnings


def template_columns(catalog: Catalog, sample_type: str) -> list[str]:
    """The template's columns: the base ones, then (for a type other than ``generic``) its attributes."""
    columns = list(BASE_COLUMNS)
    if sample_type == "generic":
        return columns
    for attribute in catalog.attributes:
        if attribute.required or sample_type in attribute.required_for or not attribute.required_for:
            columns.append(attribute.identifier)
            if attribute.allow_annotation:
                columns.append(attribute.identifier + ANNOTATION_SUFFIX)
    return columns


def template_xlsx(catalog: Catalog, sample_type: str) -> bytes:
    """The annotation template for ``sample_type`` as ``.xlsx`` bytes (a header row; options as a second sheet)."""
    workbook = Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.title = "Samples"
    sheet.append(template_columns(catalog, sample_type))
    options = workbook.create_sheet("Options")
    options.append(["attribute", "allowed values"])
    for attribute in catalog.attributes:
        if attribute.options is not None:
            options.append([attribute.identifier, ", ".join(attribute.options)])
    out = io.BytesIO()
    workbook.save(out)
    return out.getvalue()

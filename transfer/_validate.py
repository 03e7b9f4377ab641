"""Every row of a sample sheet checked against the server's catalog and the disk, before any byte moves.

``samples.md``: all problems are reported at once, each naming its row, its
column and the offending value; nothing is sent while one remains (or, with
``--skip-invalid``, the valid rows are). :func:`plan_samples` is pure: the
catalog (:class:`~._catalog.Catalog`) and what the disk holds (a
:data:`DiskView`, made by :func:`look_at_disk`) are given to it, so every
rule is tested directly. Its valid rows come out as :class:`PlannedSample`:
the fields sent on every chunk and each file's parts with the size and
mtime they were planned at (what :class:`~._concat.ConcatSource` and the
journal hold them to).

The checks (flowbio's, and those ``samples.md`` adds): a name present and
without whitespace, unique in the sheet; reads1 present (reads2 never
alone); every file present, a regular file, readable, in one row only; the
same number of files in reads1 and reads2 of a merged row; a Flow filename
Flow accepts; a known sample type, organism and owned project; each
required attribute set (required for all, or for this sample type); a
value among an attribute's options unless it allows user terms; an
annotation only beside its attribute's value and where the attribute
allows one; no column that would overwrite a field of the upload protocol.
A column that is no attribute on this server is a warning (flowbio sends
it as it is), as is an empty reads file.
"""

from __future__ import annotations

import os
import stat
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from flowxfer import protocol

from ._catalog import Catalog
from ._concat import ConcatSource, Part
from ._illumina import upload_filename
from ._sheets import ANNOTATION_SUFFIX, RESERVED_COLUMNS, Problem, ReadsCell, SheetError, SheetRow
from ._sources import FileSource, describe_mode

__all__ = [
    "UPLOAD_FIELDS",
    "DiskView",
    "FileInfo",
    "PlannedFile",
    "PlannedSample",
    "SamplePlan",
    "look_at_disk",
    "paths_to_look_at",
    "plan_samples",
]

#: Form fields of ``POST /upload/sample`` that a metadata column must not overwrite.
UPLOAD_FIELDS = frozenset(
    {
        "filename",
        "expected_file_size",
        "is_last",
        "data",
        "blob",
        "data_type",
        "is_directory",
        "checksum",
        "file_checksum",
        "sample_name",
        "sample_type",
        "is_last_sample",
        "previous_data",
        "project",
        "organism",
    }
)


@dataclass(frozen=True, slots=True)
class FileInfo:
    """A readable regular file as the disk showed it: size, mtime, and (device, inode) to spot one file twice."""

    size: int
    mtime_ns: int
    key: tuple[int, int]


#: Path -> its :class:`FileInfo`, or why it cannot be sent (text); a path absent is a file that does not exist.
DiskView = Mapping[Path, FileInfo | str]


def paths_to_look_at(rows: Iterable[SheetRow]) -> set[Path]:
    """Every path the rows' reads cells may name (whole cells and their parts)."""
    return {path for row in rows for cell in (row.reads1, row.reads2) if cell is not None for path in cell.candidates()}


def look_at_disk(paths: Iterable[Path]) -> dict[Path, FileInfo | str]:
    """What the disk holds at each of ``paths`` (blocking; symbolic links are followed)."""
    view: dict[Path, FileInfo | str] = {}
    for path in paths:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            continue
        except OSError as exc:
            view[path] = f"cannot read it: {exc.strerror}"
            continue
        if not stat.S_ISREG(st.st_mode):
            view[path] = f"{describe_mode(st.st_mode)}, not a file"
        elif not os.access(path, os.R_OK):
            view[path] = "cannot read it: permission denied"
        else:
            view[path] = FileInfo(st.st_size, st.st_mtime_ns, (st.st_dev, st.st_ino))
    return view


@dataclass(frozen=True)
class PlannedFile:
    """One Flow file of a sample: reads1 or reads2, from one file or several concatenated.

    :ivar filename: its name on Flow (several lanes: named without the lane).
    """

    label: str
    parts: tuple[Part, ...]
    filename: str

    @property
    def size(self) -> int:
        return sum(part.size for part in self.parts)

    def source(self) -> FileSource | ConcatSource:
        """Where its bytes come from: the file, or the parts read as one; held to the planned sizes and mtimes."""
        if len(self.parts) == 1:
            part = self.parts[0]
            return FileSource(part.path, part.size, part.mtime_ns)
        return ConcatSource(self.parts)


@dataclass(frozen=True)
class PlannedSample:
    """A valid row, ready to send.

    :ivar fields: the sample's fields, sent as they are on every chunk of every
        file (``sample_name``, ``sample_type``, ``project``, ``organism``, metadata
        and ``<id>__annotation``); the per-file fields (``is_last_sample``,
        ``previous_data``) are the sender's.
    :ivar files: reads1, then reads2 if any: the order they are sent and linked in.
    """

    row: int
    name: str
    fields: Mapping[str, str]
    files: tuple[PlannedFile, ...]


@dataclass(frozen=True)
class SamplePlan:
    """What :func:`plan_samples` decided.

    :ivar samples: the valid rows, in sheet order (none while the sheet as a whole has an error).
    :ivar problems: every problem, sheet-wide ones first, then by row.
    :ivar invalid_rows: the rows with an error.
    """

    samples: tuple[PlannedSample, ...]
    problems: tuple[Problem, ...]
    invalid_rows: frozenset[int]

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if not p.warning]

    def check(self, *, skip_invalid: bool = False) -> None:
        """Raise unless the plan may go ahead: no error at all, or (``skip_invalid``) none for the whole sheet.

        :raises SheetError: with every problem.
        """
        errors = self.errors
        if errors and not (skip_invalid and all(p.row is not None for p in errors)):
            raise SheetError(self.problems)


def plan_samples(
    rows: Sequence[SheetRow],
    sample_type: str,
    catalog: Catalog,
    disk: DiskView,
    *,
    sheet_problems: Sequence[Problem] = (),
) -> SamplePlan:
    """Check every row; the valid ones become :class:`PlannedSample`, the rest :class:`Problem` s.

    :param sheet_problems: problems already found in the sheet itself (:attr:`~._sheets.Sheet.problems`).
    """
    problems = list(sheet_problems)
    if sample_type not in catalog.sample_types:
        known = ", ".join(sorted(catalog.sample_types)) or "none"
        problems.append(
            Problem(f"not a sample type on this server (known: {known})", column="--sample-type", value=sample_type)
        )
    problems += _column_problems(rows, catalog)
    problems += _duplicate_names(rows)
    files: dict[int, list[PlannedFile]] = {}
    owners: dict[tuple[int, int], list[tuple[int, str]]] = defaultdict(list)
    for row in rows:
        problems += _row_problems(row, sample_type, catalog)
        planned, file_problems = _row_files(row, disk)
        problems += file_problems
        files[row.row] = planned
        for planned_file in planned:
            for part in planned_file.parts:
                info = disk[Path(part.path)]
                assert isinstance(info, FileInfo)
                owners[info.key].append((row.row, planned_file.label))
    problems += _shared_files(owners, rows)
    problems.sort(key=_problem_order)
    invalid = frozenset(p.row for p in problems if p.row is not None and not p.warning)
    sheet_wide = any(p.row is None and not p.warning for p in problems)
    samples = (
        ()
        if sheet_wide
        else tuple(
            PlannedSample(row.row, row.name, _fields(row, sample_type), tuple(files[row.row]))
            for row in rows
            if row.row not in invalid
        )
    )
    return SamplePlan(samples, tuple(problems), invalid)


def plan_known_samples(
    rows: Sequence[SheetRow], sample_type: str, made: Mapping[str, tuple[Mapping[str, str], int]], disk: DiskView
) -> SamplePlan | None:
    """The plan of rows whose samples were all made already, as they stand: no catalog needed.

    ``made`` maps a sample's name to the fields it was made with and its number of
    files (the journal's sample inventory, shared by every host). When every row's
    sample is there with the fields the row gives it now, and its files are on disk
    as many as were linked, the catalog can teach nothing: each sample is skipped.
    A re-run of a done run (cron, every host of a fleet) then asks the server
    nothing. Otherwise None: check the rows against the catalog.
    """
    if not rows:
        return None
    samples = []
    for row in rows:
        fields = _fields(row, sample_type)
        files, problems = _row_files(row, disk)
        known = made.get(row.name)
        if problems or known is None or dict(known[0]) != fields or known[1] != len(files):
            return None
        samples.append(PlannedSample(row.row, row.name, fields, tuple(files)))
    if _duplicate_names(rows):
        return None
    return SamplePlan(tuple(samples), (), frozenset())


_COLUMN_RANK = {column: rank for rank, column in enumerate(RESERVED_COLUMNS)}


def _problem_order(problem: Problem) -> tuple[int, int]:
    """Sheet-wide problems first, then by row; in a row, the reserved columns in sheet order, then the rest."""
    row = -1 if problem.row is None else problem.row
    return row, _COLUMN_RANK.get(problem.column or "", len(RESERVED_COLUMNS))


def _fields(row: SheetRow, sample_type: str) -> dict[str, str]:
    fields = {"sample_name": row.name, "sample_type": sample_type}
    if row.project:
        fields["project"] = row.project
    if row.organism:
        fields["organism"] = row.organism
    fields.update(row.metadata_fields())
    return fields


def _column_problems(rows: Sequence[SheetRow], catalog: Catalog) -> list[Problem]:
    """Metadata columns that are no attribute here (a warning), or that would overwrite a protocol field."""
    problems = []
    columns = dict.fromkeys(k for row in rows for k in row.metadata)
    columns.update(dict.fromkeys(f"{k}{ANNOTATION_SUFFIX}" for row in rows for k in row.annotations))
    for column in columns:
        if column in UPLOAD_FIELDS:
            problems.append(
                Problem("is a field of the upload protocol: a metadata column cannot have this name", column=column)
            )
            continue
        attribute = column.removesuffix(ANNOTATION_SUFFIX)
        if attribute not in catalog.attributes:
            problems.append(
                Problem(
                    "no metadata attribute on this server has this id; it is sent as it is", column=column, warning=True
                )
            )
    return problems


def _duplicate_names(rows: Sequence[SheetRow]) -> list[Problem]:
    by_name: dict[str, list[int]] = defaultdict(list)
    for row in rows:
        if row.name:
            by_name[row.name].append(row.row)
    problems = []
    for name, numbers in by_name.items():
        if len(numbers) > 1:
            for number in numbers:
                others = ", ".join(str(n) for n in numbers if n != number)
                problems.append(
                    Problem(
                        f"the same name as row {others}: sample names must be unique",
                        row=number,
                        column="name",
                        value=name,
                    )
                )
    return problems


def _row_problems(row: SheetRow, sample_type: str, catalog: Catalog) -> list[Problem]:
    """Name, project, organism and metadata of one row (the reads are :func:`_row_files`'s)."""
    problems = []

    def problem(message: str, column: str, value: str | None) -> None:
        problems.append(Problem(message, row=row.row, column=column, value=value))

    if not row.name:
        problem("missing: every sample needs a name", "name", None)
    elif any(char.isspace() for char in row.name):
        problem("a sample name cannot contain spaces", "name", row.name)
    if row.project is not None and row.project not in catalog.projects:
        hint = _hint(row.project, {pid: [name] for pid, name in catalog.projects.items()})
        problem(f"not a project you own{hint}", "project", row.project)
    if row.organism is not None and row.organism not in catalog.organisms:
        hint = _hint(row.organism, {oid: list(names) for oid, names in catalog.organisms.items()})
        problem(f"not an organism on this server{hint}", "organism", row.organism)
    for identifier, attribute in catalog.attributes.items():
        if attribute.is_required(sample_type) and identifier not in row.metadata:
            why = "required" if attribute.required else f"required for {sample_type}"
            problem(f"missing: {why}", identifier, None)
    for identifier, value in row.metadata.items():
        options = catalog.attributes[identifier].options if identifier in catalog.attributes else None
        if options is not None and value not in options:
            near = [o for o in options if o.casefold() == value.casefold()]
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            problem(f"not one of the options: {', '.join(options)}{hint}", identifier, value)
    for identifier, value in row.annotations.items():
        column = f"{identifier}{ANNOTATION_SUFFIX}"
        if identifier not in row.metadata:
            problem(f"an annotation needs a value in {identifier}", column, value)
        elif identifier in catalog.attributes and not catalog.attributes[identifier].allow_annotation:
            problem(f"{identifier} does not allow an annotation", column, value)
    return problems


def _hint(value: str, names: Mapping[str, Sequence[str]]) -> str:
    """`` (did you mean id 'X'?)`` when ``value`` is the name of a known id rather than the id."""
    for identifier, texts in names.items():
        if (
            any(value.casefold() == text.casefold() for text in texts if text)
            or value.casefold() == identifier.casefold()
        ):
            return f" (did you mean the id {identifier!r}?)"
    return ""


def _row_files(row: SheetRow, disk: DiskView) -> tuple[list[PlannedFile], list[Problem]]:
    """The row's files as planned, and what is wrong with its reads cells."""
    problems: list[Problem] = []
    planned: list[PlannedFile] = []
    if row.reads1 is None:
        why = "reads2 is given, and reads1 is sent first" if row.reads2 is not None else "every sample needs reads1"
        problems.append(Problem(f"missing: {why}", row=row.row, column="reads1"))
    counts = {}
    for label, cell in (("reads1", row.reads1), ("reads2", row.reads2)):
        if cell is None:
            continue
        paths = cell.resolve(lambda path: path in disk)
        counts[label] = len(paths)
        parts, cell_problems = _cell_parts(row.row, label, cell, paths, disk)
        problems += cell_problems
        if parts is not None:
            planned.append(PlannedFile(label, parts, upload_filename([Path(p.path) for p in parts])))
            problem = protocol.filename_problem(planned[-1].filename)
            if problem is not None:
                problems.append(
                    Problem(
                        f"Flow refuses the filename {planned[-1].filename!r}: {problem}",
                        row=row.row,
                        column=label,
                        value=cell.text,
                    )
                )
    if len(counts) == 2 and counts["reads1"] != counts["reads2"] and max(counts.values()) > 1:
        assert row.reads2 is not None
        problems.append(
            Problem(
                f"{counts['reads2']} file(s) here but {counts['reads1']} in reads1: a merged "
                "sample needs one reads2 file per reads1 file",
                row=row.row,
                column="reads2",
                value=row.reads2.text,
            )
        )
    return planned, problems


def _cell_parts(
    number: int, label: str, cell: ReadsCell, paths: Sequence[Path], disk: DiskView
) -> tuple[tuple[Part, ...] | None, list[Problem]]:
    problems = []
    parts = []
    for path in paths:
        info = disk.get(path)
        if info is None:
            problems.append(Problem(f"no such file: {path}", row=number, column=label, value=cell.text))
        elif isinstance(info, str):
            problems.append(Problem(f"{path}: {info}", row=number, column=label, value=cell.text))
        else:
            if info.size == 0:
                problems.append(Problem(f"{path} is empty", row=number, column=label, value=cell.text, warning=True))
            parts.append(Part(str(path), info.size, info.mtime_ns))
    if len({p.path for p in parts}) != len(parts):
        problems.append(Problem("names the same file twice", row=number, column=label, value=cell.text))
    return (tuple(parts) if len(parts) == len(paths) else None), problems


def _shared_files(owners: Mapping[tuple[int, int], list[tuple[int, str]]], rows: Sequence[SheetRow]) -> list[Problem]:
    """A file named in two places (two rows, or reads1 and reads2): each place is told of all the others."""
    cells = {
        (row.row, label): cell
        for row in rows
        for label, cell in (("reads1", row.reads1), ("reads2", row.reads2))
        if cell
    }
    sharing: dict[tuple[int, str], dict[tuple[int, str], None]] = defaultdict(dict)
    for places in owners.values():
        distinct = list(dict.fromkeys(places))
        for place in distinct if len(distinct) > 1 else ():
            sharing[place].update(dict.fromkeys(other for other in distinct if other != place))
    return [
        Problem(
            f"the same file as {', '.join(f'row {r} {c}' for r, c in sorted(others))}: a file can be "
            "in one sample only",
            row=place[0],
            column=place[1],
            value=cells[place].text,
        )
        for place, others in sorted(sharing.items())
    ]

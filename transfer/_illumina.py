"""An Illumina run folder read as samples: its ``SampleSheet.csv`` and the FASTQs found under it.

``samples sheet RUN_DIR`` (``samples.md``) turns a demultiplexed run into a
flowbio-format sample sheet: one sample per Sample_ID of the run's sample
sheet (v1 ``[Data]`` or v2 ``[BCLConvert_Data]``), its FASTQs found anywhere
under the run folder, at any depth, by name:
``<Sample>_S<n>[_L00<l>]_R<1|2>_<chunk>.fastq.gz``, where ``<Sample>`` is the
Sample_ID (bcl-convert) or the Sample_Name (bcl2fastq, when one is given).

Decisions where the instruments leave room:

- A name that fits two samples (one's Sample_ID, another's Sample_Name) is
  decided by the ``S<n>`` number (the sample's place in the sheet); if that
  does not decide it, it is a problem.
- ``--lanes merge`` (the default): a sample's lane files become one Flow
  file per read, concatenated in lane order (then chunk order), named
  without the lane (``Sample1_S1_R1_001.fastq.gz``). ``separate``: one
  sample per sample and lane, named ``<Sample_ID>_L00<l>``.
- Index reads (``_I1_``, ``_I2_``) and other reads (``_R3_``) are not
  sample reads: left out, and listed in :attr:`RunScan.ignored`.
- ``Undetermined_*`` files are left out unless asked for; then they are
  one more sample, ``Undetermined``.
- The run is paired when the sample sheet's ``[Reads]`` says so (two reads)
  or any R2 is found; then every sample needs an R2 for each R1 lane (and
  never an R2 without its R1).
- Problems (a sample with no FASTQ, a FASTQ with no sample, a FASTQ found in
  two places, R1 without R2 in a paired run) are all collected and reported
  at once: :meth:`RunScan.check`.

The pure part (:func:`parse_sample_sheet`, :func:`parse_fastq_name`,
:func:`match_fastqs`, :func:`sheet_rows`, :func:`upload_filename`) does no
I/O; :func:`scan_run` reads the folder.
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ._globs import PathFilter
from ._sheets import Problem, ReadsCell, SheetError, SheetRow, split_metadata
from ._walk import walk

__all__ = [
    "UNDETERMINED",
    "Fastq",
    "IlluminaSample",
    "RunSample",
    "RunScan",
    "SampleSheet",
    "match_fastqs",
    "parse_fastq_name",
    "parse_sample_sheet",
    "scan_run",
    "sheet_rows",
    "upload_filename",
]

Lanes = Literal["merge", "separate"]
UNDETERMINED = "Undetermined"
SAMPLE_SHEET = "SampleSheet.csv"

_FASTQ = re.compile(
    r"^(?P<sample>.+)_S(?P<number>\d+)(?:_L(?P<lane>\d{3}))?_(?P<read>[RI]\d)_(?P<chunk>\d{3})\.fastq\.gz$"
)
_SECTION = re.compile(r"^\[(?P<name>[^\]]+)\]$")
#: What the walk looks at: only ``*.fastq.gz`` files are stat'ed, and the folders an instrument fills
#: with hundreds of thousands of small files (per-cycle base calls, thumbnails, InterOp) are not listed
#: at all; demultiplexers never write FASTQs there (bcl2fastq writes beside them, in BaseCalls/).
_FASTQ_FILTER = PathFilter(
    [
        ("include", "*.fastq.gz"),
        ("exclude", "Data/Intensities/BaseCalls/L*/C*.*/"),
        ("exclude", "Thumbnail_Images/"),
        ("exclude", "InterOp/"),
    ]
)


@dataclass(frozen=True)
class IlluminaSample:
    """A sample of the run's sample sheet.

    :ivar number: its ``S<n>``: its place among the sheet's distinct Sample_IDs, from 1.
    :ivar line: the sheet line where it first appears.
    """

    sample_id: str
    sample_name: str
    number: int
    line: int


@dataclass(frozen=True)
class SampleSheet:
    """The parts of an Illumina sample sheet that say which samples a run holds.

    :ivar version: 1 (``[Data]``) or 2 (``[BCLConvert_Data]``).
    :ivar paired: whether ``[Reads]`` says two reads; None when it does not say.
    """

    version: int
    samples: tuple[IlluminaSample, ...]
    paired: bool | None
    name: str = SAMPLE_SHEET


@dataclass(frozen=True)
class Fastq:
    """A FASTQ file, and what its name says."""

    sample: str
    number: int
    lane: int | None
    read: str
    chunk: int
    path: Path


@dataclass(frozen=True)
class RunSample:
    """One sample of the run, as it goes into the sheet.

    :ivar lane: the lane, with ``--lanes separate``; None when lanes are merged.
    :ivar reads1: the R1 files, in lane then chunk order (concatenated when several).
    """

    name: str
    sample_id: str
    lane: int | None
    reads1: tuple[Path, ...]
    reads2: tuple[Path, ...]


@dataclass(frozen=True)
class RunScan:
    """What a run folder holds.

    :ivar samples: the samples found (one per Sample_ID, or per Sample_ID and lane).
    :ivar undetermined: the ``Undetermined_*`` FASTQs (a sample only if asked for).
    :ivar ignored: index and other non-sample reads of known samples.
    :ivar problems: everything wrong, all at once.
    """

    sheet: SampleSheet
    samples: tuple[RunSample, ...]
    undetermined: tuple[Path, ...]
    ignored: tuple[Path, ...]
    problems: tuple[Problem, ...]

    def check(self) -> None:
        """:raises SheetError: with every problem, when there is one."""
        if self.problems:
            raise SheetError(self.problems, what="the run folder")


def _error(
    message: str, *, value: str | None = None, column: str | None = None, what: str = "the sample sheet"
) -> SheetError:
    return SheetError([Problem(message, column=column, value=value)], what=what)


def parse_sample_sheet(text: str, name: str = SAMPLE_SHEET) -> SampleSheet:
    """Read an Illumina sample sheet, v1 (``[Data]``) or v2 (``[BCLConvert_Data]``).

    Column names are matched without regard to case or underscores
    (``Sample_ID``, ``SampleID``), as bcl2fastq does. A Sample_ID on several
    lines (one per lane) is one sample.

    :raises SheetError: no data section, no Sample_ID column, or a data line without a Sample_ID.
    """
    sections: dict[str, list[tuple[int, list[str]]]] = defaultdict(list)
    section = ""
    try:
        records = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as exc:
        raise _error(f"not valid CSV: {exc}", value=name) from None
    for line, record in enumerate(records, start=1):
        cells = [cell.strip() for cell in record]
        while cells and not cells[-1]:
            cells.pop()
        if not cells:
            continue
        heading = _SECTION.match(cells[0])
        if heading and len(cells) == 1:
            section = heading.group("name").strip().casefold()
            continue
        sections[section].append((line, cells))
    version = 2 if "bclconvert_data" in sections else 1
    data = sections.get("bclconvert_data" if version == 2 else "data")
    if not data:
        raise _error("no [Data] (v1) or [BCLConvert_Data] (v2) section with samples", value=name)
    header = [_column_key(cell) for cell in data[0][1]]
    if "sampleid" not in header:
        raise _error(f"the data section (line {data[0][0]}) has no Sample_ID column", value=name)
    id_at = header.index("sampleid")
    name_at = header.index("samplename") if "samplename" in header else None
    samples: dict[str, IlluminaSample] = {}
    for line, cells in data[1:]:
        sample_id = cells[id_at] if id_at < len(cells) else ""
        if not sample_id:
            raise _error(f"line {line}: no Sample_ID", value=name, column="Sample_ID")
        sample_name = cells[name_at] if name_at is not None and name_at < len(cells) else ""
        if sample_id not in samples:
            samples[sample_id] = IlluminaSample(sample_id, sample_name, len(samples) + 1, line)
    return SampleSheet(version, tuple(samples.values()), _paired(sections.get("reads", []), version), name)


def _column_key(cell: str) -> str:
    return cell.replace("_", "").casefold()


def _paired(reads: list[tuple[int, list[str]]], version: int) -> bool | None:
    if not reads:
        return None
    if version == 2:
        cycles = {_column_key(cells[0]): cells[1] for _, cells in reads if len(cells) > 1}
        if "read1cycles" not in cycles:
            return None
        return cycles.get("read2cycles", "0").isdigit() and int(cycles.get("read2cycles", "0")) > 0
    lengths = [cells[0] for _, cells in reads if cells[0].isdigit() and int(cells[0]) > 0]
    return len(lengths) >= 2 if lengths else None


def parse_fastq_name(path: Path) -> Fastq | None:
    """What an Illumina FASTQ's name says (``<Sample>_S<n>[_L00<l>]_<R|I><k>_<chunk>.fastq.gz``), or None."""
    match = _FASTQ.match(path.name)
    if match is None:
        return None
    lane = match.group("lane")
    return Fastq(
        match.group("sample"),
        int(match.group("number")),
        int(lane) if lane else None,
        match.group("read"),
        int(match.group("chunk")),
        path,
    )


def upload_filename(paths: Sequence[Path]) -> str:
    """The Flow filename of ``paths`` sent as one file.

    One file keeps its name. Lane files of one sample and read are named
    without the lane (``Sample1_S1_R1_001.fastq.gz``); any other list is named
    after its first file.
    """
    first = paths[0].name
    if len(paths) == 1:
        return first
    names = [parse_fastq_name(path) for path in paths]
    if any(n is None for n in names):
        return first
    head = names[0]
    assert head is not None
    if all(n is not None and (n.sample, n.number, n.read) == (head.sample, head.number, head.read) for n in names):
        return f"{head.sample}_S{head.number}_{head.read}_{head.chunk:03d}.fastq.gz"
    return first


def match_fastqs(
    sheet: SampleSheet,
    fastqs: Iterable[Fastq],
    *,
    lanes: Lanes = "merge",
    undetermined: bool = False,
    root: Path | None = None,
) -> RunScan:
    """Assign FASTQs to the sheet's samples, and say everything that does not fit.

    :param root: the run folder, only to name files relative to it in problems.
    """
    problems: list[Problem] = []

    def shown(path: Path) -> str:
        return os.path.relpath(path, root) if root is not None else str(path)

    by_id = {s.sample_id: s for s in sheet.samples}
    by_name: dict[str, list[IlluminaSample]] = defaultdict(list)
    for s in sheet.samples:
        if s.sample_name:
            by_name[s.sample_name].append(s)
    found: dict[str, list[Fastq]] = defaultdict(list)
    undetermined_files: list[Fastq] = []
    ignored: list[Path] = []
    for fastq in sorted(fastqs, key=lambda f: (f.sample, f.number, f.lane or 0, f.read, f.chunk, str(f.path))):
        if fastq.sample == UNDETERMINED and fastq.sample not in by_id:
            undetermined_files.append(fastq)
            continue
        candidates = list(
            {
                id(s): s
                for s in [*([by_id[fastq.sample]] if fastq.sample in by_id else []), *by_name.get(fastq.sample, [])]
            }.values()
        )
        several = len(candidates) > 1
        if several:
            candidates = [s for s in candidates if s.number == fastq.number]
        if len(candidates) != 1:
            why = (
                f"its name fits several samples of {sheet.name} and S{fastq.number} decides none"
                if several
                else f"no sample of {sheet.name} has this Sample_ID or Sample_Name"
            )
            problems.append(Problem(f"FASTQ with no sample: {why}", column="FASTQ", value=shown(fastq.path)))
        elif fastq.read not in ("R1", "R2"):
            ignored.append(fastq.path)
        else:
            found[candidates[0].sample_id].append(fastq)
    for s in sheet.samples:
        if not found.get(s.sample_id):
            names = " or ".join(
                f"{n}_S{s.number}_..._R1_001.fastq.gz"
                for n in dict.fromkeys(n for n in (s.sample_id, s.sample_name) if n)
            )
            problems.append(
                Problem(
                    f"no FASTQ found (line {s.line} of {sheet.name}; looked for {names} at any depth)",
                    column="Sample_ID",
                    value=s.sample_id,
                )
            )
    paired = bool(sheet.paired) or any(f.read == "R2" for files in found.values() for f in files)
    samples: list[RunSample] = []
    for s in sheet.samples:
        if found.get(s.sample_id):
            made, found_problems = _samples_of(s.sample_id, found[s.sample_id], lanes, paired, shown)
            samples += made
            problems += found_problems
    if undetermined and undetermined_files:
        made, found_problems = _samples_of(
            UNDETERMINED, [f for f in undetermined_files if f.read in ("R1", "R2")], lanes, paired, shown
        )
        samples += made
        problems += found_problems
    return RunScan(sheet, tuple(samples), tuple(f.path for f in undetermined_files), tuple(ignored), tuple(problems))


def _samples_of(
    sample_id: str, files: list[Fastq], lanes: Lanes, paired: bool, shown: Callable[[Path], str]
) -> tuple[list[RunSample], list[Problem]]:
    """One sample's files, grouped into samples by ``lanes``, with what is missing or doubled."""
    problems: list[Problem] = []
    slots: dict[tuple[int, str, int], Fastq] = {}
    for fastq in files:
        key = (fastq.lane or 0, fastq.read, fastq.chunk)
        if key in slots:
            problems.append(
                Problem(
                    f"found twice: {shown(slots[key].path)} and {shown(fastq.path)}",
                    column="Sample_ID",
                    value=sample_id,
                )
            )
            continue
        slots[key] = fastq
    r1 = {(lane, chunk) for lane, read, chunk in slots if read == "R1"}
    r2 = {(lane, chunk) for lane, read, chunk in slots if read == "R2"}
    for lane, chunk in sorted(r2 - r1):
        problems.append(
            Problem(f"R2 without its R1: {shown(slots[(lane, 'R2', chunk)].path)}", column="Sample_ID", value=sample_id)
        )
    if paired:
        for lane, chunk in sorted(r1 - r2):
            problems.append(
                Problem(
                    f"R1 without its R2 in a paired run: {shown(slots[(lane, 'R1', chunk)].path)}",
                    column="Sample_ID",
                    value=sample_id,
                )
            )
    groups: dict[int | None, list[Fastq]] = defaultdict(list)
    for (lane, _, _), fastq in sorted(slots.items()):
        groups[lane if lanes == "separate" else None].append(fastq)
    samples = []
    for group_lane, group in groups.items():
        name = f"{sample_id}_L{group_lane:03d}" if group_lane else sample_id
        samples.append(
            RunSample(
                name,
                sample_id,
                group_lane or None,
                tuple(f.path for f in group if f.read == "R1"),
                tuple(f.path for f in group if f.read == "R2"),
            )
        )
    return samples, problems


def sheet_rows(
    scan: RunScan,
    *,
    project: str | None = None,
    organism: str | None = None,
    metadata: Mapping[str, str] | None = None,
) -> list[SheetRow]:
    """The scan's samples as sample-sheet rows (absolute paths; :func:`~._sheets.format_sheet` makes them relative).

    :param metadata: values every row gets, keyed as a sheet's columns are:
        ``<id>`` for an attribute's value, ``<id>__annotation`` for its annotation.
    """
    plain, annotations = split_metadata(metadata or {})
    return [
        SheetRow(
            row=number,
            name=sample.name,
            reads1=ReadsCell.of(sample.reads1, None) if sample.reads1 else None,
            reads2=ReadsCell.of(sample.reads2, None) if sample.reads2 else None,
            project=project,
            organism=organism,
            metadata=dict(plain),
            annotations=dict(annotations),
        )
        for number, sample in enumerate(scan.samples, start=1)
    ]


def scan_run(
    run_dir: str | os.PathLike[str],
    *,
    sample_sheet: str | os.PathLike[str] | None = None,
    lanes: Lanes = "merge",
    undetermined: bool = False,
) -> RunScan:
    """Read the run's sample sheet and find its FASTQs (blocking).

    :param sample_sheet: the Illumina sample sheet; default ``RUN_DIR/SampleSheet.csv``.
    :raises SheetError: the run folder or its sample sheet cannot be read, or the sheet has no samples.
        Problems of matching are in :attr:`RunScan.problems` (:meth:`RunScan.check` raises them).
    :raises UsageError: a folder under the run cannot be listed.
    """
    root = Path(run_dir).absolute()
    if not root.is_dir():
        raise _error("not a folder" if root.exists() else "no such folder", value=str(run_dir), what="the run folder")
    sheet_path = Path(sample_sheet) if sample_sheet is not None else root / SAMPLE_SHEET
    try:
        text = sheet_path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        hint = "" if sample_sheet is not None else " (name another with --sample-sheet)"
        raise _error(f"no such file{hint}", value=str(sheet_path)) from None
    except UnicodeDecodeError:
        raise _error("not UTF-8 text: is it really a sample sheet?", value=str(sheet_path)) from None
    except OSError as exc:
        raise _error(f"cannot read it: {exc.strerror}", value=str(sheet_path)) from None
    sheet = parse_sample_sheet(text, sheet_path.name)
    fastqs = [
        fastq
        for _, _, files in walk(str(root), _FASTQ_FILTER)
        for entry in files
        if (fastq := parse_fastq_name(Path(entry.path))) is not None
    ]
    return match_fastqs(sheet, fastqs, lanes=lanes, undetermined=undetermined, root=root)

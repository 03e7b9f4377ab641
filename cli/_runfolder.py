"""A synthetic Illumina-like run folder, for ``flowxfer demo``, tests and benchmarks.

Stable API::

    make_run_folder(root, *, lanes=2, samples=2, fastq_size=256 * 1024, small_files=40,
                    complete=True, name=RUN_NAME, seed=0, sample_sheet=None) -> Path

creates ``root/name`` laid out like a finished (or, with ``complete=False``,
still running) instrument run after demultiplexing::

    RunInfo.xml, RunParameters.xml                  small XML
    InterOp/*MetricsOut.bin                          small binary metrics
    Data/Intensities/BaseCalls/L00<l>/C<c>.1/*.bcl.gz  small per-cycle files (same names in every cycle!)
    Logs/*.log                                       small text
    Fastq/L00<l>/<Sample>_S<n>_L00<l>_R<1|2>_001.fastq.gz   paired reads, ~fastq_size each
    RTAComplete.txt, CopyComplete.txt                markers (only when complete)
    SampleSheet.csv                                  only with sample_sheet="v1" or "v2"

With ``sample_sheet`` the run has an Illumina sample sheet naming its
samples (and the run's paired reads in ``[Reads]``): ``"v2"`` a bcl-convert
sheet (``[BCLConvert_Data]``, Sample_ID ``Sample<n>``, as the FASTQs are
named), ``"v1"`` a bcl2fastq/IEM sheet (``[Data]``, one line per lane and
sample, Sample_ID ``LIB<n>`` and Sample_Name ``Sample<n>``: the FASTQs carry
the Sample_Name, as bcl2fastq names them). Writing it takes nothing from
the random generator, so every other byte is the same with or without it.

Contents are pseudo-random bytes (incompressible, like gzipped reads) from
a seeded generator: the same arguments always give the same bytes. Small
files are 64 bytes to 16 KiB; FASTQs vary by up to ±25% around
``fastq_size`` (at least 1 byte). ``small_files`` are spread over InterOp,
the BaseCalls cycles and Logs. Per-cycle BCL names repeat across cycles, as
on a real instrument: synced by basename they clash, so sync them with
``--pack-small`` or ``--name-from-path``.

Helpers: :func:`complete_run` writes the markers; :func:`run_files` maps
every file's relative path to its size; :data:`MARKERS`.
"""

from __future__ import annotations

import random
from pathlib import Path

__all__ = ["MARKERS", "RUN_NAME", "complete_run", "illumina_sample_sheet", "make_run_folder", "run_files"]

RUN_NAME = "241129_A01234_0042_BHXXXXDSX5"
MARKERS = ("RTAComplete.txt", "CopyComplete.txt")
_INTEROP = (
    "ErrorMetricsOut.bin",
    "ExtractionMetricsOut.bin",
    "QMetricsOut.bin",
    "TileMetricsOut.bin",
    "CorrectedIntMetricsOut.bin",
    "IndexMetricsOut.bin",
    "EventMetricsOut.bin",
    "ImageMetricsOut.bin",
)


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def make_run_folder(
    root: Path,
    *,
    lanes: int = 2,
    samples: int = 2,
    fastq_size: int = 256 * 1024,
    small_files: int = 40,
    complete: bool = True,
    name: str = RUN_NAME,
    seed: int = 0,
    sample_sheet: str | None = None,
) -> Path:
    """Create the run folder ``root/name`` (see the module doc) and return its path."""
    if lanes < 1 or samples < 1 or fastq_size < 1 or small_files < 0:
        raise ValueError("lanes, samples and fastq_size must be positive, small_files not negative")
    if sample_sheet not in (None, "v1", "v2"):
        raise ValueError(f"sample_sheet must be None, 'v1' or 'v2', not {sample_sheet!r}")
    rng = random.Random(seed)
    run = Path(root) / name
    run.mkdir(parents=True, exist_ok=True)
    flowcell = name.rsplit("_", 1)[-1]
    _write(
        run / "RunInfo.xml",
        (
            f'<?xml version="1.0"?>\n<RunInfo Version="6"><Run Id="{name}" Number="42"><Flowcell>{flowcell}'
            f'</Flowcell><Instrument>A01234</Instrument><FlowcellLayout LaneCount="{lanes}"/></Run></RunInfo>\n'
        ).encode(),
    )
    _write(
        run / "RunParameters.xml",
        f'<?xml version="1.0"?>\n<RunParameters><Seed>{seed}</Seed></RunParameters>\n'.encode(),
    )
    # Small files: a quarter InterOp, most per-cycle BCLs, a few logs.
    interop = min(len(_INTEROP), max(1, small_files // 4)) if small_files else 0
    logs = min(4, max(0, (small_files - interop) // 8))
    bcls = small_files - interop - logs
    for index in range(interop):
        _write(run / "InterOp" / _INTEROP[index], rng.randbytes(rng.randint(64, 16 * 1024)))
    tiles_per_cycle = 4
    for index in range(bcls):
        lane = index % lanes + 1
        cycle = index // (lanes * tiles_per_cycle) + 1
        tile = 1101 + (index // lanes) % tiles_per_cycle
        path = run / "Data" / "Intensities" / "BaseCalls" / f"L{lane:03d}" / f"C{cycle}.1" / f"s_{lane}_{tile}.bcl.gz"
        _write(path, rng.randbytes(rng.randint(64, 8 * 1024)))
    for index in range(logs):
        _write(
            run / "Logs" / f"{name}_Cycle{index + 1}_Log.00.log",
            f"cycle {index + 1} ok\n".encode() * rng.randint(2, 50),
        )
    for lane in range(1, lanes + 1):
        for sample in range(1, samples + 1):
            for read in (1, 2):
                size = max(1, int(fastq_size * rng.uniform(0.75, 1.25)))
                _write(
                    run / "Fastq" / f"L{lane:03d}" / f"Sample{sample}_S{sample}_L{lane:03d}_R{read}_001.fastq.gz",
                    rng.randbytes(size),
                )
    if sample_sheet is not None:
        _write(
            run / "SampleSheet.csv",
            illumina_sample_sheet(sample_sheet, lanes=lanes, samples=samples, name=name).encode(),
        )
    if complete:
        complete_run(run)
    return run


def illumina_sample_sheet(version: str, *, lanes: int = 2, samples: int = 2, name: str = RUN_NAME) -> str:
    """The ``SampleSheet.csv`` text of a run made by :func:`make_run_folder` (``version`` "v1" or "v2")."""
    indexes = ["ACGTACGT", "TGCATGCA", "GATCGATC", "CTAGCTAG", "AACCGGTT", "TTGGCCAA", "AGTCAGTC", "TCAGTCAG"]
    if version == "v2":
        lines = [
            "[Header]",
            "FileFormatVersion,2",
            f"RunName,{name}",
            "InstrumentPlatform,NovaSeqXSeries",
            "",
            "[Reads]",
            "Read1Cycles,151",
            "Read2Cycles,151",
            "Index1Cycles,8",
            "",
            "[BCLConvert_Settings]",
            "SoftwareVersion,4.2.7",
            "",
            "[BCLConvert_Data]",
            "Lane,Sample_ID,Index,Sample_Project",
        ]
        lines += [
            f"{lane},Sample{sample},{indexes[(sample - 1) % len(indexes)]},Demo"
            for lane in range(1, lanes + 1)
            for sample in range(1, samples + 1)
        ]
    else:
        lines = [
            "[Header],,,,",
            "IEMFileVersion,4,,,",
            f"Experiment Name,{name},,,",
            "Workflow,GenerateFASTQ,,,",
            ",,,,",
            "[Reads],,,,",
            "151,,,,",
            "151,,,,",
            ",,,,",
            "[Settings],,,,",
            "Adapter,CTGTCTCTTATA,,,",
            ",,,,",
            "[Data],,,,",
            "Lane,Sample_ID,Sample_Name,index,Sample_Project",
        ]
        lines += [
            f"{lane},LIB{sample:03d},Sample{sample},{indexes[(sample - 1) % len(indexes)]},Demo"
            for lane in range(1, lanes + 1)
            for sample in range(1, samples + 1)
        ]
    return "\n".join(lines) + "\n"


def complete_run(run: Path) -> None:
    """Write the instrument's completion markers (RTAComplete.txt, then CopyComplete.txt)."""
    for marker in MARKERS:
        (Path(run) / marker).write_text("done\n")


def run_files(run: Path) -> dict[str, int]:
    """Every regular file under ``run``: relative path (``/``-separated) -> size."""
    run = Path(run)
    return {p.relative_to(run).as_posix(): p.stat().st_size for p in sorted(run.rglob("*")) if p.is_file()}

"""``flowxfer samples``: Flow samples from sample sheets and sequencing runs.

``samples sheet`` needs no server: it reads a run folder and writes a
flowbio-format sample sheet (the engine's :mod:`~flowxfer.transfer._illumina`
does the work; this parses, calls, renders). The uploading verbs join this
group as the engine learns them.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import click

from flowxfer.transfer import FlowxferError, RunScan, SheetError, format_sheet, scan_run, sheet_rows

from . import _exits
from ._common import GlobalOptions, fail, global_options


@click.group()
def samples() -> None:
    """Flow samples: one per biological sample, its reads linked, from sheets and sequencing runs.

    Sample sheets are flowbio's (`flowbio samples batch-template`): columns
    name, reads1, reads2, project, organism, then metadata ids and
    <id>__annotation; reads paths relative to the sheet. A reads cell may
    name several files joined by ';' (a sample's lanes): they are sent as
    one file, concatenated in that order.

    Example: flowxfer samples sheet 241129_A01234_0042_BHXXXXDSX5 --sample-type RNA-Seq -o run42.csv
    """


def parse_metadata(pairs: tuple[str, ...], json_text: str | None) -> dict[str, str]:
    """``--metadata K=V`` (split on the first ``=``) and ``--metadata-json``, as flowbio merges them."""
    values: dict[str, str] = {}
    for pair in pairs:
        key, separator, value = pair.partition("=")
        if not separator or not key:
            raise click.UsageError(f"invalid --metadata {pair!r}: expected KEY=VALUE")
        values[key] = value
    if json_text is None:
        return values
    try:
        parsed = json.loads(json_text)
    except json.JSONDecodeError as exc:
        raise click.UsageError(f"--metadata-json is not valid JSON: {exc}") from None
    if not isinstance(parsed, dict) or not all(isinstance(v, str) for v in parsed.values()):
        raise click.UsageError("--metadata-json must be a JSON object of identifier to string value")
    conflicts = sorted(values.keys() & parsed.keys())
    if conflicts:
        raise click.UsageError(f"metadata given by both --metadata and --metadata-json: {', '.join(conflicts)}")
    return {**values, **parsed}


@samples.command("sheet")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option(
    "--sample-type",
    required=True,
    metavar="T",
    help="The Flow sample type the samples will have (say it again to upload-batch).",
)
@click.option(
    "--sample-sheet",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The run's Illumina sample sheet (default RUN_DIR/SampleSheet.csv).",
)
@click.option("--project", metavar="ID", help="Put this project id in every row.")
@click.option("--organism", metavar="ID", help="Put this organism id in every row.")
@click.option(
    "--lanes",
    type=click.Choice(["merge", "separate"]),
    default="merge",
    show_default=True,
    help="merge: one sample per Sample_ID, its lane files sent as one file per read; "
    "separate: one sample per Sample_ID and lane.",
)
@click.option("--undetermined", is_flag=True, help="Also make a sample of the Undetermined_* FASTQs.")
@click.option(
    "--metadata",
    multiple=True,
    metavar="KEY=VALUE",
    help="A metadata attribute of every sample (KEY an attribute id, or <id>__annotation); repeatable.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the sheet here, paths relative to it (default: stdout, absolute paths).",
)
@click.pass_context
def sheet(
    ctx: click.Context,
    run_dir: Path,
    sample_type: str,
    sample_sheet: Path | None,
    project: str | None,
    organism: str | None,
    lanes: str,
    undetermined: bool,
    metadata: tuple[str, ...],
    output: Path | None,
) -> None:
    """Write a flowbio-format sample sheet from an Illumina run folder.

    Samples come from the run's SampleSheet.csv (v1 [Data] or v2
    [BCLConvert_Data]), one per Sample_ID; their FASTQs are found anywhere
    under RUN_DIR by name (<Sample>_S<n>[_L00<l>]_R<1|2>_001.fastq.gz,
    <Sample> the Sample_ID or the Sample_Name). With lanes merged, a cell
    names each lane's file, joined by ';'. Every problem (a sample without
    FASTQs, a FASTQ without a sample, R1 without R2) is reported at once,
    with exit 2 and no sheet written.

    --metadata K=V gives every row the column K (an attribute id, or
    <id>__annotation for its annotation), as sync --samples does.

    Example: flowxfer samples sheet runs/241129_A01234_0042_BHXXXXDSX5 --sample-type RNA-Seq
    --organism Hs --metadata strandedness=reverse -o run42.csv
    """
    options = global_options(ctx)
    values = parse_metadata(metadata, None)
    try:
        scan = scan_run(
            run_dir,
            sample_sheet=sample_sheet,
            lanes="separate" if lanes == "separate" else "merge",
            undetermined=undetermined,
        )
        scan.check()
        rows = sheet_rows(scan, project=project, organism=organism, metadata=values)
        text = format_sheet(rows, output.absolute().parent if output is not None else None)
    except SheetError as exc:
        fail(options, str(exc), _exits.USAGE, {"problems": [p.to_json() for p in exc.problems]})
    except FlowxferError as exc:
        fail(options, str(exc), _exits.exception_exit_code(exc))
    except ValueError as exc:  # a path no sheet cell can hold (ReadsCell.of)
        fail(options, str(exc), _exits.USAGE)
    if output is not None:
        try:
            _write_atomically(output, text)
        except OSError as exc:
            fail(options, f"cannot write {output}: {exc.strerror}", _exits.USAGE)
    _report(options, scan, text, output, sample_type)


def _write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` whole or not at all (a crash never leaves half a sheet)."""
    folder = path.absolute().parent
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as file:
            file.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _report(options: GlobalOptions, scan: RunScan, text: str, output: Path | None, sample_type: str) -> None:
    merged = sum(1 for s in scan.samples if len(s.reads1) > 1)
    if options.json:
        document: dict[str, Any] = {
            "status": "completed",
            "kind": "samples-sheet",
            "sheet": str(output) if output else None,
            "sample_type": sample_type,
            "sample_sheet_version": scan.sheet.version,
            "samples": [
                {
                    "name": s.name,
                    "sample_id": s.sample_id,
                    "lane": s.lane,
                    "reads1": [str(p) for p in s.reads1],
                    "reads2": [str(p) for p in s.reads2],
                }
                for s in scan.samples
            ],
            "undetermined": [str(p) for p in scan.undetermined],
            "ignored": [str(p) for p in scan.ignored],
        }
        if output is None:
            document["csv"] = text
        print(json.dumps(document))
        return
    if output is None:
        sys.stdout.write(text)
    elif not options.quiet:
        print(f"wrote {output}: {len(scan.samples)} samples" + (f", {merged} with lanes merged" if merged else ""))
    if not options.quiet:
        left_out = (
            f"; {len(scan.undetermined)} Undetermined FASTQs left out (--undetermined)"
            if scan.undetermined and not any(s.name == "Undetermined" for s in scan.samples)
            else ""
        )
        sheet_name = output if output is not None else "SHEET.csv"
        print(
            f"next: flowxfer samples upload-batch --sheet {sheet_name} --sample-type {sample_type}{left_out}",
            file=sys.stderr,
        )

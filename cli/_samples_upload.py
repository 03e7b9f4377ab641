"""``samples upload`` and ``samples upload-batch``: make Flow samples, exactly once (parse, call, render).

Flags are flowbio's (``flowbio samples upload|upload-batch``), so a flowbio
user's sheet and habits carry over, plus the transfer options of ``upload``.
Before any byte moves every row is checked against the server's catalog and
the disk: all problems at once, exit 2, nothing sent (``--skip-invalid``
sends the valid rows and reports the rest).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from flowxfer.transfer import Flowxfer, SamplePlan, SheetError, TransferReport, format_size

from . import _exits
from ._common import (
    CHUNK_SIZE,
    DURATION,
    GlobalOptions,
    fail,
    finish_transfer,
    global_options,
    output_for,
    run_engine,
    transfer_config,
)
from ._render import Output
from ._samples import parse_metadata, samples


def sample_transfer_options(func: click.decorators.FC) -> click.decorators.FC:
    """The transfer options of ``upload``, for the sample verbs."""
    for option in reversed(
        [
            click.option(
                "--concurrency",
                type=click.IntRange(1, 64),
                help="Samples at once (default 16); each sample's files go one after the other.",
            ),
            click.option(
                "--chunk-size",
                type=CHUNK_SIZE,
                help="Bytes per upload request, at least 64 KiB (default: automatic, as upload).",
            ),
            click.option(
                "--bwlimit", metavar="RATE", help='Bandwidth cap: "10M", or a timetable "08:00,10M 19:00,off".'
            ),
            click.option(
                "--max-wait",
                type=DURATION,
                help="Longest any wait lasts before the command stops cleanly (exit 75): for rate-limit "
                "budget, for an unreachable journal database, at start too (without --max-wait: one "
                "attempt at start).",
            ),
        ]
    ):
        func = option(func)
    return func


@samples.command("upload")
@click.option("--name", required=True, metavar="NAME", help="The sample's name (no spaces).")
@click.option("--sample-type", required=True, metavar="TYPE", help="Sample type identifier (samples types).")
@click.option(
    "--reads1",
    required=True,
    type=click.Path(path_type=Path),
    metavar="PATH",
    help="First reads file (several joined by ';' are sent as one, in that order).",
)
@click.option("--reads2", type=click.Path(path_type=Path), metavar="PATH", help="Second reads file (paired-end).")
@click.option("--project", metavar="ID", help="A project of yours (samples projects).")
@click.option("--organism", metavar="ID", help="An organism id (samples organisms).")
@click.option("--metadata", multiple=True, metavar="KEY=VALUE", help="A metadata attribute; repeatable.")
@click.option("--metadata-json", metavar="JSON", help="Metadata as a JSON object of identifier to value.")
@sample_transfer_options
@click.pass_context
def upload(
    ctx: click.Context,
    name: str,
    sample_type: str,
    reads1: Path,
    reads2: Path | None,
    project: str | None,
    organism: str | None,
    metadata: tuple[str, ...],
    metadata_json: str | None,
    concurrency: int | None,
    chunk_size: int | None,
    bwlimit: str | None,
    max_wait: float | None,
) -> None:
    """Make one Flow sample from its reads, exactly once.

    Running the same command again creates nothing: it reports the sample
    made before (status skipped).

    Example: flowxfer samples upload --name liver_1 --sample-type RNA-Seq --reads1 liver_1_R1.fastq.gz
    --reads2 liver_1_R2.fastq.gz --organism Hs --metadata strandedness=reverse
    """
    options = global_options(ctx)
    sample = {
        "name": name,
        "reads1": str(reads1),
        "reads2": str(reads2) if reads2 else None,
        "project": project,
        "organism": organism,
        "metadata": parse_metadata(metadata, metadata_json),
    }
    config = transfer_config(concurrency=concurrency, chunk_size=chunk_size, bwlimit=bwlimit, max_wait=max_wait)
    _run(options, config, sample_type, sheet=None, sample=sample)


@samples.command("upload-batch")
@click.option(
    "--sheet",
    required=True,
    type=click.Path(path_type=Path),
    metavar="PATH",
    help="A flowbio sample sheet (CSV; samples batch-template, samples sheet).",
)
@click.option("--sample-type", required=True, metavar="TYPE", help="Sample type of every row.")
@click.option("--skip-invalid", is_flag=True, help="Send the valid rows; report the invalid ones (exit 1).")
@click.option("--stop-on-error", is_flag=True, help="Stop at the first sample that fails to upload.")
@click.option("--dry-run", is_flag=True, help="Check every row against the server and the disk; send nothing.")
@sample_transfer_options
@click.pass_context
def upload_batch(
    ctx: click.Context,
    sheet: Path,
    sample_type: str,
    skip_invalid: bool,
    stop_on_error: bool,
    dry_run: bool,
    concurrency: int | None,
    chunk_size: int | None,
    bwlimit: str | None,
    max_wait: float | None,
) -> None:
    """Make one Flow sample per row of a sample sheet, exactly once, several at a time.

    Every row is checked first (catalog, disk): all problems at once, exit 2,
    nothing sent. Samples made by an earlier run are skipped with their ids,
    so the same command can run from cron; an interrupted run continues.

    Example: flowxfer samples upload-batch --sheet run42.csv --sample-type RNA-Seq
    """
    options = global_options(ctx)
    config = transfer_config(concurrency=concurrency, chunk_size=chunk_size, bwlimit=bwlimit, max_wait=max_wait)
    if dry_run:
        _dry_run(options, config, sample_type, sheet)
    _run(options, config, sample_type, sheet=sheet, sample=None, skip_invalid=skip_invalid, stop_on_error=stop_on_error)


def _run(
    options: GlobalOptions,
    config: Any,
    sample_type: str,
    *,
    sheet: Path | None,
    sample: dict[str, Any] | None,
    skip_invalid: bool = False,
    stop_on_error: bool = False,
) -> None:
    output = output_for(options, "upload")

    async def call(fx: Flowxfer) -> TransferReport | SheetError:
        try:
            return await fx.upload_samples(
                sheet, sample=sample, sample_type=sample_type, skip_invalid=skip_invalid, stop_on_error=stop_on_error
            )
        except SheetError as exc:
            return exc

    result, signum = run_engine(options, output, call, config)
    if isinstance(result, SheetError):
        fail(
            options, str(result), _exits.USAGE, {"kind": "samples", "problems": [p.to_json() for p in result.problems]}
        )
    finish_samples(options, output, result, signum)


def finish_samples(options: GlobalOptions, output: Output, report: TransferReport | None, signum: int | None) -> None:
    """Print the samples' outcome (or the JSON document) and exit with the documented code."""
    if report is None:
        sys.exit(_exits.signal_exit_code(signum) if signum is not None else _exits.FAILED)
    code = _exits.report_exit_code(report, signum)
    if code == _exits.OK and any(s["status"] == "invalid" for s in report.extra.get("samples", [])):
        code = _exits.FAILED  # --skip-invalid: the valid rows went up, but not everything asked for
    if options.json:
        print(json.dumps(report.to_json()))
        sys.exit(code)
    print_samples(options, output, report, code)
    sys.exit(code)


def print_samples(options: GlobalOptions, output: Output, report: TransferReport, code: int) -> None:
    """The failed and invalid rows, then the files' summary line and the samples' one."""
    if not options.quiet:
        for sample in report.extra.get("samples", []):
            if sample["status"] in ("failed", "invalid"):
                print(f"{sample['status']}: row {sample['row']} {sample['name']}: {sample['error']}")
    if not options.quiet or code != _exits.OK:
        print(output.summary_line(report), flush=True)
        print(samples_summary(report), flush=True)


def samples_summary(report: TransferReport) -> str:
    """How many samples were made, were on Flow already, failed (and were invalid or are pending)."""
    counts: dict[str, int] = {}
    for sample in report.extra.get("samples", []):
        counts[sample["status"]] = counts.get(sample["status"], 0) + 1
    parts = [
        f"{counts.get('done', 0)} made",
        f"{counts.get('skipped', 0)} already on Flow",
        f"{counts.get('failed', 0)} failed",
    ]
    parts += [f"{counts[status]} {status}" for status in ("invalid", "pending") if counts.get(status)]
    return "samples: " + ", ".join(parts)


def _dry_run(options: GlobalOptions, config: Any, sample_type: str, sheet: Path) -> None:
    output = output_for(options, "upload")

    async def call(fx: Flowxfer) -> SamplePlan:
        return await fx.check_samples(sheet, sample_type=sample_type)

    plan, _ = run_engine(options, output, call, config)
    assert plan is not None
    code = _exits.USAGE if plan.errors else _exits.OK
    if options.json:
        print(
            json.dumps(
                {
                    "dry_run": True,
                    "kind": "samples",
                    "status": "failed" if plan.errors else "completed",
                    "problems": [p.to_json() for p in plan.problems],
                    "samples": [
                        {
                            "row": s.row,
                            "name": s.name,
                            "status": "pending",
                            "files": [
                                {
                                    "path": ";".join(p.path for p in f.parts),
                                    "id": None,
                                    "size": f.size,
                                    "status": "pending",
                                }
                                for f in s.files
                            ],
                        }
                        for s in plan.samples
                    ],
                }
            )
        )
        sys.exit(code)
    for sample in plan.samples:
        sizes = " + ".join(f"{f.filename} ({format_size(f.size)})" for f in sample.files)
        print(f"row {sample.row} {sample.name}: {sizes}")
    for problem in plan.problems:
        print(str(problem), file=sys.stderr)
    total = sum(f.size for s in plan.samples for f in s.files)
    print(
        f"dry run: {len(plan.samples)} samples ready, {format_size(total)}; {len(plan.errors)} problems; nothing sent",
        file=sys.stderr,
    )
    sys.exit(code)


@samples.command("upload-multiplexed")
@click.option(
    "--reads1", required=True, type=click.Path(path_type=Path), metavar="PATH", help="First multiplexed reads file."
)
@click.option("--reads2", type=click.Path(path_type=Path), metavar="PATH", help="Second multiplexed reads file.")
@click.option(
    "--annotation",
    required=True,
    type=click.Path(path_type=Path),
    metavar="PATH",
    help="The filled-in annotation sheet (.xlsx or .csv; samples annotation-template).",
)
@click.option("--reject-warnings", is_flag=True, help="Refuse the upload if the annotation sheet has warnings.")
@sample_transfer_options
@click.pass_context
def upload_multiplexed(
    ctx: click.Context,
    reads1: Path,
    reads2: Path | None,
    annotation: Path,
    reject_warnings: bool,
    concurrency: int | None,
    chunk_size: int | None,
    bwlimit: str | None,
    max_wait: float | None,
) -> None:
    """Upload multiplexed reads with the annotation sheet that splits them into samples.

    The sheet goes first and is checked by the server: a refused sheet sends
    no reads (exit 5, every problem named). Its warnings are accepted unless
    --reject-warnings.

    Example: flowxfer samples upload-multiplexed --reads1 mux_R1.fastq.gz --reads2 mux_R2.fastq.gz
    --annotation annotation.xlsx
    """
    options = global_options(ctx)
    config = transfer_config(concurrency=concurrency, chunk_size=chunk_size, bwlimit=bwlimit, max_wait=max_wait)
    output = output_for(options, "upload")

    async def call(fx: Flowxfer) -> TransferReport:
        return await fx.upload_multiplexed(reads1, reads2, annotation=annotation, reject_warnings=reject_warnings)

    report, signum = run_engine(options, output, call, config)
    if report is not None and not options.json:
        for warning in report.extra.get("warnings", []):
            print(f"warning: {warning}", file=sys.stderr)
        for problem in report.extra.get("problems", []):
            print(f"problem: {problem}", file=sys.stderr)
    finish_transfer(options, output, report, signum)

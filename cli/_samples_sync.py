"""``sync RUN_DIR --samples``: the options it adds to ``sync``, and how its two transfers are reported.

The run's loose files (sample sheet, ``RunInfo.xml``, InterOp, logs) go up
as ``sync`` sends them; its FASTQs become one Flow sample per Sample_ID
(``samples.md``). One JSON document: the sync's, with the samples' outcome
in ``samples`` and their transfer in ``samples_transfer_id``; the exit code
is the worse of the two.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, NoReturn

import click

from flowxfer.transfer import Flowxfer, SampleSync, SheetError, SyncOptions, TransferReport

from . import _exits
from ._common import GlobalOptions, fail, run_engine
from ._render import Output
from ._samples import parse_metadata
from ._samples_upload import print_samples


def sample_sync_options(func: click.decorators.FC) -> click.decorators.FC:
    for option in reversed(
        [
            click.option(
                "--samples",
                is_flag=True,
                help="Make one Flow sample per Sample_ID of the run's "
                "SampleSheet.csv from its FASTQs (which are then not uploaded as loose data).",
            ),
            click.option("--sample-type", metavar="TYPE", help="With --samples: the samples' type (required)."),
            click.option(
                "--sample-sheet",
                type=click.Path(dir_okay=False),
                metavar="FILE",
                help="With --samples: the Illumina sample sheet (default RUN_DIR/SampleSheet.csv).",
            ),
            click.option("--project", metavar="ID", help="With --samples: put the samples in this project."),
            click.option("--organism", metavar="ID", help="With --samples: the samples' organism."),
            click.option(
                "--lanes",
                type=click.Choice(["merge", "separate"]),
                default="merge",
                show_default=True,
                help="With --samples: one sample per Sample_ID (lanes sent as one file) or per lane.",
            ),
            click.option(
                "--metadata",
                multiple=True,
                metavar="KEY=VALUE",
                help="With --samples: a metadata attribute of every sample; repeatable.",
            ),
            click.option(
                "--undetermined",
                is_flag=True,
                help="With --samples: upload Undetermined_* FASTQs as plain data (left out otherwise).",
            ),
        ]
    ):
        func = option(func)
    return func


def sync_with_samples(
    options: GlobalOptions, output: Output, folder: Path, sync_options: SyncOptions, config: Any, flags: dict[str, Any]
) -> NoReturn:
    if not flags.get("sample_type"):
        raise click.UsageError("--samples needs --sample-type")
    wanted = SampleSync(
        sample_type=flags["sample_type"],
        sample_sheet=flags.get("sample_sheet"),
        project=flags.get("project"),
        organism=flags.get("organism"),
        lanes=flags.get("lanes") or "merge",
        undetermined=bool(flags.get("undetermined")),
        metadata=tuple(parse_metadata(flags.get("metadata") or (), None).items()),
    )

    async def call(fx: Flowxfer) -> list[TransferReport] | SheetError:
        try:
            return await fx.sync_samples(folder, wanted, sync_options)
        except SheetError as exc:
            return exc

    result, signum = run_engine(options, output, call, config)
    if isinstance(result, SheetError):
        fail(options, str(result), _exits.USAGE, {"kind": "sync", "problems": [p.to_json() for p in result.problems]})
    reports = result or []
    if not reports:
        sys.exit(_exits.signal_exit_code(signum) if signum is not None else _exits.FAILED)
    loose, made = reports[0], (reports[1] if len(reports) > 1 else None)
    document = loose.to_json()
    if made is not None:
        document.update(
            samples=made.extra.get("samples", []), samples_transfer_id=made.transfer_id, samples_status=made.status
        )
    codes = [_exits.OK if loose.status == "waiting" else _exits.report_exit_code(loose, signum)]
    if made is not None:
        codes.append(_exits.report_exit_code(made, signum))
    if options.json:
        print(json.dumps(document))
    elif loose.status == "waiting":
        if not options.quiet:
            print(f"waiting for {loose.extra['waiting_for']} in {loose.extra['root']} (nothing sent)")
    else:
        if not options.quiet or loose.status != "completed":
            print(output.summary_line(loose), flush=True)
        if made is not None:
            print_samples(options, output, made, codes[-1])
    sys.exit(_exits.worst(codes))

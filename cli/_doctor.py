"""``doctor``: check what an unattended (cron) run needs, before it fails at 3 a.m."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from flowxfer.transfer import Check, Flowxfer, run_checks

from . import _exits
from ._common import global_options, run_engine
from ._render import Output

_MARK = {"ok": "ok  ", "warn": "warn", "fail": "FAIL"}
#: The exit code of the first failing check, by check.
_CODES = {"credentials": _exits.AUTH, "journal": _exits.USAGE, "disk": _exits.USAGE, "base-url": _exits.USAGE}


@click.command()
@click.option(
    "-o",
    "--output-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Where downloads will land (free space is checked there).",
)
@click.pass_context
def doctor(ctx: click.Context, output_dir: Path) -> None:
    """Check credentials, server, capabilities, clock skew, journal and disk space.

    Exit 0 when nothing fails (warnings included), otherwise the exit code of
    the first failure (3 for credentials, 2 for journal or disk, 1 otherwise).

    Example: flowxfer doctor -o /data/flow-results
    """
    options = global_options(ctx)
    output = Output("doctor", progress="none", results=False)

    async def call(fx: Flowxfer) -> list[Check]:
        return await run_checks(fx, output_dir)

    checks, _ = run_engine(options, output, call)
    checks = checks or []
    if options.json:
        print(
            json.dumps(
                {
                    "ok": all(c.ok for c in checks),
                    "checks": [{"name": c.name, "status": c.status, "detail": c.detail} for c in checks],
                }
            )
        )
    else:
        for check in checks:
            print(f"{_MARK[check.status]}  {check.name:<13} {check.detail}")
    failed = [c for c in checks if not c.ok]
    sys.exit(_CODES.get(failed[0].name, _exits.FAILED) if failed else _exits.OK)

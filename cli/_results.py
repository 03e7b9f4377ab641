"""``download --execution ID...``: a pipeline run's outputs, fetched when it finishes (results down).

Kept apart from ``download``'s other options so that they stay one small
decorator and one call (:func:`execution_options`, :func:`download_results`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NoReturn

import click

from flowxfer.transfer import Flowxfer, TransferConfig, TransferReport

from ._common import DURATION, finish_reports, finish_transfer, global_options, output_for, run_engine
from ._render import Output

#: Default seconds between two polls (hosted Flow asks for 60 s or more).
POLL_INTERVAL = 60.0


def execution_options(func: click.decorators.FC) -> click.decorators.FC:
    """``--execution``, ``--layout``, ``--wait``, ``--partial``, ``--poll-interval``."""
    for option in reversed(
        [
            click.option(
                "--execution",
                "executions",
                multiple=True,
                metavar="ID",
                help="Every output of this pipeline execution (repeatable).",
            ),
            click.option(
                "--layout",
                type=click.Choice(["process", "flat"]),
                default="process",
                show_default=True,
                help="With --execution: DIR/<process>/<file>, or every file in DIR (a name two processes "
                "share gets the data id added).",
            ),
            click.option(
                "--wait",
                is_flag=True,
                help="With --execution: poll until it is OK, ERROR or CANCELED, then download "
                "(--max-wait bounds the wait: exit 75).",
            ),
            click.option(
                "--partial", is_flag=True, help="With --execution: download what a failed or unfinished execution has."
            ),
            click.option(
                "--poll-interval",
                type=DURATION,
                default=POLL_INTERVAL,
                show_default=True,
                help="With --wait: time between two polls (one api request each).",
            ),
        ]
    ):
        func = option(func)
    return func


def _say_partial(output: Output, report: TransferReport | None) -> dict[str, Any] | None:
    """Name each failed run whose outputs ``--partial`` took; the ``executions`` part of the JSON document."""
    if report is None:
        return None
    executions: dict[str, Any] = report.extra.get("executions", {})
    if report.status == "completed":
        for execution_id, state in executions.items():
            if state.get("status") in ("ERROR", "CANCELED"):
                output.error(
                    f"execution {execution_id} ({state.get('identifier')}) ended {state['status']}: "
                    "its outputs so far were downloaded (--partial)"
                )
    return {"executions": executions}


def download_results(
    ctx: click.Context,
    executions: tuple[str, ...],
    output_dir: Path,
    force: bool,
    config: TransferConfig,
    *,
    layout: str,
    wait: bool,
    partial: bool,
    poll_interval: float,
    auto_bulk: bool = False,
    **_: Any,
) -> NoReturn:
    """Run ``download --execution`` and exit with its code (6: an execution failed; 75: still running).

    With ``auto_bulk`` the small outputs come as one archive when there are many of them.
    """
    if poll_interval <= 0:
        raise click.UsageError("--poll-interval must be more than 0 seconds")
    options = global_options(ctx)
    output = output_for(options, "download")
    if auto_bulk:

        async def archived(fx: Flowxfer) -> list[TransferReport]:
            return await fx.bulk_executions(
                list(executions),
                auto=True,
                output_dir=output_dir,
                layout=layout,
                wait=wait,
                partial=partial,
                poll_interval=poll_interval,
                max_wait=config.max_wait,
                force=force,
            )

        reports, signum = run_engine(options, output, archived, config)
        finish_reports(options, output, reports or [], signum, _say_partial(output, reports[0] if reports else None))

    async def call(fx: Flowxfer) -> TransferReport:
        return await fx.download_executions(
            list(executions),
            output_dir=output_dir,
            layout=layout,
            wait=wait,
            partial=partial,
            poll_interval=poll_interval,
            max_wait=config.max_wait,
            force=force,
        )

    report, signum = run_engine(options, output, call, config)
    finish_transfer(options, output, report, signum, extra=_say_partial(output, report))


def bulk_results(
    ctx: click.Context,
    executions: tuple[str, ...],
    output_dir: Path,
    config: TransferConfig,
    *,
    layout: str,
    partial: bool,
    name: str | None,
    poll_interval: float,
    job_timeout: float | None,
) -> NoReturn:
    """``bulk --execution``: every output of finished runs as one archive, laid out as ``download --execution``."""
    options = global_options(ctx)
    output = output_for(options, "bulk")

    async def call(fx: Flowxfer) -> list[TransferReport]:
        return await fx.bulk_executions(
            list(executions),
            output_dir=output_dir,
            layout=layout,
            partial=partial,
            name=name,
            job_poll_interval=poll_interval,
            job_timeout=job_timeout,
            max_wait=config.max_wait,
        )

    reports, signum = run_engine(options, output, call, config)
    finish_reports(options, output, reports or [], signum, _say_partial(output, reports[0] if reports else None))

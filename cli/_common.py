"""Plumbing every transferring command shares: global options, parameter types, the runner.

The runner is where the CLI meets the engine: it opens a :class:`Flowxfer`,
turns SIGINT/SIGTERM into a graceful stop (a second signal aborts at once,
still saving the journal), renders progress, and maps the outcome to an exit
code (:mod:`._exits`). Commands stay three lines: parse, call, render.
"""

from __future__ import annotations

import json
import signal
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any, NoReturn, TypeVar

import anyio
import click

from flowxfer.journal import JournalError
from flowxfer.transfer import (
    Flowxfer,
    FlowxferError,
    NotLoggedIn,
    TransferConfig,
    TransferReport,
    task_group,
)

from . import _exits

# The commands take the options' names from here too, with the runner's.
from ._options import CHUNK_SIZE as CHUNK_SIZE
from ._options import DURATION as DURATION
from ._options import JOURNAL as JOURNAL
from ._options import SIZE as SIZE
from ._options import GlobalOptions as GlobalOptions
from ._options import global_options as global_options
from ._render import Output

T = TypeVar("T")


def output_for(options: GlobalOptions, kind: str) -> Output:
    """The renderer of one command's progress and results, as the global options ask."""
    return Output(
        kind, progress=options.progress_mode(), results=not options.json and not options.quiet, verbose=options.verbose
    )


def transfer_options(func: click.decorators.FC) -> click.decorators.FC:
    """The options every transferring command takes: ``--concurrency``, ``--bwlimit``, ``--max-wait``."""
    for option in reversed(
        [
            click.option("--concurrency", type=click.IntRange(1, 64), help="Files at once (default 16)."),
            click.option(
                "--bwlimit", metavar="RATE", help='Bandwidth cap: "10M", or a timetable "08:00,10M 19:00,off".'
            ),
            click.option(
                "--max-wait",
                type=DURATION,
                help="Longest any wait lasts before the command stops cleanly (exit 75): for rate-limit "
                "budget, for an execution to finish (--wait), for an unreachable journal database, "
                "at start too (without --max-wait: one attempt at start).",
            ),
        ]
    ):
        func = option(func)
    return func


def path_map_option(func: click.decorators.FC) -> click.decorators.FC:
    """``--path-map FROM=TO``: a fleet host reads the journal's paths under FROM at TO on its own disk."""
    return click.option(
        "--path-map",
        "path_map",
        multiple=True,
        metavar="FROM=TO",
        help="Paths the shared journal names under FROM are at TO on this host (the same storage "
        "mounted elsewhere); repeatable.",
    )(func)


def transfer_config(**overrides: Any) -> TransferConfig:
    """A TransferConfig from command options; options left unset keep the defaults."""
    values = {k: v for k, v in overrides.items() if v is not None}
    try:
        config = replace(TransferConfig(), **values)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    return config


def fail(options: GlobalOptions, message: str, code: int, extra: dict[str, Any] | None = None) -> NoReturn:
    """Say ``message`` on stderr and exit with ``code`` (``extra`` joins the ``--json`` document)."""
    Output("", progress=options.progress_mode(), results=False).error(message)
    _exit_with_error_document(options, message, code, extra)


def _exit_with_error_document(
    options: GlobalOptions, message: str, code: int, extra: dict[str, Any] | None = None
) -> NoReturn:
    """Exit with ``code``; under ``--json`` first print the one document a script reads even then.

    ``cli.md`` promises one JSON document on stdout; a command that fails
    before any transfer exists (an unknown id, a refused login, a server
    that answers HTML) still gives one, so ``| jq`` never reads nothing.
    """
    if options.json:
        status = "interrupted" if code == _exits.TEMPFAIL else "failed"  # 75: nothing lost, try again later
        print(json.dumps({"status": status, "error": message, "exit_code": code, **(extra or {})}), flush=True)
    sys.exit(code)


def run_engine(
    options: GlobalOptions,
    output: Output,
    call: Callable[[Flowxfer], Awaitable[T]],
    config: TransferConfig | None = None,
) -> tuple[T | None, int | None]:
    """Run ``call`` with a Flowxfer, under signal handling; returns (result, signal number or None).

    Engine errors are rendered and turned into the documented exit code here
    (the process exits); a result is returned only on success or stop.
    """
    received: list[int] = []

    async def main() -> T | None:
        result: T | None = None
        async with options.flowxfer(config, output.event) as fx:
            async with task_group() as group:

                async def watch_signals() -> None:
                    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                        async for signum in signals:
                            received.append(signum)
                            if fx.stopping:
                                output.error("stopping now (journal saved; resume later)")
                                group.cancel_scope.cancel()
                                return
                            fx.stop("stopped")
                            output.error(
                                f"{signal.Signals(signum).name}: finishing requests in flight and saving "
                                "the journal (send again to stop at once)"
                            )

                async def work() -> None:
                    nonlocal result
                    result = await call(fx)
                    group.cancel_scope.cancel()

                group.start_soon(watch_signals)
                group.start_soon(output.ticker)
                group.start_soon(work)
        return result

    try:
        with output:
            result = anyio.run(main)
    except (FlowxferError, JournalError) as exc:
        message = _explain(exc)
        output.error(message)
        code = _exits.signal_exit_code(received[0]) if received else _exits.exception_exit_code(exc)
        _exit_with_error_document(options, message, code)
    except KeyboardInterrupt:
        output.error("interrupted")
        _exit_with_error_document(options, "interrupted", _exits.signal_exit_code(signal.SIGINT))
    except Exception as exc:  # noqa: BLE001 - the last resort: a bug must not greet a user with a traceback
        message = f"internal error ({type(exc).__name__}: {exc}); please report it with what -v shows"
        output.error(message)
        if options.verbose:
            traceback.print_exception(exc, file=sys.stderr)
        _exit_with_error_document(options, message, _exits.FAILED)
    return result, (received[0] if received else None)


def _explain(exc: BaseException) -> str:
    """The error's message; a missing login's names the command that was run, to copy and paste."""
    if isinstance(exc, NotLoggedIn):
        ctx = click.get_current_context(silent=True)
        return exc.explain(ctx.info_name if ctx is not None and ctx.info_name else "COMMAND")
    return str(exc)


def finish_transfer(
    options: GlobalOptions,
    output: Output,
    report: TransferReport | None,
    signum: int | None,
    extra: dict[str, Any] | None = None,
) -> NoReturn:
    """Print the closing summary (or the JSON document) and exit with the report's code."""
    if report is None:
        sys.exit(_exits.signal_exit_code(signum) if signum is not None else _exits.FAILED)
    if options.json:
        document = report.to_json()
        if extra:
            document.update(extra)
        print(json.dumps(document))
    elif not options.quiet or report.status != "completed":
        print(output.summary_line(report), flush=True)
    sys.exit(_exits.report_exit_code(report, signum))


def log_summary(options: GlobalOptions, document: dict[str, Any]) -> None:
    """``--log-format json``: the run's summary as the last event line on stderr (for log shippers)."""
    if options.log_format == "json":
        print(
            json.dumps({"ts": round(time.time(), 3), "event": "summary", **document}, default=str),
            file=sys.stderr,
            flush=True,
        )


def finish_reports(
    options: GlobalOptions,
    output: Output,
    reports: list[TransferReport],
    signum: int | None,
    extra: dict[str, Any] | None = None,
) -> NoReturn:
    """A run of several transfers (archive and single downloads): each one's lines, then the worst exit code.

    :param extra: added to the ``--json`` document (``{"transfers": [...]}``).
    """
    for report in reports:
        log_summary(options, report.to_json())
    if options.json:
        print(json.dumps({"transfers": [r.to_json() for r in reports], **(extra or {})}))
    else:
        for report in reports:
            if not options.quiet:
                for path in report.extra.get("extracted", []):
                    print(f"extracted {path}")
            if not options.quiet or report.status != "completed":
                print(output.summary_line(report))
    codes = [_exits.report_exit_code(r, signum) for r in reports]
    if signum is not None and not codes:
        codes.append(_exits.signal_exit_code(signum))
    sys.exit(_exits.worst(codes) if codes else _exits.OK)


def with_sample_data(
    options: GlobalOptions,
    output: Output,
    config: TransferConfig,
    ids: tuple[str, ...],
    samples: tuple[str, ...],
    projects: tuple[str, ...] = (),
    *,
    raw_only: bool = False,
) -> tuple[str, ...]:
    """``ids`` and the data ids of these samples and projects (``--sample``, ``--project``, ``--raw-only``)."""
    if raw_only and not (samples or projects):
        raise click.UsageError("--raw-only goes with --sample or --project")
    if not (samples or projects):
        return ids

    async def resolve(fx: Flowxfer) -> list[str]:
        return await fx.samples_data(samples, projects, raw_only=raw_only)

    found, _ = run_engine(options, output, resolve, config)
    return tuple(dict.fromkeys([*ids, *(found or [])]))

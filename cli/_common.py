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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import anyio
import click

from flowxfer.journal import JournalError
from flowxfer.transfer import (
    DEFAULT_BASE_URL,
    Flowxfer,
    FlowxferError,
    NotLoggedIn,
    TransferConfig,
    TransferReport,
    parse_duration,
    parse_size,
    task_group,
)

from . import _exits
from ._render import Output
from ._server_choice import choose_token, official_token_file

T = TypeVar("T")


class SizeType(click.ParamType):
    """``8M``, ``8MiB``, ``512k``: binary units."""

    name = "size"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            size = parse_size(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
        if size <= 0:
            self.fail("must be more than 0 bytes", param, ctx)
        return size


class DurationType(click.ParamType):
    """``90s``, ``15m``, ``2h``; a bare number is seconds."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, int | float):
            return float(value)
        try:
            return parse_duration(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


SIZE = SizeType()
DURATION = DurationType()


@dataclass(frozen=True)
class GlobalOptions:
    """The options given before the command (``cli.md``: Global options)."""

    base_url: str = DEFAULT_BASE_URL
    token: str | None = None
    #: ``--token-file``/``FLOW_TOKEN_FILE``: an API key or access token in a file (``_server_choice``).
    token_file: Path | None = None
    #: Said once when a command talks to the server: why this server (it came from the last login).
    server_note: str | None = None
    #: Whether the official CLI's token file may stand in for a missing login (not for login itself).
    official_token: bool = True
    config_dir: Path | None = None
    journal: Path | None = None
    json: bool = False
    no_progress: bool = False
    quiet: bool = False
    verbose: bool = False
    log_format: str = "text"
    ca_bundle: Path | None = None
    allow_insecure_http: bool = False
    #: Attempts per request (``--max-attempts``): a cron job may rather fail fast than retry for minutes.
    max_attempts: int | None = None

    def progress_mode(self) -> str:
        if self.log_format == "json":
            return "json"
        if self.quiet or self.no_progress:
            return "none"
        return "bars" if sys.stderr.isatty() else "plain"

    def flowxfer(self, config: TransferConfig | None = None, progress: Callable[[Any], None] | None = None) -> Flowxfer:
        if self.max_attempts is not None:
            config = replace(config or TransferConfig(), max_attempts=self.max_attempts)
        self._say_server_note()
        token = choose_token(
            self.token,
            self.token_file,
            self.base_url,
            self.config_dir,
            official_token_file() if self.official_token else None,
        )
        return Flowxfer(
            self.base_url,
            token=token,
            config_dir=self.config_dir,
            journal=self.journal,
            config=config,
            progress=progress,
            ca_bundle=self.ca_bundle,
            allow_insecure_http=self.allow_insecure_http,
        )

    def _say_server_note(self) -> None:
        if not self.server_note or self.quiet or self.server_note in _SAID:
            return
        _SAID.add(self.server_note)
        if self.log_format == "json":
            print(
                json.dumps({"ts": round(time.time(), 3), "event": "notice", "message": self.server_note}),
                file=sys.stderr,
                flush=True,
            )
        else:
            print(f"flowxfer: {self.server_note}", file=sys.stderr, flush=True)


#: Notes already said in this process (a command may open several sessions).
_SAID: set[str] = set()


def global_options(ctx: click.Context) -> GlobalOptions:
    options = ctx.find_object(GlobalOptions)
    return options if options is not None else GlobalOptions()


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
                "--max-wait", type=DURATION, help="Longest wait for rate-limit budget before stopping (exit 75)."
            ),
        ]
    ):
        func = option(func)
    return func


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
        print(json.dumps({"status": "failed", "error": message, "exit_code": code, **(extra or {})}), flush=True)
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

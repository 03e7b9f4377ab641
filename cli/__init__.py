"""The ``flowxfer`` command line: parse, call one library function, render.

Global options (before the command) each have an environment variable; a
flag beats its variable (``cli.md``). Commands live in their own modules and
are registered on :data:`main` here.
"""

from __future__ import annotations

# ruff: noqa: E402 - every import below runs after the collector's pause, which comes first
import gc

# Start-up allocates tens of thousands of objects that live as long as the process, and each
# collection their allocation triggers traverses them all to find nothing: 10-15 ms of every
# command's start-up (issue 20). Collections wait while this package loads (resumed at its end);
# the console script (:func:`run`) keeps them waiting until its command is loaded (:func:`_started`).
_COLLECTING = gc.isenabled()
gc.disable()

import atexit
import importlib
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import NoReturn

import click

from flowxfer import __version__
from flowxfer._os import limit_malloc_arenas
from flowxfer.journal import Journal
from flowxfer.transfer import DEFAULT_BASE_URL, import_aiohttp_without_default_trust

from ._options import DURATION, JOURNAL, GlobalOptions
from ._server_choice import CHOSEN_SERVER, choose_server

#: Each command: its module, its name there, and the modules that add verbs to it. Loaded on first
#: use: a command's start-up is most of a small transfer's time, and ``flowxfer download`` needs
#: neither the samples, sync, serve nor demo code.
_COMMANDS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "demo": ("._demo", "demo", ()),
    "login": ("._transfers", "login", ()),
    "logout": ("._transfers", "logout", ()),
    "upload": ("._transfers", "upload", ()),
    "download": ("._transfers", "download", ()),
    "resume": ("._transfers", "resume", ()),
    "jobs": ("._journal_cmds", "jobs", ()),
    "show": ("._journal_cmds", "show", ()),
    "journal": ("._journal_migrate", "journal_group", ()),
    "doctor": ("._doctor", "doctor", ()),
    "serve": ("._serve", "serve", ()),
    "admin": ("._serve", "admin", ("._admin_executions",)),
    "bulk": ("._bulk_sync", "bulk", ()),
    "sync": ("._bulk_sync", "sync", ()),
    "samples": ("._samples", "samples", ("._samples_catalog", "._samples_upload")),
}


class _LazyGroup(click.Group):
    """A group whose commands are imported when named (``--help`` imports them all)."""

    #: Set by :func:`run`: the process is flowxfer's alone, and its start-up ends with loading a command.
    owns_process = False

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(_COMMANDS) | set(self.commands))

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        if self.owns_process:  # before the command's imports, which its handshake overlaps
            from ._preconnect import connect_early

            connect_early(ctx, args)
        return super().resolve_command(ctx, args)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in _COMMANDS and cmd_name not in self.commands:
            module, name, extras = _COMMANDS[cmd_name]
            if self.owns_process:
                import_aiohttp_without_default_trust()
                from flowxfer.transfer import resolve_early_connection

                # the environment is steady again: a named server's early handshake may start
                resolve_early_connection()
            for extra in extras:
                importlib.import_module(extra, __package__)
            self.add_command(getattr(importlib.import_module(module, __package__), name), cmd_name)
            if self.owns_process:
                _started()
        return super().get_command(ctx, cmd_name)


def _started() -> None:
    """End the console script's start-up: what is loaded now lives as long as the process.

    Those objects are moved out of the collector's generations, so the
    per-chunk allocations of a long transfer do not make every full
    collection traverse them again, and collections resume.
    """
    gc.freeze()
    gc.enable()


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="flowxfer")
@click.option(
    "--base-url",
    envvar="FLOW_API_URL",
    metavar="URL",
    help=f"The Flow server (env FLOW_API_URL; default: the server you last logged in to, else {DEFAULT_BASE_URL}).",
)
@click.option(
    "--token",
    envvar="FLOW_API_TOKEN",
    help="An API key or access token instead of saved credentials (env FLOW_API_TOKEN; cannot be refreshed).",
)
@click.option(
    "--token-file",
    envvar="FLOW_TOKEN_FILE",
    type=click.Path(dir_okay=False, path_type=Path),
    help="A file holding an API key or access token, as the official CLI reads it (env "
    "FLOW_TOKEN_FILE; after --token, before saved credentials and ~/.config/flow/api-token).",
)
@click.option(
    "--config-dir",
    envvar="FLOWXFER_CONFIG_DIR",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where credentials live, mode 0600 (env FLOWXFER_CONFIG_DIR; default ~/.config/flowxfer).",
)
@click.option(
    "--journal",
    envvar="FLOWXFER_JOURNAL",
    type=JOURNAL,
    help="The journal: a file, sqlite:///PATH, or postgresql://USER@HOST/DB shared by many hosts "
    "(env FLOWXFER_JOURNAL; default $XDG_STATE_HOME/flowxfer/journal.db).",
)
@click.option(
    "--host-id",
    envvar="FLOWXFER_HOST_ID",
    metavar="NAME",
    help="This host's name in a shared journal (env FLOWXFER_HOST_ID; default the hostname).",
)
@click.option(
    "--lease-ttl",
    envvar="FLOWXFER_LEASE_TTL",
    type=DURATION,
    help="How long a silent host keeps its transfers before another host takes them over; give "
    "every host of a fleet the same (env FLOWXFER_LEASE_TTL; default 60s).",
)
@click.option("--json", "json_output", is_flag=True, help="One JSON document on stdout at the end, nothing else.")
@click.option("--no-progress", is_flag=True, help="No progress display.")
@click.option("-q", "--quiet", is_flag=True, help="Only errors and the summary of an incomplete transfer.")
@click.option("-v", "--verbose", is_flag=True, help="Also show every retry.")
@click.option(
    "--log-format",
    envvar="FLOWXFER_LOG_FORMAT",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="json: one event object a line on stderr (env FLOWXFER_LOG_FORMAT).",
)
@click.option(
    "--ca-bundle",
    envvar="FLOWXFER_CA_BUNDLE",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="CA certificates to verify TLS with (env FLOWXFER_CA_BUNDLE); TLS is always verified.",
)
@click.option("--allow-insecure-http", is_flag=True, help="Allow plain http:// to hosts other than loopback.")
@click.option(
    "--max-attempts",
    envvar="FLOWXFER_MAX_ATTEMPTS",
    type=click.IntRange(1, 100),
    help="Attempts per request before giving up on a failing server (env FLOWXFER_MAX_ATTEMPTS; "
    "default 8, with backoff up to a minute between them).",
)
@click.pass_context
def main(
    ctx: click.Context,
    base_url: str | None,
    token: str | None,
    token_file: Path | None,
    config_dir: Path | None,
    journal: str | None,
    host_id: str | None,
    lease_ttl: float | None,
    json_output: bool,
    no_progress: bool,
    quiet: bool,
    verbose: bool,
    log_format: str,
    ca_bundle: Path | None,
    allow_insecure_http: bool,
    max_attempts: int | None,
) -> None:
    """flowxfer: resumable, verified, rate-limit-aware transfers to and from Flow.

    Example: flowxfer demo
    """
    # The connection pool would log every failed reconnect to stderr as raw text (breaking
    # --log-format json); a run says once that the journal database is away (a notice) instead.
    logging.getLogger("psycopg.pool").setLevel(logging.CRITICAL)
    if lease_ttl is not None and lease_ttl <= 0:
        raise click.BadParameter("must be more than 0 seconds", param_hint="'--lease-ttl'")
    from flowxfer.journal import HostIdError, resolve_host_id  # the journal's module, loaded for a command

    try:  # click passes an empty FLOWXFER_HOST_ID as unset: the journal's own check reads it
        host_id = resolve_host_id(host_id)
    except HostIdError as exc:
        raise click.UsageError(str(exc)) from None
    server = ctx.meta.pop(CHOSEN_SERVER, None) or choose_server(base_url, config_dir)
    ctx.obj = GlobalOptions(
        base_url=server.base_url,
        server_note=server.note,
        token=token or None,
        token_file=token_file,
        config_dir=config_dir,
        journal=journal,
        host_id=host_id,
        lease_ttl=lease_ttl,
        json=json_output,
        no_progress=no_progress,
        quiet=quiet,
        verbose=verbose,
        log_format=log_format,
        ca_bundle=ca_bundle,
        allow_insecure_http=allow_insecure_http,
        max_attempts=max_attempts,
    )


def run() -> NoReturn:
    """The ``flowxfer`` console script: :data:`main`, in a process that is flowxfer's alone.

    Only here, not in :data:`main` (which tests and other programs call in
    their own process), are the process-wide choices made. Collections wait
    until the command is loaded (:func:`_started` then freezes what start-up
    loaded). glibc's malloc keeps to one arena
    (:func:`~flowxfer._os.limit_malloc_arenas`), so the blocks worker threads
    read are reused instead of piling up per thread. aiohttp is imported,
    just before a command's module, without loading the CA store twice
    (60-120 ms of every command's start-up; the engine verifies https with a
    context of its own): :func:`~flowxfer.transfer.import_aiohttp_without_default_trust`;
    ``--version`` and ``--help`` load no aiohttp at all. The process ends
    without the interpreter's teardown: :func:`_leave`; so an SQLite journal
    is left with its WAL synced rather than checkpointed and deleted at every
    command's end (:attr:`~flowxfer.journal.Journal.process_ends_at_close`).
    """
    limit_malloc_arenas()
    gc.disable()
    _LazyGroup.owns_process = True
    Journal.process_ends_at_close = True
    try:
        main()
    except SystemExit as exc:
        _leave(exc.code)
    raise AssertionError("click's standalone main() always exits")  # pragma: no cover


#: How long the end waits for other non-daemon threads to end by themselves.
_THREADS_GRACE = 1.0


def _threads_ended() -> bool:
    """Whether every other non-daemon thread ended, waiting up to :data:`_THREADS_GRACE` for them.

    anyio's worker threads are not daemons, and the event loop's end only
    tells them to stop: under load one is often still on its way out when
    the command ends. Waited for here, as the interpreter's exit would, they
    no longer cost the teardown (a journal closed by it is checkpointed and
    its WAL deleted: :meth:`flowxfer.journal.Journal.process_ends_at_close`).
    A thread still at work after the grace is the interpreter's to wait for.
    """
    deadline = time.monotonic() + _THREADS_GRACE
    for thread in threading.enumerate():
        if thread is threading.main_thread() or thread.daemon:
            continue
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            return False
    return True


def _leave(code: object) -> NoReturn:
    """End the process with ``code`` as :class:`SystemExit` would, minus the interpreter's teardown.

    The teardown (every module's and object's release, 10-15 ms at the end of
    every command, issue 20) does nothing a finished command needs: the
    journal is closed and its last commit synced, a downloaded file is synced
    before it is reported. What shutdown does that matters is done here:
    atexit functions run (logging's flush), stdout and stderr are flushed.
    The interpreter's own exit is kept where it does more: another
    non-daemon thread still running after :func:`_threads_ended` (it waits for
    it), or a flush that fails (a closed pipe: it reports that as it always did).
    """
    if not _threads_ended():
        raise SystemExit(code)
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:  # as the interpreter does with a message: it goes to stderr, the status is 1
        print(code, file=sys.stderr)
        status = 1
    atexit._run_exitfuncs()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError:
        raise SystemExit(status) from None
    os._exit(status)


if _COLLECTING:  # the package is loaded: collections resume (run() pauses them again at once)
    gc.enable()

"""The ``flowxfer`` command line: parse, call one library function, render.

Global options (before the command) each have an environment variable; a
flag beats its variable (``cli.md``). Commands live in their own modules and
are registered on :data:`main` here.
"""

from __future__ import annotations

import gc
import importlib
import logging
from pathlib import Path

import click

from flowxfer import __version__
from flowxfer._os import limit_malloc_arenas
from flowxfer.transfer import DEFAULT_BASE_URL, import_aiohttp_without_default_trust

from ._options import DURATION, JOURNAL, GlobalOptions
from ._server_choice import choose_server

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

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(_COMMANDS) | set(self.commands))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in _COMMANDS and cmd_name not in self.commands:
            module, name, extras = _COMMANDS[cmd_name]
            for extra in extras:
                importlib.import_module(extra, __package__)
            self.add_command(getattr(importlib.import_module(module, __package__), name), cmd_name)
        return super().get_command(ctx, cmd_name)


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
    server = choose_server(base_url, config_dir)
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


def run() -> None:
    """The ``flowxfer`` console script: :data:`main`, in a process that is flowxfer's alone.

    Only here, not in :data:`main` (which tests and other programs call in
    their own process), are the process-wide choices made: the objects loaded at
    start-up, which live as long as the process, are moved out of the
    collector's generations so the per-chunk allocations of a long transfer
    do not make every full collection traverse them again. glibc's malloc
    keeps to one arena (:func:`~flowxfer._os.limit_malloc_arenas`), so the
    blocks worker threads read are reused instead of piling up per thread.
    aiohttp is imported without loading the CA store twice (60-120 ms of
    every command's start-up; the engine verifies https with a context of
    its own): :func:`~flowxfer.transfer.import_aiohttp_without_default_trust`.
    """
    limit_malloc_arenas()
    import_aiohttp_without_default_trust()
    gc.freeze()
    main()

"""The ``flowxfer`` command line: parse, call one library function, render.

Global options (before the command) each have an environment variable; a
flag beats its variable (``cli.md``). Commands live in their own modules and
are registered on :data:`main` here.
"""

from __future__ import annotations

import gc
from pathlib import Path

import click

from flowxfer import __version__
from flowxfer._os import limit_malloc_arenas
from flowxfer.journal import import_sqlite_utils_without_array_libraries
from flowxfer.transfer import DEFAULT_BASE_URL

from ._common import GlobalOptions
from ._server_choice import choose_server


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
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
    type=click.Path(dir_okay=False, path_type=Path),
    help="The journal file (env FLOWXFER_JOURNAL; default $XDG_STATE_HOME/flowxfer/journal.db).",
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
    journal: Path | None,
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
    server = choose_server(base_url, config_dir)
    ctx.obj = GlobalOptions(
        base_url=server.base_url,
        server_note=server.note,
        token=token or None,
        token_file=token_file,
        config_dir=config_dir,
        journal=journal,
        json=json_output,
        no_progress=no_progress,
        quiet=quiet,
        verbose=verbose,
        log_format=log_format,
        ca_bundle=ca_bundle,
        allow_insecure_http=allow_insecure_http,
        max_attempts=max_attempts,
    )


# Commands register after main exists.
from . import (  # noqa: E402,F401  (their verbs join the samples group)
    _admin_executions,  # noqa: E402,F401  (admin execution ...)
    _samples_catalog,
    _samples_upload,
)
from ._bulk_sync import bulk, sync  # noqa: E402
from ._demo import demo  # noqa: E402
from ._doctor import doctor  # noqa: E402
from ._journal_cmds import jobs, show  # noqa: E402
from ._samples import samples  # noqa: E402
from ._serve import admin, serve  # noqa: E402
from ._transfers import download, login, logout, resume, upload  # noqa: E402

for _command in (demo, login, logout, upload, download, resume, jobs, show, doctor, serve, admin, bulk, sync, samples):
    main.add_command(_command)


def run() -> None:
    """The ``flowxfer`` console script: :data:`main`, in a process that is flowxfer's alone.

    Only here, not in :data:`main` (which tests and other programs call in
    their own process), are the process-wide choices made: the journal may
    load sqlite-utils without numpy and pandas, and the objects loaded at
    start-up, which live as long as the process, are moved out of the
    collector's generations so the per-chunk allocations of a long transfer
    do not make every full collection traverse them again. glibc's malloc
    keeps to one arena (:func:`~flowxfer._os.limit_malloc_arenas`), so the
    blocks worker threads read are reused instead of piling up per thread.
    """
    limit_malloc_arenas()
    import_sqlite_utils_without_array_libraries()
    gc.freeze()
    main()

"""``login``, ``logout``, ``upload``, ``download``, ``resume``: parse, call the engine, render."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from flowxfer.transfer import AlreadyRunning, Flowxfer, TransferReport

from . import _exits
from ._common import (
    CHUNK_SIZE,
    GlobalOptions,
    finish_transfer,
    global_options,
    output_for,
    path_map_option,
    run_engine,
    transfer_config,
    transfer_options,
    with_sample_data,
)
from ._results import download_results, execution_options


def _own_login(options: GlobalOptions) -> GlobalOptions:
    """``login``/``logout`` handle flowxfer's saved login: no token file stands in for it."""
    return replace(options, token_file=None, official_token=False)


@click.command()
@click.option("--username", "-u", help="Your Flow username (prompted when missing).")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of stdin.")
@click.pass_context
def login(ctx: click.Context, username: str | None, password_stdin: bool) -> None:
    """Log in to Flow and save the tokens (mode 0600) for later commands.

    The password is prompted without echo, or read from stdin — never a flag,
    so it stays out of shell history and process lists.

    Example: echo "$FLOW_PASSWORD" | flowxfer login -u alice --password-stdin
    """
    options = global_options(ctx)
    if not username:
        username = click.prompt("Username", err=True)
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, err=True)
    if not password:
        raise click.UsageError("empty password")
    options = _own_login(options)
    output = output_for(options, "login")

    async def call(fx: Flowxfer) -> str:
        return await fx.login(username, password)

    run_engine(options, output, call)
    if options.json:
        print(json.dumps({"logged_in": True, "username": username, "server": options.base_url}))
    else:
        print(f"logged in to {options.base_url} as {username}")


@click.command()
@click.pass_context
def logout(ctx: click.Context) -> None:
    """Forget the saved tokens of the server (--base-url).

    Example: flowxfer logout
    """
    options = _own_login(global_options(ctx))

    async def call(fx: Flowxfer) -> bool:
        return await fx.logout()

    forgot, _ = run_engine(options, output_for(options, "logout"), call)
    print(f"logged out of {options.base_url}" if forgot else f"not logged in to {options.base_url}")


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--data-type", help="Flow data-type identifier for every file.")
@click.option(
    "--chunk-size",
    type=CHUNK_SIZE,
    help="Bytes per upload request, at least 64 KiB (default: automatic, 64 MiB against a "
    "flowxfer server, 16 MiB against hosted Flow, halved on 413).",
)
@click.option("--force", is_flag=True, help="Upload even files already uploaded unchanged.")
@click.option(
    "--streams",
    type=click.IntRange(1, 16),
    help="Connections one large file's chunks share, where the server offers it (flowxfer's own; "
    "default: from the path's round trip, 1 on a LAN up to 8; hosted Flow: always 1).",
)
@transfer_options
@path_map_option
@click.pass_context
def upload(
    ctx: click.Context,
    paths: tuple[Path, ...],
    data_type: str | None,
    chunk_size: int | None,
    force: bool,
    streams: int | None,
    concurrency: int | None,
    bwlimit: str | None,
    max_wait: float | None,
    path_map: tuple[str, ...],
) -> None:
    """Upload files (folders recursively) to Flow, resumably and verified.

    A file already uploaded and unchanged since (same size and modification
    time, or same checksum) is skipped. Running the same command again after
    an interruption continues where it stopped.

    Example: flowxfer upload run42/Fastq --data-type fastq
    """
    options = replace(global_options(ctx), path_map=path_map)
    config = transfer_config(
        chunk_size=chunk_size,
        upload_streams=streams,
        concurrency=concurrency,
        bwlimit=bwlimit,
        max_wait=max_wait,
    )
    output = output_for(options, "upload")

    async def call(fx: Flowxfer) -> TransferReport:
        return await fx.upload([str(p) for p in paths], data_type=data_type, force=force)

    report, signum = run_engine(options, output, call, config)
    finish_transfer(options, output, report, signum)


@click.command()
@click.argument("ids", nargs=-1)
@click.option("--filename", help="Search: data whose filename contains this (case-insensitive).")
@click.option("--pattern", help="Search: data whose filename matches this regular expression.")
@click.option("--owned", is_flag=True, help="Search: only data you own.")
@click.option(
    "--sample",
    "samples",
    multiple=True,
    metavar="ID",
    help="Every file of this sample: its reads and the outputs of the runs on it; repeatable.",
)
@click.option(
    "--project",
    "projects",
    multiple=True,
    metavar="ID",
    help="Every file of every sample of this project of yours; repeatable.",
)
@click.option("--raw-only", is_flag=True, help="With --sample/--project: only the samples' reads, no outputs.")
@click.option(
    "-o",
    "--output-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Folder to download into.",
)
@click.option(
    "--segments",
    type=click.IntRange(1, 16),
    help="Ranged streams per large file (default: from the path's round trip, 4 on a LAN up to 8).",
)
@click.option("--force", is_flag=True, help="Download even files already present and identical.")
@click.option(
    "--auto-bulk",
    is_flag=True,
    help="More than 50 files under 8 MiB: fetch those as one server-built archive (extracted).",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Show the requests each way costs against the rate limits; send only metadata requests.",
)
@execution_options
@transfer_options
@click.pass_context
def download(
    ctx: click.Context,
    ids: tuple[str, ...],
    filename: str | None,
    pattern: str | None,
    owned: bool,
    samples: tuple[str, ...],
    projects: tuple[str, ...],
    raw_only: bool,
    output_dir: Path,
    segments: int | None,
    force: bool,
    auto_bulk: bool,
    dry_run: bool,
    concurrency: int | None,
    bwlimit: str | None,
    max_wait: float | None,
    executions: tuple[str, ...],
    **results: Any,
) -> None:
    """Download data by id, or by search, into a folder under their filenames.

    Each file is fetched as a few ranged streams into NAME.part, every chunk
    verified, then renamed into place. Identical files already there are skipped.
    Many small files cost one download request each (500/hour on Flow):
    --dry-run shows the arithmetic, --auto-bulk takes the archive path.

    Example: flowxfer download 1234567890 -o results/
    Example: flowxfer download --pattern '_R[12]_001\\.fastq\\.gz$' --owned -o fastq/
    Example: flowxfer download --execution 1234567890 --wait -o results/
    """
    options = global_options(ctx)
    if executions:
        if ids or filename or pattern or owned or samples or projects or dry_run:
            raise click.UsageError("--execution takes no data ids, samples, search or --dry-run")
        download_results(
            ctx,
            executions,
            output_dir,
            force,
            transfer_config(
                segments=segments,
                concurrency=concurrency,
                bwlimit=bwlimit,
                max_wait=max_wait,
            ),
            auto_bulk=auto_bulk,
            **results,
        )
    if not ids and not (filename or pattern or owned or samples or projects):
        raise click.UsageError(
            "name data ids, samples (--sample, --project), a search with --filename, "
            "--pattern or --owned, or --execution"
        )
    config = transfer_config(segments=segments, concurrency=concurrency, bwlimit=bwlimit, max_wait=max_wait)
    output = output_for(options, "download")
    ids = with_sample_data(options, output, config, ids, samples, projects, raw_only=raw_only)
    if auto_bulk or dry_run:
        from ._bulk_sync import download_with_advice  # the bulk code loads only when asked for

        download_with_advice(
            ctx, ids, filename, pattern, owned, output_dir, force, config, dry_run=dry_run, auto_bulk=auto_bulk
        )

    async def call(fx: Flowxfer) -> TransferReport:
        return await fx.download(
            list(ids), filename=filename, pattern=pattern, owned=owned, output_dir=output_dir, force=force
        )

    report, signum = run_engine(options, output, call, config)
    finish_transfer(options, output, report, signum)


@click.command()
@click.argument("transfer_id", required=False)
@transfer_options
@path_map_option
@click.pass_context
def resume(
    ctx: click.Context,
    transfer_id: str | None,
    concurrency: int | None,
    bwlimit: str | None,
    max_wait: float | None,
    path_map: tuple[str, ...],
) -> None:
    """Continue unfinished transfers from the journal: all of this server's, or one.

    Acknowledged chunks are never sent again; the server is asked what it
    holds before anything is re-sent.

    A host of a fleet resumes another host's transfer once that host's lease
    has gone stale (--lease-ttl); --path-map says where it sees the other
    host's files. Without an id, transfers a live process (here or on another
    host) is running are skipped and the rest resumed; the exit code is then
    75 unless something worse happened.

    Example: flowxfer resume 3fa9c1b2e0
    """
    options = replace(global_options(ctx), path_map=path_map)
    config = transfer_config(concurrency=concurrency, bwlimit=bwlimit, max_wait=max_wait)
    output = output_for(options, "upload")

    async def call(fx: Flowxfer) -> list[TransferReport]:
        original = output.kind

        def on_kind(kind: str) -> None:
            output.kind = kind

        reports = []
        records = await fx.resume_plan(transfer_id)
        for record in records:
            if fx.stopping:
                break
            on_kind(record.kind)
            try:
                reports.append(await fx.resume_record(record))
            except AlreadyRunning as exc:
                if transfer_id is not None:
                    raise
                # A fleet: another live host runs this one; the dead hosts' transfers still need us.
                running_elsewhere.append(f"{record.id}: {exc}")
                output.error(f"skipped {record.id}: {exc}")
        output.kind = original
        return reports

    running_elsewhere: list[str] = []
    reports, signum = run_engine(options, output, call, config)
    reports = reports or []
    if options.json:
        print(json.dumps({"transfers": [r.to_json() for r in reports], "running_elsewhere": running_elsewhere}))
    else:
        if not reports and not running_elsewhere:
            print("nothing to resume")
        for report in reports:
            print(output.summary_line(report))
    codes = [_exits.report_exit_code(r, signum) for r in reports]
    if running_elsewhere:
        codes.append(_exits.TEMPFAIL)  # some of the work is another host's for now: try again later
    if signum is not None and not codes:
        codes.append(_exits.signal_exit_code(signum))
    sys.exit(_exits.worst(codes) if codes else _exits.OK)

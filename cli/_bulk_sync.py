"""``bulk`` and ``sync``, and ``download``'s ``--dry-run``/``--auto-bulk``: parse, call the engine, render."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, NoReturn

import click

from flowxfer.transfer import (
    SYNC_NEEDS_ONE_PATH,
    DownloadAdvice,
    Flowxfer,
    PathFilter,
    SyncOptions,
    SyncPreview,
    TransferReport,
    format_duration,
    format_size,
    parse_share,
)

from . import _exits
from ._common import (
    CHUNK_SIZE,
    DURATION,
    SIZE,
    GlobalOptions,
    finish_reports,
    finish_transfer,
    global_options,
    log_summary,
    output_for,
    run_engine,
    transfer_config,
    transfer_options,
    with_sample_data,
)
from ._render import Output
from ._results import bulk_results
from ._samples_sync import sample_sync_options, sync_with_samples


def _answer(options: GlobalOptions, document: dict[str, Any], lines: list[str], *, preview: bool) -> NoReturn:
    """A run that moved nothing (a preview, a wait): its document or its lines, and exit 0.

    A preview is what was asked for and prints even with ``--quiet``; a wait
    (cron, nothing ready yet) stays silent then.
    """
    log_summary(options, document)
    if options.json:
        print(json.dumps(document))
    elif preview or not options.quiet:
        for line in lines:
            print(line)
    sys.exit(_exits.OK)


def _finish(
    options: GlobalOptions, output: Output, report: TransferReport | None, signum: int | None, lines: list[str]
) -> NoReturn:
    """Extra result lines, the summary, and the exit code (a job ``--timeout`` is 75: try again later)."""
    if report is not None:
        log_summary(options, report.to_json())
        if not options.json and not options.quiet:
            for line in lines:
                print(line, flush=True)
    finish_transfer(options, output, report, signum)


# --- bulk ------------------------------------------------------------------------------


def _refuse_path_map(value: tuple[str, ...]) -> None:
    """``sync --path-map``: refused with why and what to do, not as an unknown option (see SYNC_NEEDS_ONE_PATH)."""
    if value:
        raise click.UsageError(SYNC_NEEDS_ONE_PATH)


@click.command()
@click.argument("ids", nargs=-1)
@click.option(
    "--execution",
    "executions",
    multiple=True,
    metavar="ID",
    help="Every output of this finished pipeline execution (repeatable), laid out as "
    "'download --execution' lays them out (always extracted).",
)
@click.option(
    "--layout",
    type=click.Choice(["process", "flat"]),
    default="process",
    show_default=True,
    help="With --execution: DIR/<process>/<file>, or every file in DIR.",
)
@click.option(
    "--sample",
    "samples",
    multiple=True,
    metavar="ID",
    help="Every file of this sample: its reads and the outputs of the runs on it; repeatable.",
)
@click.option("--raw-only", is_flag=True, help="With --sample: only the samples' reads, no outputs.")
@click.option("--partial", is_flag=True, help="With --execution: take what a failed or unfinished run has.")
@click.option(
    "--name",
    metavar="NAME.zip",
    help="The archive's name, .zip, .tar.gz or .tgz (default "
    "flow-download.zip); zip or tar.gz content is told apart by its bytes.",
)
@click.option(
    "-o",
    "--output-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Folder for the archive (and its files with --extract).",
)
@click.option("--extract", is_flag=True, help="Unpack the archive safely into the folder, verifying each file.")
@click.option("--keep-archive", is_flag=True, help="Keep the archive after a verified --extract.")
@click.option(
    "--poll-interval",
    type=DURATION,
    default=1.0,
    show_default=True,
    help="First wait between polls of the job; it grows to 30 s.",
)
@click.option(
    "--timeout",
    "job_timeout",
    type=DURATION,
    help="Stop waiting for the job after this long (exit 75; run again to pick the job up).",
)
@transfer_options
@click.pass_context
def bulk(
    ctx: click.Context,
    ids: tuple[str, ...],
    executions: tuple[str, ...],
    layout: str,
    samples: tuple[str, ...],
    raw_only: bool,
    partial: bool,
    name: str | None,
    output_dir: Path,
    extract: bool,
    keep_archive: bool,
    poll_interval: float,
    job_timeout: float | None,
    concurrency: int | None,
    bwlimit: str | None,
    max_wait: float | None,
) -> None:
    """Download many data items as one archive built by the server.

    Creates an archive job, polls it, downloads the archive (resumable,
    ranged, verified against the server's checksum) and with --extract
    unpacks it safely: no absolute paths, '..', links or devices, nothing
    outside the folder, each file checked against its data's checksum. An
    interrupted run, run again (or 'flowxfer resume'), re-attaches to the same job.
    With --execution the archive holds a finished run's outputs not already
    in the folder; they land in the folder as 'download --execution' puts them.

    Example: flowxfer bulk 111 222 333 --name results.zip -o results/ --extract
    Example: flowxfer bulk --execution 1234567890 -o results/
    Example: flowxfer bulk --sample 1234567890 -o liver/ --extract
    """
    if executions:
        if ids or samples or extract or keep_archive:
            raise click.UsageError(
                "--execution takes no data ids, --sample, --extract or --keep-archive (its "
                "outputs are always extracted into place)"
            )
        bulk_results(
            ctx,
            executions,
            output_dir,
            transfer_config(concurrency=concurrency, bwlimit=bwlimit, max_wait=max_wait),
            layout=layout,
            partial=partial,
            name=name,
            poll_interval=poll_interval,
            job_timeout=job_timeout,
        )
    if not ids and not samples:
        raise click.UsageError("name data ids, --sample or --execution")
    if partial:
        raise click.UsageError("--partial goes with --execution")
    options = global_options(ctx)
    config = transfer_config(concurrency=concurrency, bwlimit=bwlimit, max_wait=max_wait)
    output = output_for(options, "bulk")
    ids = with_sample_data(options, output, config, ids, samples, raw_only=raw_only)

    async def call(fx: Flowxfer) -> TransferReport:
        return await fx.bulk(
            list(ids),
            name=name,
            output_dir=output_dir,
            extract=extract,
            keep_archive=keep_archive,
            poll_interval=poll_interval,
            job_timeout=job_timeout,
        )

    report, signum = run_engine(options, output, call, config)
    lines = [f"extracted {path}" for path in (report.extra.get("extracted", []) if report else [])]
    if report is not None and report.extra.get("archive_removed"):
        lines.append(f"removed {report.extra['archive']} (extracted and verified)")
    _finish(options, output, report, signum, lines)


# --- sync --------------------------------------------------------------------------------


class _OrderedRules(click.Command):
    """Remembers the command-line order of ``--include``/``--exclude``: the last matching rule decides.

    click gathers each repeated option into its own list, losing how the two
    interleave, so the order is read from the arguments before click parses them.
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        kinds: list[str] = []
        skip_next = False
        for arg in args:
            if skip_next:
                skip_next = False
                continue
            if arg == "--":
                break
            for kind in ("include", "exclude"):
                if arg == f"--{kind}":
                    kinds.append(kind)
                    skip_next = True
                elif arg.startswith(f"--{kind}="):
                    kinds.append(kind)
        ctx.meta["flowxfer.rule_order"] = kinds
        return super().parse_args(ctx, args)


def _ordered_rules(
    ctx: click.Context, include: tuple[str, ...], exclude: tuple[str, ...]
) -> tuple[tuple[str, str], ...]:
    kinds: list[str] = ctx.meta.get("flowxfer.rule_order", [])
    if kinds.count("include") != len(include) or kinds.count("exclude") != len(exclude):
        kinds = ["include"] * len(include) + ["exclude"] * len(exclude)
    values = {"include": list(include), "exclude": list(exclude)}
    return tuple((kind, values[kind].pop(0)) for kind in kinds)


def _share_grants(values: tuple[str, ...]) -> tuple[Any, ...]:
    grants = []
    for value in values:
        try:
            grants.append(parse_share(value))
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--share") from None
    return tuple(grants)


def _preview_lines(preview: SyncPreview) -> list[str]:
    s = preview.summary
    lines = []
    if not preview.ready:
        lines.append(f"waiting for {preview.waiting_for}: a real run sends nothing until it exists")
    lines.append(
        f"would upload {s.new + s.changed} file(s), {format_size(s.bytes)}, in {s.uploads} upload(s): "
        f"{s.files} file(s) on their own, {s.packed_files} small file(s) packed into {s.packs} tar(s)"
    )
    lines.append(
        f"new {s.new}, changed {s.changed}, unchanged {s.unchanged} ({format_size(s.unchanged_bytes)}), "
        f"waiting (not yet stable) {s.waiting}, gone locally {s.deleted}"
    )
    parts = []
    for name, count in preview.requests.items():
        wait = preview.waits.get(name, 0.0)
        parts.append(
            f"{count} {name} (budget {preview.limits.get(name, '?')}: "
            + (f"~{format_duration(wait)} of waiting)" if wait > 0 else "no wait)")
        )
    lines.append("requests: " + ", ".join(parts))
    if preview.seconds_bandwidth is not None:
        lines.append(f"bandwidth limit: ~{format_duration(preview.seconds_bandwidth)} for the bytes")
    lines.append(
        f"the rate limits make it ~{format_duration(preview.seconds)}"
        if preview.seconds > 0
        else "the rate limits allow it at once"
    )
    return lines


@click.command(cls=_OrderedRules)
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@click.option("--include", multiple=True, metavar="GLOB", help="Only files matching (gitignore-like; repeatable).")
@click.option(
    "--exclude",
    multiple=True,
    metavar="GLOB",
    help="Leave out matching files (repeatable; the last matching --include/--exclude decides).",
)
@click.option("--ready-marker", metavar="NAME", help="Upload nothing until this file exists (e.g. CopyComplete.txt).")
@click.option("--min-age", type=DURATION, help="Only files left alone (size and time) for this long.")
@click.option("--name-from-path", is_flag=True, help="Name files by their relative path: a/b/x.gz -> a__b__x.gz.")
@click.option("--pack-small", type=SIZE, metavar="SIZE", help="Pack files under SIZE per folder into tars.")
@click.option(
    "--share",
    multiple=True,
    metavar="group:NAME=LEVEL",
    help="Grant each uploaded item: group:NAME=read|edit|share or user:NAME=... (repeatable).",
)
@click.option("--data-type", help="Flow data-type identifier for every file.")
@click.option("--chunk-size", type=CHUNK_SIZE, help="Bytes per upload request, at least 64 KiB (default: automatic).")
@click.option("--dry-run", is_flag=True, help="Show the plan and what the rate limits make of it; send nothing.")
@click.option(
    "--path-map",
    multiple=True,
    hidden=True,
    expose_value=False,
    callback=lambda _ctx, _param, value: _refuse_path_map(value),
)
@sample_sync_options
@transfer_options
@click.pass_context
def sync(
    ctx: click.Context,
    folder: Path,
    include: tuple[str, ...],
    exclude: tuple[str, ...],
    ready_marker: str | None,
    min_age: float | None,
    name_from_path: bool,
    pack_small: int | None,
    share: tuple[str, ...],
    data_type: str | None,
    chunk_size: int | None,
    dry_run: bool,
    concurrency: int | None,
    bwlimit: str | None,
    max_wait: float | None,
    **samples: Any,
) -> None:
    """Upload what is new or changed in a run folder, once it is ready (for cron).

    Nothing is sent until --ready-marker exists (exit 0, "waiting for ...");
    unchanged files are skipped, changed ones uploaded as new data (the old
    id recorded as superseded), deleted ones reported, never deleted on
    Flow. Remote names are basenames, and clashes are refused before any
    byte moves. One sync per folder runs at a time: an overlapping run
    exits 75 at once. Rules: docs/sync-and-bulk.md.

    Example: flowxfer sync /seq/241129_A01234 --ready-marker CopyComplete.txt --pack-small 1M --share group:lab=read
    """
    options = global_options(ctx)
    rules = _ordered_rules(ctx, include, exclude)
    try:
        PathFilter(rules)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--include/--exclude") from None
    sync_options = SyncOptions(
        rules=rules,
        ready_marker=ready_marker,
        min_age=min_age,
        name_from_path=name_from_path,
        pack_small=pack_small,
        shares=_share_grants(share),
        data_type=data_type,
    )
    config = transfer_config(chunk_size=chunk_size, concurrency=concurrency, bwlimit=bwlimit, max_wait=max_wait)
    output = output_for(options, "sync")
    if samples["samples"] and not dry_run:
        sync_with_samples(options, output, folder, sync_options, config, samples)

    if dry_run:

        async def preview(fx: Flowxfer) -> SyncPreview:
            return await fx.preview_sync(folder, sync_options)

        result, _ = run_engine(options, output, preview, config)
        assert result is not None
        _answer(options, result.to_json(), _preview_lines(result), preview=True)

    async def call(fx: Flowxfer) -> TransferReport:
        return await fx.sync(folder, sync_options)

    report, signum = run_engine(options, output, call, config)
    if report is not None and report.status == "waiting":
        _answer(
            options,
            report.to_json(),
            [f"waiting for {report.extra['waiting_for']} in {report.extra['root']} (nothing sent)"],
            preview=False,
        )
    lines = []
    if report is not None:
        extra = report.extra
        counts = [f"{extra.get('unchanged', 0)} unchanged"]
        if extra.get("packs"):
            counts.append(f"{extra['packed_files']} small files in {extra['packs']} tar(s)")
        if extra.get("waiting"):
            counts.append(f"{extra['waiting']} not yet stable (next run)")
        if extra.get("deleted_locally"):
            counts.append(f"{extra['deleted_locally']} gone locally (kept on Flow)")
        lines.append("sync: " + ", ".join(counts))
    _finish(options, output, report, signum, lines)


# --- download --dry-run / --auto-bulk -----------------------------------------------------


def download_with_advice(
    ctx: click.Context,
    ids: tuple[str, ...],
    filename: str | None,
    pattern: str | None,
    owned: bool,
    output_dir: Path,
    force: bool,
    config: Any,
    *,
    dry_run: bool,
    auto_bulk: bool,
) -> NoReturn:
    """``download --dry-run`` (the arithmetic only) and ``download --auto-bulk`` (archive for small files)."""
    options = global_options(ctx)
    output = output_for(options, "download")

    async def advise(fx: Flowxfer) -> DownloadAdvice:
        return await fx.download_advice(list(ids), filename=filename, pattern=pattern, owned=owned)

    if dry_run:
        advice, _ = run_engine(options, output, advise, config)
        assert advice is not None
        lines = list(advice.lines())
        if auto_bulk:
            lines.append(
                "--auto-bulk would take the archive path"
                if advice.bulk_advised
                else "--auto-bulk would download one by one"
            )
        _answer(options, advice.to_json(), lines, preview=True)

    def on_part(kind: str, why: str | None) -> None:
        if why:
            output.error(why)
        output.kind = kind

    async def call(fx: Flowxfer) -> list[TransferReport]:
        return await fx.download_auto_bulk(
            list(ids),
            filename=filename,
            pattern=pattern,
            owned=owned,
            output_dir=output_dir,
            force=force,
            on_part=on_part,
        )

    reports, signum = run_engine(options, output, call, config)
    finish_reports(options, output, reports or [], signum)

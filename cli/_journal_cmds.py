"""``jobs`` and ``show``: read the journal, never the running process."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Iterator
from typing import Any

import click

from flowxfer.journal import Journal, JournalError, TransferRecord, default_journal_path
from flowxfer.transfer import UsageError, format_size, require_transfer_id, sample_reports

from . import _exits
from ._common import fail, global_options


@contextlib.contextmanager
def open_journal(ctx: click.Context) -> Iterator[Journal]:
    """The journal ``--journal`` names (a path or a URL); a journal error, opening it or after, ends the command.

    A database that is unreachable is a "try again later" (75), any other
    journal problem a configuration error (2). Its close too: the console
    script's syncs an SQLite journal's WAL there (:attr:`Journal.process_ends_at_close`),
    and a sync that fails must be said, not a traceback.
    """
    options = global_options(ctx)
    try:
        with Journal.open(options.journal or default_journal_path(), host_id=options.host_id) as journal:
            yield journal
    except JournalError as exc:
        fail(options, str(exc), _exits.exception_exit_code(exc))


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else ""


def _transfer_json(journal: Journal, record: TransferRecord) -> dict[str, Any]:
    summary = journal.summary(record.id)
    return {
        "transfer_id": record.id,
        "kind": record.kind,
        "status": record.status,
        "server": record.server,
        "host": record.host,
        "files_done": summary.files_finished,
        "files_total": summary.files_total,
        "bytes_done": summary.bytes_done + summary.bytes_skipped,
        "bytes_total": summary.bytes_total,
        "created": record.created,
        "updated": record.updated,
        "error": record.error,
        "files_by_status": summary.files_by_status,
        "params": record.params,
    }


@click.command()
@click.option("--all", "show_all", is_flag=True, help="Include completed transfers.")
@click.pass_context
def jobs(ctx: click.Context, show_all: bool) -> None:
    """List transfers in the journal: id, kind, state, host, files and bytes done, last update.

    Example: flowxfer jobs --all
    """
    options = global_options(ctx)
    with open_journal(ctx) as journal:
        records = journal.list_transfers(include_finished=show_all)
        rows = [_transfer_json(journal, record) for record in records]
    if options.json:
        print(json.dumps({"transfers": rows}))
        return
    if not rows:
        print("no transfers" if show_all else "no unfinished transfers (use --all to see finished ones)")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("id", "kind", "state", "host", "files", "bytes", "updated", box=None, pad_edge=False)
    for row in rows:
        table.add_row(
            row["transfer_id"],
            row["kind"],
            row["status"],
            row["host"] or "",
            f"{row['files_done']}/{row['files_total']}",
            f"{format_size(row['bytes_done'])}/{format_size(row['bytes_total'])}",
            _when(row["updated"]),
        )
    Console(file=sys.stdout, width=160).print(table)


@click.command()
@click.argument("transfer_id")
@click.pass_context
def show(ctx: click.Context, transfer_id: str) -> None:
    """Show one transfer, file by file (an id may be abbreviated).

    Example: flowxfer show 3fa9
    """
    options = global_options(ctx)
    with open_journal(ctx) as journal:
        try:
            matches = journal.find_transfers(require_transfer_id(transfer_id))
        except UsageError as exc:
            fail(options, str(exc), _exits.USAGE)
        if len(matches) != 1:
            reason = "no such transfer" if not matches else "ambiguous: " + ", ".join(m.id for m in matches)
            fail(options, f"{transfer_id}: {reason}", _exits.USAGE)
        record = matches[0]
        head = _transfer_json(journal, record)
        files: list[dict[str, Any]] = [
            {
                "path": f.local_path,
                "id": f.data_id,
                "filename": f.remote_name,
                "size": f.size,
                "status": f.status.value,
                "bytes_done": f.bytes_done,
                "error": f.error,
            }
            for f in journal.iter_files(record.id)
        ]
        extra = {"samples": sample_reports(journal, record.id)} if record.kind == "samples" else {}
    if options.json:
        print(json.dumps({**head, "files": files, **extra}))
        return
    print(f"transfer {record.id}: {record.kind} {record.status} on {record.server}, host {record.host or '?'}")
    print(
        f"  files {head['files_done']}/{head['files_total']}, "
        f"{format_size(head['bytes_done'])}/{format_size(head['bytes_total'])}; "
        f"created {_when(record.created)}, updated {_when(record.updated)}"
    )
    if record.error:
        print(f"  error: {record.error}")
    from rich.console import Console
    from rich.table import Table

    table = Table("status", "size", "done", "id", "path", "error", box=None, pad_edge=False)
    for f in files:
        table.add_row(
            f["status"],
            format_size(f["size"]),
            format_size(f["bytes_done"]),
            f["id"] or "",
            f["path"],
            f["error"] or "",
        )
    Console(file=sys.stdout, width=200).print(table)
    if extra:
        samples = Table("row", "name", "status", "sample id", "error", box=None, pad_edge=False)
        for sample in extra["samples"]:
            samples.add_row(
                str(sample["row"]), sample["name"], sample["status"], sample["id"] or "", sample["error"] or ""
            )
        Console(file=sys.stdout, width=200).print(samples)

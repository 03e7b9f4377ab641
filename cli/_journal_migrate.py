"""``journal migrate``: move a host's own journal into the fleet's shared one.

A lab that outgrows one machine copies the journal it has (``--journal``, or
the default file) into PostgreSQL once, then points every host at the
database; unfinished transfers resume there, and what was uploaded stays
known (nothing is uploaded twice). The copy refuses a destination that
already holds transfers: merging two journals is not a copy, and a second
run of the same migration must not duplicate the first.
"""

from __future__ import annotations

import json
from typing import Any

import click

from flowxfer.journal import Journal, JournalError, migrate_journal, parse_journal_location

from . import _exits
from ._common import JOURNAL, fail, global_options


@click.group("journal")
def journal_group() -> None:
    """Manage the journal itself (see also: jobs, show, doctor)."""


@journal_group.command("migrate")
@click.option(
    "--to",
    "destination",
    required=True,
    type=JOURNAL,
    metavar="URL",
    help="The journal to copy into, e.g. postgresql://flowxfer@db.lab/flowxfer; it must hold no transfers yet.",
)
@click.pass_context
def migrate(ctx: click.Context, destination: str) -> None:
    """Copy this journal (--journal, or the default file) into another, e.g. a shared PostgreSQL one.

    Transfers, their files and chunks, what was uploaded and downloaded, and
    the rate-limit budgets are copied; the source is left as it was. Point
    every host at the destination afterwards (--journal or FLOWXFER_JOURNAL)
    and run 'flowxfer resume' to finish what was unfinished.

    Example: flowxfer journal migrate --to postgresql://flowxfer@db.lab/flowxfer
    """
    options = global_options(ctx)
    source = parse_journal_location(options.journal)
    target = parse_journal_location(destination)
    if source.backend == "sqlite" and source.path is not None and not source.path.is_file():
        fail(options, f"no journal to migrate at {source.display}", _exits.USAGE)
    if source.display == target.display:
        fail(options, f"the destination is the source ({source.display})", _exits.USAGE)
    try:
        with (
            Journal.open(source, host_id=options.host_id) as old,
            Journal.open(target, host_id=options.host_id) as new,
        ):
            counts = migrate_journal(old, new)
    except JournalError as exc:
        fail(options, str(exc), _exits.exception_exit_code(exc))
    document: dict[str, Any] = {
        "status": "completed",
        "source": source.display,
        "destination": target.display,
        **counts,
    }
    if options.json:
        print(json.dumps(document))
        return
    what = ", ".join(f"{count} {name}" for name, count in counts.items())
    print(f"copied {what} from {source.display} to {target.display}")
    print("next: point every host at it (--journal or FLOWXFER_JOURNAL) and run 'flowxfer resume'")

"""``samples types|metadata|organisms|projects`` and the templates: what the server accepts, as tables or JSON.

``batch-template`` writes the header of a sample sheet as flowbio's does
(name, reads1, reads2, project, organism, then each attribute and, where
allowed, its ``__annotation``), so a sheet made from it works with both
tools; ``annotation-template`` saves the server's ``.xlsx`` for
``upload-multiplexed``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

import click

from flowxfer.transfer import ANNOTATION_SUFFIX, RESERVED_COLUMNS, Flowxfer, UsageError, owned_projects

from . import _exits
from ._common import GlobalOptions, fail, global_options, run_engine
from ._render import Output
from ._samples import _write_atomically, samples


def _call(options: GlobalOptions, call: Any) -> Any:
    output = Output("samples", progress="none", results=False, verbose=options.verbose)
    result, _ = run_engine(options, output, call)
    return result


def _table(headers: list[str], rows: list[list[str]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(*headers, box=None, pad_edge=False)
    for row in rows:
        table.add_row(*row)
    Console(file=sys.stdout, width=200).print(table)


def _listing(ctx: click.Context, fetch: Any, key: str, columns: list[tuple[str, str]]) -> None:
    """A catalog listing: the server's items under ``key`` (``--json``), or a table of ``columns`` (field, title)."""
    options = global_options(ctx)
    listed = _call(options, fetch)
    if options.json:
        print(json.dumps({key: listed}))
        return
    _table([title for _, title in columns], [[str(item.get(field) or "") for field, _ in columns] for item in listed])


@samples.command("types")
@click.pass_context
def types(ctx: click.Context) -> None:
    """The sample types of the server (identifier, name, description).

    Example: flowxfer samples types --json
    """

    async def fetch(fx: Flowxfer) -> Any:
        return await fx.client.json_value("/samples/types")

    _listing(
        ctx, fetch, "sample_types", [("identifier", "identifier"), ("name", "name"), ("description", "description")]
    )


def _for_type(item: dict[str, Any], sample_type: str) -> bool:
    links = item.get("sample_type_links") or []
    return (
        bool(item.get("all_sample_types"))
        or not links
        or any(link.get("sample_type_identifier") == sample_type for link in links)
    )


def _required(item: dict[str, Any], sample_type: str | None) -> bool:
    return bool(item.get("required")) or (
        sample_type is not None
        and any(
            link.get("sample_type_identifier") == sample_type and link.get("required")
            for link in item.get("sample_type_links") or []
        )
    )


async def _metadata(fx: Flowxfer, sample_type: str | None) -> list[dict[str, Any]]:
    """The attributes (for one sample type: those it may carry), each with its options where they are closed."""
    if sample_type is not None:
        known = [t.get("identifier") for t in await fx.client.json_value("/samples/types")]
        if sample_type not in known:
            raise UsageError(f"unknown sample type {sample_type!r}; known: {', '.join(map(str, known))}")
    items = [
        item
        for item in await fx.client.json_value("/samples/metadata")
        if sample_type is None or _for_type(item, sample_type)
    ]
    for item in items:
        if item.get("has_options") and not item.get("allow_user_terms"):
            answer = await fx.client.json_value(f"/samples/metadata/{quote(str(item['identifier']), safe='')}/options")
            item["options"] = [o.get("value") for o in answer.get("options", [])]
        item["required_here"] = _required(item, sample_type)
    return items


@samples.command("metadata")
@click.option("--sample-type", metavar="TYPE", help="Only the attributes of this sample type, and what it requires.")
@click.pass_context
def metadata(ctx: click.Context, sample_type: str | None) -> None:
    """The metadata attributes: identifier, required, allowed values.

    Example: flowxfer samples metadata --sample-type RNA-Seq
    """
    options = global_options(ctx)

    async def call(fx: Flowxfer) -> Any:
        return await _metadata(fx, sample_type)

    items = _call(options, call)
    if options.json:
        print(json.dumps({"sample_type": sample_type, "attributes": items}))
        return
    _table(
        ["identifier", "name", "required", "values", "annotation"],
        [
            [
                str(i.get("identifier")),
                str(i.get("name") or ""),
                "yes" if i["required_here"] else "",
                ", ".join(map(str, i.get("options") or []))
                or ("any" if not i.get("has_options") else "any (or listed)"),
                "allowed" if i.get("allow_annotation") else "",
            ]
            for i in items
        ],
    )


@samples.command("organisms")
@click.pass_context
def organisms(ctx: click.Context) -> None:
    """The organisms of the server (id, name, latin name).

    Example: flowxfer samples organisms
    """

    async def fetch(fx: Flowxfer) -> Any:
        return await fx.client.json_value("/organisms")

    _listing(ctx, fetch, "organisms", [("id", "id"), ("name", "name"), ("latin_name", "latin name")])


@samples.command("projects")
@click.pass_context
def projects(ctx: click.Context) -> None:
    """Your projects (id, name), the ids a sheet's project column takes.

    Example: flowxfer samples projects --json
    """

    async def fetch(fx: Flowxfer) -> Any:
        return await owned_projects(fx.client)

    _listing(ctx, fetch, "projects", [("id", "id"), ("name", "name"), ("description", "description")])


@samples.command("batch-template")
@click.option("--sample-type", required=True, metavar="TYPE", help="The sample type the sheet is for.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write it here (default stdout).")
@click.pass_context
def batch_template(ctx: click.Context, sample_type: str, output: Path | None) -> None:
    """The header of a sample sheet for upload-batch (flowbio's columns; same file works with both).

    Example: flowxfer samples batch-template --sample-type RNA-Seq -o sheet.csv
    """
    options = global_options(ctx)

    async def call(fx: Flowxfer) -> Any:
        return await _metadata(fx, sample_type)

    items = _call(options, call)
    columns: list[tuple[str, bool]] = [(c, c in ("name", "reads1")) for c in RESERVED_COLUMNS]
    for item in items:
        columns.append((str(item["identifier"]), bool(item["required_here"])))
        if item.get("allow_annotation"):
            columns.append((f"{item['identifier']}{ANNOTATION_SUFFIX}", False))
    header = ",".join(name for name, _ in columns)
    if output is not None:
        try:
            _write_atomically(output, header + "\n")
        except OSError as exc:
            fail(options, f"cannot write {output}: {exc.strerror}", _exits.USAGE)
    if options.json:
        print(
            json.dumps(
                {
                    "sample_type": sample_type,
                    "sheet": str(output) if output else None,
                    "columns": [{"name": n, "required": r} for n, r in columns],
                }
            )
        )
        return
    if output is None:
        print(header)
    if not options.quiet:
        required = [name for name, needed in columns if needed]
        print(
            f"required: {', '.join(required)}; paths relative to the sheet; several files joined by ';' are "
            "sent as one",
            file=sys.stderr,
        )


@samples.command("annotation-template")
@click.option(
    "--sample-type",
    default="generic",
    show_default=True,
    metavar="TYPE",
    help="The sample type of the samples in the multiplexed reads.",
)
@click.option(
    "-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path), help="The .xlsx file to write."
)
@click.pass_context
def annotation_template(ctx: click.Context, sample_type: str, output: Path) -> None:
    """Save the server's annotation sheet template (.xlsx) for upload-multiplexed.

    Example: flowxfer samples annotation-template --sample-type RNA-Seq -o annotation.xlsx
    """
    options = global_options(ctx)

    async def call(fx: Flowxfer) -> bytes:
        async with fx.client.stream("GET", f"/annotation/{quote(sample_type, safe='')}", rate_class="api") as answer:
            return await answer.content.read(64 * 1024 * 1024)

    body = _call(options, call)
    try:
        output.write_bytes(body)
    except OSError as exc:
        fail(options, f"cannot write {output}: {exc.strerror}", _exits.USAGE)
    if options.json:
        print(json.dumps({"sample_type": sample_type, "output": str(output), "size": len(body)}))
    elif not options.quiet:
        print(f"wrote {output} ({len(body)} bytes)")

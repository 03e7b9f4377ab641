"""``flowxfer admin execution``: register pipeline runs on the local server (it runs none itself)."""

from __future__ import annotations

from pathlib import Path

import click

from ._common import DURATION
from ._serve import _admin, admin


def _outputs(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> list[tuple[str, Path]]:
    found = []
    for value in values:
        process, sep, path = value.partition("=")
        if not sep or not process or not path:
            raise click.BadParameter(f"{value!r}: expected PROCESS=FILE", ctx, param)
        found.append((process, Path(path)))
    return found


def _schedule(ctx: click.Context, param: click.Parameter, value: str | None) -> list[tuple[float, str]] | None:
    """``"0s=-,30s=OK"``: the status each moment (after now) brings."""
    if value is None:
        return None
    steps = []
    for part in value.split(","):
        when, sep, status = part.strip().partition("=")
        if not sep:
            raise click.BadParameter(f"{part!r}: expected TIME=STATUS, e.g. 30s=OK", ctx, param)
        steps.append((DURATION.convert(when, param, ctx), status.strip()))
    return steps


@admin.group("execution")
def execution_group() -> None:
    """Pipeline runs (the local server runs none: register what a run left): add, finish, list."""


@execution_group.command("add")
@click.argument("owner")
@click.option("--pipeline", required=True, help="The pipeline's name, e.g. RNA-Seq.")
@click.option("--version", "version", required=True, help="The pipeline version's name, e.g. 3.4.")
@click.option("--sample", "sample_id", help="The sample id the run analysed.")
@click.option(
    "--output",
    "outputs",
    multiple=True,
    callback=_outputs,
    metavar="PROCESS=FILE",
    help="A file a process produced (repeatable; copied into the server).",
)
@click.option(
    "--status",
    type=click.Choice(["OK", "ERROR", "CANCELED", "-"]),
    default="OK",
    show_default=True,
    help="The status it ends with ('-': it never finishes).",
)
@click.option("--finish-in", type=DURATION, default=0.0, help="When it reaches --status, e.g. 30s (default: now).")
@click.option(
    "--schedule", callback=_schedule, help="Instead of --status/--finish-in: statuses by time, e.g. '0s=-,10m=ERROR'."
)
@click.option("--identifier", help="Its human-readable name (default: a new one like small_meucci).")
@click.option("--public", is_flag=True, help="Anyone logged in may see it and its outputs.")
@click.option("--stderr", default="", help="Text its standard error shows (a failure's reason, say).")
@click.pass_context
def execution_add(
    ctx: click.Context,
    owner: str,
    pipeline: str,
    version: str,
    sample_id: str | None,
    outputs: list[tuple[str, Path]],
    status: str,
    finish_in: float,
    schedule: list[tuple[float, str]] | None,
    identifier: str | None,
    public: bool,
    stderr: str,
) -> None:
    """Register OWNER's run of a pipeline with its outputs; prints its id and identifier.

    Example: flowxfer admin --root R execution add alice --pipeline RNA-Seq --version 3.4 --sample 1234
    --output multiqc=report.html --output salmon=quant.sf --finish-in 30s
    """
    from flowxfer.server import AdminError
    from flowxfer.server._admin_executions import ExecutionSpec

    steps = schedule if schedule is not None else [(finish_in, status)]
    spec = ExecutionSpec(
        owner=owner,
        pipeline=pipeline,
        version=version,
        sample_id=sample_id,
        outputs=outputs,
        schedule=steps,
        public=public,
        identifier=identifier,
        stderr=stderr,
    )
    with _admin(ctx.obj) as adm:
        try:
            execution_id, name = adm.add_execution(spec)
        except AdminError as exc:
            raise click.UsageError(str(exc)) from None
    click.echo(f"added execution {execution_id} {name}")


@execution_group.command("finish")
@click.argument("execution_id")
@click.option(
    "--status", type=click.Choice(["OK", "ERROR", "CANCELED"]), default="OK", show_default=True, help="How it ends."
)
@click.pass_context
def execution_finish(ctx: click.Context, execution_id: str, status: str) -> None:
    """End a running execution now, whatever its schedule said (a demo's or a test's cue).

    Example: flowxfer admin --root R execution finish 1234 --status ERROR
    """
    from flowxfer.server import AdminError

    with _admin(ctx.obj) as adm:
        try:
            adm.finish_execution(execution_id, status)
        except AdminError as exc:
            raise click.UsageError(str(exc)) from None
    click.echo(f"execution {execution_id} ended {status}")


@execution_group.command("list")
@click.pass_context
def execution_list(ctx: click.Context) -> None:
    """List executions as ID IDENTIFIER OWNER PIPELINE VERSION. Example: flowxfer admin --root R execution list"""
    with _admin(ctx.obj) as adm:
        for execution_id, name, owner, pipeline in adm.executions():
            click.echo(f"{execution_id} {name} {owner} {pipeline}")

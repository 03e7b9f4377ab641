"""``flowxfer serve`` and ``flowxfer admin``: the local Flow-compatible server, and its users.

Thin: parse, build a :class:`flowxfer.server.ServerConfig`, call the library.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from flowxfer.protocol import RateLimit, parse_rate_limit_spec

if TYPE_CHECKING:
    from flowxfer.server import Admin


def _parse_size(text: str) -> int:
    units = {
        "": 1,
        "b": 1,
        "k": 1024,
        "kib": 1024,
        "kb": 1024,
        "m": 1024**2,
        "mib": 1024**2,
        "mb": 1024**2,
        "g": 1024**3,
        "gib": 1024**3,
        "gb": 1024**3,
    }
    stripped = text.strip().lower()
    number = stripped.rstrip("kmgib")
    unit = stripped[len(number) :]
    if unit not in units or not number.isdigit():
        raise ValueError(f"bad size {text!r}: use e.g. 8M, 64MiB, 1G")
    value = int(number) * units[unit]
    if value <= 0:
        raise ValueError("size must be positive")
    return value


class _Size(click.ParamType):
    name = "SIZE"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            return _parse_size(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class _RateSpec(click.ParamType):
    name = "SPEC"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> dict[str, RateLimit] | None:
        if isinstance(value, dict) or value is None:
            return value
        try:
            return parse_rate_limit_spec(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def _user(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, str]:
    from flowxfer.server._auth import password_problem, username_problem

    users: dict[str, str] = {}
    for item in values:
        name, sep, password = item.partition(":")
        if not sep:
            raise click.BadParameter(f"{item!r}: expected NAME:PASSWORD", ctx, param)
        problem = username_problem(name) or password_problem(password)
        if problem:
            raise click.BadParameter(f"{name!r}: {problem}", ctx, param)
        users[name] = password
    return users


def _project(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> list[tuple[str, str]]:
    projects: list[tuple[str, str]] = []
    for item in values:
        owner, sep, name = item.partition(":")
        if not sep or not owner or not name.strip():
            raise click.BadParameter(f"{item!r}: expected OWNER:NAME", ctx, param)
        projects.append((owner, name.strip()))
    return projects


def _catalog(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
    """Read the catalog now, so a bad file is a usage error before anything starts."""
    from flowxfer.server import CatalogError, load_catalog

    if value is not None:
        try:
            load_catalog(value)
        except CatalogError as exc:
            raise click.BadParameter(str(exc), ctx, param) from None
    return value


def _positive(ctx: click.Context, param: click.Parameter, value: float) -> float:
    if value <= 0:
        raise click.BadParameter("must be positive", ctx, param)
    return value


@click.command("serve")
@click.option(
    "--root",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder holding the database, the signing secret and every stored byte.",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option(
    "--port",
    default=8000,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port to bind; 0 picks a free one.",
)
@click.option(
    "--user",
    "users",
    multiple=True,
    callback=_user,
    metavar="NAME:PASSWORD",
    help="Create a user (or reset their password) at start-up. Repeatable.",
)
@click.option(
    "--rate-limits",
    default="default",
    show_default=True,
    type=_RateSpec(),
    help="off, default (hosted Flow's hourly limits) or e.g. api=1000,download=3/10s.",
)
@click.option(
    "--access-ttl",
    default=300.0,
    show_default=True,
    type=float,
    callback=_positive,
    help="Access-token lifetime, seconds.",
)
@click.option(
    "--refresh-ttl",
    default=7 * 86400.0,
    show_default=True,
    type=float,
    callback=_positive,
    help="Refresh-token lifetime, seconds.",
)
@click.option(
    "--job-ttl",
    default=3600.0,
    show_default=True,
    type=float,
    callback=_positive,
    help="Seconds a completed archive is kept before it expires (410).",
)
@click.option("--no-extensions", is_flag=True, help="Hide every [ext] feature: behave as hosted Flow.")
@click.option(
    "--archive-format",
    type=click.Choice(["zip", "tar.gz"]),
    default="zip",
    show_default=True,
    help="What bulk archive jobs build (hosted Flow builds tar.gz).",
)
@click.option(
    "--catalog",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    callback=_catalog,
    help="JSON file of sample types, organisms and metadata attributes (default: a catalog like hosted Flow's).",
)
@click.option(
    "--project",
    "projects",
    multiple=True,
    callback=_project,
    metavar="OWNER:NAME",
    help="Create OWNER's project NAME at start-up if missing. Repeatable.",
)
@click.option(
    "--max-chunk-size",
    default="64MiB",
    show_default=True,
    type=_Size(),
    help="Largest upload chunk accepted (bigger is 413).",
)
@click.option(
    "--tls-cert",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="PEM certificate: serve HTTPS (with --tls-key).",
)
@click.option(
    "--tls-key",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="PEM private key for --tls-cert.",
)
def serve(
    root: Path,
    host: str,
    port: int,
    users: dict[str, str],
    rate_limits: dict[str, RateLimit] | None,
    access_ttl: float,
    refresh_ttl: float,
    job_ttl: float,
    no_extensions: bool,
    archive_format: str,
    catalog: Path | None,
    projects: list[tuple[str, str]],
    max_chunk_size: int,
    tls_cert: Path | None,
    tls_key: Path | None,
) -> None:
    """Run the local Flow-compatible server until SIGINT or SIGTERM.

    The first line on stdout is exactly ``listening on http://HOST:PORT``
    (https with --tls-cert); logs go to stderr.

    Example:

    \b
        flowxfer serve --root ./flow-root --port 0 --user alice:s3cret --rate-limits download=3/10s
        flowxfer serve --root ./flow-root --user alice:s3cret --project alice:lab --catalog catalog.json
    """
    from flowxfer.server import ServerConfig, run

    if (tls_cert is None) != (tls_key is None):
        raise click.UsageError("give both --tls-cert and --tls-key, or neither")
    config = ServerConfig(
        root=root,
        host=host,
        port=port,
        users=users,
        rate_limits=rate_limits,
        access_ttl=access_ttl,
        refresh_ttl=refresh_ttl,
        job_ttl=job_ttl,
        extensions=not no_extensions,
        archive_format=archive_format,
        catalog=catalog,
        projects=projects,
        max_chunk_size=max_chunk_size,
        tls_cert=tls_cert,
        tls_key=tls_key,
    )
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")

    def announce(url: str) -> None:
        click.echo(f"listening on {url}")
        sys.stdout.flush()

    try:
        run(config, on_listening=announce)
    except (OSError, ValueError) as exc:  # a root, port or TLS file that cannot be used
        raise _CannotServe(f"cannot serve: {exc}") from None


class _CannotServe(click.ClickException):
    exit_code = 2  # cli.md: a configuration or local input error (_exits.USAGE: not imported by serve)


@click.group("admin")
@click.option("--root", type=click.Path(file_okay=False, path_type=Path), help="The server's --root (required).")
@click.pass_context
def admin(ctx: click.Context, root: Path | None) -> None:
    """Manage the local server's users, groups and projects offline.

    Example:

    \b
        echo s3cret | flowxfer admin --root ./flow-root user add alice --password-stdin
        flowxfer admin --root ./flow-root group add lab
        flowxfer admin --root ./flow-root group add-member lab alice
    """
    ctx.obj = root


def _admin(root: Path | None) -> Admin:
    from flowxfer.server import Admin

    if root is None:
        # Not required=True on the group, so that `admin user add --help` works without it.
        raise click.UsageError("Missing option '--root'.")
    return Admin(root)


def _read_password(password_stdin: bool) -> str:
    if password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return str(click.prompt("Password", hide_input=True, confirmation_prompt=True))


@admin.group("user")
def user_group() -> None:
    """Users: add, passwd, remove, list."""


@user_group.command("add")
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin (never a flag).")
@click.pass_context
def user_add(ctx: click.Context, name: str, password_stdin: bool) -> None:
    """Create a user, or set the password of an existing one.

    Example: echo s3cret | flowxfer admin --root R user add alice --password-stdin
    """
    from flowxfer.server import AdminError

    password = _read_password(password_stdin)
    with _admin(ctx.obj) as adm:
        try:
            created = adm.add_user(name, password)
        except AdminError as exc:
            raise click.UsageError(str(exc)) from None
    click.echo(f"{'added' if created else 'updated'} user {name}")


@user_group.command("passwd")
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin.")
@click.pass_context
def user_passwd(ctx: click.Context, name: str, password_stdin: bool) -> None:
    """Set a user's password. Example: flowxfer admin --root R user passwd alice"""
    ctx.invoke(user_add, name=name, password_stdin=password_stdin)


@user_group.command("remove")
@click.argument("name")
@click.pass_context
def user_remove(ctx: click.Context, name: str) -> None:
    """Remove a user. Example: flowxfer admin --root R user remove alice"""
    with _admin(ctx.obj) as adm:
        if not adm.remove_user(name):
            raise click.UsageError(f"no such user: {name}")
    click.echo(f"removed user {name}")


@user_group.command("list")
@click.pass_context
def user_list(ctx: click.Context) -> None:
    """List users. Example: flowxfer admin --root R user list"""
    with _admin(ctx.obj) as adm:
        for name in adm.users():
            click.echo(name)


@admin.group("project")
def project_group() -> None:
    """Projects (which samples are filed under): add, list."""


@project_group.command("add")
@click.argument("owner")
@click.argument("name")
@click.option("--description", default="", help="What the project is for.")
@click.pass_context
def project_add(ctx: click.Context, owner: str, name: str, description: str) -> None:
    """Create OWNER's project NAME (nothing changes if it exists); prints its id.

    Example: flowxfer admin --root R project add alice lab --description "RNA-Seq of 2026"
    """
    from flowxfer.server import AdminError

    with _admin(ctx.obj) as adm:
        try:
            project_id, created = adm.add_project(owner, name, description)
        except AdminError as exc:
            raise click.UsageError(str(exc)) from None
    click.echo(f"{'added' if created else 'exists:'} project {owner}:{name} {project_id}")


@project_group.command("list")
@click.pass_context
def project_list(ctx: click.Context) -> None:
    """List projects as OWNER:NAME ID. Example: flowxfer admin --root R project list"""
    with _admin(ctx.obj) as adm:
        for owner, name, project_id in adm.projects():
            click.echo(f"{owner}:{name} {project_id}")


@admin.group("group")
def group_group() -> None:
    """Groups: add, add-member, remove-member, list."""


@group_group.command("add")
@click.argument("name")
@click.pass_context
def group_add(ctx: click.Context, name: str) -> None:
    """Create a group. Example: flowxfer admin --root R group add lab"""
    from flowxfer.server import AdminError

    with _admin(ctx.obj) as adm:
        try:
            adm.add_group(name)
        except AdminError as exc:
            raise click.UsageError(str(exc)) from None
    click.echo(f"group {name}")


@group_group.command("add-member")
@click.argument("group")
@click.argument("user")
@click.pass_context
def group_add_member(ctx: click.Context, group: str, user: str) -> None:
    """Add a user to a group. Example: flowxfer admin --root R group add-member lab alice"""
    from flowxfer.server import AdminError

    with _admin(ctx.obj) as adm:
        try:
            adm.add_member(group, user)
        except AdminError as exc:
            raise click.UsageError(str(exc)) from None
    click.echo(f"{user} is in {group}")


@group_group.command("remove-member")
@click.argument("group")
@click.argument("user")
@click.pass_context
def group_remove_member(ctx: click.Context, group: str, user: str) -> None:
    """Remove a user from a group. Example: flowxfer admin --root R group remove-member lab alice"""
    with _admin(ctx.obj) as adm:
        adm.remove_member(group, user)
    click.echo(f"{user} is not in {group}")


@group_group.command("list")
@click.pass_context
def group_list(ctx: click.Context) -> None:
    """List groups and members. Example: flowxfer admin --root R group list"""
    with _admin(ctx.obj) as adm:
        for name, members in adm.groups().items():
            click.echo(f"{name}: {' '.join(members)}")


@admin.group("token")
def token_group() -> None:
    """Long-lived API keys, as hosted Flow issues them: add, list, remove."""


@token_group.command("add")
@click.argument("user")
@click.option("--name", default="", help="A label for the key (e.g. laptop, AI agent).")
@click.option(
    "--expires-in-days",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Days the key stays valid (default: until removed).",
)
@click.pass_context
def token_add(ctx: click.Context, user: str, name: str, expires_in_days: float | None) -> None:
    """Issue an API key for USER, used as 'Authorization: Bearer KEY' (or FLOW_API_TOKEN).

    The key is printed once, on stdout, and only a hash of it is kept: save it now.

    Example: flowxfer admin --root R token add alice --name laptop > ~/.config/flow/api-token
    """
    from flowxfer.server import AdminError

    with _admin(ctx.obj) as adm:
        try:
            key_id, key = adm.add_token(user, name, expires_in_days * 86400 if expires_in_days else None)
        except AdminError as exc:
            raise click.UsageError(str(exc)) from None
    click.echo(key)
    click.echo(f"API key {key_id} for {user}: shown once, only its hash is kept", err=True)


@token_group.command("list")
@click.option("--user", default=None, help="Only this user's keys.")
@click.pass_context
def token_list(ctx: click.Context, user: str | None) -> None:
    """List API keys: id, user, name, created, expires (never a secret).

    Example: flowxfer admin --root R token list
    """
    import time

    def when(t: float | None) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t)) if t is not None else "never"

    with _admin(ctx.obj) as adm:
        for key_id, owner, name, created, expires in adm.tokens(user):
            click.echo(f"{key_id}\t{owner}\t{name or '-'}\t{when(created)}\texpires {when(expires)}")


@token_group.command("remove")
@click.argument("key_id")
@click.pass_context
def token_remove(ctx: click.Context, key_id: str) -> None:
    """Revoke an API key at once. Example: flowxfer admin --root R token remove 0123456789abcdef"""
    with _admin(ctx.obj) as adm:
        if not adm.remove_token(key_id):
            raise click.UsageError(f"no such API key: {key_id}")
    click.echo(f"removed API key {key_id}")

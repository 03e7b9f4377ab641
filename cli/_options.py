"""The global options and the parameter types: what ``flowxfer`` parses before any command runs.

Kept apart from :mod:`._common` (the runner, which needs the whole engine) so
that parsing the command line loads neither aiohttp nor the transfer code:
the console script (:func:`flowxfer.cli.run`) first imports aiohttp its own
way (``import_aiohttp_without_default_trust``), then parses. The engine's
:class:`Flowxfer` is reached through the package (``engine.Flowxfer``),
which loads it on first use.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import click

from flowxfer import transfer as engine
from flowxfer.journal import JournalError, parse_journal_location
from flowxfer.transfer import DEFAULT_BASE_URL, TransferConfig, parse_duration, parse_size

from ._server_choice import choose_token, official_token_file


class SizeType(click.ParamType):
    """``8M``, ``8MiB``, ``512k``: binary units."""

    name = "size"

    def __init__(self, minimum: int = 1) -> None:
        self.minimum = minimum

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            size = parse_size(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
        if size <= 0:
            self.fail("must be more than 0 bytes", param, ctx)
        if size < self.minimum:
            self.fail(f"must be at least {self.minimum // 1024} KiB", param, ctx)
        return size


class DurationType(click.ParamType):
    """``90s``, ``15m``, ``2h``; a bare number is seconds."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, int | float):
            return float(value)
        try:
            return parse_duration(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class JournalType(click.ParamType):
    """A journal location: a path, or a URL checked here (an unknown scheme is a usage error, exit 2).

    The text itself is kept: the engine and ``jobs`` open it as given.
    """

    name = "journal"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = os.fspath(value)
        if not text:
            self.fail("must not be empty", param, ctx)
        try:
            parse_journal_location(text)
        except JournalError as exc:
            self.fail(str(exc), param, ctx)
        return text


SIZE = SizeType()
#: ``--chunk-size``: one request (and journal write) per chunk, so not tiny.
CHUNK_SIZE = SizeType(minimum=TransferConfig.MIN_CHUNK_SIZE)
DURATION = DurationType()
JOURNAL = JournalType()


@dataclass(frozen=True)
class GlobalOptions:
    """The options given before the command (``cli.md``: Global options)."""

    base_url: str = DEFAULT_BASE_URL
    token: str | None = None
    #: ``--token-file``/``FLOW_TOKEN_FILE``: an API key or access token in a file (``_server_choice``).
    token_file: Path | None = None
    #: Said once when a command talks to the server: why this server (it came from the last login).
    server_note: str | None = None
    #: Whether the official CLI's token file may stand in for a missing login (not for login itself).
    official_token: bool = True
    config_dir: Path | None = None
    #: ``--journal``: a path or a URL, as given (``Journal.open`` parses it).
    journal: str | None = None
    #: ``--host-id``/``FLOWXFER_HOST_ID``: this host's name in a shared journal (None: the journal's default).
    host_id: str | None = None
    #: ``--lease-ttl``/``FLOWXFER_LEASE_TTL``: seconds before a silent host's transfers may be taken over.
    lease_ttl: float | None = None
    #: ``--path-map FROM=TO`` of the command (``upload``, ``resume``): see ``transfer/_pathmap.py``.
    path_map: tuple[str, ...] = ()
    json: bool = False
    no_progress: bool = False
    quiet: bool = False
    verbose: bool = False
    log_format: str = "text"
    ca_bundle: Path | None = None
    allow_insecure_http: bool = False
    #: Attempts per request (``--max-attempts``): a cron job may rather fail fast than retry for minutes.
    max_attempts: int | None = None

    def progress_mode(self) -> str:
        if self.log_format == "json":
            return "json"
        if self.quiet or self.no_progress:
            return "none"
        return "bars" if sys.stderr.isatty() else "plain"

    def flowxfer(
        self, config: TransferConfig | None = None, progress: Callable[[Any], None] | None = None
    ) -> engine.Flowxfer:
        if self.max_attempts is not None:
            config = replace(config or TransferConfig(), max_attempts=self.max_attempts)
        if self.lease_ttl is not None:
            config = replace(config or TransferConfig(), lease_stale_after=self.lease_ttl)
        self._say_server_note()
        token = choose_token(
            self.token,
            self.token_file,
            self.base_url,
            self.config_dir,
            official_token_file() if self.official_token else None,
        )
        return engine.Flowxfer(
            self.base_url,
            token=token,
            config_dir=self.config_dir,
            journal=self.journal,
            host_id=self.host_id,
            path_map=self.path_map,
            config=config,
            progress=progress,
            ca_bundle=self.ca_bundle,
            allow_insecure_http=self.allow_insecure_http,
        )

    def _say_server_note(self) -> None:
        if not self.server_note or self.quiet or self.server_note in _SAID:
            return
        _SAID.add(self.server_note)
        if self.log_format == "json":
            print(
                json.dumps({"ts": round(time.time(), 3), "event": "notice", "message": self.server_note}),
                file=sys.stderr,
                flush=True,
            )
        else:
            print(f"flowxfer: {self.server_note}", file=sys.stderr, flush=True)


#: Notes already said in this process (a command may open several sessions).
_SAID: set[str] = set()


def global_options(ctx: click.Context) -> GlobalOptions:
    options = ctx.find_object(GlobalOptions)
    return options if options is not None else GlobalOptions()

"""When the console script starts the server's TCP handshake before loading a command (issue 20).

The mechanism is the engine's (:mod:`flowxfer.transfer._preconnect`); this
decides when it is certain to help and cannot change what the command does:
a command that sends a request to the chosen server (below), not asked for
its help or a dry run, no proxy named in the environment (the client sets
no ``trust_env`` today, so a proxy there is not used; the check keeps the
handshake on the path the requests take should that change), and a URL the
client itself would accept (:func:`~flowxfer.transfer._baseurl.check_base_url`).
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

import click

from flowxfer.transfer import UsageError, check_base_url
from flowxfer.transfer import start_early_connection as start

from ._server_choice import CHOSEN_SERVER, choose_server

#: Commands that send a request to the chosen server once their arguments parse. Not ``sync``
#: (a cron job's folder not ready yet sends nothing), ``login`` (a password prompt can outlast a
#: server's idle timeout) or ``resume`` (with nothing unfinished it sends nothing). An upload whose
#: files the journal knows unchanged sends nothing either: its early connection is closed unused.
REQUESTING = frozenset({"upload", "download"})
#: Arguments after which a command sends nothing (or nothing certain).
_SENDS_NOTHING = frozenset({"-h", "--help", "--dry-run"})
_PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy")


def connect_early(ctx: click.Context, args: list[str]) -> bool:
    """Start the handshake with the server of ``flowxfer [options] ARGS`` when that is safe; whether it started."""
    if not args or args[0] not in REQUESTING or _SENDS_NOTHING.intersection(args[1:]):
        return False
    if any(os.environ.get(name) or os.environ.get(name.upper()) for name in _PROXY_VARIABLES):
        return False
    server = ctx.meta[CHOSEN_SERVER] = choose_server(ctx.params.get("base_url"), ctx.params.get("config_dir"))
    try:
        parts = urlsplit(check_base_url(server.base_url, bool(ctx.params.get("allow_insecure_http"))))
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except (UsageError, ValueError):
        return False
    return parts.hostname is not None and start(parts.hostname, port)

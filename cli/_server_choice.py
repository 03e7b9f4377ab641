"""Which server, and which credentials, a command uses: the official CLI's habits carried over.

Server: ``--base-url``, then ``FLOW_API_URL``, then the server ``flowxfer
login`` last logged in to (said once, on stderr, when used), then the
built-in default (the official client's, ``https://app.flow.bio/api``).

Credentials, first found wins, in flowbio's order of precedence:
``--token``/``FLOW_API_TOKEN``, then ``--token-file``/``FLOW_TOKEN_FILE``,
then this server's saved login (``flowxfer login``), then the official CLI's
token file ``~/.config/flow/api-token``. A token given by flag, variable or
file may be a long-lived API key or an access token; neither can be
refreshed. Tokens are never printed: messages name files, not contents.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from flowxfer.transfer import (
    DEFAULT_BASE_URL,
    CredentialStore,
    FlowxferError,
    default_config_dir,
    read_token_file,
    readable_by_others,
)


def official_token_file() -> Path:
    """Where the official CLI (flowbio) keeps an API key; read when nothing closer gives a token.

    Asked when a command runs, not when the module loads: a program (or a
    test) that changes ``HOME`` later must not get the first user's key.
    """
    return Path.home() / ".config" / "flow" / "api-token"


#: ``ctx.meta``'s key for a server chosen before the group's callback ran (the console script's early
#: handshake, :mod:`._preconnect`): the callback uses that choice rather than choosing again.
CHOSEN_SERVER = "flowxfer.server"


@dataclass(frozen=True)
class ServerChoice:
    base_url: str
    #: Said once when the server came from the last login rather than an option or a variable.
    note: str | None = None


def choose_server(given: str | None, config_dir: Path | None) -> ServerChoice:
    """``given`` (``--base-url`` or ``FLOW_API_URL``, click reads both), else the last login, else the default."""
    if given:
        return ServerChoice(given)
    try:
        last = CredentialStore(config_dir or default_config_dir()).last_server()
    except FlowxferError:
        last = None  # an unreadable credentials file is reported when a command needs it
    if last:
        return ServerChoice(
            last, f"using {last}, the server you last logged in to (--base-url or FLOW_API_URL choose another)"
        )
    return ServerChoice(DEFAULT_BASE_URL)


def choose_token(
    token: str | None,
    token_file: Path | None,
    base_url: str,
    config_dir: Path | None,
    official_file: Path | None,
) -> str | None:
    """The token to send instead of a saved login, or None to use the saved login (see the module doc).

    :param official_file: the official CLI's token file (:func:`official_token_file`), or None to read none.

    :raises UsageError: a token file named by ``--token-file``/``FLOW_TOKEN_FILE`` is missing or empty.
    """
    if token:
        return token
    if token_file is not None:
        _warn_if_readable(token_file)
        return read_token_file(token_file)
    try:
        saved = CredentialStore(config_dir or default_config_dir()).load(base_url)
    except FlowxferError:
        return None  # the saved login's problem is the one to report
    if saved is not None or official_file is None or not official_file.is_file():
        return None
    try:
        found = read_token_file(official_file)
    except FlowxferError:
        return None  # the official CLI ignores an empty default file too
    _warn_if_readable(official_file)
    return found


def _warn_if_readable(path: Path) -> None:
    if readable_by_others(path):
        print(
            f"flowxfer: warning: token file {path} is readable by others; run: chmod 600 {path}",
            file=sys.stderr,
            flush=True,
        )

"""Where a journal lives: a file path (SQLite) or a database URL (PostgreSQL).

A ``--journal`` value that looks like a URL (``scheme:`` first) is parsed as
one; anything else is a path. SQLite URLs follow SQLAlchemy's convention:
``sqlite:///relative/x.db`` is the relative path ``relative/x.db`` and
``sqlite:////abs/x.db`` the absolute ``/abs/x.db``. ``postgresql://`` and
``postgres://`` name a PostgreSQL database (libpq's URL syntax). A URL's
password never appears in a message or a ``repr``: :attr:`JournalLocation.display`
shows it as ``***``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ._errors import JournalLocationError

__all__ = ["JournalLocation", "default_journal_path", "mask_password", "parse_journal_location"]

Backend = Literal["sqlite", "postgresql"]

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
_POSTGRES_SCHEMES = ("postgresql", "postgres")


def default_journal_path() -> Path:
    """``$XDG_STATE_HOME/flowxfer/journal.db`` (``~/.local/state/...`` by default)."""
    state_home = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(state_home) / "flowxfer" / "journal.db"


@dataclass(frozen=True, slots=True)
class JournalLocation:
    """A parsed journal location: ``path`` for SQLite, ``url`` for PostgreSQL.

    ``url`` holds the password, so it is left out of the ``repr``; show
    :attr:`display` (or ``str()``) to people.
    """

    backend: Backend
    path: Path | None = None
    url: str | None = field(default=None, repr=False)
    display: str = ""

    def __str__(self) -> str:
        return self.display


def mask_password(url: str) -> str:
    """``url`` with its password (in the user part or a ``password=`` parameter) replaced by ``***``."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, _, hostinfo = netloc.rpartition("@")
            if ":" in userinfo:
                netloc = f"{userinfo.split(':', 1)[0]}:***@{hostinfo}"
        query = parts.query
        if query:
            pairs = parse_qsl(query, keep_blank_values=True)
            query = urlencode([(k, "***" if k.lower() == "password" else v) for k, v in pairs], safe="*")
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    except ValueError:
        # Unparseable: show only the scheme rather than risk showing a secret.
        match = _SCHEME.match(url)
        return f"{match.group(1)}://***" if match else "***"


def parse_journal_location(value: Path | str | JournalLocation | None) -> JournalLocation:
    """Where the journal named by ``value`` lives (``None``: the default path).

    A :class:`~pathlib.Path` is always a path; a string is a URL when it
    starts with ``scheme:``, a path otherwise.

    :raises JournalLocationError: a URL of another scheme, or a malformed ``sqlite:`` URL.
    """
    if isinstance(value, JournalLocation):
        return value
    if value is None:
        value = default_journal_path()
    if isinstance(value, Path):
        return JournalLocation("sqlite", path=value, display=str(value))
    match = _SCHEME.match(value)
    if match is None:
        return JournalLocation("sqlite", path=Path(value), display=value)
    scheme = match.group(1).lower()
    if scheme == "sqlite":
        rest = value[match.end() :]
        if not rest.startswith("///") or len(rest) == 3:
            raise JournalLocationError(
                f"journal URL {mask_password(value)!r}: write sqlite:///relative/path.db or sqlite:////absolute/path.db"
            )
        path = Path(rest[3:])
        return JournalLocation("sqlite", path=path, display=str(path))
    if scheme in _POSTGRES_SCHEMES:
        value = scheme + value[match.end(1) :]  # libpq knows only the lower-case schemes
        masked = mask_password(value)
        try:
            parts = urlsplit(value)
        except ValueError as exc:  # urllib's own checks of the host part ("Invalid IPv6 URL", ...)
            raise JournalLocationError(f"journal URL {masked!r}: {exc}") from None
        if not parts.netloc and "host=" not in value:
            raise JournalLocationError(f"journal URL {masked!r} names no server: postgresql://USER@HOST[:PORT]/DB")
        if "," not in parts.netloc:  # libpq's several hosts (h1:5432,h2:5432) are its to check
            try:
                _ = parts.port  # urllib checks it: a number, 0-65535
            except ValueError:
                raise JournalLocationError(
                    f"journal URL {masked!r}: the port must be a number from 1 to 65535"
                ) from None
        return JournalLocation("postgresql", url=value, display=masked)
    raise JournalLocationError(
        f"journal URL {mask_password(value)!r}: unknown scheme {scheme!r} "
        "(a path, sqlite:///path.db or postgresql://USER@HOST/DB)"
    )

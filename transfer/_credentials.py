"""Saved credentials: one mode-0600 JSON file per config directory.

Tokens are secrets: they live only in this file (never in the journal, logs or
output), which is written atomically with mode 0600 and refused when anyone
but its owner may read it.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import stat
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ._errors import AuthError, UsageError

CREDENTIALS_FILE = "credentials.json"


def default_config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "flowxfer"


@dataclass
class Tokens:
    """What a login gives: an access token and, usually, a refresh token."""

    username: str
    access_token: str
    refresh_token: str | None = None

    def __repr__(self) -> str:  # never print a secret by accident
        return f"Tokens(username={self.username!r}, access_token=<hidden>, refresh_token=<hidden>)"


def unverified_claims(token: str) -> dict[str, Any] | None:
    """A JWT's payload, its signature not checked; None when ``token`` is not a JWT.

    The client reads only when to refresh and whose token it is; the server
    checks the signature. Decoded here, with the standard library, because
    importing PyJWT cost every command 10-20 ms of start-up (issue 20).
    """
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except ValueError:  # not base64, not UTF-8, not JSON: all ValueErrors
        return None
    return claims if isinstance(claims, dict) else None


@functools.lru_cache(maxsize=4)
def token_expiry(token: str) -> tuple[float | None, float | None]:
    """``(exp, iat)`` from a JWT's payload (:func:`unverified_claims`).

    A token that is not a JWT gives ``(None, None)``. Asked before every
    request, so remembered for the few tokens a process sees (decoding was
    2% of the client's time over a folder of small files).
    """
    claims = unverified_claims(token) or {}
    exp, iat = claims.get("exp"), claims.get("iat")
    return (float(exp) if isinstance(exp, int | float) else None, float(iat) if isinstance(iat, int | float) else None)


class CredentialStore:
    """Tokens per server URL in ``<config_dir>/credentials.json``."""

    def __init__(self, config_dir: Path) -> None:
        self.config_dir = config_dir
        self.path = config_dir / CREDENTIALS_FILE

    def _load_all(self) -> dict[str, dict[str, str | None]]:
        servers = self._load_document().get("servers", {})
        return servers if isinstance(servers, dict) else {}

    def _load_document(self) -> dict[str, object]:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise UsageError(f"cannot read credentials {self.path}: {exc.strerror}") from exc
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise AuthError(
                f"refusing credentials file {self.path}: its mode is {stat.S_IMODE(st.st_mode):04o}, "
                f"readable by others; run: chmod 600 {self.path} (or log in again)"
            )
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise AuthError(f"credentials file {self.path} is unreadable ({exc}); log in again") from exc
        return data if isinstance(data, dict) else {}

    def servers(self) -> list[str]:
        """The servers with a saved login, the one logged in to last first."""
        last = self.last_server()
        known = sorted(
            server
            for server, entry in self._load_all().items()
            if isinstance(entry, dict) and entry.get("access_token")
        )
        return sorted(known, key=lambda server: server != last)

    def last_server(self) -> str | None:
        """The server ``login`` saved tokens for last, while that login is still saved."""
        document = self._load_document()
        last = document.get("last")
        servers = document.get("servers")
        return last if isinstance(last, str) and isinstance(servers, dict) and last in servers else None

    def load(self, server: str) -> Tokens | None:
        entry = self._load_all().get(server)
        if not isinstance(entry, dict) or not entry.get("access_token"):
            return None
        return Tokens(
            username=str(entry.get("username") or ""),
            access_token=str(entry["access_token"]),
            refresh_token=str(entry["refresh_token"]) if entry.get("refresh_token") else None,
        )

    def save(self, server: str, tokens: Tokens) -> None:
        servers = self._load_all()
        servers[server] = asdict(tokens)
        self._write({"servers": servers, "last": server})

    def forget(self, server: str) -> bool:
        servers = self._load_all()
        if server not in servers:
            return False
        del servers[server]
        last = self.last_server()
        self._write({"servers": servers, "last": last if last in servers else None})
        return True

    def _write(self, document: dict[str, object]) -> None:
        try:
            self.config_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd, tmp = tempfile.mkstemp(dir=self.config_dir, prefix=".credentials.", suffix=".tmp")
            try:
                os.fchmod(fd, 0o600)
                with os.fdopen(fd, "w", encoding="utf-8") as handle:
                    json.dump(document, handle, indent=1)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(tmp, self.path)
            except BaseException:
                if os.path.exists(tmp):
                    os.unlink(tmp)
                raise
        except OSError as exc:
            raise UsageError(f"cannot save credentials in {self.config_dir}: {exc.strerror}") from exc


class NotLoggedIn(AuthError):
    """No login for the server asked; the message names it, the servers logged in to, and the fix."""

    def __init__(self, server: str, others: list[str]) -> None:
        self.server, self.others = server, others
        super().__init__(self.explain())

    def explain(self, command: str = "COMMAND") -> str:
        fix = f"log in there with: flowxfer --base-url {self.server} login"
        if not self.others:
            return f"not logged in to {self.server}; {fix} (or give an API key with --token-file)"
        other = self.others[0]
        return (
            f"not logged in to {self.server} (logged in to {', '.join(self.others)}); to use {other}: "
            f"flowxfer --base-url {other} {command} (or FLOW_API_URL={other}); or {fix}"
        )


def not_logged_in(store: CredentialStore | None, server: str) -> NotLoggedIn:
    """The error for a server without a login (see :class:`NotLoggedIn`)."""
    return NotLoggedIn(server, [known for known in (store.servers() if store is not None else []) if known != server])


def read_token_file(path: Path) -> str:
    """The API key or access token in ``path`` (its first line), as the official CLI reads it.

    :raises UsageError: the file is missing, unreadable or empty.
    """
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise UsageError(f"token file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read token file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    token = text.splitlines()[0].strip() if text else ""
    if not token:
        raise UsageError(f"token file {path} is empty")
    return token


def readable_by_others(path: Path) -> bool:
    try:
        return bool(path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO))
    except OSError:
        return False

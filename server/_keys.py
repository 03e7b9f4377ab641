"""Long-lived API keys, as hosted Flow issues them for scripts and agents.

Hosted Flow hands out API keys in its web app (Settings, API Keys) and takes
them as ``Authorization: Bearer KEY``, in place of a 5-minute access token.
Ours are issued offline by ``flowxfer admin token add``. A key reads
``fxk_<id>_<secret>``: the id finds the row, and only a SHA-256 of the
secret is stored (the secret is 256 random bits, so a fast hash is as safe
as a slow one and costs nothing per request). The whole key is shown once,
at creation, and never logged. A key that is unknown, revoked, expired or
whose user was removed is refused with 401, like a bad token.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass

from ._auth import TokenError
from ._store import Store

PREFIX = "fxk_"
_KEY_RE = re.compile(r"^fxk_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")
#: Longest key name (a label for the owner: "laptop", "AI agent").
MAX_NAME = 100


def is_api_key(token: str) -> bool:
    """Whether a bearer token is meant as an API key (rather than a JWT)."""
    return token.startswith(PREFIX)


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


@dataclass(frozen=True)
class NewKey:
    id: str
    #: the whole key, to show once
    key: str


def new_key() -> tuple[NewKey, bytes]:
    """A fresh key and the hash to store for it."""
    key_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    return NewKey(key_id, f"{PREFIX}{key_id}_{secret}"), _digest(secret)


def verify_api_key(store: Store, token: str, now: float | None = None) -> str:
    """The user an API key stands for (blocking: run it in the store's thread).

    :raises TokenError: for a malformed, unknown, revoked or expired key.
    """
    match = _KEY_RE.match(token)
    if match is None:
        raise TokenError("malformed API key")
    key_id, secret = match.groups()
    found = store.api_key(key_id)
    # Compare against a hash even for an unknown id, so timing tells nothing.
    expected = found[1] if found is not None else _digest("")
    if not hmac.compare_digest(_digest(secret), expected) or found is None:
        raise TokenError("unknown or revoked API key")
    owner, _, expires = found
    if expires is not None and expires <= (time.time() if now is None else now):
        raise TokenError("API key expired")
    return owner

"""Passwords and tokens: scrypt hashes, HS256 JWTs, the signing secret.

Passwords are hashed with scrypt and a per-user salt and compared in
constant time; they are never logged. Tokens are PyJWT HS256 with the
algorithm pinned (so ``alg=none`` and RS/HS confusion are refused), ``exp``
required, and a ``type`` claim that keeps a refresh token from being used as
an access token and vice versa.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import os
import re
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

import jwt

SECRET_NAME = "jwt-secret.key"
_ALGORITHM = "HS256"
_USERNAME_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
MAX_PASSWORD_BYTES = 1024


def username_problem(name: str) -> str | None:
    """Why ``name`` cannot be a username, or None."""
    if not _USERNAME_RE.match(name):
        return "usernames are 1-64 characters of letters, digits, '_', '.', '@' and '-'"
    return None


def password_problem(password: str) -> str | None:
    if not password:
        return "empty password"
    if len(password.encode()) > MAX_PASSWORD_BYTES:
        return f"password longer than {MAX_PASSWORD_BYTES} bytes"
    return None


def hash_password(password: str, salt: bytes | None = None, n: int = 2**14) -> tuple[bytes, bytes]:
    """``(salt, hash)`` for ``password`` (CPU-bound: call it in a thread)."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=8, p=1, maxmem=128 * 1024 * 1024, dklen=32)
    return salt, digest


def check_password(password: str, salt: bytes, expected: bytes, n: int) -> bool:
    """Constant-time comparison of ``password`` against a stored hash."""
    _, digest = hash_password(password, salt, n)
    return hmac.compare_digest(digest, expected)


# A fixed salt/hash used when the user does not exist, so the answer takes as
# long for an unknown user as for a wrong password (no user enumeration).
DUMMY_SALT = b"flowxfer-dummy-salt"


def load_or_create_secret(root: Path) -> bytes:
    """The signing secret, generated once (mode 0600) and reused across restarts."""
    path = Path(root) / SECRET_NAME
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        secret = path.read_bytes()
        if len(secret) < 32:
            raise ValueError(f"{path} is truncated; delete it to issue new tokens") from None
        os.chmod(path, 0o600)
        return secret
    secret = secrets.token_bytes(64)
    try:
        os.write(fd, secret)
        os.fsync(fd)
    finally:
        os.close(fd)
    return secret


#: Tokens remembered as verified (:attr:`Tokens._verified`) before the memory is cleared.
_VERIFIED_MAX = 4096


class TokenError(Exception):
    """A token that is missing, forged, expired or of the wrong type."""


@dataclass(frozen=True)
class Tokens:
    """Issues and checks access and refresh tokens with one secret."""

    secret: bytes
    access_ttl: float
    refresh_ttl: float
    #: token -> (subject, kind, exp) of tokens whose signature was checked. A client sends the
    #: same token with every request; checking its HMAC each time was a tenth of the event
    #: loop's work under a folder of small uploads. Bounded; expiry is still checked on every use.
    _verified: dict[str, tuple[str, str, float]] = field(default_factory=dict, compare=False, repr=False)

    def issue(self, username: str, kind: str) -> str:
        now = time.time()
        ttl = self.access_ttl if kind == "access" else self.refresh_ttl
        payload = {
            "sub": username,
            "type": kind,
            "iat": int(now),
            # A whole second, rounded up: JWT's NumericDate, and PyJWT judges int(exp) <= now expired,
            # so a fractional exp (now + 1 = 100.9 + 1) lived as little as 0.1 s of a 1 s TTL.
            "exp": math.ceil(now + ttl),
            "jti": secrets.token_hex(8),
        }
        return jwt.encode(payload, self.secret, algorithm=_ALGORITHM)

    def verify(self, token: str, kind: str) -> str:
        """The username inside a valid token of ``kind``.

        :raises TokenError: for anything but a valid, unexpired HS256 token of that kind.
        """
        known = self._verified.get(token)
        if known is not None:
            known_subject, known_kind, known_exp = known
            if known_exp <= time.time():  # as PyJWT judges it (no leeway)
                self._verified.pop(token, None)
                raise TokenError("token expired")
            if known_kind != kind:
                raise TokenError(f"not an {kind} token")
            return known_subject
        if not token or len(token) > 4096:
            raise TokenError("missing or oversized token")
        if not token.isascii():  # a JWT is base64url and dots; PyJWT fails on others with UnicodeEncodeError
            raise TokenError("invalid token")
        try:
            payload = jwt.decode(
                token, self.secret, algorithms=[_ALGORITHM], options={"require": ["exp", "sub", "type"]}
            )
        except jwt.ExpiredSignatureError:
            raise TokenError("token expired") from None
        except jwt.PyJWTError:
            raise TokenError("invalid token") from None
        if payload.get("type") != kind:
            raise TokenError(f"not an {kind} token")
        subject = payload.get("sub")
        if not isinstance(subject, str) or username_problem(subject):
            raise TokenError("invalid token")
        exp = payload.get("exp")
        if isinstance(exp, int | float) and not isinstance(exp, bool):
            if len(self._verified) >= _VERIFIED_MAX:
                self._verified.clear()
            # PyJWT judges int(exp) <= now expired (an issued exp is a float): remember it so.
            self._verified[token] = (subject, kind, float(int(exp)))
        return subject

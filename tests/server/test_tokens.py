"""The server's token checks, including the memory of tokens already verified."""

from __future__ import annotations

import time

import jwt
import pytest

from flowxfer.server._auth import _VERIFIED_MAX, TokenError, Tokens

SECRET = b"s" * 64


def test_a_remembered_token_expires_when_pyjwt_would_expire_it() -> None:
    # PyJWT compares int(exp) with the clock, and an issued exp has a fraction: wait for that second.
    tokens = Tokens(SECRET, access_ttl=1.5, refresh_ttl=60)
    token = tokens.issue("alice", "access")
    assert tokens.verify(token, "access") == "alice"
    assert tokens.verify(token, "access") == "alice"  # from memory
    expires = int(jwt.decode(token, options={"verify_signature": False})["exp"])
    time.sleep(max(0.0, expires - time.time() - 0.2))
    if time.time() < expires:
        assert tokens.verify(token, "access") == "alice"  # remembered, and PyJWT would agree
        assert Tokens(SECRET, 1.5, 60).verify(token, "access") == "alice"
    time.sleep(max(0.0, expires - time.time() + 0.05))
    with pytest.raises(TokenError, match="expired"):
        tokens.verify(token, "access")
    with pytest.raises(TokenError, match="expired"):
        Tokens(SECRET, 1.5, 60).verify(token, "access")  # a fresh memory (PyJWT alone) says the same


def test_a_remembered_token_keeps_its_kind() -> None:
    tokens = Tokens(SECRET, access_ttl=60, refresh_ttl=60)
    refresh = tokens.issue("alice", "refresh")
    assert tokens.verify(refresh, "refresh") == "alice"
    with pytest.raises(TokenError, match="not an access token"):
        tokens.verify(refresh, "access")


def test_only_the_exact_verified_token_is_remembered() -> None:
    tokens = Tokens(SECRET, access_ttl=60, refresh_ttl=60)
    token = tokens.issue("alice", "access")
    assert tokens.verify(token, "access") == "alice"
    claims = jwt.decode(token, SECRET, algorithms=["HS256"])
    forged = jwt.encode({**claims, "sub": "mallory"}, b"x" * 64, algorithm="HS256")
    with pytest.raises(TokenError, match="invalid"):
        tokens.verify(forged, "access")
    tampered = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    with pytest.raises(TokenError):
        tokens.verify(tampered, "access")


def test_the_memory_is_bounded() -> None:
    tokens = Tokens(SECRET, access_ttl=60, refresh_ttl=60)
    for index in range(_VERIFIED_MAX + 10):
        tokens.verify(tokens.issue(f"user{index % 7}", "access"), "access")
    assert len(tokens._verified) <= _VERIFIED_MAX

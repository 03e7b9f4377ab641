"""Credentials at rest, forged tokens, password checks, and rate limits that follow the user.

The server checks run against the in-process server with raw HTTP; the
credentials-file checks run the real CLI, as a user would meet them.
"""

from __future__ import annotations

import base64
import inspect
import json
import os
import stat
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import jwt
import pytest

from flowxfer.server import _app as server_app
from flowxfer.server import _auth
from tests.cli.conftest import Cli
from tests.support.server import RunningServer, login, running_server


def _b64(data: dict[str, object] | bytes) -> str:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _claims(kind: str = "access", user: str = "alice") -> dict[str, object]:
    now = int(time.time())
    return {"sub": user, "type": kind, "iat": now, "exp": now + 300, "jti": "x"}


#: A public key as an attacker would find it published: the classic RS256 -> HS256 confusion signs
#: an HS256 token with the PEM text as the HMAC secret.
PUBLIC_KEY_PEM = (
    b"-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEf1a0e2Gv2Q2Lw0m3f4o6hPp0u7cV\n"
    b"QvM3m8C9b2yJH1oW0i5b7cDqK1JY7Yl8rQX3tqQ4c2gO5a8VbL1qkzv3xA==\n-----END PUBLIC KEY-----\n"
)


def _forged(secret: bytes) -> dict[str, str]:
    """Tokens nobody should accept, by what is wrong with them."""
    claims = _claims()
    hmac_pem = jwt.api_jws.PyJWS()
    hmac_pem._algorithms["HS256"].prepare_key = lambda key: key  # PyJWT refuses PEM keys for HMAC on purpose
    return {
        "alg none": f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}.",
        "alg None, signature kept": f"{_b64({'alg': 'None', 'typ': 'JWT'})}.{_b64(claims)}.c2ln",
        "HS256 with a public key as secret": hmac_pem.encode(
            json.dumps(claims).encode(), PUBLIC_KEY_PEM, algorithm="HS256", headers={"typ": "JWT"}
        ),
        "RS256 header, HMAC signature": (
            lambda h, p: (
                f"{h}.{p}."
                + jwt.api_jws.base64url_encode(
                    __import__("hmac").new(secret, f"{h}.{p}".encode(), "sha256").digest()
                ).decode()
            )
        )(_b64({"alg": "RS256", "typ": "JWT"}), _b64(claims)),
        "HS512 with the real secret": jwt.encode(claims, secret, algorithm="HS512"),
        "HS256 with another secret": jwt.encode(claims, b"x" * 64, algorithm="HS256"),
        "refresh token as access": jwt.encode(_claims("refresh"), secret, algorithm="HS256"),
        "expired": jwt.encode({**claims, "exp": int(time.time()) - 5}, secret, algorithm="HS256"),
        "no exp": jwt.encode({k: v for k, v in claims.items() if k != "exp"}, secret, algorithm="HS256"),
        "bad subject": jwt.encode({**claims, "sub": "../alice"}, secret, algorithm="HS256"),
        "payload swapped": (lambda t: t.split(".")[0] + "." + _b64(_claims(user="bob")) + "." + t.split(".")[2])(
            jwt.encode(claims, secret, algorithm="HS256")
        ),
        "garbage": "eyJhbGciOi.not.a.token",
    }


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as http:
        yield http


async def test_forged_tokens_refused(server: RunningServer, session: aiohttp.ClientSession) -> None:
    secret = (server.root / _auth.SECRET_NAME).read_bytes()
    good = jwt.encode(_claims(), secret, algorithm="HS256")
    answers = {}
    for what, token in {"the real thing (control)": good, **_forged(secret)}.items():
        for path, params in (("/data/owned", {}), ("/downloads/1/x", {"token": token})):
            headers = {} if params else {"Authorization": f"Bearer {token}"}
            async with session.get(server.base_url + path, headers=headers, params=params) as response:
                answers[(what, path)] = response.status
    assert answers.pop(("the real thing (control)", "/data/owned")) == 200
    assert answers.pop(("the real thing (control)", "/downloads/1/x")) == 404
    assert set(answers.values()) == {401}, {k: v for k, v in answers.items() if v != 401}
    # A refresh cookie must be a refresh token, and a forged one is refused the same way.
    cookies = {"access as refresh": good, **_forged(secret)}
    del cookies["refresh token as access"]  # a genuine refresh token: that one is right here
    for what, token in cookies.items():
        async with session.get(server.base_url + "/token", headers={"Cookie": f"flow_refresh_token={token}"}) as r:
            assert r.status == 401, what


def test_passwords_compared_in_constant_time() -> None:
    """scrypt hashes compared with hmac.compare_digest, and unknown users cost the same scrypt.

    A timing measurement would be flaky on a shared machine: the implementation is checked instead.
    """
    check = inspect.getsource(_auth.check_password)
    assert "hmac.compare_digest" in check and "==" not in check.split('"""')[-1]
    assert "hashlib.scrypt" in inspect.getsource(_auth.hash_password)
    handler = inspect.getsource(server_app.login)
    assert "DUMMY_SALT" in handler and "hash_password" in handler
    salt, digest = _auth.hash_password("pw", n=2**10)
    assert _auth.check_password("pw", salt, digest, 2**10)
    assert not _auth.check_password("pW", salt, digest, 2**10)
    assert digest != b"pw" and len(salt) == 16


async def test_credentials_file_is_0600_and_refused_when_wider(server: RunningServer, tmp_path: Path) -> None:
    cli = Cli(server.base_url, tmp_path / "home")
    previous = os.umask(0o022)  # the usual umask: the file must be 0600 by our doing, not by the umask's
    try:
        await cli.login("alice", server.users["alice"])
    finally:
        os.umask(previous)
    credentials = tmp_path / "home" / "config" / "credentials.json"
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
    assert stat.S_IMODE(credentials.parent.stat().st_mode) & 0o077 == 0
    assert not [p for p in credentials.parent.iterdir() if p.name != "credentials.json"]  # no temp file left
    assert (await cli.run("jobs")).code == 0
    assert (await cli.run("--json", "download", "--owned", "-o", str(tmp_path / "out"))).code == 0

    for mode in (0o640, 0o604, 0o644, 0o660):
        credentials.chmod(mode)
        refused = await cli.run("download", "--owned", "-o", str(tmp_path / "out"))
        assert refused.code == 3, (oct(mode), refused)
        assert f"{mode:04o}" in refused.stderr and "chmod 600" in refused.stderr
        assert "refusing credentials file" in refused.stderr
    # Logging in again writes a fresh file of mode 0600 (and the warning goes away).
    credentials.chmod(0o600)
    await cli.login("alice", server.users["alice"])
    credentials.chmod(0o644)
    again = await cli.run("login", "-u", "alice", "--password-stdin", stdin=server.users["alice"] + "\n")
    assert again.code == 3 and "refusing credentials file" in again.stderr  # it will not overwrite blindly either
    credentials.unlink()
    await cli.login("alice", server.users["alice"])
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o600


async def test_rate_limits_are_per_user_and_survive_refreshes(tmp_path: Path) -> None:
    async with running_server(tmp_path / "root", rate_limits="api=6/60s") as srv, aiohttp.ClientSession() as http:

        async def owned(token: str) -> int:
            async with http.get(f"{srv.base_url}/data/owned", headers={"Authorization": f"Bearer {token}"}) as r:
                return r.status

        alice = await login(http, srv.base_url, "alice", srv.users["alice"])
        statuses = [await owned(alice) for _ in range(8)]
        assert statuses[:6] == [200] * 6 and statuses[6:] == [429, 429], statuses
        # bob's budget is his own.
        bob = await login(http, srv.base_url, "bob", srv.users["bob"])
        assert await owned(bob) == 200
        # A new access token (refresh, or a fresh login) is the same user: still limited.
        async with http.post(f"{srv.base_url}/login", json={"username": "alice", "password": srv.users["alice"]}) as r:
            assert r.status == 200
            relogged = (await r.json())["token"]
            refresh = r.cookies["flow_refresh_token"].value
        async with http.get(f"{srv.base_url}/token", headers={"Cookie": f"flow_refresh_token={refresh}"}) as r:
            assert r.status == 200
            refreshed = (await r.json())["token"]
        assert relogged != alice and refreshed != alice
        assert await owned(relogged) == 429
        assert await owned(refreshed) == 429
        async with http.get(f"{srv.base_url}/data/owned", headers={"Authorization": f"Bearer {refreshed}"}) as r:
            assert int(r.headers["Retry-After"]) >= 1 and r.headers["X-RateLimit-Remaining"] == "0"
        assert await owned(bob) == 200

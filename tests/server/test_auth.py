"""Login, refresh, and the tokens the server must refuse."""

from __future__ import annotations

import base64
import json
import stat
import time
from pathlib import Path

import aiohttp
import jwt

from flowxfer.protocol import REFRESH_COOKIE
from flowxfer.server._auth import SECRET_NAME
from tests.server.conftest import Api
from tests.support.server import RunningServer, running_server


def _b64(obj: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def _secret(server: RunningServer) -> bytes:
    return (server.root / SECRET_NAME).read_bytes()


async def test_login_refresh_and_cookie(api: Api, server: RunningServer) -> None:
    login = await api.call("POST", "/login", json={"username": "alice", "password": server.users["alice"]})
    assert login.status == 200
    body = login.json()
    cookie = login.headers["Set-Cookie"]
    assert cookie.startswith(f"{REFRESH_COOKIE}=") and "HttpOnly" in cookie
    assert body["refresh_token"] in cookie
    claims = jwt.decode(body["token"], options={"verify_signature": False})
    assert claims["sub"] == "alice" and claims["type"] == "access" and 299 <= claims["exp"] - time.time() <= 301
    refreshed = await api.call("GET", "/token", headers={"Cookie": f"{REFRESH_COOKIE}={body['refresh_token']}"})
    assert refreshed.status == 200
    new = refreshed.json()["token"]
    assert (await api.call("GET", "/data/owned", headers={"Authorization": f"Bearer {new}"})).status == 200
    assert (await api.call("GET", "/token")).status == 401
    # An access token is not a refresh token, and vice versa.
    assert (await api.call("GET", "/token", headers={"Cookie": f"{REFRESH_COOKIE}={body['token']}"})).status == 401
    wrong = await api.call("GET", "/data/owned", headers={"Authorization": f"Bearer {body['refresh_token']}"})
    assert wrong.status == 401 and wrong.json()["error"]


async def test_bad_credentials(api: Api) -> None:
    for body in (
        {"username": "alice", "password": "nope"},
        {"username": "ghost", "password": "x"},
        {"username": "alice"},
        {"password": "x"},
        {"username": 1, "password": 2},
        {},
    ):
        answer = await api.call("POST", "/login", json=body)
        assert answer.status == 400 and answer.json()["error"], body
        assert "Set-Cookie" not in answer.headers


async def test_refused_tokens(api: Api, server: RunningServer) -> None:
    secret = _secret(server)
    now = time.time()
    good = {"sub": "alice", "type": "access", "iat": int(now), "exp": now + 60}
    forged = jwt.encode(good, b"not the secret" * 4, algorithm="HS256")
    expired = jwt.encode({**good, "exp": now - 1}, secret, algorithm="HS256")
    no_exp = jwt.encode({k: v for k, v in good.items() if k != "exp"}, secret, algorithm="HS256")
    alg_none = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(good)}."
    hs512 = jwt.encode(good, secret, algorithm="HS512")
    no_type = jwt.encode({k: v for k, v in good.items() if k != "type"}, secret, algorithm="HS256")
    bad_sub = jwt.encode({**good, "sub": "../x"}, secret, algorithm="HS256")
    valid = jwt.encode(good, secret, algorithm="HS256")
    assert (await api.call("GET", "/data/owned", headers={"Authorization": f"Bearer {valid}"})).status == 200
    for token in (forged, expired, no_exp, alg_none, hs512, no_type, bad_sub, "garbage", "a.b.c", "x" * 5000):
        for headers in ({"Authorization": f"Bearer {token}"},):
            answer = await api.call("GET", "/data/owned", headers=headers)
            assert answer.status == 401 and answer.json()["error"], token[:40]
        cookie = await api.call("GET", "/token", headers={"Cookie": f"{REFRESH_COOKIE}={token}"})
        assert cookie.status == 401
    for header in ("Basic YWxpY2U6eA==", "Bearer", "Bearer "):
        assert (await api.call("GET", "/data/owned", headers={"Authorization": header})).status == 401


async def test_expired_access_token_then_refresh(server_root: Path, http: aiohttp.ClientSession) -> None:
    async with running_server(server_root, access_ttl=1, refresh_ttl=3) as srv:
        api = Api(http, srv.base_url, srv.users)
        login = (await api.call("POST", "/login", json={"username": "bob", "password": srv.users["bob"]})).json()
        import asyncio

        await asyncio.sleep(2.1)  # exp is a whole second rounded up: a 1 s token lives 1-2 s
        stale = await api.call("GET", "/data/owned", headers={"Authorization": f"Bearer {login['token']}"})
        assert stale.status == 401 and "expired" in stale.json()["error"]
        fresh = await api.call("GET", "/token", headers={"Cookie": f"{REFRESH_COOKIE}={login['refresh_token']}"})
        assert fresh.status == 200
        await asyncio.sleep(2.0)
        late = await api.call("GET", "/token", headers={"Cookie": f"{REFRESH_COOKIE}={login['refresh_token']}"})
        assert late.status == 401


async def test_secret_and_passwords_at_rest(server: RunningServer, api: Api) -> None:
    await api.token("alice")
    assert stat.S_IMODE((server.root / SECRET_NAME).stat().st_mode) == 0o600
    for path in server.root.glob("flowxfer-server.db*"):
        assert server.users["alice"].encode() not in path.read_bytes()


async def test_secret_survives_restart(server_root: Path, http: aiohttp.ClientSession) -> None:
    async with running_server(server_root) as srv:
        token = await Api(http, srv.base_url, srv.users).token("carol")
    async with running_server(server_root) as srv:
        api = Api(http, srv.base_url, srv.users)
        assert (await api.call("GET", "/data/owned", headers={"Authorization": f"Bearer {token}"})).status == 200


async def test_no_extensions_mode(server_root: Path, http: aiohttp.ClientSession) -> None:
    async with running_server(server_root, extensions=False) as srv:
        api = Api(http, srv.base_url, srv.users)
        login = (await api.call("POST", "/login", json={"username": "alice", "password": srv.users["alice"]})).json()
        assert set(login) == {"token"}
        first = await api.chunk("alice", b"x" * 10, extra={"checksum": "xxh3-128:" + "0" * 32})
        assert first.status == 200  # checksum fields are ignored, as hosted Flow would
        data_id = first.json()["id"]
        assert (await api.call("GET", f"/upload/{data_id}", "alice")).status in (404, 405)
        done = await api.chunk(
            "alice", b"y", offset=10, data_id=data_id, is_last=True, extra={"file_checksum": "bogus"}
        )
        assert done.status == 200 and "checksum" not in done.json()
        meta = (await api.call("GET", f"/data/{data_id}", "alice")).json()
        assert "checksum" not in meta
        got = await api.call("GET", f"/downloads/{data_id}/f.bin", "alice")
        assert got.status == 200 and "X-Checksum" not in got.headers and got.headers["ETag"]
        for path in ("/capabilities", "/openapi.json", f"/data/{data_id}/chunks", f"/data/{data_id}/files"):
            for user in ("alice", None):
                answer = await api.call("GET", path, user)
                assert answer.status == 404 and answer.json()["error"], path


async def test_capabilities(api: Api, server: RunningServer) -> None:
    caps = (await api.call("GET", "/capabilities")).json()
    assert caps["server"] == "flowxfer" and caps["checksums"] == ["xxh3-128"]
    assert caps["upload_status"] is True and caps["chunk_maps"] is True
    assert caps["max_chunk_size"] == server.config.max_chunk_size

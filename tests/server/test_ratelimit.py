"""Rate limits by class, with short windows: headers, 429 + Retry-After, refill, what counts where."""

from __future__ import annotations

import asyncio
import math
import time
from pathlib import Path

import aiohttp

from tests.server.conftest import Api
from tests.support.server import running_server


async def test_download_window_hit_and_refilled(server_root: Path, http: aiohttp.ClientSession) -> None:
    async with running_server(server_root, rate_limits="download=3/2s,api=1000") as srv:
        api = Api(http, srv.base_url, srv.users)
        data_id = await api.upload("alice", b"bytes", "d.txt")
        url = f"/downloads/{data_id}/d.txt"
        started = time.time()
        answers = [
            await api.call("GET", url, "alice", headers={"Range": "bytes=0-1"} if i % 2 else None) for i in range(3)
        ]
        after = time.time()
        assert [a.status for a in answers] == [200, 206, 200]
        assert [a.headers["X-RateLimit-Remaining"] for a in answers] == ["2", "1", "0"]
        assert {a.headers["X-RateLimit-Limit"] for a in answers} == {"3"}
        reset = int(answers[0].headers["X-RateLimit-Reset"])
        # The window opens at the first download (between started and after) and lasts 2 s,
        # announced as the whole second it ends in.
        assert started + 2 <= reset <= math.ceil(after) + 2
        head = await api.call("HEAD", url, "alice")  # HEAD counts against api, not download
        assert head.status == 200 and head.headers["X-RateLimit-Limit"] == "1000"
        refused = await api.call("GET", url, "alice")
        assert refused.status == 429 and refused.json()["error"]
        assert 1 <= int(refused.headers["Retry-After"]) <= 2
        assert refused.headers["X-RateLimit-Remaining"] == "0"
        # Other users have their own budget.
        assert (await api.call("GET", url, "bob")).status == 404
        await asyncio.sleep(max(0.0, reset - time.time()) + 0.1)
        again = await api.call("GET", url, "alice")
        assert again.status == 200 and again.headers["X-RateLimit-Remaining"] == "2"


async def test_uploads_count_new_uploads_only(server_root: Path, http: aiohttp.ClientSession) -> None:
    async with running_server(server_root, rate_limits="upload=2/60s") as srv:
        api = Api(http, srv.base_url, srv.users)
        first = await api.chunk("alice", b"a" * 10)
        assert first.headers["X-RateLimit-Limit"] == "2" and first.headers["X-RateLimit-Remaining"] == "1"
        data_id = first.json()["id"]
        for i in range(1, 5):  # continuation chunks are free but carry the upload headers
            cont = await api.chunk("alice", b"a" * 10, offset=10 * i, data_id=data_id)
            assert cont.status == 200 and cont.headers["X-RateLimit-Remaining"] == "1"
        assert (await api.chunk("alice", b"b")).status == 200
        refused = await api.chunk("alice", b"c")
        assert refused.status == 429 and "Retry-After" in refused.headers
        done = await api.chunk("alice", b"a", offset=50, data_id=data_id, is_last=True)
        assert done.status == 200 and done.json()["is_ready"]


async def test_search_and_api_classes(server_root: Path, http: aiohttp.ClientSession) -> None:
    async with running_server(server_root, rate_limits="search=2/60s,api=5/60s") as srv:
        api = Api(http, srv.base_url, srv.users)
        await api.token("alice")  # /login counts against the client address, not alice
        assert (await api.call("GET", "/data/search", "alice")).headers["X-RateLimit-Limit"] == "2"
        assert (await api.call("GET", "/data/search", "alice")).status == 200
        assert (await api.call("GET", "/data/search", "alice")).status == 429
        statuses = [(await api.call("GET", "/data/owned", "alice")).status for _ in range(6)]
        assert statuses == [200] * 5 + [429]
        caps = await api.call("GET", "/capabilities")
        assert caps.status == 200 and "X-RateLimit-Limit" not in caps.headers
        assert (await api.call("GET", "/openapi.json")).status == 200


async def test_login_is_limited_per_address(server_root: Path, http: aiohttp.ClientSession) -> None:
    async with running_server(server_root, rate_limits="api=3/60s") as srv:
        api = Api(http, srv.base_url, srv.users)
        answers = [await api.call("POST", "/login", json={"username": "alice", "password": "wrong"}) for _ in range(4)]
        assert [a.status for a in answers] == [400, 400, 400, 429]
        assert answers[0].headers["X-RateLimit-Remaining"] == "2"


async def test_refused_uploads_count_as_api(server_root: Path, http: aiohttp.ClientSession) -> None:
    async with running_server(server_root, rate_limits="api=2/60s,upload=50/60s") as srv:
        api = Api(http, srv.base_url, srv.users)
        await api.token("alice")
        bad = await api.chunk("alice", b"x", filename="a b")
        assert bad.status == 400 and bad.headers["X-RateLimit-Limit"] == "2"
        assert (await api.call("POST", "/upload", "alice", data=b"{}")).status == 400
        assert (await api.call("POST", "/upload", "alice", data=b"{}")).status == 429

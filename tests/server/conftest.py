"""Helpers for the server suite: a small HTTP client that speaks the protocol by hand."""

from __future__ import annotations

import contextlib
import io
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest

from flowxfer.protocol import checksum_of
from tests.support.server import RunningServer

if TYPE_CHECKING:
    from flowbio.v2 import Client


@contextlib.contextmanager
def flowbio_client(srv: RunningServer, chunk_size: int, user: str = "alice") -> Iterator[Client]:
    """The official client (flowbio v2), logged in to ``srv`` as ``user``; its sockets closed after."""
    from flowbio.v2 import Client, ClientConfig
    from flowbio.v2.auth import UsernamePasswordCredentials

    client = Client(base_url=srv.base_url, config=ClientConfig(chunk_size=chunk_size, show_progress=False))
    try:
        client.log_in(UsernamePasswordCredentials(username=user, password=srv.users[user]))
        yield client
    finally:
        # flowbio v2 offers no close(); its httpx client must not leak a socket.
        client._transport._client.close()


@dataclass
class Answer:
    status: int
    headers: Any
    body: bytes

    def json(self) -> Any:
        import json

        return json.loads(self.body)


class Api:
    """Raw protocol calls against one server, with cached logins per user."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, users: dict[str, str]) -> None:
        self.session = session
        self.base = base_url
        self.users = users
        self.tokens: dict[str, str] = {}

    async def token(self, user: str) -> str:
        if user not in self.tokens:
            answer = await self.call("POST", "/login", json={"username": user, "password": self.users[user]})
            assert answer.status == 200, answer.body
            self.tokens[user] = answer.json()["token"]
        return self.tokens[user]

    async def call(
        self, method: str, path: str, user: str | None = None, *, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> Answer:
        hdrs = dict(headers or {})
        if user is not None:
            hdrs["Authorization"] = f"Bearer {await self.token(user)}"
        url = path if path.startswith("http") else self.base + path
        async with self.session.request(method, url, headers=hdrs, **kwargs) as resp:
            return Answer(resp.status, resp.headers, await resp.read())

    async def chunk(
        self,
        user: str | None,
        blob: bytes,
        *,
        filename: str = "f.bin",
        offset: int = 0,
        data_id: str = "",
        is_last: bool = False,
        extra: dict[str, str] | None = None,
        blob_first: bool = False,
        token: str | None = None,
        path: str = "/upload",
        lists: dict[str, Sequence[str]] | None = None,
    ) -> Answer:
        form = aiohttp.FormData()
        fields = {
            "filename": filename,
            "expected_file_size": str(offset),
            "is_last": "true" if is_last else "false",
            "data": data_id,
            **(extra or {}),
        }
        if blob_first:
            form.add_field("blob", io.BytesIO(blob), filename="blob", content_type="application/octet-stream")
        for name, value in fields.items():
            form.add_field(name, value)
        for name, items in (lists or {}).items():
            for item in items:
                form.add_field(name, item)
        if not blob_first:
            form.add_field("blob", io.BytesIO(blob), filename="blob", content_type="application/octet-stream")
        headers = {"Authorization": f"Bearer {token}"} if token else None
        return await self.call("POST", path, user, data=form, headers=headers)

    async def upload(
        self,
        user: str,
        data: bytes,
        filename: str = "f.bin",
        chunk_size: int = 64 * 1024,
        *,
        checksums: bool = True,
        extra: dict[str, str] | None = None,
    ) -> str:
        """A whole upload; returns the data id."""
        data_id = ""
        offset = 0
        while True:
            blob = data[offset : offset + chunk_size]
            last = offset + len(blob) >= len(data)
            fields = dict(extra or {})
            if checksums:
                fields["checksum"] = checksum_of(blob)
                if last:
                    fields["file_checksum"] = checksum_of(data)
            answer = await self.chunk(
                user, blob, filename=filename, offset=offset, data_id=data_id, is_last=last, extra=fields
            )
            assert answer.status == 200, answer.body
            body = answer.json()
            data_id = body["id"]
            offset += len(blob)
            assert body["size"] == offset
            if last:
                assert body["is_ready"] is True
                return data_id


@pytest.fixture(autouse=True)
def no_blocking_calls_on_the_loop() -> Iterator[None]:
    """Fail any blocking call (file I/O, sleep, sqlite...) made on the event loop (blockbuster)."""
    from blockbuster import blockbuster_ctx

    with blockbuster_ctx("flowxfer.server"):
        yield


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def api(server: RunningServer, http: aiohttp.ClientSession) -> Api:
    return Api(http, server.base_url, server.users)

"""The engine's view of a misbehaving network: the real server, our fault proxy in front, and a log.

Shared by the fault tests (``tests/transfer/test_faults.py``) and the chaos
suite (``tests/chaos``): both arm rules on ``rig.proxy``, point the engine at
``rig.via_proxy``, and judge what crossed the wire from ``rig.log``, while
:func:`stored` reads what the server really holds without the proxy.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

from tests.support.faultproxy import FaultProxy, Record
from tests.support.server import RunningServer, login, running_server


@dataclasses.dataclass
class Rig:
    """The server, the proxy in front of it, and the proxy's log of every exchange."""

    server: RunningServer
    proxy: FaultProxy
    log: Record

    @property
    def via_proxy(self) -> RunningServer:
        return dataclasses.replace(self.server, base_url=self.proxy.url)

    def wire(self, method: str, path: str, field: str, statuses: tuple[int, ...] | None = None) -> int:
        """Bytes of ``field`` (``request_bytes`` or ``response_bytes``) over the matching exchanges."""
        return sum(getattr(e, field) for e in self.log.select(method, path) if statuses is None or e.status in statuses)

    def upload_bytes(self) -> int:
        """Request-body bytes of every ``POST /upload`` (payload, envelopes and re-sends)."""
        return self.wire("POST", r"^/upload$", "request_bytes")

    def download_bytes(self) -> int:
        """File bytes delivered to the engine (error pages not counted)."""
        return self.wire("GET", r"^/downloads/", "response_bytes", (200, 206))


@asynccontextmanager
async def rig(tmp_path: Path, extensions: bool, *, seed: int = 7, **server_config: Any) -> AsyncIterator[Rig]:
    async with running_server(tmp_path / "root", extensions=extensions, **server_config) as srv:
        port = int(srv.base_url.rsplit(":", 1)[1])
        async with FaultProxy("127.0.0.1", port, seed=seed) as proxy:
            yield Rig(srv, proxy, proxy.add(Record()))


async def stored(srv: RunningServer, ids: dict[str, str], user: str = "alice") -> dict[str, bytes]:
    """What the server holds for ``{filename: data id}``, fetched directly (no proxy, no engine)."""
    out = {}
    async with aiohttp.ClientSession() as session:
        token = await login(session, srv.base_url, user, srv.users[user])
        for name, data_id in ids.items():
            async with session.get(
                f"{srv.base_url}/downloads/{data_id}/{name}", headers={"Authorization": f"Bearer {token}"}
            ) as response:
                assert response.status == 200, (name, response.status)
                out[name] = await response.read()
    return out

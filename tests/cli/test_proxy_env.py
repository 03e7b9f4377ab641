"""The README's "Proxies": the client reads no proxy variables and always goes straight to the server.

aiohttp would route through ``HTTPS_PROXY``/``HTTP_PROXY`` only with ``trust_env``, which the
client does not set. Here every proxy variable names a port nothing listens on: a client that
used one would fail to connect, so a login, an upload and a download that work prove the claim.
"""

from __future__ import annotations

import os
from pathlib import Path

from tests.cli.conftest import Cli
from tests.support.server import RunningServer

#: A proxy that is not there (port 9, discard, is closed on a test machine).
DEAD_PROXY = "http://127.0.0.1:9"

PROXY_VARIABLES = {
    name: DEAD_PROXY for base in ("http_proxy", "https_proxy", "all_proxy") for name in (base, base.upper())
}


async def test_proxy_variables_are_ignored(server: RunningServer, tmp_path: Path) -> None:
    cli = Cli(server.base_url, tmp_path / "home", env_extra={**PROXY_VARIABLES, "NO_PROXY": "", "no_proxy": ""})
    await cli.login("alice", server.users["alice"])
    (tmp_path / "reads.bin").write_bytes(source := os.urandom(100_000))
    uploaded = await cli.run("--json", "upload", str(tmp_path / "reads.bin"))
    assert uploaded.code == 0, uploaded
    data_id = uploaded.json()["files"][0]["id"]
    downloaded = await cli.run("--json", "download", data_id, "-o", str(tmp_path / "out"))
    assert downloaded.code == 0, downloaded
    assert (tmp_path / "out" / "reads.bin").read_bytes() == source

"""Long runs through the real CLI: logins that expire under it, and rate limits it must wait for."""

from __future__ import annotations

import stat
from pathlib import Path

from tests.support.server import running_server
from tests.transfer.conftest import write_random

from .conftest import Cli, KiB, server_bytes


async def test_access_tokens_expiring_every_two_seconds(tmp_path: Path) -> None:
    """Each transfer outlives a few access tokens: the CLI refreshes before expiry (and saves the
    new token, mode 0600) and neither the upload nor the download notices."""
    files = [write_random(tmp_path / "run" / f"r{i}.fastq", 640 * KiB + i, i) for i in range(2)]
    async with running_server(tmp_path / "root", access_ttl=2) as srv:
        cli = Cli(srv.base_url, tmp_path / "home")
        await cli.login("alice", srv.users["alice"])
        credentials = [p for p in (tmp_path / "home" / "config").rglob("*") if p.is_file()]
        assert credentials and all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in credentials)
        before = {p: p.read_bytes() for p in credentials}

        up = await cli.run("--json", "upload", str(tmp_path / "run"), "--chunk-size", "64k", "--bwlimit", "512k")
        assert up.code == 0, up
        assert up.json()["seconds"] > 2  # longer than one token's life
        ids = {Path(f["path"]).name: f["id"] for f in up.json()["files"]}
        assert any(p.read_bytes() != before[p] for p in credentials)  # a refreshed token was saved
        assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in credentials)

        down = await cli.run("--json", "download", *ids.values(), "-o", str(tmp_path / "out"), "--bwlimit", "512k")
        assert down.code == 0, down
        for f in files:
            assert (tmp_path / "out" / f.name).read_bytes() == f.read_bytes()
            assert await server_bytes(srv.base_url, srv.users["alice"], ids[f.name], f.name) == f.read_bytes()


async def test_a_rate_limit_with_a_short_window_is_waited_for(tmp_path: Path) -> None:
    """Two uploads per 2 s: the CLI says it waits, waits, and finishes every file (exit 0)."""
    for i in range(5):
        write_random(tmp_path / "run" / f"f{i}.fastq", 1000, i)
    async with running_server(tmp_path / "root", rate_limits="upload=2/2s") as srv:
        cli = Cli(srv.base_url, tmp_path / "home")
        await cli.login("alice", srv.users["alice"])
        result = await cli.run("--json", "--log-format", "json", "upload", str(tmp_path / "run"))
        assert result.code == 0, result
        document = result.json()
        assert document["status"] == "completed"
        assert [f["status"] for f in document["files"]] == ["done"] * 5
        kinds = {event["event"] for event in result.events()}
        assert "waiting" in kinds or "retrying" in kinds, kinds
        # Five new uploads at two per window: at least two windows were waited for.
        assert document["seconds"] >= 2

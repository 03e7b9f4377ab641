"""``flowxfer serve`` and ``flowxfer admin`` as a user runs them."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
from pathlib import Path

import aiohttp
import anyio
import pytest
from click.testing import CliRunner

from flowxfer.cli import main
from tests.server.conftest import Api
from tests.support.server import ServerProcess

FLOWXFER = [sys.executable, "-c", "from flowxfer.cli import main; main()"]


@pytest.mark.parametrize(
    "args",
    [
        ["serve"],  # --root missing
        ["serve", "--root", "R", "--rate-limits", "bogus=1"],
        ["serve", "--root", "R", "--port", "70000"],
        ["serve", "--root", "R", "--access-ttl", "0"],
        ["serve", "--root", "R", "--max-chunk-size", "lots"],
        ["serve", "--root", "R", "--user", "nopassword"],
        ["serve", "--root", "R", "--user", "bad name:pw"],
        ["serve", "--root", "R", "--tls-cert", "/nonexistent.pem"],
    ],
)
def test_bad_options_are_usage_errors(tmp_path: Path, args: list[str]) -> None:
    args = [str(tmp_path / "R") if a == "R" else a for a in args]
    result = subprocess.run(FLOWXFER + args, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "Error" in result.stderr


def test_commands_have_help() -> None:
    runner = CliRunner()
    for args in (["serve"], ["admin"], ["admin", "user", "add"], ["admin", "group", "add-member"]):
        result = runner.invoke(main, [*args, "--help"])
        assert result.exit_code == 0 and "Example" in result.output, args


def test_admin_users_and_groups(tmp_path: Path) -> None:
    runner = CliRunner()
    root = str(tmp_path / "root")
    assert (
        runner.invoke(
            main, ["admin", "--root", root, "user", "add", "eve", "--password-stdin"], input="pw-eve\n"
        ).exit_code
        == 0
    )
    assert runner.invoke(main, ["admin", "--root", root, "group", "add", "lab"]).exit_code == 0
    assert runner.invoke(main, ["admin", "--root", root, "group", "add-member", "lab", "eve"]).exit_code == 0
    listed = runner.invoke(main, ["admin", "--root", root, "group", "list"])
    assert listed.output.strip() == "lab: eve"
    assert runner.invoke(main, ["admin", "--root", root, "user", "list"]).output.split() == ["eve"]
    refused = runner.invoke(main, ["admin", "--root", root, "group", "add-member", "lab", "ghost"])
    assert refused.exit_code == 2
    bad = runner.invoke(main, ["admin", "--root", root, "user", "add", "x y", "--password-stdin"], input="pw\n")
    assert bad.exit_code == 2


async def test_serve_prints_its_url_and_serves(tmp_path: Path) -> None:
    async with ServerProcess(tmp_path / "root", users={"zoe": "zoe-pw"}) as proc, aiohttp.ClientSession() as s:
        assert proc.base_url.startswith("http://127.0.0.1:") and proc.port > 0
        async with s.post(f"{proc.base_url}/login", json={"username": "zoe", "password": "zoe-pw"}) as resp:
            assert resp.status == 200


async def test_serve_https(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    await anyio.to_thread.run_sync(
        lambda: subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                str(key),
                "-out",
                str(cert),
                "-days",
                "1",
                "-subj",
                "/CN=127.0.0.1",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
    )
    proc = ServerProcess(tmp_path / "root", "--tls-cert", str(cert), "--tls-key", str(key))
    async with proc:
        assert proc.base_url.startswith("https://127.0.0.1:")
        context = ssl.create_default_context(cafile=str(cert))
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
            async with session.get(f"{proc.base_url}/capabilities") as resp:
                assert resp.status == 200 and (await resp.json())["server"] == "flowxfer"
            # Downloads over TLS cannot use the kernel's sendfile; the fallback must send the same bytes.
            api = Api(session, proc.base_url, proc.users)
            data = os.urandom(3 * 1024 * 1024 + 7)
            data_id = await api.upload("alice", data, "tls.bin", chunk_size=1024 * 1024)
            whole = await api.call("GET", f"/downloads/{data_id}/tls.bin", "alice")
            assert whole.status == 200 and whole.body == data
            part = await api.call("GET", f"/downloads/{data_id}/tls.bin", "alice", headers={"Range": "bytes=1000-"})
            assert part.status == 206 and part.body == data[1000:]

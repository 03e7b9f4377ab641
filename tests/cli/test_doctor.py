"""``flowxfer doctor`` against the real local server."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from flowxfer.transfer import Flowxfer
from flowxfer.transfer._doctor import SKEW_FAIL, _clock, run_checks
from tests.support.server import RunningServer, running_server
from tests.transfer.conftest import client

CLI = [sys.executable, "-c", "from flowxfer.cli import main; main()"]


async def test_all_checks_pass_when_logged_in(server: RunningServer, tmp_path: Path) -> None:
    async with client(server, tmp_path / "home") as fx:
        checks = await run_checks(fx, tmp_path / "downloads" / "not-yet")
    by_name = {c.name: c for c in checks}
    assert [c.name for c in checks] == ["credentials", "server", "capabilities", "clock", "api", "journal", "disk"]
    assert all(c.status == "ok" for c in checks), checks
    assert "refresh token works" in by_name["credentials"].detail
    assert "chunk checksums" in by_name["capabilities"].detail


async def test_plain_flow_and_missing_login_are_reported(tmp_path: Path) -> None:
    async with running_server(tmp_path / "root", extensions=False) as srv:
        async with Flowxfer(srv.base_url, config_dir=tmp_path / "empty", journal=tmp_path / "j.db") as fx:
            checks = {c.name: c for c in await run_checks(fx)}
    assert checks["credentials"].status == "fail"
    assert f"flowxfer --base-url {srv.base_url} login" in checks["credentials"].detail
    assert "plain Flow" in checks["capabilities"].detail


async def test_unreachable_server_and_damaged_journal(tmp_path: Path) -> None:
    (tmp_path / "j.db").write_bytes(b"not sqlite" * 100)
    async with Flowxfer("http://127.0.0.1:9", config_dir=tmp_path / "c", journal=tmp_path / "j.db") as fx:
        checks = {c.name: c for c in await run_checks(fx)}
    assert checks["server"].status == "fail" and "unreachable" in checks["server"].detail
    assert checks["journal"].status == "fail"


async def test_a_server_that_is_not_flow_or_a_token_it_refuses_fail(server: RunningServer, tmp_path: Path) -> None:
    """Any web server answers /capabilities (Flow's own 404 included); only Flow answers an API request."""
    from tests.cli.test_cli_exit_codes import html_server

    async with html_server(200) as url:
        async with Flowxfer(url, config_dir=tmp_path / "c1", journal=tmp_path / "j1.db", token="a.b.c") as fx:
            checks = {c.name: c for c in await run_checks(fx)}
    assert checks["api"].status == "fail" and "does not answer as Flow does" in checks["api"].detail
    async with Flowxfer(
        server.base_url, config_dir=tmp_path / "c2", journal=tmp_path / "j2.db", token="not.a.token"
    ) as fx:
        names = [(c.name, c.status) for c in await run_checks(fx)]
    assert ("credentials", "fail") in names, names


def test_clock_skew_is_judged() -> None:
    import email.utils

    now = time.time()
    assert _clock(email.utils.formatdate(now, usegmt=True)).status == "ok"
    assert _clock(email.utils.formatdate(now - SKEW_FAIL - 10, usegmt=True)).status == "fail"
    assert _clock(None).status == "warn"


async def test_cli_exit_codes_and_json(server: RunningServer, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "FLOW_API_URL": server.base_url,
        "FLOWXFER_CONFIG_DIR": str(tmp_path / "cfg"),
        "FLOWXFER_JOURNAL": str(tmp_path / "j.db"),
    }
    import anyio

    not_logged = await anyio.run_process([*CLI, "--json", "doctor"], env=env, check=False)
    assert not_logged.returncode == 3
    document = json.loads(not_logged.stdout)
    assert document["ok"] is False and document["checks"][0]["status"] == "fail"
    login = await anyio.run_process(
        [*CLI, "login", "-u", "alice", "--password-stdin"],
        input=(server.users["alice"] + "\n").encode(),
        env=env,
        check=False,
    )
    assert login.returncode == 0, login.stderr
    healthy = await anyio.run_process([*CLI, "doctor"], env=env, check=False)
    assert healthy.returncode == 0, healthy.stdout
    assert b"Traceback" not in healthy.stderr
    assert healthy.stdout.decode().count("ok  ") == 7


async def test_api_check_asks_me_and_reads_hosted_flows_null_record(tmp_path: Path) -> None:
    """Hosted Flow documents /me, not /data/owned, and answers a bad token there with 200 and nulls."""
    from aiohttp import web

    seen: list[str] = []

    async def answer(request: web.Request) -> web.Response:
        seen.append(request.path)
        if request.path == "/me":
            return web.json_response({"id": None, "username": None, "name": None})
        return web.json_response({"error": "Not found"}, status=404)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        async with Flowxfer(url, config_dir=tmp_path / "c", journal=tmp_path / "j.db", token="fxk_key") as fx:
            checks = [(c.name, c.status, c.detail) for c in await run_checks(fx)]
    finally:
        await runner.cleanup()
    assert "/me" in seen and "/data/owned" not in seen
    assert ("credentials", "ok", "a long-lived token (an API key): nothing to refresh") in checks
    assert any(
        name == "credentials" and status == "fail" and "anonymous" in detail for name, status, detail in checks
    ), checks


async def test_an_api_key_passes_doctor(server: RunningServer, tmp_path: Path) -> None:
    import anyio

    from flowxfer.server import Admin

    def add() -> str:
        with Admin(server.root) as admin:
            return admin.add_token("alice")[1]

    key = await anyio.to_thread.run_sync(add)
    async with Flowxfer(server.base_url, config_dir=tmp_path / "c", journal=tmp_path / "j.db", token=key) as fx:
        checks = {c.name: c for c in await run_checks(fx, tmp_path)}
    assert all(c.status == "ok" for c in checks.values()), checks
    assert "GET /me" in checks["api"].detail and "alice" in checks["api"].detail

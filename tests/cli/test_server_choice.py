"""Which server and which credentials a command uses, and what it says when it has none (real CLI, real server)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import aiohttp

from tests.support.server import RunningServer, login
from tests.transfer.conftest import write_random

from .conftest import Cli, Result


def _cli(server: RunningServer, tmp_path: Path, **env: str) -> Cli:
    """A user whose HOME is a tmp folder (the official CLI's token file lives there)."""
    return Cli(server.base_url, tmp_path / "home", env_extra={"HOME": str(tmp_path / "home"), **env})


async def _token(server: RunningServer) -> str:
    async with aiohttp.ClientSession() as session:
        return await login(session, server.base_url, "alice", server.users["alice"])


def _no_secret(result: Result, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in result.stdout and secret not in result.stderr


async def test_the_server_logged_in_to_last_is_used_and_said_once(server: RunningServer, tmp_path: Path) -> None:
    cli = _cli(server, tmp_path)
    await cli.login("alice", server.users["alice"])
    credentials = cli.home / "config" / "credentials.json"
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
    unset = _cli(server, tmp_path, FLOW_API_URL="")  # click reads an empty variable as unset
    path = write_random(tmp_path / "a.bin", 1000)
    result = await unset.run("upload", str(path))
    assert result.code == 0, result
    note = f"using {server.base_url}, the server you last logged in to"
    assert result.stderr.count(note) == 1, result.stderr
    # Named, it is not said; --json keeps it off stdout.
    named = await cli.run("--json", "upload", str(path))
    assert note not in named.stderr and named.json()["status"] == "completed"
    quiet = await unset.run("-q", "upload", str(path))
    assert note not in quiet.stderr


async def test_not_logged_in_names_the_server_asked_those_logged_in_to_and_the_fix(
    server: RunningServer, tmp_path: Path
) -> None:
    cli = _cli(server, tmp_path)
    await cli.login("alice", server.users["alice"])
    other = "http://127.0.0.1:9"
    result = await _cli(server, tmp_path, FLOW_API_URL=other).run("upload", str(write_random(tmp_path / "a", 10)))
    assert result.code == 3, result
    assert f"not logged in to {other} (logged in to {server.base_url})" in result.stderr
    assert f"flowxfer --base-url {server.base_url} upload" in result.stderr
    assert f"flowxfer --base-url {other} login" in result.stderr
    nobody = Cli(server.base_url, tmp_path / "nobody", env_extra={"HOME": str(tmp_path / "nobody")})
    alone = await nobody.run("--json", "download", "123")
    assert alone.code == 3 and alone.json()["error"].startswith(f"not logged in to {server.base_url}; ")
    assert f"flowxfer --base-url {server.base_url} login" in alone.json()["error"]


async def test_tokens_from_a_flag_a_variable_a_file_and_the_official_cli_file(
    server: RunningServer, tmp_path: Path
) -> None:
    token = await _token(server)
    path = write_random(tmp_path / "a.bin", 1000)
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    cli = _cli(server, tmp_path)  # never logged in
    for args, env in ((["--token-file", str(token_file)], {}), ([], {"FLOW_TOKEN_FILE": str(token_file)})):
        cli.env_extra.update(env)
        result = await cli.run("-v", *args, "upload", "--force", str(path))
        assert result.code == 0, result
        assert "readable by others" not in result.stderr
        _no_secret(result, token)
    cli.env_extra.pop("FLOW_TOKEN_FILE")
    # --token beats --token-file: a bad token given first is the one sent (and refused).
    refused = await cli.run("--token", "not.a.token", "--token-file", str(token_file), "upload", "--force", str(path))
    assert refused.code == 3, refused
    missing = await cli.run("--token-file", str(tmp_path / "nope"), "upload", str(path))
    assert missing.code == 2 and f"token file {tmp_path / 'nope'} does not exist" in missing.stderr
    # The official CLI's file stands in for a missing login; it is named in a warning when others may read it.
    official = cli.home / ".config" / "flow" / "api-token"
    official.parent.mkdir(parents=True)
    official.write_text(token)
    official.chmod(0o644)
    result = await cli.run("upload", "--force", str(path))
    assert result.code == 0, result
    assert f"token file {official} is readable by others; run: chmod 600 {official}" in result.stderr
    _no_secret(result, token)


async def test_a_saved_login_comes_before_the_official_cli_file(server: RunningServer, tmp_path: Path) -> None:
    cli = _cli(server, tmp_path)
    await cli.login("alice", server.users["alice"])
    official = cli.home / ".config" / "flow" / "api-token"
    official.parent.mkdir(parents=True)
    official.write_text("not.a.token")
    result = await cli.run("upload", str(write_random(tmp_path / "a.bin", 100)))
    assert result.code == 0, result


async def test_doctor_says_which_base_url_answers_as_flow(server: RunningServer, tmp_path: Path) -> None:
    cli = _cli(server, tmp_path, FLOW_API_URL=server.base_url + "/api")
    result = await cli.run("--json", "doctor")
    checks = {check["name"]: check for check in result.json()["checks"]}
    assert checks["base-url"]["status"] == "fail", checks
    detail = checks["base-url"]["detail"]
    assert f"{server.base_url}/api answers a 404 at /login" in detail
    assert f"use --base-url {server.base_url} " in detail
    right = _cli(server, tmp_path)
    await right.login("alice", server.users["alice"])
    healthy = json.loads((await right.run("--json", "doctor")).stdout)
    assert "base-url" not in {check["name"] for check in healthy["checks"]}

"""Tokens and passwords never leave the credentials file.

Real transfers with the real CLI against a real server process whose access
tokens live two seconds (so refreshes happen mid-transfer), then every
artefact they left is searched: each command's stdout and stderr (human,
``--json``, ``--log-format json -v``), the journal and its ``-wal``/``-shm``
files byte for byte, the server's log, and every file under the config and
state folders except the credentials file itself. The search is for the
password, every token the credentials file ends up holding, and anything
shaped like a JWT at all (``eyJ...``), so a token issued and rotated away
mid-run is caught too. The credentials file is checked to match the same
patterns first, so the search is known to be able to find what it looks for.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import aiohttp

from tests.cli.conftest import Cli, Result
from tests.support.server import ServerProcess, login
from tests.transfer.conftest import write_random

KiB = 1024
MiB = 1024 * KiB
#: Any JWT: base64url JSON header and payload (both start with ``{"`` → ``eyJ``), then a signature.
JWT = re.compile(rb"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*")


def secrets_in(blob: bytes, password: str, tokens: list[str]) -> list[str]:
    """What of the secrets ``blob`` holds (labels only: a failing test must not print a secret)."""
    found = []
    if password.encode() in blob:
        found.append("password")
    found += [f"token #{n}" for n, token in enumerate(tokens) if token.encode() in blob]
    if JWT.search(blob):
        found.append("a JWT-shaped string")
    return found


async def test_no_secret_in_any_artefact(tmp_path: Path) -> None:
    password = "s3cret-Pässword-xyzzy"
    root = tmp_path / "flow-root"
    results: list[tuple[str, Result]] = []
    with ServerProcess(root, "--access-ttl", "2", users={"alice": password}) as server:
        cli = Cli(server.base_url, tmp_path / "home")

        async def run(*args: str, stdin: str | None = None) -> Result:
            result = await cli.run(*args, stdin=stdin, within=120)
            results.append((" ".join(args), result))
            return result

        assert (await run("login", "-u", "alice", "--password-stdin", stdin=password + "\n")).code == 0
        src = tmp_path / "run"
        for index in range(3):
            write_random(src / f"reads_{index}.fastq.gz", 600 * KiB + index, index)
        up = await run(
            "--json", "--log-format", "json", "-v", "upload", str(src), "--chunk-size", "64k", "--bwlimit", "400k"
        )
        assert up.code == 0, up.stderr
        ids = [f["id"] for f in up.json()["files"]]
        down = await run(
            "--log-format", "json", "-v", "download", *ids, "-o", str(tmp_path / "out"), "--bwlimit", "600k"
        )
        assert down.code == 0, down.stderr
        bulk = await run("--json", "bulk", *ids, "-o", str(tmp_path / "bulk"), "--extract", "--poll-interval", "0.2")
        assert bulk.code == 0, bulk.stderr
        for args in (("jobs", "--all"), ("show", up.json()["transfer_id"]), ("resume",), ("doctor",)):
            await run(*args)
        # A command given the access token directly (not saved) must not echo it either.
        async with aiohttp.ClientSession() as session:
            direct = await login(session, server.base_url, "alice", password)
            # ?token= is accepted on downloads; the server's access log must not keep it.
            url = f"{server.base_url}/downloads/{ids[0]}/reads_0.fastq.gz?token={direct}"
            async with session.get(url) as response:
                assert response.status == 200
        env_cli = Cli(server.base_url, tmp_path / "home2", env_extra={"FLOW_API_TOKEN": direct})
        env_run = await env_cli.run("--json", "download", ids[1], "-o", str(tmp_path / "out2"))
        # Done, or (the token lives 2 s and cannot be refreshed) refused: either way, not echoed.
        assert env_run.code in (0, 3), env_run.stderr
        results.append(("download with FLOW_API_TOKEN", env_run))
        wrong = await cli.run("login", "-u", "alice", "--password-stdin", stdin="not-" + password + "\n")
        assert wrong.code == 3
        results.append(("login with a wrong password", wrong))

    credentials = tmp_path / "home" / "config" / "credentials.json"
    saved = json.loads(credentials.read_text())["servers"][server.base_url]
    tokens = [saved["access_token"], saved["refresh_token"], direct]
    # The search can find what it looks for: the credentials file itself holds the tokens.
    assert secrets_in(credentials.read_bytes(), password, tokens[:2]) == ["token #0", "token #1", "a JWT-shaped string"]
    # The refresh really happened mid-run (tokens live 2 s, the transfers took longer).
    assert "GET /token" in server.log_path.read_text()

    leaks: dict[str, list[str]] = {}
    for what, result in results:
        for stream, text in (("stdout", result.stdout), ("stderr", result.stderr)):
            if found := secrets_in(text.encode(), password, tokens):
                leaks[f"{what}: {stream}"] = found
    artefacts = [server.log_path]
    for folder in (tmp_path / "home", tmp_path / "home2"):
        artefacts += [p for p in folder.rglob("*") if p.is_file() and p != credentials and p.name != "credentials.json"]
    journal_files = [p for p in artefacts if p.name.startswith("journal.db")]
    assert {p.name for p in journal_files} >= {"journal.db"}
    for path in artefacts:
        if found := secrets_in(path.read_bytes(), password, tokens):
            leaks[str(path.relative_to(tmp_path))] = found
    assert not leaks, leaks

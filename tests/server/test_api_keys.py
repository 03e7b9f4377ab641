"""Long-lived API keys (``flowxfer admin token add``), used as ``Authorization: Bearer`` like hosted Flow's."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import anyio
import pytest

from flowxfer.server import Admin, AdminError
from flowxfer.server._keys import verify_api_key
from flowxfer.server._store import DB_NAME
from tests.server.conftest import Api
from tests.support.server import RunningServer

CLI = [sys.executable, "-c", "from flowxfer.cli import main; main()"]


async def _add_key(root: Path, user: str, **kwargs: object) -> tuple[str, str]:
    def add() -> tuple[str, str]:
        with Admin(root) as admin:
            return admin.add_token(user, **kwargs)  # type: ignore[arg-type]

    return await anyio.to_thread.run_sync(add)


async def test_cli_prints_the_key_once_and_keeps_only_a_hash(server: RunningServer, api: Api) -> None:
    admin = [*CLI, "admin", "--root", str(server.root), "token"]
    made = await anyio.run_process([*admin, "add", "alice", "--name", "AI agent"], check=False)
    assert made.returncode == 0, made.stderr
    key = made.stdout.decode().strip()
    assert key.startswith("fxk_") and "\n" not in key and key not in made.stderr.decode()
    listed = await anyio.run_process([*admin, "list"], check=False)
    key_id = key.split("_")[1]
    assert listed.returncode == 0 and key_id in listed.stdout.decode() and "AI agent" in listed.stdout.decode()
    secret = key.split("_", 2)[2]
    for path in server.root.rglob(f"{DB_NAME}*"):
        assert secret.encode() not in path.read_bytes() and key.encode() not in path.read_bytes()
    assert secret not in listed.stdout.decode()
    me = await api.call("GET", "/me", headers={"Authorization": f"Bearer {key}"})
    assert me.status == 200 and me.json()["username"] == "alice"
    removed = await anyio.run_process([*admin, "remove", key_id], check=False)
    assert removed.returncode == 0
    assert (await api.call("GET", "/me", headers={"Authorization": f"Bearer {key}"})).status == 401
    again = await anyio.run_process([*admin, "remove", key_id], check=False)
    assert again.returncode == 2 and b"no such API key" in again.stderr
    unknown = await anyio.run_process([*admin, "add", "mallory"], check=False)
    assert unknown.returncode == 2 and b"no such user" in unknown.stderr and not unknown.stdout


async def test_a_key_works_for_uploads_downloads_and_the_official_client(
    server: RunningServer, api: Api, tmp_path: Path
) -> None:
    from flowbio.v2 import Client, ClientConfig
    from flowbio.v2.auth import TokenCredentials

    _, key = await _add_key(server.root, "alice", name="laptop")
    path = tmp_path / "reads.fastq"
    path.write_bytes(os.urandom(3000))

    def with_flowbio() -> tuple[str, dict[str, object]]:
        client = Client(base_url=server.base_url, config=ClientConfig(chunk_size=1024, show_progress=False))
        try:
            client.log_in(TokenCredentials(key))
            data_id = client.data.upload_data(path).id
            return data_id, json.loads(client.get_raw(f"/data/{data_id}"))
        finally:
            client._transport._client.close()

    data_id, record = await anyio.to_thread.run_sync(with_flowbio)
    assert record["owner"]["username"] == "alice" and record["size"] == 3000  # type: ignore[index]
    download = await api.call("GET", f"/downloads/{data_id}/reads.fastq?token={key}")
    assert download.status == 200 and download.body == path.read_bytes()
    # The key is alice's, no one else's.
    assert (await api.call("GET", f"/data/{data_id}", "bob")).status == 404


async def test_expired_revoked_forged_and_orphaned_keys_are_401(server: RunningServer, api: Api) -> None:
    _, short = await _add_key(server.root, "alice", expires_in=0.5)
    _, carols = await _add_key(server.root, "carol")
    assert (await api.call("GET", "/me", headers={"Authorization": f"Bearer {short}"})).status == 200
    await anyio.sleep(0.8)
    expired = await api.call("GET", "/me", headers={"Authorization": f"Bearer {short}"})
    assert expired.status == 401 and "expired" in expired.json()["error"]
    forged = short[:-4] + ("AAAA" if not short.endswith("AAAA") else "BBBB")
    for bad in (forged, short + "x", "fxk_", "fxk_zz_" + "A" * 43):
        answer = await api.call("GET", "/data/search", headers={"Authorization": f"Bearer {bad}"})
        assert answer.status == 401, bad

    def remove_carol() -> None:
        with Admin(server.root) as admin:
            admin.remove_user("carol")

    await anyio.to_thread.run_sync(remove_carol)
    assert (await api.call("GET", "/me", headers={"Authorization": f"Bearer {carols}"})).status == 401


def test_admin_refusals_and_pure_checks(tmp_path: Path) -> None:
    with Admin(tmp_path) as admin:
        admin.add_user("alice", "pw")
        with pytest.raises(AdminError, match="no such user"):
            admin.add_token("nobody")
        with pytest.raises(AdminError, match="printable"):
            admin.add_token("alice", "bad\nname")
        with pytest.raises(AdminError, match="positive"):
            admin.add_token("alice", expires_in=-1)
        key_id, key = admin.add_token("alice", "n", expires_in=100)
        assert verify_api_key(admin._store, key) == "alice"
        from flowxfer.server._auth import TokenError

        with pytest.raises(TokenError, match="expired"):
            verify_api_key(admin._store, key, now=10**12)
        assert [t[0] for t in admin.tokens("alice")] == [key_id] and admin.tokens("bob") == []


async def test_keys_never_reach_the_log(server: RunningServer, api: Api, caplog: pytest.LogCaptureFixture) -> None:
    _, key = await _add_key(server.root, "alice")
    caplog.set_level(logging.DEBUG)
    data_id = await api.upload("alice", b"x", "x.txt")
    for path in ("/me", f"/downloads/{data_id}/x.txt?token={key}", "/data/search"):
        await api.call("GET", path, headers={"Authorization": f"Bearer {key}"})
    await api.call("GET", "/me", headers={"Authorization": f"Bearer {key}zz"})
    assert key.split("_", 2)[2][:20] not in caplog.text


async def test_the_official_cli_reads_as_the_hosted_docs_say(server: RunningServer, api: Api, tmp_path: Path) -> None:
    """``flowbio api get``, as Goodwright's agent docs use it: anonymous by default, the key from a token file."""
    public = await api.upload("alice", b"open", "open.txt")
    await api.upload("alice", b"closed", "closed.txt")
    assert (await api.call("PATCH", f"/data/{public}", "alice", json={"private": False})).status == 200
    _, key = await _add_key(server.root, "alice")
    token_file = tmp_path / "api-token"
    token_file.write_text(key + "\n")
    env = {**os.environ, "HOME": str(tmp_path / "home"), "FLOW_API_URL": server.base_url}
    flowbio = [sys.executable, "-m", "flowbio.cli"]

    async def get(*args: str) -> object:
        done = await anyio.run_process([*flowbio, *args], env=env, check=False)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    anonymous = await get("api", "get", "/data/search", "--json")
    assert [d["id"] for d in anonymous["data"]] == [public]  # type: ignore[index]
    me = await get("--token-file", str(token_file), "api", "get", "/me", "--json")
    assert me["username"] == "alice"  # type: ignore[index]
    mine = await get(
        "--token-file",
        str(token_file),
        "api",
        "get",
        "/data/search",
        "--param",
        "owned=true",
        "--param",
        "count=5",
        "--json",
    )
    assert mine["count"] == 2  # type: ignore[index]

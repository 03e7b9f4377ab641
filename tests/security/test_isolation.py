"""One user can never reach another's private data or jobs; filenames never steer server-side paths.

carol is the stranger. bob owns private data, an unfinished upload, a
directory upload, and an archive job with its completed archive. carol tries
every route of the server on them (raw HTTP, with her valid token, in the
header and as ``?token=``), and then the engine as she would use it.
"""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import aiohttp
import anyio
import pytest

from flowxfer.transfer import NotFoundError
from tests.server.conftest import Api
from tests.support.server import RunningServer
from tests.transfer.conftest import client


async def _completed_job(api: Api, user: str, ids: list[str]) -> dict[str, object]:
    created = await api.call("POST", "/downloads", user, json={"data_ids": ids, "name": "bobs.zip"})
    assert created.status == 202, created.body
    job_id = created.json()["id"]
    with anyio.fail_after(30):
        while True:
            job = (await api.call("GET", f"/downloads/jobs/{job_id}", user)).json()
            if job["status"] == "completed":
                return job
            assert job["status"] in ("pending", "running"), job
            await anyio.sleep(0.05)


def _tar(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


async def test_a_stranger_reaches_nothing_of_bobs(server: RunningServer, tmp_path: Path) -> None:
    async with aiohttp.ClientSession() as http:
        api = Api(http, server.base_url, server.users)
        data_id = await api.upload("bob", b"bob's private bytes", "secret.txt")
        tree = _tar({"a.txt": b"a", "sub/b.txt": b"b"})
        form_extra = {"is_directory": "true"}
        dir_id = (await api.chunk("bob", tree, filename="tree.tar", is_last=True, extra=form_extra)).json()["id"]
        open_upload = (await api.chunk("bob", b"half of it", filename="open.txt")).json()["id"]
        job = await _completed_job(api, "bob", [data_id])
        archive = str(job["download_url"])
        assert (await api.call("GET", archive, "bob")).status == 200  # control: bob can

        carol = await api.token("carol")
        attempts = {
            "data": await api.call("GET", f"/data/{data_id}", "carol"),
            "chunk map": await api.call("GET", f"/data/{data_id}/chunks", "carol"),
            "directory listing": await api.call("GET", f"/data/{dir_id}/files", "carol"),
            "download": await api.call("GET", f"/downloads/{data_id}/secret.txt", "carol"),
            "download HEAD": await api.call("HEAD", f"/downloads/{data_id}/secret.txt", "carol"),
            "download ?token=": await api.call("GET", f"/downloads/{data_id}/secret.txt?token={carol}"),
            "ranged download": await api.call(
                "GET", f"/downloads/{data_id}/secret.txt", "carol", headers={"Range": "bytes=0-3"}
            ),
            "upload status": await api.call("GET", f"/upload/{open_upload}", "carol"),
            "continue upload": await api.chunk(
                "carol", b"mine now", filename="open.txt", offset=10, data_id=open_upload
            ),
            "finish upload": await api.chunk(
                "carol", b"", filename="open.txt", offset=10, data_id=open_upload, is_last=True
            ),
            "bulk": await api.call("POST", "/downloads", "carol", json={"data_ids": [data_id]}),
            "bulk, mixed with her own": await api.call(
                "POST",
                "/downloads",
                "carol",
                json={"data_ids": [await api.upload("carol", b"carol's", "c.txt"), data_id]},
            ),
            "job": await api.call("GET", f"/downloads/jobs/{job['id']}", "carol"),
            "archive": await api.call("GET", archive, "carol"),
            "archive HEAD": await api.call("HEAD", archive, "carol"),
            "archive ?token=": await api.call("GET", f"{archive}?token={carol}"),
            "share": await api.call("PUT", f"/data/{data_id}/permissions", "carol", json={"user": "carol", "level": 3}),
            "make public": await api.call("PATCH", f"/data/{data_id}", "carol", json={"private": False}),
        }
        leaked = {what: a.status for what, a in attempts.items() if a.status != 404}
        assert not leaked, leaked
        assert not any(b"bob's private" in a.body for a in attempts.values())
        listings = {
            "search": await api.call("GET", "/data/search?filename=secret", "carol"),
            "search by pattern": await api.call("GET", "/data/search?pattern=.*", "carol"),
            "owned": await api.call("GET", "/data/owned", "carol"),
        }
        for what, answer in listings.items():
            assert answer.status == 200, what
            assert {d["id"] for d in answer.json()["data"]}.isdisjoint({data_id, dir_id, open_upload}), what
        # Nothing carol did changed bob's upload: it continues from his 10 bytes.
        status = (await api.call("GET", f"/upload/{open_upload}", "bob")).json()
        assert status["size"] == 10 and status["is_ready"] is False

    # The engine as carol: refused before anything is planned or written.
    async with client(server, tmp_path / "carol", user="carol") as fx:
        with pytest.raises(NotFoundError):
            await fx.download([data_id], output_dir=tmp_path / "out")
        with pytest.raises(NotFoundError):
            await fx.bulk([data_id], output_dir=tmp_path / "bulk")
        assert not await fx.search(filename="secret")
    assert not (tmp_path / "out" / "secret.txt").exists() and not list((tmp_path / "bulk").glob("*.zip"))


HOSTILE_NAMES = [
    "..",
    ".",
    "../escape.txt",
    "../../escape.txt",
    "/etc/passwd",
    "a/b.txt",
    "..\\..\\escape.txt",
    "C:\\escape.txt",
    "%2e%2e%2fescape.txt",
    "nul\x00byte.txt",
    "new\nline.txt",
    "ｆｕｌｌｗｉｄｔｈ.txt",
    ".hidden",
    "-rf",
    "CON",
    "x" * 300,
    "é" * 128,
    "trailing.",
    "tab\there.txt",
]


async def test_filenames_never_steer_server_paths(server: RunningServer, tmp_path: Path) -> None:
    sentinel = tmp_path / "outside"
    sentinel.mkdir()
    before_outside = _entries(tmp_path)
    accepted: dict[str, str] = {}
    async with aiohttp.ClientSession() as http:
        api = Api(http, server.base_url, server.users)
        for index, name in enumerate(HOSTILE_NAMES):
            blob = f"content {index}".encode()
            answer = await api.chunk("alice", blob, filename=name, is_last=True)
            assert answer.status in (200, 400), (name, answer.status)
            if answer.status == 200:
                accepted[name] = answer.json()["id"]
                got = await api.call("GET", f"/downloads/{accepted[name]}/{_quote(name)}", "alice")
                assert got.status == 200 and got.body == blob, name
        # A directory upload whose members try to climb out is refused whole.
        climbing = _tar({"ok.txt": b"ok", "../../../escaped.txt": b"x"})
        refused = await api.chunk("alice", climbing, filename="t.tar", is_last=True, extra={"is_directory": "true"})
        assert refused.status == 400, refused.body
    assert {"..", ".", "../escape.txt", "/etc/passwd", "a/b.txt", "nul\x00byte.txt"}.isdisjoint(accepted)
    # Every stored byte lives under the root, in files named by id, never by a client's filename.
    assert _entries(tmp_path) == before_outside
    assert not list(sentinel.iterdir())
    for path in server.root.rglob("*"):
        assert path.resolve().is_relative_to(server.root.resolve()), path
        assert not path.is_symlink(), path
    names = {p.name for p in server.root.rglob("*")}
    for name in accepted:
        assert name not in names and os.path.basename(name) not in names - {"data"}, name
    stored = {p.name for p in (server.root / "data").iterdir()}
    assert set(accepted.values()) <= {n.split(".")[0] for n in stored}, stored


def _entries(folder: Path) -> set[Path]:
    return set(folder.iterdir())


def _quote(name: str) -> str:
    from urllib.parse import quote

    return quote(name, safe="")

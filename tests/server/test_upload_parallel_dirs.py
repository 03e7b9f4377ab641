"""Directory uploads through the parallel-chunk extension [ext]: unpacked at finish exactly as the strict last chunk.

``sync --pack-small`` sends its tar on several connections against our
server; the server's ``finish`` must then do what the strict protocol's last
``is_directory`` chunk does, with the same code: the same tree, the same
refusals of unsafe archives (nothing recorded, the upload left open).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import aiohttp
import anyio

from flowxfer.protocol import checksum_of
from flowxfer.server import ServerConfig
from flowxfer.server._app import _open_state
from tests.server.conftest import Api
from tests.server.test_upload import _tar_bytes
from tests.server.test_upload_parallel import CHUNK, _finish, _open, _put
from tests.support.server import DEFAULT_USERS, RunningServer, ServerProcess

FILES = {
    "run/a.txt": b"alpha",
    "run/sub/b.bin": os.urandom(3 * CHUNK + 17),
    "run/c d.txt": b"",
    "run/sub/deep/e.bin": os.urandom(CHUNK // 2),
}


async def _parallel(api: Api, archive: bytes, **extra: object) -> str:
    data_id = await _open(api, len(archive), is_directory=True, **extra)
    offsets = list(range(0, len(archive), CHUNK))
    answers = await asyncio.gather(*(_put(api, data_id, archive, o) for o in offsets[::-1]))
    assert {a.status for a in answers} == {200}, [a.body for a in answers]
    return data_id


async def _listing(api: Api, data_id: str) -> dict[str, tuple[int, str]]:
    answer = await api.call("GET", f"/data/{data_id}/files", "alice")
    assert answer.status == 200, answer.body
    return {f["path"]: (f["size"], f["checksum"]) for f in answer.json()["files"]}


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


async def test_a_parallel_directory_upload_lands_the_strict_ones_tree(api: Api, server: RunningServer) -> None:
    archive = _tar_bytes(FILES, "w")
    strict = await api.upload("alice", archive, "p.bin", chunk_size=CHUNK, extra={"is_directory": "true"})
    data_id = await _parallel(api, archive)
    code, body = await _finish(api, data_id, archive)
    assert code == 200 and body["checksum"] == checksum_of(archive), body
    meta = (await api.call("GET", f"/data/{data_id}", "alice")).json()
    assert meta["is_directory"] is True and meta["size"] == len(archive)
    assert await _listing(api, data_id) == await _listing(api, strict)
    assert await _listing(api, data_id) == {p: (len(c), checksum_of(c)) for p, c in FILES.items()}
    trees = server.root / "trees"
    assert _tree(trees / data_id) == _tree(trees / strict) == FILES
    assert not list(trees.glob("*.tmp"))
    # The archive stays the data's content; a lost finish answer gets the same answer again.
    assert (await api.call("GET", f"/downloads/{data_id}/p.bin", "alice")).body == archive
    assert await _finish(api, data_id, archive) == (code, body)


async def test_an_unsafe_archive_is_refused_at_finish_and_nothing_is_recorded(api: Api, server: RunningServer) -> None:
    archive = _tar_bytes({"../escape.txt": b"x" * CHUNK, "ok.txt": b"y"}, "w")
    data_id = await _parallel(api, archive)
    code, body = await _finish(api, data_id, archive)
    assert code == 400 and "cannot unpack the directory archive" in body["error"], body
    status = (await api.call("GET", f"/upload/{data_id}", "alice")).json()
    assert status["state"] == "uploading" and status["is_ready"] is False
    assert (await api.call("GET", f"/data/{data_id}", "alice")).status == 404
    assert not (server.root / "escape.txt").exists() and not (server.root / "trees" / "escape.txt").exists()
    assert not list((server.root / "trees").iterdir())


async def test_a_plain_parallel_upload_is_not_unpacked(api: Api, server: RunningServer) -> None:
    archive = _tar_bytes(FILES, "w")
    data_id = await _open(api, len(archive))
    for offset in range(0, len(archive), CHUNK):
        assert (await _put(api, data_id, archive, offset)).status == 200
    assert (await _finish(api, data_id, archive))[0] == 200
    assert (await api.call("GET", f"/data/{data_id}", "alice")).json()["is_directory"] is False
    assert (await api.call("GET", f"/data/{data_id}/files", "alice")).status == 404
    assert not (server.root / "trees" / data_id).exists()


async def test_is_directory_must_be_a_json_boolean(api: Api) -> None:
    for value in ("true", 1, None, [True]):
        answer = await api.call(
            "POST",
            "/upload/parallel",
            "alice",
            json={"filename": "p.tar", "size": 10, "chunk_size": CHUNK, "is_directory": value},
        )
        assert answer.status == 400 and "is_directory" in answer.json()["error"], (value, answer.body)


async def test_a_restart_in_its_finalize_unpacks_the_tree_again(tmp_path: Path) -> None:
    """A crash between the ``finalizing`` commit and the move: start-up recovery rebuilds the tree,
    as for a strict directory upload (the record says it is a directory)."""
    root = tmp_path / "root"
    archive = _tar_bytes(FILES, "w")
    async with ServerProcess(root) as proc, aiohttp.ClientSession() as session:
        api = Api(session, proc.base_url, DEFAULT_USERS)
        data_id = await _parallel(api, archive)

    def crash_in_finalize() -> None:
        # What finish leaves when killed right after its commit: finalizing, the file still partial.
        state = _open_state(ServerConfig(root=root, users=DEFAULT_USERS, scrypt_n=2**10))
        state.store.commit_chunk(data_id, len(archive), None, final_checksum=checksum_of(archive))
        state.store.close()
        state.io.shutdown()

    await anyio.to_thread.run_sync(crash_in_finalize)
    async with ServerProcess(root) as proc, aiohttp.ClientSession() as session:
        api = Api(session, proc.base_url, DEFAULT_USERS)
        assert await _listing(api, data_id) == {p: (len(c), checksum_of(c)) for p, c in FILES.items()}
        assert (await api.call("GET", f"/downloads/{data_id}/p.bin", "alice")).body == archive
    assert _tree(root / "trees" / data_id) == FILES

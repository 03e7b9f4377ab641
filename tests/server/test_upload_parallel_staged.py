"""A parallel directory upload is unpacked from its in-order prefix while it arrives [ext].

``finish`` used to unpack the whole archive while its answer waited (about a
second for 2,000 files of 64 KiB). Now each recorded chunk that extends the
in-order prefix is unpacked into the upload's staging folder
(``trees/<id>.tmp``) as it is hashed; ``finish`` compares the whole file's
checksum first and only then publishes the folder. What must hold: nothing
visible before that check, the same refusals as the archive road, and a
``kill -9`` at any point leaves nothing the next run could mistake for a
finished tree.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import aiohttp
import anyio

from flowxfer.protocol import checksum_of
from tests.server.conftest import Api
from tests.server.test_upload import _tar_bytes
from tests.server.test_upload_parallel import CHUNK, _finish, _open, _put
from tests.server.test_upload_parallel_dirs import _listing, _tree
from tests.support.server import DEFAULT_USERS, RunningServer, ServerProcess

#: Forty members over about four chunks: the prefix grows chunk by chunk.
FILES = {f"run/sub/f{i:03d}.bin": os.urandom(5000 + 37 * i) for i in range(40)}


async def _until(check: Callable[[], bool], what: str) -> None:
    """Poll the server's folder (written by its worker threads: there is no event to wait on)."""
    for _ in range(1000):
        if check():
            return
        await anyio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def _held(folder: Path) -> dict[str, bytes]:
    return _tree(folder) if folder.is_dir() else {}


async def _send(api: Api, data_id: str, archive: bytes, offsets: list[int]) -> None:
    for offset in offsets:
        answer = await _put(api, data_id, archive, offset)
        assert answer.status == 200, answer.body


async def _staged_whole(api: Api, server: RunningServer) -> tuple[bytes, str, Path]:
    """A directory upload with every chunk sent and every member staged, not finished: archive, id, staging."""
    archive = _tar_bytes(FILES, "w")
    data_id = await _open(api, len(archive), is_directory=True)
    await _send(api, data_id, archive, list(range(0, len(archive), CHUNK)))
    staging = server.root / "trees" / f"{data_id}.tmp"
    # The head start runs after each chunk's answer: every member lands in staging without a finish.
    await _until(lambda: _held(staging) == FILES, "the members in the staging folder")
    return archive, data_id, staging


async def test_members_are_unpacked_before_finish_and_shown_only_after_it(api: Api, server: RunningServer) -> None:
    archive, data_id, staging = await _staged_whole(api, server)
    trees = staging.parent
    assert not (trees / data_id).exists()
    assert (await api.call("GET", f"/data/{data_id}/files", "alice")).status == 404
    code, body = await _finish(api, data_id, archive)
    assert code == 200 and body["checksum"] == checksum_of(archive), body
    assert _tree(trees / data_id) == FILES and not staging.exists()
    assert await _listing(api, data_id) == {p: (len(c), checksum_of(c)) for p, c in FILES.items()}


async def test_a_wrong_whole_file_checksum_publishes_nothing(api: Api, server: RunningServer) -> None:
    archive = _tar_bytes(FILES, "w")
    data_id = await _open(api, len(archive), is_directory=True)
    await _send(api, data_id, archive, list(range(0, len(archive), CHUNK)))
    staging = server.root / "trees" / f"{data_id}.tmp"
    await _until(lambda: _held(staging) == FILES, "the members in the staging folder")
    code, body = await _finish(api, data_id, archive + b"other bytes")
    assert code == 422, body
    assert not (server.root / "trees" / data_id).exists()
    assert (await api.call("GET", f"/data/{data_id}/files", "alice")).status == 404
    assert (await api.call("GET", f"/upload/{data_id}", "alice")).json()["state"] == "uploading"
    # The right checksum then finishes it, the tree whole (staged again from the archive).
    code, body = await _finish(api, data_id, archive)
    assert code == 200, body
    assert _tree(server.root / "trees" / data_id) == FILES


async def test_a_member_refused_after_others_were_staged_leaves_no_tree(api: Api, server: RunningServer) -> None:
    files = {**FILES, "run/zz/../../../escape.txt": b"x" * 100}
    archive = _tar_bytes(files, "w")
    data_id = await _open(api, len(archive), is_directory=True)
    await _send(api, data_id, archive, list(range(0, len(archive), CHUNK)))
    code, body = await _finish(api, data_id, archive)
    assert code == 400 and "cannot unpack the directory archive" in body["error"], body
    assert "'..' in member path" in body["error"], body
    assert (await api.call("GET", f"/upload/{data_id}", "alice")).json()["state"] == "uploading"
    assert not list((server.root / "trees").iterdir())
    assert not list(server.root.rglob("escape.txt"))


async def test_an_archive_the_stream_does_not_take_is_unpacked_at_finish(api: Api, server: RunningServer) -> None:
    archive = _tar_bytes(FILES, "w:gz")  # compressed: not a plain tar, the archive road unpacks it
    data_id = await _open(api, len(archive), is_directory=True)
    await _send(api, data_id, archive, list(range(0, len(archive), CHUNK)))
    code, body = await _finish(api, data_id, archive)
    assert code == 200, body
    assert _tree(server.root / "trees" / data_id) == FILES
    assert not list((server.root / "trees").glob("*.tmp"))


async def test_kill_9_with_members_staged_then_the_upload_resumes_and_finishes(tmp_path: Path) -> None:
    root = tmp_path / "root"
    archive = _tar_bytes(FILES, "w")
    offsets = list(range(0, len(archive), CHUNK))
    staging = root / "trees"
    proc = ServerProcess(root)
    await anyio.to_thread.run_sync(proc.start)
    try:
        async with aiohttp.ClientSession() as session:
            api = Api(session, proc.base_url, DEFAULT_USERS)
            data_id = await _open(api, len(archive), is_directory=True)
            await _send(api, data_id, archive, offsets[:2])
            staging = root / "trees" / f"{data_id}.tmp"
            await _until(lambda: len(_held(staging)) > 0, "members in the staging folder")
        await anyio.to_thread.run_sync(proc.kill)
        await anyio.to_thread.run_sync(proc.start)
        # Start-up recovery drops the head start: nobody was told of it.
        assert not staging.exists()
        async with aiohttp.ClientSession() as session:
            api = Api(session, proc.base_url, DEFAULT_USERS)
            await _send(api, data_id, archive, offsets[2:])
            await _until(lambda: _held(staging) == FILES, "the members staged again after the restart")
        await anyio.to_thread.run_sync(proc.kill)  # every chunk held, the staging whole, no finish yet
        await anyio.to_thread.run_sync(proc.start)
        assert not staging.exists()
        async with aiohttp.ClientSession() as session:
            api = Api(session, proc.base_url, DEFAULT_USERS)
            code, body = await _finish(api, data_id, archive)
            assert code == 200 and body["checksum"] == checksum_of(archive), body
            assert await _listing(api, data_id) == {p: (len(c), checksum_of(c)) for p, c in FILES.items()}
        assert _tree(root / "trees" / data_id) == FILES and not staging.exists()
    finally:
        await anyio.to_thread.run_sync(proc.kill)


async def test_a_finish_refused_for_its_checksum_leaves_no_staged_tree(api: Api, server: RunningServer) -> None:
    """A ``finish`` that does not publish the head start leaves no copy of the tree on disk: the next
    ``finish`` stages again from the archive, and an upload given up after a refusal is never finished."""
    archive, data_id, staging = await _staged_whole(api, server)
    trees = staging.parent
    code, body = await _finish(api, data_id, archive + b"other bytes")
    assert code == 422, body
    # Nothing writes the staging folder any more (every slot is recorded, the head start was dropped).
    assert not staging.exists(), sorted(p.name for p in trees.iterdir())
    assert not list(trees.iterdir())
    # The upload stays open and the right checksum still finishes it, staged again from the archive.
    code, body = await _finish(api, data_id, archive)
    assert code == 200, body
    assert _tree(trees / data_id) == FILES and not staging.exists()

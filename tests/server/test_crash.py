"""kill -9 of a real ``flowxfer serve`` mid-upload: nothing acknowledged is lost, nothing partial shows."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import aiohttp
import anyio

from flowxfer.protocol import checksum_of
from tests.server.conftest import Api
from tests.support.server import DEFAULT_USERS, ServerProcess

CHUNK = 256 * 1024


async def test_sigkill_mid_upload_then_restart_and_finish(tmp_path: Path) -> None:
    root = tmp_path / "root"
    data = os.urandom(10 * CHUNK + 777)
    async with ServerProcess(root) as proc, aiohttp.ClientSession() as session:
        api = Api(session, proc.base_url, DEFAULT_USERS)
        data_id = ""
        acked = 0
        for i in range(4):
            blob = data[i * CHUNK : (i + 1) * CHUNK]
            answer = await api.chunk(
                "alice",
                blob,
                filename="big.bin",
                offset=i * CHUNK,
                data_id=data_id,
                extra={"checksum": checksum_of(blob)},
            )
            assert answer.status == 200
            data_id = answer.json()["id"]
            acked = answer.json()["size"]
        # A fifth chunk is on the wire (only half of it sent) when the server dies.
        reader, writer = await asyncio.open_connection("127.0.0.1", proc.port)
        token = await api.token("alice")
        boundary = "xxBOUNDARYxx"
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="filename"\r\n\r\nbig.bin\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="expected_file_size"\r\n\r\n{acked}\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="data"\r\n\r\n{data_id}\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="blob"; filename="big.bin"\r\n\r\n'
        )
        body_len = len(head) + CHUNK + len(f"\r\n--{boundary}--\r\n")
        writer.write(
            (
                f"POST /upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
                f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
                f"Content-Length: {body_len}\r\n\r\n"
            ).encode()
            + head.encode()
            + data[acked : acked + CHUNK // 2]
        )
        await writer.drain()
        await asyncio.sleep(0.3)  # let the server write part of it into the partial file
        assert proc.proc is not None
        os.kill(proc.proc.pid, signal.SIGKILL)
        await proc.akill()
        writer.close()
        await reader.read()
        await writer.wait_closed()

        # Nothing about the upload is visible as data while the server is down and after restart.
        await proc.arestart()
        api = Api(session, proc.base_url, DEFAULT_USERS)
        status = (await api.call("GET", f"/upload/{data_id}", "alice")).json()
        assert status["size"] == acked and status["is_ready"] is False
        assert [c["offset"] for c in status["chunks"]] == [0, CHUNK, 2 * CHUNK, 3 * CHUNK]
        for c in status["chunks"]:
            assert c["checksum"] == checksum_of(data[c["offset"] : c["offset"] + c["size"]])
        assert (await api.call("GET", f"/data/{data_id}", "alice")).status == 404
        assert (await api.call("GET", "/data/owned", "alice")).json()["count"] == 0
        assert not (root / "data" / data_id).exists()

        offset = status["size"]
        while offset < len(data):
            blob = data[offset : offset + CHUNK]
            last = offset + len(blob) == len(data)
            extra = {"checksum": checksum_of(blob)} | ({"file_checksum": checksum_of(data)} if last else {})
            answer = await api.chunk(
                "alice", blob, filename="big.bin", offset=offset, data_id=data_id, is_last=last, extra=extra
            )
            assert answer.status == 200, answer.body
            offset = answer.json()["size"]
        got = await api.call("GET", f"/downloads/{data_id}/big.bin", "alice")
        assert got.status == 200 and got.body == data
        assert got.headers["X-Checksum"] == checksum_of(data)
        assert not (root / "partial" / data_id).exists()


async def test_sigterm_shuts_down_cleanly(tmp_path: Path) -> None:
    proc = ServerProcess(tmp_path / "root")
    await proc.astart()
    assert await proc.aterminate() == 0
    log = proc.log_path.read_text()
    assert "Traceback" not in log


async def test_restart_finishes_an_interrupted_finalize(tmp_path: Path) -> None:
    """The state a crash between 'commit finalizing' and 'rename into data/' leaves, recovered at start-up."""
    from flowxfer.server import ServerConfig
    from flowxfer.server._app import _open_state
    from flowxfer.server._store import ChunkRow, DataRow

    root = tmp_path / "root"
    data = b"finished but not yet moved"

    def crash_state() -> DataRow:
        state = _open_state(ServerConfig(root=root, users=DEFAULT_USERS, scrypt_n=2**10))
        row = DataRow(
            "123456789012345678", "alice", "late.txt", None, False, True, "uploading", 0, None, 0.0, 0.0, None
        )
        (root / "partial" / row.id).write_bytes(data + b"torn tail")  # recovery must not keep the tail
        state.store.commit_chunk(
            row.id, 0, ChunkRow(0, len(data), checksum_of(data)), new=row, final_checksum=checksum_of(data)
        )
        state.store.close()
        state.io.shutdown()
        return row

    row = await anyio.to_thread.run_sync(crash_state)
    async with ServerProcess(root) as proc, aiohttp.ClientSession() as session:
        api = Api(session, proc.base_url, DEFAULT_USERS)
        got = await api.call("GET", f"/downloads/{row.id}/late.txt", "alice")
        assert got.status == 200 and got.body == data
        assert (await api.call("GET", f"/data/{row.id}", "alice")).json()["checksum"] == checksum_of(data)
    assert not (root / "partial" / row.id).exists()


async def test_restart_sets_aside_a_whole_upload_that_was_never_recorded(tmp_path: Path) -> None:
    """A crash after a whole upload's file was written to data/ but before its row was committed.

    Nobody was told its id, so start-up moves it to orphans/ (kept: a database restored from a
    backup also names fewer files); recorded data beside it stays, and what is not an upload's
    file (a folder, a name that is no id) is left alone and does not stop the start.
    """
    root = tmp_path / "root"
    async with ServerProcess(root) as proc, aiohttp.ClientSession() as session:
        api = Api(session, proc.base_url, DEFAULT_USERS)
        kept = await api.upload("alice", b"recorded", "kept.txt")
    orphan = root / "data" / "987654321098765432"
    orphan.write_bytes(b"written, never recorded")
    (root / "data" / "lost+found").mkdir()
    (root / "data" / "README.operator").write_text("not an upload")
    async with ServerProcess(root) as proc, aiohttp.ClientSession() as session:
        api = Api(session, proc.base_url, DEFAULT_USERS)
        assert (await api.call("GET", f"/downloads/{kept}/kept.txt", "alice")).body == b"recorded"
    assert not orphan.exists()
    assert (root / "orphans" / orphan.name).read_bytes() == b"written, never recorded"
    assert sorted(p.name for p in (root / "data").iterdir()) == sorted([kept, "lost+found", "README.operator"])


async def test_sigkill_at_random_instants(tmp_path: Path) -> None:
    """A client uploads non-stop; the server is killed at a random moment, three times, then the upload finishes.

    After every restart the server holds at least everything it acknowledged, every recorded chunk matches
    the source bytes, and nothing is visible as data.
    """
    import random

    root = tmp_path / "root"
    data = os.urandom(48 * CHUNK)
    rng = random.Random(1234)
    proc = ServerProcess(root)
    await proc.astart()
    data_id = ""
    acked = 0
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(3):
                api = Api(session, proc.base_url, DEFAULT_USERS)
                await api.token("alice")

                async def pump(api: Api = api) -> None:
                    nonlocal data_id, acked
                    while acked < len(data) - CHUNK:
                        blob = data[acked : acked + CHUNK]
                        answer = await api.chunk(
                            "alice",
                            blob,
                            filename="r.bin",
                            offset=acked,
                            data_id=data_id,
                            extra={"checksum": checksum_of(blob)},
                        )
                        if answer.status != 200:
                            return
                        data_id, acked = answer.json()["id"], answer.json()["size"]

                task = asyncio.create_task(pump())
                await asyncio.sleep(rng.uniform(0.05, 0.4))
                await proc.akill()
                try:
                    await task
                except (aiohttp.ClientError, OSError):
                    pass
                await proc.arestart()
                api = Api(session, proc.base_url, DEFAULT_USERS)
                if not data_id:
                    continue
                status = (await api.call("GET", f"/upload/{data_id}", "alice")).json()
                assert status["size"] >= acked and status["is_ready"] is False
                for c in status["chunks"]:
                    assert c["checksum"] == checksum_of(data[c["offset"] : c["offset"] + c["size"]])
                assert (await api.call("GET", "/data/owned", "alice")).json()["count"] == 0
                acked = status["size"]
            api = Api(session, proc.base_url, DEFAULT_USERS)
            while acked < len(data):
                blob = data[acked : acked + CHUNK]
                last = acked + len(blob) == len(data)
                answer = await api.chunk("alice", blob, filename="r.bin", offset=acked, data_id=data_id, is_last=last)
                assert answer.status == 200, answer.body
                data_id, acked = answer.json()["id"], answer.json()["size"]
            got = await api.call("GET", f"/downloads/{data_id}/r.bin", "alice")
            assert got.body == data
    finally:
        await proc.akill()

"""Parallel-chunk uploads [ext]: chunks at their offsets in any order, stored once, assembled when complete."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import aiohttp

from flowxfer.protocol import checksum_of
from tests.server.conftest import Answer, Api
from tests.support.server import RunningServer, ServerProcess, running_server

CHUNK = 64 * 1024


async def _open(api: Api, size: int, chunk_size: int = CHUNK, filename: str = "p.bin", **extra: object) -> str:
    answer = await api.call(
        "POST",
        "/upload/parallel",
        "alice",
        json={"filename": filename, "size": size, "chunk_size": chunk_size, **extra},
    )
    assert answer.status == 200, answer.body
    body = answer.json()
    assert body["size"] == 0 and body["total"] == size and body["is_ready"] is False
    return str(body["id"])


async def _put(api: Api, data_id: str, data: bytes, offset: int, size: int = CHUNK, **kw: str) -> Answer:
    blob = data[offset : offset + size]
    extra = {"checksum": checksum_of(blob), **kw}
    return await api.chunk(
        "alice", blob, filename="p.bin", offset=offset, data_id=data_id, extra=extra, path=f"/upload/parallel/{data_id}"
    )


async def _finish(api: Api, data_id: str, data: bytes | None) -> tuple[int, dict]:
    body = {"file_checksum": checksum_of(data)} if data is not None else {}
    answer = await api.call("POST", f"/upload/parallel/{data_id}/finish", "alice", json=body)
    return answer.status, answer.json()


async def test_chunks_out_of_order_on_many_connections_assemble_exactly(api: Api) -> None:
    data = os.urandom(CHUNK * 7 + 1234)
    data_id = await _open(api, len(data))
    offsets = list(range(0, len(data), CHUNK))
    order = offsets[::-1][:4] + offsets[::-1][4:][::-1]  # last first, then the rest scrambled
    answers = await asyncio.gather(*(_put(api, data_id, data, o) for o in order))
    assert [a.status for a in answers] == [200] * len(order), [a.body for a in answers]
    status = (await api.call("GET", f"/upload/{data_id}", "alice")).json()
    assert status["size"] == len(data) and status["is_ready"] is False
    assert status["parallel"] == {"total": len(data), "chunk_size": CHUNK}
    assert [c["offset"] for c in status["chunks"]] == offsets
    # Not visible until finished.
    assert (await api.call("GET", f"/data/{data_id}", "alice")).status == 404
    code, body = await _finish(api, data_id, data)
    assert code == 200 and body["is_ready"] and body["checksum"] == checksum_of(data)
    assert (await api.call("GET", f"/downloads/{data_id}/p.bin", "alice")).body == data
    # A lost finish answer: finishing again says the same.
    assert await _finish(api, data_id, data) == (code, body)


async def test_a_chunk_sent_twice_is_stored_once_and_different_bytes_are_409(api: Api, server: RunningServer) -> None:
    data = os.urandom(CHUNK * 3)
    data_id = await _open(api, len(data))
    first = await _put(api, data_id, data, CHUNK)
    again = await _put(api, data_id, data, CHUNK)
    assert first.status == again.status == 200, again.body
    assert first.json() == again.json()
    other = os.urandom(CHUNK)
    forged = await api.chunk(
        "alice", other, filename="p.bin", offset=CHUNK, data_id=data_id, path=f"/upload/parallel/{data_id}"
    )
    assert forged.status == 409, forged.body
    assert forged.json()["offset"] == CHUNK and forged.json()["checksum"] == checksum_of(data[CHUNK : 2 * CHUNK])
    status = (await api.call("GET", f"/upload/{data_id}", "alice")).json()
    assert status["size"] == CHUNK and len(status["chunks"]) == 1
    partial = server.root / "partial" / data_id
    assert partial.read_bytes()[CHUNK : 2 * CHUNK] == data[CHUNK : 2 * CHUNK]  # never overwritten


async def test_finish_names_the_missing_chunks_and_assembles_nothing(api: Api) -> None:
    data = os.urandom(CHUNK * 4)
    data_id = await _open(api, len(data))
    for offset in (0, 2 * CHUNK):
        assert (await _put(api, data_id, data, offset)).status == 200
    code, body = await _finish(api, data_id, data)
    assert code == 400 and body["missing_count"] == 2
    assert body["missing"] == [{"offset": CHUNK, "size": CHUNK}, {"offset": 3 * CHUNK, "size": CHUNK}]
    assert (await api.call("GET", f"/data/{data_id}", "alice")).status == 404
    for offset in (CHUNK, 3 * CHUNK):
        assert (await _put(api, data_id, data, offset)).status == 200
    wrong = await api.call(
        "POST", f"/upload/parallel/{data_id}/finish", "alice", json={"file_checksum": checksum_of(b"other")}
    )
    assert wrong.status == 422 and wrong.json()["received"] == checksum_of(data)
    assert (await _finish(api, data_id, data))[0] == 200


async def test_bad_chunks_are_refused_and_leave_their_slot_open(api: Api) -> None:
    data = os.urandom(CHUNK * 2 + 10)
    data_id = await _open(api, len(data))
    path = f"/upload/parallel/{data_id}"
    damaged = await api.chunk(
        "alice", data[:CHUNK], offset=0, filename="p.bin", extra={"checksum": checksum_of(b"x")}, path=path
    )
    assert damaged.status == 422
    misaligned = await api.chunk("alice", data[5 : CHUNK + 5], offset=5, filename="p.bin", path=path)
    assert misaligned.status == 400 and "where a chunk" in misaligned.json()["error"]
    short = await api.chunk("alice", data[:100], offset=0, filename="p.bin", path=path)
    assert short.status == 400 and "must be" in short.json()["error"]
    long = await api.chunk("alice", data[: CHUNK + 1], offset=0, filename="p.bin", path=path)
    assert long.status == 413
    beyond = await api.chunk("alice", b"x", offset=3 * CHUNK, filename="p.bin", path=path)
    assert beyond.status == 400
    renamed = await api.chunk("alice", data[:CHUNK], offset=0, filename="q.bin", path=path)
    assert renamed.status == 400
    status = (await api.call("GET", f"/upload/{data_id}", "alice")).json()
    assert status["size"] == 0 and status["chunks"] == []
    for offset, size in ((0, CHUNK), (CHUNK, CHUNK), (2 * CHUNK, 10)):
        assert (await _put(api, data_id, data, offset, size)).status == 200
    assert (await _finish(api, data_id, None))[1]["checksum"] == checksum_of(data)


async def test_only_the_starter_may_send_chunks_and_strict_uploads_stay_strict(api: Api) -> None:
    data = os.urandom(CHUNK)
    data_id = await _open(api, len(data))
    blob = await api.chunk("bob", data, offset=0, filename="p.bin", path=f"/upload/parallel/{data_id}")
    assert blob.status == 404
    assert (await api.call("POST", f"/upload/parallel/{data_id}/finish", "bob", json={})).status == 404
    # A strict upload's id on the parallel route, and a parallel upload's on the strict one.
    strict = (await api.chunk("alice", data[:10], filename="s.bin")).json()["id"]
    refused = await api.chunk("alice", data[10:20], offset=10, filename="s.bin", path=f"/upload/parallel/{strict}")
    assert refused.status == 400 and "parallel" in refused.json()["error"]
    assert (await api.call("POST", f"/upload/parallel/{strict}/finish", "alice", json={})).status == 400
    two = os.urandom(2 * CHUNK)
    both = await _open(api, len(two))
    assert (await _put(api, both, two, CHUNK)).status == 200
    appended = await api.chunk("alice", two[:CHUNK], offset=CHUNK, filename="p.bin", data_id=both, is_last=True)
    assert appended.status == 400 and "parallel" in appended.json()["error"]
    assert (await _put(api, both, two, 0)).status == 200
    assert (await _finish(api, both, two))[1]["checksum"] == checksum_of(two)
    for body in (
        {"filename": "a b", "size": 1, "chunk_size": 1},
        {"filename": "a", "size": -1, "chunk_size": 1},
        {"filename": "a", "size": 1, "chunk_size": 0},
        {"filename": "a", "size": True, "chunk_size": 1},
        {"filename": "a", "size": 1, "chunk_size": 2**40},
        {"size": 1, "chunk_size": 1},
    ):
        answer = await api.call("POST", "/upload/parallel", "alice", json=body)
        assert answer.status == 400, (body, answer.body)


async def test_an_empty_file(api: Api) -> None:
    data_id = await _open(api, 0)
    code, body = await _finish(api, data_id, b"")
    assert code == 200 and body["size"] == 0
    assert (await api.call("GET", f"/downloads/{data_id}/p.bin", "alice")).body == b""


async def test_no_extensions_hides_it(server_root: Path, http: aiohttp.ClientSession) -> None:
    async with running_server(server_root, extensions=False) as srv:
        api = Api(http, srv.base_url, srv.users)
        opened = await api.call("POST", "/upload/parallel", "alice", json={"filename": "a", "size": 1, "chunk_size": 1})
        assert opened.status == 404
        strict = (await api.chunk("alice", b"0123456789", filename="s.bin")).json()["id"]
        chunk = await api.chunk("alice", b"x", offset=0, filename="s.bin", path=f"/upload/parallel/{strict}")
        assert chunk.status == 404
        assert (await api.call("POST", f"/upload/parallel/{strict}/finish", "alice", json={})).status == 404
    async with running_server(server_root) as srv:
        caps = (await Api(http, srv.base_url, srv.users).call("GET", "/capabilities")).json()
        assert caps["parallel_chunks"] is True


async def test_a_restart_keeps_every_acknowledged_chunk(server_root: Path, http: aiohttp.ClientSession) -> None:
    data = os.urandom(CHUNK * 5)
    async with running_server(server_root) as srv:
        api = Api(http, srv.base_url, srv.users)
        data_id = await _open(api, len(data))
        for offset in (4 * CHUNK, CHUNK, 0):
            assert (await _put(api, data_id, data, offset)).status == 200
    async with running_server(server_root) as srv:
        api = Api(http, srv.base_url, srv.users)
        status = (await api.call("GET", f"/upload/{data_id}", "alice")).json()
        assert [c["offset"] for c in status["chunks"]] == [0, CHUNK, 4 * CHUNK]
        for offset in (2 * CHUNK, 3 * CHUNK):
            assert (await _put(api, data_id, data, offset)).status == 200
        code, body = await _finish(api, data_id, data)
        assert code == 200 and body["checksum"] == checksum_of(data)
        assert (await api.call("GET", f"/downloads/{data_id}/p.bin", "alice")).body == data


async def _torn_chunk(base_url: str, token: str, data_id: str, blob: bytes, offset: int, sent: int) -> None:
    """A chunk whose connection is cut after ``sent`` bytes of its blob: the client vanished mid-body."""
    boundary = "torn"
    fields = {"filename": "p.bin", "expected_file_size": str(offset), "data": data_id}
    head = "".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n' for k, v in fields.items()
    )
    head += f'--{boundary}\r\nContent-Disposition: form-data; name="blob"; filename="b"\r\n\r\n'
    reader, writer = await asyncio.open_connection("127.0.0.1", int(base_url.rsplit(":", 1)[1]))
    writer.write(
        (
            f"POST /upload/parallel/{data_id} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
            f"Content-Length: {len(head) + len(blob) + 100}\r\n\r\n{head}"
        ).encode()
        + blob[:sent]
    )
    await writer.drain()
    await asyncio.sleep(0.3)  # let the server write what it got into the slot
    writer.transport.abort()


async def test_a_torn_chunk_is_never_acknowledged_nor_assembled(api: Api, server: RunningServer) -> None:
    data = os.urandom(CHUNK * 3)
    data_id = await _open(api, len(data))
    for offset in (0, 2 * CHUNK):
        assert (await _put(api, data_id, data, offset)).status == 200
    forged = os.urandom(CHUNK)
    await _torn_chunk(server.base_url, await api.token("alice"), data_id, forged, CHUNK, CHUNK - 1000)
    status = (await api.call("GET", f"/upload/{data_id}", "alice")).json()
    assert [c["offset"] for c in status["chunks"]] == [0, 2 * CHUNK]
    code, body = await _finish(api, data_id, data)
    assert code == 400 and body["missing"] == [{"offset": CHUNK, "size": CHUNK}]
    assert (await _put(api, data_id, data, CHUNK)).status == 200
    assert (await _finish(api, data_id, data))[0] == 200
    assert (await api.call("GET", f"/downloads/{data_id}/p.bin", "alice")).body == data


async def test_server_killed_mid_chunk_keeps_what_it_acknowledged(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    """kill -9 of the server while a chunk streams into its slot: the acknowledged chunks survive,
    the torn slot stays open and is filled afterwards, and the file is exact."""
    data = os.urandom(CHUNK * 4)
    async with ServerProcess(tmp_path / "root") as proc:
        api = Api(http, proc.base_url, proc.users)
        data_id = await _open(api, len(data))
        for offset in (3 * CHUNK, 0):
            assert (await _put(api, data_id, data, offset)).status == 200
        torn = asyncio.create_task(
            _torn_chunk(proc.base_url, await api.token("alice"), data_id, os.urandom(CHUNK), CHUNK, CHUNK // 2)
        )
        await asyncio.sleep(0.2)
        await proc.akill()
        await torn
        await proc.arestart()
        status = (await api.call("GET", f"/upload/{data_id}", "alice")).json()
        assert [c["offset"] for c in status["chunks"]] == [0, 3 * CHUNK] and status["size"] == 2 * CHUNK
        for offset in (2 * CHUNK, CHUNK):
            assert (await _put(api, data_id, data, offset)).status == 200
        code, body = await _finish(api, data_id, data)
        assert code == 200 and body["checksum"] == checksum_of(data)
        assert (await api.call("GET", f"/downloads/{data_id}/p.bin", "alice")).body == data

"""kill -9 of a real ``flowxfer serve`` at random instants during sample uploads.

Whatever the instant, after restart: no sample links a file that is not
ready, no file is linked twice, each sample holds its two files in order
and byte for byte, and the client's retry of a lost final chunk gets the
sample id (one sample per sample sent, never two).
"""

from __future__ import annotations

import asyncio
import os
import random
from pathlib import Path

import aiohttp
import anyio

from flowxfer.server._store import Store
from tests.server.conftest import Answer, Api
from tests.server.test_samples import RNA
from tests.support.server import DEFAULT_USERS, ServerProcess

CHUNK = 128 * 1024
FILE_SIZE = 6 * CHUNK + 99
ROUNDS = int(os.environ.get("FLOWXFER_CRASH_KILLS", "6"))


async def _send(api: Api, blob: bytes, **kwargs: object) -> Answer:
    """One chunk, sent again while the server is down or restarting (connection errors only)."""
    for _ in range(300):
        try:
            return await api.chunk("alice", blob, path="/upload/sample", **kwargs)  # type: ignore[arg-type]
        except (TimeoutError, aiohttp.ClientError):
            await asyncio.sleep(0.1)
    raise AssertionError("the server never came back")


async def _upload_file(
    api: Api, content: bytes, filename: str, fields: dict[str, str], previous: list[str]
) -> dict[str, object]:
    """A file of a sample as a careful client sends it: resume at the server's offset, replay a lost last chunk."""
    data_id, offset = "", 0
    while True:
        blob = content[offset : offset + CHUNK]
        last = offset + len(blob) >= len(content)
        answer = await _send(
            api,
            blob,
            filename=filename,
            offset=offset,
            data_id=data_id,
            is_last=last,
            extra=fields,
            lists={"previous_data": previous},
        )
        body = answer.json()
        if answer.status == 400 and "expected_file_size" in body and body["expected_file_size"] > offset:
            offset = body["expected_file_size"]  # a chunk the server kept but whose answer was lost
            continue
        assert answer.status == 200, answer.body
        data_id, offset = str(body["id"]), offset + len(blob)
        if last:
            return dict(body)


async def _one_sample(api: Api, name: str, reads: tuple[bytes, bytes]) -> str:
    previous: list[str] = []
    body: dict[str, object] = {}
    for index, content in enumerate(reads):
        fields = {"sample_name": name, "is_last_sample": "true" if index == len(reads) - 1 else "false", **RNA}
        body = await _upload_file(api, content, f"{name}_R{index + 1}.fq", fields, previous)
        previous.append(str(body["id"]))
    assert isinstance(body["sample_id"], str)
    return body["sample_id"]


async def test_kill_during_sample_uploads_leaves_whole_samples(tmp_path: Path) -> None:
    root = tmp_path / "root"
    rng = random.Random(int.from_bytes(os.urandom(4), "big"))
    sent: dict[str, tuple[bytes, bytes]] = {}
    made: dict[str, str] = {}
    async with ServerProcess(root) as proc, aiohttp.ClientSession() as session:
        api = Api(session, proc.base_url, DEFAULT_USERS)
        await api.token("alice")
        for round_number in range(ROUNDS):
            name = f"S{round_number}"
            sent[name] = (os.urandom(FILE_SIZE), os.urandom(FILE_SIZE))
            upload = asyncio.create_task(_one_sample(api, name, sent[name]))
            await asyncio.sleep(rng.uniform(0.0, 0.8))
            await proc.akill()
            await proc.arestart()
            api.base = proc.base_url
            made[name] = await asyncio.wait_for(upload, 120)
        for name, sample_id in made.items():
            detail = (await api.call("GET", f"/samples/{sample_id}", "alice")).json()
            assert detail["name"] == name
            [fileset] = detail["filesets"]
            assert [d["filename"] for d in fileset["data"]] == [f"{name}_R1.fq", f"{name}_R2.fq"]
            for entry, content in zip(fileset["data"], sent[name], strict=True):
                got = await api.call("GET", f"/downloads/{entry['id']}/{entry['filename']}", "alice")
                assert got.body == content, name
        owned = (await api.call("GET", "/samples/owned?limit=100", "alice")).json()
        assert sorted(s["name"] for s in owned["samples"]) == sorted(sent)  # one sample each, never two
    assert await anyio.to_thread.run_sync(_integrity_problems, root) == []


def _integrity_problems(root: Path) -> list[str]:
    store = Store(root)
    try:
        return list(store.integrity_problems())
    finally:
        store.close()

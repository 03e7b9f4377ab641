"""The official client, flowbio v2, against our server: log in, upload in several chunk sizes, download."""

from __future__ import annotations

import os
import time
from pathlib import Path

import aiohttp
import anyio
import pytest
from flowbio.v2.exceptions import BadRequestError

from tests.server.conftest import Api, flowbio_client
from tests.support.server import RunningServer

CHUNK = 256 * 1024


@pytest.mark.parametrize(
    ("size", "chunk_size"),
    [
        (1000, CHUNK),  # smaller than one chunk
        (4 * CHUNK, CHUNK),  # an exact multiple
        (0, CHUNK),  # empty
        (3 * CHUNK + 12345, CHUNK),  # a ragged tail
        (2_500_000, 1_000_000),  # flowbio's default chunk size
    ],
)
async def test_flowbio_upload_then_download(
    server: RunningServer, api: Api, tmp_path: Path, size: int, chunk_size: int
) -> None:
    content = os.urandom(size)
    path = tmp_path / "sample_R1.fastq.gz"
    path.write_bytes(content)

    def upload() -> str:
        with flowbio_client(server, chunk_size) as client:
            return client.data.upload_data(path).id

    data_id = await anyio.to_thread.run_sync(upload)
    meta = (await api.call("GET", f"/data/{data_id}", "alice")).json()
    assert meta["size"] == size and meta["filename"] == path.name
    whole = await api.call("GET", f"/downloads/{data_id}/{path.name}", "alice")
    assert whole.status == 200 and whole.body == content
    if size:
        start, end = size // 3, size - 2
        part = await api.call(
            "GET", f"/downloads/{data_id}/{path.name}", "alice", headers={"Range": f"bytes={start}-{end}"}
        )
        assert part.status == 206 and part.body == content[start : end + 1]
    chunks = (await api.call("GET", f"/data/{data_id}/chunks", "alice")).json()["chunks"]
    assert len(chunks) == (size + chunk_size - 1) // chunk_size


async def test_flowbio_spaces_in_filename_is_its_bad_request(server: RunningServer, tmp_path: Path) -> None:
    path = tmp_path / "has space.txt"
    path.write_bytes(b"x")

    def upload() -> None:
        with flowbio_client(server, CHUNK) as client:
            client.data.upload_data(path)

    with pytest.raises(BadRequestError) as caught:
        await anyio.to_thread.run_sync(upload)
    assert caught.value.status_code == 400


async def test_flowbio_directory_upload(server: RunningServer, api: Api, tmp_path: Path) -> None:
    import zipfile

    archive = tmp_path / "run.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("run/SampleSheet.csv", "a,b\n")

    def upload() -> str:
        with flowbio_client(server, CHUNK) as client:
            return client.data.upload_data(archive, is_directory=True).id

    data_id = await anyio.to_thread.run_sync(upload)
    files = (await api.call("GET", f"/data/{data_id}/files", "alice")).json()["files"]
    assert [f["path"] for f in files] == ["run/SampleSheet.csv"]


async def test_flowbio_refreshes_an_expired_token(server_root: Path, tmp_path: Path) -> None:
    from tests.support.server import running_server

    path = tmp_path / "late.txt"
    path.write_bytes(b"late bytes")
    async with running_server(server_root, access_ttl=1) as srv:

        def late_upload() -> str:
            with flowbio_client(srv, CHUNK) as client:
                time.sleep(2.1)  # the access token (1 s, exp rounded up: at most 2 s) is now expired
                return client.data.upload_data(path).id

        assert await anyio.to_thread.run_sync(late_upload)


async def test_flowbio_against_a_server_without_extensions(server_root: Path, tmp_path: Path) -> None:
    from tests.support.server import running_server

    content = os.urandom(3 * CHUNK + 5)
    path = tmp_path / "plain.bin"
    path.write_bytes(content)
    async with running_server(server_root, extensions=False) as srv, aiohttp.ClientSession() as session:

        def upload() -> str:
            with flowbio_client(srv, CHUNK) as client:
                return client.data.upload_data(path).id

        data_id = await anyio.to_thread.run_sync(upload)
        api = Api(session, srv.base_url, srv.users)
        got = await api.call("GET", f"/downloads/{data_id}/plain.bin", "alice", headers={"Range": "bytes=5-"})
        assert got.status == 206 and got.body == content[5:]

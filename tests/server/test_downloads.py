"""Single downloads: ranges, conditionals, headers, bare 404s, ?token=; archive jobs."""

from __future__ import annotations

import asyncio
import io
import os
import zipfile
from pathlib import Path

import aiohttp

from flowxfer.protocol import checksum_of
from tests.server.conftest import Api
from tests.support.server import running_server


async def test_ranges_and_headers(api: Api) -> None:
    data = os.urandom(100_000)
    data_id = await api.upload("alice", data, "r1.fastq.gz")
    url = f"/downloads/{data_id}/r1.fastq.gz"
    whole = await api.call("GET", url, "alice")
    assert whole.status == 200 and whole.body == data
    assert whole.headers["Accept-Ranges"] == "bytes"
    assert whole.headers["X-Checksum"] == checksum_of(data)
    assert whole.headers["Content-Disposition"].startswith('attachment; filename="r1.fastq.gz"')
    etag = whole.headers["ETag"]
    for header, expected in (
        ("bytes=0-99", data[:100]),
        ("bytes=99990-", data[99990:]),
        ("bytes=-10", data[-10:]),
        ("bytes=50000-999999", data[50000:]),
    ):
        part = await api.call("GET", url, "alice", headers={"Range": header})
        assert part.status == 206 and part.body == expected
        assert part.headers["X-Checksum"] == checksum_of(data)  # whole-file, on ranged answers too
        assert part.headers["Content-Range"].endswith("/100000")
    for bad in ("bytes=100000-", "bytes=5-1", "bytes=x-y", "lines=1-2", "bytes=0-1,4-5"):
        refused = await api.call("GET", url, "alice", headers={"Range": bad})
        assert refused.status == 416 and refused.json()["error"]
        assert refused.headers["Content-Range"] == "bytes */100000"
    same = await api.call("GET", url, "alice", headers={"Range": "bytes=0-9", "If-Range": etag})
    assert same.status == 206 and same.body == data[:10]
    changed = await api.call("GET", url, "alice", headers={"Range": "bytes=0-9", "If-Range": '"stale"'})
    assert changed.status == 200 and changed.body == data
    cached = await api.call("GET", url, "alice", headers={"If-None-Match": etag})
    assert cached.status == 304 and cached.body == b""
    head = await api.call("HEAD", url, "alice")
    assert head.status == 200 and head.body == b"" and head.headers["Content-Length"] == "100000"
    assert head.headers["X-Checksum"] == checksum_of(data)
    direct = await api.call("GET", url + "?direct=yes", "alice")
    assert direct.status == 200 and "Content-Disposition" not in direct.headers


async def test_token_in_query_and_bare_404s(api: Api) -> None:
    data_id = await api.upload("alice", b"secret bytes", "s.txt")
    token = await api.token("alice")
    via_query = await api.call("GET", f"/downloads/{data_id}/s.txt?token={token}")
    assert via_query.status == 200 and via_query.body == b"secret bytes"
    for path, user in (
        (f"/downloads/{data_id}/other.txt", "alice"),
        ("/downloads/999999999999999999/s.txt", "alice"),
        ("/downloads/nonsense/s.txt", "alice"),
        (f"/downloads/{data_id}/s.txt", "bob"),
    ):
        refused = await api.call("GET", path, user)
        assert refused.status == 404 and refused.body == b"", path
    # No token: private data is not anonymous-readable, so the bare 404 of hosted Flow.
    anonymous = await api.call("GET", f"/downloads/{data_id}/s.txt")
    assert anonymous.status == 404 and anonymous.body == b""
    assert (await api.call("GET", f"/downloads/{data_id}/s.txt?token=forged.token.here")).status == 401
    # ?token= is for downloads only: elsewhere the caller is anonymous, and the data private.
    assert (await api.call("GET", f"/data/{data_id}?token={token}")).status == 404


async def test_unicode_filename_disposition(api: Api) -> None:
    data_id = await api.upload("alice", b"x", "séquence_1.txt")
    got = await api.call("GET", f"/downloads/{data_id}/séquence_1.txt", "alice")
    assert got.status == 200
    assert "filename*=UTF-8''s%C3%A9quence_1.txt" in got.headers["Content-Disposition"]


async def _wait_job(api: Api, user: str, job_id: str) -> dict[str, object]:
    for _ in range(200):
        job = (await api.call("GET", f"/downloads/jobs/{job_id}", user)).json()
        assert 0 <= job["progress"] <= 1
        if job["status"] in ("completed", "failed"):
            return job  # type: ignore[no-any-return]
        await asyncio.sleep(0.02)
    raise AssertionError("job never finished")


async def test_archive_job(api: Api) -> None:
    a = await api.upload("alice", b"A" * 5000, "reads.fastq.gz")
    b = await api.upload("alice", b"B" * 3000, "reads.fastq.gz")
    c = await api.upload("alice", b"", "empty.txt")
    created = await api.call("POST", "/downloads", "alice", json={"data_ids": [a, b, c, a], "name": "run#1%.zip"})
    assert created.status == 202 and created.json()["status"] == "pending"
    job = await _wait_job(api, "alice", created.json()["id"])
    assert job["status"] == "completed" and job["progress"] == 1
    url = str(job["download_url"])
    archive = await api.call("GET", url, "alice")
    assert archive.status == 200 and len(archive.body) == job["size"]
    assert archive.headers["X-Checksum"] == checksum_of(archive.body)
    with zipfile.ZipFile(io.BytesIO(archive.body)) as zf:
        assert zf.namelist() == ["reads.fastq.gz", f"reads ({b}).fastq.gz", "empty.txt"]
        assert all(i.compress_type == zipfile.ZIP_STORED for i in zf.infolist())
        assert zf.read(f"reads ({b}).fastq.gz") == b"B" * 3000
    part = await api.call("GET", url, "alice", headers={"Range": "bytes=10-19"})
    assert part.status == 206 and part.body == archive.body[10:20]
    assert (await api.call("GET", url, "bob")).status == 404
    assert (await api.call("GET", f"/downloads/jobs/{job['id']}", "bob")).status == 404


async def test_job_refusals(api: Api) -> None:
    mine = await api.upload("alice", b"x", "x.txt")
    assert (await api.call("POST", "/downloads", "alice", json={"data_ids": []})).status == 400
    assert (await api.call("POST", "/downloads", "alice", json={"data_ids": [mine], "name": "a b.zip"})).status == 400
    assert (await api.call("POST", "/downloads", "alice", json={"data_ids": [mine], "name": "x.tar"})).status == 400
    assert (await api.call("POST", "/downloads", "alice", json={"data_ids": "nope"})).status == 400
    assert (await api.call("POST", "/downloads", "bob", json={"data_ids": [mine]})).status == 404
    assert (await api.call("POST", "/downloads", "alice", json={"data_ids": ["123"]})).status == 404
    assert (await api.call("GET", "/downloads/jobs/123456789012345678", "alice")).status == 404


async def test_jobs_expire(server_root: Path, http: aiohttp.ClientSession) -> None:
    async with running_server(server_root, job_ttl=2.0) as srv:  # 2 s: room to fetch it on a loaded machine
        api = Api(http, srv.base_url, srv.users)
        data_id = await api.upload("alice", b"soon gone", "g.txt")
        job_id = (await api.call("POST", "/downloads", "alice", json={"data_ids": [data_id]})).json()["id"]
        job = await _wait_job(api, "alice", job_id)
        assert (await api.call("GET", str(job["download_url"]), "alice")).status == 200
        await asyncio.sleep(2.2)
        expired = (await api.call("GET", f"/downloads/jobs/{job_id}", "alice")).json()
        assert expired["status"] == "expired" and expired["download_url"] is None
        gone = await api.call("GET", str(job["download_url"]), "alice")
        assert gone.status == 410 and gone.json()["error"]
        assert not (srv.root / "archives" / f"{job_id}.zip").exists()


async def test_jobs_survive_a_restart(server_root: Path, http: aiohttp.ClientSession) -> None:
    data = os.urandom(8 * 1024 * 1024)
    async with running_server(server_root) as srv:
        api = Api(http, srv.base_url, srv.users)
        ids = [await api.upload("alice", data, f"f{i}.bin", chunk_size=4 * 1024 * 1024) for i in range(3)]
        job_id = (await api.call("POST", "/downloads", "alice", json={"data_ids": ids})).json()["id"]
    # The server stopped with the job pending or running (or, on a fast disk, just done).
    async with running_server(server_root) as srv:
        api = Api(http, srv.base_url, srv.users)
        job = await _wait_job(api, "alice", job_id)
        assert job["status"] == "completed"
        archive = await api.call("GET", str(job["download_url"]), "alice")
        with zipfile.ZipFile(io.BytesIO(archive.body)) as zf:
            assert [zf.read(f"f{i}.bin") == data for i in range(3)] == [True] * 3
    assert not list((server_root / "archives").glob("*.tmp"))

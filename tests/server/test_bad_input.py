"""Every malformed request gets a 4xx with a JSON error (bare 404s on downloads aside), never a 500."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.server.conftest import Api
from tests.support.server import RunningServer, running_server


@pytest.mark.parametrize(
    ("filename", "fragment"),
    [
        ("has space.txt", "Spaces in filename"),
        ("a/b.txt", "Slashes"),
        ("..", ". or .."),
        ("nul\x00.txt", "Control"),
        ("x" * 256, "longer than 255"),
        ("", "Empty"),
    ],
)
async def test_bad_filenames(api: Api, filename: str, fragment: str) -> None:
    answer = await api.chunk("alice", b"x", filename=filename)
    assert answer.status == 400
    body = answer.json()
    assert fragment in body["error"]
    if " " in filename:
        assert body["filename"] == ["Spaces in filename"]  # hosted Flow's shape, which flowbio expects


@pytest.mark.parametrize("offset", ["-1", "abc", "1.5", "", "1e3", "99999999999999999999999", "١٢"])
async def test_bad_offsets(api: Api, offset: str) -> None:
    form = aiohttp.FormData()
    for name, value in (("filename", "f.bin"), ("expected_file_size", offset), ("is_last", "false"), ("data", "")):
        form.add_field(name, value)
    form.add_field("blob", b"x", filename="f.bin")
    answer = await api.call("POST", "/upload", "alice", data=form)
    assert answer.status == 400 and "expected_file_size" in answer.json()["error"]


async def test_missing_and_odd_fields(api: Api) -> None:
    cases: list[tuple[dict[str, str], bool]] = [
        ({"expected_file_size": "0"}, True),  # no filename
        ({"filename": "f"}, True),  # no offset
        ({"filename": "f", "expected_file_size": "0"}, False),  # no blob
        ({"filename": "f", "expected_file_size": "0", "is_last": "maybe"}, True),
        ({"filename": "f", "expected_file_size": "0", "checksum": "md5:abc"}, True),
        ({"filename": "f", "expected_file_size": "0", "file_checksum": "xxh3-128:zz"}, True),
        ({"filename": "f", "expected_file_size": "10", "data": "not-an-id"}, True),
        ({"filename": "f", "expected_file_size": "10", "data": "123456789012345678"}, True),
    ]
    for fields, with_blob in cases:
        form = aiohttp.FormData()
        for name, value in fields.items():
            form.add_field(name, value)
        if with_blob:
            form.add_field("blob", b"x", filename="f")
        answer = await api.call("POST", "/upload", "alice", data=form)
        assert answer.status in (400, 404) and answer.json()["error"], fields
    empty_middle = await api.chunk("alice", b"", is_last=False)
    assert empty_middle.status == 400
    two_blobs = aiohttp.FormData()
    two_blobs.add_field("filename", "f")
    two_blobs.add_field("expected_file_size", "0")
    two_blobs.add_field("blob", b"1", filename="f")
    two_blobs.add_field("blob", b"2", filename="f")
    assert (await api.call("POST", "/upload", "alice", data=two_blobs)).status == 400


async def _raw(server: RunningServer, request: bytes) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", int(server.base_url.rsplit(":", 1)[1]))
    try:
        writer.write(request)
        await writer.drain()
        response = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


async def test_malformed_multipart(server: RunningServer, api: Api) -> None:
    token = await api.token("alice")
    bodies = [
        b"not multipart at all",
        b'--B\r\nContent-Disposition: form-data; name="filename"\r\n\r\nf',  # truncated
        b"--B\r\nno colon header\r\n\r\nx\r\n--B--\r\n",
        b"--B\r\nContent-Disposition: form-data\r\n\r\nx\r\n--B--\r\n",  # part without a name
        b'--B\r\nContent-Disposition: form-data; name="blob"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\neA==\r\n--B--\r\n",
    ]
    for body in bodies:
        request = (
            b"POST /upload HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer "
            + token.encode()
            + b"\r\nContent-Type: multipart/form-data; boundary=B\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
            + body
        )
        status, answer = await _raw(server, request)
        assert status == 400 and b'"error"' in answer, body
    for content_type in ("application/json", "multipart/form-data", "text/plain"):
        refused = await api.call("POST", "/upload", "alice", data=b"{}", headers={"Content-Type": content_type})
        assert refused.status == 400 and refused.json()["error"]


async def test_bodies_over_the_limit(server_root: Path, http: aiohttp.ClientSession) -> None:
    async with running_server(server_root, max_chunk_size=64 * 1024) as srv:
        api = Api(http, srv.base_url, srv.users)
        big = await api.chunk("alice", b"x" * (64 * 1024 + 1))
        assert big.status == 413 and big.json()["error"]
        exact = await api.chunk("alice", b"x" * (64 * 1024), is_last=True)
        assert exact.status == 200
        huge = await api.chunk("alice", b"x" * (1024 * 1024))
        assert huge.status == 413
        # Chunked transfer-encoding (no Content-Length) is bounded while streaming.
        token = await api.token("alice")

        async def body() -> AsyncIterator[bytes]:
            yield b'--B\r\nContent-Disposition: form-data; name="filename"\r\n\r\nf\r\n'
            yield b'--B\r\nContent-Disposition: form-data; name="expected_file_size"\r\n\r\n0\r\n'
            yield b'--B\r\nContent-Disposition: form-data; name="data"\r\n\r\n\r\n'
            yield b'--B\r\nContent-Disposition: form-data; name="blob"; filename="f"\r\n\r\n'
            for _ in range(40):
                yield b"y" * 8192
            yield b"\r\n--B--\r\n"

        async with http.post(
            f"{srv.base_url}/upload",
            data=body(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "multipart/form-data; boundary=B"},
        ) as resp:
            assert resp.status == 413
        assert (await api.call("GET", "/data/owned", "alice")).json()["count"] == 1
        assert not list((srv.root / "partial").iterdir())
        json_body = b'{"username": "' + b"a" * 100_000 + b'"}'
        login = await api.call("POST", "/login", data=json_body, headers={"Content-Type": "application/json"})
        assert login.status == 413 and login.json()["error"]


async def test_malformed_json(api: Api) -> None:
    data_id = await api.upload("alice", b"x", "x.txt")
    for body in (b"{", b"[]", b"null", b"\xff\xfe", b"[" * 5000 + b"]" * 5000, b'{"a":' * 30 + b"1" + b"}" * 30):
        for method, path in (
            ("POST", "/login"),
            ("POST", "/downloads"),
            ("PATCH", f"/data/{data_id}"),
            ("PUT", f"/data/{data_id}/permissions"),
        ):
            user = None if path == "/login" else "alice"
            answer = await api.call(method, path, user, data=body, headers={"Content-Type": "application/json"})
            assert answer.status == 400 and answer.json()["error"], (path, body[:20])


async def test_unknown_things(api: Api) -> None:
    for method, path in (
        ("GET", "/data/123"),
        ("GET", "/data/nonsense"),
        ("GET", "/nothing/here"),
        ("DELETE", "/data/123456789012345678"),
        ("GET", "/upload/x"),
        ("POST", "/data/search"),
    ):
        answer = await api.call(method, path, "alice")
        assert 400 <= answer.status < 500 and answer.json()["error"], path


async def test_paths_and_methods_no_route_serves(api: Api) -> None:
    # 404 for a path nothing serves, 405 with Allow for a path served under other methods; with or
    # without a token, and before any authentication (a client probing learns what exists, not who).
    for user in ("alice", None):
        missing = await api.call("GET", "/nothing/here", user)
        assert missing.status == 404 and missing.json()["error"]
        wrong = await api.call("PUT", "/login", user)
        assert wrong.status == 405 and wrong.json()["error"]
        assert set(wrong.headers["Allow"].split(",")) == {"POST"}
        delete_owned = await api.call("DELETE", "/data/owned", user)
        assert delete_owned.status == 405
        assert "GET" in delete_owned.headers["Allow"]


async def test_huge_headers_are_refused(api: Api) -> None:
    answer = await api.call("GET", "/data/owned", "alice", headers={"X-Big": "x" * 20_000})
    assert 400 <= answer.status < 500


async def test_another_users_upload_id(api: Api) -> None:
    first = await api.chunk("alice", b"x" * 10)
    theirs = await api.chunk("bob", b"y", offset=10, data_id=first.json()["id"])
    assert theirs.status == 404 and theirs.json()["error"]
    # and alice's upload is untouched
    assert (await api.call("GET", f"/upload/{first.json()['id']}", "alice")).json()["size"] == 10


JUNK = ["", "-1", "0", "1e309", "nan", "99999999999999999999999999", "%00", "%FF", "true", "x" * 3000, "[]", "'"]


async def test_junk_never_makes_a_500(api: Api) -> None:
    data_id = await api.upload("alice", b"junk target", "j.txt")
    job = (await api.call("POST", "/downloads", "alice", json={"data_ids": [data_id]})).json()["id"]
    paths = [
        "/data/search",
        "/data/owned",
        f"/data/{data_id}",
        f"/data/{data_id}/chunks",
        f"/data/{data_id}/files",
        f"/upload/{data_id}",
        f"/downloads/{data_id}/j.txt",
        f"/downloads/jobs/{job}",
        "/capabilities",
    ]
    params = [
        "filename",
        "pattern",
        "owned",
        "created_gt",
        "created_lt",
        "size_gt",
        "size_lt",
        "page",
        "count",
        "limit",
        "offset",
        "token",
        "direct",
    ]
    for path in paths:
        for i, junk in enumerate(JUNK):
            query = "&".join(f"{p}={junk}" for p in params[i % 3 :: 3])
            answer = await api.call("GET", f"{path}?{query}", "alice", headers={"Range": f"bytes={junk}-"})
            assert answer.status < 500, (path, query, answer.body[:200])
    for junk_id in ["0", "-1", "1" * 40, "%2e%2e", "abc"]:
        for path in (f"/data/{junk_id}", f"/upload/{junk_id}", f"/downloads/jobs/{junk_id}"):
            answer = await api.call("GET", path, "alice")
            assert answer.status == 404 and answer.json()["error"], path
    for body in (
        {"data_ids": [None]},
        {"data_ids": [1.5]},
        {"data_ids": [data_id], "name": None},
        {"data_ids": [[data_id]]},
        {"data_ids": ["x" * 10000]},
    ):
        answer = await api.call("POST", "/downloads", "alice", json=body)
        assert 400 <= answer.status < 500, body


async def test_unparseable_requests_are_400_without_tracebacks(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    for request in (
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Bad: \x00\r\nConnection: close\r\n\r\n",
        b"GARBAGE\r\n\r\n",
        b"GET /data/owned HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\nConnection: close\r\n\r\n",
    ):
        status, _ = await _raw(server, request)
        assert status == 400
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]

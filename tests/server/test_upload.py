"""The chunked upload protocol: offsets, checksums, visibility, directories, spooling, resume."""

from __future__ import annotations

import asyncio
import io
import os
import sqlite3
import tarfile
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from flowxfer.protocol import checksum_of
from flowxfer.server._store import DB_NAME
from tests.server.conftest import Api
from tests.support.flushes import on_folder_fsync
from tests.support.server import RunningServer, running_server


async def test_chunks_with_checksums_build_the_chunk_map(api: Api) -> None:
    data = os.urandom(200_000)
    data_id = await api.upload("alice", data, "reads.fastq.gz", chunk_size=64 * 1024)
    meta = (await api.call("GET", f"/data/{data_id}", "alice")).json()
    assert meta["size"] == len(data) and meta["filename"] == "reads.fastq.gz"
    assert meta["checksum"] == checksum_of(data)
    chunks = (await api.call("GET", f"/data/{data_id}/chunks", "alice")).json()
    assert chunks["checksum"] == checksum_of(data)
    assert [(c["offset"], c["size"]) for c in chunks["chunks"]] == [
        (0, 65536),
        (65536, 65536),
        (131072, 65536),
        (196608, 3392),
    ]
    for c in chunks["chunks"]:
        assert c["checksum"] == checksum_of(data[c["offset"] : c["offset"] + c["size"]])
    got = await api.call("GET", f"/downloads/{data_id}/reads.fastq.gz", "alice")
    assert got.status == 200 and got.body == data


async def test_chunk_map_computed_without_client_checksums(api: Api) -> None:
    data = os.urandom(150_000)
    data_id = await api.upload("alice", data, chunk_size=100_000, checksums=False)
    chunks = (await api.call("GET", f"/data/{data_id}/chunks", "alice")).json()
    assert [c["checksum"] for c in chunks["chunks"]] == [checksum_of(data[:100_000]), checksum_of(data[100_000:])]


async def test_checksum_mismatch_is_422_and_nothing_is_stored(api: Api) -> None:
    first = await api.chunk("alice", b"a" * 1000, extra={"checksum": checksum_of(b"a" * 1000)})
    data_id = first.json()["id"]
    bad = await api.chunk(
        "alice", b"b" * 1000, offset=1000, data_id=data_id, extra={"checksum": checksum_of(b"c" * 1000)}
    )
    assert bad.status == 422 and bad.json()["error"] == "checksum mismatch"
    status = (await api.call("GET", f"/upload/{data_id}", "alice")).json()
    assert status["size"] == 1000 and len(status["chunks"]) == 1 and status["is_ready"] is False
    # The same offset is still open, and a good chunk finishes the upload.
    ok = await api.chunk(
        "alice",
        b"b" * 1000,
        offset=1000,
        data_id=data_id,
        is_last=True,
        extra={"checksum": checksum_of(b"b" * 1000), "file_checksum": checksum_of(b"a" * 1000 + b"b" * 1000)},
    )
    assert ok.status == 200 and ok.json()["is_ready"] is True
    got = await api.call("GET", f"/downloads/{data_id}/f.bin", "alice")
    assert got.body == b"a" * 1000 + b"b" * 1000


async def test_file_checksum_mismatch_is_422_and_upload_stays_open(api: Api) -> None:
    first = await api.chunk("alice", b"x" * 10)
    data_id = first.json()["id"]
    bad = await api.chunk(
        "alice", b"y" * 10, offset=10, data_id=data_id, is_last=True, extra={"file_checksum": checksum_of(b"nope")}
    )
    assert bad.status == 422 and bad.json()["error"] == "file checksum mismatch"
    assert (await api.call("GET", f"/data/{data_id}", "alice")).status == 404
    assert (await api.call("GET", f"/upload/{data_id}", "alice")).json()["size"] == 10


async def test_a_whole_upload_in_one_request_is_ready_at_once(api: Api, server: RunningServer) -> None:
    # Fields, blob, then checksums (the engine's order); small enough to be kept in memory and stored whole.
    data = os.urandom(70_000)
    answer = await api.chunk(
        "alice",
        data,
        filename="whole.fq",
        is_last=True,
        extra={"checksum": checksum_of(data), "file_checksum": checksum_of(data)},
    )
    assert answer.status == 200 and answer.json()["is_ready"] is True
    assert answer.json()["checksum"] == checksum_of(data) and answer.json()["size"] == len(data)
    data_id = answer.json()["id"]
    assert (server.root / "data" / data_id).read_bytes() == data
    assert not list((server.root / "partial").iterdir())
    status = (await api.call("GET", f"/upload/{data_id}", "alice")).json()
    assert status["state"] == "ready" and status["chunks"] == [
        {"offset": 0, "size": len(data), "checksum": checksum_of(data)}
    ]
    got = await api.call("GET", f"/downloads/{data_id}/whole.fq", "alice")
    assert got.body == data


async def test_a_whole_upload_is_recorded_only_after_its_name_is_flushed(
    api: Api, server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash may lose a whole upload's row (the client was not answered), never the file a row names."""
    data_folder = server.root / "data"
    flushes: list[tuple[set[str], set[str]]] = []  # (files in the folder, rows committed) at each flush

    def seen() -> None:
        with sqlite3.connect(server.root / DB_NAME) as db:
            rows = {data_id for (data_id,) in db.execute("SELECT id FROM data")}
        flushes.append((set(os.listdir(data_folder)), rows))

    on_folder_fsync(monkeypatch, data_folder, seen)
    answers = await asyncio.gather(
        *(api.chunk("alice", os.urandom(3000), filename=f"s{i}.fq", is_last=True) for i in range(8))
    )
    assert all(answer.status == 200 for answer in answers)
    for data_id in (answer.json()["id"] for answer in answers):
        assert any(data_id in files and data_id not in rows for files, rows in flushes), data_id


async def test_uploads_finishing_together_share_the_data_folder_s_flush(
    api: Api, server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Eight last chunks at once: each file's rename is durable before its row says ready, and a flush
    of the data folder serves every upload finishing meanwhile (each flushed it on its own: 16 files
    ending together queued 16 flushes on the server's I/O threads)."""
    import time

    data_folder = server.root / "data"
    heads = [os.urandom(4000) for _ in range(8)]
    tails = [os.urandom(3000) for _ in range(8)]
    ids = []
    for i, head in enumerate(heads):
        first = await api.chunk("alice", head, filename=f"s{i}.fq", extra={"checksum": checksum_of(head)})
        assert first.status == 200
        ids.append(first.json()["id"])
    flushes: list[tuple[set[str], set[str]]] = []  # (files in the folder, rows ready) at each flush

    def seen() -> None:
        if not flushes:
            time.sleep(0.5)  # a slow first flush: the other uploads' calls queue behind it meanwhile
        with sqlite3.connect(server.root / DB_NAME) as db:
            ready = {data_id for (data_id,) in db.execute("SELECT id FROM data WHERE state = 'ready'")}
        flushes.append((set(os.listdir(data_folder)), ready))

    on_folder_fsync(monkeypatch, data_folder, seen)
    answers = await asyncio.gather(
        *(
            api.chunk(
                "alice",
                tail,
                filename=f"s{i}.fq",
                offset=len(heads[i]),
                data_id=ids[i],
                is_last=True,
                extra={"checksum": checksum_of(tail), "file_checksum": checksum_of(heads[i] + tail)},
            )
            for i, tail in enumerate(tails)
        )
    )
    assert [answer.json()["is_ready"] for answer in answers] == [True] * 8
    for i, data_id in enumerate(ids):
        assert (data_folder / data_id).read_bytes() == heads[i] + tails[i]
        assert any(data_id in files and data_id not in ready for files, ready in flushes), data_id
    assert len(flushes) < len(ids), len(flushes)  # one each: 8


async def test_a_whole_upload_whose_folder_cannot_be_flushed_leaves_nothing(
    api: Api, server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Never recorded, so never named: the file is removed at once, not left for start-up to set aside."""
    data_folder = server.root / "data"

    def fail() -> None:
        raise OSError(5, "Input/output error")

    with monkeypatch.context() as failing:
        on_folder_fsync(failing, data_folder, fail)
        answer = await api.chunk("alice", os.urandom(3000), filename="s.fq", is_last=True)
        assert answer.status == 500 and "incident" in answer.json()
        assert not list(data_folder.iterdir())
    answer = await api.chunk("alice", os.urandom(3000), filename="s.fq", is_last=True)
    assert answer.status == 200 and [p.name for p in data_folder.iterdir()] == [answer.json()["id"]]


async def test_a_damaged_whole_upload_writes_nothing(api: Api, server: RunningServer) -> None:
    data = os.urandom(5000)
    damaged = data[:-1] + bytes([data[-1] ^ 1])  # always differs, unlike a fixed byte that random data may hold
    bad = await api.chunk("alice", data, is_last=True, extra={"checksum": checksum_of(damaged)})
    assert bad.status == 422 and bad.json()["received"] == checksum_of(data)
    bad_file = await api.chunk("alice", data, is_last=True, extra={"file_checksum": checksum_of(b"other")})
    assert bad_file.status == 422
    disagree = await api.chunk(
        "alice", data, is_last=True, extra={"checksum": checksum_of(data), "file_checksum": checksum_of(b"other")}
    )
    assert disagree.status == 422
    assert not list((server.root / "data").iterdir()) and not list((server.root / "partial").iterdir())
    assert (await api.call("GET", "/data/owned", "alice")).json()["count"] == 0


@pytest.mark.parametrize("allowance", [0, 6000, 64 * 1024 * 1024])
async def test_small_uploads_beyond_the_memory_allowance_are_streamed_and_exact(tmp_path: Path, allowance: int) -> None:
    """``whole_uploads_in_memory`` bounds what small uploads hold at once; past it they take the streamed road.

    With no allowance every small upload streams, with room for about one
    the concurrent ones mix both roads, and damaged ones fail in either:
    every good file must still be stored and served exactly.
    """
    async with (
        running_server(tmp_path / "root", whole_uploads_in_memory=allowance) as srv,
        aiohttp.ClientSession() as session,
    ):
        api = Api(session, srv.base_url, srv.users)
        files = [os.urandom(size) for size in (1, 3000, 5000, 5000, 6000, 100_000, 1024 * 1024 - 500)]
        good = [
            api.chunk("alice", data, filename=f"f{i}.bin", is_last=True, extra={"checksum": checksum_of(data)})
            for i, data in enumerate(files)
        ]
        bad = [api.chunk("alice", data, is_last=True, extra={"checksum": checksum_of(b"not it")}) for data in files[:3]]
        answers = await asyncio.gather(*good, *bad)
        assert [a.status for a in answers] == [200] * len(files) + [422] * 3
        for i, (data, answer) in enumerate(zip(files, answers, strict=False)):
            got = await api.call("GET", f"/downloads/{answer.json()['id']}/f{i}.bin", "alice")
            assert got.status == 200 and got.body == data
        # The allowance was given back by every request, good or bad: the next ones still get through.
        again = [os.urandom(4000) for _ in range(3)]
        for data in again:
            answer = await api.chunk("alice", data, is_last=True, extra={"checksum": checksum_of(data)})
            assert answer.status == 200
            assert (await api.call("GET", f"/downloads/{answer.json()['id']}/f.bin", "alice")).body == data
        assert not list((srv.root / "partial").iterdir())


async def test_a_whole_upload_names_which_checksum_failed(api: Api) -> None:
    data = os.urandom(3000)
    chunk_bad = await api.chunk(
        "alice", data, is_last=True, extra={"checksum": checksum_of(b"x"), "file_checksum": checksum_of(data)}
    )
    assert chunk_bad.status == 422 and chunk_bad.json()["error"] == "checksum mismatch"
    assert chunk_bad.json()["expected"] == checksum_of(b"x") and chunk_bad.json()["received"] == checksum_of(data)
    file_bad = await api.chunk(
        "alice", data, is_last=True, extra={"checksum": checksum_of(data), "file_checksum": checksum_of(b"y")}
    )
    assert file_bad.status == 422 and file_bad.json()["error"] == "file checksum mismatch"
    assert file_bad.json()["received"] == checksum_of(data)


async def test_is_directory_after_the_blob_still_unpacks(api: Api, server: RunningServer) -> None:
    """The fields before the blob made it look like a plain small file; the form's end says it is an archive."""
    archive = _tar_bytes({"run/a.txt": b"alpha", "run/b.txt": b"beta"}, mode="w")
    form = aiohttp.FormData()
    for name, value in (("filename", "run.tar"), ("expected_file_size", "0"), ("is_last", "true"), ("data", "")):
        form.add_field(name, value)
    form.add_field("blob", archive, filename="run.tar", content_type="application/octet-stream")
    form.add_field("is_directory", "true")
    form.add_field("file_checksum", checksum_of(archive))
    answer = await api.call("POST", "/upload", "alice", data=form)
    assert answer.status == 200 and answer.json()["is_ready"] is True, answer.body
    data_id = answer.json()["id"]
    files = (await api.call("GET", f"/data/{data_id}/files", "alice")).json()["files"]
    assert [(f["path"], f["size"]) for f in files] == [("run/a.txt", 5), ("run/b.txt", 4)]
    assert (server.root / "data" / data_id).read_bytes() == archive
    assert not list((server.root / "partial").iterdir())


async def test_a_whole_upload_without_a_length_streams_as_before(api: Api, server: RunningServer) -> None:
    """A chunked request body (no Content-Length) cannot be judged small up front: it goes through a partial file."""
    data = os.urandom(40_000)

    async def pieces() -> AsyncIterator[bytes]:
        yield data[:1000]
        yield data[1000:]

    form = aiohttp.FormData()
    for name, value in (("filename", "s.bin"), ("expected_file_size", "0"), ("is_last", "true"), ("data", "")):
        form.add_field(name, value)
    form.add_field(
        "blob", aiohttp.AsyncIterablePayload(pieces()), filename="s.bin", content_type="application/octet-stream"
    )
    form.add_field("file_checksum", checksum_of(data))
    answer = await api.call("POST", "/upload", "alice", data=form)
    assert answer.status == 200 and answer.json()["is_ready"] is True
    assert (server.root / "data" / answer.json()["id"]).read_bytes() == data


async def test_offset_mismatch_reports_what_is_held(api: Api) -> None:
    first = await api.chunk("alice", b"x" * 100)
    data_id = first.json()["id"]
    for wrong in (0, 50, 200):
        answer = await api.chunk("alice", b"y" * 10, offset=wrong, data_id=data_id)
        assert answer.status == 400
        assert answer.json()["expected_file_size"] == 100 and answer.json()["error"]
    new_at_offset = await api.chunk("alice", b"y", offset=5)
    assert new_at_offset.status == 400 and new_at_offset.json()["expected_file_size"] == 0


async def test_retrying_the_last_chunk_after_completion_reports_the_size(api: Api) -> None:
    data_id = await api.upload("alice", b"z" * 100, chunk_size=60)
    again = await api.chunk("alice", b"z" * 40, offset=60, data_id=data_id, is_last=True)
    assert again.status == 400 and again.json()["expected_file_size"] == 100


async def test_unfinished_upload_is_invisible(api: Api) -> None:
    first = await api.chunk("alice", b"x" * 100, filename="hidden.txt")
    data_id = first.json()["id"]
    assert first.json()["is_ready"] is False
    assert (await api.call("GET", f"/data/{data_id}", "alice")).status == 404
    assert (await api.call("GET", f"/downloads/{data_id}/hidden.txt", "alice")).status == 404
    assert (await api.call("GET", "/data/search?filename=hidden", "alice")).json()["count"] == 0
    assert (await api.call("GET", "/data/owned", "alice")).json()["count"] == 0
    assert (await api.call("POST", "/downloads", "alice", json={"data_ids": [data_id]})).status == 404


async def test_empty_file_and_exact_multiple(api: Api) -> None:
    empty = await api.chunk("alice", b"", filename="empty.txt", is_last=True)
    assert empty.status == 200 and empty.json()["size"] == 0 and empty.json()["is_ready"]
    data_id = empty.json()["id"]
    got = await api.call("GET", f"/downloads/{data_id}/empty.txt", "alice")
    assert got.status == 200 and got.body == b""
    assert (await api.call("GET", f"/data/{data_id}/chunks", "alice")).json()["chunks"] == []
    data = os.urandom(3 * 4096)
    exact = await api.upload("alice", data, "exact.bin", chunk_size=4096)
    assert (await api.call("GET", f"/downloads/{exact}/exact.bin", "alice")).body == data


async def test_blob_before_fields_is_spooled(api: Api, server: RunningServer) -> None:
    first = await api.chunk("alice", b"a" * 5000, blob_first=True)
    assert first.status == 200
    data_id = first.json()["id"]
    second = await api.chunk(
        "alice",
        b"b" * 5000,
        offset=5000,
        data_id=data_id,
        is_last=True,
        blob_first=True,
        extra={"checksum": checksum_of(b"b" * 5000)},
    )
    assert second.status == 200 and second.json()["is_ready"]
    got = await api.call("GET", f"/downloads/{data_id}/f.bin", "alice")
    assert got.body == b"a" * 5000 + b"b" * 5000
    assert not list((server.root / "spool").iterdir())


async def test_large_spooled_chunks_land_at_unaligned_offsets(api: Api, server: RunningServer) -> None:
    # Spooled blobs large enough to be moved with direct writes, at an offset that is not page-aligned.
    first_bytes, second_bytes = os.urandom(300_001), os.urandom(1_200_003)
    first = await api.chunk("alice", first_bytes, blob_first=True)
    assert first.status == 200
    data_id = first.json()["id"]
    second = await api.chunk(
        "alice",
        second_bytes,
        offset=len(first_bytes),
        data_id=data_id,
        is_last=True,
        blob_first=True,
        extra={"checksum": checksum_of(second_bytes)},
    )
    assert second.status == 200 and second.json()["is_ready"]
    got = await api.call("GET", f"/downloads/{data_id}/f.bin", "alice")
    assert got.body == first_bytes + second_bytes


async def test_running_hasher_lost_on_restart_is_recomputed(server_root: Path, http: aiohttp.ClientSession) -> None:
    data = os.urandom(300_000)
    async with running_server(server_root) as srv:
        api = Api(http, srv.base_url, srv.users)
        first = await api.chunk("alice", data[:100_000])
        data_id = first.json()["id"]
    async with running_server(server_root) as srv:
        api = Api(http, srv.base_url, srv.users)
        status = (await api.call("GET", f"/upload/{data_id}", "alice")).json()
        assert status["size"] == 100_000
        done = await api.chunk(
            "alice",
            data[100_000:],
            offset=100_000,
            data_id=data_id,
            is_last=True,
            extra={"file_checksum": checksum_of(data)},
        )
        assert done.status == 200 and done.json()["checksum"] == checksum_of(data)
        assert (await api.call("GET", f"/downloads/{data_id}/f.bin", "alice")).body == data


def _zip_bytes(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, content in files.items():
            zf.writestr(name, content)
    return buffer.getvalue()


def _tar_bytes(files: dict[str, bytes], mode: str = "w:gz") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as tf:  # type: ignore[call-overload]
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tf.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


async def test_directory_uploads_are_unpacked_and_listed(api: Api, server: RunningServer) -> None:
    files = {"run/a.txt": b"alpha", "run/sub/b.txt": b"beta" * 1000, "run/c d.txt": b""}
    for archive, name in (
        (_zip_bytes(files), "run.zip"),
        (_tar_bytes(files), "run.tar.gz"),
        (_tar_bytes(files, "w"), "run.tar"),
    ):
        data_id = await api.upload("alice", archive, name, chunk_size=1000, extra={"is_directory": "true"})
        meta = (await api.call("GET", f"/data/{data_id}", "alice")).json()
        assert meta["is_directory"] is True and meta["size"] == len(archive)
        listing = (await api.call("GET", f"/data/{data_id}/files", "alice")).json()
        assert listing["count"] == 3
        assert {f["path"]: (f["size"], f["checksum"]) for f in listing["files"]} == {
            p: (len(c), checksum_of(c)) for p, c in files.items()
        }
        page = (await api.call("GET", f"/data/{data_id}/files?limit=1&offset=1", "alice")).json()
        assert [f["path"] for f in page["files"]] == ["run/c d.txt"]
        # The archive bytes stay the data's content.
        assert (await api.call("GET", f"/downloads/{data_id}/{name}", "alice")).body == archive
        assert (server.root / "trees" / data_id / "run" / "sub" / "b.txt").read_bytes() == b"beta" * 1000
    plain = await api.upload("alice", b"plain", "plain.txt")
    assert (await api.call("GET", f"/data/{plain}/files", "alice")).status == 404


async def test_unsafe_or_broken_archives_are_refused(api: Api, server: RunningServer) -> None:
    evil_tar = io.BytesIO()
    with tarfile.open(fileobj=evil_tar, mode="w") as tf:
        link = tarfile.TarInfo("link")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        tf.addfile(link)
    dup_tar = io.BytesIO()
    with tarfile.open(fileobj=dup_tar, mode="w") as tf:
        for content in (b"1", b"2"):
            info = tarfile.TarInfo("a")
            info.size = 1
            tf.addfile(info, io.BytesIO(content))
    cases = {
        "dotdot.zip": _zip_bytes({"../escape.txt": b"x"}),
        "abs.tar": _tar_bytes({"/etc/owned": b"x"}, "w"),
        "link.tar": evil_tar.getvalue(),
        "junk.zip": b"this is not an archive",
        "dup.tar": dup_tar.getvalue(),
    }
    for name, archive in cases.items():
        answer = await api.chunk("alice", archive, filename=name, is_last=True, extra={"is_directory": "true"})
        assert answer.status == 400, (name, answer.body)
        assert "unpack" in answer.json()["error"]
    assert not (server.root / "etc").exists() and not (server.root / "escape.txt").exists()
    assert (await api.call("GET", "/data/owned", "alice")).json()["count"] == 0
    assert not [p for p in (server.root / "trees").iterdir()]


async def test_zip_bomb_is_refused(server_root: Path, http: aiohttp.ClientSession) -> None:
    bomb = _zip_bytes({"zeros.bin": b"\0" * (20 * 1024 * 1024)})
    async with running_server(server_root, max_unpacked_ratio=10.0) as srv:
        api = Api(http, srv.base_url, srv.users)
        answer = await api.chunk("alice", bomb, filename="bomb.zip", is_last=True, extra={"is_directory": "true"})
        assert answer.status == 400 and "more than" in answer.json()["error"]


async def test_data_type_is_kept(api: Api) -> None:
    data_id = await api.upload("alice", b"abc", "counts.tsv", extra={"data_type": "counts"})
    data_type = (await api.call("GET", f"/data/{data_id}", "alice")).json()["data_type"]
    assert data_type == {"identifier": "counts", "name": "counts", "description": ""}


async def test_upload_status_is_the_starters_only(api: Api) -> None:
    first = await api.chunk("alice", b"x" * 10)
    data_id = first.json()["id"]
    assert (await api.call("GET", f"/upload/{data_id}", "bob")).status == 404
    assert (await api.call("GET", "/upload/123", "alice")).status == 404
    cont = await api.chunk("bob", b"y", offset=10, data_id=data_id)
    assert cont.status == 404 and "error" in cont.json()


async def test_racing_chunks_for_one_offset(api: Api) -> None:
    """Two copies of the same chunk sent at once: exactly one is stored, the other learns the held size."""
    first = await api.chunk("alice", b"a" * 1000)
    data_id = first.json()["id"]
    blob = os.urandom(200_000)
    answers = await asyncio.gather(*[api.chunk("alice", blob, offset=1000, data_id=data_id) for _ in range(4)])
    statuses = sorted(a.status for a in answers)
    assert statuses == [200, 400, 400, 400]
    for answer in answers:
        if answer.status == 400:
            assert answer.json()["expected_file_size"] == 201_000
    status = (await api.call("GET", f"/upload/{data_id}", "alice")).json()
    assert status["size"] == 201_000 and len(status["chunks"]) == 2


async def test_parallel_uploads_stay_apart(api: Api) -> None:
    contents = {f"p{i}.bin": os.urandom(150_000 + i) for i in range(6)}
    users = ["alice", "bob", "carol"]
    ids = await asyncio.gather(
        *[api.upload(users[i % 3], data, name, chunk_size=32 * 1024) for i, (name, data) in enumerate(contents.items())]
    )
    for i, ((name, data), data_id) in enumerate(zip(contents.items(), ids, strict=True)):
        got = await api.call("GET", f"/downloads/{data_id}/{name}", users[i % 3])
        assert got.body == data


def _damaged(archive: bytes, start: int = 60, end: int = 400) -> bytes:
    """The same archive with bytes [start, end) inverted: headers intact, compressed data garbage."""
    return archive[:start] + bytes(b ^ 0xFF for b in archive[start:end]) + archive[end:]


async def test_damaged_compressed_archives_are_refused_not_500(api: Api) -> None:
    files = {"run/a.txt": os.urandom(3000), "run/b.txt": b"beta" * 2000}
    xz = _tar_bytes(files, "w:xz")
    lzma_zip = io.BytesIO()
    with zipfile.ZipFile(lzma_zip, "w", zipfile.ZIP_LZMA) as zf:
        for name, content in files.items():
            zf.writestr(name, content)
    for archive, name in (
        (_damaged(_zip_bytes(files)), "run.zip"),
        (_damaged(lzma_zip.getvalue()), "run.zip"),
        (_damaged(xz, 40, 200), "run.tar.xz"),
    ):
        answer = await api.chunk("alice", archive, filename=name, is_last=True, extra={"is_directory": "true"})
        assert answer.status == 400, (name, answer.status, answer.body[:200])
        assert "corrupt" in answer.json()["error"] or "archive" in answer.json()["error"], answer.json()


async def test_a_stalled_chunk_does_not_hold_its_upload(server_root: Path, http: aiohttp.ClientSession) -> None:
    """A client that vanished mid-chunk (its connection left half-open) held the upload's lock until
    TCP gave up, and the retry of that chunk from a new connection waited behind it. Now the stalled
    body is dropped after ``body_stall_timeout`` and the retry goes through."""
    async with running_server(server_root, body_stall_timeout=2.0) as srv:
        api = Api(http, srv.base_url, srv.users)
        first = await api.chunk("alice", b"a" * 10, filename="s.bin")
        data_id = first.json()["id"]
        token = await api.token("alice")
        boundary = "stall"
        fields = {"filename": "s.bin", "expected_file_size": "10", "is_last": "true", "data": data_id}
        head = "".join(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n' for k, v in fields.items()
        )
        head += f'--{boundary}\r\nContent-Disposition: form-data; name="blob"; filename="b"\r\n\r\n'
        port = int(srv.base_url.rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(
                (
                    f"POST /upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
                    f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
                    f"Content-Length: 100000\r\n\r\n{head}"
                ).encode()
                + b"b" * 5000
            )
            await writer.drain()  # ... and then nothing more: the client is gone, the socket is not
            # Time for the server to read the stalled request's head and take the upload's lock
            # (0.8 s of the 2 s stall allowance: the retry must arrive while the lock is held).
            await asyncio.sleep(0.8)
            retry = await asyncio.wait_for(
                api.chunk("alice", b"c" * 20, filename="s.bin", offset=10, data_id=data_id, is_last=True), 10
            )
            assert retry.status == 200, retry.body
            assert retry.json()["size"] == 30
            stalled = await asyncio.wait_for(reader.read(200), 5)
            assert stalled.startswith(b"HTTP/1.1 408"), stalled
        finally:
            writer.close()
            await writer.wait_closed()

"""Hostile archives: a tiny server of our own speaks just enough of the bulk protocol to serve them.

Whatever the archive says, nothing may be written outside the output
folder; a refused archive writes nothing at all.
"""

from __future__ import annotations

import io
import json
import os
import stat
import struct
import sys
import warnings
import zipfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import pytest
from aiohttp import web

from flowxfer import protocol
from flowxfer.transfer import Flowxfer, IntegrityError, TransferConfig
from flowxfer.transfer._archives import open_archive
from flowxfer.transfer._extract import (
    ExpectedMember,
    UnsafeArchiveError,
    check_archive,
    extract_archive,
)


def _zip(entries: list[tuple[zipfile.ZipInfo | str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "Duplicate name": the point of one case
        for info, data in entries:
            zf.writestr(info, data)
    return buffer.getvalue()


def _info(name: str, mode: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = mode << 16
    return info


HOSTILE: dict[str, list[tuple[zipfile.ZipInfo | str, bytes]]] = {
    "zip slip": [("ok.txt", b"fine"), ("../evil.txt", b"escaped")],
    "deep zip slip": [("a/b/../../../evil.txt", b"escaped")],
    "absolute": [("/tmp/flowxfer-evil.txt", b"escaped")],
    "drive letter": [("C:/evil.txt", b"escaped"), ("C:evil2.txt", b"escaped")],
    "backslashes": [("..\\evil.txt", b"escaped")],
    "symlink": [(_info("link", stat.S_IFLNK | 0o777), b"/etc/passwd"), ("link/passwd", b"x")],
    "device": [(_info("dev", stat.S_IFCHR | 0o600), b"")],
    "fifo": [(_info("fifo", stat.S_IFIFO | 0o600), b"")],
    "duplicate": [("twice.txt", b"one"), ("twice.txt", b"two")],
    "file and folder": [("x", b"file"), ("x/y", b"inside")],
}


@dataclass
class Stand:
    """What the stand-in server saw, and whether its job completes."""

    port: int = 0
    completes: bool = True
    seen: dict[str, int] = field(default_factory=lambda: {"create": 0, "poll": 0, "archive": 0})


@asynccontextmanager
async def archive_server(archive: Callable[[], bytes], *, completes: bool = True) -> AsyncIterator[Stand]:
    """A stand-in Flow that creates one job and serves ``archive()`` as its result.

    With ``completes=False`` the job runs until the test sets ``completes``.
    """
    stand = Stand(completes=completes)
    seen = stand.seen

    async def capabilities(request: web.Request) -> web.Response:
        return web.json_response({"error": "not found"}, status=404)

    async def create(request: web.Request) -> web.Response:
        seen["create"] += 1
        return web.json_response({"id": "7", "status": "pending"}, status=202)

    async def poll(request: web.Request) -> web.Response:
        seen["poll"] += 1
        if not stand.completes:
            return web.json_response({"id": "7", "status": "running", "progress": 0.5})
        body = archive()
        return web.json_response(
            {
                "id": "7",
                "status": "completed",
                "progress": 1.0,
                "size": len(body),
                "download_url": f"{request.url.origin()}/downloads/jobs/7/x.zip",
            }
        )

    async def fetch(request: web.Request) -> web.Response:
        seen["archive"] += 1
        return web.Response(body=archive(), content_type="application/octet-stream")

    app = web.Application()
    app.add_routes(
        [
            web.get("/capabilities", capabilities),
            web.post("/downloads", create),
            web.get("/downloads/jobs/7", poll),
            web.get("/downloads/jobs/7/x.zip", fetch),
        ]
    )
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    stand.port = runner.addresses[0][1]
    try:
        yield stand
    finally:
        await runner.cleanup()


def _exists(path: str) -> bool:
    return os.path.lexists(path)


def _snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize("case", sorted(HOSTILE))
async def test_hostile_archive_writes_nothing(tmp_path: Path, case: str) -> None:
    body = _zip(HOSTILE[case])
    out = tmp_path / "sandbox" / "out"
    out.mkdir(parents=True)
    before = _snapshot(tmp_path)
    async with archive_server(lambda: body) as stand:
        fx = Flowxfer(
            f"http://127.0.0.1:{stand.port}",
            token="not-a-jwt",
            config_dir=tmp_path / "cfg",
            journal=tmp_path / "journal.db",
            config=TransferConfig(backoff_base=0.01),
        )
        async with fx:
            report = await fx.bulk(["1", "2"], name="x.zip", output_dir=out, extract=True, poll_interval=0.05)
    assert report.status == "failed"
    (archive,) = report.files
    assert archive.error is not None and "refusing to extract x.zip (nothing was written)" in archive.error
    after = _snapshot(tmp_path) - before
    # The journal and the (refused, kept) archive; nothing else, inside the folder or out of it.
    assert {p for p in after if not p.startswith(("journal.db", "cfg"))} == {"sandbox/out/x.zip"}
    assert not _exists("/tmp/flowxfer-evil.txt")


async def test_a_link_planted_in_the_output_folder_is_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "results").symlink_to(outside)
    body = _zip([("results/report.txt", b"would land outside")])
    async with archive_server(lambda: body) as stand:
        async with Flowxfer(
            f"http://127.0.0.1:{stand.port}", token="t", config_dir=tmp_path / "cfg", journal=tmp_path / "journal.db"
        ) as fx:
            report = await fx.bulk(["1"], name="x.zip", output_dir=out, extract=True, poll_interval=0.05)
    assert report.status == "failed" and "symbolic link" in (report.files[0].error or "")
    assert list(outside.iterdir()) == []


async def test_job_timeout_stops_and_a_rerun_reattaches(tmp_path: Path) -> None:
    body = _zip([("a.txt", b"alpha"), ("b.txt", b"beta")])
    async with archive_server(lambda: body, completes=False) as stand:
        seen = stand.seen
        url = f"http://127.0.0.1:{stand.port}"
        async with Flowxfer(url, token="t", config_dir=tmp_path / "cfg", journal=tmp_path / "journal.db") as fx:
            first = await fx.bulk(
                ["1", "2"], name="x.zip", output_dir=tmp_path / "out", extract=True, poll_interval=0.1, job_timeout=0.5
            )
        assert first.status == "interrupted" and first.stop_reason == "timeout"
        assert seen["create"] == 1 and seen["poll"] >= 2 and seen["archive"] == 0
        stand.completes = True
        async with Flowxfer(url, token="t", config_dir=tmp_path / "cfg", journal=tmp_path / "journal.db") as fx:
            second = await fx.bulk(
                ["1", "2"], name="x.zip", output_dir=tmp_path / "out", extract=True, poll_interval=0.1, job_timeout=5
            )
    assert second.status == "completed" and second.transfer_id == first.transfer_id
    assert seen["create"] == 1
    # Hosted Flow gives no checksums: the files were checked by size and CRC-32 only.
    assert second.extra["extract_verified"] == 0 and "CRC-32" in (second.verified or "")
    assert (tmp_path / "out" / "a.txt").read_bytes() == b"alpha"


async def test_after_a_job_timeout_the_same_client_goes_on(tmp_path: Path) -> None:
    """``job_timeout`` ends that transfer's wait, not the client: its next call re-attaches and completes."""
    body = _zip([("a.txt", b"alpha")])
    async with archive_server(lambda: body, completes=False) as stand:
        url = f"http://127.0.0.1:{stand.port}"
        async with Flowxfer(url, token="t", config_dir=tmp_path / "cfg", journal=tmp_path / "journal.db") as fx:
            first = await fx.bulk(["1"], name="x.zip", output_dir=tmp_path / "out", poll_interval=0.1, job_timeout=0.5)
            assert first.stop_reason == "timeout"
            stand.completes = True
            second = await fx.bulk(["1"], name="x.zip", output_dir=tmp_path / "out", poll_interval=0.1, job_timeout=5)
    assert second.status == "completed" and second.stop_reason is None, second.to_json()
    assert second.transfer_id == first.transfer_id and stand.seen["create"] == 1


async def test_cli_timeout_is_exit_75_and_json_names_the_job(tmp_path: Path) -> None:
    body = _zip([("a.txt", b"alpha")])
    async with archive_server(lambda: body, completes=False) as stand:
        env = {
            **os.environ,
            "FLOW_API_URL": f"http://127.0.0.1:{stand.port}",
            "FLOW_API_TOKEN": "t",
            "FLOWXFER_CONFIG_DIR": str(tmp_path / "cfg"),
            "FLOWXFER_JOURNAL": str(tmp_path / "journal.db"),
        }
        command = [
            sys.executable,
            "-c",
            "from flowxfer.cli import main; main()",
            "--json",
            "bulk",
            "1",
            "--timeout",
            "0.5",
            "--poll-interval",
            "0.1",
            "-o",
            str(tmp_path / "out"),
        ]
        result = await anyio.run_process(command, env=env, check=False)
        assert result.returncode == 75, result.stderr
        document = json.loads(result.stdout)
        assert document["job_id"] == "7" and document["stop_reason"] == "timeout"
        assert document["archive"] == str(tmp_path / "out" / "flow-download.zip")
        stand.completes = True
        result = await anyio.run_process(command[:-6] + ["-o", str(tmp_path / "out")], env=env, check=False)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["status"] == "completed" and stand.seen["create"] == 1


# --- the checks themselves --------------------------------------------------------------------


def _write(path: Path, entries: list[tuple[zipfile.ZipInfo | str, bytes]]) -> Path:
    path.write_bytes(_zip(entries))
    return path


def test_overlapping_members_are_refused(tmp_path: Path) -> None:
    """Two central-directory entries sharing one local header: the zip-bomb layout."""
    raw = bytearray(_zip([("a.bin", b"A" * 1000), ("b.bin", b"A" * 1000)]))
    start = raw.index(b"PK\x01\x02", raw.index(b"PK\x01\x02") + 4)  # b's central directory record
    struct.pack_into("<I", raw, start + 42, 0)  # its local header offset: a's
    archive = tmp_path / "bomb.zip"
    archive.write_bytes(bytes(raw))
    with pytest.raises(UnsafeArchiveError, match="overlaps"):
        extract_archive(archive, tmp_path / "out", None)
    assert not (tmp_path / "out").exists()


def test_sizes_must_match_the_data(tmp_path: Path) -> None:
    archive = _write(tmp_path / "a.zip", [("x.bin", b"12345")])
    expected = [ExpectedMember("x.bin", "42", 6, None)]
    reader = open_archive(archive)
    with pytest.raises(UnsafeArchiveError, match="data 42 is 6"):
        check_archive(reader, tmp_path / "out", archive, {m.name: m for m in expected})
    reader.close()


def test_checksum_mismatch_removes_the_file(tmp_path: Path) -> None:
    archive = _write(tmp_path / "a.zip", [("good.bin", b"good"), ("x.bin", b"12345")])
    expected = [
        ExpectedMember("good.bin", "1", 4, protocol.checksum_of(b"good")),
        ExpectedMember("x.bin", "2", 5, protocol.checksum_of(b"54321")),
    ]
    out = tmp_path / "out"
    with pytest.raises(IntegrityError, match="does not match data 2"):
        extract_archive(archive, out, expected)
    assert sorted(os.listdir(out)) == ["good.bin"]  # verified before it; no temporary left behind


def test_an_archive_member_may_not_replace_the_archive(tmp_path: Path) -> None:
    archive = _write(tmp_path / "x.zip", [("x.zip", b"inner")])
    with pytest.raises(UnsafeArchiveError, match="overwrite the archive"):
        extract_archive(archive, tmp_path, None)


def test_folders_and_nested_members(tmp_path: Path) -> None:
    archive = _write(tmp_path / "a.zip", [(_info("d/", stat.S_IFDIR | 0o755), b""), ("d/e/f.txt", b"f")])
    result = extract_archive(archive, tmp_path / "out", None)
    assert result.files == [str(tmp_path / "out" / "d" / "e" / "f.txt")]
    assert (tmp_path / "out" / "d" / "e" / "f.txt").read_bytes() == b"f"

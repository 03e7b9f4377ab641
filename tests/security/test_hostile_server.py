"""A server that lies: hostile names, redirects and archive URLs pointing at another host.

A tiny aiohttp server of the test's own speaks just enough Flow for the
engine: it describes data under hostile filenames (climbing, absolute,
device names, control characters), answers with ``Content-Disposition``
names of its own, redirects downloads and API calls to a second server, and
hands out an archive ``download_url`` on that second host. The second host
records every request's headers. Whatever it is told, the client writes
only inside its output folder and never gives the second host its token.
(Hostile archive *entries* -- zip slip, absolute paths, symlinks, devices --
are the subject of ``tests/bulk/test_extract.py``; here the archive is
benign and the question is where its bytes are fetched from, and with what.)
"""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import pytest
from aiohttp import web

from flowxfer.transfer import Flowxfer, TransferConfig

NAMES = {
    "101": "../../escaped.txt",
    "102": "/tmp/flowxfer-absolute.txt",
    "103": "../..",
    "104": "sub/dir/../../../escaped2.txt",
    "105": "..\\..\\escaped3.txt",
    "106": "CON",
    "107": "new\nline\x00nul.txt",
    "108": "-rf",
    "109": "\u202etxt.exe",
    "110": "C:\\Windows\\evil.dll",
}
TOKEN = jwt.encode({"sub": "alice", "exp": 4_000_000_000, "iat": 1}, "k" * 32, algorithm="HS256")


@dataclass
class Host:
    """One of the two servers: its origin and what it saw."""

    origin: str = ""
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)

    def saw_credentials(self) -> list[tuple[str, str]]:
        leaks = []
        for method, target, headers in self.requests:
            lowered = {k.lower(): v for k, v in headers.items()}
            if "authorization" in lowered or "cookie" in lowered or "token=" in target or TOKEN in target:
                leaks.append((method, target))
        return leaks


@asynccontextmanager
async def _serve(app: web.Application, host: Host) -> AsyncIterator[Host]:
    @web.middleware
    async def record(request: web.Request, handler: Any) -> web.StreamResponse:
        host.requests.append((request.method, request.path_qs, dict(request.headers)))
        response: web.StreamResponse = await handler(request)
        return response

    app.middlewares.append(record)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host.origin = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield host
    finally:
        await runner.cleanup()


def _content(data_id: str) -> bytes:
    return f"the bytes of {data_id}\n".encode() * 50


def _archive() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("a.txt", b"alpha")
    return buffer.getvalue()


@asynccontextmanager
async def hostile_pair(redirect: set[str]) -> AsyncIterator[tuple[Host, Host]]:
    """The lying server and the other host it points at; ``redirect`` names what it redirects."""
    other = Host()
    liar = Host()

    async def anything(request: web.Request) -> web.StreamResponse:
        if request.path.endswith(".zip"):
            return web.Response(body=_archive(), content_type="application/octet-stream")
        return web.Response(body=b"stolen?", content_type="application/octet-stream")

    other_app = web.Application()
    other_app.router.add_route("*", "/{tail:.*}", anything)

    async def capabilities(request: web.Request) -> web.Response:
        return web.json_response({"error": "not found"}, status=404)

    async def data(request: web.Request) -> web.Response:
        data_id = request.match_info["id"]
        if "data" in redirect:
            raise web.HTTPFound(f"{other.origin}/data/{data_id}")
        body = _content(data_id)
        return web.json_response({"id": data_id, "filename": NAMES[data_id], "size": len(body)})

    async def download(request: web.Request) -> web.StreamResponse:
        data_id = request.match_info["id"]
        if "download" in redirect:
            raise web.HTTPFound(f"{other.origin}/downloads/{data_id}/x?token=from-the-redirect")
        body = _content(data_id)
        headers = {
            "Content-Disposition": 'attachment; filename="../../../disposition.txt"',
            "ETag": f'"{data_id}"',
            "Accept-Ranges": "bytes",
        }
        rng = request.headers.get("Range")
        if rng:
            start, _, end = rng.removeprefix("bytes=").partition("-")
            first, last = int(start), int(end) if end else len(body) - 1
            headers["Content-Range"] = f"bytes {first}-{last}/{len(body)}"
            return web.Response(status=206, body=body[first : last + 1], headers=headers)
        return web.Response(body=body, headers=headers)

    async def create_job(request: web.Request) -> web.Response:
        return web.json_response({"id": "9", "status": "pending"}, status=202)

    async def job(request: web.Request) -> web.Response:
        body = _archive()
        return web.json_response(
            {
                "id": "9",
                "status": "completed",
                "progress": 1.0,
                "size": len(body),
                "download_url": f"{other.origin}/downloads/jobs/9/../../../../x.zip",
            }
        )

    app = web.Application()
    app.add_routes(
        [
            web.get("/capabilities", capabilities),
            web.get("/data/{id}", data),
            web.get("/downloads/{id}/{name:[\\s\\S]*}", download),
            web.post("/downloads", create_job),
            web.get("/downloads/jobs/9", job),
        ]
    )
    async with _serve(other_app, other), _serve(app, liar):
        yield liar, other


def _snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _lexists(path: str) -> bool:
    return os.path.lexists(path)


def _fx(liar: Host, tmp_path: Path) -> Flowxfer:
    return Flowxfer(
        liar.origin,
        token=TOKEN,
        config_dir=tmp_path / "cfg",
        journal=tmp_path / "journal.db",
        config=TransferConfig(backoff_base=0.01, backoff_cap=0.05, max_attempts=2),
    )


async def test_hostile_names_stay_inside_the_output_folder(tmp_path: Path) -> None:
    out = tmp_path / "jail" / "out"
    out.mkdir(parents=True)
    before = _snapshot(tmp_path)
    async with hostile_pair(redirect=set()) as (liar, other):
        async with _fx(liar, tmp_path) as fx:
            report = await fx.download(list(NAMES), output_dir=out)
    assert report.status == "completed", [(f.filename, f.error) for f in report.files if f.error]
    new = _snapshot(tmp_path) - before
    written = {p for p in new if not p.startswith(("journal.db", "cfg"))}
    assert all(p.startswith("jail/out/") and p.count("/") == 2 for p in written), written
    assert len(written) == len(NAMES)
    contents = sorted((out / Path(p).name).read_bytes() for p in written)
    assert contents == sorted(_content(i) for i in NAMES)
    for name in written:
        leaf = Path(name).name
        assert leaf not in ("..", ".", "CON", "-rf") and "\x00" not in leaf and "\n" not in leaf
        assert "\u202e" not in leaf and "\\" not in leaf and not leaf.startswith("-")
    assert not _lexists("/tmp/flowxfer-absolute.txt") and "disposition.txt" not in str(written)
    assert not other.requests


@pytest.mark.parametrize("what", ["data", "download"])
async def test_redirects_are_not_followed_and_carry_nothing(tmp_path: Path, what: str) -> None:
    out = tmp_path / "out"
    async with hostile_pair(redirect={what}) as (liar, other):
        async with _fx(liar, tmp_path) as fx:
            try:
                report = await fx.download(["101"], output_dir=out)
            except Exception as exc:  # the description itself was redirected: refused before planning
                assert what == "data", exc
                assert "302" in str(exc) or "Found" in str(exc), exc
            else:
                assert report.status != "completed"
                assert report.files[0].error and "302" in report.files[0].error
    assert not other.requests and not other.saw_credentials()
    # At most the preallocated .part of the refused file, inside the folder (kept for a resume).
    assert {p.name for p in out.glob("*")} <= {".._.._escaped.txt.part"}


async def test_archive_url_on_another_host_gets_no_token(tmp_path: Path) -> None:
    out = tmp_path / "out"
    async with hostile_pair(redirect=set()) as (liar, other):
        async with _fx(liar, tmp_path) as fx:
            report = await fx.bulk(["101", "102"], name="x.zip", output_dir=out, extract=True, poll_interval=0.05)
    assert liar.saw_credentials()  # control: the token does go to the server it belongs to
    assert not other.saw_credentials(), other.saw_credentials()
    if report.status == "completed":
        assert (out / "a.txt").read_bytes() == b"alpha"
    assert {p for p in _snapshot(tmp_path) if (tmp_path / p).is_file()} <= {
        "journal.db",
        "journal.db-wal",
        "journal.db-shm",
        "out/x.zip",
        "out/a.txt",
    }

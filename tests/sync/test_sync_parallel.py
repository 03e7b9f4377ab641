"""``sync --pack-small``'s tar on the parallel-chunk extension [ext], and in strict order without it.

A packed tar is a directory upload: against our server its chunks travel on
several connections and ``finish`` unpacks it; the files the server unpacks
must be exactly the ones the strict order lands (and the local ones). A
server started with ``serve --no-extensions`` (hosted Flow's protocol) gets
the tar in strict order on ``POST /upload``, its last chunk unpacking it.
"""

from __future__ import annotations

from pathlib import Path

from flowxfer.transfer._syncplan import SyncOptions
from tests.support.faultproxy import FaultProxy, Record
from tests.support.server import RunningServer, ServerProcess, running_server
from tests.transfer.conftest import KiB, client, write_random

PACK = 64 * KiB
#: One tar of ~1.2 MiB in 64 KiB chunks, on four connections where the server offers them.
STREAMS = {"upload_streams": 4, "chunk_size": 64 * KiB}
OPTIONS = SyncOptions(pack_small=PACK)


def make_run(run: Path, count: int = 40) -> dict[str, bytes]:
    """Small files in two folders (one tar each would be two uploads: keep them in one folder)."""
    for index in range(count):
        write_random(run / "C1.1" / f"s_1_{1101 + index}.bcl.gz", 30 * KiB + index * 97, seed=index)
    return {p.relative_to(run.parent).as_posix(): p.read_bytes() for p in run.rglob("*") if p.is_file()}


def unpacked(root: Path, data_id: str) -> dict[str, bytes]:
    """What the server unpacked from one directory upload, read from its disk (relative to the run's parent)."""
    base = root / "trees" / data_id
    return {p.relative_to(base).as_posix(): p.read_bytes() for p in base.rglob("*") if p.is_file()}


async def _sync_through(srv: RunningServer, run: Path, home: Path) -> tuple[dict[str, bytes], Record]:
    """Sync ``run`` through a recording proxy; the unpacked files of its one tar, and the requests."""
    async with FaultProxy("127.0.0.1", int(srv.base_url.rsplit(":", 1)[1])) as proxy:
        log = proxy.add(Record())
        via = RunningServer(proxy.url, srv.root, srv.users, srv.config)
        async with client(via, home, **STREAMS) as fx:
            report = await fx.sync(run, OPTIONS)
    assert report.status == "completed", [f.error for f in report.files]
    (tar,) = report.files
    assert tar.filename.endswith(".tar") and report.extra["packed_files"] == 40
    return unpacked(srv.root, tar.id or ""), log


async def test_a_packed_tar_goes_in_parallel_and_unpacks_as_the_strict_one(tmp_path: Path) -> None:
    run = tmp_path / "runs" / "bcl"
    local = make_run(run)
    async with running_server(tmp_path / "ext") as srv:
        parallel, log = await _sync_through(srv, run, tmp_path / "home-ext")
    chunks = log.select("POST", r"^/upload/parallel/\d+$")
    assert len(chunks) >= 10 and {e.status for e in chunks} == {200}
    assert len({e.connection for e in chunks}) > 1  # several connections at once
    assert [e.status for e in log.select("POST", r"^/upload/parallel/\d+/finish$")] == [200]
    assert not log.select("POST", r"^/upload$")
    async with running_server(tmp_path / "strict", extensions=False) as srv:
        strict, log = await _sync_through(srv, run, tmp_path / "home-strict")
    assert not log.select("POST", r"^/upload/parallel")
    assert len(log.select("POST", r"^/upload$")) >= 10
    assert parallel == strict == {rel.split("/", 1)[1]: data for rel, data in local.items()}


async def test_serve_no_extensions_keeps_the_strict_order(tmp_path: Path) -> None:
    run = tmp_path / "runs" / "bcl"
    local = make_run(run)
    async with ServerProcess(tmp_path / "root", "--no-extensions") as proc:
        srv = RunningServer(proc.base_url, proc.root, proc.users, config=None)  # type: ignore[arg-type]
        files, log = await _sync_through(srv, run, tmp_path / "home")
    assert not log.select("POST", r"^/upload/parallel")
    assert {e.status for e in log.select("POST", r"^/upload$")} == {200}
    assert files == {rel.split("/", 1)[1]: data for rel, data in local.items()}

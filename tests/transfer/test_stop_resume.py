"""``Flowxfer.stop()``: honoured between upload chunks and at download chunk boundaries, and resumable.

A stop lets the chunk on the wire finish and starts no other; the journal
then says exactly what the server (or the disk) holds, so the next run sends
only the rest. A property test stops one upload at random points, again and
again, and checks that the server ends with exactly the source's bytes.
Everything runs against the server with extensions and as hosted Flow.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowxfer.journal import ChunkState, Journal
from tests.support.faultproxy import FaultProxy
from tests.support.server import RunningServer, running_server

from .conftest import KiB, StopAfter, client, write_random

CHUNK = 64 * KiB
SIZE = 30 * CHUNK + 123

modes = pytest.mark.parametrize("extensions", [True, False], ids=["extensions", "hosted-flow"])


def acked_bytes(journal_path: Path, transfer_id: str) -> tuple[int, list[tuple[int, int]]]:
    """The file's ``bytes_done`` and its (offset, size) chunks the journal calls acked or verified."""
    journal = Journal.open(journal_path)
    try:
        (row,) = journal.iter_files(transfer_id)
        chunks = [
            (c.offset, c.size) for c in journal.chunks(row.id) if c.state in (ChunkState.ACKED, ChunkState.VERIFIED)
        ]
        return row.bytes_done, chunks
    finally:
        journal.close()


@modes
async def test_stop_is_honoured_between_upload_chunks(tmp_path: Path, extensions: bool) -> None:
    src = write_random(tmp_path / "big.bin", SIZE, 1)
    async with running_server(tmp_path / "root", extensions=extensions) as srv:
        port = int(srv.base_url.rsplit(":", 1)[1])
        async with FaultProxy("127.0.0.1", port) as proxy:
            via = RunningServer(proxy.url, srv.root, srv.users, srv.config)
            stopper = StopAfter(10 * CHUNK + 1, proxy)  # inside the eleventh chunk
            # One stream: the strict chunk order (several streams: tests/transfer/test_upload_parallel.py).
            # The resume below, offered four, continues that strict upload in order.
            async with client(via, tmp_path / "home", progress=stopper, grace_period=5, upload_streams=1) as fx:
                stopper.fx = fx
                first = await fx.upload([src])
            assert first.status == "interrupted" and first.stop_reason == "stopped"
            # The chunk on the wire finished; no request started after the stop.
            assert proxy.stats.requests == stopper.requests_at_stop
            done, chunks = acked_bytes(tmp_path / "home" / "journal.db", first.transfer_id)
            assert done == 11 * CHUNK and chunks == [(i * CHUNK, CHUNK) for i in range(11)]
            assert first.bytes_transferred == 11 * CHUNK

            async with client(via, tmp_path / "home", upload_streams=4) as fx:
                second = await fx.upload([src])
            assert second.status == "completed" and second.transfer_id == first.transfer_id
            # The journal was exact: not one byte is sent twice.
            assert second.bytes_transferred == SIZE - 11 * CHUNK
            (item,) = second.files
        async with client(srv, tmp_path / "check") as fx:
            await fx.download([item.id or ""], output_dir=tmp_path / "out")
    assert (tmp_path / "out" / "big.bin").read_bytes() == src.read_bytes()


@modes
async def test_stop_is_honoured_at_download_chunk_boundaries(tmp_path: Path, extensions: bool) -> None:
    src = write_random(tmp_path / "big.bin", SIZE, 2)
    async with running_server(tmp_path / "root", extensions=extensions) as srv:
        async with client(srv, tmp_path / "uploader") as fx:
            (item,) = (await fx.upload([src])).files
        port = int(srv.base_url.rsplit(":", 1)[1])
        async with FaultProxy("127.0.0.1", port) as proxy:
            via = RunningServer(proxy.url, srv.root, srv.users, srv.config)
            stopper = StopAfter(12 * CHUNK, proxy)
            out = tmp_path / "out"
            # Slow enough that the stop comes long before the stream could end by itself.
            async with client(via, tmp_path / "home", progress=stopper, segments=1, bwlimit="1M", grace_period=5) as fx:
                stopper.fx = fx
                first = await fx.download([item.id or ""], output_dir=out)
            assert first.status == "interrupted"
            assert proxy.stats.requests == stopper.requests_at_stop
            done, chunks = acked_bytes(tmp_path / "home" / "journal.db", first.transfer_id)
            # Stopped at the boundary of the chunk that was completing: nothing torn, all journaled.
            assert done == 12 * CHUNK and chunks == [(i * CHUNK, CHUNK) for i in range(12)]
            part = (out / "big.bin.part").read_bytes()
            assert part[:done] == src.read_bytes()[:done]

            async with client(via, tmp_path / "home", segments=1) as fx:
                second = await fx.download([item.id or ""], output_dir=out)
            assert second.status == "completed" and second.transfer_id == first.transfer_id
            assert second.bytes_transferred == SIZE - done
    assert (out / "big.bin").read_bytes() == src.read_bytes()


# --- any sequence of stops ----------------------------------------------------------------------


async def _stop_and_resume(root: Path, extensions: bool, stops: list[int], size: int) -> None:
    src = write_random(root / "src" / "reads.bin", size, len(stops))
    async with running_server(root / "server", extensions=extensions) as srv:
        report = None
        for threshold in [*stops, None]:
            stopper = StopAfter(threshold if threshold is not None else size + 1)
            async with client(srv, root / "home", progress=stopper, grace_period=5) as fx:
                stopper.fx = fx
                report = await fx.upload([src])
            if report.status == "completed":
                break
            assert report.status == "interrupted"
        assert report is not None and report.status == "completed"
        async with client(srv, root / "check") as fx:
            down = await fx.download([report.files[0].id or ""], output_dir=root / "out")
        assert down.status == "completed"
    assert (root / "out" / "reads.bin").read_bytes() == src.read_bytes()


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    extensions=st.booleans(),
    size=st.integers(1, 12 * CHUNK),
    stops=st.lists(st.integers(1, 12 * CHUNK), min_size=1, max_size=4),
)
def test_any_sequence_of_stops_then_resume_gives_the_exact_bytes(extensions: bool, size: int, stops: list[int]) -> None:
    """Stop after any number of bytes, run again, stop again...: the server ends with the source's bytes."""
    with tempfile.TemporaryDirectory() as tmp:
        anyio.run(_stop_and_resume, Path(tmp), extensions, stops, size)


async def test_chunks_written_but_not_journaled_are_recovered_from_disk(tmp_path: Path) -> None:
    """What a kill -9 between a chunk's write and the journal's flush leaves: bytes on disk the
    journal does not claim. The resume re-hashes them against the chunk map instead of fetching
    them again."""
    import sqlite3

    src = write_random(tmp_path / "big.bin", SIZE, 5)
    async with running_server(tmp_path / "root") as srv:
        async with client(srv, tmp_path / "up") as fx:
            (item,) = (await fx.upload([src])).files
        stopper = StopAfter(12 * CHUNK)
        async with client(srv, tmp_path / "home", progress=stopper, segments=1, grace_period=5) as fx:
            stopper.fx = fx
            first = await fx.download([item.id or ""], output_dir=tmp_path / "out")
        assert first.status == "interrupted"
        journal = tmp_path / "home" / "journal.db"
        done, acked = acked_bytes(journal, first.transfer_id)
        assert len(acked) >= 12
        # Forget the last 5 acknowledged chunks, as if the flush that recorded them never happened.
        forgotten = sorted(acked)[-5:]
        with sqlite3.connect(journal) as db:
            for offset, _ in forgotten:
                db.execute("UPDATE chunks SET state = 'planned' WHERE offset = ?", (offset,))
            db.execute("UPDATE files SET bytes_done = bytes_done - ?", (sum(size for _, size in forgotten),))
        async with client(srv, tmp_path / "home") as fx:
            second = await fx.download([item.id or ""], output_dir=tmp_path / "out")
        assert second.status == "completed", second
        assert second.bytes_transferred == SIZE - done  # the forgotten chunks came from disk, not the wire
    assert (tmp_path / "out" / "big.bin").read_bytes() == src.read_bytes()

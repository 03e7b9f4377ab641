"""One file's chunks on several connections (the parallel-chunk extension), and the strict order without it.

Through the recording proxy to the real server: with extensions a large
file's chunks travel on ``upload_streams`` connections at once and arrive
exact; a stop leaves the journal saying exactly which chunks the server
holds (holes and all) and the resumed run sends only the others; as hosted
Flow (``--no-extensions``) every chunk goes to ``POST /upload`` in order.
"""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from flowxfer.journal import ChunkState, Journal
from flowxfer.transfer import TransferConfig
from flowxfer.transfer._workers import UploadWave
from tests.support.faultproxy import FaultProxy, Latency, Record
from tests.support.server import RunningServer, running_server

from .conftest import KiB, StopAfter, client, write_random

CHUNK = 64 * KiB
SIZE = 40 * CHUNK + 321
PARALLEL = r"^/upload/parallel/\d+$"


class _Stamps:
    """A progress callback noting when the first chunk's bytes went out and when the file finished:
    the chunks' time and the finish's round trip, without the journal's work before them."""

    def __init__(self) -> None:
        self.first_bytes: float | None = None
        self.finished: float | None = None

    def __call__(self, event: object) -> None:
        import time

        from flowxfer.transfer.events import BytesMoved, FileFinished

        if isinstance(event, BytesMoved) and self.first_bytes is None:
            self.first_bytes = time.monotonic()
        elif isinstance(event, FileFinished):
            self.finished = time.monotonic()

    @property
    def took(self) -> float:
        assert self.first_bytes is not None and self.finished is not None
        return self.finished - self.first_bytes


async def _server_chunks(srv: RunningServer, data_id: str) -> list[tuple[int, int]]:
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{srv.base_url}/login", json={"username": "alice", "password": srv.users["alice"]}
        ) as resp:
            token = (await resp.json())["token"]
        async with http.get(f"{srv.base_url}/upload/{data_id}", headers={"Authorization": f"Bearer {token}"}) as resp:
            status = await resp.json()
    return [(c["offset"], c["size"]) for c in status["chunks"]]


def _journal(home: Path, transfer_id: str) -> tuple[str, int, list[tuple[int, int]]]:
    journal = Journal.open(home / "journal.db")
    try:
        (row,) = journal.iter_files(transfer_id)
        acked = [
            (c.offset, c.size) for c in journal.chunks(row.id) if c.state in (ChunkState.ACKED, ChunkState.VERIFIED)
        ]
        return row.data_id or "", row.bytes_done, acked
    finally:
        journal.close()


async def test_one_file_goes_on_several_connections_and_arrives_exact(tmp_path: Path) -> None:
    src = write_random(tmp_path / "big.bin", SIZE, 5)
    async with running_server(tmp_path / "root") as srv:
        async with FaultProxy("127.0.0.1", int(srv.base_url.rsplit(":", 1)[1])) as proxy:
            log = proxy.add(Record())
            via = RunningServer(proxy.url, srv.root, srv.users, srv.config)
            async with client(via, tmp_path / "home", upload_streams=4, bwlimit="4M") as fx:
                report = await fx.upload([src])
            assert report.status == "completed", [f.error for f in report.files]
            (item,) = report.files
            posts = log.select("POST", PARALLEL)
            assert len(posts) == 41 and {e.status for e in posts} == {200}
            assert not log.select("POST", r"^/upload$")
            # Four at once: four connections (a strict upload reuses one).
            assert len({e.connection for e in posts}) == 4
            assert [e.status for e in log.select("POST", r"^/upload/parallel/\d+/finish$")] == [200]
            assert report.bytes_transferred == SIZE
        async with client(srv, tmp_path / "check") as fx:
            await fx.download([item.id or ""], output_dir=tmp_path / "out")
    assert (tmp_path / "out" / "big.bin").read_bytes() == src.read_bytes()


@pytest.mark.parametrize("resume_streams", [5, 1], ids=["same-streams", "one-stream"])
async def test_a_stop_leaves_holes_the_resume_fills_and_nothing_acked_is_sent_again(
    tmp_path: Path, resume_streams: int
) -> None:
    """Also when the resuming run gets one stream (another path, ``--streams 1``): its upload stays parallel."""
    src = write_random(tmp_path / "big.bin", SIZE, 6)
    async with running_server(tmp_path / "root") as srv:
        async with FaultProxy("127.0.0.1", int(srv.base_url.rsplit(":", 1)[1])) as proxy:
            log = proxy.add(Record())
            via = RunningServer(proxy.url, srv.root, srv.users, srv.config)
            stopper = StopAfter(12 * CHUNK + 1, proxy)
            async with client(via, tmp_path / "home", progress=stopper, upload_streams=5, grace_period=5) as fx:
                stopper.fx = fx
                first = await fx.upload([src])
            assert first.status == "interrupted"
            # No chunk starts after the stop; but the stop fires inside one stream's progress while
            # another stream's next request may already be on its way to the proxy (one loop runs
            # both), so up to one per other stream may be counted after the proxy's figure was taken.
            assert proxy.stats.requests - stopper.requests_at_stop < 5
            data_id, done, acked = _journal(tmp_path / "home", first.transfer_id)
            # The journal says exactly what the server holds: every chunk on the wire finished.
            held = await _server_chunks(srv, data_id)
            assert sorted(acked) == held and done == sum(size for _, size in held)
            assert first.bytes_transferred == done
            log.clear()
            async with client(via, tmp_path / "home", upload_streams=resume_streams) as fx:
                second = await fx.upload([src])
            assert second.status == "completed" and second.transfer_id == first.transfer_id
            assert second.bytes_transferred == SIZE - done  # not one acknowledged byte again
            assert len(log.select("POST", PARALLEL)) == 41 - len(held)
            (item,) = second.files
            assert item.id == data_id
        async with client(srv, tmp_path / "check") as fx:
            await fx.download([data_id], output_dir=tmp_path / "out")
    assert (tmp_path / "out" / "big.bin").read_bytes() == src.read_bytes()


async def test_hosted_flow_gets_the_strict_order(tmp_path: Path) -> None:
    src = write_random(tmp_path / "big.bin", 6 * CHUNK + 5, 7)
    async with running_server(tmp_path / "root", extensions=False) as srv:
        async with FaultProxy("127.0.0.1", int(srv.base_url.rsplit(":", 1)[1])) as proxy:
            log = proxy.add(Record())
            via = RunningServer(proxy.url, srv.root, srv.users, srv.config)
            async with client(via, tmp_path / "home", upload_streams=4) as fx:
                report = await fx.upload([src])
            assert report.status == "completed"
            assert not log.select(None, r"^/upload/parallel")
            posts = log.select("POST", r"^/upload$")
            assert len(posts) == 7 and len({e.connection for e in posts}) == 1


async def test_many_files_at_once_leave_no_streams_to_share(tmp_path: Path) -> None:
    """Files on the way at once take a connection each; a file's extra streams are what they leave."""
    files = [write_random(tmp_path / "src" / f"f{i}.bin", 8 * CHUNK + 1 + i, i) for i in range(5)]
    async with running_server(tmp_path / "root") as srv:
        async with FaultProxy("127.0.0.1", int(srv.base_url.rsplit(":", 1)[1])) as proxy:
            log = proxy.add(Record())
            via = RunningServer(proxy.url, srv.root, srv.users, srv.config)
            async with client(via, tmp_path / "home", upload_streams=2, concurrency=5, bwlimit="2M") as fx:
                report = await fx.upload([tmp_path / "src"])
            assert report.status == "completed"
            opened = log.select("POST", r"^/upload/parallel$")
            first_chunks = [e for e in log.select("POST", r"^/upload$") if e.status == 200]
            assert len(opened) < 5 and len(opened) + len(first_chunks) // 9 == 5
        ids = {f.filename: f.id or "" for f in report.files}
        async with client(srv, tmp_path / "check") as fx:
            await fx.download(list(ids.values()), output_dir=tmp_path / "out")
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == {f.name: f.read_bytes() for f in files}


async def test_files_started_together_count_each_other_from_the_first(tmp_path: Path) -> None:
    """Five files handed out at once, four streams to share: the first file counts the four others
    as on the way although their sources are not open yet, so none goes on parallel streams."""
    for i in range(5):
        write_random(tmp_path / "src" / f"f{i}.bin", 8 * CHUNK + 1 + i, 20 + i)
    async with running_server(tmp_path / "root") as srv:
        async with FaultProxy("127.0.0.1", int(srv.base_url.rsplit(":", 1)[1])) as proxy:
            log = proxy.add(Record())
            via = RunningServer(proxy.url, srv.root, srv.users, srv.config)
            async with client(via, tmp_path / "home", upload_streams=4, concurrency=5) as fx:
                report = await fx.upload([tmp_path / "src"])
            assert report.status == "completed"
            assert not log.select("POST", r"^/upload/parallel"), [e.path for e in log.entries]
            assert len([e for e in log.select("POST", r"^/upload$") if e.status == 200]) == 5 * 9


async def test_files_started_together_size_their_blocks_for_all_of_them(tmp_path: Path) -> None:
    """Sixteen files at once: each reads and sends in the block sized for sixteen uploads (1 MiB),
    the first ones too, although the others' sources were not open yet (memory stays flat)."""
    from flowxfer.transfer.events import BytesMoved

    for i in range(16):
        write_random(tmp_path / "src" / f"f{i:02}.bin", 2 * 1024 * KiB + 1 + i, 50 + i)
    config = TransferConfig(block_size=4 * 1024 * KiB, upload_block_size=1024 * KiB)
    expected = config.upload_block_for(16)
    moved: list[int] = []
    settings = {"block_size": config.block_size, "upload_block_size": config.upload_block_size}

    def watch(event: object) -> None:
        if isinstance(event, BytesMoved):
            moved.append(event.nbytes)

    async with running_server(tmp_path / "root") as srv:
        async with client(srv, tmp_path / "home", progress=watch, chunk_size=4 * 1024 * KiB, **settings) as fx:
            assert (await fx.upload([tmp_path / "src"])).status == "completed"
    assert expected == 1024 * KiB and moved and max(moved) <= expected, sorted(set(moved))


async def test_files_started_together_share_one_measure_of_the_path(tmp_path: Path) -> None:
    """Four large files at once through a 100 ms path, their streams left to it: the round trip is
    measured once for all of them (at most two GETs), not by each file while the others wait."""
    files = [write_random(tmp_path / "src" / f"f{i}.bin", 8 * 1024 * KiB + 1 + i, 30 + i) for i in range(4)]
    async with running_server(tmp_path / "root") as srv:
        async with FaultProxy("127.0.0.1", int(srv.base_url.rsplit(":", 1)[1])) as proxy:
            via = RunningServer(proxy.url, srv.root, srv.users, srv.config)
            async with client(via, tmp_path / "home") as fx:
                await fx.capabilities()  # remembered: the command below sends no GET for them
            proxy.add(Latency(0.05))
            log = proxy.add(Record())
            config = TransferConfig(chunk_size=1024 * KiB, upload_streams=None, journal_flush_interval=0.05)
            from flowxfer.transfer import Flowxfer

            home = tmp_path / "home"
            async with Flowxfer(
                via.base_url, config_dir=home / "config", journal=home / "journal.db", config=config
            ) as fx:
                assert (await fx.upload([tmp_path / "src"])).status == "completed"
            measures = log.select("GET", r"^/capabilities$")
            assert 1 <= len(measures) <= 2, [(e.method, e.path) for e in log.entries]
    assert len(files) == 4


async def test_files_too_many_for_streams_send_no_measure(tmp_path: Path) -> None:
    """Nine large files at once, eight streams at most: each goes in strict order on any path, and
    its chunk is the server's limit whatever the round trip, so no GET measures the path first."""
    from flowxfer.transfer import Flowxfer

    for i in range(9):
        write_random(tmp_path / "src" / f"f{i}.bin", 8 * 1024 * KiB + 1 + i, 40 + i)
    async with running_server(tmp_path / "root") as srv:
        async with FaultProxy("127.0.0.1", int(srv.base_url.rsplit(":", 1)[1])) as proxy:
            via = RunningServer(proxy.url, srv.root, srv.users, srv.config)
            async with client(via, tmp_path / "home") as fx:
                await fx.capabilities()  # remembered: the command below sends no GET for them
            log = proxy.add(Record())
            config = TransferConfig(concurrency=9, upload_streams=None, journal_flush_interval=0.05)
            home = tmp_path / "home"
            async with Flowxfer(
                via.base_url, config_dir=home / "config", journal=home / "journal.db", config=config
            ) as fx:
                assert (await fx.upload([tmp_path / "src"])).status == "completed"
            assert not log.select("GET", r"^/capabilities$"), [(e.method, e.path) for e in log.entries]
            assert not log.select("POST", r"^/upload/parallel") and len(log.select("POST", r"^/upload$")) == 9


async def test_the_path_decides_the_streams_by_default(tmp_path: Path) -> None:
    """Streams left to the path: one on loopback (more would only add work), several from a 40 ms round trip."""
    src = write_random(tmp_path / "big.bin", 12 * CHUNK + 3, 8)
    default = TransferConfig()
    async with running_server(tmp_path / "root") as srv:
        async with FaultProxy("127.0.0.1", int(srv.base_url.rsplit(":", 1)[1])) as proxy:
            log = proxy.add(Record())
            via = RunningServer(proxy.url, srv.root, srv.users, srv.config)
            async with client(via, tmp_path / "near", upload_streams=None) as fx:
                assert (await fx.upload([src])).status == "completed"
                near = default.upload_streams_for(fx.client.round_trip)
            if near == 1:  # a loaded machine can make loopback look like a few ms
                assert not log.select(None, r"^/upload/parallel") and len(log.select("POST", r"^/upload$")) == 13
            log.clear()
            proxy.add(Latency(0.02))  # each way: a 40 ms round trip
            async with client(via, tmp_path / "far", upload_streams=None) as fx:
                assert (await fx.upload([src], force=True)).status == "completed"
                far = default.upload_streams_for(fx.client.round_trip)
            posts = log.select("POST", PARALLEL)
            assert far >= 5 and len(posts) == 13 and len({e.connection for e in posts}) == far
            assert not log.select("POST", r"^/upload$")


async def test_a_round_trip_guessed_from_a_new_connection_is_measured_again(tmp_path: Path) -> None:
    """The first answer of a command comes on a new connection and counts half (a guess: here, with
    a handshake that cost nothing, half the path): a large file's streams are counted from one answer
    more, on the open connection, not from that guess (4 streams at 50 ms instead of 6)."""
    src = write_random(tmp_path / "big.bin", 9 * 1024 * KiB + 5, 11)
    default = TransferConfig()
    async with running_server(tmp_path / "root") as srv:
        async with FaultProxy("127.0.0.1", int(srv.base_url.rsplit(":", 1)[1])) as proxy:
            via = RunningServer(proxy.url, srv.root, srv.users, srv.config)
            async with client(via, tmp_path / "home"):
                pass  # logged in: the command below sends no POST /login first
            for remembered in (tmp_path / "home" / "config").glob("capabilities*"):
                remembered.unlink()  # so its first request is the GET /capabilities
            proxy.add(Latency(0.05))  # each way: a 100 ms round trip
            log = proxy.add(Record())
            round_trip = await _upload_path_fitted(via.base_url, tmp_path / "home", src)
            assert round_trip is not None and round_trip >= 0.09 and len(log.select("GET", r"^/capabilities$")) >= 2
            posts = log.select("POST", PARALLEL)
            assert len({e.connection for e in posts}) == default.upload_streams_for(round_trip) >= 7


async def test_the_streams_connections_are_opened_while_the_upload_is(tmp_path: Path) -> None:
    """Through a path whose new connections wait a round trip for their handshake: the connections a
    large file's chunks go on are opened while ``POST /upload/parallel`` is answered, so its four
    chunks take one round trip, not two, and the finish one more."""
    from benchmarks.wanpath import PathSpec, WanPath

    rtt = 1.0
    src = write_random(tmp_path / "big.bin", 4 * CHUNK, 12)
    stamps = _Stamps()
    async with running_server(tmp_path / "root") as srv:
        async with FaultProxy("127.0.0.1", int(srv.base_url.rsplit(":", 1)[1])) as proxy:
            async with WanPath(PathSpec(rtt=rtt, link_rate=None), int(proxy.url.rsplit(":", 1)[1])) as path:
                via = RunningServer(path.url, srv.root, srv.users, srv.config)
                async with client(via, tmp_path / "home", upload_streams=4, progress=stamps) as fx:
                    await fx.capabilities()
                    log = proxy.add(Record())
                    assert (await fx.upload([src])).status == "completed"
        chunks = log.select("POST", PARALLEL)
        assert len(chunks) == 4 and len({e.connection for e in chunks}) == 4
        assert stamps.took < 2.6 * rtt, stamps.took


async def test_the_early_socket_s_answer_is_measure_enough(tmp_path: Path) -> None:
    """The capabilities remembered, a large upload's first request is the round trip's measure; on
    the console script's early socket (its handshake over) that one answer is the round trip
    itself: no second GET before the first chunk."""
    import anyio

    from flowxfer.transfer import _preconnect

    src = write_random(tmp_path / "big.bin", 9 * 1024 * KiB + 5, 14)
    async with running_server(tmp_path / "root") as srv:
        async with FaultProxy("127.0.0.1", int(srv.base_url.rsplit(":", 1)[1])) as proxy:
            via = RunningServer(proxy.url, srv.root, srv.users, srv.config)
            async with client(via, tmp_path / "home") as fx:
                await fx.capabilities()  # remembered for the command below
            proxy.add(Latency(0.05))  # each way: a 100 ms round trip
            log = proxy.add(Record())
            assert _preconnect.start("127.0.0.1", int(proxy.url.rsplit(":", 1)[1]))
            try:
                await anyio.sleep(0.1)  # the handshake is over, as during the console script's imports
                round_trip = await _upload_path_fitted(via.base_url, tmp_path / "home", src)
            finally:
                _preconnect.discard()
            assert round_trip is not None and round_trip >= 0.09
            assert len(log.select("GET", r"^/capabilities$")) == 1, [(e.method, e.path) for e in log.entries]


async def _upload_path_fitted(base_url: str, home: Path, src: Path) -> float | None:
    """Upload ``src`` with the streams left to the path model (1 MiB chunks); the round trip it measured."""
    from flowxfer.transfer import Flowxfer

    config = TransferConfig(chunk_size=1024 * KiB, upload_streams=None, journal_flush_interval=0.05)
    async with Flowxfer(base_url, config_dir=home / "config", journal=home / "journal.db", config=config) as fx:
        assert (await fx.upload([src])).status == "completed"
        return fx.client.round_trip


def test_a_wave_counts_the_first_files_together_and_a_later_one_with_those_left_to_start() -> None:
    """:class:`UploadWave`: 16 files, 4 at a time, then a 17th taken alone at the end of a resume's wave.

    The first ``concurrency`` files each count all the files that start with them; a file taken after
    one finished counts those still to start, itself included (the ones under way count themselves
    through ``ctx.uploads_active``): the last of many counts itself only, and may take every stream.
    """
    wave = UploadWave()
    wave.todo = 16
    assert [wave.take(4) for _ in range(16)] == [4] * 4 + [4] * 9 + [3, 2, 1]
    single = UploadWave()
    single.todo = 1
    assert single.take(4) == 1, "a file alone counts itself only"
    resumed = UploadWave()
    resumed.todo = 2  # a resume: 14 of the 16 done before
    assert [resumed.take(4), resumed.take(4)] == [2, 2]

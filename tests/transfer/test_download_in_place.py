"""Downloads received in place (short path, large spans): within the byte budget, and never past --bwlimit.

A body received in place (:mod:`flowxfer.transfer._recv_into`) goes into two
aligned buffers of ``block_size`` per stream. The budget (``byte_budget``)
bounds the bytes in flight across files; many files of several streams each,
with a budget of one stream's buffers, must not map a pair of buffers for
every stream waiting its turn (the buffers a file's streams hand on from
span to span are kept, a pair per file here). Measured as the process's anonymous resident
memory, sampled in a thread while real downloads from the real server run.
A ``--bwlimit`` paces a body as its pieces come, so a limited download stays
on aiohttp's path: on loopback it would otherwise end at once.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from tests.support.server import running_server

from .conftest import client, write_random

MiB = 1024 * 1024


def _anon_rss() -> int:
    """This process's anonymous resident bytes (buffers mapped and touched)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no RssAnon in /proc/self/status")


async def test_streams_waiting_for_the_budget_hold_no_receive_buffers(tmp_path: Path) -> None:
    files, size = 6, 24 * MiB
    sources = [write_random(tmp_path / "src" / f"f{n}.bin", size, 30 + n) for n in range(files)]
    async with running_server(tmp_path / "root") as srv:
        async with client(srv, tmp_path / "uploader", chunk_size=4 * MiB) as fx:
            ids = [f.id or "" for f in (await fx.upload(sources)).files]
        settings = {"download_chunk_size": 4 * MiB, "block_size": 4 * MiB, "byte_budget": 8 * MiB}
        async with client(srv, tmp_path / "home", concurrency=files, segments=4, **settings) as fx:
            base, peak, stop = _anon_rss(), [0], threading.Event()

            def sample() -> None:
                while not stop.is_set():
                    peak[0] = max(peak[0], _anon_rss())
                    time.sleep(0.002)

            sampler = threading.Thread(target=sample)
            sampler.start()
            try:
                report = await fx.download(ids, output_dir=tmp_path / "out")
            finally:
                stop.set()
                sampler.join()
        assert report.status == "completed", report
        for source in sources:
            assert (tmp_path / "out" / source.name).read_bytes() == source.read_bytes()
        # 24 streams mapping their pair while they wait: 192 MiB. The budget admits one stream's
        # 8 MiB at a time; each file keeps one pair for its next span's stream (6 x 8 MiB, ~50 seen).
        assert peak[0] - base < 100 * MiB, (base // MiB, peak[0] // MiB)


async def test_a_download_under_bwlimit_is_paced_even_where_bodies_would_be_received_in_place(
    tmp_path: Path,
) -> None:
    size = 3 * MiB
    source = write_random(tmp_path / "src" / "paced.bin", size, 41)
    async with running_server(tmp_path / "root") as srv:
        async with client(srv, tmp_path / "uploader", chunk_size=4 * MiB) as fx:
            (data_id,) = [f.id or "" for f in (await fx.upload([source])).files]
        async with client(srv, tmp_path / "home", segments=2, block_size=1 * MiB, bwlimit="1M") as fx:
            started = time.monotonic()
            report = await fx.download([data_id], output_dir=tmp_path / "out")
            took = time.monotonic() - started
        assert report.status == "completed", report
        assert (tmp_path / "out" / source.name).read_bytes() == source.read_bytes()
        # 3 MiB at 1 MiB/s: the first MiB (describing answer, bucket) may come at once, the rest may not.
        assert took >= 1.5, took

"""A sync's start: the connection that measures the round trip is opened while it plans, not after.

A sync of many files measures the path's round trip (two small GETs, the
first on a new connection) before it chooses how many files go at once.
Those GETs once went after the folder's scan and plan, two round trips and a
handshake between the plan and the first upload (issue 20: 2,000 small files
through a 50 ms path). The first now leaves as the sync starts, beside the
journal's opening and the scan (on the wire before the plan ends); the second,
on the open connection, after the plan: one round trip left there.

Through the WAN path emulator (``benchmarks/wanpath.py``) and the recording
fault proxy in front of the real server.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from benchmarks.wanpath import PathSpec, WanPath
from flowxfer.transfer import Flowxfer, SyncOptions, TransferConfig
from flowxfer.transfer.events import TransferStarted
from tests.support.faultproxy import FaultProxy, Record
from tests.support.server import running_server
from tests.transfer.conftest import KiB, write_random

RTT = 0.2
#: More files than the short path's floor of files at once: the sync measures the path for them.
FILES = 40


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


@pytest.mark.parametrize(
    ("size", "options"),
    [
        (4 * KiB, SyncOptions()),
        # One tar past the parallel upload's floor: its upload measures the path too, and must
        # wait for the measure under way rather than send its own beside it.
        (256 * KiB, SyncOptions(pack_small=1024 * KiB)),
    ],
    ids=["one-by-one", "packed"],
)
async def test_a_sync_opens_the_measuring_connection_while_it_plans(
    tmp_path: Path, size: int, options: SyncOptions
) -> None:
    folder = tmp_path / "run"
    for index in range(FILES):
        write_random(folder / f"f{index:03}.bin", size, index)
    home = tmp_path / "home"
    async with (
        running_server(tmp_path / "root") as srv,
        FaultProxy("127.0.0.1", _port(srv.base_url)) as proxy,
        WanPath(PathSpec(rtt=RTT, link_rate=None), _port(proxy.url)) as path,
    ):
        log = proxy.add(Record())
        sent_before_plan_ended: list[int] = []

        def watch(event: Any) -> None:
            if isinstance(event, TransferStarted):  # emitted once the plan is written
                sent_before_plan_ended.append(path.stats.received["up"])

        # Counts left to the path (the conftest's pin them); the capabilities remembered
        # from the login's session, as in the benchmark's later rounds. The streams too: with
        # them pinned (and the chunk at the server's limit) an upload has nothing to measure for.
        config = TransferConfig(concurrency=None, segments=4, upload_streams=None)
        async with Flowxfer(path.url, config_dir=home / "config", journal=home / "journal.db", config=config) as fx:
            await fx.login("alice", srv.users["alice"])
            await fx.client.capabilities()
        asked = len(log.select("GET", r"^/capabilities$"))
        # A new command: its first request opens a connection, the capabilities come from the cache.
        fx = Flowxfer(path.url, config_dir=home / "config", journal=home / "journal.db", config=config, progress=watch)
        async with fx:
            sent = path.stats.received["up"]
            report = await fx.sync(folder, options)
            assert report.status == "completed", report
            assert {f.status for f in report.files} == {"done"}, report.files
            round_trip = fx.client.round_trip
        assert sent_before_plan_ended and sent_before_plan_ended[0] > sent, (
            "nothing was sent while the sync planned: the round trip was measured after the plan"
        )
        # The same two GETs as before (the capabilities remembered): a new connection's, then
        # one on it; none more, from a measure that did not wait for the first.
        measured = len(log.select("GET", r"^/capabilities$")) - asked
        assert measured == 2, measured
        assert round_trip is not None and RTT * 0.9 <= round_trip < 2 * RTT, round_trip

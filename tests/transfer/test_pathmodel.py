"""Defaults that fit the path: the pure model, the config's counts (given ones win), and a run through latency."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flowxfer.journal import Journal
from flowxfer.transfer import TransferConfig
from flowxfer.transfer import _pathmodel as model
from flowxfer.transfer._capcache import CapabilityCache
from flowxfer.transfer._config import (
    SHORT_PATH_CONCURRENCY,
    SHORT_PATH_SEGMENTS,
    SHORT_PATH_UPLOAD_STREAMS,
    UPLOAD_BUFFERS,
)
from tests.support.faultproxy import Bandwidth, Latency, Record
from tests.support.rig import rig
from tests.transfer.conftest import KiB, client, write_random

MiB = 1024 * KiB
round_trips = st.one_of(st.none(), st.floats(0, 2, allow_nan=False))
rates = st.one_of(st.none(), st.floats(1e3, 1e10, allow_nan=False))


@given(a=round_trips, b=round_trips, rate=rates)
def test_every_count_grows_with_the_round_trip_and_stays_within_its_bounds(
    a: float | None, b: float | None, rate: float | None
) -> None:
    short, long = sorted((a or 0.0, b or 0.0))
    config = TransferConfig()
    for count in (
        lambda rtt: config.segments_for(rtt, rate),
        lambda rtt: config.upload_streams_for(rtt, rate),
        config.concurrency_for,
    ):
        assert count(short) <= count(long)
    assert SHORT_PATH_SEGMENTS <= config.segments_for(long, rate) <= config.max_segments
    assert SHORT_PATH_UPLOAD_STREAMS <= config.upload_streams_for(long, rate) <= config.max_upload_streams
    assert SHORT_PATH_CONCURRENCY <= config.concurrency_for(long) <= config.max_concurrency
    base, ceiling = 16 * MiB, 64 * MiB
    assert model.chunk_size(short, None, base, ceiling) <= model.chunk_size(long, None, base, ceiling) <= ceiling


@given(
    concurrency=st.integers(1, 64),
    segments=st.integers(1, 16),
    streams=st.integers(1, 16),
    round_trip=round_trips,
    rate=rates,
)
def test_a_count_given_wins_whatever_the_path(
    concurrency: int, segments: int, streams: int, round_trip: float | None, rate: float | None
) -> None:
    config = TransferConfig(concurrency=concurrency, segments=segments, upload_streams=streams)
    assert config.concurrency_for(round_trip) == concurrency
    assert config.segments_for(round_trip, rate) == segments
    assert config.upload_streams_for(round_trip, rate) == streams
    assert not config.path_fitted


@given(round_trip=round_trips, rate=rates, base=st.integers(1, 64 * MiB), ceiling=st.integers(1, 256 * MiB))
def test_the_chunk_never_exceeds_the_server_s_limit_and_a_slow_link_gets_short_chunks(
    round_trip: float | None, rate: float | None, base: int, ceiling: int
) -> None:
    chunk = model.chunk_size(round_trip, rate, base, ceiling)
    assert 1 <= chunk <= ceiling
    if rate is not None and chunk > base:
        # Stretched for the path, but never past what a resume should repeat.
        assert chunk <= max(model.MIN_MODEL_CHUNK, rate * model.RESUME_SECONDS + MiB)


def test_the_defaults_at_the_usual_round_trips() -> None:
    """The figures the docs quote: loopback, a region, a continent, the other side of the world."""
    config = TransferConfig()
    chosen = {
        ms: (config.segments_for(ms / 1000), config.upload_streams_for(ms / 1000), config.concurrency_for(ms / 1000))
        for ms in (0.1, 20, 50, 150)
    }
    assert chosen == {0.1: (4, 1, 16), 20: (4, 3, 36), 50: (8, 6, 64), 150: (8, 8, 64)}
    assert (config.segments_for(None), config.upload_streams_for(None), config.concurrency_for(None)) == (4, 1, 16)
    hosted = [model.chunk_size(ms / 1000, None, 16 * MiB, model.HOSTED_CHUNK_CEILING) // MiB for ms in (0.1, 20, 50)]
    assert hosted == [16, 20, 48]
    # A 10 Mbit/s bwlimit keeps a 64 MiB chunk to 30 s of sending; 1 Mbit/s to 4 MiB.
    assert model.chunk_size(0.05, 1.25e6, 64 * MiB, 64 * MiB) == 36 * MiB
    assert model.chunk_size(0.05, 125e3, 16 * MiB, 64 * MiB) == 4 * MiB
    # A known slow link needs fewer connections than the assumed fast one.
    assert config.upload_streams_for(0.05, 1.25e6) == 1


def test_a_ceiling_below_the_short_path_s_count_is_refused() -> None:
    with pytest.raises(ValueError, match="max_concurrency"):
        TransferConfig(max_concurrency=4)
    with pytest.raises(ValueError, match="at least 1"):
        TransferConfig(concurrency=0)


async def test_many_files_through_a_long_path_go_more_at_once_and_the_run_journals_its_choice(
    tmp_path: Path,
) -> None:
    """40 small files through 25 ms each way: more than 16 at once, and ``path`` in the transfer's state."""
    files = [write_random(tmp_path / "src" / f"f{i:02}.bin", 8 * KiB, i) for i in range(40)]
    async with rig(tmp_path, True) as r:
        r.proxy.add(Latency(0.025))
        log = r.proxy.add(Record())
        async with client(r.via_proxy, tmp_path / "home", concurrency=None, segments=None, upload_streams=None) as fx:
            report = await fx.upload(files)
        assert report.status == "completed", [f.error for f in report.files]
        journal = Journal.open(tmp_path / "home" / "journal.db")
        try:
            record = journal.get_transfer(report.transfer_id)
        finally:
            journal.close()
    assert record is not None
    path = record.state["path"]
    assert path["round_trip_ms"] >= 50
    config = TransferConfig()
    assert path["concurrency"] == config.concurrency_for(path["round_trip_ms"] / 1000) > SHORT_PATH_CONCURRENCY
    assert path["segments"] == config.segments_for(path["round_trip_ms"] / 1000) > SHORT_PATH_SEGMENTS
    assert path["upload_streams"] > SHORT_PATH_UPLOAD_STREAMS
    assert path["chunk_size"] == 64 * KiB, "the chunk size asked for wins"
    # The files really went more than 16 at once: each request in flight has its own connection.
    connections = {e.connection for e in log.select("POST", r"^/upload$")}
    assert len(connections) > SHORT_PATH_CONCURRENCY


async def test_a_concurrency_given_is_kept_on_a_long_path(tmp_path: Path) -> None:
    files = [write_random(tmp_path / "src" / f"f{i:02}.bin", 8 * KiB, i) for i in range(24)]
    async with rig(tmp_path, True) as r:
        r.proxy.add(Latency(0.025))
        log = r.proxy.add(Record())
        async with client(r.via_proxy, tmp_path / "home", concurrency=4) as fx:
            report = await fx.upload(files)
        assert report.status == "completed", [f.error for f in report.files]
    assert len({e.connection for e in log.select("POST", r"^/upload$")}) <= 4


@given(few=st.integers(0, 100), many=st.integers(0, 100))
def test_upload_blocks_shrink_as_more_files_go_at_once_and_keep_their_memory_bounded(few: int, many: int) -> None:
    few, many = sorted((few, many))
    config = TransferConfig()
    assert config.upload_block_for(few) >= config.upload_block_for(many)
    block = config.upload_block_for(many)
    assert config.upload_block_size <= block <= config.block_size
    if block > config.upload_block_size:
        assert 2 * max(1, many) * block <= UPLOAD_BUFFERS
    assert config.upload_block_for(1) == config.block_size and config.upload_block_for(16) == config.upload_block_size


@given(nbytes=st.integers(0, 1 << 40), seconds=st.floats(0, 1e4, allow_nan=False), round_trip=round_trips)
def test_a_rate_is_trusted_only_from_a_transfer_long_against_its_round_trips(
    nbytes: int, seconds: float, round_trip: float | None
) -> None:
    rate = model.measured_rate(nbytes, seconds, round_trip)
    if rate is None:
        assert nbytes == 0 or seconds < model.MEASURE_SECONDS or seconds < model.MEASURE_BDPS * (round_trip or 0)
    else:
        assert rate == nbytes / seconds and seconds >= model.MEASURE_SECONDS
        assert nbytes >= model.MEASURE_BDPS * model.in_flight(round_trip, rate)


def test_a_short_or_round_trip_bound_transfer_measures_nothing() -> None:
    assert model.measured_rate(400 * MiB, 2.9, 0.05) is None  # a burst: slow start and buffers
    assert model.measured_rate(40 * MiB, 4.0, 0.2) is None  # 20 round trips: bounded by them
    assert model.measured_rate(40 * MiB, 8.0, 0.2) == 5 * MiB


@given(round_trip=round_trips, measured=rates, limit=rates)
def test_a_measure_never_starves_the_next_transfer_and_a_bwlimit_wins(
    round_trip: float | None, measured: float | None, limit: float | None
) -> None:
    """More connections than assumed for a fast measure, never fewer for a slow one; --bwlimit decides alone."""
    config = TransferConfig()
    rate, sending = model.path_rates(limit, measured)
    assumed, _ = model.path_rates(limit, None)
    if limit is not None:
        assert (rate, sending) == (limit, limit)
    for count in (config.segments_for, config.upload_streams_for):
        assert count(round_trip, rate) >= count(round_trip, assumed)
    if limit is None and measured is not None:
        assert rate == max(measured, model.ASSUMED_RATE) and sending == measured
    chunk = model.chunk_size(round_trip, rate, 16 * MiB, 64 * MiB, sending)
    assert model.MIN_MODEL_CHUNK <= chunk <= 64 * MiB
    if sending is not None:
        # Sized for the measured rate: at most 30 s of it (a resume repeats little), however fast the path.
        assert chunk <= max(model.MIN_MODEL_CHUNK, sending * model.RESUME_SECONDS + MiB)


def test_a_fast_measure_raises_the_counts_on_a_short_path() -> None:
    config = TransferConfig()
    ten_gbit, _ = model.path_rates(None, 1.25e9)
    slow, sending = model.path_rates(None, 1.25e6)
    assert (config.segments_for(0.01), config.upload_streams_for(0.01)) == (4, 2)
    assert (config.segments_for(0.01, ten_gbit), config.upload_streams_for(0.01, ten_gbit)) == (8, 8)
    assert (config.segments_for(0.05, slow), config.upload_streams_for(0.05, slow)) == (8, 6)
    assert model.chunk_size(0.05, slow, 64 * MiB, 64 * MiB, sending) == 36 * MiB


async def test_a_second_upload_is_fitted_to_the_rate_the_first_carried(tmp_path: Path) -> None:
    """Through a 256 KiB/s link: the first run measures it, the second sizes its chunks for it.

    The slow measure shortens the chunk to 30 s of sending, and leaves the
    connections at what the assumed fast link gets (a low measure never starves).
    """
    link = 256 * KiB
    big = write_random(tmp_path / "src" / "big.bin", 1 * MiB, 1)
    small = write_random(tmp_path / "src" / "small.bin", 64 * KiB, 2)
    home = tmp_path / "home"
    paths = []
    async with rig(tmp_path, True) as r:
        r.proxy.add(Bandwidth(link))
        for source in (big, small):
            async with client(r.via_proxy, home, chunk_size=None, upload_streams=None) as fx:
                report = await fx.upload([source])
            assert report.status == "completed", [f.error for f in report.files]
            journal = Journal.open(home / "journal.db")
            try:
                record = journal.get_transfer(report.transfer_id)
            finally:
                journal.close()
            assert record is not None
            paths.append(record.state["path"])
    first, second = paths
    assert first["measured_rate"] is None and first["chunk_size"] == 64 * MiB
    measured = second["measured_rate"]
    assert 0.5 * link < measured <= 1.1 * link, "the first run's rate, remembered"
    round_trip = None if second["round_trip_ms"] is None else second["round_trip_ms"] / 1000
    assert second["rate"] == model.ASSUMED_RATE
    assert second["chunk_size"] == model.chunk_size(round_trip, model.ASSUMED_RATE, 64 * MiB, 64 * MiB, measured)
    assert second["chunk_size"] <= 8 * MiB
    assert second["upload_streams"] == TransferConfig().upload_streams_for(round_trip)


async def test_a_run_under_bwlimit_measures_its_limit_and_records_nothing(tmp_path: Path) -> None:
    big = write_random(tmp_path / "src" / "big.bin", 1 * MiB, 1)
    async with rig(tmp_path, True) as r:
        async with client(r.via_proxy, tmp_path / "home", bwlimit="256k") as fx:
            report = await fx.upload([big])
        assert report.status == "completed", [f.error for f in report.files]
        assert report.seconds >= model.MEASURE_SECONDS + 0.5, "long enough to be measured, were it not limited"
        cache = CapabilityCache(tmp_path / "home" / "config")
        assert cache.load(r.via_proxy.base_url) is not None, "the cache is there"
        assert cache.rate(r.via_proxy.base_url, "upload") is None

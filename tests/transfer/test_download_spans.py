"""A download's streams share out the last part of a file: every byte fetched once, streams ending together.

The plan is pure bookkeeping (``Spans``), tested directly: whatever order the
streams receive bytes and go idle in, the bytes they receive cover the file
exactly once. Then the engine through the fault proxy: one stream stalls,
the others take over its tail, and the file arrives exact with every byte
written once.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from flowxfer.transfer import _download_streams
from flowxfer.transfer._download_spans import Span, Spans, split_point
from tests.support.faultproxy import Latency, Match, StallMidBody
from tests.support.rig import rig
from tests.transfer.conftest import client, write_random

KiB = 1024


@given(
    start=st.integers(0, 1 << 40),
    length=st.integers(0, 1 << 32),
    granularity=st.integers(1, 1 << 22),
    min_split=st.integers(1, 1 << 24),
)
def test_a_cut_is_aligned_inside_the_span_and_leaves_both_sides_worth_a_request(
    start: int, length: int, granularity: int, min_split: int
) -> None:
    end = start + length
    cut = split_point(start, end, granularity, min_split)
    if cut is None:
        # Refused only when the aligned middle would leave a side too small.
        middle = start + length // 2
        aligned = -(-middle // granularity) * granularity
        assert aligned - start < min_split or end - aligned < min_split
    else:
        assert cut % granularity == 0
        assert start + min_split <= cut <= end - min_split


@st.composite
def runs(draw: st.DrawFn) -> tuple[list[tuple[int, int]], int, list[int]]:
    """A file's missing ranges (gaps between them are bytes already on disk), a stream count, and moves."""
    cuts = sorted(set(draw(st.lists(st.integers(1, 4000), max_size=6))))
    bounds = [0, *cuts, 4001]
    spans = [(a, b) for a, b in zip(bounds, bounds[1:], strict=False) if draw(st.booleans()) or a == 0]
    moves = draw(st.lists(st.integers(0, 1 << 16), min_size=1, max_size=400))
    return spans, draw(st.integers(1, 6)), moves


@given(runs(), st.integers(1, 64), st.integers(1, 256), st.sampled_from([None, 0.9, 2.0]))
def test_whatever_the_order_every_missing_byte_is_received_exactly_once(
    case: tuple[list[tuple[int, int]], int, list[int]], granularity: int, min_split: int, full: float | None
) -> None:
    ranges, streams, moves = case
    ticks = iter(range(1 << 30))
    plan = Spans(
        ranges, granularity, min_split, worth=0.0, min_age=0.0, full=full, recent=1.0, clock=lambda: float(next(ticks))
    )
    holding: list[Span | None] = [None] * streams
    received: list[tuple[int, int]] = []
    step = 0
    while True:
        move = moves[step % len(moves)]
        step += 1
        who = move % streams
        span = holding[who]
        if span is None:
            span = holding[who] = plan.take()
            if span is None:
                if all(h is None for h in holding):
                    break
                who = next(i for i, h in enumerate(holding) if h is not None)  # nothing to take: another moves
                span = holding[who]
                assert span is not None
        amount = min(span.remaining, 1 + (move >> 3) % 97)
        received.append((span.start, span.start + amount))
        span.start += amount
        if span.remaining == 0:
            plan.done(span)
            holding[who] = None
    assert _merged(received) == _merged(ranges)


def _merged(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted ranges joined where they touch; an overlap fails (a byte received twice)."""
    merged: list[tuple[int, int]] = []
    for a, b in sorted(r for r in ranges if r[1] > r[0]):
        assert not merged or a >= merged[-1][1], f"bytes {a}-{b} received twice"
        if merged and merged[-1][1] == a:
            merged[-1] = (merged[-1][0], b)
        else:
            merged.append((a, b))
    return merged


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_an_idle_stream_takes_the_back_half_of_the_slowest_span_when_worth_a_request() -> None:
    clock = Clock()
    plan = Spans([(0, 100), (100, 400), (400, 700)], granularity=10, min_split=20, worth=0.4, full=None, clock=clock)
    first, second, third = plan.take(), plan.take(), plan.take()
    assert first is not None and second is not None and third is not None
    assert [(s.start, s.end) for s in (first, second, third)] == [(0, 100), (100, 400), (400, 700)]
    clock.now += 1.0
    first.start = 100  # 100 bytes a second
    plan.done(first)
    second.start = 110  # 10 bytes a second, 290 left: 29 s
    third.start = 600  # 200 bytes a second, 100 left: 0.5 s
    stolen = plan.take()
    assert stolen is not None and (stolen.start, stolen.end) == (260, 400)
    assert second.end == 260 and plan.splits == 1
    assert stolen.began == clock.now and stolen.origin == 260
    third.start = 650  # 50 left at 250 bytes a second: 0.2 s, not worth a request
    second.start = 250  # 10 left: under min_split
    assert plan.take() is None


def test_a_span_is_cut_only_when_its_stream_needs_more_than_twice_what_a_request_waits() -> None:
    """A new request's first byte is as far away as the answers were (the longest), and the owner's
    bytes that far ahead are in flight: 1.5 s left is worth a cut when answers took 0.2 s, not 1 s."""
    clock = Clock()
    plan = Spans([(0, 100), (100, 400)], granularity=10, min_split=20, worth=0.4, full=None, clock=clock)
    first, second = plan.take(), plan.take()
    assert first is not None and second is not None
    clock.now += 1.0
    first.start = 100
    plan.done(first)
    second.start = 220  # 120 bytes a second, 180 left: 1.5 s
    plan.answer_took(1.0)
    plan.answer_took(0.2)  # the longest counts
    assert plan.take() is None and plan.splits == 0
    plan.answer_delay = 0.2
    stolen = plan.take()
    assert stolen is not None and (stolen.start, stolen.end) == (310, 400) and second.end == 310


def test_a_stream_just_started_or_still_waiting_for_its_first_byte_is_left_alone() -> None:
    clock = Clock()
    plan = Spans([(0, 1000)], granularity=1, min_split=1, worth=0.4, min_age=0.1, full=None, clock=clock)
    only = plan.take()
    assert only is not None
    clock.now += 0.05
    assert plan.take() is None, "too young to judge its rate"
    clock.now += 0.06
    assert plan.take() is None, "nothing arrived yet: its request may be waiting out a Retry-After"
    only.start = 10  # 10 bytes in 0.11 s: 99 s left
    assert plan.take() is not None


def test_no_span_is_cut_while_the_streams_left_carry_what_all_of_them_did() -> None:
    """One connection can fill the path: as a stream runs out of work the others speed up, and a cut would
    only throw away the owner's bytes in flight. Once the file's rate falls (a stream stalls), it is cut."""
    clock = Clock()
    plan = Spans([(0, 500), (500, 2000), (2000, 3500)], granularity=10, min_split=20, worth=0.4, clock=clock)
    first, second, third = plan.take(), plan.take(), plan.take()
    assert first is not None and second is not None and third is not None
    clock.now += 5.0  # 100 bytes a second each, 300 the file
    first.start, second.start, third.start = 500, 1000, 2500
    plan.done(first)
    for _ in range(10):  # the two left share what the three had: 150 a second each
        assert plan.take() is None, "the file's rate holds: a cut gains nothing"
        clock.now += 0.1
        second.start += 15
        third.start += 15
    # By their rate since they began (~106 a second) each has ~3.3 s left: the old rule cut here.
    assert plan.splits == 0 and second.end == 2000 and third.end == 3500
    stolen = None
    for _ in range(8):  # the second stalls: the file's rate halves, seen within a few looks
        clock.now += 0.1
        third.start += 15
        stolen = plan.take()
        if stolen is not None:
            break
    assert stolen is not None and plan.splits == 1 and second.end == stolen.start


def test_a_rate_that_holds_with_as_many_streams_as_before_says_nothing_of_the_link() -> None:
    """One stream ran alone while the other sat out a Retry-After; then the late one runs alone at the
    same rate. No fewer streams carry the file than before: the usual rules cut the late one's span."""
    clock = Clock()
    plan = Spans([(0, 1000), (1000, 2000)], granularity=10, min_split=20, worth=0.4, clock=clock)
    first, second = plan.take(), plan.take()
    assert first is not None and second is not None
    clock.now += 9.8
    second.answered(clock.now)  # its answer begins a moment before the first is done: it carried none
    clock.now += 0.2
    first.start, second.start = 1000, 1020  # the first alone, 100 bytes a second
    plan.done(first)
    clock.now += 0.8
    second.start = 1100  # 100 bytes a second: the file's rate holds, 9 s left
    stolen = plan.take()
    assert stolen is not None and (stolen.start, stolen.end) == (1550, 2000) and second.end == 1550


def test_the_rate_is_not_judged_before_idle_streams_have_looked_for_a_while() -> None:
    clock = Clock()
    plan = Spans([(0, 1000), (1000, 2000)], granularity=1, min_split=1, worth=0.4, recent=0.25, clock=clock)
    first, second = plan.take(), plan.take()
    assert first is not None and second is not None
    clock.now += 1.0
    first.start, second.start = 1000, 1100  # the second stalled all along
    plan.done(first)
    assert plan.take() is None, "the first look: no rate to compare yet"
    clock.now += 0.2
    assert plan.take() is None, "0.2 s since the first look: still too short"
    clock.now += 0.05
    assert plan.take() is not None, "0.25 s of nothing arriving: its tail goes to the idle stream"


async def test_a_stalled_stream_s_tail_is_taken_by_the_others_and_every_byte_arrives_once(tmp_path: Path) -> None:
    """Four streams through a proxy with latency; one stalls for seconds. The rest fetch its tail."""
    size = 2048 * KiB
    source = write_random(tmp_path / "src" / "big.bin", size, 11)
    async with rig(tmp_path, True) as r:
        async with client(r.server, tmp_path / "direct") as fx:
            data_id = (await fx.upload([source])).files[0].id
        assert data_id
        r.proxy.add(Latency(0.005))
        # A stream's ranged answer, not the describing one (which a stall would hold before any stream began).
        stall = r.proxy.add(
            StallMidBody(Match("GET", r"^/downloads/.+/"), at_bytes=64 * KiB, seconds=2.0, then="resume")
        )
        async with client(r.via_proxy, tmp_path / "home", segments=4) as fx:
            report = await fx.download([data_id], output_dir=tmp_path / "out")
            # The API answers measured the proxy's latency (5 ms each way per segment forwarded). An
            # answer on a new connection counts half (its handshake is taken as a round trip), and
            # the proxy does not delay handshakes: half the latency is all that is certain.
            assert fx.client.round_trip is not None and fx.client.round_trip >= 0.005
        assert report.status == "completed", report
    assert (tmp_path / "out" / "big.bin").read_bytes() == source.read_bytes()
    assert stall.hits == 1
    starts = [_range_start(e.request_headers) for e in r.log.select("GET", r"^/downloads/")]
    segments = {0, size // 4, size // 2, 3 * size // 4}
    assert segments <= set(starts)
    # The describing answer brought the head (one 64 KiB chunk): the first stream asks from its end.
    segments.add(64 * KiB)
    assert set(starts) - segments, "no stream took over the stalled stream's tail"
    # Every byte was written once: what was written adds up to the file, nothing more.
    assert report.bytes_transferred == size


def _range_start(headers: tuple[tuple[str, str], ...]) -> int:
    value = next(v for k, v in headers if k.lower() == "range")
    return int(value.removeprefix("bytes=").split("-")[0])


def test_a_stream_s_rate_counts_from_its_answer_not_from_a_wait_before_it() -> None:
    """A stream that waited a second for its answer (a Retry-After) and then runs fast is not split."""
    clock = Clock()
    plan = Spans([(0, 1000)], granularity=1, min_split=1, worth=0.4, full=None, clock=clock)
    only = plan.take()
    assert only is not None
    clock.now += 1.0
    only.answered(clock.now)
    clock.now += 0.2
    only.start = 700  # 700 bytes in 0.2 s: 0.09 s left (0.51 s if the wait counted)
    assert plan.take() is None


async def test_a_file_ends_when_its_last_span_does_not_when_idle_streams_look_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One stream stalls while the others run out of work and wait: they leave as the stalled one ends.

    Idle streams look for a span worth splitting every ``LOOK_AGAIN`` seconds, made two minutes
    here: a file that waited for that look would take minutes, not the stall's second.
    """
    monkeypatch.setattr(_download_streams, "LOOK_AGAIN", 120.0)
    size = 1024 * KiB
    source = write_random(tmp_path / "src" / "big.bin", size, 12)
    async with rig(tmp_path, True) as r:
        async with client(r.server, tmp_path / "direct") as fx:
            data_id = (await fx.upload([source])).files[0].id
        assert data_id
        r.proxy.add(StallMidBody(Match("GET", r"^/downloads/.+/"), at_bytes=16 * KiB, seconds=1.0, then="resume"))
        async with client(r.via_proxy, tmp_path / "home", segments=4) as fx:
            with anyio.fail_after(60):
                report = await fx.download([data_id], output_dir=tmp_path / "out")
        assert report.status == "completed", report
    assert (tmp_path / "out" / "big.bin").read_bytes() == source.read_bytes()

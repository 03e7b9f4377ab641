from __future__ import annotations

import heapq
import json
import math
from dataclasses import dataclass, field

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from flowxfer.protocol import DEFAULT_HOURLY_LIMITS
from flowxfer.transfer._tokenbucket import LATENCY_ALLOWANCE, RESET_TOLERANCE, TokenBucket, default_buckets

# --- the continuous bucket (no word from the server) ---------------------------------------


def test_starts_full_and_grants_at_once() -> None:
    bucket = TokenBucket(10, 1)
    assert bucket.available(0) == 10
    assert [bucket.reserve(1, 0) for _ in range(10)] == [0.0] * 10
    assert bucket.available(0) == 0


def test_refills_continuously_up_to_capacity() -> None:
    bucket = TokenBucket(10, 2, tokens=0, updated=100)
    assert bucket.available(101) == pytest.approx(2)
    assert bucket.available(103) == pytest.approx(6)
    assert bucket.available(1000) == 10


def test_reservations_queue_fairly() -> None:
    bucket = TokenBucket(10, 1, tokens=0, updated=0)
    # Three callers at the same moment: each waits behind the ones before.
    assert [bucket.reserve(1, 0) for _ in range(3)] == pytest.approx([1, 2, 3])
    # A caller arriving later still queues behind them.
    assert bucket.reserve(1, 1.5) == pytest.approx(2.5)


def test_amount_larger_than_capacity_waits_in_proportion() -> None:
    bucket = TokenBucket(10, 2)
    assert bucket.reserve(30, 0) == pytest.approx(10)  # 10 in hand, 20 more at 2/s
    assert bucket.reserve(1, 0) == pytest.approx(10.5)


def test_zero_amount_never_waits_unless_held() -> None:
    bucket = TokenBucket(1, 1, tokens=-5, updated=0)
    assert bucket.reserve(0, 0) == pytest.approx(5)  # in debt: even nothing waits its turn
    assert TokenBucket(1, 1).reserve(0, 0) == 0


def test_refund_gives_back_but_never_above_capacity() -> None:
    bucket = TokenBucket(10, 1, tokens=0, updated=0)
    assert bucket.reserve(5, 0) == pytest.approx(5)
    bucket.refund(5, 0)
    assert bucket.reserve(1, 0) == pytest.approx(1)
    full = TokenBucket(10, 1)
    full.refund(100, 0)
    assert full.available(0) == 10


def test_blocked_until() -> None:
    bucket = TokenBucket(10, 2, tokens=0, updated=50)
    assert bucket.blocked_until(50) == pytest.approx(50.5)
    assert bucket.blocked_until(60) == 60
    # A query changes nothing.
    assert bucket.available(50) == 0
    assert bucket.tokens == 0


def test_clock_going_backwards_neither_refills_nor_waits_extra() -> None:
    bucket = TokenBucket(10, 1, tokens=5, updated=100)
    assert bucket.reserve(1, 90) == 0  # tokens are there: no wait because another clock ran ahead
    assert bucket.tokens == 4
    assert bucket.updated == 100
    bucket.reserve(1, 95)
    assert bucket.available(100) == pytest.approx(3)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"capacity": 0, "refill_per_second": 1},
        {"capacity": -1, "refill_per_second": 1},
        {"capacity": 1, "refill_per_second": 0},
        {"capacity": math.inf, "refill_per_second": 1},
        {"capacity": 1, "refill_per_second": math.nan},
        {"capacity": 1, "refill_per_second": 1, "window": 0},
        {"capacity": 1, "refill_per_second": 1, "tokens": math.nan},
    ],
)
def test_constructor_refuses(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        TokenBucket(**kwargs)  # type: ignore[arg-type]


def test_reserve_refuses_negative_amounts() -> None:
    bucket = TokenBucket(1, 1)
    with pytest.raises(ValueError):
        bucket.reserve(-1, 0)
    with pytest.raises(ValueError):
        bucket.refund(-1, 0)
    with pytest.raises(ValueError):
        bucket.reserve(math.inf, 0)


# --- learning from the server ------------------------------------------------------------


def test_observe_never_exceeds_what_the_server_says_remains() -> None:
    bucket = TokenBucket(100, 100 / 3600)
    bucket.observe(100, 7, 1000.0, now=10)
    assert bucket.available(10) == 7
    # A later answer saying more remains does not raise our estimate (our reservations in flight).
    bucket.reserve(2, 11)
    bucket.observe(100, 7, 1000.0, now=12)
    assert bucket.available(12) == 5


def test_remaining_zero_blocks_until_reset_then_the_whole_budget_is_there() -> None:
    bucket = TokenBucket(100, 100 / 3600)
    bucket.observe(100, 0, 1000.0, now=10)
    assert bucket.available(500) == 0
    assert bucket.blocked_until(10) == pytest.approx(1000)
    assert bucket.reserve(1, 10) == pytest.approx(990)
    # A fresh window is used at once, not a trickle at a time ...
    assert bucket.available(1000) == 99
    assert [bucket.reserve(1, 1000) for _ in range(99)] == [0.0] * 99
    # ... and no more than the window holds.
    assert bucket.reserve(1, 1000) > 0


def test_no_refill_inside_a_known_window() -> None:
    bucket = TokenBucket(100, 100 / 3600)
    bucket.observe(100, 5, 3000.0, now=0)
    assert bucket.available(2997) == 5  # a continuous bucket would have refilled ~83 tokens
    # The window may end within the second before Reset, and a request sent now must arrive by then.
    assert bucket.available(3000 - RESET_TOLERANCE - LATENCY_ALLOWANCE) == 0


def test_debt_beyond_one_window_waits_whole_windows() -> None:
    bucket = TokenBucket(3, 3 / 3600)
    bucket.observe(3, 3, 10.0, now=0)  # window guessed: 10 s left -> 11 s
    bucket.observe(3, 3, 21.0, now=11)  # second window seen 11 s later: learned 11 s
    assert bucket.window == pytest.approx(11)
    waits = [bucket.reserve(1, 11) for _ in range(9)]
    step = bucket.window + RESET_TOLERANCE
    assert waits[:3] == [0, 0, 0]
    assert waits[3:6] == pytest.approx([10] * 3)  # the next window, at 21
    assert waits[6:] == pytest.approx([10 + step] * 3)


def test_window_length_is_learned_from_two_resets() -> None:
    bucket = TokenBucket(100, 100 / 3600)
    assert bucket.window == 3600
    bucket.observe(3, 2, 10.0, now=0.5)
    assert bucket.capacity == 3
    assert not bucket.window_learned
    assert bucket.window == pytest.approx(9.5 + RESET_TOLERANCE)  # a guess from what was left
    bucket.observe(3, 2, 21.0, now=11.2)
    assert bucket.window_learned
    assert bucket.window == pytest.approx(11)
    assert bucket.refill_per_second == pytest.approx(3 / 11)
    # A gap of several windows does not lengthen it.
    bucket.observe(3, 2, 70.0, now=60.3)
    assert bucket.window == pytest.approx(11)
    # One second apart is the same window (the server rounds up to whole seconds).
    bucket.observe(3, 1, 71.0, now=61)
    assert bucket.window == pytest.approx(11)


def test_window_is_never_shorter_than_what_is_left_of_it() -> None:
    bucket = TokenBucket(1000, 1000 / 3600)
    bucket.observe(1000, 999, 86_400.0, now=0)  # a daily budget
    assert bucket.window >= 86_400
    assert bucket.refill_per_second <= 1000 / 86_400


def test_stale_answer_cannot_take_a_fresh_window_away() -> None:
    bucket = TokenBucket(10, 10 / 3600)
    bucket.observe(10, 0, 100.0, now=50)
    assert bucket.available(100) == 10
    # The answer to a request sent before the reset arrives after it: it speaks of the old window.
    bucket.observe(10, 0, 100.0, now=101)
    assert bucket.available(101) == 10


def test_a_late_first_answer_does_not_make_the_default_hour_the_window() -> None:
    """The first ``Reset`` we hear of may already be past (its answer was slow: a busy server, fsync).

    Regression: the bucket then followed windows with the default hour as their length, and a
    2-request, 2-second budget made its third request wait an hour (an engine test hung).
    """
    bucket = default_buckets()["upload"]
    assert [bucket.reserve(1, 1000.0) for _ in range(4)] == [0.0] * 4  # before any word: the hourly default
    bucket.observe(2, 1, 1002.0, now=1002.5)  # the window [1000, 1002) is over when we hear of it
    assert bucket.window < 10
    waits = [bucket.reserve(1, 1002.6) for _ in range(5)]
    assert waits[0] == 0  # that window is over: the next one's budget is there
    assert max(waits) < 10  # a few windows of seconds, never an hour


def test_smaller_limit_shifts_tokens_without_phantom_debt() -> None:
    bucket = TokenBucket(500, 500 / 3600)
    for _ in range(16):
        assert bucket.reserve(1, 0) == 0  # 16 concurrent requests, all let through
    bucket.observe(3, 2, 10.0, now=0.1)  # ... but the server only allows 3
    assert bucket.capacity == 3
    assert bucket.tokens == 0  # not -13: those 13 were sent and refused, their retries queue anew
    assert bucket.reserve(1, 0.2) == pytest.approx(9.8)


def test_larger_limit_adds_the_difference() -> None:
    bucket = TokenBucket(100, 100 / 3600)
    bucket.reserve(30, 0)
    bucket.observe(200, None, None, now=0)
    assert bucket.capacity == 200
    assert bucket.available(0) == pytest.approx(170)


def test_missing_headers_change_nothing() -> None:
    bucket = TokenBucket(100, 100 / 3600)
    before = bucket.to_state()
    bucket.observe(None, None, None, now=0)
    assert bucket.to_state() == before


def test_window_opens_with_our_next_request() -> None:
    # Flow opens a window at the first request after the previous one ended.
    bucket = TokenBucket(2, 2 / 3600)
    bucket.observe(2, 0, 10.0, now=0)
    bucket.observe(2, 1, 31.0, now=21)  # learned: at least 21 s
    bucket.observe(2, 0, 31.0, now=21.5)
    # Long idle: several windows' worth. The next window opens with our next reservation.
    assert bucket.reserve(1, 500) == 0
    assert bucket.reserve(1, 500) == 0
    assert bucket.reserve(1, 500) == pytest.approx(bucket.window + RESET_TOLERANCE)


def test_penalize_holds_until_retry_after() -> None:
    bucket = TokenBucket(100, 100 / 3600)
    bucket.penalize(30, now=0)
    assert bucket.available(29.9) == 0
    assert bucket.blocked_until(0) == pytest.approx(30)
    # Without known windows, one token is there for the retry the server invited.
    assert bucket.reserve(1, 0) == pytest.approx(30)
    assert bucket.reserve(1, 0) > 30


def test_penalize_following_windows_means_the_window_ends_then() -> None:
    bucket = TokenBucket(5, 5 / 3600)
    bucket.observe(5, 3, 50.0, now=0)
    bucket.penalize(20, now=1)  # the server says: nothing until 21
    assert bucket.available(20) == 0
    assert bucket.reserve(1, 2) == pytest.approx(19)
    assert bucket.available(21) == 4  # the whole window, minus the reservation queued for it


def test_penalize_never_shortens_a_hold() -> None:
    bucket = TokenBucket(10, 1)
    bucket.penalize(60, now=0)
    bucket.penalize(5, now=1)
    assert bucket.hold_until == 60


# --- persistence ----------------------------------------------------------------------


def test_state_round_trips_through_json() -> None:
    bucket = TokenBucket(3, 3 / 3600)
    bucket.observe(3, 1, 100.0, now=90)
    bucket.reserve(4, 91)
    bucket.penalize(5, 92)
    state = json.loads(json.dumps(bucket.to_state()))
    copy = TokenBucket.from_state(state)
    assert copy == bucket
    assert copy.reserve(1, 95) == bucket.reserve(1, 95)


def test_from_state_tolerates_missing_optional_and_unknown_keys() -> None:
    bucket = TokenBucket.from_state({"capacity": 5, "refill_per_second": 1, "future_field": [1, 2]})
    assert bucket.tokens == 5
    assert bucket.reset_at is None


@pytest.mark.parametrize(
    ("state", "error"),
    [
        ({"refill_per_second": 1}, KeyError),
        ({"capacity": "5", "refill_per_second": 1}, TypeError),
        ({"capacity": 5, "refill_per_second": 1, "tokens": True}, TypeError),
        ({"capacity": 5, "refill_per_second": 1, "tokens": math.inf}, ValueError),
        ({"capacity": -5, "refill_per_second": 1}, ValueError),
        ({"capacity": 5, "refill_per_second": 1, "window_learned": "yes"}, ValueError),
    ],
)
def test_from_state_refuses_garbage(state: dict[str, object], error: type[Exception]) -> None:
    with pytest.raises(error):
        TokenBucket.from_state(state)


def test_default_buckets() -> None:
    buckets = default_buckets()
    assert set(buckets) == set(DEFAULT_HOURLY_LIMITS)
    for name, count in DEFAULT_HOURLY_LIMITS.items():
        bucket = buckets[name]
        assert bucket.capacity == count
        assert bucket.available(1_700_000_000) == count  # a fresh process may burst the whole hour
        assert bucket.refill_per_second * 3600 == pytest.approx(count)
    assert buckets["api"] is not default_buckets()["api"]


# --- properties ---------------------------------------------------------------------


@settings(max_examples=150)
@given(
    capacity=st.integers(1, 50),
    rate=st.floats(0.01, 100),
    steps=st.lists(st.tuples(st.floats(0, 20), st.integers(1, 50)), min_size=1, max_size=60),
)
def test_continuous_grants_never_exceed_capacity_plus_rate_times_window(
    capacity: int, rate: float, steps: list[tuple[float, int]]
) -> None:
    bucket = TokenBucket(capacity, rate)
    now = 0.0
    grants: list[tuple[float, int]] = []
    for gap, amount in steps:
        now += gap
        amount = min(amount, capacity)
        wait = bucket.reserve(amount, now)
        assert wait >= 0
        grants.append((now + wait, amount))
    times = [t for t, _ in grants]
    assert times == sorted(times)  # first come, first served
    for i in range(len(grants)):
        total = 0
        for j in range(i, len(grants)):
            total += grants[j][1]
            window = grants[j][0] - grants[i][0]
            assert total <= capacity + rate * window + 1e-6 * (1 + total)


@given(
    capacity=st.integers(1, 20),
    rate=st.floats(0.01, 10),
    amounts=st.lists(st.integers(1, 200), min_size=1, max_size=30),
    gaps=st.lists(st.floats(0, 10), min_size=30, max_size=30),
)
def test_any_amount_is_granted_by_its_refill_time(
    capacity: int, rate: float, amounts: list[int], gaps: list[float]
) -> None:
    # Amounts larger than capacity still get a finite wait, and everything granted by time t
    # was there to take: the initial bucket plus what refilled since.
    bucket = TokenBucket(capacity, rate)
    now, granted = 0.0, 0
    for amount, gap in zip(amounts, gaps, strict=False):
        now += gap
        wait = bucket.reserve(amount, now)
        assert 0 <= wait < math.inf
        granted += amount
        assert granted <= capacity + rate * (now + wait) + 1e-6 * granted


_operations = st.lists(
    st.one_of(
        st.tuples(st.just("reserve"), st.floats(0, 30), st.integers(0, 10)),
        st.tuples(st.just("refund"), st.floats(0, 30), st.integers(0, 10)),
        st.tuples(st.just("observe"), st.floats(0, 30), st.integers(0, 10)),
        st.tuples(st.just("penalize"), st.floats(0, 30), st.integers(0, 60)),
    ),
    max_size=40,
)


@given(_operations)
def test_state_round_trips_after_anything(operations: list[tuple[str, float, int]]) -> None:
    bucket = TokenBucket(10, 0.5)
    now = 1_000.0
    for kind, gap, number in operations:
        now += gap
        if kind == "reserve":
            assert bucket.reserve(number, now) >= 0
        elif kind == "refund":
            bucket.refund(number, now)
        elif kind == "observe":
            bucket.observe(10, number, now + 5 + number, now)
        else:
            bucket.penalize(number, now)
        state = bucket.to_state()
        copy = TokenBucket.from_state(json.loads(json.dumps(state)))
        assert copy.to_state() == state
        assert copy.blocked_until(now + 1) == bucket.blocked_until(now + 1)
        assert bucket.available(now) <= bucket.capacity
        assert bucket.blocked_until(now) >= now


# --- against a fixed-window server -------------------------------------------------------


@dataclass
class FixedWindowServer:
    """Flow's rate limiting as the local server does it (or clock-aligned, as others do)."""

    limit: int
    window: float
    aligned: bool
    start: float = -math.inf
    used: int = 0
    refused: int = 0

    def hit(self, now: float) -> tuple[bool, int, float]:
        if self.aligned:
            start = math.floor(now / self.window) * self.window
            if start != self.start:
                self.start, self.used = start, 0
        elif now >= self.start + self.window:
            self.start, self.used = now, 0
        reset = float(math.ceil(self.start + self.window))
        if self.used >= self.limit:
            self.refused += 1
            return False, 0, reset
        self.used += 1
        return True, self.limit - self.used, reset


@dataclass(order=True)
class Event:
    at: float
    order: int
    kind: str = field(compare=False)
    payload: tuple[int, float] = field(compare=False, default=(0, 0.0))


@settings(max_examples=200, deadline=None)
# Found by hypothesis: a request sent 1.5 s before Reset arrived after the window ended ...
@example(limit=2, window=29, aligned=False, delay_fraction=0.375, latency=0.5, gaps=[19.5, 29.0, 0, 0], start=0)
# ... and requests due before a queued window opened were sent at once.
@example(limit=2, window=2, aligned=False, delay_fraction=0, latency=0, gaps=[3, 1, 0, 0, 4, 0, 0, 3], start=0)
@example(limit=2, window=2, aligned=False, delay_fraction=0, latency=0, gaps=[14, 2, 0, 0, 3, 1, 11, 1], start=0)
@example(limit=3, window=2, aligned=False, delay_fraction=0, latency=0, gaps=[6, 2, 0, 0, 0, 0, 3, 4, 1], start=0)
@given(
    limit=st.integers(1, 8),
    window=st.integers(2, 60),
    aligned=st.booleans(),
    delay_fraction=st.floats(0, 0.4),
    latency=st.floats(0, 0.5),
    gaps=st.lists(st.floats(0, 30), min_size=1, max_size=80),
    start=st.floats(0, 100),
)
def test_following_the_bucket_never_meets_a_429_once_the_server_has_spoken(
    limit: int,
    window: int,
    aligned: bool,
    delay_fraction: float,
    latency: float,
    gaps: list[float],
    start: float,
) -> None:
    """Requests wait as the bucket says, reach the server ``latency`` later, and are answered
    ``delay`` after that with the server's headers.

    Once a first probe request has been answered (for clock-aligned windows,
    one in each of two windows, so the window's length is known), no request
    is refused: no 429 that we could have predicted.
    """
    server = FixedWindowServer(limit, float(window), aligned)
    bucket = TokenBucket(limit, limit / 3600)
    delay = delay_fraction * window
    events: list[Event] = []
    order = 0

    def push(at: float, kind: str, payload: tuple[int, float] = (0, 0.0)) -> None:
        nonlocal order
        order += 1
        heapq.heappush(events, Event(at, order, kind, payload))

    push(start, "intent")  # the probe
    now = start + latency + delay + 1e-3
    if aligned:
        now = max(now, (math.floor(start / window) + 1) * window + 1e-3)
        push(now, "intent")  # a probe in the next window, once the first was answered
        now += latency + delay + 1e-3
    for gap in gaps:
        now += gap
        push(now, "intent")
    sent = 0
    while events:
        event = heapq.heappop(events)
        if event.kind == "intent":
            wait = bucket.reserve(1, event.at)
            assert wait >= 0
            push(event.at + wait + latency, "arrive")
        elif event.kind == "arrive":
            sent += 1
            ok, remaining, reset = server.hit(event.at)
            assert ok, f"request {sent} at {event.at:.3f} refused (window {server.start}..{reset})"
            push(event.at + delay, "answer", (remaining, reset))
        else:
            remaining, reset = event.payload
            bucket.observe(limit, remaining, reset, event.at)
    assert server.refused == 0


def test_a_fresh_window_is_used_at_once_against_the_server() -> None:
    server = FixedWindowServer(5, 10.0, aligned=False)
    bucket = TokenBucket(5, 5 / 3600)
    t = 0.0
    for _ in range(5):
        assert bucket.reserve(1, t) == 0
        ok, remaining, reset = server.hit(t)
        assert ok
        bucket.observe(5, remaining, reset, t)
    wait = bucket.reserve(1, t)
    assert wait == pytest.approx(10)  # the window's end, not a trickle at 5/hour
    t += wait
    ok, remaining, reset = server.hit(t)
    assert ok
    bucket.observe(5, remaining, reset, t)
    # The rest of the new window is there at once.
    assert [bucket.reserve(1, t) for _ in range(4)] == [0, 0, 0, 0]
    assert bucket.reserve(1, t) > 0


# --- queued windows, spend, refund -------------------------------------------------------


def following(capacity: int, window: float = 10.0) -> TokenBucket:
    """A bucket that has seen two of the server's windows, ``window`` seconds each."""
    bucket = TokenBucket(capacity, capacity / 3600)
    bucket.observe(capacity, capacity, 100.0, now=100 - window)
    bucket.observe(capacity, capacity, 100.0 + window, now=100.0)
    assert bucket.window_learned and bucket.window == window
    return bucket


def test_queued_windows_are_kept_as_announced() -> None:
    bucket = following(2)
    waits = [bucket.reserve(1, 100) for _ in range(6)]
    assert waits[:2] == [0, 0]
    assert waits[2:4] == pytest.approx([10, 10])  # the next window, at the current one's Reset
    assert waits[4:] == pytest.approx([21, 21])  # one window (plus margin) later
    assert [start for start, _ in bucket.queue] == pytest.approx([110, 121])
    # Learning later that windows are shorter does not move the requests already told when to go.
    bucket.observe(2, 0, 115.0, now=105)
    assert [start for start, _ in bucket.queue] == pytest.approx([110, 121])
    # A new window, though, follows the new knowledge: 5 s apart, but at least 10 - 1 s long.
    assert bucket.window == pytest.approx(9)
    assert bucket.reserve(1, 105) == pytest.approx(121 + 9 + RESET_TOLERANCE - 105)


def test_tokens_late_in_a_window_go_to_the_next() -> None:
    bucket = following(5)
    assert bucket.reserve(1, 100) == 0
    # Reset 110 means the window ends somewhere in (109, 110]: a request sent at 109.5 could already
    # count in the next window, so it is queued for it, though tokens are left in this one.
    assert bucket.available(109.5) == 0
    assert bucket.reserve(1, 109.5) == pytest.approx(0.5)
    assert bucket.available(110) == 4


def test_a_token_late_in_a_window_goes_only_to_a_request_that_arrives_in_it() -> None:
    """A request is counted when it reaches the server, up to ``LATENCY_ALLOWANCE`` after it is sent.

    Regression (found by the fixed-window property): ``Reset`` 61 for a window that ended at 60.376;
    the window's last token went to a request sent at 59.876, before ``Reset - RESET_TOLERANCE``,
    which arrived 0.5 s later in the next window, on top of the two already queued for it: a 429.
    """
    bucket = following(2)  # the current window's Reset is 110
    assert bucket.reserve(1, 100) == 0
    late = 110 - RESET_TOLERANCE - LATENCY_ALLOWANCE + 0.1
    assert bucket.available(late) == 0
    assert bucket.reserve(1, late) == pytest.approx(110 - late)  # queued for the next window
    assert [start for start, _ in bucket.queue] == [110]


def _gap_before_a_queued_window() -> TokenBucket:
    """2-second windows, the current one ending at 8; a request was queued for 11 when they seemed 4 s long."""
    return TokenBucket(
        2, 1, tokens=0, updated=6, reset_at=8, grant_until=6, window=2, window_min=1.999,
        last_server_reset=6, queue=[(11.0, 1.0)],
    )  # fmt: skip


def test_a_request_due_before_a_queued_window_opens_waits_for_it() -> None:
    """Regression (found by the fixed-window property): a request due between the current window's end and
    the next queued window's start was sent at once. It opened a server window of its own, and later
    requests queued for one of our windows landed in a server window already holding others: a 429.
    """
    bucket = _gap_before_a_queued_window()
    assert bucket.available(8.5) == 0
    assert bucket.reserve(1, 8.5) == pytest.approx(2.5)  # joins the window that opens at 11
    assert bucket.queue == ()
    assert bucket.available(11) == 0  # that window is full now (the queued request and this one)


def test_a_slow_answer_about_an_earlier_window_does_not_open_a_queued_one() -> None:
    bucket = _gap_before_a_queued_window()
    bucket.observe(2, 0, 8.0, now=8.5)  # the window that ended at 8, heard of late (a Reset new to us)
    assert bucket.reserve(1, 8.6) >= 11 - 8.6  # still not sent before the window it joins opens


def test_refund_takes_back_the_last_queued_place_first() -> None:
    bucket = following(1)
    assert bucket.reserve(1, 100) == 0
    assert bucket.reserve(1, 100) == pytest.approx(10)
    assert bucket.reserve(1, 100) == pytest.approx(21)
    bucket.refund(1, 100)  # the last caller gave up (its wait exceeded --max-wait)
    assert len(bucket.queue) == 1
    assert bucket.reserve(1, 100) == pytest.approx(21)  # the next caller takes that place


def test_spend_counts_without_queueing() -> None:
    bucket = following(5)
    bucket.spend(7, 100)  # another process sent 7 (two were refused)
    assert bucket.queue == ()
    assert bucket.available(100) == 0
    assert bucket.reserve(1, 100) == pytest.approx(10)
    continuous = TokenBucket(10, 1)
    continuous.spend(12, 0)
    assert continuous.reserve(1, 0) == pytest.approx(3)
    with pytest.raises(ValueError):
        continuous.spend(-1, 0)


def test_queue_survives_the_journal() -> None:
    bucket = following(1)
    for _ in range(3):
        bucket.reserve(1, 100)
    copy = TokenBucket.from_state(json.loads(json.dumps(bucket.to_state())))
    assert copy.queue == bucket.queue
    assert copy.reserve(1, 101) == bucket.reserve(1, 101)
    with pytest.raises(TypeError):
        TokenBucket.from_state({**bucket.to_state(), "queue": [[1, 2, 3]]})

"""Hosts reserving tokens from one shared bucket: together they never overspend the server's window.

The property is tested against the local server's own fixed-window counter
(``flowxfer.server._ratelimit``, pure, clock injected): several simulated
hosts request at random moments, each taking a token of its prepaid stock or
reserving from the shared bucket (:func:`reserve_grant`, what the journal's
transaction does), sometimes giving back what it did not use (a sync); each
answer's headers teach the shared bucket, after a random latency. Not one
request may be refused.
"""

from __future__ import annotations

import heapq
import math

from hypothesis import given, settings
from hypothesis import strategies as st

from flowxfer.protocol import RateLimit
from flowxfer.server._ratelimit import RateLimiter
from flowxfer.transfer._reservation import MAX_BATCH, PREPAID_LIFETIME, Grant, Prepaid, batch_size, reserve_grant
from flowxfer.transfer._tokenbucket import TokenBucket


@given(st.floats(min_value=0, max_value=1e6, allow_nan=False))
def test_batch_is_small_share_of_what_is_there(available: float) -> None:
    size = batch_size(available)
    assert 1 <= size <= MAX_BATCH
    if available >= 1:
        assert size <= max(1, available / 16)


def test_batch_taken_when_plenty_single_token_queued_when_none() -> None:
    bucket = TokenBucket(1000, 1000 / 3600, tokens=1000, updated=0)
    grant = reserve_grant(bucket, 0.0)
    assert grant == Grant(MAX_BATCH, 0.0, PREPAID_LIFETIME)
    assert bucket.available(0.0) == 1000 - MAX_BATCH
    empty = TokenBucket(10, 1, tokens=0, updated=0)
    queued = reserve_grant(empty, 0.0)
    assert queued.tokens == 1 and queued.wait == 1.0


def test_prepaid_stock_expires_with_its_window_and_is_surrendered_while_good() -> None:
    stock = Prepaid()
    stock.add(Grant(4, 0.0, 10.0))
    assert [stock.take(1.0), stock.take(2.0)] == [True, True]
    assert stock.surrender(3.0) == 1 and stock.tokens == 0
    stock.add(Grant(4, 0.0, 10.0))
    assert stock.take(10.0) is False and stock.surrender(11.0) == 0


def test_a_batch_from_a_window_expires_at_its_grant_end() -> None:
    bucket = TokenBucket(500, 500 / 60)
    bucket.observe(500, 500, 60.0, 0.0)
    grant = reserve_grant(bucket, 0.0)
    assert grant.tokens > 1 and grant.expires == bucket.grant_until


Host = tuple[Prepaid, list[float]]


@settings(max_examples=150, deadline=None)
@given(
    count=st.integers(1, 30),
    window=st.sampled_from([2.0, 4.0, 5.0, 60.0]),
    hosts=st.integers(2, 4),
    requests=st.integers(1, 40),
    gaps=st.lists(st.floats(0.0, 3.0), min_size=1, max_size=20),
    latencies=st.lists(st.floats(0.0, 0.4), min_size=1, max_size=20),
    syncs=st.lists(st.booleans(), min_size=1, max_size=20),
)
def test_hosts_sharing_a_bucket_never_meet_a_429(
    count: int,
    window: float,
    hosts: int,
    requests: int,
    gaps: list[float],
    latencies: list[float],
    syncs: list[bool],
) -> None:
    clock = [0.0]
    server = RateLimiter({"upload": RateLimit(count, window)}, lambda: clock[0])
    shared = TokenBucket(count, count / window)
    # A first answer taught the budget (as a lone host's does before it spends much).
    first = server.hit("alice", "upload")
    assert first is not None
    shared.observe(first.limit, first.remaining, math.ceil(first.reset), 0.0)
    stocks = [Prepaid() for _ in range(hosts)]
    left = [requests] * hosts
    # Events: (time, order, kind, host); kinds: "want" a token, "arrive" at the server.
    events: list[tuple[float, int, str, int]] = [(0.0, n, "want", n) for n in range(hosts)]
    order = hosts
    refused = 0
    step = 0
    while events:
        now, _, kind, host = heapq.heappop(events)
        clock[0] = now
        step += 1
        order += 1
        if kind == "want":
            stock = stocks[host]
            if syncs[step % len(syncs)]:
                back = stock.surrender(now)
                if back:
                    shared.refund(back, now)
            send = now
            if not stock.take(now):
                grant = reserve_grant(shared, now)
                stock.add(grant)
                send = now + grant.wait
            heapq.heappush(events, (send + latencies[step % len(latencies)], order, "arrive", host))
        else:
            decision = server.hit("alice", "upload")
            assert decision is not None
            refused += not decision.allowed
            shared.observe(decision.limit, decision.remaining, math.ceil(decision.reset), now)
            left[host] -= 1
            if left[host]:
                heapq.heappush(events, (now + gaps[step % len(gaps)], order, "want", host))
    assert refused == 0

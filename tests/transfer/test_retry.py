from __future__ import annotations

import random
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flowxfer.transfer._retry import Retryability, RetryPolicy, classify_status, parse_retry_after


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504, 507, 599, 408])
def test_transient_statuses_retry(status: int) -> None:
    assert classify_status(status) is Retryability.RETRY


def test_401_refreshes_auth() -> None:
    assert classify_status(401) is Retryability.REFRESH_AUTH


@pytest.mark.parametrize("status", [400, 403, 404, 405, 409, 410, 413, 418, 422, 451, 499, 501, 505, 200, 302, 600, 0])
def test_everything_else_is_fatal(status: int) -> None:
    assert classify_status(status) is Retryability.FATAL


def test_backoff_is_full_jitter_under_an_exponential_ceiling() -> None:
    policy = RetryPolicy(base=0.5, cap=60.0)
    rng = random.Random(7)
    for attempt in range(12):
        ceiling = min(60.0, 0.5 * 2**attempt)
        draws = [policy.backoff(attempt, rng) for _ in range(400)]
        assert all(0 <= d <= ceiling for d in draws)
        # Full jitter: the draws spread over the whole range, not just near the ceiling.
        assert min(draws) < 0.1 * ceiling
        assert max(draws) > 0.9 * ceiling


def test_backoff_is_deterministic_for_a_seeded_rng() -> None:
    policy = RetryPolicy()
    assert [policy.backoff(3, random.Random(1)) for _ in range(3)] == [policy.backoff(3, random.Random(1))] * 3


def test_backoff_of_huge_attempts_stays_capped() -> None:
    assert RetryPolicy(cap=5).backoff(10_000, random.Random(0)) <= 5


def test_backoff_refuses_negative_attempts() -> None:
    with pytest.raises(ValueError):
        RetryPolicy().backoff(-1, random.Random(0))


@given(st.integers(0, 100), st.floats(0, 10), st.floats(0, 100), st.integers(0, 2**32))
def test_backoff_bounds(attempt: int, base: float, cap: float, seed: int) -> None:
    delay = RetryPolicy(base=base, cap=cap).backoff(attempt, random.Random(seed))
    assert 0 <= delay <= min(cap, base * 2.0 ** min(attempt, 64))


def test_delay_honours_retry_after() -> None:
    policy = RetryPolicy(base=0.5, cap=60.0, retry_after_cap=3600.0)
    rng = random.Random(0)
    assert policy.delay(1, rng, 120.0) == 120.0  # longer than any backoff of attempt 1
    assert policy.delay(1, rng, 10_000.0) == 3600.0  # capped
    assert policy.delay(1, rng, -5.0) <= 1.0  # a negative Retry-After is no wait of its own
    assert policy.delay(1, rng, None) <= 1.0
    assert policy.delay(1, rng, float("nan")) <= 1.0


@given(st.integers(0, 30), st.one_of(st.none(), st.floats(0, 10**6)), st.integers(0, 2**32))
def test_delay_is_never_shorter_than_asked(attempt: int, retry_after: float | None, seed: int) -> None:
    policy = RetryPolicy()
    delay = policy.delay(attempt, random.Random(seed), retry_after)
    assert delay >= 0
    if retry_after is not None:
        assert delay >= min(retry_after, policy.retry_after_cap)
    assert delay <= max(policy.cap, policy.retry_after_cap)


def test_policy_validates() -> None:
    for kwargs in ({"max_attempts": 0}, {"base": -1.0}, {"cap": float("inf")}, {"retry_after_cap": -2.0}):
        with pytest.raises(ValueError):
            RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_should_retry_counts_attempts() -> None:
    policy = RetryPolicy(max_attempts=3)
    assert [policy.should_retry(n) for n in (1, 2, 3, 4)] == [True, True, False, False]


NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        (" 5 ", 5.0),
        ("0", 0.0),
        ("1.5", 1.5),
        (None, None),
        ("", None),
        ("soon", None),
        ("-5", None),
        ("1e3", None),
        ("9" * 400, None),
        ("Mon, 32 Foo 2023 99:99:99 GMT", None),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, NOW) == expected


def test_parse_retry_after_http_date() -> None:
    when = datetime.fromtimestamp(NOW + 90, tz=UTC)
    assert parse_retry_after(format_datetime(when, usegmt=True), NOW) == pytest.approx(90)
    # A date in the past means: now.
    past = datetime.fromtimestamp(NOW - 90, tz=UTC)
    assert parse_retry_after(format_datetime(past, usegmt=True), NOW) == 0.0
    # The obsolete asctime form has no zone: HTTP dates are GMT.
    assert parse_retry_after("Tue Nov 14 22:15:00 2023", NOW) == pytest.approx(1_700_000_100 - NOW)

"""Per-user request budgets by class: fixed windows, pure arithmetic.

A window opens at a bucket's first request and lasts the class's window;
``X-RateLimit-Reset`` is its end (Unix seconds, rounded up). Opening windows
at first use (rather than aligning them to the clock) means a test that
makes N quick requests sees the (N+1)th refused, whatever the wall time.
State lives in memory: a restart refills every bucket, which only errs on
the generous side.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from flowxfer.protocol import HEADER_LIMIT, HEADER_REMAINING, HEADER_RESET, RateLimit


@dataclass(frozen=True)
class Decision:
    """The outcome of counting (or peeking at) one request."""

    allowed: bool
    limit: int
    remaining: int
    reset: float
    retry_after: float

    def headers(self) -> dict[str, str]:
        return {
            HEADER_LIMIT: str(self.limit),
            HEADER_REMAINING: str(self.remaining),
            HEADER_RESET: str(math.ceil(self.reset)),
        }


class RateLimiter:
    """Fixed-window counters keyed by (who, class).

    :param limits: per-class limits; a class missing from it is unlimited.
    :param clock: injectable wall clock (Unix seconds).
    """

    #: Buckets kept before idle ones are swept (bounds memory under many IPs).
    MAX_BUCKETS = 100_000

    def __init__(self, limits: Mapping[str, RateLimit], clock: Callable[[], float]) -> None:
        self._limits = dict(limits)
        self._clock = clock
        self._windows: dict[tuple[str, str], tuple[float, int]] = {}

    def _window(self, key: tuple[str, str], limit: RateLimit, now: float) -> tuple[float, int]:
        start, used = self._windows.get(key, (now, 0))
        if now >= start + limit.window:
            start, used = now, 0
        return start, used

    def hit(self, who: str, cls: str) -> Decision | None:
        """Count one request; None if the class is unlimited."""
        return self._decide(who, cls, count=True)

    def peek(self, who: str, cls: str) -> Decision | None:
        """The class's current state without counting (for uncounted continuation chunks)."""
        return self._decide(who, cls, count=False)

    def _decide(self, who: str, cls: str, count: bool) -> Decision | None:
        limit = self._limits.get(cls)
        if limit is None:
            return None
        now = self._clock()
        key = (who, cls)
        start, used = self._window(key, limit, now)
        reset = start + limit.window
        if count:
            if used >= limit.count:
                self._windows[key] = (start, used)
                return Decision(False, limit.count, 0, reset, max(1.0, math.ceil(reset - now)))
            used += 1
            if len(self._windows) >= self.MAX_BUCKETS:
                self._sweep(now)
            self._windows[key] = (start, used)
        return Decision(True, limit.count, max(0, limit.count - used), reset, 0.0)

    def _sweep(self, now: float) -> None:
        for key, (start, _) in list(self._windows.items()):
            limit = self._limits.get(key[1])
            if limit is None or now >= start + limit.window:
                del self._windows[key]

"""Rate-limit and bandwidth throttling: the token buckets at work.

The arithmetic is in :mod:`._tokenbucket` (pure); this module applies it to
requests as they happen, sleeps when it must, learns from the server's
``X-RateLimit-*`` headers and shares the budget with other processes through
the journal, so cron runs minutes apart spend one hourly budget.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import anyio

from flowxfer import protocol

from ._bwlimit import BandwidthSchedule
from ._errors import BudgetExhausted
from ._tokenbucket import TokenBucket, default_buckets
from .events import ProgressCallback, Waiting, ignore_events

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


@dataclass
class _Observation:
    limit: int | None
    remaining: int | None
    reset_at: float | None
    at: float


@dataclass
class _ClassState:
    bucket: TokenBucket
    spent: int = 0
    observation: _Observation | None = None
    retry_until: float | None = None
    requests: int = 0
    #: The server does not limit this class: it answered it successfully without any rate-limit header
    #: (learned here, or by another process and shared through the journal).
    unlimited: bool = False
    #: What this process itself saw: True (answers without headers), False (headers), None (nothing yet).
    evidence: bool | None = None


def _header_int(headers: Mapping[str, str], name: str) -> int | None:
    value = headers.get(name)
    if value is None:
        return None
    try:
        return int(float(value))
    except ValueError:
        return None


@dataclass
class RateLimiter:
    """Throttles requests per class and bytes per second.

    :param max_wait: the longest one wait may be; a longer one raises
        :class:`BudgetExhausted` instead of sleeping (``--max-wait``).
    :param store: a callable that merges our bucket states into shared storage
        and returns the merged states (the journal's ``update_buckets``
        bound to a server and user), or None to keep them in memory only.
    """

    max_wait: float | None = None
    bandwidth: BandwidthSchedule | None = None
    clock: Clock = time.time
    sleep: Sleep = anyio.sleep
    #: How a wait for request budget is spent, when not ``sleep`` (the engine passes one that ends
    #: early when the transfer stops: nothing is in flight while we wait). Bandwidth pacing,
    #: inside a request in flight, always uses ``sleep``.
    pause: Sleep | None = None
    events: ProgressCallback = ignore_events
    store: (
        Callable[[Callable[[dict[str, dict[str, Any]]], dict[str, dict[str, Any]]]], dict[str, dict[str, Any]]] | None
    ) = None
    _classes: dict[str, _ClassState] = field(default_factory=dict)
    _bw_bucket: TokenBucket | None = None
    _bw_rate: float | None = None

    def __post_init__(self) -> None:
        self._classes = {name: _ClassState(bucket) for name, bucket in default_buckets().items()}

    # -- requests ------------------------------------------------------

    async def acquire(self, rate_class: str | None) -> None:
        """Take one request token of ``rate_class`` (None: the request is not counted)."""
        if rate_class is None:
            return
        state = self._classes[rate_class]
        if state.unlimited:
            state.requests += 1
            return
        now = self.clock()
        wait = state.bucket.reserve(1, now)
        if wait > 0:
            if self.max_wait is not None and wait > self.max_wait:
                state.bucket.refund(1, now)
                raise BudgetExhausted(rate_class, wait, self.max_wait)
            self.events(Waiting(rate_class, wait, self.describe(rate_class)))
            await (self.pause or self.sleep)(wait)
        state.spent += 1
        state.requests += 1

    def describe(self, rate_class: str) -> str:
        """``100/h``-style text of a class's limit, for messages."""
        bucket = self._classes[rate_class].bucket
        per_hour = bucket.refill_per_second * 3600
        return f"{per_hour:.0f}/h" if per_hour >= 1 else f"{bucket.capacity:.0f} per window"

    def observe(self, rate_class: str | None, headers: Mapping[str, str], status: int = 200) -> None:
        """Learn from an answer's ``X-RateLimit-*`` headers (the server is authoritative).

        Flow sends them on every answer of a limited class. A successful answer
        without them means the server does not limit that class (a local server
        run with ``--rate-limits off``): the hourly defaults, which only guess at
        hosted Flow's budget until it speaks, stop applying. Error answers prove
        nothing (a proxy's 502 carries no such headers).
        """
        if rate_class is None:
            return
        limit = _header_int(headers, protocol.HEADER_LIMIT)
        remaining = _header_int(headers, protocol.HEADER_REMAINING)
        reset = _header_int(headers, protocol.HEADER_RESET)
        state = self._classes[rate_class]
        if limit is None and remaining is None:
            if 200 <= status < 300:
                state.unlimited = state.evidence = True
            return
        state.unlimited = state.evidence = False
        now = self.clock()
        reset_at = float(reset) if reset is not None else None
        state.bucket.observe(limit, remaining, reset_at, now)
        state.observation = _Observation(limit, remaining, reset_at, now)

    def penalize(self, rate_class: str | None, retry_after: float) -> None:
        """A 429 said: nothing more of this class for ``retry_after`` seconds."""
        if rate_class is None:
            return
        now = self.clock()
        state = self._classes[rate_class]
        state.unlimited = state.evidence = False
        state.bucket.penalize(retry_after, now)
        state.retry_until = max(state.retry_until or 0.0, now + retry_after)

    def check_wait(self, rate_class: str, wait: float) -> None:
        """Raise :class:`BudgetExhausted` if a server-imposed wait exceeds ``max_wait``."""
        if self.max_wait is not None and wait > self.max_wait:
            raise BudgetExhausted(rate_class, wait, self.max_wait)

    def requests_by_class(self) -> dict[str, int]:
        return {name: state.requests for name, state in self._classes.items()}

    def bucket(self, rate_class: str) -> TokenBucket:
        return self._classes[rate_class].bucket

    # -- bandwidth -----------------------------------------------------

    async def throttle_bytes(self, nbytes: int) -> None:
        """Wait until ``nbytes`` may pass under the bandwidth timetable (if any)."""
        if self.bandwidth is None or nbytes <= 0:
            return
        rate = self.bandwidth.rate_at(datetime.now())
        if rate is None:
            return
        now = self.clock()
        if self._bw_bucket is None or rate != self._bw_rate:
            # One second of burst: smooth enough for a lab link, cheap enough per block.
            self._bw_bucket = TokenBucket(capacity=rate, refill_per_second=rate, tokens=0.0, updated=now)
            self._bw_rate = rate
        wait = self._bw_bucket.reserve(nbytes, now)
        if wait > 0:
            await self.sleep(wait)

    # -- sharing through the journal -----------------------------------

    async def sync(self) -> None:
        """Merge our spending and observations into the shared store, and adopt the result.

        Snapshots are taken and applied on the event loop; only the store's
        transaction runs in a worker thread, so no bucket is touched by two
        threads at once.
        """
        if self.store is None:
            return
        store = self.store
        now = self.clock()
        snapshot = {
            name: (state.bucket.to_state(), state.spent, state.observation, state.retry_until)
            for name, state in self._classes.items()
        }
        evidence = {name: state.evidence for name, state in self._classes.items()}

        def merge(stored: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
            result: dict[str, dict[str, Any]] = {}
            for name, (local, spent, observation, retry_until) in snapshot.items():
                try:
                    bucket = TokenBucket.from_state(stored[name]) if name in stored else None
                except (KeyError, TypeError, ValueError):
                    bucket = None
                if bucket is None:
                    # Nobody stored this class yet: ours already includes our spending.
                    bucket = TokenBucket.from_state(local)
                elif spent:
                    bucket.spend(spent, now)
                if observation is not None:
                    bucket.observe(observation.limit, observation.remaining, observation.reset_at, now)
                if retry_until is not None and retry_until > now:
                    bucket.penalize(retry_until - now, now)
                # Whether the server limits this class at all is shared too, so that a new process
                # does not wait on a budget the server never enforces before it can learn so.
                unlimited = (
                    evidence[name] if evidence[name] is not None else bool(stored.get(name, {}).get("unlimited", False))
                )
                result[name] = {**bucket.to_state(), "unlimited": unlimited}
            return result

        merged = await anyio.to_thread.run_sync(store, merge)
        for name, state in self._classes.items():
            _, spent, observation, _ = snapshot[name]
            state.spent -= spent
            if state.observation is observation:
                state.observation = None
            if name in merged:
                state.bucket = TokenBucket.from_state(merged[name])
                state.unlimited = (
                    state.evidence if state.evidence is not None else bool(merged[name].get("unlimited", False))
                )
                if state.spent:
                    # Requests taken while the store was busy are not in the merged state yet.
                    state.bucket.spend(state.spent, self.clock())

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
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import anyio

from flowxfer import protocol
from flowxfer.journal import JournalUnavailableError

from ._bwlimit import BandwidthSchedule
from ._errors import BudgetExhausted
from ._reservation import Grant, Prepaid, reserve_grant
from ._tokenbucket import TokenBucket, default_buckets
from .events import Waiting, ignore_events

if TYPE_CHECKING:
    from .events import ProgressCallback

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

#: The port a scheme implies: named or not, the same server.
_DEFAULT_PORTS = {"http": 80, "https": 443}


def budget_server(base_url: str) -> str:
    """The server part of a shared budget's key: one spelling for every spelling of one server URL.

    Budgets are shared per Flow user and server across a fleet, keyed by the server's URL. Hosts
    configured with ``HTTP://Flow.example:443/``-like variants of one URL (the scheme's and host's
    case, the default port, a trailing slash or dot, credentials in the URL) would each own a
    whole budget and together overspend it: scheme and host are lower-cased (a non-ASCII host
    in its IDNA form), the default port, user info, query and fragment dropped, the path kept
    (it may tell two servers behind one host apart) without its trailing slashes.
    """
    parts = urlsplit(base_url.strip())
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").rstrip(".")
    try:
        host = host.encode("idna").decode("ascii")
    except UnicodeError:
        pass  # not a name IDNA can spell: keep it as written (lower-cased)
    if ":" in host:
        host = f"[{host}]"  # an IPv6 address
    port = parts.port
    netloc = host if port is None or port == _DEFAULT_PORTS.get(scheme) else f"{host}:{port}"
    return f"{scheme}://{netloc}{parts.path.rstrip('/')}"


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
    #: Tokens reserved from the shared bucket and not used yet (``shared`` limiters only).
    prepaid: Prepaid = field(default_factory=Prepaid)
    #: One reservation at a time per class: concurrent requests use the batch it brings.
    reserving: anyio.Lock = field(default_factory=anyio.Lock)


StoredStates = dict[str, dict[str, Any]]
Store = Callable[[Callable[[StoredStates], StoredStates]], StoredStates]


def _shared_bucket(stored: StoredStates, name: str, local: dict[str, Any]) -> tuple[TokenBucket, bool]:
    """The stored bucket of class ``name`` (or a copy of ``local`` when none is stored or it is unreadable);
    and whether it was stored."""
    try:
        if name in stored:
            return TokenBucket.from_state(stored[name]), True
    except (KeyError, TypeError, ValueError):
        pass
    return TokenBucket.from_state(local), False


def _fold_in(bucket: TokenBucket, observation: _Observation | None, retry_until: float | None, now: float) -> None:
    """Teach a shared bucket what this process heard from the server (headers, a 429's Retry-After)."""
    if observation is not None:
        bucket.observe(observation.limit, observation.remaining, observation.reset_at, now)
    if retry_until is not None and retry_until > now:
        bucket.penalize(retry_until - now, now)


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
    :param shared: take each request's token from the stored bucket, inside the
        store's transaction (:mod:`._reservation`), rather than from our copy
        merged every few seconds: hosts sharing a journal then never together
        spend more than a window holds. Off for a SQLite journal (one host),
        where a database round trip per request would only cost time.
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
    store: Store | None = None
    shared: bool = False
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
        if self.shared and self.store is not None:
            try:
                await self._acquire_shared(rate_class, state, self.store)
            except JournalUnavailableError:
                pass  # the database is away: our own copy of the budget will do, merged when it is back
            else:
                state.requests += 1
                return
        now = self.clock()
        wait = state.bucket.reserve(1, now)
        if wait > 0:
            if self.max_wait is not None and wait > self.max_wait:
                state.bucket.refund(1, now)
                raise BudgetExhausted(rate_class, wait, self.max_wait)
            await self._wait(rate_class, wait)
        state.spent += 1
        state.requests += 1

    async def _wait(self, rate_class: str, wait: float) -> None:
        self.events(Waiting(rate_class, wait, self.describe(rate_class)))
        await (self.pause or self.sleep)(wait)

    async def _acquire_shared(self, rate_class: str, state: _ClassState, store: Store) -> None:
        """Take a token of our prepaid stock, else reserve more from the shared bucket (see ``shared``).

        The reserved tokens are debited in the store, so they are not counted
        as ``spent`` again by :meth:`sync`.
        """
        async with state.reserving:
            if state.prepaid.take(self.clock()):
                return
            grant = await self._reserve(rate_class, state, store)
            state.prepaid.add(grant)
        if grant.wait > 0:
            if self.max_wait is not None and grant.wait > self.max_wait:
                state.prepaid.tokens = 0
                await self._exchange(rate_class, state, store, lambda bucket, now: bucket.refund(grant.tokens, now))
                raise BudgetExhausted(rate_class, grant.wait, self.max_wait)
            await self._wait(rate_class, grant.wait)

    async def _reserve(self, rate_class: str, state: _ClassState, store: Store) -> Grant:
        grants: list[Grant] = []
        await self._exchange(rate_class, state, store, lambda bucket, now: grants.append(reserve_grant(bucket, now)))
        return grants[0]

    async def _exchange(
        self, rate_class: str, state: _ClassState, store: Store, change: Callable[[TokenBucket, float], object]
    ) -> None:
        """Apply ``change`` to the shared bucket of ``rate_class`` in one store transaction, with what we
        learned from the server folded in first, and adopt the result as our copy."""
        observation, retry_until, evidence = state.observation, state.retry_until, state.evidence
        local = state.bucket.to_state()

        def merge(stored: StoredStates) -> StoredStates:
            now = self.clock()
            bucket, _ = _shared_bucket(stored, rate_class, local)
            _fold_in(bucket, observation, retry_until, now)
            change(bucket, now)
            unlimited = evidence if evidence is not None else bool(stored.get(rate_class, {}).get("unlimited", False))
            return {rate_class: {**bucket.to_state(), "unlimited": unlimited}}

        merged = await anyio.to_thread.run_sync(store, merge)
        if state.observation is observation:
            state.observation = None
        state.bucket = TokenBucket.from_state(merged[rate_class])

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
        # Reserved tokens not used yet go back, so hosts waiting for them need not wait for them to expire.
        unused = {name: state.prepaid.surrender(now) for name, state in self._classes.items()}
        evidence = {name: state.evidence for name, state in self._classes.items()}

        def merge(stored: StoredStates) -> StoredStates:
            result: StoredStates = {}
            for name, (local, spent, observation, retry_until) in snapshot.items():
                # Nobody stored this class yet: ours already includes our spending.
                bucket, was_stored = _shared_bucket(stored, name, local)
                if was_stored and spent:
                    bucket.spend(spent, now)
                if unused[name]:
                    bucket.refund(unused[name], now)
                _fold_in(bucket, observation, retry_until, now)
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

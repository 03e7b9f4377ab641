"""Token-bucket arithmetic for request budgets and bandwidth: pure, clock passed in.

One :class:`TokenBucket` per request class (api, upload, download, search;
a token is one request) and optionally one for bandwidth (a token is a byte).
Nothing here sleeps: :meth:`TokenBucket.reserve` says how long the caller
must wait, and the caller (the limiter) does the waiting.

Without word from the server a bucket refills continuously; once the server
has sent ``X-RateLimit-Reset`` it follows the server's fixed windows
instead, queueing what does not fit into the windows after. The model, why
it is built so, and its known limits: ``docs/rate-limits.md``.

Times are Unix seconds from the caller's clock; a ``now`` earlier than the
bucket's last update (clocks of two processes sharing the journal disagree)
is treated as that update's time, never as time running backwards.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

from flowxfer.protocol import DEFAULT_HOURLY_LIMITS

__all__ = ["LATENCY_ALLOWANCE", "RESET_TOLERANCE", "TokenBucket", "default_buckets"]

#: Seconds of slack in predicted window ends, and two ``Reset`` values closer
#: than this are one window (the server rounds them up to whole seconds).
RESET_TOLERANCE = 1.0

#: Seconds a request may take from the moment the bucket lets it go (its wait
#: ends) to the moment the server counts it: the sleep's overshoot, waiting for
#: a pooled connection or a TLS handshake, the network. Tokens left in a window
#: are granted only until this long before the window's earliest end. A second
#: is a few round trips to a distant server; a slower request late in a window
#: meets one 429, and the bucket learns from it.
LATENCY_ALLOWANCE = 1.0

_STATE_VERSION = 1


def _finite(value: float, what: str) -> float:
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{what} must be a finite number, not {value!r}")
    return number


def _optional_finite(value: float | None, what: str) -> float | None:
    return None if value is None else _finite(value, what)


class _Projection(NamedTuple):
    tokens: float
    updated: float
    reset_at: float | None
    grant_until: float | None
    opened_at: float | None
    queue: tuple[tuple[float, float], ...]


class TokenBucket:
    """A token bucket that learns a server's fixed-window budget (see the module doc).

    All constructor arguments are kept as public attributes of the same name
    (``tokens`` and ``window`` resolved to numbers); the keyword-only ones
    exist so :meth:`from_state` can restore a bucket exactly.

    :param capacity: the most tokens the bucket holds (requests per window, or bytes of burst).
    :param refill_per_second: continuous refill while the server's window is unknown.
    :param tokens: tokens held at ``updated`` (default: ``capacity``, a full bucket). May be negative (debt).
    :param updated: the time ``tokens`` refers to.
    :param hold_until: nothing is granted before this time (a 429's ``Retry-After``).
    :param reset_at: the latest the server's current window may end (observed or predicted);
        None while unknown or while no window is open.
    :param grant_until: the current window's tokens go only to requests sent before then: its
        earliest end less :data:`LATENCY_ALLOWANCE` (later ones may arrive in the next window).
    :param window: the server's window length in seconds, at most (default ``capacity / refill_per_second``).
    :param window_min: the server's window length in seconds, at least (None while unknown).
    :param window_learned: True once ``window`` comes from two of the server's ``Reset`` values.
    :param last_server_reset: the latest ``Reset`` the server sent (to learn the window from).
    :param opened_at: when our request that may have opened the current window was due.
    :param queue: ``(start, tokens)`` of the windows after the current one into which requests are
        queued: when they open and how much of them is taken.
    :raises ValueError: if a number is not finite, or ``capacity``, ``refill_per_second`` or
        ``window`` is not positive.
    """

    __slots__ = (
        "capacity",
        "grant_until",
        "hold_until",
        "last_server_reset",
        "opened_at",
        "queue",
        "refill_per_second",
        "reset_at",
        "tokens",
        "updated",
        "window",
        "window_learned",
        "window_min",
    )

    def __init__(
        self,
        capacity: float,
        refill_per_second: float,
        tokens: float | None = None,
        updated: float = 0.0,
        *,
        hold_until: float = 0.0,
        reset_at: float | None = None,
        grant_until: float | None = None,
        window: float | None = None,
        window_min: float | None = None,
        window_learned: bool = False,
        last_server_reset: float | None = None,
        opened_at: float | None = None,
        queue: Sequence[tuple[float, float]] = (),
    ) -> None:
        self.capacity = _finite(capacity, "capacity")
        self.refill_per_second = _finite(refill_per_second, "refill_per_second")
        if self.capacity <= 0:
            raise ValueError(f"capacity must be positive: {capacity}")
        if self.refill_per_second <= 0:
            # A bucket that never refills would make a large reservation wait forever.
            raise ValueError(f"refill_per_second must be positive: {refill_per_second}")
        self.tokens = self.capacity if tokens is None else min(_finite(tokens, "tokens"), self.capacity)
        self.updated = _finite(updated, "updated")
        self.hold_until = _finite(hold_until, "hold_until")
        self.reset_at = _optional_finite(reset_at, "reset_at")
        self.grant_until = _optional_finite(grant_until, "grant_until")
        self.window = self.capacity / self.refill_per_second if window is None else _finite(window, "window")
        if self.window <= 0:
            raise ValueError(f"window must be positive: {window}")
        self.window_min = _optional_finite(window_min, "window_min")
        self.window_learned = bool(window_learned)
        self.last_server_reset = _optional_finite(last_server_reset, "last_server_reset")
        self.opened_at = _optional_finite(opened_at, "opened_at")
        self.queue: tuple[tuple[float, float], ...] = tuple(
            (_finite(start, "queue start"), _finite(taken, "queue tokens")) for start, taken in queue
        )

    def __repr__(self) -> str:
        fields = ", ".join(f"{key}={value!r}" for key, value in self.to_state().items() if key != "version")
        return f"TokenBucket({fields})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TokenBucket):
            return NotImplemented
        return self.to_state() == other.to_state()

    __hash__ = None  # type: ignore[assignment]  # mutable

    @property
    def follows_window(self) -> bool:
        """True once the server has sent a ``Reset``: the bucket then models its fixed windows."""
        return self.last_server_reset is not None

    # -- the model ---------------------------------------------------------

    def _state(self) -> _Projection:
        return _Projection(self.tokens, self.updated, self.reset_at, self.grant_until, self.opened_at, self.queue)

    def _store(self, state: _Projection) -> None:
        self.tokens, self.updated, self.reset_at, self.grant_until, self.opened_at, self.queue = state

    def _window_from(self, opened: float) -> tuple[float, float]:
        """``(grant_until, reset_at)`` of the window that our request due at ``opened`` falls in.

        With Flow's windows the request opens one, so it ends ``window_min``
        to ``window`` later. With windows aligned to a clock grid it ends at
        the grid's next line, which may come sooner. Tokens are granted until
        :data:`LATENCY_ALLOWANCE` before the earliest of these ends (a request
        must arrive in time, not just leave in time), and the next window is
        taken to start at the latest, so that either way no two of our windows
        share one of the server's. (A grid from an overestimated window, a
        multiple of the true one, only makes our windows span several of the
        server's: safe.)
        """
        earliest_end = opened + (self.window_min or 0.0)
        if self.window_learned and self.last_server_reset is not None:
            lines_passed = math.floor((opened - self.last_server_reset) / self.window) + 1
            earliest_end = min(earliest_end, self.last_server_reset + lines_passed * self.window - RESET_TOLERANCE)
        return earliest_end - LATENCY_ALLOWANCE, opened + self.window + RESET_TOLERANCE

    def _project(self, now: float) -> _Projection:
        """The state as it will be at ``now`` if nothing else happens (nothing is stored)."""
        tokens, t, reset_at, grant_until, opened_at, queue = self._state()
        if now <= t:
            return self._state()
        while reset_at is not None and reset_at <= now:
            # The server's window ended. Time inside a window is never refilled: a window's budget
            # is there whole from its start.
            if queue:
                # The requests queued for the next window were sent when it opened.
                (start, taken), queue = queue[0], queue[1:]
                opened_at = max(start, reset_at)
                tokens = self.capacity - taken
                grant_until, reset_at = self._window_from(opened_at)
            else:
                # Nobody waiting: the next window is not open yet (our next request opens it).
                tokens, reset_at, grant_until, opened_at = self.capacity, None, None, None
        if reset_at is None and not self.follows_window:
            tokens = min(self.capacity, tokens + (now - t) * self.refill_per_second)
        return _Projection(tokens, now, reset_at, grant_until, opened_at, queue)

    def _simulate(self, amount: float, now: float) -> tuple[_Projection, float]:
        """Reserving ``amount`` at ``now``: the state after it, and when the tokens are ready."""
        tokens, t, reset_at, grant_until, opened_at, queue = self._project(now)
        at = max(now, t)
        due = max(at, self.hold_until)  # when this request would be sent if tokens are there
        if not self.follows_window:
            # The continuous bucket: tokens may go into debt, repaid by the refill.
            if opened_at is None:
                opened_at = due  # perhaps it opens the server's window: remembered to guess its length
            tokens -= amount
            if tokens >= 0:
                # Not ``due``: a clock behind the last update must not turn into a wait.
                ready = self.hold_until
            else:
                ready = max(at + (-tokens) / self.refill_per_second, self.hold_until)
            return _Projection(tokens, t, reset_at, grant_until, opened_at, queue), ready
        opener = reset_at is None
        if opener:
            # This request opens a new server window when it is sent: it is in it by definition.
            opened_at = due
            grant_until, reset_at = self._window_from(due)
        assert reset_at is not None and grant_until is not None
        # A queued window that became current may not have opened yet: its start was announced when
        # windows seemed longer. A request due before then joins it, sent when it opens (sent now,
        # it would open a server window of its own, which the queued requests might then share).
        opens = opened_at if opened_at is not None and opened_at > due else None
        sent = due if opens is None else opens
        if not queue and tokens >= amount and (opener or sent < grant_until):
            state = _Projection(tokens - amount, t, reset_at, grant_until, opened_at, queue)
            return state, self.hold_until if opens is None else max(self.hold_until, opens)
        # Queue it into the windows after this one, filling the last queued window first. The
        # first opens when the current one has surely ended; each further one a window later.
        step = self.window + RESET_TOLERANCE
        windows = list(queue)
        left = amount
        while True:
            if windows and windows[-1][1] < self.capacity:
                start, taken = windows[-1]
                put = min(left, self.capacity - taken)
                windows[-1] = (start, taken + put)
                left -= put
            if left <= 0:
                break
            windows.append((windows[-1][0] + step if windows else max(reset_at, due), 0.0))
        # (Nothing queued only for a zero amount: it waits for the next window like anyone would.)
        ready = max(windows[-1][0] if windows else max(reset_at, due), self.hold_until)
        return _Projection(tokens, t, reset_at, grant_until, opened_at, tuple(windows)), ready

    def _advance(self, now: float) -> float:
        """Bring the state to ``now``; returns the effective time (never before the last update)."""
        self._store(self._project(now))
        return max(now, self.updated)

    # -- taking and giving back ------------------------------------------

    def reserve(self, amount: float, now: float) -> float:
        """Take ``amount`` tokens now and say how many seconds to wait before using them.

        The tokens are deducted at once (possibly into debt, or a later
        window), so later callers queue behind this one. An amount above
        ``capacity`` is allowed and waits in proportion.

        :param amount: tokens to take (1 per request, or a number of bytes).
        :param now: the current time (Unix seconds).
        :returns: seconds to wait, >= 0 (0 when the tokens are there now).
        :raises ValueError: for a negative or non-finite amount.
        """
        amount = _finite(amount, "amount")
        if amount < 0:
            raise ValueError(f"cannot reserve a negative amount: {amount}")
        state, ready = self._simulate(amount, now)
        self._store(state)
        return max(0.0, ready - now)

    def refund(self, amount: float, now: float) -> None:
        """Give back ``amount`` tokens of a reservation that was not used (never above capacity).

        Meant for the reservation just made (say, because its wait was too
        long): tokens come back from the last queued window first. Waits
        already handed out are not shortened; only later reservations benefit.

        :raises ValueError: for a negative or non-finite amount.
        """
        amount = _finite(amount, "amount")
        if amount < 0:
            raise ValueError(f"cannot refund a negative amount: {amount}")
        self._advance(now)
        windows = list(self.queue)
        while amount > 0 and windows:
            start, taken = windows[-1]
            back = min(amount, taken)
            amount -= back
            if taken - back > 0:
                windows[-1] = (start, taken - back)
                break
            windows.pop()
        self.queue = tuple(windows)
        self.tokens = min(self.capacity, self.tokens + amount)

    def spend(self, amount: float, now: float) -> None:
        """Count ``amount`` tokens already used elsewhere (requests another process sent).

        Unlike :meth:`reserve` this queues nothing: the requests were sent, so
        they take from the current window (or the continuous bucket) even
        into debt, and are never scheduled into a later window.

        :raises ValueError: for a negative or non-finite amount.
        """
        amount = _finite(amount, "amount")
        if amount < 0:
            raise ValueError(f"cannot spend a negative amount: {amount}")
        self._advance(now)
        self.tokens -= amount

    # -- learning from the server ---------------------------------------

    def observe(self, limit: int | None, remaining: int | None, reset_at: float | None, now: float) -> None:
        """Learn from an answer's ``X-RateLimit-Limit``, ``-Remaining`` and ``-Reset`` headers.

        - ``limit`` becomes the capacity (tokens shift by the change, see the
          module doc), and the refill rate ``limit / window``;
        - ``reset_at`` (Unix seconds) starts or keeps following the server's
          windows, becomes the current window's end, and teaches the window's length;
        - ``remaining`` caps the tokens: ``tokens = min(tokens, remaining)``;
          with ``remaining == 0`` nothing is granted until ``reset_at``.

        An answer whose ``reset_at`` is already past describes a window that
        has ended: its ``remaining`` is ignored. Any argument may be None
        when its header was missing.
        """
        at = self._advance(now)
        if reset_at is not None and not math.isfinite(reset_at):
            reset_at = None
        if limit is not None and limit > 0 and limit != self.capacity:
            before = self.tokens
            self.tokens = before + (limit - self.capacity)
            if limit < self.capacity:
                # What we granted beyond the new, smaller limit was granted at once under the old
                # one and has been sent: it will not be queued for later windows, so it is no debt
                # (the server refuses those requests, and their retries take tokens of their own).
                self.tokens = max(self.tokens, min(before, 0.0))
            self.capacity = float(limit)
        was_following = self.follows_window
        if reset_at is not None:
            self._learn_window(reset_at, at)
        self.refill_per_second = self.capacity / self.window
        if reset_at is not None:
            if reset_at <= at:
                if not was_following:
                    # The first word from the server speaks of a window that is already over (its
                    # answer arrived late): as when a followed window ends with nothing queued, the
                    # whole limit is there and our next request opens the next window.
                    self.tokens = max(self.tokens, self.capacity)
                return  # the answer describes a window that is over: its remaining is stale
            # Reset is rounded up to whole seconds: the window ends within the second before it,
            # and a request must reach the server before then to count in it.
            self.reset_at = reset_at
            self.grant_until = reset_at - RESET_TOLERANCE - LATENCY_ALLOWANCE
        if remaining is not None:
            self.tokens = min(self.tokens, float(max(0, remaining)))

    def _learn_window(self, reset_at: float, at: float) -> None:
        last = self.last_server_reset
        first = last is None
        new_window = last is None or reset_at - last > RESET_TOLERANCE
        if last is not None and new_window:
            # Window ends are at least one window apart (a whole number of windows apart when
            # aligned to the clock, more when a window opened late): the smallest distance seen.
            distance = reset_at - last
            self.window = min(self.window, distance) if self.window_learned else distance
            self.window_learned = True
        ahead = reset_at - at
        prior = self.window
        if ahead > 0:
            # The answered request was counted in a window that started before now and ends
            # after ``reset_at - 1``: the window is longer than ``ahead - 1``.
            lower = ahead - RESET_TOLERANCE
            self.window_min = lower if self.window_min is None else max(self.window_min, lower)
        if not self.window_learned and (ahead > 0 or first):
            # (A first Reset already past -- its answer arrived late -- must still replace the
            # default hour: following windows with an hour-long guess made a 2-request, 2-second
            # budget wait an hour for its third request. Guessing short is the cheap error: a 429
            # then holds the bucket for its Retry-After and the next Reset teaches the window.)
            guess = max(ahead, 0.0) + RESET_TOLERANCE
            if new_window and self.opened_at is not None and self.opened_at < reset_at:
                # If our request opened this window, it is no longer than from then to its end
                # (and no longer than the prior: an ``opened_at`` older than that is a stale one).
                guess = max(guess, min(reset_at - self.opened_at, prior))
            # The first Reset replaces the default hour (a 10-second window's queue must not
            # wait an hour); later guesses only lengthen it.
            self.window = guess if first else max(self.window, guess)
        if self.window_min is not None:
            self.window = max(self.window, self.window_min)
        if new_window and (self.opened_at is None or self.opened_at < reset_at):
            # (A Reset no later than our opener was sent ends an earlier window -- a slow answer --
            # and must not make a queued window that has not opened yet look open.)
            self.opened_at = None
        if last is None or reset_at > last:
            self.last_server_reset = reset_at

    def penalize(self, retry_after: float, now: float) -> None:
        """A 429 with ``Retry-After``: grant nothing before ``now + retry_after``.

        Following the server's windows, this is the window's end: nothing is
        left until then, the whole budget after (requests queued for later
        windows keep their places; those told to go before then will meet a
        429 too and reserve again, so they lose theirs). Otherwise the
        estimate drops to one token, for the retry.
        """
        retry_after = max(0.0, _finite(retry_after, "retry_after"))
        at = self._advance(now)
        until = at + retry_after
        self.hold_until = max(self.hold_until, until)
        if self.follows_window:
            self.tokens = min(self.tokens, 0.0)
            self.reset_at = self.grant_until = until
            self.queue = tuple((start, taken) for start, taken in self.queue if start >= until)
        else:
            self.tokens = min(self.tokens, 1.0)

    # -- reading --------------------------------------------------------

    def available(self, now: float) -> float:
        """Tokens that could be taken at ``now`` without waiting (0 while held or in debt)."""
        if now < self.hold_until:
            return 0.0
        state = self._project(now)
        at = max(now, state.updated)
        if self.follows_window and (
            state.queue
            or (state.grant_until is not None and at >= state.grant_until)
            or (state.opened_at is not None and at < state.opened_at)  # the window has not opened yet
        ):
            return 0.0
        return max(0.0, state.tokens)

    def blocked_until(self, now: float) -> float:
        """When one token could be taken without waiting (``now`` if it can be already)."""
        return max(now, self._simulate(1.0, now)[1])

    # -- persistence ------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        """The bucket as a JSON-able dict (for the journal), read back by :meth:`from_state`."""
        return {
            "version": _STATE_VERSION,
            "capacity": self.capacity,
            "refill_per_second": self.refill_per_second,
            "tokens": self.tokens,
            "updated": self.updated,
            "hold_until": self.hold_until,
            "reset_at": self.reset_at,
            "grant_until": self.grant_until,
            "window": self.window,
            "window_min": self.window_min,
            "window_learned": self.window_learned,
            "last_server_reset": self.last_server_reset,
            "opened_at": self.opened_at,
            "queue": [[start, taken] for start, taken in self.queue],
        }

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> TokenBucket:
        """A bucket from :meth:`to_state`'s dict. Unknown keys are ignored, missing optional ones defaulted.

        :raises KeyError: when ``capacity`` or ``refill_per_second`` is missing.
        :raises ValueError: when a value is not a finite number (or ``window_learned`` not a bool).
        :raises TypeError: when a value is not a number at all (or ``queue`` not a list of pairs).
        """

        def number(key: str) -> float | None:
            value = d.get(key)
            if value is None:
                return None
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"bucket state {key!r} must be a number, not {value!r}")
            return float(value)

        capacity, rate = number("capacity"), number("refill_per_second")
        if capacity is None or rate is None:
            raise KeyError("bucket state needs capacity and refill_per_second")
        learned = d.get("window_learned", False)
        if not isinstance(learned, bool):
            raise ValueError(f"bucket state 'window_learned' must be a bool, not {learned!r}")
        queue = d.get("queue") or []
        if not isinstance(queue, list) or not all(
            isinstance(item, list)
            and len(item) == 2
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in item)
            for item in queue
        ):
            raise TypeError(f"bucket state 'queue' must be a list of [start, tokens] pairs, not {queue!r}")
        return cls(
            capacity=capacity,
            refill_per_second=rate,
            tokens=number("tokens"),
            updated=number("updated") or 0.0,
            hold_until=number("hold_until") or 0.0,
            reset_at=number("reset_at"),
            grant_until=number("grant_until"),
            window=number("window"),
            window_min=number("window_min"),
            window_learned=learned,
            last_server_reset=number("last_server_reset"),
            opened_at=number("opened_at"),
            queue=[(float(start), float(taken)) for start, taken in queue],
        )


def default_buckets() -> dict[str, TokenBucket]:
    """One full bucket per Flow request class, sized by :data:`~flowxfer.protocol.DEFAULT_HOURLY_LIMITS`.

    Capacity is the whole hourly count, so a fresh process may spend the
    hour's budget at once, as the server's fixed window allows; the first
    answer's headers then say what is really left.
    """
    return {
        name: TokenBucket(capacity=float(count), refill_per_second=count / 3600.0)
        for name, count in DEFAULT_HOURLY_LIMITS.items()
    }

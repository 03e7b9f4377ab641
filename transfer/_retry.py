"""What to retry, and how long to wait first: pure functions of the status, the attempt and a RNG.

The Flow API contract says: retry 429 (after ``Retry-After``), 5xx,
connection errors and timeouts, with exponential backoff and full jitter and
a bounded number of attempts; never retry 400, 401 (after one token
refresh), 403, 404, 410, 413. Connection errors never reach this module as
a status; the caller treats them as :attr:`Retryability.RETRY`.
"""

from __future__ import annotations

import enum
import math
import random
import re
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime

__all__ = ["RetryPolicy", "Retryability", "classify_status", "parse_retry_after"]


class Retryability(enum.Enum):
    """What an HTTP error status means for the request that got it."""

    #: Transient: wait (backoff, or the server's Retry-After) and send again.
    RETRY = "retry"
    #: The access token was refused: refresh it once and send again; a second 401 is fatal.
    REFRESH_AUTH = "refresh_auth"
    #: Sending the same request again cannot help.
    FATAL = "fatal"


# Past 2**64 the doubling only overflows floats; the cap has long been reached.
_MAX_EXPONENT = 64


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded attempts with exponential backoff and full jitter.

    Full jitter (a uniform draw in ``[0, min(cap, base * 2**attempt)]``, as
    in AWS's "Exponential Backoff And Jitter") spreads the retries of many
    workers that failed together, so they do not hit a recovering server in
    lockstep.

    :param max_attempts: attempts in all, the first one included.
    :param base: the backoff scale in seconds.
    :param cap: the longest backoff drawn, in seconds.
    :param retry_after_cap: the longest a server's ``Retry-After`` is
        honoured, in seconds (a server asking for a day is not obeyed to the
        letter; the rate limiter and ``--max-wait`` decide about long waits).
    :raises ValueError: for ``max_attempts`` < 1 or a negative or non-finite duration.
    """

    max_attempts: int = 8
    base: float = 0.5
    cap: float = 60.0
    retry_after_cap: float = 3600.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1: {self.max_attempts}")
        for name in ("base", "cap", "retry_after_cap"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a non-negative number of seconds: {value!r}")

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """A full-jitter backoff: uniform in ``[0, min(cap, base * 2**attempt)]``.

        :param attempt: how many attempts have failed so far (1 after the first failure;
            0 is accepted and gives the smallest ceiling, ``base``).
        :param rng: the random source (inject a seeded one in tests).
        :raises ValueError: for a negative attempt.
        """
        if attempt < 0:
            raise ValueError(f"attempt must not be negative: {attempt}")
        ceiling = min(self.cap, self.base * 2.0 ** min(attempt, _MAX_EXPONENT))
        return rng.uniform(0.0, ceiling)

    def delay(self, attempt: int, rng: random.Random, retry_after: float | None) -> float:
        """Seconds to wait before the next attempt: the backoff, or longer if the server asked.

        ``Retry-After`` is honoured (the larger of it and the backoff) up to
        ``retry_after_cap``; the backoff itself is never shortened.

        :param attempt: as for :meth:`backoff`.
        :param retry_after: the server's ``Retry-After`` in seconds (see :func:`parse_retry_after`), or None.
        """
        backoff = self.backoff(attempt, rng)
        if retry_after is None or not math.isfinite(retry_after):
            return backoff
        return max(backoff, min(max(0.0, retry_after), self.retry_after_cap))

    def should_retry(self, attempt: int) -> bool:
        """True while another attempt is allowed after ``attempt`` attempts (counting from 1)."""
        return attempt < self.max_attempts


_FATAL_CLIENT_ERRORS = frozenset({400, 403, 404, 410, 413, 422})


#: Server errors that asking again cannot change.
_PERMANENT_5XX = frozenset({501, 505})


def classify_status(status: int) -> Retryability:
    """What to do about an HTTP error status.

    - 429 and the 5xx of an outage (500, 502, 503, 504 and the rest): :attr:`~Retryability.RETRY`;
      408 (Request Timeout, sent by proxies) too: it is a timeout, which the contract retries.
      Not 501 (Not Implemented) nor 505 (HTTP Version Not Supported): they are the same
      answer every time (a plain web server, not Flow), so they are :attr:`~Retryability.FATAL`.
    - 401: :attr:`~Retryability.REFRESH_AUTH` (the caller refreshes once, then treats it as fatal).
    - 400, 403, 404, 410, 413, 422 and every other status: :attr:`~Retryability.FATAL`.
      422 is a chunk whose checksum the server found wrong: sending the same
      bytes again cannot help, so it is fatal *for that request*; the upload
      engine handles it by reading and hashing the chunk again from disk.

    Statuses that are not errors (1xx-3xx) are FATAL too: a caller that asks
    has already decided the answer was not what it wanted, and sending again
    will not change it.
    """
    if status == 429 or status == 408 or (500 <= status <= 599 and status not in _PERMANENT_5XX):
        return Retryability.RETRY
    if status == 401:
        return Retryability.REFRESH_AUTH
    return Retryability.FATAL


_DELTA_SECONDS_RE = re.compile(r"^\d+(?:\.\d+)?$", re.ASCII)


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds (``120``) or an HTTP-date.

    A date in the past gives 0. Anything else (missing, empty, negative,
    malformed) gives None, so the caller falls back to its own backoff
    rather than trusting garbage.

    :param value: the header's value, or None when absent.
    :param now: the current time in Unix seconds (to turn a date into a delay).
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if _DELTA_SECONDS_RE.match(text):
        seconds = float(text)
        return seconds if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when is None:  # pragma: no cover - older Pythons returned None instead of raising
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)  # HTTP dates are GMT
    try:
        return max(0.0, when.timestamp() - now)
    except (OverflowError, OSError, ValueError):
        return None

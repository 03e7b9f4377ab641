"""Reserving request tokens from a budget shared by many hosts: pure arithmetic, clock passed in.

Hosts sharing a journal on PostgreSQL spend one Flow user's budget. Merging
each host's spending into the shared bucket every few seconds lets hosts that
all see the same window's tokens spend them all, each: together they overshoot
the window and meet 429s. So a host takes its tokens from the shared bucket
itself, inside the journal's transaction (:func:`reserve_grant`), a small
batch at a time, and keeps what it has not used yet as a :class:`Prepaid`
stock. Tokens granted for a server window are only good until that window's
grant ends (a request sent later would land in a window nobody counted it in),
so the stock expires then; unused tokens go back to the shared bucket
(:meth:`TokenBucket.refund`) when the host next shares its state.

Hosted budgets are small (100 uploads, 500 downloads, 1,000 API calls an
hour): a database round trip per reservation is cheap beside the request it
pays for. Batches only grow when the shared bucket holds plenty, so a host
never sits on tokens another host is waiting for.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._tokenbucket import TokenBucket

__all__ = ["BATCH_SHARE", "MAX_BATCH", "PREPAID_LIFETIME", "Grant", "Prepaid", "batch_size", "reserve_grant"]

#: The most tokens one reservation takes.
MAX_BATCH = 8
#: A batch is at most this fraction (1/BATCH_SHARE) of what is available: with many hosts
#: reserving at once, the bucket still has tokens left for each of them.
BATCH_SHARE = 16
#: Seconds a batch stays good while the bucket does not follow the server's windows yet (no
#: ``X-RateLimit-Reset`` seen): short, so a window the server opened meanwhile is not overspent.
PREPAID_LIFETIME = 1.0


def batch_size(available: float) -> int:
    """How many tokens to reserve when ``available`` can be taken at once (1 when fewer than one is)."""
    if available < 1:
        return 1
    return max(1, min(MAX_BATCH, int(available // BATCH_SHARE)))


@dataclass(frozen=True, slots=True)
class Grant:
    """A reservation's outcome: ``tokens`` debited, usable after ``wait`` seconds, until ``expires``."""

    tokens: int
    wait: float
    expires: float


def reserve_grant(bucket: TokenBucket, now: float) -> Grant:
    """Debit ``bucket`` (the shared one, inside the transaction) for the next request, and perhaps a few more.

    When tokens are there now, a batch (:func:`batch_size`) is taken, good
    until the current window's grant ends (or :data:`PREPAID_LIFETIME` while
    no window is known). Otherwise one token is queued, as a lone host would
    (:meth:`TokenBucket.reserve`), to be used as soon as its wait is over.
    """
    available = bucket.available(now)
    if available < 1:
        wait = bucket.reserve(1, now)
        return Grant(1, wait, now + wait)
    tokens = min(batch_size(available), int(available))
    wait = bucket.reserve(tokens, now)
    if bucket.follows_window and bucket.grant_until is not None:
        expires = bucket.grant_until
    else:
        expires = now + PREPAID_LIFETIME
    return Grant(tokens, wait, max(expires, now + wait))


@dataclass(slots=True)
class Prepaid:
    """Tokens this host reserved from the shared bucket and has not used yet."""

    tokens: int = 0
    expires: float = 0.0

    def add(self, grant: Grant) -> None:
        """Keep a grant's tokens beyond the one used at once (a new grant replaces an older stock)."""
        self.tokens = grant.tokens - 1
        self.expires = grant.expires

    def take(self, now: float) -> bool:
        """Use one token if one is left and still good; an expired stock is dropped (its window is over)."""
        if self.tokens > 0 and now < self.expires:
            self.tokens -= 1
            return True
        self.tokens = 0
        return False

    def surrender(self, now: float) -> int:
        """The tokens to give back to the shared bucket (those still good); the stock is emptied."""
        tokens = self.tokens if now < self.expires else 0
        self.tokens = 0
        return tokens

"""Which bytes each ranged stream of one download fetches, and how the last part is shared out.

A file's missing bytes start as a few long spans, one ranged ``GET`` each
(:func:`~._chunks.plan_segments`). Streams never finish together: one
connection is slower, one started a round trip later, one had a cut. With
fixed spans the file then ends on fewer and fewer streams, and where each
connection alone is capped (loss on a long path) the link idles for the
tail. So a stream that runs out of work takes the back half of the span
whose stream needs the longest for what it has left (:meth:`Spans.take`),
when that is worth a new request: the stream that owned it stops at the
cut, and the file's streams finish close together.

Worth it means more than a fixed :data:`WORTH_SPLITTING`: the new
request's first byte is about as far away as the file's requests' answers
were (:meth:`Spans.answer_took`: a round trip, and on a loaded link the
queue before it; the longest, as the queue grows while the streams'
windows fill), and the owner's bytes up to that far ahead are in flight
already, thrown away at the cut. So a span is cut only when its stream
needs more than twice that for the rest: the cut then lies past what is in
flight, and the back half arrives sooner than its owner would bring it.
Traced through the clean 50 and 150 ms paths (a deep queue: every stream's
window waits on the one link), a cut at a fixed 0.4 s came after the
owner's bytes past it were sent: the tail came twice, 8-12 MiB of link.

Pure bookkeeping, no I/O: the streams (:mod:`._download_streams`) move
``Span.start`` as bytes arrive and read ``Span.end`` as their limit.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

#: A span is split only when its own stream would need longer than this for what it has left: a
#: new request waits a round trip (or two, on a new connection) before its first byte, and costs
#: one more request against the download budget.
WORTH_SPLITTING = 0.4

#: A stream's rate is judged only once it has run this long (its first byte takes a round trip).
MIN_AGE = 0.1


@dataclass(eq=False)
class Span:
    """Bytes ``[start, end)`` one stream has still to receive.

    ``start`` advances as bytes arrive (and moves back to the last byte on
    disk after a cut); ``end`` moves back when another stream takes the tail.
    ``origin`` and ``began`` (the start and the clock when a stream took it,
    then when each answer began) give the stream's rate.
    """

    start: int
    end: int
    origin: int = 0
    began: float = 0.0

    @property
    def remaining(self) -> int:
        return max(0, self.end - self.start)

    def answered(self, now: float) -> None:
        """A response to this span's request has begun: its stream's rate counts from here.

        Not from the request: a wait for the answer (a Retry-After, a slow
        server) is not a slow stream.
        """
        self.origin, self.began = self.start, now

    def seconds_left(self, now: float) -> float:
        """How long its stream needs for the rest at the rate it has had (inf: nothing arrived yet)."""
        received = self.start - self.origin
        if received <= 0:
            return float("inf")
        return self.remaining * (now - self.began) / received


def split_point(start: int, end: int, granularity: int, min_split: int) -> int | None:
    """Where to cut ``[start, end)`` in two for an idle stream, or None when it is not worth a request.

    The cut is the middle rounded up to a multiple of ``granularity``
    (counted from the file's start, so writes stay aligned), and both sides
    keep at least ``min_split`` bytes: a new request costs a round trip
    before its first byte, and one more request against the download budget.
    """
    if granularity < 1 or min_split < 1:
        raise ValueError("granularity and min_split must be positive")
    middle = start + (end - start) // 2
    cut = -(-middle // granularity) * granularity
    if cut - start < min_split or end - cut < min_split:
        return None
    return cut


class Spans:
    """The spans of one file: those not started yet, and those streams are fetching."""

    def __init__(
        self,
        spans: Iterable[tuple[int, int]],
        granularity: int,
        min_split: int,
        *,
        worth: float = WORTH_SPLITTING,
        min_age: float = MIN_AGE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pending: deque[Span] = deque(Span(start, end) for start, end in spans if end > start)
        self.active: list[Span] = []
        self.granularity = granularity
        self.min_split = min_split
        self.worth = worth
        self.min_age = min_age
        self._clock = clock
        #: How many spans were made by cutting another in two (each one more request).
        self.splits = 0
        #: The longest any request of these spans waited for its answer (:meth:`answer_took`).
        self.answer_delay = 0.0

    def answer_took(self, seconds: float) -> None:
        """A request was answered ``seconds`` after it was sent: a new span's first byte may be as far."""
        self.answer_delay = max(self.answer_delay, seconds)

    def take(self) -> Span | None:
        """Work for an idle stream: a span not started yet, else the back half of the slowest one.

        The slowest is the span whose stream needs the longest for what it has
        left; it is split only when that is over :attr:`worth` seconds and over
        twice :attr:`answer_delay` (what a new request waits, and what is in flight).
        """
        now = self._clock()
        if self.pending:
            span = self.pending.popleft()
        else:
            # A stream that has received nothing may be waiting out a Retry-After: its request asks
            # for the whole span, so splitting it would bring the tail twice.
            left = {
                id(s): s.seconds_left(now)
                for s in self.active
                if s.remaining > 0 and s.start > s.origin and now - s.began >= self.min_age
            }
            worth = max(self.worth, 2 * self.answer_delay)
            candidates = [s for s in self.active if left.get(id(s), 0.0) > worth]
            if not candidates:
                return None
            victim = max(candidates, key=lambda s: (left[id(s)], s.remaining))
            cut = split_point(victim.start, victim.end, self.granularity, self.min_split)
            if cut is None:
                return None
            span = Span(cut, victim.end)
            victim.end = cut
            self.splits += 1
        span.origin, span.began = span.start, now
        self.active.append(span)
        return span

    def done(self, span: Span) -> None:
        """The stream of ``span`` has received all of it (or gave up): it can no longer be split."""
        self.active.remove(span)


__all__ = ["MIN_AGE", "WORTH_SPLITTING", "Span", "Spans", "split_point"]

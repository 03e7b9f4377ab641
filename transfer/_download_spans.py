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

And only while the file's streams no longer fill what they had: a cut
throws away the owner's bytes in flight past it, and on a path where one
connection can fill the link (issue 20's clean path) the streams left
speed up as others finish, so the file's rate holds and a cut gains
nothing. Traced through the clean 50 ms path, the stream that started
first (the describing answer's) ran out of work ~1 s before the others and
cut a 24 MiB rest whose bytes were all in flight already: 12 MiB of link
(0.1 s) in every run, nothing gained. So a cut also needs the file's rate
over the last :data:`RECENT` seconds to have fallen under :data:`LINK_FULL`
of its rate so far: streams capped each (the lossy path) or one stalled.
That says something only when fewer streams carry the file now than
before a stream finished: with as many (one stream ran alone while the
other sat out a Retry-After), a rate that holds is no sign of a full link,
and the rules above decide alone.

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

#: The file's recent rate is taken over at least this long (idle streams look every tenth of a second): long
#: enough that a client that stalls for a moment (a loaded machine) is not taken for a fall.
RECENT = 0.5

#: A span is cut only when the file's recent rate fell under this share of its rate so far: above it,
#: the streams left still carry what all of them did (one connection can fill the path), a cut only
#: throws away the owner's bytes in flight.
LINK_FULL = 0.8


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
    #: Where the span began when a stream took it: its bytes received so far are ``start - taken``.
    taken: int = -1

    def __post_init__(self) -> None:
        if self.taken < 0:
            self.taken = self.start

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
        full: float | None = LINK_FULL,
        recent: float = RECENT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """:param full: cut only when the file's rate over the last ``recent`` seconds is under this
        share of its rate since the first take (None: whatever the rate).
        """
        self.pending: deque[Span] = deque(Span(start, end) for start, end in spans if end > start)
        self.active: list[Span] = []
        self.granularity = granularity
        self.min_split = min_split
        self.worth = worth
        self.min_age = min_age
        self.full = full
        self.recent = recent
        self._clock = clock
        #: When the first span was taken, and the bytes received by spans done since.
        self._first: float | None = None
        self._received_done = 0
        #: (clock, bytes received) when idle streams looked: the file's recent rate.
        self._samples: deque[tuple[float, int]] = deque()
        #: How many streams were receiving when a span was last done (itself included).
        self._streams_before = 0
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
        if self._first is None:
            self._first = now
        if self.pending:
            span = self.pending.popleft()
        else:
            if not self._rate_fell(now):
                return None
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
        # Counted only if receiving for a while: one that began a moment ago carried none of the rate so far.
        self._streams_before = self._receiving(self._clock(), max(self.min_age, self.recent))
        self.active.remove(span)
        self._received_done += max(0, span.start - span.taken)

    def _receiving(self, now: float, age: float) -> int:
        """Streams whose answers have been arriving for ``age`` seconds at least."""
        return sum(1 for s in self.active if s.start > s.origin and now - s.began >= age)

    def received(self) -> int:
        """Bytes the streams have received so far (of every span taken)."""
        return self._received_done + sum(max(0, s.start - s.taken) for s in self.active)

    def _rate_fell(self, now: float) -> bool:
        """Whether the file's rate over the last :attr:`recent` seconds fell under :attr:`full` of its rate so far.

        Not known yet (no look that long ago): False, the streams look again.
        """
        if self.full is None or self._receiving(now, self.min_age) >= self._streams_before:
            return True  # as many streams as before: the rate says nothing of the link
        received, samples = self.received(), self._samples
        samples.append((now, received))
        while len(samples) > 1 and now - samples[1][0] >= self.recent:
            samples.popleft()  # the newest look at least ``recent`` ago stays first
        then, received_then = samples[0]
        if now - then < self.recent or now <= then or self._first is None or then <= self._first:
            return False
        recent = (received - received_then) / (now - then)
        return recent < self.full * received / (now - self._first)


__all__ = ["LINK_FULL", "MIN_AGE", "RECENT", "WORTH_SPLITTING", "Span", "Spans", "split_point"]

"""A fault-injecting TCP/HTTP proxy for flowxfer's reliability tests.

Why it exists: our tests never mock our own code. To see what the engine does
when the network or the server misbehaves, a test puts this proxy -- a real
TCP server on loopback, built on asyncio streams -- between the engine and the
real local server, and tells it which faults to inject. The engine still talks
real HTTP over real sockets and must still produce exact results.

Usage::

    async with FaultProxy("127.0.0.1", server_port, seed=7) as proxy:
        cut = proxy.add(ResetAfter(100_000, "down"))
        lost = proxy.add(DropResponse(Match("POST", r"^/upload$", nth=3)))
        log = proxy.add(Record())
        ...  # point the client at proxy.url
        assert cut.hits == 1 and lost.hits == 1
        assert proxy.stats.faults_injected["reset"] == 1
        assert sum(e.request_bytes for e in log.select("POST", "^/upload")) < limit

``FaultProxy(upstream_host="127.0.0.1", upstream_port=None, *, seed=0, host="127.0.0.1", port=0,
http=True, read_size=256 KiB, flush_timeout=5.0)`` listens on ``host:port``
(a free port by default) once started (``async with`` or ``await start()``;
``await close()`` ends every connection). Attributes: ``url``
(``"http://127.0.0.1:<port>"``), ``port``, ``stats`` (``ProxyStats``),
``rules``, ``errors`` (internal errors; ``close()`` raises if any),
``active_connections``; ``upstream_host``/``upstream_port`` may be changed at
any time and apply to new connections. ``add(rule) -> rule``, ``remove(rule)``
and ``clear()`` work while traffic flows; ``await drop_connections(reset=True)``
cuts every open connection at once (a network blip).

Every client connection gets its own upstream connection, opened when the
client connects (if that fails, the client gets a RST). "up" is client ->
server, "down" is server -> client. Requests are forwarded unchanged, Host
header included, so URLs the server builds from it point back at the proxy.
Memory stays bounded whatever the body sizes: per connection and direction at
most about eight times ``read_size`` (2 MiB by default) is buffered (reader
buffer, the piece in hand and a copy, writer buffer).

Byte-level rules apply to every forwarded byte, HTTP or not; offsets count the
bytes forwarded in one direction of one connection since it opened (heads
included). A rule added while a connection is open sees that connection's whole
history: a threshold already passed fires before its next segment.

- ``Latency(seconds, jitter=0.0, direction="both")``: each forwarded segment
  waits ``seconds`` +/- a seeded uniform ``jitter``.
- ``Bandwidth(bytes_per_second, direction="both", per_connection=False)``: caps
  the rate, shared by all connections unless ``per_connection``.
- ``ResetAfter(nbytes, direction="down", times=1)``: exactly ``nbytes`` reach the
  receiver (the proxy waits until the kernel has them), then both sides get a
  TCP RST (SO_LINGER 0).
- ``ResetAtRandom(min_bytes, max_bytes, probability=1.0, direction="down",
  times=None)``: per connection, with ``probability``, a ``ResetAfter`` at a
  seeded cut-off in ``[min_bytes, max_bytes]``.
- ``FlipByte(at, direction="down", times=1, bit=0)``: XORs ``1 << bit`` into the
  byte at stream offset ``at``.
- ``Stall(after_bytes=0, direction="down", seconds=60.0, then="close", times=1)``:
  after ``after_bytes`` the direction stops (the proxy stops reading, so TCP
  back-pressure builds) for ``seconds``; then ``"close"`` (FIN), ``"reset"``
  (RST) or ``"resume"``. If the other side closes meanwhile, the stall ends.

``times`` counts connections (``None``: unlimited); ``rule.hits`` counts firings.

HTTP-level rules: the proxy parses HTTP/1.1 framing both ways (request line and
headers, then the body by Content-Length or chunked transfer coding; responses
likewise, with HEAD, 1xx, 204 and 304 bodiless and close-delimited bodies read
to EOF), so it sees every request on a keep-alive or pipelined connection. A
connection whose first bytes do not look like a request, or that turns into
something else (101 Switching Protocols, CONNECT, garbled framing), is simply
relayed byte by byte from then on.

Requests are selected by ``match``: a ``Match(method=None, path=None, *,
nth=None, probability=None, where=None)`` (``path`` is a regex searched in the
path without the query; ``nth`` skips the first ``nth - 1`` matching requests;
``probability`` draws from the rule's seeded RNG; ``where`` is a predicate on the
``RequestHead``), a string such as ``"POST ^/upload$"`` or ``"^/downloads/"``,
or ``None`` for every request. ``times`` (default 1, ``None`` unlimited) caps
firings. Body offsets count payload bytes (chunk framing excluded); where a
body's length is unknown (chunked) and a fraction or random offset is asked
for, the point is taken inside its first piece.

- ``RespondWith(status, body=b"", headers=None, *, match=None, times=1,
  close=False, reason=None)``: answers instead of the server, after reading and
  discarding the request body, so the keep-alive connection stays usable;
  ``close=True`` adds ``Connection: close`` and closes. The server never sees
  the request. Pipelined answers keep their order. A request carrying
  ``Expect: 100-continue`` is answered at once and the connection closed.
  Helpers: ``RespondWith.html_error(503, ...)`` (an nginx page),
  ``RespondWith.rate_limited(retry_after=1, ...)`` (429, JSON, ``Retry-After``
  and ``X-RateLimit-*``), ``RespondWith.json(status, obj, ...)``.
- ``TruncateResponse(match=None, *, keep_bytes=None, fraction=None, times=1,
  reset=False)``: the response head passes unchanged, then only ``keep_bytes``
  (or ``fraction`` of Content-Length; default half) of the body, then the
  connection closes (RST with ``reset``). Bodies no longer than the cut are
  left alone.
- ``FlipBodyByte(match=None, *, direction="down", at=None, bit=0, times=1)``:
  flips one bit of one body byte (``at`` or seeded random), headers untouched.
- ``ResetMidBody(match=None, *, direction="down", at_bytes=None,
  at_fraction=0.5, times=1)``: RST in the middle of a request or response body.
- ``StallMidBody(match=None, *, direction="down", at_bytes=None,
  at_fraction=0.5, seconds=60.0, then="close", times=1)``.
- ``DropResponse(match=None, *, times=1, reset=False)``: the request reaches the
  server, which processes it; as soon as its status line reaches the proxy the
  client connection is closed (RST with ``reset``) and the answer thrown away:
  the "lost answer".
- ``Record(match=None)``: ``entries`` is a list of ``RecordedExchange``
  (connection, method, path, status, request_bytes, response_bytes, redacted
  headers, faults, outcome); ``select(method, path)`` filters it.
  ``Authorization``, ``Cookie`` and similar headers and token-like query
  parameters are redacted before anything is stored.

When several HTTP rules select one request, the first ``RespondWith`` wins and
the others are ignored; otherwise all of them apply.

``proxy.stats`` (``ProxyStats``): ``connections`` (accepted), ``bytes_up`` and
``bytes_down`` (forwarded), ``requests`` (request heads parsed), ``responses``
(final responses forwarded or synthesised), ``faults_injected`` (a Counter by
kind: reset, flip, stall, respond, truncate, drop; shaping by Latency and
Bandwidth is not counted as a fault) and ``rule_hits`` (rule -> firings).

Limitations: HTTP/1.x only (no TLS, no HTTP/2); heads must end with CRLF CRLF
and fit in ``read_size`` bytes; a rule removed while a request is in flight
no longer fires, but selections already made are otherwise kept; aiohttp's
client silently retries an idempotent request (GET, HEAD, PUT, DELETE...) once
when its connection fails before the response head, so use a non-idempotent
method or ``times=2`` to make such faults visible to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json as jsonlib
import logging
import random
import re
import socket
import struct
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, ClassVar, Literal, TypeVar
from urllib.parse import unquote_plus, urlsplit

__all__ = [
    "Bandwidth",
    "ByteRule",
    "DropResponse",
    "FaultProxy",
    "FlipBodyByte",
    "FlipByte",
    "Framing",
    "HttpParseError",
    "HttpRule",
    "Latency",
    "Match",
    "ProxyStats",
    "Record",
    "RecordedExchange",
    "RequestHead",
    "ResetAfter",
    "ResetAtRandom",
    "ResetMidBody",
    "RespondWith",
    "ResponseHead",
    "Rule",
    "Stall",
    "StallMidBody",
    "TruncateResponse",
    "parse_request_head",
    "parse_response_head",
    "redact_headers",
    "redact_target",
    "request_framing",
    "response_framing",
]

log = logging.getLogger(__name__)

Direction = Literal["up", "down"]
Directions = Literal["up", "down", "both"]
Then = Literal["close", "reset", "resume"]

#: Bytes asked of a socket per read, and the largest head accepted. Large reads
#: keep the per-byte Python work at zero: bodies are only counted and sliced.
READ_SIZE = 256 * 1024

REDACTED = "REDACTED"

_DIRECTIONS: tuple[Direction, Direction] = ("up", "down")
_SECRET_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key", "x-auth-token"}
)
_SECRET_PARAM = re.compile(r"token|passw|secret|api[_-]?key|signature|auth|session", re.IGNORECASE)
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# A request line starts with an upper-case method and a space: enough to tell
# HTTP from other protocols on the first read, without waiting for a full head.
_REQUEST_START = re.compile(rb"(?:\r?\n)*[A-Z][A-Z_-]{0,19} ")


# ----------------------------------------------------------------------------
# Pure HTTP/1.1 framing: no I/O, tested directly.


class HttpParseError(ValueError):
    """Bytes that are not a well-formed HTTP/1.x head or body framing."""


def _lower_get(headers: Iterable[tuple[str, str]], name: str) -> list[str]:
    name = name.lower()
    return [value for key, value in headers if key.lower() == name]


@dataclass(frozen=True)
class RequestHead:
    """A parsed request line and headers (may hold secrets: never store it)."""

    method: str
    target: str
    version: str
    headers: tuple[tuple[str, str], ...]

    @property
    def path(self) -> str:
        """The target's path, without query (absolute-form targets reduced)."""
        if self.target.startswith(("http://", "https://")):
            return urlsplit(self.target).path or "/"
        return self.target.split("?", 1)[0]

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or None."""
        values = _lower_get(self.headers, name)
        return values[0] if values else None


@dataclass(frozen=True)
class ResponseHead:
    """A parsed status line and headers."""

    version: str
    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]

    def header(self, name: str) -> str | None:
        values = _lower_get(self.headers, name)
        return values[0] if values else None


@dataclass(frozen=True)
class Framing:
    """How a message body is delimited: ``none``, ``length``, ``chunked`` or ``eof``."""

    kind: Literal["none", "length", "chunked", "eof"]
    length: int | None = None


_NO_BODY = Framing("none", 0)


def _split_head(raw: bytes) -> tuple[str, tuple[tuple[str, str], ...]]:
    text = raw.decode("latin-1")
    lines = [line[:-1] if line.endswith("\r") else line for line in text.split("\n")]
    while lines and not lines[0]:
        lines.pop(0)
    if not lines:
        raise HttpParseError("empty head")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if not line:
            continue
        if line[0] in " \t":
            if not headers:
                raise HttpParseError("continuation line before any header")
            name, value = headers[-1]
            headers[-1] = (name, f"{value} {line.strip()}")
            continue
        name, sep, value = line.partition(":")
        if not sep or not _TOKEN.fullmatch(name):
            raise HttpParseError(f"bad header line {line!r}")
        headers.append((name, value.strip()))
    return lines[0], tuple(headers)


def parse_request_head(raw: bytes) -> RequestHead:
    """Parse ``METHOD target HTTP/1.x`` and headers from a head ending in CRLF CRLF.

    :raises HttpParseError: when ``raw`` is not a request head.
    """
    first, headers = _split_head(raw)
    parts = first.split(" ")
    if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]) or not parts[2].startswith("HTTP/1."):
        raise HttpParseError(f"bad request line {first!r}")
    return RequestHead(parts[0], parts[1], parts[2], headers)


def parse_response_head(raw: bytes) -> ResponseHead:
    """Parse ``HTTP/1.x status reason`` and headers.

    :raises HttpParseError: when ``raw`` is not a response head.
    """
    first, headers = _split_head(raw)
    version, _, rest = first.partition(" ")
    status, _, reason = rest.partition(" ")
    if not version.startswith("HTTP/1.") or len(status) != 3 or not status.isdigit():
        raise HttpParseError(f"bad status line {first!r}")
    return ResponseHead(version, int(status), reason, headers)


def _content_length(headers: Iterable[tuple[str, str]]) -> int | None:
    values = {v.strip() for value in _lower_get(headers, "content-length") for v in value.split(",")}
    if not values:
        return None
    if len(values) != 1:
        raise HttpParseError(f"conflicting Content-Length {sorted(values)}")
    value = values.pop()
    if not value.isdigit():
        raise HttpParseError(f"bad Content-Length {value!r}")
    return int(value)


def _is_chunked(headers: Iterable[tuple[str, str]]) -> bool | None:
    """True if chunked is the final coding, False if another is, None if no Transfer-Encoding."""
    codings = [c.strip().lower() for v in _lower_get(headers, "transfer-encoding") for c in v.split(",")]
    codings = [c for c in codings if c]
    if not codings:
        return None
    return codings[-1] == "chunked"


def request_framing(head: RequestHead) -> Framing:
    """The body framing of a request (RFC 9112 section 6.3).

    :raises HttpParseError: for a Transfer-Encoding that does not end in chunked.
    """
    chunked = _is_chunked(head.headers)
    if chunked is True:
        return Framing("chunked")
    if chunked is False:
        raise HttpParseError("request Transfer-Encoding without final chunked")
    length = _content_length(head.headers)
    return _NO_BODY if not length else Framing("length", length)


def response_framing(head: ResponseHead, request_method: str | None) -> Framing:
    """The body framing of a response to ``request_method`` (None: unknown request).

    :raises HttpParseError: for conflicting Content-Length values.
    """
    status = head.status
    if request_method == "HEAD" or status < 200 or status in (204, 304):
        return _NO_BODY
    if request_method == "CONNECT" and status < 300:
        return _NO_BODY
    chunked = _is_chunked(head.headers)
    if chunked is True:
        return Framing("chunked")
    if chunked is False:
        return Framing("eof")
    length = _content_length(head.headers)
    if length is None:
        return Framing("eof")
    return _NO_BODY if length == 0 else Framing("length", length)


def redact_headers(headers: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """Headers with credentials (Authorization, cookies, API keys) replaced by REDACTED."""
    return tuple((k, REDACTED if k.lower() in _SECRET_HEADERS else v) for k, v in headers)


def redact_target(target: str) -> str:
    """A request target with the values of token-like query parameters replaced."""
    path, sep, query = target.partition("?")
    if not sep:
        return target
    parts = []
    for item in query.split("&"):
        key, eq, _ = item.partition("=")
        parts.append(f"{key}={REDACTED}" if eq and _SECRET_PARAM.search(unquote_plus(key)) else item)
    return f"{path}?{'&'.join(parts)}"


# ----------------------------------------------------------------------------
# Rules.


class _Close(Exception):
    """Raised inside a pump to end the whole connection (RST when ``reset``)."""

    def __init__(self, reset: bool) -> None:
        super().__init__("reset" if reset else "close")
        self.reset = reset


def _check_direction(direction: str, allow_both: bool = False) -> None:
    allowed = ("up", "down", "both") if allow_both else ("up", "down")
    if direction not in allowed:
        raise ValueError(f"direction must be one of {allowed}, not {direction!r}")


def _check_then(then: str) -> None:
    if then not in ("close", "reset", "resume"):
        raise ValueError(f"then must be 'close', 'reset' or 'resume', not {then!r}")


class Rule:
    """Base of all rules: a fault or shaping the proxy applies while it runs.

    ``times`` caps how often the rule fires (None: no cap); ``hits`` counts the
    firings. A rule belongs to one proxy at a time; it gets a random generator
    seeded from the proxy's seed and the order of ``add`` calls, unless it was
    given its own ``seed``.
    """

    kind: ClassVar[str] = "rule"
    counts_as_fault: ClassVar[bool] = True

    def __init__(self, *, times: int | None, name: str | None = None, seed: int | str | None = None) -> None:
        if times is not None and times < 0:
            raise ValueError("times must be >= 0 or None")
        self.times = times
        self.name = name or type(self).__name__
        self.hits = 0
        self.rng = random.Random(seed)
        self._seed = seed
        self._proxy: FaultProxy | None = None

    @property
    def exhausted(self) -> bool:
        """True once the rule has fired ``times`` times."""
        return self.times is not None and self.hits >= self.times

    @property
    def active(self) -> bool:
        """True while the rule is installed in a proxy and not exhausted."""
        return self._proxy is not None and not self.exhausted

    def _claim(self) -> bool:
        """Take one firing; False if removed or exhausted (checked at the moment of action)."""
        proxy = self._proxy
        if proxy is None or self.exhausted:
            return False
        self.hits += 1
        proxy._on_hit(self)
        return True

    def __repr__(self) -> str:
        return f"<{self.name} hits={self.hits} times={self.times}>"


class ByteRule(Rule):
    """A rule on raw bytes of one or both directions of every connection."""

    def __init__(self, direction: Directions, *, times: int | None, name: str | None, seed: int | str | None):
        _check_direction(direction, allow_both=True)
        super().__init__(times=times, name=name, seed=seed)
        self.direction = direction

    def _applies(self, direction: Direction) -> bool:
        return self.direction in ("both", direction)

    def _plan(self, link: _Link, direction: Direction, start: int, end: int, plan: _SegmentPlan) -> None:
        raise NotImplementedError


class Latency(ByteRule):
    """Delay every forwarded segment by ``seconds`` plus a seeded uniform +/- ``jitter``."""

    kind = "latency"
    counts_as_fault = False

    def __init__(
        self,
        seconds: float,
        jitter: float = 0.0,
        direction: Directions = "both",
        *,
        times: int | None = None,
        name: str | None = None,
        seed: int | str | None = None,
    ) -> None:
        if seconds < 0 or jitter < 0:
            raise ValueError("seconds and jitter must be >= 0")
        super().__init__(direction, times=times, name=name, seed=seed)
        self.seconds = seconds
        self.jitter = jitter

    def _plan(self, link: _Link, direction: Direction, start: int, end: int, plan: _SegmentPlan) -> None:
        if self._claim():
            jitter = self.rng.uniform(-self.jitter, self.jitter) if self.jitter else 0.0
            plan.delay += max(0.0, self.seconds + jitter)


class Bandwidth(ByteRule):
    """Cap the forwarding rate, as a link would.

    The cap is shared by all connections (like one uplink) unless
    ``per_connection``; with ``direction="both"`` each direction has its own cap
    (links are full duplex). Bytes go out in pieces of about 20 ms worth, so the
    flow is smooth rather than bursty.
    """

    kind = "bandwidth"
    counts_as_fault = False

    def __init__(
        self,
        bytes_per_second: float,
        direction: Directions = "both",
        *,
        per_connection: bool = False,
        times: int | None = None,
        name: str | None = None,
    ) -> None:
        if bytes_per_second <= 0:
            raise ValueError("bytes_per_second must be > 0")
        super().__init__(direction, times=times, name=name, seed=None)
        self.bytes_per_second = float(bytes_per_second)
        self.per_connection = per_connection
        self.piece = max(1, min(READ_SIZE, int(bytes_per_second / 50)))
        self._free_at: dict[Direction, float] = {}

    def _plan(self, link: _Link, direction: Direction, start: int, end: int, plan: _SegmentPlan) -> None:
        plan.pacers.append(self)

    async def _pace(self, link: _Link, direction: Direction, nbytes: int) -> None:
        # A virtual clock: each piece reserves the next nbytes/rate seconds of
        # the (shared or per-connection) link and waits until its slot ends.
        if not self._claim():
            return
        now = asyncio.get_running_loop().time()
        if self.per_connection:
            key: Any = (self, direction)
            free_at = max(now, link.state.get(key, now))
            free_at += nbytes / self.bytes_per_second
            link.state[key] = free_at
        else:
            free_at = max(now, self._free_at.get(direction, now)) + nbytes / self.bytes_per_second
            self._free_at[direction] = free_at
        if free_at > now:
            await asyncio.sleep(free_at - now)


class ResetAfter(ByteRule):
    """After exactly ``nbytes`` have passed in ``direction``, reset the connection (RST)."""

    kind = "reset"

    def __init__(
        self,
        nbytes: int,
        direction: Direction = "down",
        times: int | None = 1,
        *,
        name: str | None = None,
    ) -> None:
        _check_direction(direction)
        if nbytes < 0:
            raise ValueError("nbytes must be >= 0")
        super().__init__(direction, times=times, name=name, seed=None)
        self.nbytes = nbytes

    def _cutoff(self, link: _Link, direction: Direction) -> int | None:
        return self.nbytes

    def _plan(self, link: _Link, direction: Direction, start: int, end: int, plan: _SegmentPlan) -> None:
        if (self, direction) in link.fired:
            return
        cutoff = self._cutoff(link, direction)
        if cutoff is not None and max(cutoff, start) <= end:
            plan.cuts.append((max(cutoff, start), self))

    async def _fire(self, link: _Link, direction: Direction) -> None:
        await link.flush(direction)
        raise _Close(reset=True)


class ResetAtRandom(ResetAfter):
    """On each connection, with ``probability``, reset after a seeded number of bytes.

    The cut-off is drawn uniformly from ``[min_bytes, max_bytes]`` when the
    connection is first seen in ``direction``; the same seed and the same order
    of connections give the same cut-offs.
    """

    def __init__(
        self,
        min_bytes: int,
        max_bytes: int,
        probability: float = 1.0,
        direction: Direction = "down",
        times: int | None = None,
        *,
        name: str | None = None,
        seed: int | str | None = None,
    ) -> None:
        if not 0 <= min_bytes <= max_bytes:
            raise ValueError("need 0 <= min_bytes <= max_bytes")
        if not 0.0 <= probability <= 1.0:
            raise ValueError("probability must be within [0, 1]")
        super().__init__(min_bytes, direction, times, name=name)
        self.rng = random.Random(seed)
        self._seed = seed
        self.min_bytes = min_bytes
        self.max_bytes = max_bytes
        self.probability = probability

    def _cutoff(self, link: _Link, direction: Direction) -> int | None:
        key = (self, direction, "cutoff")
        if key not in link.state:
            hit = self.rng.random() < self.probability
            link.state[key] = self.rng.randint(self.min_bytes, self.max_bytes) if hit else None
        cutoff: int | None = link.state[key]
        return cutoff


class FlipByte(ByteRule):
    """Flip bit ``bit`` of the byte at offset ``at`` of a connection's stream in ``direction``."""

    kind = "flip"

    def __init__(
        self,
        at: int,
        direction: Direction = "down",
        times: int | None = 1,
        *,
        bit: int = 0,
        name: str | None = None,
    ) -> None:
        _check_direction(direction)
        if at < 0 or not 0 <= bit <= 7:
            raise ValueError("need at >= 0 and 0 <= bit <= 7")
        super().__init__(direction, times=times, name=name, seed=None)
        self.at = at
        self.mask = 1 << bit

    def _plan(self, link: _Link, direction: Direction, start: int, end: int, plan: _SegmentPlan) -> None:
        if (self, direction) not in link.fired and start <= self.at < end:
            plan.flips.append((self.at, self, self.mask))


class Stall(ByteRule):
    """After ``after_bytes`` in ``direction``, stop that direction for ``seconds``.

    Meant to outlast a client's read timeout. ``then`` says what follows:
    ``"close"`` (FIN both ways), ``"reset"`` (RST) or ``"resume"``.
    """

    kind = "stall"

    def __init__(
        self,
        after_bytes: int = 0,
        direction: Direction = "down",
        seconds: float = 60.0,
        *,
        then: Then = "close",
        times: int | None = 1,
        name: str | None = None,
    ) -> None:
        _check_direction(direction)
        _check_then(then)
        if after_bytes < 0 or seconds < 0:
            raise ValueError("after_bytes and seconds must be >= 0")
        super().__init__(direction, times=times, name=name, seed=None)
        self.after_bytes = after_bytes
        self.seconds = seconds
        self.then = then

    def _plan(self, link: _Link, direction: Direction, start: int, end: int, plan: _SegmentPlan) -> None:
        if (self, direction) not in link.fired and max(self.after_bytes, start) <= end:
            plan.cuts.append((max(self.after_bytes, start), self))

    async def _fire(self, link: _Link, direction: Direction) -> None:
        await link.stall(direction, self.seconds, self.then)


class Match:
    """Which requests an HTTP rule applies to.

    :param method: a method or a collection of methods (case-sensitive, as on
        the wire); None for any.
    :param path: a regular expression searched in the request path (query
        excluded); None for any.
    :param nth: skip the first ``nth - 1`` matching requests (1-based).
    :param probability: fire on a matching request with this probability,
        drawn from the rule's seeded generator.
    :param where: an extra predicate on the ``RequestHead``.
    """

    def __init__(
        self,
        method: str | Collection[str] | None = None,
        path: str | re.Pattern[str] | None = None,
        *,
        nth: int | None = None,
        probability: float | None = None,
        where: Callable[[RequestHead], bool] | None = None,
    ) -> None:
        if nth is not None and nth < 1:
            raise ValueError("nth is 1-based")
        if probability is not None and not 0.0 <= probability <= 1.0:
            raise ValueError("probability must be within [0, 1]")
        self.methods = None if method is None else frozenset([method] if isinstance(method, str) else method)
        self.path = re.compile(path) if isinstance(path, str) else path
        self.nth = nth
        self.probability = probability
        self.where = where

    def matches(self, head: RequestHead) -> bool:
        """True if ``head`` matches method, path and predicate (nth and probability aside)."""
        if self.methods is not None and head.method not in self.methods:
            return False
        if self.path is not None and not self.path.search(head.path):
            return False
        return self.where is None or bool(self.where(head))

    def __repr__(self) -> str:
        methods = sorted(self.methods) if self.methods is not None else "*"
        path = self.path.pattern if self.path is not None else "*"
        return f"Match({methods}, {path!r}, nth={self.nth}, probability={self.probability})"


MatchLike = Match | str | None


def _as_match(match: MatchLike) -> Match:
    if match is None:
        return Match()
    if isinstance(match, Match):
        return match
    found = re.fullmatch(r"([A-Z][A-Z_-]*)\s+(\S.*)", match)
    return Match(found.group(1), found.group(2)) if found else Match(path=match)


class HttpRule(Rule):
    """A rule applied to whole HTTP requests, chosen by a ``Match``."""

    def __init__(
        self,
        match: MatchLike,
        *,
        times: int | None,
        name: str | None = None,
        seed: int | str | None = None,
    ) -> None:
        super().__init__(times=times, name=name, seed=seed)
        self.match = _as_match(match)
        self.seen = 0

    def _selects(self, head: RequestHead) -> bool:
        if self.exhausted or not self.match.matches(head):
            return False
        self.seen += 1
        if self.match.nth is not None and self.seen < self.match.nth:
            return False
        return self.match.probability is None or self.rng.random() < self.match.probability

    def _body_event(self, direction: Direction, length: int | None) -> _BodyEvent | None:
        """The action this rule takes inside a body going ``direction``, if any."""
        return None


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


_NGINX_REASONS = {503: "Service Temporarily Unavailable", 504: "Gateway Time-out"}


class RespondWith(HttpRule):
    """Answer a matching request in the proxy's name; the server never sees it.

    :param status: the status code.
    :param body: the body (str is encoded as UTF-8). Content-Length, Date and a
        Content-Type are added unless given in ``headers``.
    :param headers: extra headers (a mapping or pairs; repeated names allowed).
    :param close: send ``Connection: close`` and close the connection; by default
        the request body is read and discarded and the connection stays usable.
    :param reason: the reason phrase (default: the standard one).
    """

    kind = "respond"

    def __init__(
        self,
        status: int,
        body: bytes | str = b"",
        headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
        *,
        match: MatchLike = None,
        times: int | None = 1,
        close: bool = False,
        reason: str | None = None,
        name: str | None = None,
        seed: int | str | None = None,
    ) -> None:
        if not 100 <= status <= 999:
            raise ValueError("status must be a three-digit code")
        super().__init__(match, times=times, name=name, seed=seed)
        self.status = status
        self.body = body.encode() if isinstance(body, str) else bytes(body)
        pairs = headers.items() if isinstance(headers, Mapping) else (headers or ())
        self.headers: tuple[tuple[str, str], ...] = tuple((str(k), str(v)) for k, v in pairs)
        self.close = close
        self.reason = reason or _reason(status)
        self._reset_in: float | None = None

    @classmethod
    def html_error(
        cls,
        status: int = 503,
        *,
        match: MatchLike = None,
        times: int | None = 1,
        close: bool = False,
        name: str | None = None,
    ) -> RespondWith:
        """An error page exactly like nginx's (HTML, ``Server: nginx``), as proxies send."""
        reason = _NGINX_REASONS.get(status, _reason(status))
        body = (
            f"<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n"
            f"<center><h1>{status} {reason}</h1></center>\r\n<hr><center>nginx</center>\r\n"
            "</body>\r\n</html>\r\n"
        )
        headers = [("Server", "nginx"), ("Content-Type", "text/html")]
        return cls(status, body, headers, match=match, times=times, close=close, reason=reason, name=name)

    @classmethod
    def json(
        cls,
        status: int,
        obj: object,
        headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
        *,
        match: MatchLike = None,
        times: int | None = 1,
        close: bool = False,
        name: str | None = None,
    ) -> RespondWith:
        """A JSON answer (``Content-Type: application/json``)."""
        pairs = list(headers.items() if isinstance(headers, Mapping) else (headers or ()))
        pairs.append(("Content-Type", "application/json"))
        return cls(status, jsonlib.dumps(obj), pairs, match=match, times=times, close=close, name=name)

    @classmethod
    def rate_limited(
        cls,
        retry_after: int = 1,
        *,
        limit: int = 1000,
        match: MatchLike = None,
        times: int | None = 1,
        close: bool = False,
        name: str | None = None,
    ) -> RespondWith:
        """Flow's 429: JSON error, ``Retry-After`` and ``X-RateLimit-*`` (reset computed when sent)."""
        headers = [
            ("Retry-After", str(retry_after)),
            ("X-RateLimit-Limit", str(limit)),
            ("X-RateLimit-Remaining", "0"),
        ]
        rule = cls.json(429, {"error": "Rate limit exceeded"}, headers, match=match, times=times, close=close)
        rule.name = name or "RespondWith.rate_limited"
        rule._reset_in = retry_after
        return rule

    def render(self, method: str, close: bool) -> bytes:
        """The bytes of the answer to a ``method`` request."""
        headers = list(self.headers)
        names = {k.lower() for k, _ in headers}
        if self._reset_in is not None and "x-ratelimit-reset" not in names:
            headers.append(("X-RateLimit-Reset", str(int(time.time() + self._reset_in))))
        if "date" not in names:
            headers.append(("Date", email.utils.formatdate(usegmt=True)))
        bodiless = self.status < 200 or self.status in (204, 304)
        if "content-length" not in names and "transfer-encoding" not in names and not bodiless:
            headers.append(("Content-Length", str(len(self.body))))
        if "content-type" not in names and self.body:
            headers.append(("Content-Type", "text/plain; charset=utf-8"))
        if close:
            headers = [(k, v) for k, v in headers if k.lower() != "connection"]
            headers.append(("Connection", "close"))
        lines = [f"HTTP/1.1 {self.status} {self.reason}", *(f"{k}: {v}" for k, v in headers)]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        return head if method == "HEAD" or bodiless else head + self.body


def _offset(length: int | None, at_bytes: int | None, fraction: float) -> int | None:
    """A body offset from absolute bytes or a fraction; None means "inside the first piece"."""
    if at_bytes is not None:
        return at_bytes
    return None if length is None else int(length * fraction)


def _check_fraction(fraction: float | None) -> None:
    if fraction is not None and not 0.0 <= fraction <= 1.0:
        raise ValueError("fractions must be within [0, 1]")


class TruncateResponse(HttpRule):
    """Forward the head unchanged, then only part of the body, then close.

    ``keep_bytes`` of the body or ``fraction`` of its Content-Length (default
    half). The client sees a response that ends early (aiohttp:
    ``ClientPayloadError``). A body no longer than the cut is left alone.
    """

    kind = "truncate"

    def __init__(
        self,
        match: MatchLike = None,
        *,
        keep_bytes: int | None = None,
        fraction: float | None = None,
        times: int | None = 1,
        reset: bool = False,
        name: str | None = None,
        seed: int | str | None = None,
    ) -> None:
        if keep_bytes is not None and fraction is not None:
            raise ValueError("give keep_bytes or fraction, not both")
        if keep_bytes is not None and keep_bytes < 0:
            raise ValueError("keep_bytes must be >= 0")
        _check_fraction(fraction)
        super().__init__(match, times=times, name=name, seed=seed)
        self.keep_bytes = keep_bytes
        self.fraction = 0.5 if fraction is None else fraction
        self.reset = reset

    def _body_event(self, direction: Direction, length: int | None) -> _BodyEvent | None:
        if direction != "down":
            return None
        at = _offset(length, self.keep_bytes, self.fraction)
        if length is not None and at is not None and at >= length:
            return None
        return _BodyEvent(at, "truncate", self, reset=self.reset)


class FlipBodyByte(HttpRule):
    """Flip one bit of one body byte, headers untouched, so only checksums can tell.

    :param direction: ``"down"`` for response bodies, ``"up"`` for request bodies.
    :param at: the payload offset; None for a seeded random one.
    :param bit: which bit to flip (0 = least significant).
    """

    kind = "flip"

    def __init__(
        self,
        match: MatchLike = None,
        *,
        direction: Direction = "down",
        at: int | None = None,
        bit: int = 0,
        times: int | None = 1,
        name: str | None = None,
        seed: int | str | None = None,
    ) -> None:
        _check_direction(direction)
        if (at is not None and at < 0) or not 0 <= bit <= 7:
            raise ValueError("need at >= 0 and 0 <= bit <= 7")
        super().__init__(match, times=times, name=name, seed=seed)
        self.direction = direction
        self.at = at
        self.mask = 1 << bit

    def _body_event(self, direction: Direction, length: int | None) -> _BodyEvent | None:
        if direction != self.direction or length == 0:
            return None
        at = self.at
        if at is None and length is not None:
            at = self.rng.randrange(length)
        if at is not None and length is not None and at >= length:
            return None
        return _BodyEvent(at, "flip", self, mask=self.mask)


class ResetMidBody(HttpRule):
    """Reset (RST) the connection inside a request (``up``) or response (``down``) body."""

    kind = "reset"

    def __init__(
        self,
        match: MatchLike = None,
        *,
        direction: Direction = "down",
        at_bytes: int | None = None,
        at_fraction: float = 0.5,
        times: int | None = 1,
        name: str | None = None,
        seed: int | str | None = None,
    ) -> None:
        _check_direction(direction)
        _check_fraction(at_fraction)
        super().__init__(match, times=times, name=name, seed=seed)
        self.direction = direction
        self.at_bytes = at_bytes
        self.at_fraction = at_fraction

    def _body_event(self, direction: Direction, length: int | None) -> _BodyEvent | None:
        if direction != self.direction:
            return None
        at = _offset(length, self.at_bytes, self.at_fraction)
        if length is not None and at is not None and at > length:
            return None
        return _BodyEvent(at, "reset", self)


class StallMidBody(HttpRule):
    """Stop a body in the middle for ``seconds``, then ``close``, ``reset`` or ``resume``."""

    kind = "stall"

    def __init__(
        self,
        match: MatchLike = None,
        *,
        direction: Direction = "down",
        at_bytes: int | None = None,
        at_fraction: float = 0.5,
        seconds: float = 60.0,
        then: Then = "close",
        times: int | None = 1,
        name: str | None = None,
        seed: int | str | None = None,
    ) -> None:
        _check_direction(direction)
        _check_fraction(at_fraction)
        _check_then(then)
        super().__init__(match, times=times, name=name, seed=seed)
        self.direction = direction
        self.at_bytes = at_bytes
        self.at_fraction = at_fraction
        self.seconds = seconds
        self.then = then

    def _body_event(self, direction: Direction, length: int | None) -> _BodyEvent | None:
        if direction != self.direction:
            return None
        at = _offset(length, self.at_bytes, self.at_fraction)
        if length is not None and at is not None and at > length:
            return None
        return _BodyEvent(at, "stall", self, seconds=self.seconds, then=self.then)


class DropResponse(HttpRule):
    """Let the server process the request, then lose its answer.

    The request is forwarded; when the response's status line reaches the
    proxy (the server has acted), the client connection is closed (RST with
    ``reset``) and nothing of the response is forwarded.
    """

    kind = "drop"

    def __init__(
        self,
        match: MatchLike = None,
        *,
        times: int | None = 1,
        reset: bool = False,
        name: str | None = None,
        seed: int | str | None = None,
    ) -> None:
        super().__init__(match, times=times, name=name, seed=seed)
        self.reset = reset


@dataclass(frozen=True)
class RecordedExchange:
    """One request and what became of it, with credentials redacted.

    ``request_bytes``: request body bytes received from the client;
    ``response_bytes``: response body bytes delivered to the client;
    ``status``: the server's (or the proxy's) status, None if none came;
    ``faults``: kinds of HTTP-level faults applied to this exchange;
    ``outcome``: ``"ok"`` (answer delivered whole), ``"synthetic"`` (answered
    by RespondWith), ``"dropped"`` (DropResponse) or ``"aborted"`` (the
    connection ended before the answer was complete).
    """

    connection: int
    method: str
    path: str
    status: int | None
    request_bytes: int
    response_bytes: int
    request_headers: tuple[tuple[str, str], ...]
    response_headers: tuple[tuple[str, str], ...]
    faults: tuple[str, ...]
    outcome: str


class Record(HttpRule):
    """Keep a log of matching exchanges for assertions (secrets redacted)."""

    kind = "record"
    counts_as_fault = False

    def __init__(self, match: MatchLike = None, *, name: str | None = None) -> None:
        super().__init__(match, times=None, name=name)
        self.entries: list[RecordedExchange] = []

    def select(self, method: str | None = None, path: str | None = None) -> list[RecordedExchange]:
        """Entries with this method and whose path (query excluded) matches the regex ``path``."""
        pattern = re.compile(path) if path is not None else None
        return [
            e
            for e in self.entries
            if (method is None or e.method == method) and (pattern is None or pattern.search(e.path.split("?", 1)[0]))
        ]

    def clear(self) -> None:
        self.entries.clear()

    def _append(self, entry: RecordedExchange) -> None:
        if self._proxy is not None:
            self.entries.append(entry)
            self._claim()


# ----------------------------------------------------------------------------
# Statistics.


@dataclass
class ProxyStats:
    """Counters of what the proxy saw and did (live; read them at any time)."""

    connections: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    requests: int = 0
    responses: int = 0
    faults_injected: Counter[str] = field(default_factory=Counter)
    rule_hits: dict[Rule, int] = field(default_factory=dict)


# ----------------------------------------------------------------------------
# The relay.


class _SegmentPlan:
    """What the byte-level rules want done with one forwarded segment."""

    __slots__ = ("cuts", "delay", "flips", "pacers")

    def __init__(self) -> None:
        self.delay = 0.0
        self.pacers: list[Bandwidth] = []
        self.flips: list[tuple[int, Rule, int]] = []
        self.cuts: list[tuple[int, ResetAfter | Stall]] = []


@dataclass
class _BodyEvent:
    """An HTTP-level action at a payload offset (None: inside the first piece)."""

    offset: int | None
    kind: Literal["flip", "truncate", "reset", "stall"]
    rule: HttpRule
    mask: int = 1
    reset: bool = False
    seconds: float = 0.0
    then: Then = "close"
    done: bool = False


class _Cursor:
    """Where a body relay is: payload offset, pending events, framing bytes not yet sent."""

    __slots__ = ("events", "pos", "prefix")

    def __init__(self, events: list[_BodyEvent]) -> None:
        self.pos = 0
        self.events = events
        self.prefix = b""


class _Exchange:
    """One request on a connection, from its head to the end of its answer."""

    __slots__ = (
        "close_after",
        "down_rules",
        "faults",
        "finished",
        "framing",
        "head",
        "link",
        "records",
        "request_bytes",
        "response_bytes",
        "response_headers",
        "status",
        "synthetic",
    )

    def __init__(self, link: _Link, head: RequestHead, framing: Framing) -> None:
        self.link = link
        self.head = head
        self.framing = framing
        self.synthetic: bytes | None = None
        self.close_after = False
        self.down_rules: list[HttpRule] = []
        self.records: list[Record] = []
        self.status: int | None = None
        self.response_headers: tuple[tuple[str, str], ...] = ()
        self.request_bytes = 0
        self.response_bytes = 0
        self.faults: list[str] = []
        self.finished = False

    def finish(self, outcome: str) -> None:
        if self.finished:
            return
        self.finished = True
        if not self.records:
            return
        entry = RecordedExchange(
            connection=self.link.number,
            method=self.head.method,
            path=redact_target(self.head.target),
            status=self.status,
            request_bytes=self.request_bytes,
            response_bytes=self.response_bytes,
            request_headers=redact_headers(self.head.headers),
            response_headers=redact_headers(self.response_headers),
            faults=tuple(self.faults),
            outcome=outcome,
        )
        for record in self.records:
            record._append(entry)


class _Source:
    """A StreamReader with a push-back buffer, so the first read can be sniffed."""

    __slots__ = ("_pending", "_reader")

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self._reader = reader
        self._pending = b""

    def unread(self, data: bytes) -> None:
        self._pending = data + self._pending

    async def read(self, n: int) -> bytes:
        if self._pending:
            data, self._pending = self._pending[:n], self._pending[n:]
            return data
        return await self._reader.read(n)

    async def readuntil(self, sep: bytes) -> bytes:
        """Like StreamReader.readuntil (same errors), honouring pushed-back bytes."""
        if not self._pending:
            return await self._reader.readuntil(sep)
        buf = bytearray(self._pending)
        self._pending = b""
        searched = 0
        while True:
            idx = buf.find(sep, searched)
            if idx >= 0:
                end = idx + len(sep)
                self._pending = bytes(buf[end:])
                return bytes(buf[:end])
            if len(buf) > READ_SIZE:
                self._pending = bytes(buf)
                raise asyncio.LimitOverrunError("separator not found within the limit", len(buf))
            searched = max(0, len(buf) - len(sep) + 1)
            chunk = await self._reader.read(READ_SIZE)
            if not chunk:
                raise asyncio.IncompleteReadError(bytes(buf), None)
            buf += chunk


# What a pump reports when it ends without an exception.
_END = "end"  # the connection is over: close both sides
_HALF = "half"  # this direction is done; wait for the other

_NETWORK_ERRORS = (OSError, EOFError, asyncio.LimitOverrunError, HttpParseError)


def _set_linger_zero(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def _unsent_bytes(writer: asyncio.StreamWriter) -> int:
    """Bytes the kernel holds that the peer has not acknowledged (Linux; 0 elsewhere)."""
    if not sys.platform.startswith("linux"):
        return 0
    import fcntl
    import termios

    sock = writer.get_extra_info("socket")
    if sock is None:
        return 0
    try:
        buf = bytearray(4)
        fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, buf)  # TIOCOUTQ == SIOCOUTQ
    except OSError:
        return 0
    value: int = struct.unpack("i", buf)[0]
    return value


class _Link:
    """One client connection and its upstream connection, pumped both ways."""

    def __init__(
        self, proxy: FaultProxy, number: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.proxy = proxy
        self.number = number
        self.client_src = _Source(reader)
        self.client_writer = writer
        self.server_src: _Source | None = None
        self.server_writer: asyncio.StreamWriter | None = None
        # writers[d] receives the bytes flowing in direction d.
        self.writers: dict[Direction, asyncio.StreamWriter] = {"down": writer}
        self.sent: dict[Direction, int] = {"up": 0, "down": 0}
        self.http_up = proxy.http
        self.http_down = proxy.http
        self.decided = not proxy.http
        self.exchanges: deque[_Exchange] = deque()
        self.down_lock = asyncio.Lock()
        self.state: dict[Any, Any] = {}
        self.fired: set[tuple[Rule, Direction]] = set()
        self.stalled: set[Direction] = set()
        self.kill_reset = True

    # -- lifecycle ----------------------------------------------------------

    async def run(self) -> None:
        proxy = self.proxy
        reset = True
        try:
            if proxy.upstream_port is None:
                return  # no server yet: the client gets a RST, as from a dead backend
            try:
                reader, writer = await asyncio.open_connection(
                    proxy.upstream_host, proxy.upstream_port, limit=proxy.read_size
                )
            except OSError:
                return  # the client gets a RST, as from a dead backend
            self.server_src = _Source(reader)
            self.server_writer = writer
            self.writers["up"] = writer
            for w in (self.client_writer, writer):
                w.transport.set_write_buffer_limits(high=2 * proxy.read_size)
            reset = await self._pump_both()
        except asyncio.CancelledError:
            reset = self.kill_reset
        except Exception as exc:  # a bug in the proxy: surface it at close()
            proxy.errors.append(exc)
            log.exception("faultproxy connection %d failed", self.number)
        finally:
            for exchange in self.exchanges:
                exchange.finish("aborted")
            self.exchanges.clear()
            await self._shutdown(reset)

    async def _pump_both(self) -> bool:
        """Run both pumps; returns whether the connection must end with a reset."""
        up = asyncio.create_task(self._pump_up())
        down = asyncio.create_task(self._pump_down())
        pending: set[asyncio.Task[str]] = {up, down}
        reset: bool | None = None
        try:
            while pending and reset is None:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    exc = task.exception()
                    if exc is None:
                        if task.result() == _END:
                            reset = False
                    elif isinstance(exc, _Close):
                        reset = exc.reset if reset is None else reset or exc.reset
                    elif isinstance(exc, _NETWORK_ERRORS):
                        reset = True
                    else:
                        raise exc
        finally:
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        return bool(reset)

    async def _shutdown(self, reset: bool) -> None:
        writers = [w for w in (self.client_writer, self.server_writer) if w is not None]
        for w in writers:
            if reset:
                _set_linger_zero(w)
                w.transport.abort()
            else:
                w.close()
        try:
            for w in writers:
                try:
                    await asyncio.wait_for(w.wait_closed(), self.proxy.flush_timeout)
                except TimeoutError:
                    w.transport.abort()  # a peer that does not read: stop waiting
                except Exception:  # noqa: S110 - errors of a closing connection are expected
                    pass
        except BaseException:  # cancelled while closing: leave no transport behind
            for w in writers:
                w.transport.abort()
            raise

    # -- byte level -----------------------------------------------------------

    async def send(self, direction: Direction, data: bytes) -> None:
        """Forward ``data`` in ``direction`` through the byte-level rules."""
        rules = self.proxy._byte_rules[direction]
        if rules:
            await self._send_planned(direction, data, rules)
            return
        writer = self.writers[direction]
        writer.write(data)
        self._count(direction, len(data))
        await writer.drain()

    def _count(self, direction: Direction, n: int) -> None:
        self.sent[direction] += n
        stats = self.proxy.stats
        if direction == "up":
            stats.bytes_up += n
        else:
            stats.bytes_down += n

    async def _send_planned(self, direction: Direction, data: bytes, rules: Sequence[ByteRule]) -> None:
        start = self.sent[direction]
        end = start + len(data)
        plan = _SegmentPlan()
        for rule in rules:
            if rule.active:
                rule._plan(self, direction, start, end, plan)
        if plan.delay > 0:
            await asyncio.sleep(plan.delay)
        if plan.flips:
            buf = bytearray(data)
            for offset, flip_rule, mask in plan.flips:
                self.fired.add((flip_rule, direction))
                if flip_rule._claim():
                    buf[offset - start] ^= mask
            data = bytes(buf)
        done = 0
        for offset, cut_rule in sorted(plan.cuts, key=lambda cut: cut[0]):
            if offset - start > done:
                await self._write(direction, data[done : offset - start], plan.pacers)
                done = offset - start
            self.fired.add((cut_rule, direction))
            if cut_rule._claim():
                await cut_rule._fire(self, direction)
        if done < len(data):
            await self._write(direction, data[done:] if done else data, plan.pacers)

    async def _write(self, direction: Direction, data: bytes, pacers: Sequence[Bandwidth]) -> None:
        writer = self.writers[direction]
        if not pacers:
            writer.write(data)
            self._count(direction, len(data))
            await writer.drain()
            return
        step = min(p.piece for p in pacers)
        for i in range(0, len(data), step):
            piece = data[i : i + step]
            for pacer in pacers:
                await pacer._pace(self, direction, len(piece))
            writer.write(piece)
            self._count(direction, len(piece))
            await writer.drain()

    async def flush(self, direction: Direction) -> None:
        """Wait until the receiver's kernel holds every byte sent so far (bounded).

        A RST makes the kernel drop what it has not sent, so "exactly N bytes,
        then a reset" needs the N bytes acknowledged by the peer first.
        """
        writer = self.writers[direction]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.proxy.flush_timeout
        try:
            await asyncio.wait_for(writer.drain(), self.proxy.flush_timeout)
        except (TimeoutError, OSError):
            return
        for _ in range(100_000):
            if writer.transport.get_write_buffer_size() == 0 and _unsent_bytes(writer) == 0:
                return
            if loop.time() > deadline or writer.transport.is_closing():
                return
            await asyncio.sleep(0.001)

    async def stall(self, direction: Direction, seconds: float, then: Then) -> None:
        await self.flush(direction)
        self.stalled.add(direction)
        try:
            await asyncio.sleep(seconds)
        finally:
            self.stalled.discard(direction)
        if then == "close":
            raise _Close(reset=False)
        if then == "reset":
            await self.flush(direction)
            raise _Close(reset=True)

    async def _source_ended(self, direction: Direction) -> str:
        """The source of ``direction`` sent EOF between messages."""
        other: Direction = "down" if direction == "up" else "up"
        if other in self.stalled:
            return _END  # the peer gave up during a stall: nothing more to wait for
        http = self.http_up if direction == "up" else self.http_down
        if http and (direction == "down" or not self.exchanges):
            return _END
        writer = self.writers[direction]
        with contextlib.suppress(OSError, RuntimeError):
            if writer.can_write_eof() and not writer.transport.is_closing():
                writer.write_eof()
        return _HALF

    async def _pump_raw(self, direction: Direction, src: _Source) -> str:
        read_size = self.proxy.read_size
        while True:
            data = await src.read(read_size)
            if not data:
                return await self._source_ended(direction)
            await self.send(direction, data)

    async def _sniff(self, direction: Direction, src: _Source) -> bool:
        """Read the first bytes and decide HTTP or raw; False at EOF."""
        first = await src.read(self.proxy.read_size)
        if not first:
            return False
        src.unread(first)
        if not self.decided:
            self.decided = True
            if direction == "down" or not _REQUEST_START.match(first):
                self.http_up = self.http_down = False  # the server spoke first, or not HTTP
        return True

    # -- HTTP level -----------------------------------------------------------

    async def _pump_up(self) -> str:
        src = self.client_src
        if self.proxy.http and not await self._sniff("up", src):
            return await self._source_ended("up")
        while True:
            if not self.http_up:
                return await self._pump_raw("up", src)
            try:
                raw = await src.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError as exc:
                if exc.partial:
                    await self.send("up", exc.partial)
                return await self._source_ended("up")
            except asyncio.LimitOverrunError:
                self.http_up = self.http_down = False
                continue
            try:
                head = parse_request_head(raw)
                framing = request_framing(head)
            except HttpParseError:
                self.http_up = self.http_down = False
                await self.send("up", raw)
                continue
            if await self._request(head, framing, raw):
                return _HALF  # a closing synthetic answer is queued; the down pump ends it
            if head.method == "CONNECT" or (head.header("upgrade") and head.method != "OPTIONS"):
                self.http_up = False  # what follows is another protocol

    async def _request(self, head: RequestHead, framing: Framing, raw: bytes) -> bool:
        """Handle one request; True if the client side must stop being read."""
        proxy = self.proxy
        proxy.stats.requests += 1
        exchange = _Exchange(self, head, framing)
        responder: RespondWith | None = None
        selected: list[HttpRule] = []
        for rule in proxy._http_rules:
            if isinstance(rule, RespondWith) and responder is not None:
                continue
            if not rule._selects(head):
                continue
            if isinstance(rule, Record):
                exchange.records.append(rule)
            elif isinstance(rule, RespondWith):
                responder = rule
            else:
                selected.append(rule)
        if responder is not None and responder._claim():
            return await self._answer(exchange, responder)
        exchange.down_rules = selected
        self.exchanges.append(exchange)
        await self.send("up", raw)
        events = self._events(selected, "up", framing)
        await self._relay_body("up", self.client_src, framing, events, exchange)
        return False

    @staticmethod
    def _events(rules: Sequence[HttpRule], direction: Direction, framing: Framing) -> list[_BodyEvent]:
        if framing.kind == "none" or not rules:
            return []
        events = []
        for rule in rules:
            event = rule._body_event(direction, framing.length)
            if event is not None:
                events.append(event)
        return events

    async def _answer(self, exchange: _Exchange, rule: RespondWith) -> bool:
        """Answer in the proxy's name, keeping pipelined answers in order."""
        head = exchange.head
        expects_continue = (head.header("expect") or "").lower() == "100-continue"
        close = rule.close or expects_continue
        if not expects_continue:  # the client waits for "100 Continue" before its body
            await self._relay_body("up", self.client_src, exchange.framing, [], exchange, forward=False)
        payload = rule.render(head.method, close)
        exchange.status = rule.status
        exchange.response_headers = rule.headers
        exchange.response_bytes = len(payload) - payload.index(b"\r\n\r\n") - 4
        exchange.faults.append("respond")
        exchange.synthetic = payload
        exchange.close_after = close
        if self.exchanges:  # answers to earlier requests are due first
            self.exchanges.append(exchange)
            return close
        async with self.down_lock:
            await self.send("down", payload)
        self.proxy.stats.responses += 1
        exchange.finish("synthetic")
        if close:
            await self.flush("down")
            raise _Close(reset=False)
        return False

    async def _flush_synthetic(self) -> None:
        """Send queued synthetic answers now due (the caller holds down_lock)."""
        while self.exchanges and self.exchanges[0].synthetic is not None:
            exchange = self.exchanges.popleft()
            assert exchange.synthetic is not None
            await self.send("down", exchange.synthetic)
            self.proxy.stats.responses += 1
            exchange.finish("synthetic")
            if exchange.close_after:
                await self.flush("down")
                raise _Close(reset=False)

    async def _pump_down(self) -> str:
        assert self.server_src is not None
        src = self.server_src
        if self.proxy.http and not await self._sniff("down", src):
            return await self._source_ended("down")
        while True:
            if not self.http_down:
                return await self._pump_raw("down", src)
            try:
                raw = await src.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError as exc:
                if exc.partial:
                    async with self.down_lock:
                        await self.send("down", exc.partial)
                return await self._source_ended("down")
            except asyncio.LimitOverrunError:
                self.http_up = self.http_down = False
                continue
            exchange = self.exchanges[0] if self.exchanges else None
            method = exchange.head.method if exchange is not None else None
            try:
                head = parse_response_head(raw)
                framing = response_framing(head, method)
            except HttpParseError:
                self.http_up = self.http_down = False
                async with self.down_lock:
                    await self.send("down", raw)
                continue
            if head.status < 200 and head.status != 101:  # interim: the final answer follows
                async with self.down_lock:
                    await self.send("down", raw)
                continue
            if await self._response(head, framing, raw, exchange):
                return _END

    async def _response(self, head: ResponseHead, framing: Framing, raw: bytes, exchange: _Exchange | None) -> bool:
        """Forward one final response; True if the connection ends with it."""
        assert self.server_src is not None
        self.proxy.stats.responses += 1
        events: list[_BodyEvent] = []
        if exchange is not None:
            exchange.status = head.status
            exchange.response_headers = head.headers
            for rule in exchange.down_rules:
                if isinstance(rule, DropResponse) and rule._claim():
                    exchange.faults.append("drop")
                    exchange.finish("dropped")
                    raise _Close(reset=rule.reset)
            events = self._events(exchange.down_rules, "down", framing)
        async with self.down_lock:
            await self.send("down", raw)
            await self._relay_body("down", self.server_src, framing, events, exchange)
            if exchange is not None:
                self.exchanges.popleft()
                exchange.finish("ok")
                await self._flush_synthetic()
        method = exchange.head.method if exchange is not None else None
        if head.status == 101 or (method == "CONNECT" and head.status < 300):
            self.http_up = self.http_down = False
        return framing.kind == "eof"

    async def _relay_body(
        self,
        direction: Direction,
        src: _Source,
        framing: Framing,
        events: list[_BodyEvent],
        exchange: _Exchange | None,
        *,
        forward: bool = True,
    ) -> None:
        """Forward (or, with ``forward=False``, read and discard) one message body."""
        if framing.kind == "none":
            return
        cursor = _Cursor(events)
        if events:
            await self._fire_due(direction, cursor, exchange)
        read_size = self.proxy.read_size
        if framing.kind == "length":
            assert framing.length is not None
            remaining = framing.length
            while remaining:
                data = await src.read(min(read_size, remaining))
                if not data:
                    raise _Close(reset=False)  # the peer ended mid-body: so does the proxy
                remaining -= len(data)
                await self._payload(direction, data, cursor, exchange, forward)
        elif framing.kind == "eof":
            while data := await src.read(read_size):
                await self._payload(direction, data, cursor, exchange, forward)
        else:
            await self._relay_chunked(direction, src, cursor, exchange, forward)

    async def _relay_chunked(
        self, direction: Direction, src: _Source, cursor: _Cursor, exchange: _Exchange | None, forward: bool
    ) -> None:
        # A sender writes a chunk's size line, data and CRLF together, so they go
        # on as one segment (one send, one Latency) rather than three.
        read_size = self.proxy.read_size
        try:
            while True:
                line = await src.readuntil(b"\n")
                size_text = line.split(b";", 1)[0].strip()
                try:
                    size = int(size_text, 16)
                except ValueError:
                    raise HttpParseError(f"bad chunk size line {line!r}") from None
                if size < 0:
                    raise HttpParseError(f"bad chunk size line {line!r}")
                if size == 0:
                    tail = line
                    while True:  # trailer fields, then the empty line
                        trailer = await src.readuntil(b"\n")
                        tail += trailer
                        if trailer in (b"\r\n", b"\n"):
                            break
                    if forward:
                        await self.send(direction, tail)
                    return
                cursor.prefix = line
                remaining = size
                while remaining:
                    data = await src.read(min(read_size, remaining))
                    if not data:
                        raise _Close(reset=False)
                    remaining -= len(data)
                    suffix = b""
                    if not remaining:
                        suffix = await src.readuntil(b"\n")
                        if suffix not in (b"\r\n", b"\n"):
                            raise HttpParseError("chunk data longer than its size")
                    await self._payload(direction, data, cursor, exchange, forward, suffix)
        except asyncio.IncompleteReadError as exc:
            if forward and (cursor.prefix or exc.partial):
                await self.send(direction, cursor.prefix + exc.partial)
            raise _Close(reset=False) from None

    async def _payload(
        self,
        direction: Direction,
        data: bytes,
        cursor: _Cursor,
        exchange: _Exchange | None,
        forward: bool,
        suffix: bytes = b"",
    ) -> None:
        """Relay one piece of payload; ``cursor.prefix`` and ``suffix`` are framing around it."""
        if cursor.events:
            await self._payload_with_events(direction, data, cursor, exchange, suffix)
            return
        n = len(data)
        cursor.pos += n
        if forward:
            prefix = len(cursor.prefix)
            if cursor.prefix or suffix:
                data, cursor.prefix = cursor.prefix + data + suffix, b""
            before = self.sent[direction]
            try:
                await self.send(direction, data)
            except _Close:
                # A byte-level rule cut this piece: count the payload that did get through.
                self._count_body(direction, exchange, min(n, max(0, self.sent[direction] - before - prefix)))
                raise
        self._count_body(direction, exchange, n)

    @staticmethod
    def _count_body(direction: Direction, exchange: _Exchange | None, n: int) -> None:
        if exchange is not None:
            if direction == "up":
                exchange.request_bytes += n
            else:
                exchange.response_bytes += n

    async def _payload_with_events(
        self, direction: Direction, data: bytes, cursor: _Cursor, exchange: _Exchange | None, suffix: bytes
    ) -> None:
        start = cursor.pos
        end = start + len(data)
        for event in cursor.events:
            if event.offset is None:  # length unknown: act inside this first piece
                extra = event.rule.rng.randrange(len(data)) if event.kind == "flip" else len(data)
                event.offset = start + extra
        buf: bytearray | None = None
        for event in cursor.events:
            assert event.offset is not None
            if event.kind == "flip" and not event.done and start <= event.offset < end:
                event.done = True
                if event.rule._claim():
                    buf = bytearray(data) if buf is None else buf
                    buf[event.offset - start] ^= event.mask
                    if exchange is not None:
                        exchange.faults.append("flip")
        if buf is not None:
            data = bytes(buf)
        cuts = sorted(
            {
                e.offset
                for e in cursor.events
                if e.kind != "flip" and not e.done and e.offset is not None and start < e.offset < end
            }
        )
        done = 0
        for cut in [*cuts, end]:
            piece = data[done : cut - start]
            done += len(piece)
            cursor.pos += len(piece)
            # Framing goes with the payload next to it: a cut before the end of
            # this piece leaves the chunk's CRLF unsent, as a real cut would.
            wire = cursor.prefix + piece + (suffix if cut == end else b"")
            cursor.prefix = b""
            if wire:
                await self.send(direction, wire)
            self._count_body(direction, exchange, len(piece))
            await self._fire_due(direction, cursor, exchange)
        cursor.events = [e for e in cursor.events if not e.done]

    async def _fire_due(self, direction: Direction, cursor: _Cursor, exchange: _Exchange | None) -> None:
        for event in cursor.events:
            if event.done or event.kind == "flip" or event.offset is None or event.offset > cursor.pos:
                continue
            event.done = True
            if not event.rule._claim():
                continue
            if exchange is not None:
                exchange.faults.append(event.kind)
            if event.kind == "reset":
                await self.flush(direction)
                raise _Close(reset=True)
            if event.kind == "truncate":
                await self.flush(direction)
                raise _Close(reset=event.reset)
            await self.stall(direction, event.seconds, event.then)


# ----------------------------------------------------------------------------
# The proxy.

R = TypeVar("R", bound=Rule)


class FaultProxy:
    """A TCP proxy on loopback that injects faults between a client and a server.

    :param upstream_host: the server's host.
    :param upstream_port: the server's port; may be set later (``proxy.upstream_port
        = ...``), e.g. when the server must be told the proxy's URL first. Until
        it is, connections are reset.
    :param seed: seeds every rule's random generator (with the order of ``add``).
    :param host: the address to listen on.
    :param port: the port to listen on (0: a free one).
    :param http: parse HTTP/1.1 (False: relay bytes only; HTTP rules never fire).
    :param read_size: bytes per socket read, and the largest HTTP head accepted.
    :param flush_timeout: how long a reset or a close waits for the peer to
        take the bytes already sent.
    """

    def __init__(
        self,
        upstream_host: str = "127.0.0.1",
        upstream_port: int | None = None,
        *,
        seed: int | str = 0,
        host: str = "127.0.0.1",
        port: int = 0,
        http: bool = True,
        read_size: int = READ_SIZE,
        flush_timeout: float = 5.0,
    ) -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.seed = seed
        self.host = host
        self.http = http
        self.read_size = read_size
        self.flush_timeout = flush_timeout
        self.stats = ProxyStats()
        self.errors: list[BaseException] = []
        self._requested_port = port
        self._port: int | None = None
        self._server: asyncio.Server | None = None
        self._rules: list[Rule] = []
        self._added = 0
        self._byte_rules: dict[Direction, tuple[ByteRule, ...]] = {"up": (), "down": ()}
        self._http_rules: tuple[HttpRule, ...] = ()
        self._links: dict[asyncio.Task[Any], _Link] = {}

    # -- lifecycle ----------------------------------------------------------

    async def start(self) -> FaultProxy:
        """Start listening. :raises RuntimeError: if already started."""
        if self._server is not None:
            raise RuntimeError("FaultProxy already started")
        self._server = await asyncio.start_server(self._accept, self.host, self._requested_port, limit=self.read_size)
        self._port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        """Stop listening and end every connection (RST).

        :raises RuntimeError: if a connection failed on a bug of the proxy.
        """
        server, self._server = self._server, None
        if server is not None:
            server.close()
        await self.drop_connections(reset=True)
        if server is not None:
            await server.wait_closed()
        if self.errors:
            raise RuntimeError(f"faultproxy failed: {self.errors[0]!r}") from self.errors[0]

    async def __aenter__(self) -> FaultProxy:
        return await self.start()

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            await self.close()
        except RuntimeError:
            if exc is None:
                raise

    async def drop_connections(self, *, reset: bool = True) -> int:
        """End every open connection now (RST, or FIN without ``reset``); returns how many."""
        tasks = list(self._links)
        for task in tasks:
            self._links[task].kill_reset = reset
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return len(tasks)

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("FaultProxy not started")
        return self._port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def active_connections(self) -> int:
        return len(self._links)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.stats.connections += 1
        link = _Link(self, self.stats.connections, reader, writer)
        self._links[task] = link
        try:
            await link.run()
        except asyncio.CancelledError:
            pass  # close() or drop_connections(): the link has already shut down
        finally:
            self._links.pop(task, None)

    # -- rules --------------------------------------------------------------

    @property
    def rules(self) -> tuple[Rule, ...]:
        return tuple(self._rules)

    def add(self, rule: R) -> R:
        """Install ``rule`` (effective for the next segment or request); returns it.

        :raises ValueError: if the rule already belongs to a proxy.
        """
        if rule._proxy is not None:
            raise ValueError(f"{rule!r} is already installed")
        if rule._seed is None:
            rule.rng = random.Random(f"{self.seed}:{self._added}")
        self._added += 1
        rule._proxy = self
        self._rules.append(rule)
        self.stats.rule_hits.setdefault(rule, rule.hits)
        self._reindex()
        return rule

    def remove(self, rule: Rule) -> None:
        """Uninstall ``rule``; it stops firing at once. Its hits stay in ``stats``."""
        if rule._proxy is self:
            rule._proxy = None
            self._rules.remove(rule)
            self._reindex()

    def clear(self) -> None:
        """Uninstall every rule."""
        for rule in list(self._rules):
            self.remove(rule)

    def _reindex(self) -> None:
        # Exhausted byte rules leave the index, so the relay regains its fast path.
        live = [r for r in self._rules if isinstance(r, ByteRule) and not r.exhausted]
        self._byte_rules = {d: tuple(r for r in live if r._applies(d)) for d in _DIRECTIONS}
        self._http_rules = tuple(r for r in self._rules if isinstance(r, HttpRule))

    def _on_hit(self, rule: Rule) -> None:
        self.stats.rule_hits[rule] = rule.hits
        if rule.counts_as_fault:
            self.stats.faults_injected[rule.kind] += 1
        if isinstance(rule, ByteRule) and rule.exhausted:
            self._reindex()

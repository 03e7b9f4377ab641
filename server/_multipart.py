"""A sans-I/O ``multipart/form-data`` parser for streaming upload bodies.

Why our own: aiohttp's reader copies every block twice while hunting for the
boundary, and relies on a deprecated ``unread_data`` call whose warning turns
into an error under strict test settings. This parser is fed whatever the
socket delivered and returns events; it holds at most one boundary's length
of body bytes between calls, so memory does not grow with the part's size.

Events (tuples): ``("start", headers)`` with lower-cased header names,
``("data", bytes)``, ``("end",)`` when a part is complete, ``("done",)``
after the closing delimiter. Anything malformed raises :class:`MultipartError`.
"""

from __future__ import annotations

import re
from typing import Any

Event = tuple[Any, ...]

_PARAM_RE = re.compile(r';\s*([A-Za-z0-9_*.-]+)\s*=\s*("[^"\\]*(?:\\.[^"\\]*)*"|[^;\s]*)')
_QUOTED_PAIR = re.compile(r"\\(.)")
_BOUNDARY_RE = re.compile(r"^[0-9A-Za-z'()+_,\-./:=? ]{1,70}$")


class MultipartError(ValueError):
    """The body is not well-formed multipart/form-data (or breaks a bound)."""


def boundary_of(content_type: str) -> str:
    """The boundary parameter of a ``multipart/form-data`` Content-Type.

    :raises MultipartError: for any other type or a missing/invalid boundary.
    """
    kind, _, rest = content_type.partition(";")
    if kind.strip().lower() != "multipart/form-data":
        raise MultipartError("expected multipart/form-data")
    params = header_params(";" + rest)
    boundary = params.get("boundary", "")
    if not _BOUNDARY_RE.match(boundary) or boundary.endswith(" "):
        raise MultipartError("missing or invalid multipart boundary")
    return boundary


def header_params(value: str) -> dict[str, str]:
    """``; a=1; b="x y"`` parameters of a header value (names lower-cased)."""
    params: dict[str, str] = {}
    for name, raw in _PARAM_RE.findall(value):
        if raw.startswith('"'):
            raw = raw[1:-1]
            if "\\" in raw:  # rare; re.sub's template machinery cost more than the rest of the parse
                raw = _QUOTED_PAIR.sub(r"\1", raw)
        params[name.lower()] = raw
    return params


class MultipartParser:
    """Incremental parser; see the module docstring for the events.

    :param max_parts: parts allowed before the body is refused.
    :param max_header_bytes: size of one part's header block.
    :param max_preamble: bytes tolerated before the first delimiter.
    """

    def __init__(
        self, boundary: str, *, max_parts: int = 32, max_header_bytes: int = 8192, max_preamble: int = 4096
    ) -> None:
        self._delimiter = b"\r\n--" + boundary.encode("latin-1")
        self._buffer = bytearray(b"\r\n")  # so a delimiter at the very start matches too
        self._state = "preamble"
        self._parts = 0
        self._max_parts = max_parts
        self._max_header = max_header_bytes
        self._max_preamble = max_preamble + len(self._delimiter)

    @property
    def done(self) -> bool:
        return self._state == "epilogue"

    def feed(self, data: bytes) -> list[Event]:
        """Parse ``data``; the events it completes.

        ``("data", ...)`` payloads are ``bytes`` or read-only ``memoryview``
        slices of ``data`` itself: in the middle of a large part no byte is
        copied between the socket and the consumer.
        """
        if self._state == "epilogue":
            return []  # an epilogue is allowed and ignored
        if self._state == "body" and len(data) >= 2 * len(self._delimiter):
            fast = self._body_without_delimiter(data)
            if fast is not None:
                return fast
        self._buffer += data
        events: list[Event] = []
        while True:
            if self._state == "preamble":
                index = self._buffer.find(self._delimiter)
                if index < 0:
                    if len(self._buffer) > self._max_preamble:
                        raise MultipartError("no multipart delimiter where the body starts")
                    return events
                del self._buffer[: index + len(self._delimiter)]
                self._state = "after_delimiter"
            elif self._state == "after_delimiter":
                if len(self._buffer) < 2:
                    return events
                if self._buffer[:2] == b"--":
                    self._state = "epilogue"
                    self._buffer.clear()
                    events.append(("done",))
                    return events
                end = self._buffer.find(b"\r\n")
                if end < 0:
                    if len(self._buffer) > 256:
                        raise MultipartError("garbage after a multipart delimiter")
                    return events
                if self._buffer[:end].strip(b" \t"):
                    raise MultipartError("garbage after a multipart delimiter")
                del self._buffer[: end + 2]
                self._parts += 1
                if self._parts > self._max_parts:
                    raise MultipartError(f"more than {self._max_parts} parts")
                self._state = "headers"
            elif self._state == "headers":
                end = self._buffer.find(b"\r\n\r\n")
                if end < 0:
                    if self._buffer[:2] == b"\r\n":  # a part with no headers at all
                        end = -2
                    elif len(self._buffer) > self._max_header:
                        raise MultipartError("part headers too large")
                    else:
                        return events
                block = bytes(self._buffer[: max(end, 0)])
                del self._buffer[: end + 4]
                events.append(("start", self._headers(block)))
                self._state = "body"
            elif self._state == "body":
                index = self._buffer.find(self._delimiter)
                if index < 0:
                    # Keep a possible partial delimiter at the end for the next feed.
                    safe = len(self._buffer) - len(self._delimiter) + 1
                    if safe > 0:
                        events.append(("data", bytes(self._buffer[:safe])))
                        del self._buffer[:safe]
                    return events
                if index:
                    events.append(("data", bytes(self._buffer[:index])))
                del self._buffer[: index + len(self._delimiter)]
                events.append(("end",))
                self._state = "after_delimiter"

    def _body_without_delimiter(self, data: bytes) -> list[Event] | None:
        """The fast path: ``data`` lies inside a part's body (no delimiter in it), or ``None``.

        The buffer holds at most ``len(delimiter) - 1`` bytes here (a possible
        start of a delimiter); a delimiter starting in it ends within the first
        ``len(delimiter) - 1`` bytes of ``data``, so checking that joint and
        ``data`` itself rules out any delimiter in buffer + data.
        """
        delimiter = self._delimiter
        keep = len(delimiter) - 1
        held = self._buffer
        if held and delimiter in bytes(held) + data[:keep]:
            return None
        if delimiter in data:
            return None
        events: list[Event] = []
        if held:
            events.append(("data", bytes(held)))
            held.clear()
        cut = len(data) - keep
        events.append(("data", memoryview(data)[:cut]))
        held += data[cut:]
        return events

    def close(self) -> None:
        """The body ended: refuse a truncated one."""
        if self._state != "epilogue":
            raise MultipartError("the multipart body ended before its closing delimiter")

    @staticmethod
    def _headers(block: bytes) -> dict[str, str]:
        headers: dict[str, str] = {}
        try:
            text = block.decode("utf-8")
        except UnicodeDecodeError:
            raise MultipartError("part headers are not UTF-8") from None
        for line in text.split("\r\n"):
            if not line:
                continue
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip() or any(c in name for c in " \t"):
                raise MultipartError("malformed part header")
            headers[name.lower()] = value.strip()
        return headers

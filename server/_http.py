"""Small web-layer helpers shared by the handlers: errors, JSON bodies, queries.

Every refusal is an :class:`ApiError`, turned into ``{"error": ...}`` by the
app's middleware in one place; handlers never build error responses by hand
(except the bare 404 of downloads, :func:`bare_404`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, NoReturn

from aiohttp import web


class ApiError(Exception):
    """A refusal: HTTP ``status`` with a JSON body carrying ``error`` (+ extra fields)."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra
        self.headers: dict[str, str] = {}

    def body(self) -> dict[str, Any]:
        return {"error": self.message, **self.extra}


class ShapedError(ApiError):
    """A refusal whose body is given whole: Django-style field errors, annotation reports without ``error``."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(status, str(body))
        self._body = body

    def body(self) -> dict[str, Any]:
        return self._body


class Bare404(Exception):
    """Hosted Flow's download refusal: a 404 with no body at all."""


def bad_request(message: str, **extra: Any) -> NoReturn:
    raise ApiError(400, message, **extra)


def not_found(message: str = "not found") -> NoReturn:
    raise ApiError(404, message)


def json_response(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(
        text=json.dumps(body, separators=(",", ":")),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def _depth(value: Any) -> int:
    """Nesting depth of a parsed JSON value, without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, level + 1) for child in children)
    return deepest


async def read_json(request: web.Request, max_bytes: int, max_depth: int) -> dict[str, Any]:
    """The request's JSON object, bounded in size and depth.

    :raises ApiError: 413 over ``max_bytes``; 400 for anything but a JSON object.
    """
    if request.content_length is not None and request.content_length > max_bytes:
        raise ApiError(413, f"JSON body larger than {max_bytes} bytes")
    body = bytearray()
    while True:
        block = await request.content.readany()
        if not block:
            break
        body += block
        if len(body) > max_bytes:
            raise ApiError(413, f"JSON body larger than {max_bytes} bytes")
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        bad_request("malformed JSON body")
    if not isinstance(value, dict):
        bad_request("the JSON body must be an object")
    if _depth(value) > max_depth:
        bad_request(f"JSON nested deeper than {max_depth} levels")
    try:
        # json.loads accepts lone surrogates ("\ud800"), which no name, password or path may hold.
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        bad_request("JSON strings must be valid Unicode (no lone surrogates)")
    return value


#: SQLite integers are 64-bit; nothing we count comes near this.
MAX_QUERY_INT = 2**62


def query_int(
    request: web.Request,
    name: str,
    default: int | None = None,
    *,
    minimum: int = 0,
    maximum: int | None = None,
) -> int | None:
    """An integer query parameter, refused with 400 unless within bounds."""
    text = request.query.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        bad_request(f"{name} must be an integer")
    if value < minimum:
        bad_request(f"{name} must be at least {minimum}")
    maximum = MAX_QUERY_INT if maximum is None else maximum
    if value > maximum:
        bad_request(f"{name} must be at most {maximum}")
    return value


def query_float(request: web.Request, name: str) -> float | None:
    text = request.query.get(name)
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        bad_request(f"{name} must be a number")
    if value != value or abs(value) > 1e15:
        bad_request(f"{name} must be a finite number of seconds")
    return value


def query_bool(request: web.Request, name: str) -> bool:
    text = request.query.get(name, "").strip().lower()
    if text in ("", "false", "0", "no", "off"):
        return False
    if text in ("true", "1", "yes", "on"):
        return True
    bad_request(f"{name} must be true or false")

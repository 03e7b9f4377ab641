"""The core state every handler shares, and the request-level helpers that need it.

:class:`State` is built whole before the application exists (:func:`._app._open_state`).
The managers built on top of it (uploads, archive jobs, the regex worker) are not
part of it: each is registered on the application under its own typed key
(``UPLOADS``, ``JOBS``, ``REGEX``, defined next to its class), so no object is
ever seen half-built and a handler names exactly the manager it uses.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

from ._auth import Tokens
from ._catalog import DEFAULT, Catalog
from ._config import ServerConfig
from ._http import ApiError
from ._ratelimit import Decision, RateLimiter
from ._store import Store

T = TypeVar("T")


@dataclass
class Layout:
    """Where bytes live under the root. Partial uploads never share a folder with data."""

    root: Path

    @property
    def partial(self) -> Path:
        return self.root / "partial"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def trees(self) -> Path:
        return self.root / "trees"

    @property
    def spool(self) -> Path:
        return self.root / "spool"

    @property
    def archives(self) -> Path:
        return self.root / "archives"

    @property
    def orphans(self) -> Path:
        """Files found in ``data/`` that no record names, set aside at start-up (made only when needed)."""
        return self.root / "orphans"

    def folders(self) -> list[Path]:
        return [self.partial, self.data, self.trees, self.spool, self.archives]


@dataclass(frozen=True)
class State:
    """What every handler shares; built whole at start-up, torn down at cleanup (the managers: app keys)."""

    config: ServerConfig
    layout: Layout
    store: Store
    tokens: Tokens
    limiter: RateLimiter | None
    io: ThreadPoolExecutor
    catalog: Catalog = DEFAULT

    async def run_io(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the file-work threads: blocking disk work never runs on the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.io, functools.partial(fn, *args))


STATE = web.AppKey("flowxfer_state", State)

#: request keys set by the middleware
USER = web.RequestKey("flowxfer_user", str)
RATE = web.RequestKey("flowxfer_rate", Decision)


def state_of(request: web.Request) -> State:
    return request.app[STATE]


def caller_of(request: web.Request) -> str:
    """The authenticated user, or ``""`` for an anonymous caller of a route that admits one.

    ``""`` is no user's name, owns nothing and holds no grant: it reads public data only.
    """
    return str(request.get(USER) or "")


def user_of(request: web.Request) -> str:
    """The authenticated user (the middleware has refused anonymous calls already)."""
    user = request.get(USER)
    if not user:
        raise ApiError(401, "authentication required")
    return str(user)


def charge(request: web.Request, cls: str, *, count: bool = True) -> None:
    """Count the request against ``cls`` for its user and remember the headers to send.

    :raises ApiError: 429 with ``Retry-After`` when the budget is spent.
    """
    state = state_of(request)
    if state.limiter is None:
        return
    who = f"user:{request[USER]}" if request.get(USER) else f"ip:{request.remote}"
    decision: Decision | None = state.limiter.hit(who, cls) if count else state.limiter.peek(who, cls)
    if decision is None:
        return
    request[RATE] = decision
    if not decision.allowed:
        error = ApiError(429, f"rate limit exceeded for {cls} requests; retry in {int(decision.retry_after)} s")
        error.headers["Retry-After"] = str(int(decision.retry_after))
        raise error


def apply_rate_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Put the X-RateLimit-* headers of the class this request counted against on its answer."""
    decision: Decision | None = request.get(RATE)
    if decision is not None and not response.prepared:
        response.headers.update(decision.headers())

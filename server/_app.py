"""The aiohttp application: middleware (auth, rate limits, errors), login, capabilities.

One middleware does, in order: identify the caller (Bearer token or API
key; on downloads also ``?token=`` or the refresh cookie; nobody, on the
routes that serve public data), count the request against its rate-limit class,
run the handler, and turn any refusal into ``{"error": ...}`` with the
``X-RateLimit-*`` headers of the class it counted against. Anything
unexpected becomes a JSON 500 carrying an id that is also logged; there
should be none.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from aiohttp import HttpVersion11, hdrs, web
from aiohttp.abc import AbstractAccessLogger, BaseRequest

from flowxfer import __version__
from flowxfer._os import spread_subfolders
from flowxfer.protocol import CHECKSUM_ALGORITHM, REFRESH_COOKIE

from ._auth import DUMMY_SALT, TokenError, Tokens, check_password, hash_password, load_or_create_secret
from ._catalog import DEFAULT, load_catalog
from ._config import ServerConfig
from ._data import data_routes
from ._downloads import download_routes
from ._executions import execution_routes
from ._http import ApiError, Bare404, bad_request, json_response, read_json
from ._ids import new_id
from ._jobs import JOBS, JobManager, job_routes
from ._keys import is_api_key, verify_api_key
from ._openapi import openapi_document
from ._ratelimit import RateLimiter
from ._regex import REGEX, RegexWorker
from ._samples import PUBLIC_ROUTES, sample_routes
from ._state import STATE, USER, Layout, State, apply_rate_headers, charge, state_of
from ._store import Store
from ._upload_recovery import recover_uploads
from ._upload_routes import PARALLEL_ROUTE_NAMES, ROUTES
from ._uploads import UPLOADS, UploadManager, upload_routes
from ._users import user_routes

if TYPE_CHECKING:
    from yarl import URL

log = logging.getLogger("flowxfer.server")

#: Routes anyone may call, and whether they count against the caller IP's api budget.
_PUBLIC = {
    "capabilities": False,
    "openapi": False,
    "login": True,
    "token": True,
    **{name: True for name in PUBLIC_ROUTES},
}
#: Routes that serve public data (or, ``/me``, a record of nulls) to a caller with no
#: token, as hosted Flow's do. A token that is sent must still be good: a bad one is a 401.
_ANONYMOUS_OK = {"data", "search", "download", "download_by_id", "data_types", "data_contents", "me"}
#: Routes where the token may also come as ``?token=`` or the refresh cookie (links handed
#: to browsers and curl, as hosted Flow's ``/downloads/<id>/<name>``).
_QUERY_TOKEN = {"download", "download_by_id", "job_archive"}
_DOWNLOADS = {"download", "download_by_id", "job_archive"}
UPLOAD_ROUTE_NAMES = frozenset(route.name for route in ROUTES) | PARALLEL_ROUTE_NAMES


def _rate_class(route: str | None, method: str) -> str | None:
    """The class a request counts against; None where the handler decides (uploads)."""
    if route in UPLOAD_ROUTE_NAMES:
        return None
    if route in _DOWNLOADS:
        return "download" if method == "GET" else "api"
    if route == "search":
        return "search"
    return "api"


def _credential(request: web.Request, route: str | None) -> tuple[str, str] | None:
    """``(token, kind)`` the caller sent, or None: a Bearer header, else on downloads ``?token=``
    (an access token or API key) or the ``flow_refresh_token`` cookie (a refresh token)."""
    header = request.headers.get("Authorization")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise ApiError(401, "Authorization must read: Bearer <token>")
        return value.strip(), "access"
    if route in _QUERY_TOKEN:
        if token := request.query.get("token"):
            return token, "access"
        if cookie := request.cookies.get(REFRESH_COOKIE):
            return cookie, "refresh"
    return None


async def _identify(state: State, token: str, kind: str) -> str:
    """The user a token stands for: an access JWT, a refresh JWT (cookie) or an API key.

    :raises TokenError: for anything else.
    """
    if kind == "access" and is_api_key(token):
        return await state.store.run(verify_api_key, state.store, token)
    return state.tokens.verify(token, kind)


def _error_response(status: int, body: dict[str, Any] | None, headers: dict[str, str] | None = None) -> web.Response:
    if body is None:
        return web.Response(status=status, headers=headers)
    return json_response(body, status=status, headers=headers)


@web.middleware
async def flow_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    state = state_of(request)
    route = request.match_info.route.name
    response: web.StreamResponse
    try:
        if request.match_info.http_exception is not None or route == _NO_ROUTE:
            # No such path or method: say so (404/405) before asking who is calling, so a
            # client probing /capabilities on a server without extensions sees Flow's 404.
            charge(request, "api")
        elif route in _PUBLIC:
            if _PUBLIC[route]:
                charge(request, "api")
        else:
            try:
                credential = _credential(request, route)
                if credential is not None:
                    request[USER] = await _identify(state, *credential)
                elif route not in _ANONYMOUS_OK:
                    raise ApiError(401, "authentication required: send Authorization: Bearer <token>")
            except TokenError as exc:
                charge(request, "api")
                raise ApiError(401, str(exc)) from None
            except ApiError:
                charge(request, "api")
                raise
            cls = _rate_class(route, request.method)
            if cls is not None:
                charge(request, cls)
        response = await handler(request)
    except ApiError as exc:
        response = _error_response(exc.status, exc.body(), exc.headers)
    except Bare404:
        response = web.Response(status=404)
    except web.HTTPException as exc:
        # The router's own refusals (no such path, method not allowed...), as JSON.
        if exc.status == 413:
            message = "request body too large"
        else:
            message = exc.reason or "error"
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow",)}
        response = _error_response(exc.status, {"error": message}, headers)
    except asyncio.CancelledError:
        raise
    except Exception:
        incident = secrets.token_hex(6)
        log.exception("internal error %s on %s %s", incident, request.method, request.path)
        response = _error_response(500, {"error": "internal server error", "incident": incident})
    apply_rate_headers(request, response)
    return response


class _AccessLog(AbstractAccessLogger):
    """Access log without query strings: ``?token=`` must never reach a log."""

    def log(self, request: BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(
            '%s "%s %s" %s %s %.3f',
            request.remote,
            request.method,
            request.path,
            response.status,
            response.body_length,
            time,
        )


# --- auth endpoints -----------------------------------------------------------------


async def login(request: web.Request) -> web.StreamResponse:
    state = state_of(request)
    body = await read_json(request, state.config.max_json_bytes, state.config.max_json_depth)
    username, password = body.get("username"), body.get("password")
    if not isinstance(username, str) or not isinstance(password, str) or not username or not password:
        bad_request("username and password are required")
    if len(username) > 64 or len(password.encode()) > 1024:
        bad_request("Invalid username or password")
    user = await state.store.run(state.store.get_user, username)
    if user is None:
        # Same work as a real check, so timing does not reveal which users exist.
        await asyncio.to_thread(hash_password, password, DUMMY_SALT, state.config.scrypt_n)
        bad_request("Invalid username or password")
    if not await asyncio.to_thread(check_password, password, user.salt, user.hash, user.scrypt_n):
        bad_request("Invalid username or password")
    access = state.tokens.issue(username, "access")
    refresh = state.tokens.issue(username, "refresh")
    answer: dict[str, Any] = {"token": access}
    if state.config.extensions:
        answer["refresh_token"] = refresh
    response = json_response(answer)
    response.set_cookie(
        REFRESH_COOKIE,
        refresh,
        max_age=int(state.config.refresh_ttl),
        httponly=True,
        samesite="Strict",
        secure=state.config.tls_cert is not None,
        path="/",
    )
    return response


async def refresh_token(request: web.Request) -> web.StreamResponse:
    state = state_of(request)
    token = request.cookies.get(REFRESH_COOKIE)
    if not token:
        raise ApiError(401, f"no {REFRESH_COOKIE} cookie: log in again")
    try:
        username = state.tokens.verify(token, "refresh")
    except TokenError as exc:
        raise ApiError(401, f"refresh token refused: {exc}") from None
    if not await state.store.run(state.store.user_exists, username):
        raise ApiError(401, "refresh token refused: no such user")
    return json_response({"token": state.tokens.issue(username, "access")})


async def capabilities(request: web.Request) -> web.StreamResponse:
    config = state_of(request).config
    return json_response(
        {
            "server": "flowxfer",
            "version": __version__,
            "checksums": [CHECKSUM_ALGORITHM],
            "upload_status": True,
            "chunk_maps": True,
            "directory_listing": True,
            "parallel_chunks": True,
            "download_by_id": True,
            "max_chunk_size": config.max_chunk_size,
        }
    )


async def openapi(request: web.Request) -> web.StreamResponse:
    config = state_of(request).config
    return json_response(openapi_document(config.max_chunk_size))


# --- the application ------------------------------------------------------------------


async def _startup(app: web.Application) -> None:
    """Finish interrupted uploads before jobs (which read ready data) start; nothing is served yet."""
    state = app[STATE]
    await asyncio.to_thread(recover_uploads, state.layout, state.store, state.config)
    await app[JOBS].start()


async def _cleanup(app: web.Application) -> None:
    """Stop the managers first (they use the store and the I/O threads), then the store, then the threads."""
    state = app[STATE]
    await app[JOBS].stop()
    await app[REGEX].close()
    await app[UPLOADS].parallel.close()
    await asyncio.to_thread(state.store.close)
    state.io.shutdown(wait=False)


def _open_state(config: ServerConfig) -> State:
    """Create the root's folders, the database and the secret (blocking: done before serving)."""
    config.root.mkdir(parents=True, exist_ok=True)
    layout = Layout(config.root)
    for folder in layout.folders():
        folder.mkdir(exist_ok=True)
    # One sub-folder per directory upload, each unrelated to the others.
    spread_subfolders(layout.trees)
    store = Store(config.root)
    secret = load_or_create_secret(config.root)
    for name, password in config.users.items():
        salt, digest = hash_password(password, n=config.scrypt_n)
        store.put_user(name, salt, digest, config.scrypt_n)
    catalog = load_catalog(config.catalog) if config.catalog is not None else DEFAULT
    for owner, name in config.projects:
        if not store.user_exists(owner):
            raise ValueError(f"project {owner}:{name}: no such user {owner!r}")
        store.add_project(new_id(), owner, name)
    limits = config.limits
    limiter = RateLimiter(limits, time.time) if limits else None
    state = State(
        config,
        layout,
        store,
        Tokens(secret, config.access_ttl, config.refresh_ttl),
        limiter,
        ThreadPoolExecutor(max_workers=4, thread_name_prefix="flowxfer-io"),
        catalog,
    )
    return state


async def _expect(request: web.Request) -> None:
    """aiohttp's ``Expect`` handling, without echoing the header back.

    aiohttp's default handler puts an unknown ``Expect`` value into its 417
    body; a value with bytes that are not UTF-8 then fails to encode and the
    client got a 500. It runs before any middleware, so it is replaced per route.
    """
    if request.version != HttpVersion11:
        return
    if request.headers.get(hdrs.EXPECT, "").lower() != "100-continue":
        raise web.HTTPExpectationFailed(text="only Expect: 100-continue is understood")
    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    request.writer.output_size = 0  # the main body has not started


#: The name of the catch-all resource (:class:`_EveryTarget`), which answers what no route serves.
_NO_ROUTE = "no-route"


async def _no_route(request: web.Request) -> web.StreamResponse:
    """404, or 405 with ``Allow`` when the path exists for other methods: what aiohttp's router says.

    A route of our own instead of the router's built-in refusal, because the
    built-in one answers an ``Expect`` header with aiohttp's default handler
    (see :func:`_expect`), which fails with a 500 on bytes that are not UTF-8.
    """
    allowed: set[str] = set()
    for resource in request.app.router.resources():
        if resource.name == _NO_ROUTE:
            continue
        match, methods = await resource.resolve(request)
        if match is None:
            allowed |= methods
    if allowed:
        raise web.HTTPMethodNotAllowed(request.method, allowed)
    raise web.HTTPNotFound()


class _EveryTarget(web.AbstractResource):
    """A resource that every request target matches: any path, a newline in it, ``OPTIONS *``.

    Registered last, it receives exactly the requests no other route
    serves, so that they too meet our ``Expect`` handler (a pattern route
    cannot match the asterisk-form target, which has no leading slash).
    """

    def __init__(self) -> None:
        super().__init__(name=_NO_ROUTE)
        self._route = web.ResourceRoute(hdrs.METH_ANY, _no_route, self, expect_handler=_expect)

    @property
    def canonical(self) -> str:
        return "/"

    def url_for(self, **kwargs: Any) -> URL:
        raise RuntimeError("the catch-all resource has no URL of its own")

    def add_prefix(self, prefix: str) -> None:
        raise RuntimeError("the catch-all resource cannot live under a prefix")

    def get_info(self) -> Any:
        return {}

    def raw_match(self, path: str) -> bool:
        return True

    async def resolve(self, request: web.Request) -> tuple[web.UrlMappingMatchInfo | None, set[str]]:
        return web.UrlMappingMatchInfo({}, self._route), set()

    def __len__(self) -> int:
        return 1

    def __iter__(self) -> Iterator[web.ResourceRoute]:
        return iter([self._route])


def build_app(state: State) -> web.Application:
    """The application around an opened :class:`State` (no blocking work here)."""
    config = state.config
    app = web.Application(middlewares=[flow_middleware], client_max_size=config.max_json_bytes)
    app[STATE] = state
    # Each manager is built whole on the finished state and registered under its own key.
    uploads = app[UPLOADS] = UploadManager(state)
    jobs = app[JOBS] = JobManager(state)
    app[REGEX] = RegexWorker(config.pattern_timeout)
    routes = [web.post("/login", login, name="login"), web.get("/token", refresh_token, name="token", allow_head=False)]
    if config.extensions:
        routes += [
            web.get("/capabilities", capabilities, name="capabilities", allow_head=False),
            web.get("/openapi.json", openapi, name="openapi", allow_head=False),
        ]
    routes += (
        upload_routes(uploads)
        + data_routes(state)
        + job_routes(jobs)
        + download_routes(state)
        + sample_routes(state)
        + user_routes()
        + execution_routes()
    )
    app.add_routes([web.RouteDef(r.method, r.path, r.handler, {**r.kwargs, "expect_handler": _expect}) for r in routes])
    app.router.register_resource(_EveryTarget())  # last: it answers what nothing above serves
    app.on_startup.append(_startup)
    app.on_cleanup.append(_cleanup)
    return app


def create_app(config: ServerConfig) -> web.Application:
    """A ready-to-run application for ``config``.

    Opens the database and the secret synchronously: call it before the
    event loop serves anything (or use :func:`serve_in_background`, which
    does that part in a thread).
    """
    return build_app(_open_state(config))


__all__ = ["build_app", "create_app"]

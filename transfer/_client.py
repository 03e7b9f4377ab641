"""The HTTP client for the Flow API: one aiohttp session, auth, retries, throttling.

This is the boundary where aiohttp's exceptions and HTTP statuses become the
engine's own (:mod:`._errors`). Every request goes through :meth:`FlowClient._send`,
which takes a rate-limit token, makes sure the access token is fresh, retries
what is worth retrying with full-jitter backoff, refreshes once on a 401, and
learns from the rate-limit headers of every answer.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import ssl
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aiohttp
import anyio
import yarl

from flowxfer import __version__, protocol

from . import _preconnect
from ._baseurl import check_base_url
from ._capcache import CapabilityCache
from ._config import TransferConfig
from ._credentials import CredentialStore, Tokens, not_logged_in, token_expiry
from ._errors import (
    AnswerLost,
    AuthError,
    ChecksumMismatchError,
    GoneError,
    NotFoundError,
    ProtocolError,
    RejectedError,
    ServerError,
    UnavailableError,
    UsageError,
)
from ._limiter import RateLimiter
from ._retry import Retryability, RetryPolicy, classify_status, parse_retry_after
from ._tls import verified_context
from .events import Retrying, ignore_events

if TYPE_CHECKING:
    from .events import ProgressCallback

#: Answers larger than this are not read into memory as error text.
_MAX_ERROR_BODY = 64 * 1024
#: JSON answers larger than this are refused (a search page is a few hundred KiB at most).
_MAX_JSON_BODY = 32 * 1024 * 1024

_RETRYABLE_EXCEPTIONS = (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, asyncio.TimeoutError)


@dataclass(frozen=True)
class Capabilities:
    """What the server offers beyond hosted Flow (all False against hosted Flow)."""

    extensions: bool = False
    checksums: bool = False
    upload_status: bool = False
    chunk_maps: bool = False
    #: [ext] one upload's chunks may go on several connections at once, in any order.
    parallel_chunks: bool = False
    #: [ext] ``GET /downloads/<id>`` serves the bytes by id alone, naming them in its headers.
    download_by_id: bool = False
    max_chunk_size: int | None = None
    server: str = "flow"
    version: str = ""


def _error_text(body: bytes, content_type: str, status: int, reason: str) -> dict[str, Any]:
    """The error body as a dict; HTML or text from proxies becomes ``{"error": "<short text>"}``."""
    if "json" in content_type or body[:1] in (b"{", b"["):
        try:
            decoded = json.loads(body)
        except (ValueError, RecursionError):  # RecursionError: JSON nested past the parser's stack
            decoded = None
        if isinstance(decoded, dict):
            return decoded
    text = body.decode("utf-8", "replace")
    text = re.sub(r"<[^>]*>", " ", text)
    text = " ".join(text.split())[:300]
    return {"error": f"HTTP {status} {reason}" + (f": {text}" if text else "")}


def _message(body: Mapping[str, Any], status: int) -> str:
    error = body.get("error")
    if isinstance(error, str) and error:
        return error
    if body:
        return "; ".join(f"{key}: {value}" for key, value in body.items())[:500]
    return f"HTTP {status}"


class FlowClient:
    """An authenticated, throttled, retrying client for one Flow server.

    Use as ``async with FlowClient(...) as client``. The session is shared by
    every request of a transfer (one connection pool).

    :param tokens: the access (and refresh) token to use; None to log in first.
    :param store: where refreshed tokens are saved (None: keep them in memory).
    :param session: an aiohttp session to use instead of creating one (tests,
        embedding in another tool); it is not closed by this client.
    """

    def __init__(
        self,
        base_url: str,
        *,
        tokens: Tokens | None = None,
        store: CredentialStore | None = None,
        config: TransferConfig | None = None,
        limiter: RateLimiter | None = None,
        events: ProgressCallback = ignore_events,
        session: aiohttp.ClientSession | None = None,
        ssl_context: ssl.SSLContext | None = None,
        allow_insecure_http: bool = False,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.time,
        pause: Callable[[float], Awaitable[None]] = anyio.sleep,
        capability_cache: CapabilityCache | None = None,
    ) -> None:
        self.base_url = check_base_url(base_url, allow_insecure_http)
        self._origin = urlsplit(self.base_url)[:2]
        self.tokens = tokens
        self.store = store
        self.config = config or TransferConfig()
        self.limiter = limiter or RateLimiter(clock=clock)
        self.events = events
        self._session = session
        self._own_session = session is None
        self._ssl = ssl_context
        self._rng = rng or random.Random()
        self._clock = clock
        #: How waits between attempts are spent (the engine passes one that ends early on stop).
        self.pause = pause
        self._policy = RetryPolicy(
            max_attempts=self.config.max_attempts, base=self.config.backoff_base, cap=self.config.backoff_cap
        )
        self._refresh_lock = anyio.Lock()
        self._capabilities: Capabilities | None = None
        #: One look-up at a time: the requests a command starts at once (its journal's and its
        #: first byte's) share one answer instead of each reading the cache in a thread of its own.
        self._capabilities_asking = anyio.Lock()
        #: Where ``/capabilities`` answers are remembered between commands (None: ask every time).
        self.capability_cache = capability_cache
        #: The capabilities in use came from :attr:`capability_cache`, not from this server just now.
        self.capabilities_remembered = False
        #: The quickest GET's headers so far, in seconds: an upper bound of the path's round trip.
        #: An answer on a connection its request opened counts half: it also waited for the handshake
        #: (one round trip or more), which once made a 50 ms path look like a 100 ms one (issue 20).
        #: Once an answer came on an open connection, only such answers count (:attr:`round_trip_settled`).
        self.round_trip: float | None = None
        #: The quickest small GET on a connection opened before it: the round trip itself, no guess.
        self._round_trip_open: float | None = None
        #: Connections being opened ahead of the requests that will use them (:meth:`warm`).
        self._warming: set[asyncio.Task[None]] = set()
        self.retries = 0
        #: Each streamed answer's time from its own request to its headers (:meth:`answered_in`).
        self._answered_in: weakref.WeakKeyDictionary[aiohttp.ClientResponse, float] = weakref.WeakKeyDictionary()

    async def __aenter__(self) -> FlowClient:
        if self._session is None:
            if self._ssl is None and self._origin[0] == "https":
                # Our own, never aiohttp's default: the CLI imports aiohttp without loading that one's CAs (._tls).
                # Reading the CA store is file I/O: not on the event loop.
                self._ssl = await anyio.to_thread.run_sync(verified_context)
            connector = aiohttp.TCPConnector(
                limit=self.config.connection_limit,
                ssl=self._ssl if self._ssl is not None else True,
                enable_cleanup_closed=False,
                # The console script's early handshake, taken over by the first connection (._preconnect).
                socket_factory=_preconnect.socket_factory if _preconnect.pending() else None,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),  # the refresh cookie is sent by hand, to this server only
                timeout=aiohttp.ClientTimeout(
                    total=None, connect=self.config.connect_timeout, sock_read=self.config.read_timeout
                ),
                headers={"User-Agent": f"flowxfer/{__version__}"},
                auto_decompress=False,
                trace_configs=[_connections_opened()],
            )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        for task in list(self._warming):
            task.cancel()
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    def _observe_round_trip(self, took: float, new_connection: bool) -> None:
        """Keep the quickest GET's time to its headers as :attr:`round_trip` (the rules there)."""
        if not new_connection:
            self._round_trip_open = took if self._round_trip_open is None else min(self._round_trip_open, took)
            self.round_trip = self._round_trip_open
        elif self._round_trip_open is None:
            # The handshake took one round trip at least, the answer another: half is a guess,
            # too low when the handshake was over before the request (._preconnect's socket).
            took /= 2
            self.round_trip = took if self.round_trip is None else min(self.round_trip, took)

    def answered_in(self, response: aiohttp.ClientResponse) -> float | None:
        """Seconds from the request that got ``response`` to its headers (None: not one of :meth:`stream`'s).

        That request's own: not a wait in the rate limiter, nor the attempts and backoffs before it
        (a Retry-After sat out says nothing of how far a new request's first byte is).
        """
        return self._answered_in.get(response)

    @property
    def round_trip_settled(self) -> bool:
        """:attr:`round_trip` was measured on an open connection, not guessed from a new one's first answer."""
        return self._round_trip_open is not None

    def warm(self, count: int) -> None:
        """Open ``count`` connections to the server in the background, left idle in the pool.

        Why: on a long path a request on a new connection waits a round trip
        for the handshake first. When the engine knows that several requests
        will go at once after an answer it is waiting for (a large file's
        streams after its chunk map), their handshakes can overlap that wait.
        Idle connections already in the pool count (they are taken and put
        back, not doubled); nothing is opened beyond the pool's limit. A
        connection that fails to open is simply not there: the request that
        would have used it opens its own, and meets the error itself.
        """
        if count <= 0 or self._session is None or self._session.connector is None:
            return
        session = self._session
        connector = session.connector
        assert connector is not None
        # The key the session's own requests have (same URL origin, default ssl): aiohttp
        # pools by it, so the connections opened here are the ones those requests take.
        request = aiohttp.ClientRequest("GET", yarl.URL(self.base_url), loop=asyncio.get_running_loop(), ssl=True)

        async def one() -> None:
            try:
                connection = await connector.connect(request, [], session.timeout)
            except (aiohttp.ClientError, OSError, TimeoutError):
                return
            connection.release()

        for _ in range(count):
            task = asyncio.get_running_loop().create_task(one())
            self._warming.add(task)
            task.add_done_callback(self._warming.discard)

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("FlowClient used outside 'async with'")
        return self._session

    def url(self, path: str) -> str:
        if path.startswith(("http://", "https://")):
            return path
        return f"{self.base_url}/{path.lstrip('/')}"

    def _same_origin(self, url: str) -> bool:
        """Whether ``url`` is on this server (scheme, host and port), the only place credentials go."""
        parts = urlsplit(url)
        return (parts.scheme.lower(), parts.netloc.lower()) == (self._origin[0].lower(), self._origin[1].lower())

    @property
    def username(self) -> str:
        return self.tokens.username if self.tokens else ""

    # -- authentication ------------------------------------------------

    async def login(self, username: str, password: str) -> Tokens:
        """``POST /login``; keeps the tokens (and saves them when a store is set).

        :raises AuthError: bad credentials.
        """
        try:
            answer, response = await self.json_request_with_response(
                "POST",
                "/login",
                rate_class="api",
                json_body={"username": username, "password": password},
                authenticated=False,
            )
        except (RejectedError, ServerError) as exc:
            # Only a refusal is a failed login: an HTML page (a wrong URL, a proxy) is not bad credentials.
            if isinstance(exc, UnavailableError | ProtocolError) or exc.status >= 500:
                raise
            raise AuthError(f"login failed for {username!r}: {exc}") from None
        token = answer.get("token")
        if not isinstance(token, str) or not token:
            raise ProtocolError("the server's login answer carries no token")
        refresh = answer.get("refresh_token")
        cookie = response.cookies.get(protocol.REFRESH_COOKIE)
        if not refresh and cookie is not None:
            refresh = cookie.value
        self.tokens = Tokens(username=username, access_token=token, refresh_token=refresh or None)
        if self.store is not None:
            await anyio.to_thread.run_sync(self.store.save, self.base_url, self.tokens)
        return self.tokens

    async def _ensure_fresh(self) -> None:
        """Refresh the access token shortly *before* it expires (read from the JWT's ``exp``)."""
        if self.tokens is None or not self.tokens.refresh_token:
            return
        exp, iat = token_expiry(self.tokens.access_token)
        if exp is None:
            return
        lifetime = exp - iat if iat is not None else 300.0
        margin = min(30.0, max(0.5, lifetime / 4))
        if exp - self._clock() <= margin:
            await self.refresh(self.tokens.access_token)

    async def refresh(self, stale_token: str | None = None) -> None:
        """``GET /token`` with the refresh cookie; single-flight across concurrent workers.

        :param stale_token: the token the caller saw fail; if another worker
            already replaced it, nothing is done.
        :raises AuthError: no refresh token, or the server refused it.
        """
        async with self._refresh_lock:
            if self.tokens is None:
                raise not_logged_in(self.store, self.base_url)
            if stale_token is not None and self.tokens.access_token != stale_token:
                return
            if not self.tokens.refresh_token:
                raise AuthError(
                    "the server refused the access token, and a token given with --token, "
                    "FLOW_API_TOKEN or a token file cannot be refreshed; give a valid API key "
                    f"or log in with: flowxfer --base-url {self.base_url} login"
                )
            headers = {"Cookie": f"{protocol.REFRESH_COOKIE}={self.tokens.refresh_token}"}
            try:
                answer = await self.json_request(
                    "GET", "/token", rate_class="api", headers=headers, authenticated=False
                )
            except (RejectedError, AuthError, NotFoundError) as exc:
                raise AuthError(f"the login expired ({exc}); run 'flowxfer login' again") from None
            token = answer.get("token")
            if not isinstance(token, str) or not token:
                raise ProtocolError("the server's token answer carries no token")
            self.tokens = Tokens(self.tokens.username, token, self.tokens.refresh_token)
            if self.store is not None:
                await anyio.to_thread.run_sync(self.store.save, self.base_url, self.tokens)

    # -- capabilities --------------------------------------------------

    async def capabilities(self, *, fresh: bool = False) -> Capabilities:
        """Probe ``GET /capabilities`` once (or remember it, :mod:`._capcache`); hosted Flow has none (404).

        :param fresh: ask the server now, whatever was remembered (``doctor``).
        """
        if self._capabilities is not None and not fresh:
            return self._capabilities
        async with self._capabilities_asking:
            if self._capabilities is not None and not fresh:  # another task asked meanwhile
                return self._capabilities
            return await self._read_capabilities(fresh)

    async def _read_capabilities(self, fresh: bool) -> Capabilities:
        """:meth:`capabilities`' look-up itself (under its lock): the answer read as capabilities."""
        answer = await self._capability_answer(fresh)
        checksums = answer.get("checksums") if isinstance(answer, dict) else None
        ours = isinstance(answer, dict) and answer.get("server") == "flowxfer"
        max_chunk = answer.get("max_chunk_size") if ours else None
        self._capabilities = Capabilities(
            extensions=ours,
            checksums=ours and isinstance(checksums, list) and protocol.CHECKSUM_ALGORITHM in checksums,
            upload_status=ours and answer.get("upload_status") is True,
            chunk_maps=ours and answer.get("chunk_maps") is True,
            parallel_chunks=ours and answer.get("parallel_chunks") is True,
            download_by_id=ours and answer.get("download_by_id") is True,
            max_chunk_size=max_chunk if isinstance(max_chunk, int) and max_chunk > 0 else None,
            server=str(answer.get("server", "flow")) if ours else "flow",
            version=str(answer.get("version", "")) if ours else "",
        )
        return self._capabilities

    async def _capability_answer(self, fresh: bool) -> Any:
        """The remembered answer when there is a fresh one, else the server's (then remembered)."""
        cache = self.capability_cache
        if cache is not None and not fresh:
            remembered = await anyio.to_thread.run_sync(cache.load, self.base_url)
            if remembered is not None:
                self.capabilities_remembered = True
                return remembered
        try:
            answer = await self.json_request("GET", "/capabilities", rate_class=None, authenticated=False)
        except (NotFoundError, RejectedError, ProtocolError, AuthError):
            # Hosted Flow has no such endpoint (404, or 401 from its auth layer): plain behaviour.
            answer = {}
        self.capabilities_remembered = False
        if cache is not None:
            await anyio.to_thread.run_sync(cache.save, self.base_url, answer if isinstance(answer, dict) else {})
        return answer

    async def revalidate_capabilities(self, relied_on: Capabilities | None = None) -> Capabilities | None:
        """Ask the server again when the capabilities came from the cache; the new ones when they changed.

        For a request that relied on an extension and was refused as if the
        server had none (a 404): the server may have been restarted without
        it since the answer was remembered. None: they did not come from the
        cache, or the server says the same now, so the 404 stands.

        :param relied_on: the capabilities the refused request was sent under: when another
            request has asked again meanwhile (the client holds others), those, without asking.
        """
        if relied_on is not None and self._capabilities is not None and self._capabilities != relied_on:
            return self._capabilities
        if not self.capabilities_remembered or self._capabilities is None:
            return None
        before = self._capabilities
        self._capabilities = None
        if self.capability_cache is not None:
            await anyio.to_thread.run_sync(self.capability_cache.forget, self.base_url)
        now = await self.capabilities()
        return now if now != before else None

    # -- requests ------------------------------------------------------

    async def json_request(
        self,
        method: str,
        path: str,
        *,
        rate_class: str | None,
        json_body: Any = None,
        params: Mapping[str, str] | None = None,
        form: Callable[[], aiohttp.FormData | aiohttp.MultipartWriter | aiohttp.Payload] | None = None,
        headers: Mapping[str, str] | None = None,
        authenticated: bool = True,
        replay: bool = True,
    ) -> dict[str, Any]:
        """A request whose answer is a JSON object.

        :param form: builds the multipart body afresh for every attempt (a
            FormData can be sent only once).
        :param replay: send it again when its answer is lost (connection cut after it
            may have gone out); False raises :class:`AnswerLost` instead.
        :raises ServerError: (a subclass) for every refusal; see :mod:`._errors`.
        """
        answer, _ = await self.json_request_with_response(
            method,
            path,
            rate_class=rate_class,
            json_body=json_body,
            params=params,
            form=form,
            headers=headers,
            authenticated=authenticated,
            replay=replay,
        )
        assert isinstance(answer, dict)
        return answer

    async def json_value(self, path: str, *, params: Mapping[str, str] | None = None) -> Any:
        """``GET`` a JSON answer of any shape (an api request), e.g. ``/samples/types``' list."""
        answer, _ = await self.json_request_with_response("GET", path, rate_class="api", params=params, any_json=True)
        return answer

    async def json_request_with_response(
        self,
        method: str,
        path: str,
        *,
        rate_class: str | None,
        json_body: Any = None,
        params: Mapping[str, str] | None = None,
        form: Callable[[], aiohttp.FormData | aiohttp.MultipartWriter | aiohttp.Payload] | None = None,
        headers: Mapping[str, str] | None = None,
        authenticated: bool = True,
        any_json: bool = False,
        replay: bool = True,
    ) -> tuple[Any, aiohttp.ClientResponse]:
        """:meth:`json_request`, and the (released) response, for callers that read its headers.

        :param any_json: take any JSON value, not only an object (Flow's catalog answers lists).
        """
        for attempt in range(1, self._policy.max_attempts + 1):
            async with self._send(
                method,
                path,
                rate_class=rate_class,
                json_body=json_body,
                params=params,
                form=form,
                headers=headers,
                authenticated=authenticated,
                replay=replay,
            ) as response:
                try:
                    body = await _read_body(response, _MAX_JSON_BODY + 1)
                except _RETRYABLE_EXCEPTIONS as exc:
                    if not replay:
                        raise AnswerLost(f"{method} {path}: the answer was cut off ({exc!r})") from None
                    if attempt == self._policy.max_attempts:
                        raise UnavailableError(f"{method} {path}: the answer was cut off ({exc!r})") from None
                    await self._backoff(f"{method} {path}", f"answer cut off ({type(exc).__name__})", attempt, None)
                    continue
            if len(body) > _MAX_JSON_BODY:
                raise ProtocolError(f"{method} {path}: the answer is larger than {_MAX_JSON_BODY} bytes")
            try:
                answer = json.loads(body) if body else {}
            except (ValueError, RecursionError):  # RecursionError: JSON nested past the parser's stack
                snippet = _error_text(body, response.content_type, response.status, response.reason or "")
                raise ProtocolError(
                    f"{method} {path}: the server answered {response.content_type or 'something'} instead of "
                    f"JSON ({snippet['error'][:120]}); is the server URL right?",
                    response.status,
                ) from None
            if not isinstance(answer, dict) and not any_json:
                raise ProtocolError(f"{method} {path}: expected a JSON object, got {type(answer).__name__}")
            return answer, response
        raise AssertionError("unreachable")  # pragma: no cover

    @asynccontextmanager
    async def stream(
        self,
        method: str,
        path: str,
        *,
        rate_class: str | None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """A request whose 2xx answer the caller streams; errors are mapped and retried as usual."""
        async with self._send(method, path, rate_class=rate_class, headers=headers, params=params) as response:
            yield response

    @asynccontextmanager
    async def _send(
        self,
        method: str,
        path: str,
        *,
        rate_class: str | None,
        json_body: Any = None,
        params: Mapping[str, str] | None = None,
        form: Callable[[], aiohttp.FormData | aiohttp.MultipartWriter | aiohttp.Payload] | None = None,
        headers: Mapping[str, str] | None = None,
        authenticated: bool = True,
        replay: bool = True,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """Send until a 2xx answer arrives or retrying stops making sense; yield that answer.

        :param replay: False: a lost answer (anything but a refused connection) raises :class:`AnswerLost`.
        """
        url = self.url(path)
        what = f"{method} {urlsplit(url).path}"
        refreshed = False
        attempt = 0
        while True:
            attempt += 1
            await self.limiter.acquire(rate_class)
            request_headers = dict(headers or {})
            sent_token: str | None = None
            # The token is this server's only: an absolute URL it hands out (an archive's
            # download_url) may name another host, which gets the request without it.
            if authenticated and self._same_origin(url):
                await self._ensure_fresh()
                if self.tokens is None:
                    raise not_logged_in(self.store, self.base_url)
                sent_token = self.tokens.access_token
                request_headers["Authorization"] = f"Bearer {sent_token}"
            opened = _Opened()
            began = time.monotonic()
            try:
                response = await self.session.request(
                    method,
                    url,
                    params=params,
                    json=json_body,
                    data=form() if form else None,
                    headers=request_headers,
                    allow_redirects=False,
                    trace_request_ctx=opened,
                )
            except aiohttp.ClientSSLError as exc:
                raise UnavailableError(f"{what}: TLS verification failed ({exc}); see --ca-bundle") from None
            except aiohttp.InvalidURL as exc:
                raise UsageError(f"bad URL {exc}") from None
            except _RETRYABLE_EXCEPTIONS as exc:
                if not replay and not isinstance(exc, aiohttp.ClientConnectorError):
                    raise AnswerLost(f"{what}: the answer was lost ({_describe(exc)})") from None
                if attempt >= self._policy.max_attempts:
                    raise UnavailableError(f"{what}: no answer after {attempt} attempts ({_describe(exc)})") from None
                await self._backoff(what, _describe(exc), attempt, None)
                continue
            took = time.monotonic() - began
            if method == "GET" and 200 <= response.status < 300 and self._same_origin(url):
                # Headers in: a round trip plus the server's turn-around, whatever the body. So a ranged
                # GET measures too, not only a JSON one (a download by id may send no other). Only this
                # server's: an archive's download_url may name another host, on another path.
                new_connection = opened.connection and not (opened.early and self._origin[0] == "http")
                self._observe_round_trip(took, new_connection)
            try:
                self.limiter.observe(rate_class, response.headers, response.status)
                status = response.status
                if 200 <= status < 300:
                    self._answered_in[response] = took
                    yield response
                    return
                body = _error_text(await _read_capped(response), response.content_type, status, response.reason or "")
            finally:
                response.release()
            verdict = classify_status(status)
            message = f"{what}: {_message(body, status)}"
            if verdict is Retryability.REFRESH_AUTH and sent_token is not None and not refreshed:
                refreshed = True
                await self.refresh(sent_token)
                attempt -= 1  # the refresh-and-retry is not a failed attempt
                continue
            if verdict is Retryability.RETRY and not replay and status in (500, 502, 504):
                # A gateway's error may stand for a request the server did act on: ask, do not resend.
                raise AnswerLost(f"{what}: HTTP {status}; the request may have been acted on")
            if verdict is Retryability.RETRY and attempt < self._policy.max_attempts:
                retry_after = parse_retry_after(response.headers.get("Retry-After"), self._clock())
                if status == 429:
                    wait = retry_after if retry_after is not None else self._policy.backoff(attempt, self._rng)
                    self.limiter.penalize(rate_class, wait)
                    self.limiter.check_wait(rate_class or "api", wait)
                await self._backoff(what, f"HTTP {status}", attempt, retry_after)
                continue
            raise _status_error(status, message, body) from None

    async def _backoff(self, what: str, reason: str, attempt: int, retry_after: float | None) -> None:
        delay = self._policy.delay(attempt, self._rng, retry_after)
        self.retries += 1
        self.events(Retrying(what, reason, attempt, self._policy.max_attempts, delay))
        await self.pause(delay)


class _Opened:
    """One request's trace context: whether it opened a connection of its own.

    ``early``: that connection is the console script's early socket, its TCP
    handshake over before the request (:func:`._preconnect.handshake_was_early`):
    over plain HTTP its answer took one round trip, and counts whole.
    """

    __slots__ = ("connection", "early")

    def __init__(self) -> None:
        self.connection = False
        self.early = False


async def _on_connection_opened(
    _session: aiohttp.ClientSession, context: SimpleNamespace, _params: aiohttp.TraceConnectionCreateEndParams
) -> None:
    if isinstance(context.trace_request_ctx, _Opened):
        context.trace_request_ctx.connection = True
        context.trace_request_ctx.early = _preconnect.handshake_was_early()


def _connections_opened() -> aiohttp.TraceConfig:
    """The session's trace: which requests waited for a new connection (:attr:`FlowClient.round_trip`)."""
    tracing = aiohttp.TraceConfig()
    tracing.on_connection_create_end.append(_on_connection_opened)
    return tracing


async def _read_body(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The whole body, or its first ``limit`` bytes when it is longer.

    ``StreamReader.read(n)`` returns whatever has arrived so far, not ``n``
    bytes: one call was reading answers that came in two TCP segments (or
    stalled half-way) as if they were whole, and half a JSON document was
    then "not JSON". A body cut short raises ``ClientPayloadError`` here.
    """
    parts: list[bytes] = []
    size = 0
    while size < limit:
        piece = await response.content.read(limit - size)
        if not piece:
            break
        parts.append(piece)
        size += len(piece)
    return b"".join(parts)


async def _read_capped(response: aiohttp.ClientResponse) -> bytes:
    try:
        return await _read_body(response, _MAX_ERROR_BODY)
    except _RETRYABLE_EXCEPTIONS:
        return b""


def _describe(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _status_error(status: int, message: str, body: dict[str, Any]) -> ServerError:
    if status == 401:
        return AuthError(message)  # type: ignore[return-value]
    if status == 404:
        return NotFoundError(message, status, body)
    if status == 410:
        return GoneError(message, status, body)
    if status == 422:
        return ChecksumMismatchError(message, status, body)
    if classify_status(status) is Retryability.RETRY:
        return UnavailableError(message, status, body)
    return RejectedError(message, status, body)

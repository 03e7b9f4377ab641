"""Health checks for an unattended setup: what a cron job needs to succeed.

Each check returns a :class:`Check` (ok / warn / fail, and what to do about
it); nothing here prints. The checks run in the order a failing cron job
would hit them: credentials, server, capabilities, clock, journal, disk.
"""

from __future__ import annotations

import email.utils
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
import anyio

from flowxfer.journal import SCHEMA_VERSION, Journal, JournalError

from ._credentials import not_logged_in, token_expiry
from ._errors import AuthError, FlowxferError

if TYPE_CHECKING:
    from ._api import Flowxfer

#: Clock skew beyond which JWT expiry goes wrong (tokens live 5 minutes).
SKEW_WARN = 30.0
SKEW_FAIL = 120.0
#: Free space below which downloads are likely to fail.
LOW_DISK = 1024 * 1024 * 1024


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # "ok", "warn" or "fail"
    detail: str

    @property
    def ok(self) -> bool:
        return self.status != "fail"


async def run_checks(fx: Flowxfer, download_dir: Path | None = None) -> list[Check]:
    """Every check, in order; a failing check does not stop the others."""
    checks = [await _credentials(fx), *await _server(fx), await _journal(fx), await _disk(download_dir or Path.cwd())]
    return checks


async def _credentials(fx: Flowxfer) -> Check:
    tokens = fx.client.tokens
    if tokens is None:
        return Check("credentials", "fail", not_logged_in(fx.store, fx.base_url).explain("doctor"))
    if not tokens.refresh_token:
        exp, _ = token_expiry(tokens.access_token)
        if exp is None:  # not a JWT: a long-lived API key, which needs no refreshing
            return Check("credentials", "ok", "a long-lived token (an API key): nothing to refresh")
        left = f"; it expires in {max(0, exp - time.time()):.0f} s" if exp else ""
        return Check(
            "credentials",
            "warn",
            f"an access token without a refresh token{left}: "
            "a cron job will fail when it expires; use 'flowxfer login'",
        )
    try:
        await fx.client.refresh()
    except FlowxferError as exc:
        return Check("credentials", "fail", f"the saved login cannot be refreshed ({exc}); run 'flowxfer login'")
    return Check("credentials", "ok", f"logged in as {tokens.username or '?'}; the refresh token works")


async def _server(fx: Flowxfer) -> list[Check]:
    client = fx.client
    started = time.monotonic()
    try:
        async with client.session.get(client.url("/capabilities"), allow_redirects=False) as response:
            date = response.headers.get("Date")
            await response.read()
    except Exception as exc:  # noqa: BLE001 - any failure to connect is the finding itself
        return [
            Check("server", "fail", f"{fx.base_url} is unreachable: {type(exc).__name__}: {exc}"),
            *await _which_base_url(fx),
        ]
    latency = time.monotonic() - started
    checks = [Check("server", "ok", f"{fx.base_url} answered in {latency * 1000:.0f} ms")]
    capabilities = await client.capabilities(fresh=True)  # what the server says now, not what was remembered
    if capabilities.extensions:
        checks.append(
            Check(
                "capabilities",
                "ok",
                f"flowxfer server {capabilities.version}: chunk checksums, chunk maps and upload status are used",
            )
        )
    else:
        checks.append(
            Check(
                "capabilities",
                "ok",
                "plain Flow: verification by size, ETag and the server's offsets (no checksums offered)",
            )
        )
    checks.append(_clock(date))
    api = await _api(fx)
    checks.append(api)
    if api.name == "api" and api.status != "ok":
        # Not asked with a login (none), or answered by something else: is it Flow at all?
        checks.extend(await _which_base_url(fx))
    return checks


def _candidates(base_url: str) -> list[str]:
    """Base URLs a person may have meant: with or without ``/api``, and the official client's default."""
    from ._config import DEFAULT_BASE_URL

    base = base_url.rstrip("/")
    found = [base[: -len("/api")] if base.endswith("/api") else base + "/api", DEFAULT_BASE_URL]
    return [url for url in dict.fromkeys(found) if url != base]


async def _answers_as_flow(fx: Flowxfer, base_url: str) -> str | None:
    """None when ``POST {base_url}/login`` (no credentials sent) answers as Flow does, in JSON; else what it was."""
    try:
        async with fx.client.session.post(
            f"{base_url.rstrip('/')}/login", json={}, allow_redirects=False, timeout=aiohttp.ClientTimeout(total=10)
        ) as response:
            kind = response.headers.get("Content-Type", "")
            await response.read()
    except Exception as exc:  # noqa: BLE001 - any failure is the answer
        return f"unreachable ({type(exc).__name__})"
    if response.status == 404:
        return "a 404 at /login"
    if "json" not in kind:
        return f"{'an HTML page' if 'html' in kind else kind or 'no content type'} (HTTP {response.status}) at /login"
    if response.status >= 500:
        return f"HTTP {response.status} at /login"
    return None


async def _which_base_url(fx: Flowxfer) -> list[Check]:
    """When the configured base URL does not answer as Flow: which of the likely ones does."""
    found = await _answers_as_flow(fx, fx.base_url)
    if found is None:
        return []
    for candidate in _candidates(fx.base_url):
        if await _answers_as_flow(fx, candidate) is None:
            return [
                Check(
                    "base-url",
                    "fail",
                    f"{fx.base_url} answers {found}, not as Flow; {candidate} answers as "
                    f"Flow: use --base-url {candidate} (or FLOW_API_URL)",
                )
            ]
    tried = ", ".join(_candidates(fx.base_url))
    return [
        Check(
            "base-url",
            "fail",
            f"{fx.base_url} answers {found}, not as Flow; neither does {tried}: "
            "check the URL of your Flow server's API",
        )
    ]


async def _api(fx: Flowxfer) -> Check:
    """One authenticated request that only Flow answers in JSON: any web server answers /capabilities.

    ``GET /me``, which hosted Flow documents (``/data/owned`` it does not). Hosted
    Flow answers a bad token there with 200 and a record of nulls, not 401, so
    the ``id`` is what tells whether the login was accepted.
    """
    if fx.client.tokens is None:
        return Check("api", "warn", "not logged in: no authenticated request was tried")
    try:
        me = await fx.client.json_request("GET", "/me", rate_class="api")
    except AuthError as exc:
        return Check("credentials", "fail", f"the server refused the login ({exc}); run 'flowxfer login'")
    except FlowxferError as exc:
        return Check("api", "fail", f"{fx.base_url} does not answer as Flow does: {exc}")
    if not isinstance(me, dict) or "id" not in me:
        return Check("api", "fail", f"{fx.base_url} does not answer as Flow does: GET /me gave no user record")
    if me["id"] is None:
        return Check(
            "credentials",
            "fail",
            "the server took the request as anonymous (the token is invalid or expired); run 'flowxfer login'",
        )
    return Check("api", "ok", f"an authenticated request (GET /me) answered as Flow does, as {me.get('username')}")


def _clock(date_header: str | None) -> Check:
    if not date_header:
        return Check("clock", "warn", "the server sent no Date header: clock skew cannot be checked")
    try:
        server_time = email.utils.parsedate_to_datetime(date_header).timestamp()
    except (TypeError, ValueError):
        return Check("clock", "warn", f"unreadable Date header {date_header!r}")
    skew = time.time() - server_time
    text = f"this machine's clock is {abs(skew):.0f} s {'ahead of' if skew > 0 else 'behind'} the server's"
    if abs(skew) >= SKEW_FAIL:
        return Check("clock", "fail", text + ": login tokens (5 min) will look expired or valid wrongly; fix NTP")
    if abs(skew) >= SKEW_WARN:
        return Check("clock", "warn", text)
    return Check("clock", "ok", text if abs(skew) >= 2 else "in step with the server's (within 2 s)")


async def _journal(fx: Flowxfer) -> Check:
    """The journal ``--journal`` names, file or database: reachable, its schema current, intact, writable.

    Messages name the journal by its display form, which never shows a
    database password.
    """
    try:
        journal: Journal = await fx.journal()
        problems = await anyio.to_thread.run_sync(journal.check_integrity)
        unfinished = await anyio.to_thread.run_sync(journal.unfinished_transfers)
        if not problems and (journal.path is None or os.access(journal.path, os.W_OK)):
            # A write transaction that changes nothing: a read-only database user or file fails here.
            await anyio.to_thread.run_sync(journal.heartbeat_held, "doctor:write-probe")
    except JournalError as exc:
        return Check("journal", "fail", str(exc))
    if problems:
        return Check("journal", "fail", f"{journal.location} is damaged: {'; '.join(problems[:3])}")
    if journal.path is not None and not os.access(journal.path, os.W_OK):
        return Check("journal", "fail", f"{journal.path} is not writable")
    mine = [t for t in unfinished if t.server == fx.base_url]
    note = f"; {len(mine)} unfinished transfer(s) for 'flowxfer resume'" if mine else ""
    kind = f"{journal.location.backend}, schema version {SCHEMA_VERSION}, this host {journal.host!r}"
    return Check("journal", "ok", f"{journal.location} ({kind}) is healthy and writable{note}")


async def _disk(folder: Path) -> Check:
    def free() -> tuple[Path, int]:
        probe = folder
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        return probe, shutil.disk_usage(probe).free

    probe, available = await anyio.to_thread.run_sync(free)
    text = f"{available / 1024**3:.1f} GiB free in {probe.resolve()}"
    if available < LOW_DISK:
        return Check("disk", "warn", text + ": downloads may run out of space")
    if not os.access(probe, os.W_OK):
        return Check("disk", "fail", f"{probe} is not writable")
    return Check("disk", "ok", text)

"""Which server URLs the engine talks to: a module light enough for the CLI's start-up.

Kept apart from :mod:`._client` (which loads aiohttp) so that the console
script can check a URL before that import, with the very rule the client
applies (:mod:`._preconnect`).
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from ._errors import UsageError


def check_base_url(base_url: str, allow_insecure_http: bool) -> str:
    """Validate and normalise a server URL; plain http only to loopback unless allowed.

    :raises UsageError: not http(s), no host, or plain http to a remote host.
    """
    try:
        parts = urlsplit(base_url.strip())
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError as exc:  # "http://[::1", "http://host:99999"
        raise UsageError(f"bad server URL {base_url!r}: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"bad server URL {base_url!r}: expected https://host[/path]")
    if parts.scheme == "http" and not allow_insecure_http and not is_loopback(parts.hostname):
        raise UsageError(
            f"refusing plain http:// to {parts.hostname}: tokens would cross the network unencrypted; "
            "use https:// or pass --allow-insecure-http"
        )
    return base_url.strip().rstrip("/")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False

"""TLS trust for the engine's connections, and an aiohttp import that does not load the CA store at start-up.

Why: importing aiohttp builds two SSL contexts at module level
(``aiohttp.connector``), each loading the system's whole CA store: 60-120 ms
of every command's start-up (issue 20: the fixed cost per command), paid
even against a plain ``http://`` server on loopback. The engine never uses
those contexts: every ``https://`` connection of ours gets
:func:`verified_context`, built when the client opens, only for an https
server. So the CLI, in a process that is flowxfer's alone, imports aiohttp
with :func:`import_aiohttp_without_default_trust`.

Nothing in aiohttp is patched: OpenSSL reads its default CA locations from
``SSL_CERT_FILE``/``SSL_CERT_DIR`` when a context loads them, so those two
variables point at nothing for the length of the import and are put back
after. aiohttp's own contexts then trust no CA at all: a connection that fell
back on them would fail verification (fail closed), never go unverified.
"""

from __future__ import annotations

import os
import ssl
import sys
from pathlib import Path

__all__ = ["import_aiohttp_without_default_trust", "verified_context"]

#: Where OpenSSL looks for its default CA file and folder (read when a context loads them).
CA_VARIABLES = ("SSL_CERT_FILE", "SSL_CERT_DIR")


def import_aiohttp_without_default_trust() -> None:
    """Import aiohttp without its import-time CA loads. For a process flowxfer owns (the CLI's ``run``).

    Not for a library caller: another aiohttp user in the same process may
    rely on aiohttp's default contexts, which then trust nothing. Does nothing
    when aiohttp is imported already. Call it before any other thread starts:
    the environment is process-wide while the import runs.
    """
    if "aiohttp" in sys.modules:
        return
    saved = {name: os.environ.get(name) for name in CA_VARIABLES}
    os.environ.update(dict.fromkeys(CA_VARIABLES, os.devnull))
    try:
        import aiohttp  # noqa: F401
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def verified_context(ca_bundle: Path | None = None) -> ssl.SSLContext:
    """A context that verifies the server against ``ca_bundle``, else the system's CA store (read now).

    :raises OSError, ssl.SSLError: the bundle cannot be read or holds no certificate.
    """
    return ssl.create_default_context(cafile=str(ca_bundle) if ca_bundle is not None else None)

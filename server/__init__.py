"""The local Flow-compatible server: hosted Flow's API, its refusals, and our [ext] extras.

What this package offers:

- :class:`ServerConfig`: every setting and bound, with hosted Flow's defaults.
- :func:`create_app`: the aiohttp application for a config.
- :func:`serve_in_background`: ``async with serve_in_background(cfg) as url``
  runs it on the current loop (AppRunner + TCPSite) and yields the base URL.
- :func:`run`: serve until SIGINT/SIGTERM (what ``flowxfer serve`` calls).
- :class:`Admin`: offline user, group and project management on a root.
- :func:`load_catalog`: read a ``serve --catalog`` file (sample types,
  organisms, metadata attributes), :class:`CatalogError` if it is bad.

The protocol as implemented is documented in ``docs/protocol.md``. This
package never imports the engine (``flowxfer.transfer``) or the journal; it
shares facts with them only through :mod:`flowxfer.protocol`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import ssl
from collections.abc import AsyncIterator, Callable

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from ._admin import Admin, AdminError
from ._app import _AccessLog, _open_state, build_app, create_app
from ._catalog import Catalog, CatalogError, load_catalog
from ._config import ServerConfig

__all__ = [
    "Admin",
    "AdminError",
    "Catalog",
    "CatalogError",
    "ServerConfig",
    "create_app",
    "load_catalog",
    "run",
    "serve_in_background",
]

log = logging.getLogger("flowxfer.server")

#: Bounds on request heads (aiohttp's parser refuses longer ones with 400/431).
MAX_LINE_SIZE = 8190
MAX_FIELD_SIZE = 8190
MAX_HEADERS = 100


class _ClientErrorsWithoutTracebacks(logging.Filter):
    """aiohttp logs a traceback for requests its parser refuses (a NUL in a header...).

    Those are the client's fault and already answered with a 400: log one
    line instead, so a traceback in the log always means a bug of ours.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError) and 400 <= (exc.code or 0) < 500:
            log.info("refused a malformed request: %s", exc.message.strip().splitlines()[0] if exc.message else exc)
            return False
        return True


_HTTP_LOG = logging.getLogger("flowxfer.server.http")
_HTTP_LOG.addFilter(_ClientErrorsWithoutTracebacks())


def _ssl_context(config: ServerConfig) -> ssl.SSLContext | None:
    if config.tls_cert is None or config.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(config.tls_cert, config.tls_key)
    return context


@contextlib.asynccontextmanager
async def serve_in_background(config: ServerConfig) -> AsyncIterator[str]:
    """Serve ``config`` on the running loop; yields the base URL (``http://127.0.0.1:PORT``).

    Port 0 picks a free port. Everything is torn down on exit, including
    background archive jobs and worker threads.
    """
    state = await asyncio.to_thread(_open_state, config)
    app = build_app(state)
    runner = web.AppRunner(
        app,
        access_log_class=_AccessLog,
        handler_cancellation=False,
        max_line_size=MAX_LINE_SIZE,
        max_field_size=MAX_FIELD_SIZE,
        max_headers=MAX_HEADERS,
        read_bufsize=config.read_bufsize,
        logger=_HTTP_LOG,
    )
    await runner.setup()
    try:
        context = await asyncio.to_thread(_ssl_context, config)
        site = web.TCPSite(runner, config.host, config.port, ssl_context=context)
        await site.start()
        host, port = runner.addresses[0][:2]
        shown = f"[{host}]" if ":" in host else host
        yield f"{config.scheme}://{shown}:{port}"
    finally:
        await runner.cleanup()


def run(config: ServerConfig, on_listening: Callable[[str], None] | None = None) -> None:
    """Serve until SIGINT or SIGTERM, then shut down cleanly.

    :param on_listening: called once with the base URL when the socket is bound
        (``flowxfer serve`` prints ``listening on URL`` there).
    """

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with serve_in_background(config) as url:
            if on_listening is not None:
                on_listening(url)
            await stop.wait()
        log.info("stopped")

    asyncio.run(main())

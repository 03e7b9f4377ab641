"""Running the local Flow server for tests: in-process or as a real subprocess.

Stable API (other suites rely on it):

``async with running_server(root, *, users=None, rate_limits="off", access_ttl=300,
refresh_ttl=7*86400, job_ttl=3600, extensions=True, max_chunk_size=None) as srv:``
    The server in this process, on 127.0.0.1 with a free port, started with
    aiohttp's AppRunner/TCPSite (no task group is held across a fixture's
    ``yield``, pytest-asyncio#1191). ``srv.base_url`` (``http://127.0.0.1:PORT``),
    ``srv.root``, ``srv.users`` (``{name: password}``), ``srv.config``.
    ``users=None`` means :data:`DEFAULT_USERS`. Any further keyword is passed
    to :class:`flowxfer.server.ServerConfig` (e.g. ``pattern_timeout=0.5``).
    Password hashing uses a cheap scrypt cost (:data:`TEST_SCRYPT_N`).

``ServerProcess(root, *args, users=None, port=0, env=None)``
    ``flowxfer serve --root ROOT --port PORT --user ... *args`` as a real
    subprocess (rate limits default to ``off`` unless ``args`` name them).
    ``.start()`` waits for the ``listening on`` line and sets ``.base_url`` and
    ``.port``; ``.kill()`` sends SIGKILL and waits; ``.terminate()`` sends
    SIGTERM and waits (returns the exit code); ``.restart()`` starts it again on
    the same root and, where possible, the same port. A context manager (sync
    ``with`` and ``async with``; the async flavour does the blocking waits in a
    thread). ``.log_path`` holds its stderr.

``login(session, base_url, user, password) -> str``
    An access token from ``POST /login`` (aiohttp session).
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import anyio

from flowxfer.server import ServerConfig, serve_in_background

DEFAULT_USERS: dict[str, str] = {"alice": "alice-pw-1", "bob": "bob-pw-2", "carol": "carol-pw-3"}
#: Cheap password hashing for tests (the server's default is 2**14).
TEST_SCRYPT_N = 2**10


@dataclass
class RunningServer:
    base_url: str
    root: Path
    users: dict[str, str]
    config: ServerConfig = field(repr=False)


@contextlib.asynccontextmanager
async def running_server(
    root: Path,
    *,
    users: Mapping[str, str] | None = None,
    rate_limits: str = "off",
    access_ttl: float = 300,
    refresh_ttl: float = 7 * 86400,
    job_ttl: float = 3600,
    extensions: bool = True,
    max_chunk_size: int | None = None,
    **config: Any,
) -> AsyncIterator[RunningServer]:
    """The server in-process on a free loopback port (see the module docstring)."""
    chosen = dict(DEFAULT_USERS if users is None else users)
    settings: dict[str, Any] = {"scrypt_n": TEST_SCRYPT_N, **config}
    if max_chunk_size is not None:
        settings["max_chunk_size"] = max_chunk_size
    cfg = ServerConfig(
        root=Path(root),
        host="127.0.0.1",
        port=0,
        users=chosen,
        rate_limits=rate_limits,
        access_ttl=access_ttl,
        refresh_ttl=refresh_ttl,
        job_ttl=job_ttl,
        extensions=extensions,
        **settings,
    )
    async with serve_in_background(cfg) as url:
        yield RunningServer(url, Path(root), chosen, cfg)


async def login(session: aiohttp.ClientSession, base_url: str, user: str, password: str) -> str:
    """An access token for ``user`` (raises on refusal)."""
    async with session.post(f"{base_url}/login", json={"username": user, "password": password}) as resp:
        body = await resp.json()
        if resp.status != 200:
            raise AssertionError(f"login as {user} failed: {resp.status} {body}")
        return str(body["token"])


class ServerProcess:
    """``flowxfer serve`` as a real subprocess that can be killed and restarted."""

    START_TIMEOUT = 30.0

    def __init__(
        self,
        root: Path,
        *args: str,
        users: Mapping[str, str] | None = None,
        port: int = 0,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.root = Path(root)
        self.args = list(args)
        self.users = dict(DEFAULT_USERS if users is None else users)
        self.port = port
        self.env = dict(env) if env is not None else None
        self.base_url = ""
        self.log_path = self.root.parent / f"{self.root.name}.server.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def _command(self) -> list[str]:
        command = [
            sys.executable,
            "-c",
            "from flowxfer.cli import main; main()",
            "serve",
            "--root",
            str(self.root),
            "--port",
            str(self.port),
        ]
        for name, password in self.users.items():
            command += ["--user", f"{name}:{password}"]
        if not any(a.startswith("--rate-limits") for a in self.args):
            command += ["--rate-limits", "off"]
        return command + self.args

    def start(self) -> str:
        """Start and wait for ``listening on URL``; returns the base URL."""
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("already running")
        env = {**os.environ, **(self.env or {}), "PYTHONUNBUFFERED": "1"}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self._command(), stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, env=env
            )
        assert self.proc.stdout is not None
        line = self._first_line(self.proc.stdout)
        prefix = "listening on "
        if not line.startswith(prefix):
            self.kill()
            log_text = self.log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"server did not start: first line {line!r}; log:\n{log_text}")
        self.base_url = line[len(prefix) :].strip()
        self.port = int(self.base_url.rsplit(":", 1)[1])
        return self.base_url

    def _first_line(self, stream: Any) -> str:
        selector = selectors.DefaultSelector()
        selector.register(stream, selectors.EVENT_READ)
        deadline = time.monotonic() + self.START_TIMEOUT
        data = b""
        try:
            while not data.endswith(b"\n"):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not selector.select(remaining):
                    return data.decode(errors="replace")
                byte = os.read(stream.fileno(), 1)
                if not byte:
                    break
                data += byte
        finally:
            selector.close()
        return data.decode(errors="replace")

    def _reap(self) -> int | None:
        if self.proc is None:
            return None
        code = self.proc.wait(timeout=30)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return code

    def kill(self) -> None:
        """SIGKILL: the crash test's ``kill -9``."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self._reap()

    def terminate(self) -> int | None:
        """SIGTERM and wait; the exit code."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self._reap()

    def restart(self) -> str:
        """Start again on the same root and port (the old process must be gone)."""
        if self.proc is not None and self.proc.poll() is None:
            self.terminate()
        return self.start()

    def __enter__(self) -> ServerProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()

    async def __aenter__(self) -> ServerProcess:
        await anyio.to_thread.run_sync(self.start)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await anyio.to_thread.run_sync(self.kill)

    async def astart(self) -> str:
        return await anyio.to_thread.run_sync(self.start)

    async def akill(self) -> None:
        await anyio.to_thread.run_sync(self.kill)

    async def aterminate(self) -> int | None:
        return await anyio.to_thread.run_sync(self.terminate)

    async def arestart(self) -> str:
        return await anyio.to_thread.run_sync(self.restart)

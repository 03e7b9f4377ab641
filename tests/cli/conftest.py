"""Running the real ``flowxfer`` command as a user (or cron) does: a subprocess per command.

The server is the in-process local server (or a :class:`ServerProcess` where
it must die); the CLI runs as a child process with its own config folder and
journal under a tmp folder, so tests never touch the user's. Children are
started with anyio (never a blocking ``subprocess.run``): the in-process
server shares the test's event loop and must keep answering while a child
runs.

Every finished command is checked for a Python traceback on stderr: whatever
the input, the CLI must answer with a message and a documented exit code.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import anyio
from anyio.abc import Process

from tests.support.server import login

FLOWXFER = [sys.executable, "-c", "from flowxfer.cli import main; main()"]
KiB = 1024
MiB = 1024 * KiB


@dataclass
class Result:
    """A finished command: exit code, stdout and stderr as text."""

    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        """The ``--json`` document (the whole of stdout)."""
        return json.loads(self.stdout)

    def events(self) -> list[dict[str, Any]]:
        """``--log-format json`` lines of stderr."""
        return [json.loads(line) for line in self.stderr.splitlines() if line.startswith("{")]


def no_traceback(stderr: str) -> None:
    """Neither a Python traceback nor the CLI's last-resort "internal error" (a bug it caught)."""
    assert "Traceback" not in stderr and "internal error" not in stderr, stderr


@dataclass
class Cli:
    """``flowxfer`` against one server, with its own config dir and journal under ``home``."""

    base_url: str
    home: Path
    env_extra: dict[str, str] = field(default_factory=dict)

    @property
    def journal(self) -> Path:
        return self.home / "journal.db"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)  # the caller's FLOW_*/FLOWXFER_* are gone (tests/conftest.py)
        env.update(
            {
                "FLOW_API_URL": self.base_url,
                "FLOWXFER_CONFIG_DIR": str(self.home / "config"),
                "FLOWXFER_JOURNAL": str(self.journal),
                "XDG_STATE_HOME": str(self.home / "state"),
                "PYTHONUNBUFFERED": "1",
                **self.env_extra,
            }
        )
        return env

    async def run(self, *args: str, stdin: str | None = None, within: float = 60) -> Result:
        """Run one command to its end, within ``within`` seconds (no traceback allowed)."""
        with anyio.fail_after(within):
            done = await anyio.run_process(
                [*FLOWXFER, *args],
                input=stdin.encode() if stdin is not None else b"",
                check=False,
                env=self.env(),
            )
        result = Result(done.returncode, done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace"))
        no_traceback(result.stderr)
        return result

    async def login(self, user: str, password: str) -> None:
        result = await self.run("login", "-u", user, "--password-stdin", stdin=password + "\n")
        assert result.code == 0, result

    @asynccontextmanager
    async def start(self, *args: str) -> AsyncIterator[Running]:
        """Start a command and watch its stderr as it runs (for kills and signals)."""
        process = await anyio.open_process([*FLOWXFER, *args], env=self.env())
        running = Running(process)
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(running.pump_stderr)
                group.start_soon(running.pump_stdout)
                try:
                    yield running
                    with anyio.fail_after(60):
                        await process.wait()
                finally:
                    if process.returncode is None:
                        process.kill()
                        with anyio.CancelScope(shield=True):
                            await process.wait()
        finally:
            await process.aclose()
        no_traceback(running.stderr)


@dataclass
class Running:
    """A command in flight: its stderr lines as they come, and ways to end it."""

    process: Process
    stderr: str = ""
    stdout: str = ""
    moved: int = 0
    _changed: anyio.Event = field(default_factory=anyio.Event)

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stderr.splitlines() if line.startswith("{")]

    async def pump_stderr(self) -> None:
        assert self.process.stderr is not None
        pending = b""
        async for data in self.process.stderr:
            pending += data
            *lines, pending = pending.split(b"\n")
            for raw in lines:
                line = raw.decode(errors="replace")
                self.stderr += line + "\n"
                if line.startswith("{"):
                    event = json.loads(line)
                    if event.get("event") == "bytes_moved":
                        self.moved += int(event["nbytes"])
            self._changed.set()
            self._changed = anyio.Event()
        self.stderr += pending.decode(errors="replace")

    async def pump_stdout(self) -> None:
        assert self.process.stdout is not None
        async for data in self.process.stdout:
            self.stdout += data.decode(errors="replace")

    async def until(self, condition: Callable[[Running], bool], within: float = 30) -> None:
        """Wait until ``condition(self)`` holds (checked whenever stderr moves)."""
        with anyio.fail_after(within):
            while not condition(self):
                if self.process.returncode is not None:
                    raise AssertionError(
                        f"the command ended (code {self.process.returncode}) before the "
                        f"condition held:\n{self.stderr[-3000:]}"
                    )
                with anyio.move_on_after(0.05):
                    await self._changed.wait()

    async def until_moved(self, nbytes: int, within: float = 30) -> None:
        await self.until(lambda r: r.moved >= nbytes, within)

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    async def kill9(self) -> None:
        """``kill -9``: no handler runs, nothing is flushed."""
        self.process.send_signal(signal.SIGKILL)
        await self.process.wait()

    async def wait(self, within: float = 60) -> int:
        with anyio.fail_after(within):
            return await self.process.wait()

    def transfer_id(self) -> str:
        for event in self.events():
            if event.get("event") == "transfer_started":
                return str(event["transfer_id"])
        raise AssertionError(f"no transfer_started event:\n{self.stderr[-2000:]}")


async def server_bytes(base_url: str, password: str, data_id: str, filename: str, user: str = "alice") -> bytes:
    """What the server holds for ``data_id``, fetched directly (no engine involved)."""
    async with aiohttp.ClientSession() as session:
        token = await login(session, base_url, user, password)
        url = f"{base_url}/downloads/{data_id}/{filename}"
        async with session.get(url, headers={"Authorization": f"Bearer {token}"}) as response:
            assert response.status == 200, response.status
            return await response.read()

"""The console script's early handshake (issue 20): the first request goes on a socket opened before aiohttp loads.

The real console script (``flowxfer.cli.run``) runs in a subprocess against
the real server, behind a proxy that counts the TCP connections it accepts.
A probe in that subprocess lists, when ``aiohttp`` starts to be imported,
the process's TCP connections to the server's port (psutil): a connection
there means the handshake overlapped the imports; one accepted connection
in all means the request travelled on it. Where the handshake must not be
started (help, version, a proxy in the environment), neither happens; a
server that is down gets the very message and exit code it gets without it.
"""

from __future__ import annotations

import errno
import json
import select
import socket
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from flowxfer.cli import _exits
from flowxfer.transfer import _preconnect as preconnect
from tests.cli.conftest import Cli, no_traceback
from tests.security.test_transport import certs  # noqa: F401 - the test certificates (a fixture)
from tests.support.faultproxy import FaultProxy
from tests.support.server import ServerProcess, running_server
from tests.transfer.conftest import write_random

KiB = 1024

#: The console script, with probes: the TCP connections to PROBE_PORT when aiohttp's import begins,
#: and the sockets that called connect() to that port (the audit event).
_PROBED = """
import atexit, json, os, sys
import psutil
port = int(os.environ["PROBE_PORT"])
seen = {}
class Probe:
    def find_spec(self, name, path=None, target=None):
        if name == "aiohttp" and "at_aiohttp" not in seen:
            seen["at_aiohttp"] = [c.status for c in psutil.Process().net_connections("tcp")
                                  if c.raddr and c.raddr.port == port]
        return None
sys.meta_path.insert(0, Probe())
def audit(event, args):
    if event == "socket.connect" and args[1][1] == port:  # which socket objects connected to the server
        seen.setdefault("connects", []).append([type(args[0]).__name__, id(args[0])])
sys.addaudithook(audit)
atexit.register(lambda: print(json.dumps(seen), file=sys.stderr))
sys.argv[0] = "flowxfer"
from flowxfer.cli import run
run()
"""


async def _console(cli: Cli, port: int, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, Any]:
    """``flowxfer ARGS`` through the console script: exit code, stderr without the probe's line, what it saw."""
    with anyio.fail_after(60):
        done = await anyio.run_process(
            [sys.executable, "-c", _PROBED, "--no-progress", *args],
            env={**cli.env(), "PROBE_PORT": str(port), **(env or {})},
            check=False,
        )
    *lines, probe = done.stderr.decode().splitlines() or [""]
    stderr = "\n".join(lines)
    no_traceback(stderr)
    return done.returncode, stderr, json.loads(probe)


async def _settled(proxy: FaultProxy) -> int:
    """The connections the proxy accepted, once a connection still queued has had time to be accepted."""
    await anyio.sleep(0.3)
    return proxy.stats.connections


async def test_a_named_server_s_first_request_goes_on_the_early_connection(tmp_path: Path) -> None:
    """``localhost``: resolved once aiohttp is loaded, still the one connection of the command."""
    probe = write_random(tmp_path / "probe.bin", 4 * KiB, 5)
    async with running_server(tmp_path / "root") as srv:
        async with FaultProxy("127.0.0.1", int(srv.base_url.rsplit(":", 1)[1])) as proxy:
            cli = Cli(proxy.url.replace("127.0.0.1", "localhost"), tmp_path / "home")
            await cli.login("alice", srv.users["alice"])
            data_id = (await cli.run("--json", "upload", str(probe))).json()["files"][0]["id"]
            before = await _settled(proxy)
            code, stderr, seen = await _console(cli, proxy.port, "download", data_id, "-o", str(tmp_path / "out"))
            assert code == 0, stderr
            assert await _settled(proxy) - before == 1
            assert {tuple(c) for c in seen["connects"]} == {("EarlySocket", seen["connects"][0][1])}, seen
    assert (tmp_path / "out" / "probe.bin").read_bytes() == probe.read_bytes()


async def test_a_download_s_request_goes_on_the_connection_opened_before_the_imports(tmp_path: Path) -> None:
    probe = write_random(tmp_path / "probe.bin", 4 * KiB, 3)
    async with running_server(tmp_path / "root") as srv:
        async with FaultProxy("127.0.0.1", int(srv.base_url.rsplit(":", 1)[1])) as proxy:
            cli = Cli(proxy.url, tmp_path / "home")
            await cli.login("alice", srv.users["alice"])
            data_id = (await cli.run("--json", "upload", str(probe))).json()["files"][0]["id"]
            before = await _settled(proxy)

            code, stderr, seen = await _console(cli, proxy.port, "download", data_id, "-o", str(tmp_path / "out"))
            assert code == 0, stderr
            assert seen["at_aiohttp"], "no connection to the server before aiohttp's import"
            assert await _settled(proxy) - before == 1, "the request did not go on the early connection"
            assert {tuple(c) for c in seen["connects"]} == {("EarlySocket", seen["connects"][0][1])}, seen
    assert (tmp_path / "out" / "probe.bin").read_bytes() == probe.read_bytes()


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (("--version",), {}),
        (("--help",), {}),
        (("download", "--help"), {}),
        (("upload", "-h"), {}),
        (("download", "some-id", "--dry-run"), {}),
        (("jobs",), {}),
        (("sync", "no-such-folder"), {}),
        (("download", "some-id", "-o", "out"), {"HTTPS_PROXY": "http://127.0.0.1:9"}),
        (("download", "some-id", "-o", "out"), {"http_proxy": "http://127.0.0.1:9"}),
    ],
)
async def test_no_early_connection_where_it_is_not_certain_to_serve(
    tmp_path: Path, args: tuple[str, ...], env: dict[str, str]
) -> None:
    """Help, version, a dry run, a command that sends nothing; and a proxy in the environment."""
    async with running_server(tmp_path / "root") as srv:
        async with FaultProxy("127.0.0.1", int(srv.base_url.rsplit(":", 1)[1])) as proxy:
            cli = Cli(proxy.url, tmp_path / "home")
            seen = (await _console(cli, proxy.port, *args, env=env))[2]
            assert seen.get("at_aiohttp", []) == []  # --version and --help load no aiohttp at all
            if {"--version", "--help", "-h"}.intersection(args):
                assert await _settled(proxy) == 0


async def test_a_server_that_is_down_gets_the_same_message_and_exit_code(tmp_path: Path) -> None:
    """Compared with the same command where a proxy variable turns the early handshake off (the client ignores it)."""
    async with FaultProxy("127.0.0.1", 9) as placeholder:
        port = placeholder.port
    cli = Cli(f"http://127.0.0.1:{port}", tmp_path / "home")
    args = ("--max-attempts", "1", "--token", "an-api-key", "download", "some-id", "-o", str(tmp_path / "out"))
    early = await _console(cli, port, *args)
    plain = await _console(cli, port, *args, env={"HTTPS_PROXY": "http://127.0.0.1:9"})
    assert early[:2] == plain[:2]
    assert early[0] == _exits.FAILED, early
    assert f"Connect call failed ('127.0.0.1', {port})" in early[1], early


async def test_https_through_the_early_connection_is_still_verified(
    tmp_path: Path,
    certs: Path,  # noqa: F811 - the fixture
) -> None:
    src = write_random(tmp_path / "reads.bin", 4 * KiB, 4)
    args = ("--tls-cert", str(certs / "server.pem"), "--tls-key", str(certs / "server.key"))
    with ServerProcess(tmp_path / "root", *args) as server:
        cli = Cli(server.base_url, tmp_path / "home")
        bundle = ("--ca-bundle", str(certs / "ca.pem"))
        assert (await cli.run(*bundle, "login", "-u", "alice", "--password-stdin", stdin="alice-pw-1\n")).code == 0
        data_id = (await cli.run(*bundle, "--json", "upload", str(src))).json()["files"][0]["id"]

        untrusted = await _console(cli, server.port, "download", data_id, "-o", str(tmp_path / "no"))
        assert untrusted[2]["at_aiohttp"], "no early connection: this test would prove nothing"
        assert untrusted[0] != 0 and "TLS verification failed" in untrusted[1], untrusted
        assert not (tmp_path / "no").exists() or not any((tmp_path / "no").iterdir())

        trusted = await _console(cli, server.port, *bundle, "download", data_id, "-o", str(tmp_path / "out"))
        assert trusted[0] == 0, trusted
        assert trusted[2]["at_aiohttp"]
    assert (tmp_path / "out" / "reads.bin").read_bytes() == src.read_bytes()


# -- the mechanism, on real loopback sockets -------------------------------------------------


def _addr_info(port: int) -> tuple[Any, ...]:
    """What aiohttp hands its socket factory for ``127.0.0.1:port``."""
    return (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("127.0.0.1", port))


def _closed_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as gone:
        return int(gone.getsockname()[1])


def test_the_early_socket_serves_the_first_connection_to_its_address_only() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        assert preconnect.start("127.0.0.1", port)
        assert not preconnect.start("127.0.0.1", port), "one early socket a process"
        taken = preconnect.socket_factory(_addr_info(port))
        assert isinstance(taken, preconnect.EarlySocket)
        with taken:
            select.select([], [taken], [], 5)  # as the event loop waits for a connect under way
            # Linux answers the first connect after the handshake with 0, BSDs with EISCONN: both are success.
            assert taken.connect_ex(("127.0.0.1", port)) in (0, errno.EISCONN)
            taken.connect(("127.0.0.1", port))
            accepted, peer = listener.accept()
            accepted.close()
            assert peer == taken.getsockname()
        second = preconnect.socket_factory(_addr_info(port))
        with second:
            assert type(second) is socket.socket and second.getsockname()[1] == 0
        assert not preconnect.pending()


def test_a_handshake_that_failed_or_another_address_gets_a_new_socket() -> None:
    with socket.create_server(("127.0.0.1", 0)) as one, socket.create_server(("127.0.0.1", 0)) as other:
        listening = one.getsockname()[1]
        refused = _closed_port()
        for port, asked in ((refused, refused), (listening, other.getsockname()[1])):
            assert preconnect.start("127.0.0.1", port)
            early = preconnect._early
            assert early is not None
            select.select([], [early], [], 5)  # refused, or connected
            fresh = preconnect.socket_factory(_addr_info(asked))
            with fresh:
                assert type(fresh) is socket.socket
            assert early.fileno() == -1, "the early socket is closed, not leaked"


def test_a_name_is_resolved_and_connected_only_when_asked_and_never_late() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        assert preconnect.start("localhost", port)
        assert preconnect.pending() and preconnect._early is None, "a name waits for resolve_names()"
        resolver = preconnect.resolve_names()
        assert resolver is not None
        resolver.join(5)
        taken = preconnect.socket_factory(_addr_info(port))  # localhost is 127.0.0.1 (AI_ADDRCONFIG) here
        with taken:
            assert isinstance(taken, preconnect.EarlySocket)
            select.select([], [taken], [], 5)
            taken.connect(("127.0.0.1", port))
            accepted, peer = listener.accept()
            accepted.close()
            assert peer == taken.getsockname()

        # A connection made before the lookup ends: the late socket is closed, not kept.
        assert preconnect.start("localhost", port)
        with preconnect.socket_factory(_addr_info(port)) as fresh:
            assert type(fresh) is socket.socket
        resolver = preconnect.resolve_names()
        assert resolver is not None
        resolver.join(5)
        assert preconnect._early is None and not preconnect.pending()

"""The wire: no plain http off loopback, TLS verified by default, a CA bundle taken, serve on loopback.

Certificates are made for each test with the ``openssl`` command line (a CA,
and a server certificate it signs for ``IP:127.0.0.1``; also a self-signed
one). The real server serves HTTPS with them (``serve --tls-cert/--tls-key``)
as a subprocess, and the real CLI talks to it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import anyio
import psutil
import pytest

from tests.cli.conftest import Cli
from tests.support.server import ServerProcess
from tests.transfer.conftest import write_random

OPENSSL = shutil.which("openssl")


def _openssl(*args: str, cwd: Path) -> None:
    assert OPENSSL is not None, "the openssl command is needed to make test certificates"
    subprocess.run([OPENSSL, *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``ca.pem``; ``server.pem``/``server.key`` signed by it for 127.0.0.1; ``self.pem``/``self.key`` self-signed."""
    d = tmp_path_factory.mktemp("certs")
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n")
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=flowxfer test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        cwd=d,
    )
    _openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
        cwd=d,
    )
    _openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        cwd=d,
    )
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "self.key",
        "-out",
        "self.pem",
        "-days",
        "2",
        "-subj",
        "/CN=127.0.0.1",
        "-addext",
        "subjectAltName=IP:127.0.0.1",
        cwd=d,
    )
    return d


def _listening(pid: int) -> set[tuple[str, int]]:
    return {
        (c.laddr.ip, c.laddr.port)
        for c in psutil.Process(pid).net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN
    }


async def test_plain_http_only_to_loopback(tmp_path: Path) -> None:
    """``http://`` to a host that is not a loopback name or address is refused before any connection.

    The "remote" host is the IPv4-mapped form of 127.0.0.1 (``[::ffff:127.0.0.1]``): the
    client does not count it as loopback, yet it reaches this machine only, so
    ``--allow-insecure-http`` can show the refusal lifted without traffic leaving it.
    """
    with ServerProcess(tmp_path / "root") as server:
        remote = f"http://[::ffff:127.0.0.1]:{server.port}"
        cli = Cli(remote, tmp_path / "home")
        refused = await cli.run("login", "-u", "alice", "--password-stdin", stdin="alice-pw-1\n")
        assert refused.code == 2, refused
        assert "refusing plain http://" in refused.stderr and "--allow-insecure-http" in refused.stderr
        assert "POST /login" not in server.log_path.read_text()

        allowed = await cli.run(
            "--allow-insecure-http", "login", "-u", "alice", "--password-stdin", stdin="alice-pw-1\n"
        )
        assert allowed.code == 0, allowed.stderr
        assert "POST /login" in server.log_path.read_text()

        loopback = Cli(server.base_url, tmp_path / "home2")
        assert (await loopback.run("login", "-u", "alice", "--password-stdin", stdin="alice-pw-1\n")).code == 0


async def test_tls_verified_by_default_and_ca_bundle_accepted(tmp_path: Path, certs: Path) -> None:
    src = write_random(tmp_path / "src" / "reads.bin", 300_000, 1)
    args = ("--tls-cert", str(certs / "server.pem"), "--tls-key", str(certs / "server.key"))
    with ServerProcess(tmp_path / "root", *args) as server:
        assert server.base_url.startswith("https://127.0.0.1:")
        cli = Cli(server.base_url, tmp_path / "home")
        untrusted = await cli.run("login", "-u", "alice", "--password-stdin", stdin="alice-pw-1\n")
        assert untrusted.code != 0
        assert "TLS verification failed" in untrusted.stderr and "--ca-bundle" in untrusted.stderr
        assert "certificate" in untrusted.stderr.lower()
        assert "POST /login" not in server.log_path.read_text()

        bundle = ("--ca-bundle", str(certs / "ca.pem"))
        assert (await cli.run(*bundle, "login", "-u", "alice", "--password-stdin", stdin="alice-pw-1\n")).code == 0
        up = await cli.run(*bundle, "--json", "upload", str(src))
        assert up.code == 0, up.stderr
        (item,) = up.json()["files"]
        down = await cli.run(*bundle, "download", item["id"], "-o", str(tmp_path / "out"))
        assert down.code == 0, down.stderr
        assert (tmp_path / "out" / "reads.bin").read_bytes() == src.read_bytes()
        # The same trust through the environment variable.
        env = Cli(server.base_url, tmp_path / "home", env_extra={"FLOWXFER_CA_BUNDLE": str(certs / "ca.pem")})
        assert (await env.run("jobs")).code == 0


async def test_the_system_trust_store_is_read_when_the_client_opens_not_at_import(tmp_path: Path, certs: Path) -> None:
    """The console script imports aiohttp with the CA locations pointed at nothing (start-up, issue 20).

    The engine's own context must still load the system's trust store, here
    named by ``SSL_CERT_FILE`` as OpenSSL reads it: a CA trusted that way is
    trusted, without ``--ca-bundle``.
    """
    args = ("--tls-cert", str(certs / "server.pem"), "--tls-key", str(certs / "server.key"))
    with ServerProcess(tmp_path / "root", *args) as server:
        trusting = Cli(server.base_url, tmp_path / "home", env_extra={"SSL_CERT_FILE": str(certs / "ca.pem")})
        # The console script's entry (Cli runs main(), which leaves aiohttp's import alone).
        script = [sys.executable, "-c", "from flowxfer.cli import run; run()"]
        login_args = ["login", "-u", "alice", "--password-stdin"]
        login = await anyio.run_process([*script, *login_args], input=b"alice-pw-1\n", env=trusting.env(), check=False)
        assert login.returncode == 0, login.stderr.decode()
        jobs = await anyio.run_process([*script, "jobs"], env=trusting.env(), check=False)
        assert jobs.returncode == 0, jobs.stderr.decode()
        assert "POST /login" in server.log_path.read_text()


def test_the_ca_variables_are_the_caller_s_again_after_the_lean_import() -> None:
    probe = (
        "import os, sys; from flowxfer.transfer import import_aiohttp_without_default_trust as lean; lean(); "
        "print(os.environ.get('SSL_CERT_FILE'), os.environ.get('SSL_CERT_DIR', 'unset'), 'aiohttp' in sys.modules)"
    )
    env = {k: v for k, v in os.environ.items() if k != "SSL_CERT_DIR"} | {"SSL_CERT_FILE": "/somewhere/ca.pem"}
    seen = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert seen.stdout.split() == ["/somewhere/ca.pem", "unset", "True"]


async def test_self_signed_server_refused(tmp_path: Path, certs: Path) -> None:
    args = ("--tls-cert", str(certs / "self.pem"), "--tls-key", str(certs / "self.key"))
    with ServerProcess(tmp_path / "root", *args) as server:
        cli = Cli(server.base_url, tmp_path / "home")
        result = await cli.run("login", "-u", "alice", "--password-stdin", stdin="alice-pw-1\n")
        assert result.code != 0
        assert "TLS verification failed" in result.stderr and "self" in result.stderr.lower()
        # A bundle that does not vouch for this certificate changes nothing.
        other = await cli.run(
            "--ca-bundle", str(certs / "ca.pem"), "login", "-u", "alice", "--password-stdin", stdin="alice-pw-1\n"
        )
        assert other.code != 0 and "TLS verification failed" in other.stderr
        assert "POST /login" not in server.log_path.read_text()


def test_serve_binds_loopback_by_default_and_https_with_a_cert(tmp_path: Path, certs: Path) -> None:
    # ServerProcess passes no --host: the command's own default.
    with ServerProcess(tmp_path / "plain") as plain:
        assert plain.base_url.startswith("http://127.0.0.1:")
        assert plain.proc is not None
        assert _listening(plain.proc.pid) == {("127.0.0.1", plain.port)}
    args = ("--tls-cert", str(certs / "server.pem"), "--tls-key", str(certs / "server.key"))
    with ServerProcess(tmp_path / "tls", *args) as tls:
        assert tls.base_url.startswith("https://127.0.0.1:")
        assert tls.proc is not None
        assert _listening(tls.proc.pid) == {("127.0.0.1", tls.port)}
        # It speaks TLS (and only TLS) on that port: a plain request gets no HTTP answer.
        import ssl
        import urllib.error
        import urllib.request

        context = ssl.create_default_context(cafile=str(certs / "ca.pem"))
        with urllib.request.urlopen(f"{tls.base_url}/capabilities", context=context, timeout=10) as response:
            assert response.status == 200
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            urllib.request.urlopen(f"http://127.0.0.1:{tls.port}/capabilities", timeout=10)

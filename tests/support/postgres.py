"""A throwaway PostgreSQL cluster on a loopback port, and the pytest fixtures built on it.

The PostgreSQL journal is tested against a real server, never a mock: this
module runs ``initdb`` into a fresh temporary folder, starts ``postgres`` on a
free 127.0.0.1 port (no fsync: nothing here must survive a power cut) and
removes everything when the session ends. Tests may ``stop()`` and
``start()`` the cluster to see the journal ride through an outage; the port
stays the same so URLs handed out before still work.

PostgreSQL refuses to run as root, so when we are root every server binary
runs as the ``postgres`` user (``runuser -u postgres --``) and the folder is
handed to that user. The binaries are the newest under
``/usr/lib/postgresql/*/bin`` (Debian's layout), else those on ``PATH``.

Fixtures (registered in ``tests/conftest.py``):

- ``postgres_cluster``: one cluster per test session (per xdist worker);
- ``postgres_url``: a fresh, empty database of it for one test.

Without PostgreSQL the fixtures fail with a clear message: CI installs the
server (``.ci/run``), so a missing one is a broken set-up, not a reason to skip.
"""

from __future__ import annotations

import itertools
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

#: The server's user when we run as root (Debian's package creates it).
SERVER_USER = "postgres"

#: A server as a lab runs one: PostgreSQL's defaults, every commit durable unless its session says
#: otherwise (benchmarks compare the journal's backends with the settings each has in production).
DURABLE = {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on", "shared_buffers": "128MB"}

#: Settings for speed: a test cluster never needs to survive a crash of the machine.
_SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
    "shared_buffers": "32MB",
}


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries on this machine, or the cluster would not start."""


def _version_key(folder: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", folder.parent.name)) or (0,)


def find_binaries() -> Path:
    """The folder holding ``initdb``, ``pg_ctl`` and ``postgres``: Debian's newest, else ``PATH``'s."""
    candidates = sorted(
        (path.parent for path in Path("/usr/lib/postgresql").glob("*/bin/initdb")), key=_version_key, reverse=True
    )
    if candidates:
        return candidates[0]
    on_path = shutil.which("initdb")
    if on_path is not None:
        return Path(on_path).resolve().parent
    raise PostgresUnavailable(
        "no PostgreSQL server binaries: neither /usr/lib/postgresql/*/bin/initdb nor initdb on PATH "
        "(install Debian's postgresql package: .ci/run does)"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresCluster:
    """One throwaway cluster: ``start()``, ``url``, ``new_database()``, ``stop()``, ``close()``.

    Use as a context manager (started on entry, removed on exit) or call the
    methods directly. ``stop()``/``start()`` may be called any number of
    times in between; the port and the databases are kept.
    """

    def __init__(self, binaries: Path | None = None, settings: Mapping[str, str] | None = None) -> None:
        """``settings`` override the server's (``_SETTINGS``: fast, not crash-safe), e.g. :data:`DURABLE`."""
        self.binaries = binaries if binaries is not None else find_binaries()
        self.settings = {**_SETTINGS, **(settings or {})}
        self._as_root = os.geteuid() == 0
        self.root = Path(tempfile.mkdtemp(prefix="flowxfer-pg-"))
        if self._as_root:
            # The data folder must belong to the server's user, and so must its parent for the socket.
            user = pwd.getpwnam(SERVER_USER)
            os.chown(self.root, user.pw_uid, user.pw_gid)
        self.data = self.root / "data"
        self.port = _free_port()
        self._initialised = False
        self._running = False
        self._names = itertools.count(1)
        self._password_roles: dict[str, str] = {}

    @property
    def url(self) -> str:
        """The ``postgres`` database of the cluster, as the superuser, over TCP."""
        return self.url_for("postgres")

    def url_for(self, database: str) -> str:
        return f"postgresql://{SERVER_USER}@127.0.0.1:{self.port}/{database}"

    @property
    def running(self) -> bool:
        return self._running

    def _run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        command = [str(self.binaries / argv[0]), *argv[1:]]
        if self._as_root:
            command = ["runuser", "-u", SERVER_USER, "--", *command]
        # cwd: the server's user may not be able to read the caller's working folder.
        try:
            result = subprocess.run(command, cwd=self.root, capture_output=True, text=True, timeout=120)
        except OSError as exc:
            raise PostgresUnavailable(f"{' '.join(command)}: {exc}") from exc
        if result.returncode != 0:
            output = result.stdout + result.stderr
            raise PostgresUnavailable(f"{' '.join(command)} failed ({result.returncode}):\n{output}")
        return result

    def _initdb(self) -> None:
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            SERVER_USER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        )
        self._initialised = True

    def start(self) -> None:
        """Start the server (running ``initdb`` the first time) and wait until it accepts connections."""
        if self._running:
            return
        if not self._initialised:
            self._initdb()
        options = " ".join(
            [f"-p {self.port}", f"-k {self.root}", *(f"-c {name}={value}" for name, value in self.settings.items())]
        )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-o", options, "-w", "start")
        self._running = True

    def stop(self) -> None:
        """Stop the server at once (``fast``: open sessions are cut, as in an outage)."""
        if not self._running:
            return
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        self._running = False

    def new_database(self) -> str:
        """A fresh empty database of the cluster; its URL."""
        name = f"test_{next(self._names)}"
        with psycopg.connect(self.url, autocommit=True) as connection:
            # FILE_COPY: for a near-empty template, copying the folder beats WAL-logging every page.
            connection.execute(f"CREATE DATABASE {name} STRATEGY FILE_COPY")
        return self.url_for(name)

    def add_password_role(self, role: str, password: str) -> str:
        """A role that must log in with ``password`` over TCP, owning a database of its name; that name.

        Every other role stays trusted (``initdb --auth=trust``), so the session's cluster serves
        both. Idempotent for the same password. ``pg_ctl reload`` only signals the server: the
        rule is known to be in force once a login without the password is refused.
        """
        known = self._password_roles.get(role)
        if known is not None:
            if known != password:
                raise ValueError(f"role {role!r} already has another password")
            return role
        with psycopg.connect(self.url, autocommit=True) as connection:
            connection.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(role), sql.Literal(password))
            )
            connection.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(role), sql.Identifier(role))
            )
        hba = self.data / "pg_hba.conf"
        hba.write_text(f"host all {role} 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
        self._run("pg_ctl", "-D", str(self.data), "reload")
        deadline = time.monotonic() + 30
        while True:
            try:
                psycopg.connect(f"postgresql://{role}@127.0.0.1:{self.port}/{role}", connect_timeout=5).close()
            except psycopg.OperationalError as exc:
                if "password" not in str(exc):
                    raise
                break  # no password, refused: the rule is in force
            if time.monotonic() > deadline:
                raise PostgresUnavailable(f"the server never read its pg_hba.conf's rule for {role!r}")
            time.sleep(0.05)
        self._password_roles[role] = password
        return role

    def close(self) -> None:
        """Stop the server and remove every file of the cluster."""
        try:
            if self._running:
                self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PostgresCluster:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """One PostgreSQL cluster for the session; fails (never skips) when PostgreSQL is missing."""
    try:
        cluster = PostgresCluster().__enter__()
    except PostgresUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def postgres_url(postgres_cluster: PostgresCluster) -> str:
    """A fresh empty database for one test; the cluster is (re)started if a test left it stopped."""
    postgres_cluster.start()
    return postgres_cluster.new_database()

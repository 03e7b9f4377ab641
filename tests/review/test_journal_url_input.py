"""``--journal`` values a user gets wrong: one clear line and the documented exit code, never a traceback.

``tests/journal/test_location.py`` and ``tests/fleet/test_journal_url.py``
cover unknown schemes, bad ports, missing servers and a missing database.
Not covered were a malformed host part (urllib raises its own ValueError), an
upper-case scheme (accepted by the parser, then handed to libpq as written), a
wrong or missing password, and other mistakes libpq finds before it sends a
byte: none of them passes by waiting, so each is a usage error (exit 2), not
"the journal is unreachable, try again later" (exit 75), which a cron job
would retry for ever.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flowxfer.journal import JournalLocationError, parse_journal_location
from tests.cli.conftest import Cli
from tests.support.postgres import PostgresCluster
from tests.support.server import RunningServer

PASSWORD = "Zs3cr3t-review"

#: A port nothing listens on: a TCP port of our own, bound and closed, is unlikely to be reused at once.
CLOSED = "postgresql://u@127.0.0.1:1/db"

#: Seconds a usage error may take: the old open waited for its pool's timeout (10 s for ``jobs``)
#: before it asked the server why; a refusal is one round trip (the rest is the CLI starting).
AT_ONCE = 8.0


@given(rest=st.text(alphabet="[]:@/?=&%.,0123456789abcdefuvxyz-", max_size=30))
def test_any_postgresql_url_parses_or_is_a_journal_error(rest: str) -> None:
    """Whatever follows the scheme, the parser answers or raises its own error (the CLI's exit 2)."""
    for scheme in ("postgresql://", "postgres://"):
        try:
            parse_journal_location(scheme + rest)
        except JournalLocationError:
            pass


@pytest.mark.parametrize("url", ["postgresql://[::1", "postgres://u@[zz]/db"])
async def test_a_malformed_host_is_a_usage_error(server: RunningServer, tmp_path: Path, url: str) -> None:
    result = await Cli(server.base_url, tmp_path / "home").run("--journal", url, "jobs")
    assert result.code == 2, result
    # click's usage error, as for every bad option: "Usage:", "Try ...", then one "Error:" line
    last = result.stderr.strip().splitlines()[-1]
    assert "Traceback" not in result.stderr and last.startswith("Error:") and "journal" in last, result.stderr


async def test_an_upper_case_scheme_means_the_same_server(server: RunningServer, tmp_path: Path) -> None:
    """``SQLITE:///`` works (test_location); ``POSTGRESQL://`` must reach the same server as the lower case."""
    cli = Cli(server.base_url, tmp_path / "home")
    lower = await cli.run("--journal", CLOSED, "jobs")
    upper = await cli.run("--journal", CLOSED.replace("postgresql", "POSTGRESQL"), "jobs")
    assert lower.code == 75 and "refused" in lower.stderr.lower(), lower
    assert (upper.code, "refused" in upper.stderr.lower()) == (75, True), upper


async def test_a_setting_libpq_refuses_is_a_usage_error(server: RunningServer, tmp_path: Path) -> None:
    """``sslmode=bogus`` fails before any connection: waiting cannot help, so exit 2, not 75."""
    began = time.monotonic()
    result = await Cli(server.base_url, tmp_path / "home").run("--journal", CLOSED + "?sslmode=bogus", "jobs")
    assert result.code == 2, result
    assert time.monotonic() - began < AT_ONCE
    assert "sslmode" in result.stderr, result.stderr


@pytest.fixture
def password_cluster(postgres_cluster: PostgresCluster) -> PostgresCluster:
    """The session's cluster (which trusts everyone else) with a role ``pw`` that must give a password."""
    postgres_cluster.start()
    postgres_cluster.add_password_role("pw", PASSWORD)
    return postgres_cluster


def _url(cluster: PostgresCluster, password: str | None) -> str:
    who = "pw" if password is None else f"pw:{password}"
    return f"postgresql://{who}@127.0.0.1:{cluster.port}/pw"


async def test_the_right_password_opens_the_journal(
    server: RunningServer, tmp_path: Path, password_cluster: PostgresCluster
) -> None:
    result = await Cli(server.base_url, tmp_path / "home").run("--journal", _url(password_cluster, PASSWORD), "jobs")
    assert result.code == 0, result
    assert PASSWORD not in result.stdout + result.stderr


async def test_a_wrong_password_is_a_usage_error_that_never_shows_it(
    server: RunningServer, tmp_path: Path, password_cluster: PostgresCluster
) -> None:
    cli = Cli(server.base_url, tmp_path / "home")
    await cli.login("alice", server.users["alice"])  # doctor's other checks pass: only the journal fails
    for args in (["jobs"], ["--json", "doctor", "-o", str(tmp_path)]):
        began = time.monotonic()
        result = await cli.run("--journal", _url(password_cluster, "Zwrong-pw"), *args)
        took = time.monotonic() - began
        assert result.code == 2, (args, result)
        assert took < AT_ONCE, (args, took)  # a usage error, not a connection waited for
        assert "password authentication failed" in result.stdout + result.stderr, result
        assert "Zwrong-pw" not in result.stdout + result.stderr and "***" in result.stdout + result.stderr


async def test_a_missing_password_is_a_usage_error(
    server: RunningServer, tmp_path: Path, password_cluster: PostgresCluster
) -> None:
    """libpq says "no password supplied" without a FATAL from the server: still not an outage."""
    began = time.monotonic()
    result = await Cli(server.base_url, tmp_path / "home").run("--journal", _url(password_cluster, None), "jobs")
    assert result.code == 2, result
    assert time.monotonic() - began < AT_ONCE
    assert "password" in result.stderr, result.stderr

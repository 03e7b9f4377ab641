"""Fixtures shared by every suite: a local Flow server on loopback.

``server``: the in-process server (users alice/bob/carol, passwords in
``tests.support.server.DEFAULT_USERS``, rate limits off), function scope.
``server_root``: a fresh root folder for it (a tmp path).
Every test runs without ``FLOW_*`` and ``FLOWXFER_*`` variables but the
suite's own knobs (:data:`SUITE_KNOBS`): a developer's ``FLOW_API_TOKEN`` for
hosted Flow or ``FLOWXFER_LOG_FORMAT=json`` must not change what a test sees,
and a variable the product learns to read later is covered without a list
to keep in step. Nor does a test see the developer's home: ``HOME`` is a
fresh folder and the ``XDG_*`` base directories are unset, so a saved
``flowxfer login`` or the official CLI's ``~/.config/flow/api-token`` never
becomes a test's credential (a test that sets ``HOME`` itself still wins,
and everything follows it).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from benchmarks._common import compile_sources
from tests.support.server import RunningServer, running_server

#: The files whose tests take longest (CI's ``--durations``: fleet takeovers and TTLs, kill -9 loops,
#: the README's runs, many-process CLI runs), longest first; the last four only when the machine is
#: loaded. They run before the rest: ``--dist worksteal`` hands each worker half of the collection
#: in order and lets an idle worker take the tail of the other's queue, so the run should end on
#: short tests, not on one worker's 30 s test while the other idles.
#: tests/support_tests/test_suite_order.py keeps every entry a real file.
SLOW_FIRST = (
    "tests/fleet/test_takeover.py",
    "tests/chaos/test_crash_consistency.py",
    "tests/fleet/test_frozen_host.py",
    "tests/fleet/test_fleet_runs.py",
    "tests/test_readme.py",
    "tests/fleet/test_outage.py",
    "tests/fleet/test_lost_lease_stops.py",
    "tests/cli/test_cli_executions.py",
    "tests/load/test_load.py",
    "tests/security/test_secrets.py",
    "tests/cli/test_cli_exit_codes.py",
    "tests/samples/test_samples_upload_cli.py",
    "tests/fleet/test_sync_paths.py",
    "tests/transfer/test_engine.py",
    "tests/server/test_crash_samples.py",
    "tests/review/test_database_down_at_start.py",
    "tests/review/test_takeover_changed.py",
    "tests/fleet/test_lease_rules.py",
    "tests/fleet/test_journal_url.py",
    "tests/fleet/test_migrate.py",
    "tests/cli/test_server_choice.py",
    "tests/security/test_auth.py",
)


def pytest_configure(config: pytest.Config) -> None:
    """Byte-compile flowxfer before any test starts a CLI or server process (the controller only).

    The suite installs flowxfer editable, which writes no ``.pyc`` files, and
    where ``PYTHONDONTWRITEBYTECODE`` is set (as on CI's machine) no process
    ever writes them: every ``flowxfer`` a test started compiled our modules
    again, ~0.2 s of a 4 KiB download's ~0.55 s, over a thousand times a run.
    An installed flowxfer (a wheel) starts precompiled; so do the tests' now.
    """
    if not hasattr(config, "workerinput"):
        compile_sources()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """:data:`SLOW_FIRST`'s files first, in its order; every file keeps its own tests' order (a stable sort)."""
    rank = {path: index for index, path in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(SLOW_FIRST)))


#: ``postgres_cluster`` / ``postgres_url``: a throwaway PostgreSQL cluster (tests/support/postgres.py).
pytest_plugins = ["tests.support.postgres"]


@pytest.fixture
def server_root(tmp_path: Path) -> Path:
    return tmp_path / "flow-root"


@pytest.fixture
async def server(server_root: Path) -> AsyncIterator[RunningServer]:
    async with running_server(server_root) as srv:
        yield srv


#: Variables the test suite itself reads (how long the long runs are, where figures go); they stay.
SUITE_KNOBS = frozenset(
    {
        "FLOWXFER_FIGURES",
        "FLOWXFER_CRASH_KILLS",
        "FLOWXFER_CHAOS_SEEDS",
        "FLOWXFER_TEST_FALLBACKS",
        "FLOWXFER_RAW_EXAMPLES",
        "FLOWXFER_FUZZ_EXAMPLES",
    }
)


@pytest.fixture(autouse=True)
def _without_the_callers_flowxfer_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in list(os.environ):
        if name.startswith(("FLOW_", "FLOWXFER_")) and name not in SUITE_KNOBS:
            monkeypatch.delenv(name)
    yield


#: The XDG base directories; unset, each defaults to a folder under ``HOME``.
XDG_DIRS = ("XDG_CONFIG_HOME", "XDG_STATE_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME")


@pytest.fixture(autouse=True)
def _without_the_callers_home(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    monkeypatch.setenv("HOME", str(tmp_path_factory.mktemp("home")))
    for name in XDG_DIRS:
        monkeypatch.delenv(name, raising=False)

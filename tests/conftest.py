"""Fixtures shared by every suite: a local Flow server on loopback.

``server``: the in-process server (users alice/bob/carol, passwords in
``tests.support.server.DEFAULT_USERS``, rate limits off), function scope.
``server_root``: a fresh root folder for it (a tmp path).
Every test runs without ``FLOW_*`` and ``FLOWXFER_*`` variables but the
suite's own knobs (:data:`SUITE_KNOBS`): a developer's ``FLOW_API_TOKEN`` for
hosted Flow or ``FLOWXFER_LOG_FORMAT=json`` must not change what a test sees,
and a variable the product learns to read later is covered without a list
to keep in step.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.support.server import RunningServer, running_server

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

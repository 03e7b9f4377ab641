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

from tests.support.server import RunningServer, running_server


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

"""Fixtures shared by every suite: a local Flow server on loopback.

``server``: the in-process server (users alice/bob/carol, passwords in
``tests.support.server.DEFAULT_USERS``, rate limits off), function scope.
``server_root``: a fresh root folder for it (a tmp path).
Every test runs without the product's own environment variables
(:data:`PRODUCT_VARIABLES`): a developer's ``FLOW_API_TOKEN`` for hosted Flow
or ``FLOWXFER_LOG_FORMAT=json`` must not change what a test sees.
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


#: What flowxfer itself reads from the environment (the suite's own knobs, such as
#: ``FLOWXFER_CRASH_KILLS``, are not among them and stay).
PRODUCT_VARIABLES = ("FLOW_API_URL", "FLOW_API_TOKEN", "FLOW_PASSWORD", "FLOWXFER_CONFIG_DIR", "FLOWXFER_JOURNAL",
                     "FLOWXFER_CA_BUNDLE", "FLOWXFER_LOG_FORMAT", "FLOWXFER_MAX_ATTEMPTS",
                     "FLOWXFER_PROGRESS_INTERVAL")


@pytest.fixture(autouse=True)
def _without_the_callers_flowxfer_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in PRODUCT_VARIABLES:
        if name in os.environ:
            monkeypatch.delenv(name)
    yield

"""Fixtures shared by every suite: a local Flow server on loopback.

``server``: the in-process server (users alice/bob/carol, passwords in
``tests.support.server.DEFAULT_USERS``, rate limits off), function scope.
``server_root``: a fresh root folder for it (a tmp path).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
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

"""The journal suite runs against both backends: ``journal`` is an SQLite file, then a PostgreSQL database.

``journal_location``: where a fresh journal goes (a path, or the URL of a new
database of the session's throwaway cluster, tests/support/postgres.py);
tests that open a second :class:`Journal` on the same journal (another
process, another host) open ``journal.location``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from flowxfer.journal import Journal


@pytest.fixture(params=["sqlite", "postgresql"])
def journal_location(request: pytest.FixtureRequest, tmp_path: Path) -> Path | str:
    if request.param == "sqlite":
        return tmp_path / "state" / "journal.db"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def journal(journal_location: Path | str) -> Iterator[Journal]:
    j = Journal.open(journal_location)
    yield j
    j.close()

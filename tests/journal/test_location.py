"""What a ``--journal`` value names: a path, an SQLite URL, a PostgreSQL URL, or an error; passwords never shown."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flowxfer.journal import (
    Journal,
    JournalError,
    JournalLocationError,
    JournalUnavailableError,
    default_journal_path,
    mask_password,
    parse_journal_location,
)
from tests.support.postgres import PostgresCluster


def test_none_is_the_default_path() -> None:
    where = parse_journal_location(None)
    assert where.backend == "sqlite" and where.path == default_journal_path()


def test_a_plain_string_is_a_path_and_a_path_object_is_never_a_url() -> None:
    assert parse_journal_location("state/j.db").path == Path("state/j.db")
    assert parse_journal_location("/abs/j.db").path == Path("/abs/j.db")
    # A Path is what the caller says it is, even with a colon in it.
    assert parse_journal_location(Path("postgresql:x")).path == Path("postgresql:x")


def test_sqlite_urls_follow_sqlalchemy() -> None:
    assert parse_journal_location("sqlite:///relative/x.db").path == Path("relative/x.db")
    assert parse_journal_location("sqlite:////abs/x.db").path == Path("/abs/x.db")
    assert parse_journal_location("SQLITE:///x.db").backend == "sqlite"


@pytest.mark.parametrize("bad", ["sqlite:x.db", "sqlite://host/x.db", "sqlite:///", "sqlite:"])
def test_malformed_sqlite_urls_are_refused(bad: str) -> None:
    with pytest.raises(JournalLocationError, match="sqlite:///"):
        parse_journal_location(bad)


@pytest.mark.parametrize("url", ["postgresql://u@db.lab/flow", "postgres://u@db.lab:5433/flow"])
def test_postgresql_urls(url: str) -> None:
    where = parse_journal_location(url)
    assert where.backend == "postgresql" and where.url == url and where.path is None


@pytest.mark.parametrize("url", ["mysql://u@h/db", "http://h/j.db", "postgresq://u@h/db", "file:///tmp/j.db"])
def test_an_unknown_scheme_is_a_journal_error_naming_it(url: str) -> None:
    with pytest.raises(JournalLocationError, match="unknown scheme") as info:
        parse_journal_location(url)
    assert isinstance(info.value, JournalError)  # the CLI maps JournalError to exit 2
    with pytest.raises(JournalLocationError):
        Journal.open(url)


def test_a_postgresql_url_without_a_server_is_refused() -> None:
    with pytest.raises(JournalLocationError, match="names no server"):
        parse_journal_location("postgresql:db")


@pytest.mark.parametrize("port", ["99999", "0x10", "-1"])
def test_a_postgresql_port_that_is_no_port_is_refused(port: str) -> None:
    with pytest.raises(JournalLocationError, match="port must be a number"):
        parse_journal_location(f"postgresql://u@127.0.0.1:{port}/db")
    parse_journal_location(f"postgresql://u@h1:5432,h2:{port}/db")  # several hosts: libpq judges them


_secret = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789!$&'()*+,;=-._~", min_size=6, max_size=20).map(
    lambda s: "Zq" + s  # never a substring of the rest of the URL
)


@given(secret=_secret, scheme=st.sampled_from(["postgresql", "postgres", "mysql", "redis"]))
def test_a_password_never_shows(secret: str, scheme: str) -> None:
    for url in (f"{scheme}://alice:{secret}@db.lab:5432/flow", f"{scheme}://alice@db.lab/flow?password={secret}"):
        assert secret not in mask_password(url)
        try:
            where = parse_journal_location(url)
        except JournalLocationError as exc:
            assert secret not in str(exc)
        else:
            assert secret not in str(where) and secret not in repr(where) and where.url == url


@given(path=st.text(min_size=1).filter(lambda s: ":" not in s and "\x00" not in s))
def test_a_string_without_a_scheme_is_that_path(path: str) -> None:
    assert parse_journal_location(path).path == Path(path)


def test_an_open_journal_and_its_errors_hide_the_password(postgres_cluster: PostgresCluster) -> None:
    url = postgres_cluster.new_database().replace("postgres@", "postgres:Zsecret42@")  # trust auth ignores it
    with Journal.open(url, connect_timeout=2) as journal:
        assert "Zsecret42" not in repr(journal) and "Zsecret42" not in str(journal.location)
        postgres_cluster.stop()
        try:
            with pytest.raises(JournalUnavailableError) as info:
                journal.list_transfers()
            assert "Zsecret42" not in str(info.value) and "postgres:***@" in str(info.value)
        finally:
            postgres_cluster.start()

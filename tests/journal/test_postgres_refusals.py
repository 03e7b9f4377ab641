"""Which refusals of a PostgreSQL login are waited out (a server busy or restarting) and which end the run.

Since an outage's end is probed with one direct connection before each call
(:meth:`PostgresBackend._connect_once`), a refusal taken for a lasting one
turns a fleet's reconnecting hosts into exit 2s mid-run, instead of waits.
libpq gives no SQLSTATE for a login refusal: only the server's words.
"""

from __future__ import annotations

import pytest

from flowxfer.journal._postgres import _refused_at_login

_AT = 'connection failed: connection to server at "127.0.0.1", port 5432 failed: FATAL:  '


@pytest.mark.parametrize(
    "words",
    [
        "the database system is starting up",
        "the database system is shutting down",
        "the database system is in recovery mode",
        "sorry, too many clients already",
        # SQLSTATE 53300 too: the last slots kept for superusers (PostgreSQL <= 15, then 16's two).
        "remaining connection slots are reserved for non-replication superuser connections",
        "remaining connection slots are reserved for roles with the SUPERUSER attribute",
        'remaining connection slots are reserved for roles with privileges of the "pg_use_reserved_connections" role',
    ],
)
def test_a_busy_or_restarting_server_s_refusal_is_waited_out(words: str) -> None:
    assert not _refused_at_login(_AT + words)


@pytest.mark.parametrize(
    "words",
    [
        'password authentication failed for user "flow"',
        'role "flow" does not exist',
        'database "flowjournal" does not exist',
    ],
)
def test_a_refusal_that_waiting_will_not_mend_ends_the_run(words: str) -> None:
    assert _refused_at_login(_AT + words)

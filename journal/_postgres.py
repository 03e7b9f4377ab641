"""The PostgreSQL backend: a journal a fleet of hosts shares (psycopg 3, a connection pool).

Each write transaction takes a pooled connection; rows a transaction reads
to decide on are locked (``SELECT ... FOR UPDATE``), and decisions about
rows that may not exist yet (a lease, a transfer for a command, a bucket
budget) take a transaction-scoped advisory lock on their name, since a row
lock cannot lock a row that is not there. Migrations run under an advisory
lock too, so hosts starting at once on an empty database create the schema
once; ``schema_migrations`` records each version applied.

A batch of progress (:meth:`Journal.commit`) is a *blind* transaction: its
statements are queued and sent when its block ends, as one statement where
they can be (data-modifying CTEs), else one pipeline with one sync, with no
``BEGIN``/``COMMIT``: one round trip, one implicit transaction. Its state
checks run in the server (:meth:`_PostgresTransaction.refuse_if`), and its
commit does not wait for the WAL flush (``synchronous_commit`` off for that
transaction alone): SQLite's WAL with ``synchronous=NORMAL`` does not either,
and a batch lost to a power cut costs a refetch, never a hole, since the data
it vouches for was synced first. Leases and every other transaction stay
synchronous. At one chunk a commit the Python around that round trip cost as
much as the round trip itself, so a batch goes on a connection kept for
batches (not taken from the pool and given back each time), and its one
statement goes through libpq directly (:func:`_send_prepared`), not through
psycopg's cursor: the same statement, parameters and plan, ~100 µs less a commit.

A server that is down or restarting raises :class:`JournalUnavailableError`
from whichever call met it, after at most ``connect_timeout``; while it stays
away, each later call tries one direct connection first, so a server whose
port refuses connections fails it at once (see :meth:`PostgresBackend._current_pool`). The pool
checks a connection before lending it (the batches' kept one too, when it has
been idle: :meth:`PostgresBackend._writer_connection`), and after an outage the next call
starts a fresh pool (a pool whose connections failed retries them with an
exponential backoff: it would stay away for seconds after the server is
back), so the same journal object works again as soon as the server does.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import re
import threading
import time
import weakref
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import psycopg
from psycopg import generators, pq
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from ._backend import Params, Transaction
from ._errors import (
    JournalBusyError,
    JournalCorruptError,
    JournalError,
    JournalUnavailableError,
    JournalVersionError,
)
from ._location import JournalLocation, mask_password
from ._schema import POSTGRES_MIGRATIONS, SCHEMA_VERSION, split_sql
from ._states import IllegalTransition

#: Strings and quoted names pass through; ``?`` and ``:name`` become psycopg's placeholders; a
#: literal ``%`` is doubled, in a string too (psycopg reads any ``%`` as a placeholder's start, even
#: in ``LIKE 'a%'``).
_TOKENS = re.compile(r"""('(?:[^']|'')*'|"[^"]*")|(\?)|(?<![:\w]):([A-Za-z_]\w*)|(%)""")


#: A session idle this long inside a transaction is ended by the server (its host is gone or stuck).
_IDLE_IN_TRANSACTION_MS = 120_000

#: Seconds a connection that just worked is lent without a check (see ``_check_connection``).
_TRUSTED_FOR = 2.0

#: Statements with more parameters than this are not prepared: they are the long ``IN (...)`` lists
#: of bulk lookups, a new text per length, and PostgreSQL's generic plan for one (chosen after a few
#: runs of a prepared statement) made a 10,000-file inventory lookup ten times slower.
_PREPARE_AT_MOST = 32

#: Starts the message of a refusal (:meth:`_PostgresTransaction.refuse_if`) inside a server's error.
_REFUSED = "flowxfer refused: "

#: A blind transaction's first statement: its commit returns before its WAL is flushed.
_RELAXED_COMMIT = "SELECT set_config('synchronous_commit', 'off', true)"


@functools.lru_cache(maxsize=2048)
def _statement(sql: str) -> tuple[str, bool | None]:
    """``sql`` as psycopg takes it, and whether it may be prepared (``None``: psycopg's default)."""
    return to_pyformat(sql), (False if sql.count("?") > _PREPARE_AT_MOST else None)


def to_pyformat(sql: str) -> str:
    """``sql`` written for SQLite's placeholders (``?``, ``:name``), as psycopg takes it."""

    def replace(match: re.Match[str]) -> str:
        quoted, question, name, percent = match.groups()
        if quoted is not None:
            return quoted.replace("%", "%%")
        if question is not None:
            return "%s"
        if name is not None:
            return f"%({name})s"
        return "%%"

    return _TOKENS.sub(replace, sql)


class _Unanswered:
    """What a statement of a blind transaction returns: it has not even been sent yet."""

    rowcount = -1

    def fetchone(self) -> Any:
        raise TypeError("a blind transaction reads no answers")

    fetchall = fetchone

    def __iter__(self) -> Iterator[Any]:
        raise TypeError("a blind transaction reads no answers")


class _PostgresTransaction:
    for_update = " FOR UPDATE"

    def __init__(self, conn: psycopg.Connection[Any], *, blind: bool = False) -> None:
        self.conn = conn
        #: A blind transaction's statements, sent together when its block ends (see ``_send``).
        self.queued: list[_Queued] | None = [] if blind else None

    def execute(self, sql: str, params: Params = ()) -> psycopg.Cursor[Any] | _Unanswered:
        text, prepare = _statement(sql)
        if self.queued is not None:
            self.queued.append(_Queued(text, params, prepare))
            return _Unanswered()
        return self.conn.execute(text, params, prepare=prepare)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> int:
        rows = list(rows)
        insert = _insert_from_arrays(sql, rows)
        if insert is not None:  # one statement, not one per row: see _insert_from_arrays
            return self.execute(*insert).rowcount
        if self.queued is not None:
            self.queued.append(_Queued(sql, list(rows), None, many=True))
            return -1
        return self._executemany(sql, rows)

    def _executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> int:
        with self.conn.cursor() as cursor:
            cursor.executemany(_statement(sql)[0], rows)
            return cursor.rowcount

    def now(self) -> float:
        row = self.conn.execute("SELECT CAST(extract(epoch FROM clock_timestamp()) AS DOUBLE PRECISION)").fetchone()
        assert row is not None
        return float(row[0])

    def row_source(self, types: Sequence[str], rows: Sequence[Sequence[Any]]) -> Iterator[tuple[str, list[Any]]]:
        if rows:
            yield _unnest(tuple(types)), [_array_literal(column) for column in zip(*rows, strict=True)]

    def pipeline(self) -> contextlib.AbstractContextManager[object]:
        if self.queued is not None:
            return contextlib.nullcontext()  # a blind transaction is one pipeline already
        return self.conn.pipeline()

    def refusal(self, message: str) -> str:
        """The cast of :meth:`refuse_if`, as an expression: false, or an error carrying ``message``."""
        return f"CAST('{_REFUSED}' || ({message}) AS BIGINT) IS NULL"

    def refuse_if(self, sql: str, params: Params = ()) -> None:
        """Fail the transaction in the server: the message cast to a number is an error that carries it.

        Plain SQL has no ``RAISE``; casting ``'<marker><message>'`` to ``BIGINT`` fails with the
        text in the error, which :meth:`PostgresBackend._errors` turns into :class:`IllegalTransition`.
        """
        text, prepare = _statement(f"SELECT CAST(? || refused.m AS BIGINT) FROM ({sql}) AS refused(m) LIMIT 1")
        if self.queued is None:
            self.conn.execute(text, [_REFUSED, *params], prepare=prepare)
        else:
            self.queued.append(_Queued(text, [_REFUSED, *params], prepare, refusal=True))

    def lock(self, name: str) -> None:
        """A transaction-scoped advisory lock on ``name``'s 64-bit hash: waits for whoever holds it."""
        self.execute("SELECT pg_advisory_xact_lock(hashtextextended(?, 0))", (f"flowxfer:{name}",))

    def _send(self, prepared: _Prepared | None = None) -> None:
        """A blind transaction's statements in one round trip: one implicit transaction.

        One statement when they can be (:func:`_one_statement`): one message to the server, one
        plan, one prepared statement for a batch of the same shape. Otherwise a pipeline with one
        sync: still one round trip, but psycopg writes each statement to the socket by itself.
        Either way the transaction's commit does not wait for its WAL to reach the disk
        (``_RELAXED_COMMIT``), as SQLite's ``synchronous=NORMAL`` does not. ``prepared``: the
        statements this connection has prepared for :func:`_send_prepared` (None: psycopg's way).
        """
        assert self.queued is not None
        if not self.queued:
            return
        one = _one_statement(self.queued)
        if one is not None:
            if prepared is None or not _send_prepared(self.conn, prepared, one):
                self.conn.execute(one.text, one.params, prepare=one.prepare)
            return
        with self.conn.pipeline():
            self.conn.execute(_RELAXED_COMMIT, prepare=True)
            for statement in self.queued:
                if statement.many:
                    self._executemany(statement.text, statement.params)
                else:
                    self.conn.execute(statement.text, statement.params, prepare=statement.prepare)


@dataclasses.dataclass(frozen=True)
class _Queued:
    """A statement of a blind transaction: psycopg's text (SQLite's for ``many``), its parameters."""

    text: str
    params: Any
    prepare: bool | None
    many: bool = False
    #: A :meth:`_PostgresTransaction.refuse_if` check rather than a write.
    refusal: bool = False


#: psycopg's placeholders in a statement with positional parameters, and its escaped ``%``.
_PYFORMAT = re.compile(r"%([%s])")


@functools.lru_cache(maxsize=256)
def _numbered(text: str) -> bytes:
    """psycopg's ``text`` (``%s``, ``%%``) with the server's own placeholders (``$1``, ``%``)."""
    numbers = iter(range(1, text.count("%s") + 1))
    return _PYFORMAT.sub(lambda m: "%" if m[1] == "%" else f"${next(numbers)}", text).encode()


#: Statements a connection prepares for :func:`_send_prepared` at most (a batch's shapes are a few).
_PREPARED_PER_CONNECTION = 128


class _Prepared:
    """What one connection has prepared for :func:`_send_prepared`: names by text; texts sent once.

    ``asked``: names asked for so far. A name is never asked for twice: a PREPARE interrupted
    (Ctrl-C) after the server made it is not in ``names``, but its name is taken on the server.
    """

    __slots__ = ("asked", "names", "seen")

    def __init__(self) -> None:
        self.names: dict[str, bytes] = {}
        self.seen: set[str] = set()
        self.asked = 0


def _send_prepared(conn: psycopg.Connection[Any], prepared: _Prepared, one: _Queued) -> bool:
    """Send ``one`` through libpq itself, prepared from its second time on; False: not this one.

    psycopg's ``execute`` spends 40-60 µs of Python on a statement (a cursor, its query's
    conversion, a dumper per parameter, its prepared-statement bookkeeping, the results'),
    more than a batch's round trip on loopback; a batch's statement has only text parameters
    (the arrays' literals, a lease's key and token), which go as they are, of no declared type
    as psycopg sends a ``str``: the server reads them as it did. A text seen before is
    prepared (one more round trip, once), so the server caches its plan as before; one seen
    for the first time goes unnamed in the same round trip as its parameters, as psycopg's
    did: a batch of a shape that comes once (a file's plan, its end) costs no second round trip.
    Anything but strings and None: False, for psycopg.
    """
    params = one.params
    if one.prepare is False or not all(type(value) is str or value is None for value in params):
        return False
    pgconn, encoding = conn.pgconn, conn.info.encoding
    values = [None if value is None else value.encode(encoding) for value in params]
    name = prepared.names.get(one.text)
    if name is None and one.text in prepared.seen and len(prepared.names) < _PREPARED_PER_CONNECTION:
        name = f"flowxfer_{prepared.asked}".encode()
        prepared.asked += 1
        pgconn.send_prepare(name, _numbered(one.text))
        _raise_failed(conn.wait(generators.execute(pgconn)), encoding)
        prepared.names[one.text] = name
    if name is None:
        if len(prepared.seen) < _PREPARED_PER_CONNECTION:
            prepared.seen.add(one.text)
        pgconn.send_query_params(_numbered(one.text), values)
    else:
        pgconn.send_query_prepared(name, values)
    _raise_failed(conn.wait(generators.execute(pgconn)), encoding)
    return True


def _raise_failed(results: list[pq.abc.PGresult], encoding: str) -> None:
    """The error of the first failed result, as psycopg would have raised it (its SQLSTATE's class)."""
    for result in results:
        if result.status == pq.ExecStatus.FATAL_ERROR:
            raise psycopg.errors.error_from_result(result, encoding=encoding)


#: A write whose table :func:`_one_statement` can tell (the journal's own statements start so).
_WRITE = re.compile(r"(?:UPDATE|INSERT INTO|DELETE FROM) (\w+) ")


def _one_statement(queued: Sequence[_Queued]) -> _Queued | None:
    """A blind transaction's statements as one: writes as data-modifying CTEs, refusals as subqueries.

    All parts of a statement see the rows as they were before it, and two parts may not change
    the same row: so only writes to distinct tables, each once, preceded by all the refusals
    (which read the rows before any write, as they would have in the pipeline). Anything else
    (``executemany``, a table written twice, a refusal after a write): None.
    """
    if any(statement.many or not isinstance(statement.params, list | tuple) for statement in queued):
        return None
    shape = _one_shape(tuple((statement.text, statement.refusal) for statement in queued))
    if shape is None:
        return None
    text, order = shape
    params = [value for number in order for value in queued[number].params]
    prepare = False if any(statement.prepare is False for statement in queued) else None
    return _Queued(text, params, prepare)


@functools.lru_cache(maxsize=256)
def _one_shape(statements: tuple[tuple[str, bool], ...]) -> tuple[str, tuple[int, ...]] | None:
    """:func:`_one_statement`'s text for statements of these texts (and refusals), and the order of their parameters.

    A batch's statements are of a few shapes, the same on every commit: made once per shape.
    """
    writes: list[int] = []
    checks: list[int] = []
    tables: set[str] = set()
    for number, (text, refusal) in enumerate(statements):
        if refusal:
            if writes:
                return None
            checks.append(number)
            continue
        write = _WRITE.match(text)
        if write is None or write[1] in tables:
            return None
        tables.add(write[1])
        writes.append(number)
    text = ", ".join(f"w{order} AS ({statements[number][0]})" for order, number in enumerate(writes))
    text = (f"WITH {text} " if text else "") + _RELAXED_COMMIT + "".join(f", ({statements[n][0]})" for n in checks)
    return text, (*writes, *checks)


#: A plain insert of one row of values (no ``ON CONFLICT``, no subquery): ``table``, ``columns``, ``values``.
_PLAIN_INSERT = re.compile(r"INSERT INTO (\w+) \(([^()]*)\) VALUES \(([^()]*)\)")

#: What :func:`_insert_from_arrays` lets through as a value besides ``?``: a number or a plain string.
_CONSTANT = re.compile(r"-?\d+(?:\.\d+)?|'[^',]*'")

#: The array type of a column whose values (None aside) are all of these Python types.
_ARRAY_TYPES = {
    frozenset({int}): "BIGINT",
    frozenset({str}): "TEXT",
    frozenset({float}): "DOUBLE PRECISION",
    frozenset({int, float}): "DOUBLE PRECISION",
}


def _insert_from_arrays(sql: str, rows: Sequence[Sequence[Any]]) -> tuple[str, list[Any]] | None:
    """``executemany(sql, rows)`` of a plain insert as one ``INSERT ... SELECT FROM unnest(...)``, or None.

    A chunk plan is one row per chunk: executemany sent them as 4096 statements (in one
    pipeline, still 90-120 ms on loopback for a 4096-chunk plan, ten times SQLite's), where one
    statement with one array per column takes a few milliseconds. Only where nothing can differ:
    ``INSERT INTO t (...) VALUES (...)`` with ``?`` and plain constants, no ``ON CONFLICT`` (two
    rows of one statement may not meet the same conflict, as rows of executemany may), and each
    ``?`` column of one SQL type by its Python values (ints, strings, floats; None anywhere).
    Anything else (a bool, bytes, a column of None only): None, and the rows go one by one.
    """
    match = _PLAIN_INSERT.fullmatch(sql)
    if match is None or not rows:
        return None
    values = [value.strip() for value in match[3].split(",")]
    if not all(value == "?" or _CONSTANT.fullmatch(value) for value in values):
        return None
    placeholders = values.count("?")
    if any(len(row) != placeholders for row in rows):
        return None
    types = []
    for column in zip(*rows, strict=True):
        kind = _ARRAY_TYPES.get(frozenset(type(value) for value in column if value is not None))
        if kind is None:
            return None
        types.append(kind)
    numbers = iter(range(1, placeholders + 1))
    select = ", ".join(f"v.column{next(numbers)}" if value == "?" else value for value in values)
    params = [_array_literal(column) for column in zip(*rows, strict=True)]
    return f"INSERT INTO {match[1]} ({match[2]}) SELECT {select} FROM {_unnest(tuple(types))}", params


@functools.lru_cache(maxsize=64)
def _unnest(types: tuple[str, ...]) -> str:
    """:meth:`_PostgresTransaction.row_source`'s table: one array parameter per column of ``types``.

    Each array is read through a scalar subquery, ``unnest((SELECT CAST(? AS type[])))``, so that
    the planner cannot count its elements, in a custom plan as in a generic one (an array it
    cannot see into is estimated at 10 rows either way). With ``unnest(CAST(? AS type[]))`` a
    custom plan knew the real count: for a one-chunk batch it looked cheaper than the generic
    plan, so PostgreSQL never chose the cached generic plan and planned the batch's statement on
    every commit (140 of a commit's 210 µs in the server, plans on 4097 of 4096 executions).
    Now a statement psycopg prepares is planned for its first executions only, whatever the
    batch's size; the subquery runs once per statement (an InitPlan).
    """
    arrays = ", ".join(f"(SELECT CAST(? AS {type_}[]))" for type_ in types)
    names = ", ".join(f"column{number}" for number in range(1, len(types) + 1))
    return f"unnest({arrays}) AS v({names})"


def _array_literal(values: Sequence[Any]) -> str:
    """``values`` as PostgreSQL's text form of an array (``{1,2}``, ``{"a","b \\"c\\"",NULL}``).

    psycopg adapts a list element by element in Python, looking up each one's dumper: 130 µs for
    a batch's dozen one-element arrays, 10 µs a chunk for a 512-chunk batch, more than all the
    rest of a commit. The literal is one string parameter, which the statement's ``CAST(? AS
    type[])`` parses in the server. Numbers go as they print; anything else quoted, with
    backslashes and double quotes escaped (strings with neither, as checksums and states are, in
    one join); None is ``NULL``.
    """
    kinds = set(map(type, values))
    if kinds <= _INT or kinds == _FLOAT:  # as Python prints them: PostgreSQL reads them back exactly
        return "{" + ",".join(map(str, values)) + "}"
    if kinds == _STR:
        plain = "".join(values)
        if '"' not in plain and "\\" not in plain:  # checksums, states: nothing to escape
            return '{"' + '","'.join(values) + '"}'
    return "{" + ",".join(map(_array_element, values)) + "}"


_INT: frozenset[type] = frozenset({int})
_STR: frozenset[type] = frozenset({str})
_FLOAT: frozenset[type] = frozenset({float})


def _array_element(value: Any) -> str:
    if value is None:
        return "NULL"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _lost_connection(exc: psycopg.Error) -> bool:
    """The server went away (refused, cut, shutting down), as opposed to a deadlock or a lock timeout.

    Client-side failures carry no SQLSTATE; class 08 is a connection exception, 57P an operator's
    shutdown or a server still starting. A URL libpq cannot use (a bad option, no password) carries
    none either, but no wait mends it: :func:`_misconfigured`.
    """
    if _misconfigured(exc):
        return False
    return isinstance(exc, psycopg.InterfaceError) or exc.sqlstate is None or exc.sqlstate.startswith(("08", "57P"))


#: libpq's words for a connection it will not even try, or cannot finish, with the settings given.
_CLIENT_SIDE = re.compile(r'fe_sendauth:|invalid [\w ]*(?:value|option|number)|invalid URI|missing "="')


def _misconfigured(exc: psycopg.Error) -> bool:
    """libpq refused the URL itself (psycopg's ProgrammingError) or a setting or password it lacks."""
    return isinstance(exc, psycopg.ProgrammingError) or _CLIENT_SIDE.search(str(exc)) is not None


#: A server that refuses a login for now, not for good: wait it out like an outage.
_PASSING_REFUSALS = (
    "starting up",
    "shutting down",
    "in recovery",
    "not yet accepting",
    # SQLSTATE 53300, the server full: every slot taken, or all but those kept for superusers.
    "too many clients",
    "connection slots are reserved",
)


def _refused_at_login(message: str) -> bool:
    """The server answered the login with a FATAL that will not pass: a password, a role, a database.

    libpq gives no SQLSTATE for a refusal during connection, only the server's text.
    """
    fatal = message.partition("FATAL:")[2]
    return bool(fatal) and not any(passing in fatal for passing in _PASSING_REFUSALS)


def _scalar(tx: _PostgresTransaction, sql: str) -> Any:
    row = tx.execute(sql).fetchone()
    assert row is not None
    return row[0]


def _one_line(message: str) -> str:
    """libpq's message on one line: its lines (a finding, then a hint) become clauses, not run-ons."""
    return "; ".join(" ".join(line.split()) for line in message.splitlines() if line.strip())


class PostgresBackend:
    """A journal in a PostgreSQL database. :meth:`open` connects and migrates it."""

    def __init__(
        self, location: JournalLocation, *, connect_timeout: float, busy_timeout: float, max_connections: int
    ) -> None:
        self.location = location
        self._connect_timeout = connect_timeout
        self._busy_timeout = busy_timeout
        self._max_connections = max_connections
        self._pool_lock = threading.Lock()
        self._pool = self._new_pool()
        #: Set when a call found the server unreachable: the next call starts a fresh pool.
        self._failed = False
        #: When each pooled connection last completed a call (see :meth:`_check_connection`).
        self._last_used: weakref.WeakKeyDictionary[psycopg.Connection[Any], float] = weakref.WeakKeyDictionary()
        #: The statements each connection has prepared for :func:`_send_prepared`, by text.
        self._prepared: weakref.WeakKeyDictionary[psycopg.Connection[Any], _Prepared] = weakref.WeakKeyDictionary()
        #: The connection blind transactions are sent on, kept out of the pool, and its pool
        #: (see :meth:`_writer_connection`); the lock is held while one is in use.
        self._writer: tuple[psycopg.Connection[Any], ConnectionPool[Any], _Prepared] | None = None
        self._writer_lock = threading.Lock()

    def _new_pool(self) -> ConnectionPool[Any]:
        assert self.location.url is not None
        return ConnectionPool(
            self.location.url,
            min_size=1,
            max_size=self._max_connections,
            open=False,
            timeout=self._connect_timeout,
            check=self._check_connection,
            kwargs={
                "autocommit": True,
                "connect_timeout": max(1, round(self._connect_timeout)),
                # A lock another host holds too long is JournalBusyError, as on SQLite; a host cut
                # off inside a transaction gives its locks back instead of holding the fleet up.
                "options": f"-c lock_timeout={round(self._busy_timeout * 1000)} "
                f"-c idle_in_transaction_session_timeout={_IDLE_IN_TRANSACTION_MS}",
                "keepalives_idle": 10,
                "keepalives_interval": 5,
                "keepalives_count": 3,
            },
            name="flowxfer-journal",
        )

    def _check_connection(self, conn: psycopg.Connection[Any]) -> None:
        """Check a connection before lending it, unless it answered a moment ago.

        The check is a round trip; on the hot path (a commit every ~100 ms) the connection has just
        worked. One idle for longer may have died with a server restart: it is checked, and a dead
        one is replaced before anyone sees it.
        """
        if time.monotonic() - self._last_used.get(conn, -_TRUSTED_FOR) >= _TRUSTED_FOR:
            ConnectionPool.check_connection(conn)

    @classmethod
    def open(
        cls, location: JournalLocation, *, connect_timeout: float, busy_timeout: float, max_connections: int
    ) -> PostgresBackend:
        backend = cls(
            location, connect_timeout=connect_timeout, busy_timeout=busy_timeout, max_connections=max_connections
        )
        try:
            backend._pool.open(wait=False)  # the pool starts connecting while _connect_once asks
            backend._connect_once()
            with backend._errors():
                backend._pool.wait(timeout=connect_timeout)
            backend._prepare()
        except BaseException:
            backend.close()
            raise
        return backend

    def _connect_once(self) -> None:
        """Connect once, directly (beside the pool's first connection, or before a fresh pool): to hear at once why not.

        A pool retries a connection that fails until its timeout, then says only that it timed
        out: a refused password cost ``connect_timeout`` before its exit 2, and each call of a run
        whose database had gone (its port refusing connections) waited ``connect_timeout`` in turn,
        after ``--max-wait`` was over too: three calls, 15 s before its exit 75. One direct attempt
        fails in one round trip with libpq's and the server's own words. A refused password, a
        role or database that does not exist or a setting libpq rejects will not pass by waiting:
        a usage error (:class:`JournalError`, exit 2). A server that refuses the connection or does
        not answer (within ``connect_timeout``) is unreachable (:class:`JournalUnavailableError`,
        which a run waits out up to ``--max-wait``). The URL's password is never in the message.
        """
        assert self.location.url is not None
        try:
            psycopg.connect(self.location.url, connect_timeout=max(1, round(self._connect_timeout))).close()
        except psycopg.Error as exc:
            reason = mask_password(_one_line(str(exc)))
            if not _lost_connection(exc) or _refused_at_login(reason):
                raise JournalError(f"journal {self.location.display} refused us: {reason}") from exc
            raise JournalUnavailableError(f"journal {self.location.display} is unreachable: {reason}") from exc

    def _current_pool(self) -> ConnectionPool[Any]:
        """The pool to take a connection from; after an outage, a fresh one once the server answers again.

        While a call has found the server unreachable, every call first tries one direct connection
        (:meth:`_connect_once`): a server that refuses it fails the call at once, not after a pool's
        ``connect_timeout`` of retries; one that answers gets a fresh pool. Outside the lock, so that
        threads trying at once (a server that does not answer at all) do not wait in turn.
        """
        if self._failed:
            self._connect_once()
        with self._pool_lock:
            if self._failed:
                stale, self._pool, self._failed = self._pool, self._new_pool(), False
                self._pool.open(wait=False)
                stale.close(timeout=0)
            return self._pool

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """Map driver errors to journal errors, naming the database without its password."""
        try:
            yield
        except PoolTimeout as exc:
            self._failed = True
            raise JournalUnavailableError(f"journal {self.location.display} is unreachable: {exc}") from exc
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            if not _lost_connection(exc):
                raise JournalBusyError(f"journal {self.location.display} is busy: {exc}") from exc
            self._failed = True
            raise JournalUnavailableError(f"journal {self.location.display} is unavailable: {exc}") from exc
        except psycopg.errors.InvalidTextRepresentation as exc:
            message = exc.diag.message_primary or ""
            if _REFUSED not in message:
                raise JournalError(f"journal {self.location.display}: {exc}") from exc
            raise IllegalTransition(message.partition(_REFUSED)[2].removesuffix('"')) from None
        except psycopg.Error as exc:
            raise JournalError(f"journal {self.location.display}: {exc}") from exc

    def _prepare(self) -> None:
        with self.transaction() as tx:
            # Before anything else: hosts starting at once wait here, then find the schema made.
            tx.lock("schema")
            if _scalar(tx, "SELECT to_regclass('schema_migrations') IS NOT NULL"):
                version = _scalar(tx, "SELECT coalesce(max(version), 0) FROM schema_migrations")
            else:
                if _scalar(tx, "SELECT to_regclass('transfers') IS NOT NULL"):
                    raise JournalCorruptError(
                        f"{self.location.display} has a transfers table but no schema_migrations: "
                        "not a flowxfer journal"
                    )
                tx.execute(
                    "CREATE TABLE schema_migrations (version BIGINT PRIMARY KEY, applied DOUBLE PRECISION NOT NULL)"
                )
                version = 0
            if version > SCHEMA_VERSION:
                raise JournalVersionError(
                    f"journal {self.location.display} has schema version {version}, newer than this flowxfer "
                    f"understands ({SCHEMA_VERSION}); upgrade flowxfer or use another --journal"
                )
            for target, script in POSTGRES_MIGRATIONS:
                if target > version:
                    for statement in split_sql(script):
                        tx.execute(statement)
                    tx.execute("INSERT INTO schema_migrations (version, applied) VALUES (?, ?)", (target, time.time()))

    def close(self) -> None:
        with self._writer_lock:  # after a commit in flight
            writer, self._writer = self._writer, None
        if writer is not None:
            writer[0].close()
        with self._pool_lock:
            self._pool.close()

    @contextlib.contextmanager
    def transaction(self, *, blind: bool = False) -> Iterator[_PostgresTransaction]:
        """A transaction on a pooled connection; ``blind``: sent whole when the block ends, one round trip.

        A blind one (the engine's batches, one every ~100 ms) goes on the connection this backend
        keeps for them (:meth:`_writer_connection`) when no other blind one is using it: taking
        a connection from the pool and giving it back costs about 10 µs of Python a commit.
        """
        if blind and self._max_connections > 1 and self._writer_lock.acquire(blocking=False):
            try:
                with self._errors():
                    conn, prepared = self._writer_connection()
                    try:
                        tx = _PostgresTransaction(conn, blind=True)
                        yield tx  # an exception here sends nothing: the block's statements are only queued
                        tx._send(prepared)
                    except BaseException:
                        if conn.closed or conn.pgconn.transaction_status != pq.TransactionStatus.IDLE:
                            # Lost, or left mid-statement: a fresh one next time. Closed, and given
                            # back so that its pool counts it gone (else it would lend one fewer).
                            writer, self._writer = self._writer, None
                            conn.close()
                            if writer is not None:
                                writer[1].putconn(conn)
                        raise
                    self._last_used[conn] = time.monotonic()
            finally:
                self._writer_lock.release()
            return
        with self._errors(), self._current_pool().connection() as conn:
            if blind:
                tx = _PostgresTransaction(conn, blind=True)
                yield tx  # an exception here sends nothing: the block's statements are only queued
                tx._send(self._prepared.setdefault(conn, _Prepared()))
            else:
                with conn.transaction():
                    yield _PostgresTransaction(conn)
            self._last_used[conn] = time.monotonic()

    def _writer_connection(self) -> tuple[psycopg.Connection[Any], _Prepared]:
        """The kept connection for blind transactions: the last one, while it is trusted, else the pool's.

        One from a pool that was replaced (the server went away) is closed; one idle for
        ``_TRUSTED_FOR`` goes back to its pool, whose check (:meth:`_check_connection`) tries it
        before lending it again, as for any other call: a server restarted meanwhile costs no batch.
        Called with ``_writer_lock`` held; the pool's ``max_size`` counts it, so a backend of one
        connection keeps none (see :meth:`transaction`).
        """
        pool = self._current_pool()
        if self._writer is not None:
            conn, owner, prepared = self._writer
            if (
                owner is pool
                and not conn.closed
                and time.monotonic() - self._last_used.get(conn, -_TRUSTED_FOR) < _TRUSTED_FOR
            ):
                return conn, prepared
            self._writer = None
            if owner is pool and not conn.closed:
                pool.putconn(conn)
            else:
                conn.close()
        conn = pool.getconn()
        prepared = self._prepared.setdefault(conn, _Prepared())
        self._writer = conn, pool, prepared
        return conn, prepared

    def read(self, sql: str, params: Params = ()) -> list[dict[str, Any]]:
        with self._errors(), self._current_pool().connection() as conn, conn.cursor(row_factory=dict_row) as cursor:
            text, prepare = _statement(sql)
            cursor.execute(text, params, prepare=prepare)
            rows = cursor.fetchall()
            self._last_used[conn] = time.monotonic()
            return rows

    def check_integrity(self) -> list[str]:
        """The server answers and the schema is the one this flowxfer writes."""
        version = self.read("SELECT coalesce(max(version), 0) AS v FROM schema_migrations")[0]["v"]
        if version != SCHEMA_VERSION:
            return [f"schema version {version}, expected {SCHEMA_VERSION}"]
        return []

    def columns(self, table: str) -> list[str]:
        rows = self.read(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
            "AND table_name = ? ORDER BY ordinal_position",
            (table,),
        )
        return [row["column_name"] for row in rows]

    def after_copy(self, tx: Transaction, table: str) -> None:
        """Move ``files``' identity past the ids copied in, so the next new file gets a fresh one."""
        if table == "files":
            tx.execute(
                "SELECT setval(pg_get_serial_sequence('files', 'id'), coalesce(max(id), 0) + 1, false) FROM files"
            )

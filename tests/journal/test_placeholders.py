"""The journal's SQL is written once with SQLite's placeholders; PostgreSQL's backend translates them,
and passes a batch's columns as array literals."""

from __future__ import annotations

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowxfer.journal._postgres import (
    _array_literal,
    _insert_from_arrays,
    _one_statement,
    _PostgresTransaction,
    _Queued,
    to_pyformat,
)


@pytest.mark.parametrize(
    ("sqlite", "psycopg"),
    [
        ("SELECT * FROM t WHERE a = ? AND b IN (?, ?)", "SELECT * FROM t WHERE a = %s AND b IN (%s, %s)"),
        ("UPDATE t SET a = :a, b = :_b2 WHERE c = :c", "UPDATE t SET a = %(a)s, b = %(_b2)s WHERE c = %(c)s"),
        ("SELECT '?', ':x', 'it''s ?' FROM t WHERE a = ?", "SELECT '?', ':x', 'it''s ?' FROM t WHERE a = %s"),
        ('SELECT "row", "odd?name" FROM t WHERE "offset" = ?', 'SELECT "row", "odd?name" FROM t WHERE "offset" = %s'),
        (
            "SELECT 5 % 2, x::bigint FROM t WHERE id LIKE ? ESCAPE '\\'",
            "SELECT 5 %% 2, x::bigint FROM t WHERE id LIKE %s ESCAPE '\\'",
        ),
        ("SELECT a FROM t WHERE b LIKE 'x%' AND c = ?", "SELECT a FROM t WHERE b LIKE 'x%%' AND c = %s"),
    ],
)
def test_placeholders_are_translated_outside_strings_and_names(sqlite: str, psycopg: str) -> None:
    assert to_pyformat(sqlite) == psycopg


@given(st.text(alphabet="abc ?,()=", max_size=60))
def test_every_question_mark_outside_quotes_becomes_one_placeholder(sql: str) -> None:
    assert to_pyformat(sql).count("%s") == sql.count("?")


# No NUL (PostgreSQL's text refuses it) and no lone surrogate (UTF-8 cannot carry one; names holding
# one are refused before the journal sees them: transfer/_names.py).
_TEXTS = st.lists(
    st.none() | st.text(st.characters(exclude_characters="\x00", exclude_categories=("Cs",)), max_size=12),
    max_size=8,
)
_NUMBERS = st.lists(st.none() | st.integers(-(2**63), 2**63 - 1), max_size=8)
_FLOATS = st.lists(st.floats(allow_nan=False, allow_infinity=False), max_size=8)


def test_array_literals_read_back_as_the_values_they_were_made_of(postgres_url: str) -> None:
    """The text form the backend passes arrays in (quotes, backslashes, braces, NULL, empty strings)."""
    with psycopg.connect(postgres_url) as conn:

        @given(_TEXTS, _NUMBERS, _FLOATS)
        @settings(max_examples=150, deadline=None)
        def round_trip(texts: list[str | None], numbers: list[int | None], floats: list[float]) -> None:
            row = conn.execute(
                "SELECT CAST(%s AS TEXT[]), CAST(%s AS BIGINT[]), CAST(%s AS DOUBLE PRECISION[])",
                [_array_literal(texts), _array_literal(numbers), _array_literal(floats)],
            ).fetchone()
            assert row == (texts, numbers, floats)

        round_trip()


def test_a_blind_batch_is_one_statement_only_where_its_parts_cannot_see_each_other() -> None:
    """Parts of one statement all see the rows from before it: refusals first, each table written once."""

    def write(table: str) -> _Queued:
        return _Queued(f"UPDATE {table} SET x = %s WHERE id = %s", [table, 1], None)

    refusal = _Queued("SELECT CAST(%s || m AS BIGINT) FROM r", ["refused: "], None, refusal=True)
    one = _one_statement([refusal, write("chunks"), write("files")])
    assert one is not None
    assert one.text.startswith("WITH w0 AS (UPDATE chunks SET x = %s WHERE id = %s), w1 AS (UPDATE files ")
    assert one.text.endswith(", (SELECT CAST(%s || m AS BIGINT) FROM r)")
    assert one.params == ["chunks", 1, "files", 1, "refused: "]  # in the order of their placeholders
    assert _one_statement([write("files"), write("files")]) is None
    assert _one_statement([write("chunks"), refusal]) is None
    assert _one_statement([_Queued("INSERT INTO t (x) VALUES (?)", [[1], [2]], None, many=True)]) is None


def test_a_plain_insert_of_many_rows_is_one_statement_of_arrays() -> None:
    """executemany of ``INSERT ... VALUES`` (a chunk plan): one array per ``?`` column, constants kept."""
    sql, params = _insert_from_arrays(
        "INSERT INTO chunks (file_id, idx, state) VALUES (?, ?, 'planned')", [(7, 0), (7, 1), (7, 2)]
    ) or ("", [])
    assert sql == (
        "INSERT INTO chunks (file_id, idx, state) SELECT v.column1, v.column2, 'planned' FROM "
        "unnest((SELECT CAST(? AS BIGINT[])), (SELECT CAST(? AS BIGINT[]))) AS v(column1, column2)"
    )
    assert params == ["{7,7,7}", "{0,1,2}"]
    _, mixed = _insert_from_arrays("INSERT INTO t (a, b) VALUES (?, ?)", [(1, None), (2.5, "x")]) or ("", [])
    assert mixed == ['{"1","2.5"}', '{NULL,"x"}']


@pytest.mark.parametrize(
    ("sql", "rows"),
    [
        ("INSERT INTO t (a) VALUES (?) ON CONFLICT (a) DO NOTHING", [(1,), (1,)]),  # rows may meet each other
        ("INSERT INTO t (a) VALUES (?)", [(True,)]),  # no array type said for a bool
        ("INSERT INTO t (a, b) VALUES (?, ?)", [(1, None), (2, None)]),  # a column of None: type unknown
        ("INSERT INTO t (a) VALUES (?)", [(1,), ("x",)]),  # a column of two types
        ("INSERT INTO t (a, b) VALUES (?, 'x,y')", [(1,)]),  # a constant this split cannot read
        ("INSERT INTO t (a) VALUES ((SELECT 1))", [()]),
        ("INSERT INTO t (a, b) VALUES (?, ?)", [(1,)]),
        ("INSERT INTO t (a) VALUES (?)", []),
        ("UPDATE t SET a = ? WHERE b = ?", [(1, 2)]),
    ],
)
def test_an_insert_that_could_differ_row_by_row_goes_row_by_row(sql: str, rows: list[tuple[object, ...]]) -> None:
    assert _insert_from_arrays(sql, rows) is None


def test_an_insert_of_arrays_writes_the_rows_executemany_would(postgres_url: str) -> None:
    """The same rows either way: None, quotes, backslashes, floats; the row count for a transaction that reads it."""
    rows = [(1, "a", 1.5), (2, None, None), (3, 'q"uo\\te, {x}', -0.25), (2**62, "", 2.0)]
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE arrays (n BIGINT, s TEXT, f DOUBLE PRECISION, c TEXT)")
        with conn.transaction():
            insert = "INSERT INTO arrays (n, s, f, c) VALUES (?, ?, ?, 'k')"
            count = _PostgresTransaction(conn).executemany(insert, rows)
        assert count == len(rows)
        assert conn.execute("SELECT n, s, f, c FROM arrays ORDER BY n").fetchall() == [(*row, "k") for row in rows]

"""The journal's SQL is written once with SQLite's placeholders; PostgreSQL's backend translates them."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flowxfer.journal._postgres import to_pyformat


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
    ],
)
def test_placeholders_are_translated_outside_strings_and_names(sqlite: str, psycopg: str) -> None:
    assert to_pyformat(sqlite) == psycopg


@given(st.text(alphabet="abc ?,()=", max_size=60))
def test_every_question_mark_outside_quotes_becomes_one_placeholder(sql: str) -> None:
    assert to_pyformat(sql).count("%s") == sql.count("?")

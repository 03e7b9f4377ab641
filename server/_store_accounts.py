"""The store's reads and writes for API keys and ``GET /me``, apart so that ``_store.py`` does not grow.

A mixin of :class:`._store.Store`: it uses the store's connection through
``_query`` and ``_tx``, and the ``api_keys`` table of the store's migrations.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any


class StoreError(Exception):
    """A metadata operation refused (unknown user, duplicate name...)."""


class AccountStore:
    if TYPE_CHECKING:
        def _tx(self) -> AbstractContextManager[sqlite3.Connection]: ...

        def _query(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[Any]: ...

    def user_number(self, name: str) -> int | None:
        """The user's number (hosted Flow's user ``id``): the row's rowid, stable while the user exists."""
        rows = self._query("SELECT rowid FROM users WHERE name = ?", (name,))
        return int(rows[0][0]) if rows else None

    def groups_of(self, user: str) -> list[str]:
        return [r[0] for r in self._query(
            "SELECT group_name FROM group_members WHERE user_name = ? ORDER BY group_name", (user,))]

    def add_api_key(self, key_id: str, owner: str, name: str, hash_: bytes, expires: float | None) -> None:
        with self._tx() as c:
            if not c.execute("SELECT 1 FROM users WHERE name = ?", (owner,)).fetchone():
                raise StoreError(f"no such user: {owner}")
            c.execute("INSERT INTO api_keys VALUES (?, ?, ?, ?, ?, ?)",
                      (key_id, owner, name, hash_, time.time(), expires))

    def api_key(self, key_id: str) -> tuple[str, bytes, float | None] | None:
        """``(owner, hash, expires)`` of a key."""
        rows = self._query("SELECT owner, hash, expires FROM api_keys WHERE id = ?", (key_id,))
        return (rows[0][0], rows[0][1], rows[0][2]) if rows else None

    def api_keys(self, owner: str | None = None) -> list[tuple[str, str, str, float, float | None]]:
        """``(id, owner, name, created, expires)`` of every key (of ``owner``), oldest first."""
        sql = "SELECT id, owner, name, created, expires FROM api_keys"
        params: tuple[str, ...] = ()
        if owner is not None:
            sql, params = sql + " WHERE owner = ?", (owner,)
        return [tuple(r) for r in self._query(sql + " ORDER BY created, id", params)]

    def remove_api_key(self, key_id: str) -> bool:
        with self._tx() as c:
            return c.execute("DELETE FROM api_keys WHERE id = ?", (key_id,)).rowcount > 0

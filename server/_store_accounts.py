"""The store's SQL for accounts: users, groups and their members, API keys, ``GET /me``'s reads.

A part of :class:`._store.Store` over the shared connection
(:class:`._store_base.StoreBase`); who may log in and who belongs to which group.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from ._store_base import StoreBase, StoreError


@dataclass(frozen=True)
class UserRow:
    name: str
    salt: bytes
    hash: bytes
    scrypt_n: int


class AccountStore(StoreBase):
    """Users, groups, API keys."""

    def put_user(self, name: str, salt: bytes, hash_: bytes, scrypt_n: int) -> bool:
        """Create the user or replace their password; True if created."""
        with self._tx() as c:
            existed = c.execute("SELECT 1 FROM users WHERE name = ?", (name,)).fetchone()
            if existed:
                c.execute(
                    "UPDATE users SET salt = ?, hash = ?, scrypt_n = ? WHERE name = ?",
                    (salt, hash_, scrypt_n, name),
                )
            else:
                c.execute("INSERT INTO users VALUES (?, ?, ?, ?, ?)", (name, salt, hash_, scrypt_n, time.time()))
            return not existed

    def remove_user(self, name: str) -> bool:
        with self._tx() as c:
            return c.execute("DELETE FROM users WHERE name = ?", (name,)).rowcount > 0

    def get_user(self, name: str) -> UserRow | None:
        rows = self._query("SELECT name, salt, hash, scrypt_n FROM users WHERE name = ?", (name,))
        return UserRow(*rows[0]) if rows else None

    def user_exists(self, name: str) -> bool:
        return bool(self._query("SELECT 1 FROM users WHERE name = ?", (name,)))

    def list_users(self) -> list[str]:
        return [r[0] for r in self._query("SELECT name FROM users ORDER BY name")]

    def add_group(self, name: str) -> bool:
        with self._tx() as c:
            return c.execute("INSERT OR IGNORE INTO groups VALUES (?, ?)", (name, time.time())).rowcount > 0

    def group_exists(self, name: str) -> bool:
        return bool(self._query("SELECT 1 FROM groups WHERE name = ?", (name,)))

    def add_member(self, group: str, user: str) -> bool:
        with self._tx() as c:
            if not c.execute("SELECT 1 FROM groups WHERE name = ?", (group,)).fetchone():
                raise StoreError(f"no such group: {group}")
            if not c.execute("SELECT 1 FROM users WHERE name = ?", (user,)).fetchone():
                raise StoreError(f"no such user: {user}")
            return c.execute("INSERT OR IGNORE INTO group_members VALUES (?, ?)", (group, user)).rowcount > 0

    def remove_member(self, group: str, user: str) -> bool:
        with self._tx() as c:
            return (
                c.execute("DELETE FROM group_members WHERE group_name = ? AND user_name = ?", (group, user)).rowcount
                > 0
            )

    def list_groups(self) -> dict[str, list[str]]:
        groups: dict[str, list[str]] = {r[0]: [] for r in self._query("SELECT name FROM groups ORDER BY name")}
        for group, user in self._query("SELECT group_name, user_name FROM group_members ORDER BY user_name"):
            groups[group].append(user)
        return groups

    def user_number(self, name: str) -> int | None:
        """The user's number (hosted Flow's user ``id``): the row's rowid, stable while the user exists."""
        rows = self._query("SELECT rowid FROM users WHERE name = ?", (name,))
        return int(rows[0][0]) if rows else None

    def groups_of(self, user: str) -> list[str]:
        return [
            r[0]
            for r in self._query(
                "SELECT group_name FROM group_members WHERE user_name = ? ORDER BY group_name", (user,)
            )
        ]

    def add_api_key(self, key_id: str, owner: str, name: str, hash_: bytes, expires: float | None) -> None:
        with self._tx() as c:
            if not c.execute("SELECT 1 FROM users WHERE name = ?", (owner,)).fetchone():
                raise StoreError(f"no such user: {owner}")
            c.execute(
                "INSERT INTO api_keys VALUES (?, ?, ?, ?, ?, ?)", (key_id, owner, name, hash_, time.time(), expires)
            )

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

"""Offline user and group management on a server root (no server needs to run).

SQLite serialises writers, so this is also safe while a server runs on the
same root; the server sees new users and groups at once (it reads them per
request), and new passwords at the next login.
"""

from __future__ import annotations

import time
from pathlib import Path

from ._admin_executions import ExecutionSpec, register_execution
from ._auth import hash_password, password_problem, username_problem
from ._ids import new_id
from ._keys import MAX_NAME, new_key
from ._state import Layout
from ._store import Store, StoreError
from ._store_executions import TERMINAL


class AdminError(ValueError):
    """A refused admin operation (bad name, unknown user or group)."""


class Admin:
    """Manage the users and groups of a server root.

    Example::

        with Admin(root) as admin:
            admin.add_user("alice", "s3cret")
            admin.add_group("lab")
            admin.add_member("lab", "alice")

    :param root: the server's ``--root``; created if missing.
    :param scrypt_n: the scrypt cost for new password hashes.
    """

    def __init__(self, root: Path | str, scrypt_n: int = 2**14) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._store = Store(self.root)
        self._scrypt_n = scrypt_n

    def __enter__(self) -> Admin:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._store.close()

    def add_user(self, name: str, password: str) -> bool:
        """Create ``name`` or set their password; True if the user is new.

        :raises AdminError: for a bad name or password.
        """
        problem = username_problem(name) or password_problem(password)
        if problem:
            raise AdminError(problem)
        salt, digest = hash_password(password, n=self._scrypt_n)
        return self._store.put_user(name, salt, digest, self._scrypt_n)

    set_password = add_user

    def remove_user(self, name: str) -> bool:
        return self._store.remove_user(name)

    def users(self) -> list[str]:
        return self._store.list_users()

    def add_group(self, name: str) -> bool:
        problem = username_problem(name)
        if problem:
            raise AdminError(problem.replace("usernames", "group names"))
        return self._store.add_group(name)

    def add_member(self, group: str, user: str) -> bool:
        try:
            return self._store.add_member(group, user)
        except StoreError as exc:
            raise AdminError(str(exc)) from None

    def remove_member(self, group: str, user: str) -> bool:
        return self._store.remove_member(group, user)

    def groups(self) -> dict[str, list[str]]:
        """``{group: [members]}``."""
        return self._store.list_groups()

    def add_token(self, user: str, name: str = "", expires_in: float | None = None) -> tuple[str, str]:
        """A new long-lived API key for ``user``: ``(key id, whole key)``.

        The whole key exists only in the answer: show it once; the store keeps a hash.

        :param expires_in: seconds it stays valid (None: until removed).
        :raises AdminError: an unknown user, a bad name or lifetime.
        """
        if len(name) > MAX_NAME or not name.isprintable():
            raise AdminError(f"token names are at most {MAX_NAME} printable characters")
        if expires_in is not None and not 0 < expires_in < 1e11:
            raise AdminError("a token's lifetime must be positive")
        key, digest = new_key()
        expires = time.time() + expires_in if expires_in is not None else None
        try:
            self._store.add_api_key(key.id, user, name, digest, expires)
        except StoreError as exc:
            raise AdminError(str(exc)) from None
        return key.id, key.key

    def tokens(self, user: str | None = None) -> list[tuple[str, str, str, float, float | None]]:
        """``(id, user, name, created, expires)`` of every API key (never the secret: it is not kept)."""
        return self._store.api_keys(user)

    def remove_token(self, key_id: str) -> bool:
        return self._store.remove_api_key(key_id)

    def add_project(self, owner: str, name: str, description: str = "") -> tuple[str, bool]:
        """Create ``owner``'s project ``name`` unless it exists: (its id, whether it is new).

        :raises AdminError: no such user, or an empty name.
        """
        name = name.strip()
        if not name or len(name) > 255:
            raise AdminError("a project name is 1 to 255 characters")
        if not self._store.user_exists(owner):
            raise AdminError(f"no such user: {owner}")
        return self._store.add_project(new_id(), owner, name, description)

    def projects(self) -> list[tuple[str, str, str]]:
        """``(owner, name, id)`` of every project."""
        return [(p.owner, p.name, p.id) for p in self._store.list_projects()]

    def add_execution(self, spec: ExecutionSpec) -> tuple[str, str]:
        """Register a pipeline run with its outputs (copied in) and its schedule: (its id, its identifier).

        :raises AdminError: a bad name, schedule, user, sample or file (nothing is recorded).
        """
        try:
            return register_execution(self._store, Layout(self.root).data, spec)
        except (ValueError, OSError) as exc:
            raise AdminError(str(exc)) from None

    def finish_execution(self, execution_id: str, status: str = "OK") -> None:
        """End a running execution now with ``status`` (a lab demo or a test ends a run by hand).

        :raises AdminError: no such execution, a status that is not terminal, or a run that has ended.
        """
        if status not in TERMINAL:
            raise AdminError(f"a run ends with one of: {', '.join(TERMINAL)}")
        try:
            found = self._store.finish_execution(execution_id, status, time.time())
        except ValueError as exc:
            raise AdminError(str(exc)) from None
        if not found:
            raise AdminError(f"no execution {execution_id}")

    def executions(self) -> list[tuple[str, str, str, str]]:
        """``(id, identifier, owner, pipeline version)`` of every execution."""
        return [
            (e.id, e.identifier, e.owner, f"{e.pipeline_name} {e.pipeline_version}")
            for e in self._store.list_executions()
        ]

"""The metadata database file: its schema, its connection and its transactions.

What every table group's part of the store (:mod:`._store_data`, :mod:`._store_search`,
:mod:`._store_jobs`, :mod:`._store_accounts`, :mod:`._store_samples`) builds on, apart
from them so that each part is a small class over one shared connection, and
:class:`._store.Store` adds only the group commit that runs them off the event loop.
Methods are synchronous and thread-safe: one connection behind a lock.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

DB_NAME = "flowxfer-server.db"


class StoreError(Exception):
    """A metadata operation refused (unknown user, duplicate name...)."""


_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE users (
        name     TEXT PRIMARY KEY,
        salt     BLOB NOT NULL,
        hash     BLOB NOT NULL,
        scrypt_n INTEGER NOT NULL,
        created  REAL NOT NULL
    );
    CREATE TABLE groups (
        name     TEXT PRIMARY KEY,
        created  REAL NOT NULL
    );
    CREATE TABLE group_members (
        group_name TEXT NOT NULL REFERENCES groups (name) ON DELETE CASCADE,
        user_name  TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
        PRIMARY KEY (group_name, user_name)
    ) WITHOUT ROWID;
    CREATE INDEX members_by_user ON group_members (user_name);
    CREATE TABLE data (
        id           TEXT PRIMARY KEY,
        owner        TEXT NOT NULL,
        filename     TEXT NOT NULL,
        data_type    TEXT,
        is_directory INTEGER NOT NULL DEFAULT 0,
        private      INTEGER NOT NULL DEFAULT 1,
        state        TEXT NOT NULL,
        size         INTEGER NOT NULL DEFAULT 0,
        checksum     TEXT,
        created      REAL NOT NULL,
        updated      REAL NOT NULL,
        error        TEXT
    );
    CREATE INDEX data_by_owner ON data (owner, created);
    CREATE INDEX data_by_state ON data (state, created);
    CREATE TABLE chunks (
        data_id  TEXT NOT NULL REFERENCES data (id) ON DELETE CASCADE,
        offset   INTEGER NOT NULL,
        size     INTEGER NOT NULL,
        checksum TEXT NOT NULL,
        PRIMARY KEY (data_id, offset)
    ) WITHOUT ROWID;
    CREATE TABLE grants (
        data_id TEXT NOT NULL REFERENCES data (id) ON DELETE CASCADE,
        kind    TEXT NOT NULL CHECK (kind IN ('user', 'group')),
        name    TEXT NOT NULL,
        level   INTEGER NOT NULL CHECK (level BETWEEN 1 AND 3),
        PRIMARY KEY (data_id, kind, name)
    ) WITHOUT ROWID;
    CREATE TABLE tree_files (
        data_id  TEXT NOT NULL REFERENCES data (id) ON DELETE CASCADE,
        path     TEXT NOT NULL,
        size     INTEGER NOT NULL,
        checksum TEXT NOT NULL,
        PRIMARY KEY (data_id, path)
    ) WITHOUT ROWID;
    CREATE TABLE jobs (
        id        TEXT PRIMARY KEY,
        owner     TEXT NOT NULL,
        name      TEXT NOT NULL,
        items     TEXT NOT NULL,
        status    TEXT NOT NULL,
        progress  REAL NOT NULL DEFAULT 0,
        size      INTEGER,
        checksum  TEXT,
        error     TEXT,
        created   REAL NOT NULL,
        completed REAL,
        expires   REAL
    );
    CREATE INDEX jobs_by_status ON jobs (status);
    """,
    # Samples (docs/protocol.md, "Samples"): projects, samples, their filesets and the data
    # linked into them in order. A data id appears in at most one fileset (UNIQUE), so a ready
    # file can never be linked twice, whatever a crash or a replay does.
    """
    ALTER TABLE data ADD COLUMN category INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE data ADD COLUMN reads1 TEXT;
    CREATE TABLE projects (
        id          TEXT PRIMARY KEY,
        owner       TEXT NOT NULL,
        name        TEXT NOT NULL,
        description TEXT NOT NULL DEFAULT '',
        private     INTEGER NOT NULL DEFAULT 1,
        created     REAL NOT NULL,
        UNIQUE (owner, name)
    );
    CREATE TABLE samples (
        id          TEXT PRIMARY KEY,
        owner       TEXT NOT NULL,
        name        TEXT NOT NULL,
        sample_type TEXT NOT NULL,
        project_id  TEXT REFERENCES projects (id),
        organism    TEXT,
        metadata    TEXT NOT NULL,
        private     INTEGER NOT NULL DEFAULT 1,
        created     REAL NOT NULL
    );
    CREATE INDEX samples_by_owner ON samples (owner, created);
    CREATE TABLE filesets (
        id        TEXT PRIMARY KEY,
        sample_id TEXT NOT NULL REFERENCES samples (id) ON DELETE CASCADE,
        created   REAL NOT NULL
    );
    CREATE INDEX filesets_by_sample ON filesets (sample_id);
    CREATE TABLE fileset_data (
        fileset_id TEXT NOT NULL REFERENCES filesets (id) ON DELETE CASCADE,
        position   INTEGER NOT NULL,
        data_id    TEXT NOT NULL UNIQUE REFERENCES data (id),
        PRIMARY KEY (fileset_id, position)
    ) WITHOUT ROWID;
    """,
    # Long-lived API keys: only a hash of each secret is kept (see _keys.py).
    """
    CREATE TABLE api_keys (
        id       TEXT PRIMARY KEY,
        owner    TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
        name     TEXT NOT NULL,
        hash     BLOB NOT NULL,
        created  REAL NOT NULL,
        expires  REAL
    );
    CREATE INDEX api_keys_by_owner ON api_keys (owner);
    """,
    # Executions (docs/protocol.md, "Executions"): pipeline runs registered by `admin execution add`
    # (this server runs no pipelines) and the data each process produced. ``schedule`` is a JSON list
    # of [unix time, status]: the status an execution shows is the last one whose time has come.
    """
    CREATE TABLE executions (
        id               TEXT PRIMARY KEY,
        identifier       TEXT NOT NULL UNIQUE,
        owner            TEXT NOT NULL,
        pipeline_name    TEXT NOT NULL,
        pipeline_version TEXT NOT NULL,
        sample_id        TEXT REFERENCES samples (id) ON DELETE SET NULL,
        private          INTEGER NOT NULL DEFAULT 1,
        nextflow_version TEXT NOT NULL DEFAULT '',
        schedule         TEXT NOT NULL,
        stdout           TEXT NOT NULL DEFAULT '',
        stderr           TEXT NOT NULL DEFAULT '',
        created          REAL NOT NULL
    );
    CREATE INDEX executions_by_owner ON executions (owner, created);
    CREATE INDEX executions_by_sample ON executions (sample_id, created);
    CREATE TABLE execution_outputs (
        execution_id TEXT NOT NULL REFERENCES executions (id) ON DELETE CASCADE,
        position     INTEGER NOT NULL,
        process_name TEXT NOT NULL,
        data_id      TEXT NOT NULL UNIQUE REFERENCES data (id),
        PRIMARY KEY (execution_id, position)
    ) WITHOUT ROWID;
""",
    # Parallel-chunk uploads [ext] (docs/protocol.md, "Parallel chunks"): the file's size and the
    # fixed chunk size its slots are cut by, declared when the upload is opened. A data row with no
    # line here is a strict-order upload.
    """
    CREATE TABLE parallel_uploads (
        data_id    TEXT PRIMARY KEY REFERENCES data (id) ON DELETE CASCADE,
        total      INTEGER NOT NULL,
        chunk_size INTEGER NOT NULL
    );
    """,
)


class StoreBase:
    """One SQLite connection (WAL, ``synchronous=FULL``), migrated to the current schema on opening."""

    def __init__(self, root: Path) -> None:
        self.path = Path(root) / DB_NAME
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute("PRAGMA foreign_keys=ON")
        self._conn.create_function(
            "casefold", 1, lambda s: s.casefold() if isinstance(s, str) else s, deterministic=True
        )
        #: Set by the group commit (:meth:`._store.Store._run_calls`) while it holds the lock:
        #: :meth:`_tx` then opens a SAVEPOINT inside the batch's transaction.
        self._grouping = False
        self._savepoints = 0
        self._migrate()

    def _migrate(self) -> None:
        with self._tx() as c:
            version = c.execute("PRAGMA user_version").fetchone()[0]
            if version > len(_MIGRATIONS):
                raise StoreError(f"{self.path} was written by a newer flowxfer (schema {version})")
            for number in range(version, len(_MIGRATIONS)):
                for statement in _MIGRATIONS[number].split(";"):
                    if statement.strip():
                        c.execute(statement)
            c.execute(f"PRAGMA user_version = {len(_MIGRATIONS)}")

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction (writers queue instead of failing on upgrade).

        Inside a group commit (:meth:`_run_calls`, which holds the lock) it is a
        SAVEPOINT instead: the call's changes still stand or fall together, and
        the batch's one COMMIT makes them durable with the others'.
        """
        with self._lock:
            if self._grouping:
                self._savepoints += 1
                name = f"call{self._savepoints}"
                self._conn.execute(f"SAVEPOINT {name}")
                try:
                    yield self._conn
                except BaseException:
                    self._conn.execute(f"ROLLBACK TO {name}")
                    self._conn.execute(f"RELEASE {name}")
                    raise
                self._conn.execute(f"RELEASE {name}")
                return
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _query(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[Any]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """The connection, held for several reads in a row (no transaction: each read sees what is committed)."""
        with self._lock:
            yield self._conn

    def close(self) -> None:
        with self._lock:
            self._conn.close()

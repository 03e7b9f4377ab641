"""The journal's schema, as ordered lists of forward migrations, one per backend.

SQLite: ``PRAGMA user_version`` holds the number of migrations applied.
PostgreSQL: the table ``schema_migrations`` does; its list starts at the
schema SQLite had reached at version 3 (PostgreSQL came then), so a fresh
database runs :data:`POSTGRES_MIGRATIONS` ``3``, ``4``, ``5``, then ``6``. Both reach
:data:`SCHEMA_VERSION` with the same tables and columns (the tests compare
them). A journal written by a newer flowxfer (a higher version than we
know) is refused rather than guessed at; an older one is migrated forward
inside one transaction. Never edit a released migration: append a new one,
to both lists (in the SQL both accept where possible, as ``_HOSTS`` is).
"""

from __future__ import annotations

#: 4: hosts. Every record a host writes says which host (``FLOWXFER_HOST_ID``, default the
#:    hostname), so a fleet sharing one PostgreSQL journal can tell its members' work apart.
_HOSTS = """
    ALTER TABLE transfers ADD COLUMN host TEXT NOT NULL DEFAULT '';
    ALTER TABLE files ADD COLUMN host TEXT NOT NULL DEFAULT '';
    ALTER TABLE inventory ADD COLUMN host TEXT NOT NULL DEFAULT '';
    ALTER TABLE buckets ADD COLUMN host TEXT NOT NULL DEFAULT '';
    ALTER TABLE packs ADD COLUMN host TEXT NOT NULL DEFAULT '';
    ALTER TABLE samples ADD COLUMN host TEXT NOT NULL DEFAULT '';
    ALTER TABLE sample_inventory ADD COLUMN host TEXT NOT NULL DEFAULT ''
"""

#: 5: a lease carries its holder's TTL. A lease is stale when its heartbeat is older than the TTL its
#:    holder runs with, not the one the host looking at it runs with: a host running with
#:    ``--lease-ttl 600`` (heartbeats up to 150 s apart) must not lose its work to one running with
#:    the default 60 s. Older rows get the default TTL, which is what every host used before.
_LEASE_TTL = "ALTER TABLE leases ADD COLUMN ttl {real} NOT NULL DEFAULT 60"

#: 6: room in ``chunks``' pages for their rows' next versions (PostgreSQL only; SQLite updates a row
#:    in place). A chunk's row is written once by its plan and updated once or twice after
#:    (``acked`` with its checksum, then ``verified``); in pages filled to 100% each update put the
#:    row's new version on another page and a new entry in the primary key's index. With 60% of
#:    each new page kept free the update stays on the page (a HOT update: no index entry), which
#:    halved the WAL and took about 60% off the server's time per updated chunk (EXPLAIN ANALYZE,
#:    128 chunks: 0.63 to 0.24 ms). 60%, not 50%: a batch acknowledging every chunk of a page
#:    in one transaction needs room for all their new versions at once, each about 45% longer
#:    than the planned row (the checksum). Pages already written keep their layout; new plans get
#:    the room.
_CHUNKS_FILLFACTOR = "ALTER TABLE chunks SET (fillfactor = 40)"

MIGRATIONS: tuple[str, ...] = (
    # 1: transfers, their files and chunks, the inventory of what is known to
    #    be on each server, rate-limit buckets and leases.
    """
    CREATE TABLE transfers (
        id          TEXT PRIMARY KEY,
        kind        TEXT NOT NULL,
        status      TEXT NOT NULL,
        server      TEXT NOT NULL,
        username    TEXT NOT NULL DEFAULT '',
        params      TEXT NOT NULL,
        params_key  TEXT NOT NULL,
        state       TEXT NOT NULL DEFAULT '{}',
        created     REAL NOT NULL,
        updated     REAL NOT NULL,
        finished    REAL,
        error       TEXT
    );
    CREATE INDEX transfers_by_key ON transfers (params_key, created);
    CREATE INDEX transfers_by_status ON transfers (status, updated);

    CREATE TABLE files (
        id          INTEGER PRIMARY KEY,
        transfer_id TEXT NOT NULL REFERENCES transfers (id) ON DELETE CASCADE,
        local_path  TEXT NOT NULL,
        remote_name TEXT NOT NULL DEFAULT '',
        data_id     TEXT,
        size        INTEGER NOT NULL DEFAULT 0,
        mtime_ns    INTEGER,
        chunk_size  INTEGER NOT NULL DEFAULT 0,
        checksum    TEXT,
        etag        TEXT,
        status      TEXT NOT NULL,
        bytes_done  INTEGER NOT NULL DEFAULT 0,
        attempts    INTEGER NOT NULL DEFAULT 0,
        error       TEXT,
        extra       TEXT NOT NULL DEFAULT '{}',
        updated     REAL NOT NULL
    );
    CREATE UNIQUE INDEX files_by_path ON files (transfer_id, local_path);
    CREATE INDEX files_by_status ON files (transfer_id, status);

    CREATE TABLE chunks (
        file_id     INTEGER NOT NULL REFERENCES files (id) ON DELETE CASCADE,
        idx         INTEGER NOT NULL,
        offset      INTEGER NOT NULL,
        size        INTEGER NOT NULL,
        checksum    TEXT,
        state       TEXT NOT NULL,
        PRIMARY KEY (file_id, idx)
    ) WITHOUT ROWID;

    CREATE TABLE inventory (
        server      TEXT NOT NULL,
        username    TEXT NOT NULL,
        direction   TEXT NOT NULL,
        local_path  TEXT NOT NULL,
        remote      TEXT NOT NULL,
        size        INTEGER NOT NULL,
        mtime_ns    INTEGER NOT NULL,
        checksum    TEXT,
        data_id     TEXT NOT NULL,
        superseded  TEXT NOT NULL DEFAULT '[]',
        recorded    REAL NOT NULL,
        PRIMARY KEY (server, username, direction, local_path, remote)
    ) WITHOUT ROWID;

    CREATE TABLE buckets (
        server      TEXT NOT NULL,
        username    TEXT NOT NULL,
        class       TEXT NOT NULL,
        state       TEXT NOT NULL,
        updated     REAL NOT NULL,
        PRIMARY KEY (server, username, class)
    ) WITHOUT ROWID;

    CREATE TABLE leases (
        key         TEXT PRIMARY KEY,
        token       TEXT NOT NULL,
        pid         INTEGER NOT NULL,
        host        TEXT NOT NULL,
        since       REAL NOT NULL,
        heartbeat   REAL NOT NULL,
        what        TEXT NOT NULL DEFAULT ''
    ) WITHOUT ROWID;
    """,
    # 2: sync. Files get the planning generation that last wanted them and a
    #    key saying what exactly was planned (a packed tar's manifest), so a
    #    re-planned sync keeps in-progress uploads of unchanged files and drops
    #    rows nothing wants any more. ``packs`` is the inventory of packed tars
    #    (``sync --pack-small``): one row per tar on a server, keyed by its
    #    virtual path (folder + tar name); ``pack_members`` lists which files
    #    went into the tar with a given manifest digest.
    """
    ALTER TABLE files ADD COLUMN plan_gen INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE files ADD COLUMN plan_key TEXT;

    CREATE TABLE packs (
        server      TEXT NOT NULL,
        username    TEXT NOT NULL,
        local_path  TEXT NOT NULL,
        remote      TEXT NOT NULL,
        manifest    TEXT NOT NULL,
        data_id     TEXT NOT NULL,
        size        INTEGER NOT NULL,
        checksum    TEXT,
        members     INTEGER NOT NULL,
        superseded  TEXT NOT NULL DEFAULT '[]',
        recorded    REAL NOT NULL,
        PRIMARY KEY (server, username, local_path)
    ) WITHOUT ROWID;
    CREATE INDEX packs_by_manifest ON packs (manifest);

    CREATE TABLE pack_members (
        manifest    TEXT NOT NULL,
        arcname     TEXT NOT NULL,
        local_path  TEXT NOT NULL,
        size        INTEGER NOT NULL,
        mtime_ns    INTEGER NOT NULL,
        PRIMARY KEY (manifest, arcname)
    ) WITHOUT ROWID;
    """,
    # 3: samples (``samples upload-batch``, ``sync --samples``). ``samples``: one
    #    row per sheet row of a transfer: the fields sent on every chunk, the
    #    ids of its files sent so far (``previous_data``), the sample's id once
    #    the server made it, and since when it was being sent (a lost final
    #    answer is looked for on the server from then on). Its files are rows
    #    of ``files`` (``extra``: the sample's row and the file's position).
    #    ``sample_inventory``: the samples known to be on each server, by name,
    #    so a re-run creates nothing.
    """
    CREATE TABLE samples (
        transfer_id   TEXT NOT NULL REFERENCES transfers (id) ON DELETE CASCADE,
        row           INTEGER NOT NULL,
        name          TEXT NOT NULL,
        fields        TEXT NOT NULL DEFAULT '{}',
        status        TEXT NOT NULL,
        previous_data TEXT NOT NULL DEFAULT '[]',
        sample_id     TEXT,
        started       REAL,
        error         TEXT,
        updated       REAL NOT NULL,
        PRIMARY KEY (transfer_id, row)
    ) WITHOUT ROWID;

    CREATE TABLE sample_inventory (
        server      TEXT NOT NULL,
        username    TEXT NOT NULL,
        name        TEXT NOT NULL,
        sample_id   TEXT NOT NULL,
        fields      TEXT NOT NULL DEFAULT '{}',
        data_ids    TEXT NOT NULL DEFAULT '[]',
        recorded    REAL NOT NULL,
        PRIMARY KEY (server, username, name)
    ) WITHOUT ROWID;
    """,
    _HOSTS,
    _LEASE_TTL.format(real="REAL"),
    # 6: nothing to do on SQLite (see ``_CHUNKS_FILLFACTOR``); the version moves on with PostgreSQL's.
    "",
)

SCHEMA_VERSION = len(MIGRATIONS)

#: PostgreSQL's migrations as ``(version reached, script)``: the schema of SQLite's versions 1-3 at
#: once, then the same steps as SQLite. Types: REAL is DOUBLE PRECISION, sizes and ids BIGINT,
#: ``INTEGER PRIMARY KEY`` an identity column.
POSTGRES_MIGRATIONS: tuple[tuple[int, str], ...] = (
    (
        3,
        """
    CREATE TABLE transfers (
        id          TEXT PRIMARY KEY,
        kind        TEXT NOT NULL,
        status      TEXT NOT NULL,
        server      TEXT NOT NULL,
        username    TEXT NOT NULL DEFAULT '',
        params      TEXT NOT NULL,
        params_key  TEXT NOT NULL,
        state       TEXT NOT NULL DEFAULT '{}',
        created     DOUBLE PRECISION NOT NULL,
        updated     DOUBLE PRECISION NOT NULL,
        finished    DOUBLE PRECISION,
        error       TEXT
    );
    CREATE INDEX transfers_by_key ON transfers (params_key, created);
    CREATE INDEX transfers_by_status ON transfers (status, updated);

    CREATE TABLE files (
        id          BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        transfer_id TEXT NOT NULL REFERENCES transfers (id) ON DELETE CASCADE,
        local_path  TEXT NOT NULL,
        remote_name TEXT NOT NULL DEFAULT '',
        data_id     TEXT,
        size        BIGINT NOT NULL DEFAULT 0,
        mtime_ns    BIGINT,
        chunk_size  BIGINT NOT NULL DEFAULT 0,
        checksum    TEXT,
        etag        TEXT,
        status      TEXT NOT NULL,
        bytes_done  BIGINT NOT NULL DEFAULT 0,
        attempts    BIGINT NOT NULL DEFAULT 0,
        error       TEXT,
        extra       TEXT NOT NULL DEFAULT '{}',
        updated     DOUBLE PRECISION NOT NULL,
        plan_gen    BIGINT NOT NULL DEFAULT 0,
        plan_key    TEXT
    );
    CREATE UNIQUE INDEX files_by_path ON files (transfer_id, local_path);
    CREATE INDEX files_by_status ON files (transfer_id, status);

    CREATE TABLE chunks (
        file_id     BIGINT NOT NULL REFERENCES files (id) ON DELETE CASCADE,
        idx         BIGINT NOT NULL,
        "offset"    BIGINT NOT NULL,
        size        BIGINT NOT NULL,
        checksum    TEXT,
        state       TEXT NOT NULL,
        PRIMARY KEY (file_id, idx)
    );

    CREATE TABLE inventory (
        server      TEXT NOT NULL,
        username    TEXT NOT NULL,
        direction   TEXT NOT NULL,
        local_path  TEXT NOT NULL,
        remote      TEXT NOT NULL,
        size        BIGINT NOT NULL,
        mtime_ns    BIGINT NOT NULL,
        checksum    TEXT,
        data_id     TEXT NOT NULL,
        superseded  TEXT NOT NULL DEFAULT '[]',
        recorded    DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (server, username, direction, local_path, remote)
    );

    CREATE TABLE buckets (
        server      TEXT NOT NULL,
        username    TEXT NOT NULL,
        class       TEXT NOT NULL,
        state       TEXT NOT NULL,
        updated     DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (server, username, class)
    );

    CREATE TABLE leases (
        key         TEXT PRIMARY KEY,
        token       TEXT NOT NULL,
        pid         BIGINT NOT NULL,
        host        TEXT NOT NULL,
        since       DOUBLE PRECISION NOT NULL,
        heartbeat   DOUBLE PRECISION NOT NULL,
        what        TEXT NOT NULL DEFAULT ''
    );

    CREATE TABLE packs (
        server      TEXT NOT NULL,
        username    TEXT NOT NULL,
        local_path  TEXT NOT NULL,
        remote      TEXT NOT NULL,
        manifest    TEXT NOT NULL,
        data_id     TEXT NOT NULL,
        size        BIGINT NOT NULL,
        checksum    TEXT,
        members     BIGINT NOT NULL,
        superseded  TEXT NOT NULL DEFAULT '[]',
        recorded    DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (server, username, local_path)
    );
    CREATE INDEX packs_by_manifest ON packs (manifest);

    CREATE TABLE pack_members (
        manifest    TEXT NOT NULL,
        arcname     TEXT NOT NULL,
        local_path  TEXT NOT NULL,
        size        BIGINT NOT NULL,
        mtime_ns    BIGINT NOT NULL,
        PRIMARY KEY (manifest, arcname)
    );

    CREATE TABLE samples (
        transfer_id   TEXT NOT NULL REFERENCES transfers (id) ON DELETE CASCADE,
        "row"         BIGINT NOT NULL,
        name          TEXT NOT NULL,
        fields        TEXT NOT NULL DEFAULT '{}',
        status        TEXT NOT NULL,
        previous_data TEXT NOT NULL DEFAULT '[]',
        sample_id     TEXT,
        started       DOUBLE PRECISION,
        error         TEXT,
        updated       DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (transfer_id, "row")
    );

    CREATE TABLE sample_inventory (
        server      TEXT NOT NULL,
        username    TEXT NOT NULL,
        name        TEXT NOT NULL,
        sample_id   TEXT NOT NULL,
        fields      TEXT NOT NULL DEFAULT '{}',
        data_ids    TEXT NOT NULL DEFAULT '[]',
        recorded    DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (server, username, name)
    );
    """,
    ),
    (4, _HOSTS),
    (5, _LEASE_TTL.format(real="DOUBLE PRECISION")),
    (6, _CHUNKS_FILLFACTOR),
)

assert POSTGRES_MIGRATIONS[-1][0] == SCHEMA_VERSION, "both backends must reach the same schema version"


def split_sql(script: str) -> list[str]:
    """A migration's statements (no migration has a ``;`` inside a statement)."""
    return [statement.strip() for statement in script.split(";") if statement.strip()]

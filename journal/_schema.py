"""The journal's schema, as an ordered list of forward migrations.

``PRAGMA user_version`` holds the number of migrations applied. A journal
written by a newer flowxfer (a higher version than we know) is refused rather
than guessed at; an older one is migrated forward inside one transaction.
Never edit a released migration: append a new one.
"""

from __future__ import annotations

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
)

SCHEMA_VERSION = len(MIGRATIONS)

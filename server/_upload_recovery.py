"""Start-up recovery of uploads: finish what a crash interrupted, clear what nobody was told of.

Run once before the server answers anything (:func:`._app._startup`), in a
worker thread: it completes uploads recorded ``finalizing`` (the move into
the data folder, a directory's tree), fails those whose bytes were lost,
and sets aside or removes files no record names (see :mod:`._uploads` for
the durability contract this relies on).
"""

from __future__ import annotations

import logging
import os
import shutil

from flowxfer._os import fsync_dir

from ._config import ServerConfig
from ._ids import is_id
from ._state import Layout
from ._store import FAILED, FINALIZING, READY, Store
from ._unpack import UnpackError, unpack
from ._upload_disk import move_into_place, unlink, unpack_limits

log = logging.getLogger("flowxfer.server.uploads")


def recover_uploads(layout: Layout, store: Store, config: ServerConfig) -> None:
    """Start-up: finish interrupted finalizes, drop spools, temp trees and orphan partials (blocking)."""
    for folder in (layout.spool,):
        for path in folder.iterdir():
            unlink(path)
    for path in layout.trees.glob("*.tmp"):
        shutil.rmtree(path, ignore_errors=True)
    for row in store.data_in_state(FINALIZING):
        partial = layout.partial / row.id
        final = layout.data / row.id
        if partial.exists():
            if partial.stat().st_size < row.size:
                store.set_state(row.id, FAILED, "the upload's bytes were lost")
                continue
            os.truncate(partial, row.size)  # never more than what was recorded
            os.replace(partial, final)
            fsync_dir(layout.data)
        if not final.exists():
            store.set_state(row.id, FAILED, "the upload's bytes were lost")
            continue
        tmp = None
        if row.is_directory:
            # Rebuild the tree from the archive: a crash may have torn it.
            shutil.rmtree(layout.trees / row.id, ignore_errors=True)
            tmp = layout.trees / f"{row.id}.tmp"
            try:
                tree = unpack(final, tmp, unpack_limits(config))
            except UnpackError as exc:
                store.set_state(row.id, FAILED, str(exc))
                continue
            store.replace_tree(row.id, tree)
        move_into_place(layout, row.id, tmp)
        store.set_state(row.id, READY)
    known = store.all_data_ids()
    orphans = [
        path
        for path in layout.data.iterdir()
        if path.name not in known and is_id(path.name) and path.is_file() and not path.is_symlink()
    ]
    if orphans:
        # Usually a whole upload written but not recorded (:func:`._upload_whole.store_whole`): nobody was told
        # its id. Set aside, not deleted: a database restored from an older backup names fewer
        # files than data/ holds, and those bytes are worth keeping.
        layout.orphans.mkdir(exist_ok=True)
        for path in orphans:
            os.replace(path, layout.orphans / path.name)
        fsync_dir(layout.data)
        log.warning("moved %d file(s) that no record names from %s to %s", len(orphans), layout.data, layout.orphans)
    for path in layout.partial.iterdir():
        if path.name not in known:
            # A first chunk that never got recorded: nobody was told its id.
            unlink(path)
            continue
        found = store.get_data(path.name)
        if found is not None and found.state == READY and (layout.data / path.name).exists():
            # A rename whose removal of the old name a crash undid: a second name, not data.
            unlink(path)

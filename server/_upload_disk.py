"""The blocking file operations of an upload, run in the I/O threads: partial files, whole writes, the move.

Each is one worker-thread call, ordered for durability (the data's bytes,
then the folder entry that names them); kept apart from the request logic in
:mod:`._uploads` and shared with start-up recovery (:mod:`._upload_recovery`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from flowxfer._os import Buffer, fsync_dir, pwrite_pieces
from flowxfer.protocol import format_checksum, new_hasher

from ._config import ServerConfig
from ._http import ApiError
from ._sink import hash_pieces
from ._state import Layout
from ._unpack import UnpackLimits


def unpack_limits(config: ServerConfig) -> UnpackLimits:
    """The bounds a directory upload's archive is unpacked within."""
    return UnpackLimits(config.max_archive_members, config.max_unpacked_bytes, config.max_unpacked_ratio)


def open_new(path: Path, durable_entry: bool = True) -> int:
    """Create a partial file; make its name durable when a later chunk will need to find it.

    An upload whose first chunk is also its last is renamed into the data
    folder (and that folder fsynced) before it is answered, so the partial
    folder's entry never has to survive a crash: one disk flush saved per
    small file.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    if durable_entry:
        fsync_dir(path.parent)
    return fd


def open_existing(path: Path, held: int) -> int:
    """Reopen a partial file to continue it at ``held`` bytes, what SQLite says was acknowledged.

    :raises ApiError: 409 when the file is shorter than that (its bytes were lost).
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        if os.fstat(fd).st_size < held:
            raise ApiError(409, "the server lost bytes of this upload; start it again")
        # Drop any torn tail a crash left beyond what was acknowledged.
        os.ftruncate(fd, held)
    except BaseException:
        os.close(fd)
        raise
    return fd


def unlink(path: Path) -> None:
    """Remove ``path`` if it is there: cleanup paths run after failures that may have removed it already."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def close_partial(fd: int, truncate_to: int | None, remove: Path | None) -> None:
    try:
        if truncate_to is not None:
            os.ftruncate(fd, truncate_to)
    finally:
        os.close(fd)
    if remove is not None:
        with contextlib.suppress(FileNotFoundError):
            remove.unlink()


def write_whole(path: Path, pieces: Sequence[Buffer], expected: tuple[str | None, ...]) -> str:
    """Hash; if every ``expected`` checksum given matches, write ``path``'s bytes durably (blocking).

    Its name is not durable yet: the commit that records it flushes the folder first.

    A write that fails (a full disk) removes what it made.
    """
    hasher = new_hasher()
    hash_pieces(pieces, (hasher,))
    checksum = format_checksum(hasher.hexdigest())
    if any(e is not None and e != checksum for e in expected):
        return checksum
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        try:
            pwrite_pieces(fd, pieces, 0)
            os.fdatasync(fd)
        finally:
            os.close(fd)
    except BaseException:
        unlink(path)
        raise
    return checksum


def move_into_place(
    layout: Layout, data_id: str, tree_tmp: Path | None, fd: int = -1, *, flush_data: bool = True
) -> None:
    """Close the partial file, move it (and its unpacked tree) into place, durably (blocking).

    One worker-thread call for all of it: a small upload's finish is one
    hop, not two.

    :param flush_data: False when the caller flushes the data folder itself before it
        records the upload ready (:meth:`Store.run_after_flushing`: one flush for every
        upload finishing at once); until then the row says ``finalizing``, which
        start-up recovery completes whichever name the file has.
    """
    if fd >= 0:
        os.close(fd)
    partial = layout.partial / data_id
    final = layout.data / data_id
    if partial.exists():
        os.replace(partial, final)
        # The data folder's flush makes the rename durable (one journaled metadata
        # operation); should a crash resurrect the partial name anyway, start-up
        # recovery unlinks it (a second name for the same inode, nothing lost).
        if flush_data:
            fsync_dir(layout.data)
    if tree_tmp is not None:
        tree_final = layout.trees / data_id
        shutil.rmtree(tree_final, ignore_errors=True)
        os.replace(tree_tmp, tree_final)
        fsync_dir(layout.trees)

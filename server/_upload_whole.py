"""A new upload that arrives whole in one small request: the short road, with the same guarantee.

A folder of small files is mostly uploads of one chunk; for them the
server's per-file work, not the bytes, is the cost. Such an upload's blob
stays in memory until the form is read, its checksum is checked before a
byte is written, the file is written straight into the data folder and made
durable (file and folder flushed), and only then is its row committed,
directly as ``ready``. A crash before that commit leaves a file no client was
told about, which start-up sets aside in ``orphans/``
(:func:`._upload_recovery.recover_uploads`). :mod:`._uploads` decides which
road a chunk takes and calls these.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from flowxfer._os import Buffer
from flowxfer.protocol import format_checksum, new_hasher

from ._http import ApiError, ShapedError, json_response
from ._sink import Received, write_and_sync, write_for_fdatasync
from ._state import State
from ._store import READY, ChunkRow, DataRow, FlushError
from ._store_samples import SampleRefused
from ._upload_chunk import Chunk, ChunkMeta, Target
from ._upload_disk import open_new, unlink, write_whole

__all__ = ["WHOLE_IN_MEMORY", "spill_whole", "store_whole"]

#: A new upload sent whole in one request of at most this many body bytes is
#: kept in memory until its form is read, then verified, written straight into
#: the data folder and made durable in one worker-thread call, and recorded
#: ready in one (group) commit (:func:`store_whole`): for a
#: folder of small files the server's per-file work, not the bytes, is the cost.
#: All such uploads together hold at most ``config.whole_uploads_in_memory``
#: bytes; one that would go beyond it takes the streamed road.
WHOLE_IN_MEMORY = 1024 * 1024


async def store_whole(
    state: State, user: str, meta: ChunkMeta, chunk: Chunk, pieces: list[Buffer]
) -> web.StreamResponse:
    """A new upload that came whole in this request: verify, store, record ready.

    The checksum is computed and compared before a byte is written (a
    damaged upload leaves nothing behind); the file goes straight into the
    data folder, ``fdatasync``ed; the store then ``fsync``s the folder,
    once for every upload in its next batch, and only then commits the
    row, directly as ``ready``. A crash before that commit leaves a file
    nobody was told of, which start-up sets aside (:func:`._upload_recovery.recover_uploads`).
    """
    target, prepared = chunk.target, chunk.prepared
    assert target is not None and prepared is not None
    size = sum(len(piece) for piece in pieces)
    checksum = await state.run_io(write_whole, target.path, pieces, (meta.checksum, meta.file_checksum))
    if meta.checksum is not None and meta.checksum != checksum:
        raise ApiError(422, "checksum mismatch", expected=meta.checksum, received=checksum)
    if meta.file_checksum is not None and meta.file_checksum != checksum:
        raise ApiError(422, "file checksum mismatch", expected=meta.file_checksum, received=checksum)
    target.written = True
    await chunk.route.check_file(target.path, meta.filename, chunk.fields)
    now = time.time()
    row = DataRow(target.data_id, user, meta.filename, meta.data_type, False, True, READY, 0, None, now, now, None)
    record = ChunkRow(0, size, checksum) if size else None
    # Once handed over, the commit may stand even if this request is cancelled while it waits:
    # from here the file is never removed by this request (a failed commit leaves an orphan
    # that start-up sets aside), so no ready record can lose its file.
    target.commit_sent = True
    try:
        await state.store.run_after_flushing(
            target.path.parent,
            state.store.commit_chunk,
            target.data_id,
            0,
            record,
            new=row,
            final_checksum=checksum,
            ready=True,
            kind=prepared.kind,
            sample=prepared.sample,
        )
    except SampleRefused as exc:
        # Checked again in the commit's transaction, which rolled back: no record names the file.
        await state.run_io(unlink, target.path)
        raise ShapedError(400, {"error": exc.error}) from None
    except FlushError:
        # The folder could not be flushed, so the commit was never run and no record can name
        # the file: remove it now, rather than leave one orphan per upload on a failing disk.
        await state.run_io(unlink, target.path)
        raise
    target.committed = True
    body: dict[str, Any] = {
        "id": target.data_id,
        "data_id": target.data_id,
        "filename": meta.filename,
        "size": size,
        "is_ready": True,
        **prepared.answer,
    }
    if state.config.extensions:
        body["checksum"] = checksum
    return json_response(body)


async def spill_whole(state: State, target: Target, pieces: list[Buffer]) -> Received:
    """Turn a whole upload kept in memory into a regular one: its bytes in a durable partial file."""
    target.whole = False
    target.path = state.layout.partial / target.data_id
    target.file_hasher = hasher = new_hasher()
    target.fd = await state.run_io(open_new, target.path, False)
    await state.run_io(write_and_sync, write_for_fdatasync, target.fd, pieces, 0, (hasher,), True)
    return Received(sum(len(piece) for piece in pieces), format_checksum(hasher.hexdigest()))

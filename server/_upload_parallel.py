"""Parallel-chunk uploads [ext]: one file's chunks at their offsets, in any order, on any connection.

The strict chunk protocol (:mod:`._uploads`) puts one file on one connection,
one chunk after another's answer; on a long path where one TCP connection is
capped below the link, a single large file then uses a fraction of it. Here
the upload is opened with its size and a fixed chunk size, which cut the file
into slots (``offset = k × chunk_size``); each chunk is streamed into its slot
of the partial file, ``fdatasync``ed, checked against its checksum and
recorded before its 2xx, exactly as a strict chunk is. The durability
contract is the strict one's, slot by slot:

- only a request holding a slot's lock writes into that slot, and only while
  the slot is unrecorded; a recorded slot is never written again (a chunk
  sent twice is hashed and compared, not stored: the same bytes answer 200,
  different bytes 409);
- a torn or refused chunk leaves its slot unrecorded: its bytes may sit in
  the file, but assembly needs every slot recorded, so they are never part of
  a finished file;
- ``finish`` verifies that every slot is recorded, hashes the whole file and
  compares it with the client's ``file_checksum``, unpacks a directory
  upload's archive (the strict last chunk's own code), then commits
  ``finalizing``, renames the file into ``data/`` and marks it ready (the
  strict upload's last steps, so start-up recovery finishes it the same way).

The whole-file hash is computed while the upload runs: each recorded chunk
that extends the hashed prefix is read back (:class:`_Assembly`), so
``finish`` has at most the last few chunks left to read. While chunks are
still to come the read goes past the page cache, as the chunks were written
(:func:`feed_file_direct`: a third of the CPU); once all but a quarter of the
slots are recorded, or a ``finish`` waits, the rest goes through it, whose
read-ahead had the finish answered sooner.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from flowxfer.protocol import filename_problem, format_checksum, new_hasher

from ._http import ApiError, bad_request, json_response, not_found, read_json
from ._ids import is_id, new_id
from ._sink import Sink, feed_file, feed_file_direct
from ._state import RATE, charge, user_of
from ._store import READY, UPLOADING, ChunkRow, DataRow, StoreError
from ._unpack import StagedUnpack
from ._upload_chunk import Chunk, Target, checksum_field, parse_meta
from ._upload_disk import move_into_place, open_new, unpack_limits

if TYPE_CHECKING:
    from ._uploads import UploadManager

log = logging.getLogger("flowxfer.server.uploads")

#: Missing slots listed in a refused ``finish`` (the count is always given).
MAX_MISSING_LISTED = 1000


@dataclass
class _Assembly:
    """The whole-file hash of one upload so far: its chunks from offset 0 up to ``upto``."""

    hasher: Any = field(default_factory=new_hasher)
    upto: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: A directory archive's head start (:class:`StagedUnpack`); None until known, False for a plain file.
    staged: StagedUnpack | None | bool = None
    #: The upload's slots (None: not asked yet).
    slots: int | None = None
    #: A finish waits for the hash: the rest is read the fastest way, not the cheapest.
    hurry: bool = False


def slots(total: int, chunk_size: int) -> list[tuple[int, int]]:
    """``(offset, size)`` of every slot of a ``total``-byte file cut into ``chunk_size`` chunks."""
    return [(offset, min(chunk_size, total - offset)) for offset in range(0, total, chunk_size)]


class ParallelUploads:
    """The three parallel-chunk endpoints; the chunk itself goes through the manager's multipart reader."""

    def __init__(self, manager: UploadManager) -> None:
        self.manager = manager
        self.state = manager.state
        self.store = manager.store
        #: data id -> offset -> the lock of that slot (only its holder writes into the slot).
        self._slot_locks: dict[str, dict[int, asyncio.Lock]] = {}
        self._finish_locks: dict[str, asyncio.Lock] = {}
        self._assemblies: dict[str, _Assembly] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    # --- POST /upload/parallel ---------------------------------------------------

    async def open(self, request: web.Request) -> web.StreamResponse:
        """Open an upload of ``size`` bytes whose chunks of ``chunk_size`` bytes may come in any order."""
        try:
            user = user_of(request)
            config = self.state.config
            body = await read_json(request, config.max_json_bytes, config.max_json_depth)
            filename = body.get("filename")
            if not isinstance(filename, str):
                bad_request("filename is required (a string)")
            problem = filename_problem(filename)
            if problem:
                raise ApiError(400, problem, filename=[problem])
            total = _count(body, "size", 2**62)
            chunk_size = _count(body, "chunk_size", config.max_chunk_size)
            if chunk_size == 0:
                bad_request("chunk_size must be at least 1")
            data_type = body.get("data_type")
            if data_type is not None and (not isinstance(data_type, str) or len(data_type) > 255):
                bad_request("data_type must be a string of at most 255 characters")
            is_directory = body.get("is_directory", False)
            if not isinstance(is_directory, bool):
                bad_request("is_directory must be true or false")
            charge(request, "upload")
        except ApiError:
            if request.get(RATE) is None:
                charge(request, "api")
            raise
        now = time.time()
        row = DataRow(
            new_id(), user, filename, data_type or None, is_directory, True, UPLOADING, 0, None, now, now, None
        )
        path = self.state.layout.partial / row.id
        # The file (and its folder entry) first: a crash before the record leaves a partial
        # file no record names, which start-up recovery removes; nobody was told its id.
        fd = await self.state.run_io(open_new, path, True)
        await self.state.run_io(os.close, fd)
        await self.store.run(self.store.open_parallel, row, total, chunk_size)
        return json_response(
            {
                "id": row.id,
                "data_id": row.id,
                "filename": filename,
                "size": 0,
                "total": total,
                "chunk_size": chunk_size,
                "is_directory": is_directory,
                "is_ready": False,
            }
        )

    # --- POST /upload/parallel/<id>: one chunk (multipart, read by the manager) ---------------

    async def open_blob(self, request: web.Request, user: str, chunk: Chunk) -> Sink:
        """The blob of a chunk begins: where it goes (its slot), or only hashed when the slot is taken."""
        fields = chunk.fields
        if not {"filename", "expected_file_size"} <= fields.keys():
            bad_request("filename and expected_file_size must come before the blob")
        meta = parse_meta(fields, True)
        data_id = request.match_info["data_id"]
        if meta.data_id is not None and meta.data_id != data_id:
            bad_request("data differs from the upload in the path")
        row = await self.store.run(self.store.get_data, data_id) if is_id(data_id) else None
        if row is None or row.owner != user:
            charge(request, "upload")
            not_found("no upload with that id is yours to continue")
        charge(request, "upload", count=False)
        plan = await self.store.run(self.store.parallel_plan, data_id)
        if plan is None:
            bad_request("not a parallel-chunk upload: continue it with POST /upload")
        total, chunk_size = plan
        if meta.filename != row.filename:
            bad_request(f"filename differs from the upload's ({row.filename})")
        offset = meta.offset
        if offset % chunk_size or offset >= total:
            bad_request(
                f"{offset} is not where a chunk of this upload starts ({total} bytes, {chunk_size}-byte chunks)"
            )
        due = min(chunk_size, total - offset)
        lock = self._slot_locks.setdefault(data_id, {}).setdefault(offset, asyncio.Lock())
        await lock.acquire()
        target = chunk.target = Target(data_id, self.state.layout.partial / data_id, offset, False, row, lock=lock)
        target.parallel = True
        target.due = due
        held = await self.store.run(self.store.chunk_at, data_id, offset)
        row = await self.store.run(self.store.get_data, data_id)
        assert row is not None
        if held is not None:
            # Sent before: compare, never write into an acknowledged slot.
            target.replay = True
            target.held = held
            return Sink(self.state.io, due, -1, offset, (new_hasher(),), fsync=False, keep=False)
        if row.state != UPLOADING:
            bad_request(f"upload is {row.state}: no more chunks are taken")
        try:
            target.fd = await self.state.run_io(os.open, target.path, os.O_WRONLY)
        except FileNotFoundError:
            raise ApiError(409, "the server lost bytes of this upload; start it again") from None
        return Sink(self.state.io, due, target.fd, offset, (new_hasher(),), fsync=True)

    async def finish_chunk(self, chunk: Chunk) -> web.StreamResponse:
        """The blob is in its slot and flushed: check it and record it (or compare a repeat)."""
        target, received = chunk.target, chunk.received
        if target is None or received is None:
            bad_request("blob is required")
        meta = parse_meta(chunk.fields, True)
        if received.size != target.due:
            bad_request(f"the chunk at {target.offset} must be {target.due} bytes, not {received.size}")
        if meta.checksum is not None and meta.checksum != received.checksum:
            raise ApiError(422, "checksum mismatch", expected=meta.checksum, received=received.checksum)
        mine = ChunkRow(target.offset, received.size, received.checksum)
        held = target.held
        if held is None:
            try:
                held = await self.store.run(self.store.commit_parallel_chunk, target.data_id, mine)
            except StoreError:
                bad_request("the upload is not open any more")
            target.committed = True
            if held is None:
                self._kick(target.data_id)
        if held is not None and (held.size, held.checksum) != (mine.size, mine.checksum):
            raise ApiError(
                409,
                f"the server holds different bytes at offset {target.offset}",
                offset=target.offset,
                checksum=held.checksum,
            )
        return json_response(
            {
                "id": target.data_id,
                "data_id": target.data_id,
                "offset": target.offset,
                "size": received.size,
                "checksum": received.checksum,
            }
        )

    # --- POST /upload/parallel/<id>/finish ---------------------------------------------------

    async def finish(self, request: web.Request) -> web.StreamResponse:
        """Assemble: every slot recorded, the whole file's checksum matched, then ready (idempotent)."""
        user = user_of(request)
        data_id = request.match_info["data_id"]
        row = await self.store.run(self.store.get_data, data_id) if is_id(data_id) else None
        if row is None or row.owner != user:
            charge(request, "api")
            not_found("no upload with that id is yours")
        charge(request, "upload", count=False)
        config = self.state.config
        body = await read_json(request, config.max_json_bytes, config.max_json_depth)
        value = body.get("file_checksum")
        if value is not None and not isinstance(value, str):
            bad_request("file_checksum must read xxh3-128:<32 hex digits>")
        expected = checksum_field({"file_checksum": value or ""}, "file_checksum")
        plan = await self.store.run(self.store.parallel_plan, data_id)
        if plan is None:
            bad_request("not a parallel-chunk upload: its last chunk finishes it")
        total, chunk_size = plan
        lock = self._finish_locks.setdefault(data_id, asyncio.Lock())
        async with lock:
            row = await self.store.run(self.store.get_data, data_id)
            assert row is not None
            if row.state == READY:
                checksum = row.checksum
            elif row.state != UPLOADING:
                bad_request(f"upload {row.state}: {row.error or 'it cannot be finished'}")
            else:
                chunks = await self.store.run(self.store.chunks, data_id)
                held = {c.offset for c in chunks}
                missing = [(o, s) for o, s in slots(total, chunk_size) if o not in held]
                if missing:
                    raise ApiError(
                        400,
                        f"{len(missing)} chunk(s) missing",
                        size=row.size,
                        missing_count=len(missing),
                        missing=[{"offset": o, "size": s} for o, s in missing[:MAX_MISSING_LISTED]],
                    )
                checksum, staged = await self._digest(data_id, total)
                if expected is not None and expected != checksum:
                    if staged is not None:
                        # Not published: a later finish stages again from the archive.
                        await self.state.run_io(shutil.rmtree, staged.dest, True)
                    raise ApiError(422, "file checksum mismatch", expected=expected, received=checksum)
                await self._complete(row, total, checksum, staged)
            # Ready now: a finish that takes a new lock finds it so and changes nothing.
            self._finish_locks.pop(data_id, None)
        if expected is not None and expected != checksum:
            raise ApiError(422, "file checksum mismatch", expected=expected, received=checksum)
        return json_response(
            {
                "id": data_id,
                "data_id": data_id,
                "filename": row.filename,
                "size": total,
                "is_ready": True,
                "checksum": checksum,
            }
        )

    async def _complete(self, row: DataRow, total: int, checksum: str, staged: StagedUnpack | None) -> None:
        """The strict last chunk's steps: a directory's archive unpacked, ``finalizing``, the move, ready.

        A directory upload's archive is unpacked by the strict path's own
        :meth:`UploadManager.unpack` (the same bounds and safety checks; an
        archive it refuses is a 400 and the upload stays open, nothing
        recorded), its tree recorded in the same commit as ``finalizing``, so
        start-up recovery rebuilds it as it does a strict one's. The archive's
        members are mostly unpacked already, into that same staging folder,
        while its chunks arrived (:class:`StagedUnpack`); only what that
        head start did not take is unpacked here.
        """
        layout = self.state.layout
        archive = layout.partial / row.id
        tree_tmp = layout.trees / f"{row.id}.tmp" if row.is_directory else None
        try:
            tree = await self.state.run_io(staged.result, archive) if staged is not None else None
            if tree is None:
                tree = await self.manager.unpack(archive, tree_tmp) if tree_tmp is not None else []
            await self.store.run(self.store.commit_chunk, row.id, total, None, final_checksum=checksum, tree=tree)
        except BaseException:
            if tree_tmp is not None:
                await self.state.run_io(shutil.rmtree, tree_tmp, True)
            raise
        await self.state.run_io(functools.partial(move_into_place, flush_data=False), layout, row.id, tree_tmp)
        await self.store.run_after_flushing(layout.data, self.store.set_state, row.id, READY)
        self._slot_locks.pop(row.id, None)

    # --- the whole-file hash, kept up as chunks are recorded -----------------------------------

    def _kick(self, data_id: str) -> None:
        task = asyncio.get_running_loop().create_task(self._advance(data_id))
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # Only a head start is lost: finish hashes what is left, and reports a real failure.
            log.warning("hashing an upload ahead of its finish failed: %s", task.exception())

    async def _advance(self, data_id: str) -> None:
        assembly = self._assemblies.setdefault(data_id, _Assembly())
        async with assembly.lock:
            if self._assemblies.get(data_id) is not assembly:
                return  # finished meanwhile
            await self._feed(data_id, assembly)

    async def _feed(self, data_id: str, assembly: _Assembly) -> None:
        """Hash the recorded chunks that continue the hashed prefix (their bytes never change)."""
        path = self.state.layout.partial / data_id
        if assembly.staged is None:
            assembly.staged = await self._staging(data_id)
        staged = assembly.staged
        chunks = await self.store.run(self.store.chunks, data_id)
        if assembly.slots is None:
            plan = await self.store.run(self.store.parallel_plan, data_id)
            assembly.slots = -(-plan[0] // plan[1]) if plan is not None else 0
        for chunk in chunks:
            if chunk.offset < assembly.upto:
                continue
            if chunk.offset != assembly.upto:
                break
            if isinstance(staged, StagedUnpack):  # its members need the bytes in memory anyway
                await self.state.run_io(staged.feed_range, path, chunk.offset, chunk.size, assembly.hasher)
                assembly.upto += chunk.size
                continue
            # Many chunks still to come: the cheap read (the CPU is the link's share). The last
            # quarter of them (a client's last round of streams), or a finish waiting: the page
            # cache's read-ahead, the quick one, so that the finish does not wait for the disk.
            late = assembly.hurry or 4 * (assembly.slots - len(chunks)) <= assembly.slots
            read = feed_file if late else feed_file_direct
            await self.state.run_io(read, path, chunk.offset, chunk.size, assembly.hasher)
            assembly.upto += chunk.size

    async def _staging(self, data_id: str) -> StagedUnpack | bool:
        """A directory upload's head start into its staging folder; False for a plain file."""
        row = await self.store.run(self.store.get_data, data_id)
        plan = await self.store.run(self.store.parallel_plan, data_id)
        if row is None or not row.is_directory or plan is None:
            return False
        dest = self.state.layout.trees / f"{data_id}.tmp"
        return StagedUnpack(dest, unpack_limits(self.state.config), plan[0])

    async def _digest(self, data_id: str, total: int) -> tuple[str, StagedUnpack | None]:
        """The whole file's checksum (every slot is recorded): the running hash, completed, and the
        directory archive's head start."""
        assembly = self._assemblies.setdefault(data_id, _Assembly())
        assembly.hurry = True
        async with assembly.lock:
            try:
                await self._feed(data_id, assembly)
            except OSError as exc:
                raise ApiError(409, f"the server lost bytes of this upload ({exc}); start it again") from None
            finally:
                self._assemblies.pop(data_id, None)
        if assembly.upto != total:
            raise AssertionError(f"upload {data_id}: hashed {assembly.upto} of {total} bytes")
        staged = assembly.staged if isinstance(assembly.staged, StagedUnpack) else None
        return format_checksum(assembly.hasher.hexdigest()), staged

    async def close(self) -> None:
        """Stop hashing ahead (server shutdown): nothing is lost, finish starts again from the file."""
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            try:
                await task
            except BaseException:  # noqa: BLE001 - shutting down; _done logged real failures
                pass


def _count(body: dict[str, Any], name: str, most: int) -> int:
    value = body.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        bad_request(f"{name} is required (a non-negative integer)")
    if value > most:
        bad_request(f"{name} is more than {most}")
    return value

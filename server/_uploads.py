"""``POST /upload`` and its sibling endpoints: one chunk of the chunked protocol, received durably.

The order of operations for one chunk is the durability contract:

1. validate the form fields (and, for a continuation, take the upload's lock
   and check the offset against what SQLite says is held);
2. truncate the partial file to the held size (a crash may have left a torn
   tail beyond it), stream the blob into it at that offset, hashing each
   block once for the chunk and once more into the upload's running
   whole-file hasher (a copy, kept only if the chunk is accepted);
3. ``fdatasync``; check the [ext] checksums (422 and truncate on mismatch);
   on the last chunk also verify the whole file and unpack directories;
4. commit the chunk's row (and, on the last chunk, the ``finalizing`` state)
   in one SQLite transaction;
5. on the last chunk: rename the partial file into the data folder, fsync
   the folder, mark the data ``ready``;
6. only then answer 200.

A ``kill -9`` anywhere leaves either an unrecorded tail (truncated by the next
chunk) or a recorded chunk whose bytes are on disk; an upload caught between
4 and 5 is finished by :func:`._upload_recovery.recover_uploads` at start-up.

A new upload that arrives whole in one small request (a folder of small
files: most of them) takes a shorter road with the same guarantee
(:mod:`._upload_whole`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import xxhash
from aiohttp import web

from flowxfer.protocol import format_checksum, new_hasher

from ._http import ApiError, ShapedError, bad_request, json_response, not_found
from ._ids import is_id, new_id
from ._multipart import MultipartError, MultipartParser, boundary_of, header_params
from ._sink import (
    Received,
    Sink,
    copy_spool,
    hash_file,
)
from ._state import RATE, State, charge, user_of
from ._store import FAILED, FINALIZING, READY, UPLOADING, ChunkRow, DataRow, Store, TreeFile
from ._store_samples import SampleRefused
from ._unpack import UnpackError, unpack
from ._upload_chunk import Chunk, ChunkMeta, Target, parse_meta
from ._upload_disk import close_partial, move_into_place, open_existing, open_new, unlink, unpack_limits
from ._upload_parallel import ParallelUploads
from ._upload_routes import ROUTES, ParallelChunkRoute, UploadRoute
from ._upload_status import get_upload
from ._upload_whole import WHOLE_IN_MEMORY, spill_whole, store_whole

log = logging.getLogger("flowxfer.server.uploads")


def _malformed(exc: Exception) -> NoReturn:
    """aiohttp's multipart reader fails in many ways (ValueError, AssertionError, lost connections)."""
    log.info("upload body refused: %s: %s", type(exc).__name__, exc)
    bad_request("malformed multipart body (or the connection was lost)")


class UploadManager:
    """Owns the partial folder, the per-upload locks and running hashers."""

    def __init__(self, state: State) -> None:
        self.state = state
        self.config = state.config
        self.layout = state.layout
        self.store: Store = state.store
        self._locks: dict[str, asyncio.Lock] = {}
        # data id -> (bytes fed, running whole-file hasher); lost on restart by design.
        self._hashers: dict[str, tuple[int, xxhash.xxh3_128]] = {}
        #: Bytes of whole uploads held in memory now, across requests (bounded by
        #: ``config.whole_uploads_in_memory``; only the event loop touches it).
        self.held_in_memory = 0
        self.routes = [route(state) for route in ROUTES]
        self.parallel = ParallelUploads(self)
        self._io = state.run_io

    def _sink(self, fd: int, offset: int, hashers: tuple[Any, ...], *, fsync: bool, keep: bool = True) -> Sink:
        return Sink(self.state.io, self.config.max_chunk_size, fd, offset, hashers, fsync=fsync, keep=keep)

    # --- POST /upload ------------------------------------------------------------

    def handler(self, route: UploadRoute) -> Callable[[web.Request], Any]:
        """The aiohttp handler of one upload endpoint."""
        return functools.partial(self.post_upload, route=route)

    async def post_upload(self, request: web.Request, route: UploadRoute | None = None) -> web.StreamResponse:
        """One chunk of ``route``'s endpoint (``POST /upload`` when None)."""
        route = route or self.routes[0]
        user = user_of(request)
        limit = self.config.max_chunk_size
        if request.content_length is not None and request.content_length > limit + route.overhead():
            charge(request, "api")
            raise ApiError(413, f"request body larger than the chunk limit of {limit} bytes")
        try:
            boundary = boundary_of(request.headers.get("Content-Type", ""))
        except MultipartError as exc:
            charge(request, "api")
            bad_request(f"POST {route.path} takes multipart/form-data: {exc}")
        chunk = Chunk(route)
        try:
            await self._read_body(request, user, boundary, chunk)
            return await self._finish(request, user, chunk)
        except ApiError:
            if request.get(RATE) is None:
                # Refused before we could tell a new upload from a continuation:
                # count it as an api request, so refusals are neither free nor headerless.
                charge(request, "api")
            raise
        finally:
            await self._release(chunk)

    async def _read_body(self, request: web.Request, user: str, boundary: str, chunk: Chunk) -> None:
        """Feed the body through the multipart parser, streaming the blob as it comes.

        A body that sends nothing for ``body_stall_timeout`` seconds is dropped
        with 408, so a client that vanished (a half-open connection) cannot
        hold its upload's lock, and every retry behind it, until TCP gives up.
        """
        config = self.config
        parser = MultipartParser(boundary, max_parts=chunk.route.max_parts())
        body_limit = config.max_chunk_size + chunk.route.overhead()
        total = 0
        field_name: str | None = None
        field_value = bytearray()
        sink: Sink | None = None
        stream = request.content
        stall = config.body_stall_timeout
        loop_time = asyncio.get_running_loop().time
        moved_at = loop_time()
        try:
            async with asyncio.timeout(stall) as deadline:
                while True:
                    try:
                        data = await stream.readany()
                    except Exception as exc:
                        _malformed(exc)
                    if not data:
                        break
                    now = loop_time()
                    if now - moved_at > 1.0:  # re-armed about once a second, not on every read
                        moved_at = now
                        deadline.reschedule(now + stall)
                    total += len(data)
                    if total > body_limit:
                        raise ApiError(
                            413, f"request body larger than the chunk limit of {config.max_chunk_size} bytes"
                        )
                    try:
                        events = parser.feed(data)
                    except MultipartError as exc:
                        _malformed(exc)
                    for event in events:
                        kind = event[0]
                        if kind == "data":
                            if sink is not None:
                                await sink.feed(event[1])
                            else:
                                field_value += event[1]
                                if len(field_value) > config.max_form_field_bytes:
                                    bad_request(
                                        f"form field {str(field_name)[:40]!r} longer than "
                                        f"{config.max_form_field_bytes} bytes"
                                    )
                        elif kind == "start":
                            field_name, sink = await self._start_part(request, user, chunk, event[1])
                            chunk.sink = sink
                            field_value = bytearray()
                        elif kind == "end":
                            if sink is not None:
                                chunk.received = await sink.finish()
                                if chunk.target is not None and chunk.target.whole:
                                    chunk.kept = sink.take_all()
                                sink = None
                            else:
                                assert field_name is not None
                                try:
                                    text = field_value.decode("utf-8")
                                except UnicodeDecodeError:
                                    bad_request(f"form field {field_name[:40]!r} is not UTF-8")
                                if field_name in chunk.route.repeatable:
                                    chunk.lists.setdefault(field_name, []).append(text)
                                else:
                                    chunk.fields[field_name] = text
        except TimeoutError:
            raise ApiError(408, f"the request body sent nothing for {stall:g} s") from None
        try:
            parser.close()
        except MultipartError as exc:
            _malformed(exc)

    async def _start_part(
        self, request: web.Request, user: str, chunk: Chunk, headers: dict[str, str]
    ) -> tuple[str | None, Sink | None]:
        """A new part: a form field (its name) or the blob (a sink to stream it into)."""
        encoding = headers.get("content-transfer-encoding", "binary").lower()
        if encoding not in ("binary", "8bit", "7bit"):
            bad_request(f"Content-Transfer-Encoding {encoding} is not accepted")
        disposition = headers.get("content-disposition", "")
        if not disposition.lower().startswith("form-data"):
            bad_request("every part needs Content-Disposition: form-data")
        name = header_params(disposition).get("name")
        if not name:
            bad_request("a form part has no name")
        if name != "blob":
            if name in chunk.fields and name not in chunk.route.repeatable:
                bad_request(f"form field {name[:40]!r} given twice")
            return name, None
        if chunk.blob_seen:
            bad_request("more than one blob")
        chunk.blob_seen = True
        if chunk.route.parallel:
            return None, await self.parallel.open_blob(request, user, chunk)
        if {"filename", "expected_file_size", "data"} | chunk.route.before_blob <= chunk.fields.keys():
            # Metadata came first (flowbio and our engine send it so): stream
            # straight into the partial file at the held offset, once the route has
            # checked its fields (before any byte is stored).
            meta = parse_meta(chunk.fields, self.config.extensions)
            await self._prepare(chunk, user, meta)
            length = request.content_length
            if (
                meta.data_id is None
                and meta.is_last
                and not meta.is_directory
                and meta.offset == 0
                and length is not None
                and length <= WHOLE_IN_MEMORY
                and self.held_in_memory + length <= self.config.whole_uploads_in_memory
            ):
                charge(request, "upload")
                self.held_in_memory += length
                chunk.held = length
                data_id = new_id()
                chunk.target = Target(data_id, self.layout.data / data_id, 0, True, None, whole=True)
                return None, self._sink(-1, 0, (), fsync=False)
            chunk.target = target = await self._open_target(request, user, meta, chunk.route)
            if target.replay:
                return None, self._sink(-1, 0, (new_hasher(),), fsync=False, keep=False)
            if target.file_hasher is None:
                hashers: tuple[Any, ...] = (new_hasher(),)
            elif target.is_new:
                # The first chunk of a new upload: its hash so far *is* the chunk's; hash once, not twice.
                hashers = (target.file_hasher,)
            else:
                hashers = (new_hasher(), target.file_hasher)
            return None, self._sink(target.fd, target.offset, hashers, fsync=True)
        # Not yet known where the bytes belong: keep them aside until it is.
        path = self.layout.spool / new_id()
        chunk.spool = path
        fd = await self._io(os.open, path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        chunk.spool_fd = fd
        return None, self._sink(fd, 0, (new_hasher(),), fsync=False)

    async def _prepare(self, chunk: Chunk, user: str, meta: ChunkMeta) -> None:
        """Let the route check its fields (once per request), before a byte of the blob is stored."""
        if chunk.prepared is None:
            chunk.prepared = await chunk.route.prepare(
                user, chunk.fields, chunk.lists, final=meta.is_last, data_id=meta.data_id, offset=meta.offset
            )

    async def _open_target(
        self, request: web.Request, user: str, meta: ChunkMeta, route: UploadRoute | None = None
    ) -> Target:
        """Validate the chunk against what is held and open the partial file at the held offset.

        A route that allows replays gets a target marked ``replay`` for a repeat of
        a complete upload's last chunk (the caller compares it with the record).
        """
        if meta.data_id is None:
            charge(request, "upload")
            if meta.offset != 0:
                raise ApiError(400, "a new upload starts at offset 0", expected_file_size=0)
            data_id = new_id()
            target = Target(data_id, self.layout.partial / data_id, 0, True, None, file_hasher=new_hasher())
            target.fd = await self._io(open_new, target.path, not meta.is_last)
            return target

        data_id = meta.data_id
        row = await self.store.run(self.store.get_data, data_id) if is_id(data_id) else None
        if row is None or row.owner != user:
            charge(request, "upload")
            not_found("no upload with that id is yours to continue")
        charge(request, "upload", count=False)
        lock = self._locks.setdefault(data_id, asyncio.Lock())
        await lock.acquire()
        try:
            target = Target(data_id, self.layout.partial / data_id, 0, False, None, lock=lock)
            # Re-read under the lock: a concurrent chunk may have moved the upload on.
            row = await self.store.run(self.store.get_data, data_id)
            assert row is not None
            target.row = row
            if row.state == FAILED:
                bad_request(f"upload failed: {row.error}")
            if row.state == FINALIZING and meta.is_last and not row.is_directory:
                target.row = row = await self._ready_if_moved(row)
            if (
                route is not None
                and route.replayable
                and row.state == READY
                and meta.is_last
                and meta.filename == row.filename
            ):
                target.replay = True
                target.offset = meta.offset
                # Nothing of the upload changes: let go of its lock now, and forget it, so that
                # _release cannot let go of it again while another request holds it.
                target.lock = None
                lock.release()
                return target
            if row.state != UPLOADING:
                raise ApiError(400, f"upload is complete; it holds {row.size} bytes", expected_file_size=row.size)
            if await self.store.run(self.store.parallel_plan, data_id) is not None:
                # Its size is the sum of slots held, not a prefix: appending there (and truncating
                # the file to it first) would destroy acknowledged chunks.
                bad_request("a parallel-chunk upload: send its chunks to POST /upload/parallel/<id>")
            if meta.offset != row.size:
                raise ApiError(
                    400,
                    f"offset mismatch: the server holds {row.size} bytes of this upload",
                    expected_file_size=row.size,
                )
            if meta.filename != row.filename:
                bad_request(f"filename differs from the upload's ({row.filename})")
            target.offset = row.size
            target.fd = await self._io(open_existing, target.path, row.size)
            fed = self._hashers.get(data_id)
            if fed is not None and fed[0] == row.size:
                target.file_hasher = fed[1].copy()
        except BaseException:
            lock.release()
            raise
        return target

    async def _ready_if_moved(self, row: DataRow) -> DataRow:
        """Complete a finish that stopped after its rename (the data folder's flush failed): ready now.

        Its row says ``finalizing`` and the file has its final name; without this, the
        client's repeat of the last chunk got "upload is complete" and the upload stayed
        unready until the server restarted (start-up recovery). Called under the upload's lock.
        """
        moved = await self._io(os.path.exists, self.layout.data / row.id)
        partial = await self._io(os.path.exists, self.layout.partial / row.id)
        if not moved or partial:
            return row  # not that case: start-up recovery completes it, as before
        await self.store.run_after_flushing(self.layout.data, self.store.set_state, row.id, READY)
        again = await self.store.run(self.store.get_data, row.id)
        assert again is not None
        return again

    # --- after the body ---------------------------------------------------------

    async def _finish(self, request: web.Request, user: str, chunk: Chunk) -> web.StreamResponse:
        if chunk.route.parallel:
            return await self.parallel.finish_chunk(chunk)
        meta = parse_meta(chunk.fields, self.config.extensions)
        if not chunk.blob_seen or chunk.received is None:
            bad_request("blob is required")
        await self._prepare(chunk, user, meta)
        prepared = chunk.prepared
        assert prepared is not None
        received = chunk.received
        if chunk.target is not None and chunk.target.replay:
            return await self._replay(chunk.route, meta, chunk.target, received)
        if chunk.target is not None and chunk.target.whole:
            pieces, chunk.kept = chunk.kept, []
            if not meta.is_directory:
                return await store_whole(self.state, user, meta, chunk, pieces)
            # is_directory came after the blob: the archive takes the regular road (partial file, unpack).
            chunk.received = received = await spill_whole(self.state, chunk.target, pieces)
        if chunk.target is None:
            assert chunk.spool is not None
            await self._io(os.close, chunk.spool_fd)
            chunk.spool_fd = -1
            chunk.target = await self._open_target(request, user, meta, chunk.route)
            target = chunk.target
            if target.replay:
                return await self._replay(chunk.route, meta, target, received)
            await self._io(copy_spool, chunk.spool, target.fd, target.offset, received.size, target.file_hasher)
            await self._io(os.fdatasync, target.fd)
        target = chunk.target
        if received.size == 0 and not meta.is_last:
            bad_request("empty chunk (only the last chunk may be empty)")
        if meta.checksum is not None and meta.checksum != received.checksum:
            raise ApiError(422, "checksum mismatch", expected=meta.checksum, received=received.checksum)
        new_size = target.offset + received.size
        final_checksum: str | None = None
        tree: list[TreeFile] = []
        is_directory = meta.is_directory if target.is_new else bool(target.row and target.row.is_directory)
        if meta.is_last:
            if target.file_hasher is not None:
                final_checksum = format_checksum(target.file_hasher.hexdigest())
            else:
                # The running hasher was lost (restart): read the file once, in a thread.
                final_checksum = await self._io(hash_file, target.path, new_size)
            if meta.file_checksum is not None and meta.file_checksum != final_checksum:
                raise ApiError(422, "file checksum mismatch", expected=meta.file_checksum, received=final_checksum)
            if is_directory:
                chunk.tree_tmp = self.layout.trees / f"{target.data_id}.tmp"
                tree = await self.unpack(target.path, chunk.tree_tmp)
            await chunk.route.check_file(target.path, meta.filename, chunk.fields)
        row = None
        if target.is_new:
            now = time.time()
            row = DataRow(
                target.data_id,
                user,
                meta.filename,
                meta.data_type,
                meta.is_directory,
                True,
                UPLOADING,
                0,
                None,
                now,
                now,
                None,
            )
        record = ChunkRow(target.offset, received.size, received.checksum) if received.size else None
        try:
            await self.store.run(
                self.store.commit_chunk,
                target.data_id,
                target.offset,
                record,
                new=row,
                final_checksum=final_checksum,
                tree=tree,
                kind=prepared.kind,
                sample=prepared.sample if meta.is_last else None,
            )
        except SampleRefused as exc:
            raise ShapedError(400, {"error": exc.error}) from None
        target.committed = True  # nothing to undo any more
        if meta.is_last:
            self._hashers.pop(target.data_id, None)
            fd, target.fd = target.fd, -1
            move = functools.partial(move_into_place, flush_data=False)
            await self._io(move, self.layout, target.data_id, chunk.tree_tmp, fd)
            chunk.tree_tmp = None
            # Grouped with other requests' commits, after one flush of the data folder for all
            # of them (16 files finishing together flushed it 16 times): the rename durable,
            # then ready.
            await self.store.run_after_flushing(self.layout.data, self.store.set_state, target.data_id, READY)
            self._locks.pop(target.data_id, None)
        elif target.file_hasher is not None:
            self._hashers[target.data_id] = (new_size, target.file_hasher)
        else:
            self._hashers.pop(target.data_id, None)
        body: dict[str, Any] = {
            "id": target.data_id,
            "data_id": target.data_id,
            "filename": meta.filename,
            "size": new_size,
            "is_ready": meta.is_last,
            **prepared.answer,
        }
        if meta.is_last and self.config.extensions:
            body["checksum"] = final_checksum
        return json_response(body)

    async def _replay(
        self, route: UploadRoute, meta: ChunkMeta, target: Target, received: Received
    ) -> web.StreamResponse:
        """A repeat of a complete upload's last chunk: the answer it got, if it is the same chunk; else 400.

        The client lost that answer (a crash, a dropped connection) and sends
        the chunk again: nothing is stored or created twice.
        """
        row = await self.store.run(self.store.get_data, target.data_id)
        chunks = await self.store.run(self.store.chunks, target.data_id)
        assert row is not None
        last = chunks[-1] if chunks else ChunkRow(0, 0, format_checksum(new_hasher().hexdigest()))
        if (last.offset, last.size, last.checksum) != (meta.offset, received.size, received.checksum):
            raise ApiError(400, f"upload is complete; it holds {row.size} bytes", expected_file_size=row.size)
        body: dict[str, Any] = {
            "id": row.id,
            "data_id": row.id,
            "filename": row.filename,
            "size": row.size,
            "is_ready": True,
            **await route.replay(row.id),
        }
        if self.config.extensions:
            body["checksum"] = row.checksum
        return json_response(body)

    async def unpack(self, archive: Path, dest: Path) -> list[TreeFile]:
        """Unpack a directory upload's archive into ``dest`` within the configured bounds (400 if unsafe).

        The strict last chunk and a parallel upload's finish [ext] both end here.
        """
        limits = unpack_limits(self.config)
        await self._io(shutil.rmtree, dest, True)
        try:
            return await self._io(unpack, archive, dest, limits)
        except UnpackError as exc:
            bad_request(f"cannot unpack the directory archive: {exc}")

    async def _release(self, chunk: Chunk) -> None:
        """Undo whatever an unfinished request left: torn tail, spool, temp tree, fd, lock."""
        target = chunk.target
        try:
            if chunk.sink is not None:
                # A thread may still be writing with the fd we are about to close.
                await chunk.sink.drain()
            if chunk.spool_fd >= 0:
                await self._io(os.close, chunk.spool_fd)
            if chunk.spool is not None:
                await self._io(unlink, chunk.spool)
            if chunk.tree_tmp is not None:
                await self._io(shutil.rmtree, chunk.tree_tmp, True)
            if target is not None and target.written and not target.commit_sent:
                await self._io(unlink, target.path)
            if target is not None and target.fd >= 0:
                await self._io(
                    close_partial,
                    target.fd,
                    None if target.committed or target.parallel else target.offset,
                    target.path if target.is_new and not target.committed else None,
                )
        finally:
            self.held_in_memory -= chunk.held
            chunk.held = 0
            if target is not None and target.lock is not None and target.lock.locked():
                target.lock.release()


#: The application's upload manager.
UPLOADS = web.AppKey("flowxfer_uploads", UploadManager)


def upload_routes(manager: UploadManager) -> list[web.RouteDef]:
    routes = [web.post(route.path, manager.handler(route), name=route.name) for route in manager.routes]
    if manager.config.extensions:
        routes.append(web.get("/upload/{data_id:[0-9]+}", get_upload, name="upload_status", allow_head=False))
        parallel = manager.parallel
        chunk_route = ParallelChunkRoute(manager.state)
        routes += [
            web.post("/upload/parallel", parallel.open, name="upload_parallel"),
            web.post(chunk_route.path, manager.handler(chunk_route), name=chunk_route.name),
            web.post("/upload/parallel/{data_id:[0-9]+}/finish", parallel.finish, name="upload_parallel_finish"),
        ]
    return routes

"""``GET``/``HEAD /downloads/<id>/<filename>`` and [ext] ``/downloads/<id>``: single files, ranges, sendfile.

The [ext] route without the filename exists so a client holding only an id
starts the bytes in its first request (hosted Flow needs ``GET /data/<id>``
first, a round trip, to learn the name the bytes' URL holds): it answers as
the named route and names the file in ``Content-Disposition`` on every
answer, ranged or not (docs/protocol.md, "Downloading by id"). When every
chunk of the item's chunk map but the last has one size, the by-id answer
also says that size and the number of chunks (``X-Chunk-Size``,
``X-Chunk-Count``): the client plans its chunks and starts its streams at
once, and fetches the map's checksums beside them instead of before them
(a round trip less before a large file's bytes, issue 20). Not on an
answer with the whole of a small file (:data:`LAYOUT_FROM`).

Range and conditional logic is the pure function :func:`plan_response`; the
handler only opens the file (in a thread) and hands it to the kernel with
``loop.sendfile``, so no file byte passes through Python. Our own sender
rather than ``web.FileResponse`` because the ETag must be strong and tied to
the content (the checksum), and ``If-Range`` must compare ETags, which
FileResponse does not (it only compares dates).
"""

from __future__ import annotations

import asyncio
import email.utils
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from urllib.parse import quote

from aiohttp import web

from flowxfer.protocol import HEADER_CHECKSUM, HEADER_CHUNK_COUNT, HEADER_CHUNK_SIZE

from ._http import ApiError, Bare404
from ._ids import is_id
from ._state import State, apply_rate_headers, caller_of, state_of
from ._store import READY

#: ASCII digits only, and no more than a 64-bit offset needs (int() of thousands of digits is refused).
_RANGE_RE = re.compile(r"^bytes=([0-9]{0,19})-([0-9]{0,19})$")


@dataclass(frozen=True)
class Plan:
    """What to answer: status and the byte span [start, start+count)."""

    status: int
    start: int = 0
    count: int = 0
    error: str | None = None


def _if_range_holds(value: str, etag: str, last_modified: float) -> bool:
    value = value.strip()
    if value.startswith(("W/", '"')):
        return value == etag  # strong comparison; weak tags never match
    parsed = email.utils.parsedate_to_datetime(value) if value else None
    return parsed is not None and parsed.timestamp() >= int(last_modified)


def plan_response(
    size: int,
    etag: str,
    last_modified: float,
    range_header: str | None,
    if_range: str | None,
    if_none_match: str | None,
) -> Plan:
    """Decide the status and span of a download (pure, RFC 9110 §13-14).

    Only single ranges are served; several ranges are a 416 (we never build
    multipart/byteranges answers). A malformed ``Range`` is a 416 too, so a
    client learns about its bug instead of silently receiving everything.
    """
    if if_none_match is not None:
        tags = [t.strip() for t in if_none_match.split(",")]
        if "*" in tags or etag in tags or f"W/{etag}" in tags:
            return Plan(304)
    if range_header is None:
        return Plan(200, 0, size)
    if if_range is not None:
        try:
            holds = _if_range_holds(if_range, etag, last_modified)
        except (TypeError, ValueError, IndexError, OverflowError):
            holds = False
        if not holds:
            return Plan(200, 0, size)
    spec = range_header.strip()
    if "," in spec:
        return Plan(416, error="multiple ranges are not supported; ask for one range per request")
    match = _RANGE_RE.match(spec.replace(" ", ""))
    if not match or (not match.group(1) and not match.group(2)):
        return Plan(416, error=f"malformed Range header {range_header[:80]!r}; use bytes=START-END")
    first, last = match.group(1), match.group(2)
    if not first:  # suffix: the last N bytes
        suffix = int(last)
        if suffix == 0 or size == 0:
            return Plan(416, error="range not satisfiable")
        start = max(0, size - suffix)
        return Plan(206, start, size - start)
    start = int(first)
    end = int(last) if last else size - 1
    if end < start:
        return Plan(416, error="range end before its start")
    if start >= size:
        return Plan(416, error=f"range starts beyond the end ({size} bytes)")
    end = min(end, size - 1)
    return Plan(206, start, end - start + 1)


def uniform_chunk_size(size: int, chunks: Sequence[tuple[int, int]]) -> int | None:
    """The size of every chunk but the last (which is no larger) when the map is that regular, else None.

    Only such a map can be told in two numbers; any other (a registered output's, an empty
    file's) is fetched whole before the streams start, as without the hint.
    """
    if size <= 0 or not chunks:
        return None
    unit = chunks[0][1]
    if unit <= 0 or len(chunks) != -(-size // unit):
        return None
    for n, (offset, length) in enumerate(chunks):
        if offset != n * unit or length != min(unit, size - offset):
            return None
    return unit


#: A file this small answered whole has no streams after it and no engine maps it (its describing answer is
#: its whole download): its layout is not worth the chunk map's query. A larger one answered whole is a first
#: stream's (the engine's first id asks its smallest segment): the layout lets the map come beside it.
LAYOUT_FROM = 1024 * 1024


def _whole_asked(range_header: str | None, size: int) -> bool:
    """Whether the answer brings the whole file (no Range, or one from 0 to the end)."""
    if range_header is None:
        return True
    match = _RANGE_RE.match(range_header.strip().replace(" ", ""))
    return bool(match and match.group(1) == "0" and (not match.group(2) or int(match.group(2)) >= size - 1))


def content_disposition(filename: str) -> str:
    """``attachment`` with an ASCII fallback and the exact UTF-8 name (RFC 6266)."""
    fallback = "".join(c if 32 <= ord(c) < 127 and c not in '"\\%' else "_" for c in filename)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


def wants_direct(request: web.Request) -> bool:
    """``?direct=``: any value but an empty or false one serves inline, as hosted Flow's "truthy value"."""
    return request.query.get("direct", "").strip().lower() not in ("", "0", "false", "no", "off")


def _open_checked(path: Path, size: int) -> IO[bytes] | None:
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed by the caller after sendfile
    except OSError:
        return None
    if os.fstat(f.fileno()).st_size != size:
        f.close()
        return None
    return f


async def serve_file(
    request: web.Request,
    path: Path,
    *,
    size: int,
    checksum: str | None,
    filename: str,
    last_modified: float,
    extensions: bool,
    disposition: bool,
    always_named: bool = False,
    extra_headers: Mapping[str, str] | None = None,
) -> web.StreamResponse:
    """Answer GET/HEAD for one immutable file with ranges, ETag and sendfile.

    :param always_named: ``Content-Disposition`` on every answer, 304 and 416 too, even with
        ``?direct=``: the by-id route's caller learns the name from it alone.
    :param extra_headers: more headers on every answer (the by-id route's chunk layout).
    """
    state = state_of(request)
    loop = asyncio.get_running_loop()
    fobj = await loop.run_in_executor(state.io, _open_checked, path, size)
    if fobj is None:
        raise Bare404
    try:
        etag = f'"{(checksum or "").rpartition(":")[2] or f"{size:x}-{int(last_modified)}"}"'
        plan = plan_response(
            size,
            etag,
            last_modified,
            request.headers.get("Range"),
            request.headers.get("If-Range"),
            request.headers.get("If-None-Match"),
        )
        headers = {
            "Accept-Ranges": "bytes",
            "ETag": etag,
            "Last-Modified": email.utils.formatdate(last_modified, usegmt=True),
        }
        if checksum and extensions:
            headers[HEADER_CHECKSUM] = checksum
        if always_named:
            headers["Content-Disposition"] = content_disposition(filename)
        headers.update(extra_headers or {})
        if plan.status == 416:
            error = ApiError(416, plan.error or "range not satisfiable")
            error.headers.update(headers)
            error.headers["Content-Range"] = f"bytes */{size}"
            raise error
        response = web.StreamResponse(status=plan.status, headers=headers)
        if plan.status == 304:
            apply_rate_headers(request, response)
            await response.prepare(request)
            return response
        response.content_type = "application/octet-stream"
        if disposition and not always_named:
            response.headers["Content-Disposition"] = content_disposition(filename)
        if plan.status == 206:
            response.headers["Content-Range"] = f"bytes {plan.start}-{plan.start + plan.count - 1}/{size}"
        response.content_length = plan.count
        apply_rate_headers(request, response)
        await response.prepare(request)
        if request.method != "HEAD" and plan.count:
            transport = request.transport
            if transport is None or transport.is_closing():
                return response
            try:
                await loop.sendfile(transport, fobj, plan.start, plan.count)
            except (ConnectionError, RuntimeError):
                return response  # the client went away mid-download
            await response.write_eof()
        return response
    finally:
        await loop.run_in_executor(state.io, fobj.close)


async def get_download(request: web.Request) -> web.StreamResponse:
    return await _serve_data(request, request.match_info["filename"])


async def get_download_by_id(request: web.Request) -> web.StreamResponse:
    """[ext] The named route's answer without knowing the name: it comes in ``Content-Disposition``."""
    return await _serve_data(request, None)


async def _serve_data(request: web.Request, filename: str | None) -> web.StreamResponse:
    """One ready data item's bytes; the same bare 404 for unknown, unready, misnamed and unreadable."""
    state = state_of(request)
    user = caller_of(request)
    data_id = request.match_info["data_id"]
    row = await state.store.run(state.store.get_data, data_id) if is_id(data_id) else None
    if row is None or row.state != READY or (filename is not None and row.filename != filename):
        raise Bare404
    if await state.store.run(state.store.level_of, data_id, user) < 1:
        raise Bare404
    extra: dict[str, str] = {}
    small_whole = row.size <= LAYOUT_FROM and _whole_asked(request.headers.get("Range"), row.size)
    if filename is None and state.config.extensions and not small_whole:
        chunks = await state.store.run(state.store.chunks, data_id)
        unit = uniform_chunk_size(row.size, [(c.offset, c.size) for c in chunks])
        if unit is not None:
            extra = {HEADER_CHUNK_SIZE: str(unit), HEADER_CHUNK_COUNT: str(len(chunks))}
    return await serve_file(
        request,
        state.layout.data / data_id,
        size=row.size,
        checksum=row.checksum,
        filename=row.filename,
        last_modified=row.updated,
        extensions=state.config.extensions,
        disposition=not wants_direct(request),
        always_named=filename is None,
        extra_headers=extra,
    )


def download_routes(state: State) -> list[web.RouteDef]:
    routes = [web.get("/downloads/{data_id}/{filename}", get_download, name="download")]
    if state.config.extensions:
        routes.append(web.get("/downloads/{data_id}", get_download_by_id, name="download_by_id"))
    return routes

"""``/data``: one data's record, contents and types, its chunk map [ext] and unpacked files [ext], search, owned."""

from __future__ import annotations

import asyncio
import os

from aiohttp import web

from ._http import bad_request, json_response, not_found, query_bool, query_float, query_int
from ._permissions import patch_data, put_permissions, visible
from ._records import KNOWN_TYPES, data_type_json, is_binary, links_of, records_of, search_item
from ._regex import REGEX, check_pattern
from ._state import State, caller_of, state_of, user_of
from ._store import SORTS, SearchFilter

MAX_PAGE = 100
#: Hosted Flow's page size when ``count`` is not given.
DEFAULT_PAGE = 10
#: ``/data/<id>/contents`` answers this many bytes per ``position``.
CONTENTS_CHUNK = 10240


async def get_data(request: web.Request) -> web.StreamResponse:
    row, level = await visible(request)
    return json_response((await records_of(state_of(request), [row], level))[0])


async def get_contents(request: web.Request) -> web.StreamResponse:
    """``GET /data/<id>/contents?position=N``: the N-th 10 KB of a text file, decoded."""
    state = state_of(request)
    row, _ = await visible(request)
    position = query_int(request, "position", 0, minimum=0)
    assert position is not None
    if row.is_directory:
        bad_request("Data is directory")
    if is_binary(row.filename):
        bad_request("Data is binary")
    start = position * CONTENTS_CHUNK
    path = state.layout.data / row.id

    def read() -> bytes:
        if start >= row.size:
            return b""
        with open(path, "rb") as f:
            return os.pread(f.fileno(), CONTENTS_CHUNK, start)

    try:
        block = await asyncio.get_running_loop().run_in_executor(state.io, read)
    except OSError:
        not_found()
    return json_response({"contents": block.decode("utf-8", "replace"), "has_more": start + CONTENTS_CHUNK < row.size})


async def get_types(request: web.Request) -> web.StreamResponse:
    """``GET /data/types``: the named types, and every other type some ready data carries."""
    state = state_of(request)
    counts = await state.store.run(state.store.data_type_counts)
    identifiers = sorted(set(KNOWN_TYPES) | set(counts))
    return json_response([{**(data_type_json(i) or {}), "data_count": counts.get(i, 0)} for i in identifiers])


async def get_chunks(request: web.Request) -> web.StreamResponse:
    state = state_of(request)
    row, _ = await visible(request)
    chunks = await state.store.run(state.store.chunks, row.id)
    return json_response(
        {
            "id": row.id,
            "size": row.size,
            "checksum": row.checksum,
            "chunks": [{"offset": c.offset, "size": c.size, "checksum": c.checksum} for c in chunks],
        }
    )


async def get_files(request: web.Request) -> web.StreamResponse:
    """[ext] The files unpacked from an ``is_directory`` upload, a page at a time."""
    state = state_of(request)
    row, _ = await visible(request)
    if not row.is_directory:
        not_found("this data is not a directory upload")
    limit = query_int(request, "limit", 1000, minimum=1, maximum=10_000)
    offset = query_int(request, "offset", 0, minimum=0)
    assert limit is not None and offset is not None
    total, files = await state.store.run(state.store.tree, row.id, limit, offset)
    return json_response(
        {
            "id": row.id,
            "count": total,
            "limit": limit,
            "offset": offset,
            "files": [{"path": f.path, "size": f.size, "checksum": f.checksum} for f in files],
        }
    )


def _search_filter(request: web.Request, user: str, max_pattern: int) -> tuple[SearchFilter, str | None]:
    """The filters of a ``/data/search`` query; unknown parameters are ignored, as hosted Flow does."""
    query = request.query
    filename = query.get("filename") or None
    if filename is not None and len(filename) > 255:
        bad_request("filename filter longer than 255 characters")
    pattern = query.get("pattern") or None
    if pattern is not None:
        check_pattern(pattern, max_pattern)
    sort = query.get("sort") or "-created"
    if sort not in SORTS:
        bad_request(f"sort must be one of {', '.join(SORTS)}")
    owner = query.get("owner") or None
    if owner is not None and len(owner) > 255:
        bad_request("owner filter longer than 255 characters")
    types = tuple(t.strip() for t in query.get("data_types", "").split(",") if t.strip())
    if len(types) > 100:
        bad_request("at most 100 data_types")
    single = query.get("is_single", "")
    flt = SearchFilter(
        user=user,
        filename=filename,
        owned=query_bool(request, "owned"),
        created_gt=query_float(request, "created_gt"),
        created_lt=query_float(request, "created_lt"),
        size_gt=query_int(request, "size_gt", None, minimum=-1),
        size_lt=query_int(request, "size_lt", None, minimum=0),
        sort=sort,
        data_types=types,
        owner=owner,
        category=query_int(request, "category", None, minimum=0, maximum=2**31),
        is_single=query_bool(request, "is_single") if single.strip() else None,
        # Every data here was uploaded: "uploaded" keeps them all, and none came from a pipeline.
        nothing=bool(query.get("pipeline") or query.get("process_execution")),
    )
    query_bool(request, "uploaded")  # refused when it is not a truth value, like the others
    return flt, pattern


async def search(request: web.Request) -> web.StreamResponse:
    """``GET /data/search``: hosted Flow's filters and page, public data for anonymous callers."""
    state = state_of(request)
    user = caller_of(request)
    count = query_int(request, "count", DEFAULT_PAGE, minimum=1, maximum=MAX_PAGE)
    page = query_int(request, "page", 1, minimum=1, maximum=10**9)
    assert count is not None and page is not None
    flt, pattern = _search_filter(request, user, state.config.max_pattern_length)
    offset = (page - 1) * count
    if pattern is None:
        total, rows = await state.store.run(state.store.search, flt, count, offset)
    else:
        names = await state.store.run(state.store.search_names, flt)
        hits = await request.app[REGEX].matching(pattern, [name for _, name in names])
        total = len(hits)
        page_ids = [names[i][0] for i in hits[offset : offset + count]]
        rows = await state.store.run(state.store.data_by_ids, page_ids)
    paired = flt.is_single is False
    extensions = state.config.extensions
    links = await links_of(state.store, rows)
    items = [
        search_item(r, link, user=user, paired=paired, extensions=extensions)
        for r, link in zip(rows, links, strict=True)
    ]
    return json_response({"count": total, "page": page, "data": items})


async def owned(request: web.Request) -> web.StreamResponse:
    state = state_of(request)
    user = user_of(request)
    limit = query_int(request, "limit", 20, minimum=1, maximum=MAX_PAGE)
    offset = query_int(request, "offset", 0, minimum=0)
    assert limit is not None and offset is not None
    total, rows = await state.store.run(state.store.search, SearchFilter(user=user, owned=True), limit, offset)
    return json_response(
        {
            "count": total,
            "page": offset // limit + 1,
            "data": await records_of(state, rows),
        }
    )


def data_routes(state: State) -> list[web.RouteDef]:
    routes = [
        web.get("/data/search", search, name="search", allow_head=False),
        web.get("/data/owned", owned, name="owned", allow_head=False),
        web.get("/data/types", get_types, name="data_types", allow_head=False),
        web.get("/data/{data_id:[0-9]+}", get_data, name="data", allow_head=False),
        web.get("/data/{data_id:[0-9]+}/contents", get_contents, name="data_contents", allow_head=False),
        web.patch("/data/{data_id:[0-9]+}", patch_data, name="data_patch"),
        web.put("/data/{data_id:[0-9]+}/permissions", put_permissions, name="permissions"),
    ]
    if state.config.extensions:
        routes += [
            web.get("/data/{data_id:[0-9]+}/chunks", get_chunks, name="chunks", allow_head=False),
            web.get("/data/{data_id:[0-9]+}/files", get_files, name="files", allow_head=False),
        ]
    return routes

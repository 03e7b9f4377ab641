"""``/data``: one data's metadata, its chunk map [ext] and unpacked files [ext], search, owned."""

from __future__ import annotations

from aiohttp import web

from ._data_json import data_json
from ._http import bad_request, json_response, not_found, query_bool, query_float, query_int
from ._permissions import patch_data, put_permissions, visible
from ._regex import check_pattern
from ._state import State, state_of, user_of
from ._store import SearchFilter

MAX_PAGE = 100


async def get_data(request: web.Request) -> web.StreamResponse:
    row, _ = await visible(request)
    return json_response(data_json(row, state_of(request).config.extensions))


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


async def search(request: web.Request) -> web.StreamResponse:
    state = state_of(request)
    user = user_of(request)
    known = {
        "filename",
        "pattern",
        "owned",
        "created_gt",
        "created_lt",
        "size_gt",
        "size_lt",
        "page",
        "count",
    }
    unknown = set(request.query) - known
    if unknown:
        bad_request(f"unknown search parameters: {', '.join(sorted(unknown))}")
    count = query_int(request, "count", 20, minimum=1, maximum=MAX_PAGE)
    page = query_int(request, "page", 1, minimum=1, maximum=10**9)
    assert count is not None and page is not None
    filename = request.query.get("filename") or None
    if filename is not None and len(filename) > 255:
        bad_request("filename filter longer than 255 characters")
    pattern = request.query.get("pattern") or None
    if pattern is not None:
        check_pattern(pattern, state.config.max_pattern_length)
    flt = SearchFilter(
        user=user,
        filename=filename,
        owned=query_bool(request, "owned"),
        created_gt=query_float(request, "created_gt"),
        created_lt=query_float(request, "created_lt"),
        size_gt=query_int(request, "size_gt", None, minimum=-1),
        size_lt=query_int(request, "size_lt", None, minimum=0),
    )
    offset = (page - 1) * count
    if pattern is None:
        total, rows = await state.store.run(state.store.search, flt, count, offset)
    else:
        names = await state.store.run(state.store.search_names, flt)
        hits = await state.regex.matching(pattern, [name for _, name in names])
        total = len(hits)
        page_ids = [names[i][0] for i in hits[offset : offset + count]]
        rows = await state.store.run(state.store.data_by_ids, page_ids)
    return json_response({"count": total, "page": page, "data": [data_json(r, state.config.extensions) for r in rows]})


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
            "data": [data_json(r, state.config.extensions) for r in rows],
        }
    )


def data_routes(state: State) -> list[web.RouteDef]:
    routes = [
        web.get("/data/search", search, name="search", allow_head=False),
        web.get("/data/owned", owned, name="owned", allow_head=False),
        web.get("/data/{data_id:[0-9]+}", get_data, name="data", allow_head=False),
        web.patch("/data/{data_id:[0-9]+}", patch_data, name="data_patch"),
        web.put("/data/{data_id:[0-9]+}/permissions", put_permissions, name="permissions"),
    ]
    if state.config.extensions:
        routes += [
            web.get("/data/{data_id:[0-9]+}/chunks", get_chunks, name="chunks", allow_head=False),
            web.get("/data/{data_id:[0-9]+}/files", get_files, name="files", allow_head=False),
        ]
    return routes

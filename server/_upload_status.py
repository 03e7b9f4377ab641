"""``GET /upload/<id>`` [ext]: where an upload stands, so a client can resume it after losing its answers.

A read of the store only, apart from the chunk machinery (:mod:`._uploads`)
that writes what it reports.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ._http import json_response, not_found
from ._ids import is_id
from ._state import state_of, user_of
from ._store import READY


async def get_upload(request: web.Request) -> web.StreamResponse:
    """``GET /upload/<id>`` [ext]: what the server holds of one of the caller's uploads, chunk by chunk."""
    store = state_of(request).store
    user = user_of(request)
    data_id = request.match_info["data_id"]
    row = await store.run(store.get_data, data_id) if is_id(data_id) else None
    if row is None or row.owner != user:
        not_found("no upload with that id is yours")
    chunks = await store.run(store.chunks, data_id)
    body: dict[str, Any] = {
        "id": row.id,
        "data_id": row.id,
        "filename": row.filename,
        "size": row.size,
        "is_ready": row.state == READY,
        "state": row.state,
        "chunks": [{"offset": c.offset, "size": c.size, "checksum": c.checksum} for c in chunks],
    }
    if row.state == READY:
        body["checksum"] = row.checksum
    plan = await store.run(store.parallel_plan, data_id)
    if plan is not None:
        body["parallel"] = {"total": plan[0], "chunk_size": plan[1]}
    sample = await store.run(store.sample_of_data, data_id)
    body["sample_id"] = sample[0] if sample else None
    body["previous_data"] = await store.run(store.linked_before, data_id)
    if row.error:
        body["error_detail"] = row.error
    return json_response(body)

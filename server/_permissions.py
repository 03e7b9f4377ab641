"""Permission rules (read 1, edit 2, share 3) and the two endpoints that change them.

The level a user holds is computed in SQL (:meth:`Store.level_of`); the rule
that "exists but not yours" is indistinguishable from "does not exist"
lives here, in :func:`require`.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ._data_json import data_json
from ._http import ApiError, bad_request, json_response, not_found, read_json
from ._ids import is_id
from ._state import state_of, user_of
from ._store import READY, DataRow

READ, EDIT, SHARE = 1, 2, 3
LEVEL_NAMES = {READ: "read", EDIT: "edit", SHARE: "share"}


def require(level: int, needed: int) -> None:
    """404 when the caller cannot even read; 403 when they can read but need more."""
    if level < READ:
        not_found()
    if level < needed:
        raise ApiError(403, f"this needs {LEVEL_NAMES[needed]} permission")


async def visible(request: web.Request, needed: int = READ) -> tuple[DataRow, int]:
    """The ready data named in the URL and the caller's level on it, or the refusal."""
    state = state_of(request)
    user = user_of(request)
    data_id = request.match_info["data_id"]
    row = await state.store.run(state.store.get_data, data_id) if is_id(data_id) else None
    if row is None or row.state != READY:
        not_found()
    level = await state.store.run(state.store.level_of, data_id, user)
    require(level, needed)
    return row, level


async def _permissions_body(request: web.Request, data_id: str) -> dict[str, Any]:
    state = state_of(request)
    row = await state.store.run(state.store.get_data, data_id)
    assert row is not None
    grants = await state.store.run(state.store.grants, data_id)
    return {
        "id": data_id,
        "private": row.private,
        "owner": {"username": row.owner},
        "permissions": [{kind: name, "level": level} for kind, name, level in grants],
    }


async def put_permissions(request: web.Request) -> web.StreamResponse:
    """``PUT /data/<id>/permissions {"user"|"group": NAME, "level": 0..3}`` (needs share)."""
    state = state_of(request)
    row, _ = await visible(request, SHARE)
    body = await read_json(request, state.config.max_json_bytes, state.config.max_json_depth)
    unknown = set(body) - {"user", "group", "level"}
    if unknown:
        bad_request(f"unknown fields: {', '.join(sorted(unknown))}")
    kinds = [k for k in ("user", "group") if k in body]
    if len(kinds) != 1:
        bad_request('give exactly one of "user" or "group"')
    kind = kinds[0]
    name = body[kind]
    level = body.get("level")
    if not isinstance(name, str) or not name:
        bad_request(f"{kind} must be a name")
    if not isinstance(level, int) or isinstance(level, bool) or not 0 <= level <= 3:
        bad_request("level must be an integer from 0 (none) to 3 (share)")
    exists = state.store.user_exists if kind == "user" else state.store.group_exists
    if not await state.store.run(exists, name):
        bad_request(f"no such {kind}: {name}")
    if kind == "user" and name == row.owner:
        bad_request("the owner always holds share permission")
    await state.store.run(state.store.set_grant, row.id, kind, name, level)
    return json_response(await _permissions_body(request, row.id))


async def patch_data(request: web.Request) -> web.StreamResponse:
    """``PATCH /data/<id> {"private": BOOL}`` (needs edit)."""
    state = state_of(request)
    row, _ = await visible(request, EDIT)
    body = await read_json(request, state.config.max_json_bytes, state.config.max_json_depth)
    unknown = set(body) - {"private"}
    if unknown:
        bad_request(f"unknown or read-only fields: {', '.join(sorted(unknown))}")
    if not isinstance(body.get("private"), bool):
        bad_request("private must be true or false")
    await state.store.run(state.store.set_private, row.id, body["private"])
    updated = await state.store.run(state.store.get_data, row.id)
    assert updated is not None
    return json_response(data_json(updated, state.config.extensions))

"""``GET /me``: the caller's user record, as hosted Flow shows it.

Hosted Flow answers ``/me`` with ``200`` and a record of nulls when no
token comes; so does this server. A token that comes and is bad is a
``401`` here (hosted Flow, its docs say, answers the nulls then too): the
engine and flowbio refresh on 401, and a silently anonymous answer would
hide an expired login.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ._http import json_response
from ._state import caller_of, state_of


def _me(user_number: int | None, username: str | None, groups: list[str]) -> dict[str, Any]:
    return {
        "id": str(user_number) if user_number is not None else None,
        "username": username,
        "name": username,
        "image": None,
        "is_admin": False,
        "can_run_pipelines": False,
        "can_impersonate": False,
        "has_ssh_key": False,
        "impersonator": None,
        "features": {"impersonation": False},
        "memberships": [{"name": g, "slug": g, "is_admin": False} for g in groups],
        "notifications": {"count": 0, "unread_count": 0, "notifications": []},
    }


async def get_me(request: web.Request) -> web.StreamResponse:
    state = state_of(request)
    user = caller_of(request)
    number = await state.store.run(state.store.user_number, user) if user else None
    if number is None:  # anonymous, or a token whose user was removed since
        return json_response(_me(None, None, []))
    groups = await state.store.run(state.store.groups_of, user)
    return json_response(_me(number, user, groups))


def user_routes() -> list[web.RouteDef]:
    return [web.get("/me", get_me, name="me", allow_head=False)]

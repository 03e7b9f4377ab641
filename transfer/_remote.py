"""What the server says about its data: descriptions by id and searches (metadata requests only)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from flowxfer import protocol

from ._client import FlowClient
from ._errors import NotFoundError, ProtocolError
from ._plan import RemoteData

__all__ = ["describe", "missing_error", "remote_data", "search"]


async def describe(client: FlowClient, ids: Sequence[str]) -> list[RemoteData]:
    """``GET /data/<id>`` for each id; every unknown or unreadable id is named at once.

    :raises NotFoundError: some ids are unknown or not readable by this user.
    """
    items: list[RemoteData] = []
    missing: list[str] = []
    for data_id in ids:
        try:
            info = await client.json_request("GET", f"/data/{quote(data_id, safe='')}", rate_class="api")
        except NotFoundError:
            missing.append(data_id)
            continue
        items.append(remote_data(info, data_id))
    if missing:
        raise missing_error(missing)
    return items


def missing_error(missing: Sequence[str]) -> NotFoundError:
    """What to say of ids that are unknown or not readable by this user."""
    return NotFoundError(f"no readable data with id {', '.join(missing)} (unknown, or not shared with you)", 404)


async def search(
    client: FlowClient, *, filename: str | None = None, pattern: str | None = None, owned: bool = False
) -> list[RemoteData]:
    """Every data item matching a search, paging through ``/data/search`` (100 a page)."""
    params: dict[str, str] = {"count": "100"}
    if filename:
        params["filename"] = filename
    if pattern:
        params["pattern"] = pattern
    if owned:
        params["owned"] = "true"
    items: list[RemoteData] = []
    page = 1
    while True:
        answer = await client.json_request(
            "GET", "/data/search", rate_class="search", params={**params, "page": str(page)}
        )
        data = answer.get("data")
        total = answer.get("count")
        if not isinstance(data, list) or not isinstance(total, int):
            raise ProtocolError("malformed search answer")
        items.extend(remote_data(entry, None) for entry in data if isinstance(entry, dict))
        if not data or len(items) >= total:
            return items
        page += 1


def remote_data(info: dict[str, Any], expected_id: str | None) -> RemoteData:
    """One ``/data`` description, checked.

    :raises ProtocolError: a malformed description, or one of other data than asked for.
    """
    data_id = info.get("id")
    name = info.get("filename")
    size = info.get("size")
    if data_id is None or not isinstance(name, str) or not isinstance(size, int) or size < 0:
        raise ProtocolError(f"malformed data description for {expected_id or data_id!r}")
    if expected_id is not None and str(data_id) != expected_id:
        raise ProtocolError(f"asked for data {expected_id}, the server described {data_id}")
    return RemoteData(str(data_id), name, size, protocol.canonical_checksum(info.get("checksum")))

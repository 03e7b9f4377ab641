"""Helpers for the sync suite: what the server holds, as its owner sees it."""

from __future__ import annotations

from typing import Any

from flowxfer.transfer import Flowxfer


async def owned_data(fx: Flowxfer) -> list[dict[str, Any]]:
    """Every ready data item the logged-in user owns (``GET /data/owned``, paged)."""
    items: list[dict[str, Any]] = []
    while True:
        page = await fx.client.json_request(
            "GET", "/data/owned", rate_class="api", params={"limit": "100", "offset": str(len(items))}
        )
        items += page["data"]
        if not page["data"] or len(items) >= page["count"]:
            return items


async def tree(fx: Flowxfer, data_id: str) -> dict[str, tuple[int, str]]:
    """The files the server unpacked from a directory upload: path -> (size, checksum)."""
    answer = await fx.client.json_request("GET", f"/data/{data_id}/files", rate_class="api", params={"limit": "10000"})
    return {f["path"]: (f["size"], f["checksum"]) for f in answer["files"]}

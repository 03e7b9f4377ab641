"""What the server holds as samples, read directly (no proxy, no engine): for the sample upload tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp

from tests.support.server import RunningServer, login


async def server_samples(srv: RunningServer, user: str = "alice") -> dict[str, list[dict[str, Any]]]:
    """Every sample of ``user``: name -> the samples of that name, each ``{"id", "data": [...]}``.

    ``data`` is the sample's filesets' data in link order (``{"id", "filename", "size"}``).
    """
    found: dict[str, list[dict[str, Any]]] = {}
    async with aiohttp.ClientSession() as session:
        token = await login(session, srv.base_url, user, srv.users[user])
        headers = {"Authorization": f"Bearer {token}"}
        offset = 0
        while True:
            async with session.get(
                f"{srv.base_url}/samples/owned", params={"limit": "100", "offset": str(offset)}, headers=headers
            ) as response:
                assert response.status == 200
                page = await response.json()
            for item in page["samples"]:
                async with session.get(f"{srv.base_url}/samples/{item['id']}", headers=headers) as response:
                    assert response.status == 200
                    sample = await response.json()
                data = [d for fileset in sample["filesets"] for d in fileset["data"]]
                found.setdefault(item["name"], []).append({"id": item["id"], "data": data})
            offset += len(page["samples"])
            if not page["samples"] or offset >= page["count"]:
                return found


def write_sheet(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    """A sample sheet as a user writes it (CSV, paths relative to it)."""
    lines = [",".join(header)] + [",".join(row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path

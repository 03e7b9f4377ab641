"""[ext] Downloads that start with the id alone: ``GET /downloads/<id>`` describes and carries the bytes.

Why: against hosted Flow a download asks ``GET /data/<id>`` first (the
bytes' URL holds the filename), a round trip before the first byte (issue 20).
Our server, when ``/capabilities`` says ``download_by_id``, answers
``GET /downloads/<id>`` with the bytes and, in its headers, what ``/data``
would have said: the name (``Content-Disposition``), the size
(``Content-Length``) and the checksum (``X-Checksum``). The description goes
through :func:`~._remote.remote_data`, so a name is checked and later made
safe exactly as one from ``/data``.

A small file's body (up to :data:`PREFETCH_LIMIT`) is kept and handed to its
worker, which writes, hashes and verifies it as any stream's bytes
(:class:`~._download_streams.FileStreams`): one request in all. A larger
file's answer is dropped after its headers (its connection with it) and its
streams fetch ranges as usual: the ``/data`` round trip is saved, the bytes
come as today.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote

import aiohttp

from flowxfer import protocol

from ._client import FlowClient
from ._errors import NotFoundError
from ._plan import RemoteData
from ._remote import describe, missing_error, remote_data

__all__ = ["PREFETCH_LIMIT", "Prefetched", "describe_by_id"]

#: The largest body kept from the describing answer: a small file's whole download, little memory.
PREFETCH_LIMIT = 1024 * 1024

_BODY_ERRORS = (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, TimeoutError)


@dataclass(frozen=True)
class Prefetched:
    """A whole small file as the describing answer carried it, not yet verified."""

    body: bytes
    etag: str | None
    checksum: str | None


async def describe_by_id(
    client: FlowClient, ids: Sequence[str], *, limit: int = PREFETCH_LIMIT
) -> tuple[list[RemoteData], dict[str, Prefetched]]:
    """Each id's description and, for files up to ``limit`` bytes, their bytes.

    Remembered capabilities may be stale (the server restarted with
    ``--no-extensions``, where the route is Flow's bare 404): then they are
    asked again, and without the extension the ids are described by ``/data``.

    :raises NotFoundError: some ids are unknown or not readable by this user.
    """
    items: list[RemoteData] = []
    bodies: dict[str, Prefetched] = {}
    missing: list[str] = []
    for data_id in ids:
        try:
            async with client.stream("GET", f"/downloads/{quote(data_id, safe='')}", rate_class="download") as answer:
                item, prefetched = await _read(answer, data_id, limit)
        except NotFoundError:
            fresh = await client.revalidate_capabilities()
            if fresh is not None and not fresh.download_by_id:
                return await describe(client, ids), {}
            missing.append(data_id)
            continue
        items.append(item)
        if prefetched is not None:
            bodies[data_id] = prefetched
    if missing:
        raise missing_error(missing)
    return items, bodies


async def _read(answer: aiohttp.ClientResponse, data_id: str, limit: int) -> tuple[RemoteData, Prefetched | None]:
    """The description in the answer's headers, and its body when small (a cut body is left to the streams)."""
    size = answer.content_length if answer.status == 200 else None
    info = {
        "id": data_id,
        "filename": answer.content_disposition.filename if answer.content_disposition else None,
        "size": size,
        "checksum": answer.headers.get(protocol.HEADER_CHECKSUM),
    }
    item = remote_data(info, data_id)
    if item.size > limit:
        return item, None
    try:
        body = await answer.read()
    except _BODY_ERRORS:
        return item, None
    if len(body) != item.size:
        return item, None
    return item, Prefetched(body, answer.headers.get("ETag"), item.checksum)

"""[ext] Downloads that start with the id alone: ``GET /downloads/<id>`` describes and carries the bytes.

Why: against hosted Flow a download asks ``GET /data/<id>`` first (the
bytes' URL holds the filename), a round trip before the first byte (issue 20).
Our server, when ``/capabilities`` says ``download_by_id``, answers
``GET /downloads/<id>`` with the bytes and, in its headers, what ``/data``
would have said: the name (``Content-Disposition``), the size
(``Content-Length``) and the checksum (``X-Checksum``). The description goes
through :func:`~._remote.remote_data`, so a name is checked and later made
safe exactly as one from ``/data``.

The request asks for the first ``limit`` bytes (``Range``; at most
:data:`PREFETCH_LIMIT`, one download chunk): a small file comes whole, a
large one's head. Either is kept and handed to the file's worker, whose
first stream writes, hashes and verifies it as its own bytes and asks only
for the rest (:class:`~._download_streams.FileStreams`): a small file costs
one request in all, a large one the same ranged requests as before, and the
connection stays usable (nothing unread is left on it). An empty file has no
range to give (416): it alone is described by ``/data``.

The first id's answer may carry more than its head: asked with ``first``
(the smallest segment a download plans), its bytes after the head are
left on the connection (:class:`HeldAnswer`), and the file's first stream
goes on reading them instead of asking for its range: the link carries the
file from the describing answer on, not from a round trip after it (issue
20). A file no longer than ``first`` comes whole in that answer. A first file
longer than its answer will have streams asking for the rest: their connections
are opened (``on_streams``) as soon as the answer's headers say its size,
while its body and the plan run, not when the streams start (on a long
path each stream's handshake then idled the link a round trip, issue 20).

The answer may also say the chunk map's layout (``X-Chunk-Size`` and
``X-Chunk-Count``, when every chunk but the last is one size): kept as
:attr:`Prefetched.chunk_size`, it lets a large file's streams start at once,
the map's checksums fetched beside them (:mod:`._download`). A layout that
does not add up to the size is ignored; one that differs from the map is
found out before any chunk is recorded.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from urllib.parse import quote

import aiohttp
import anyio

from flowxfer import protocol

from ._client import FlowClient
from ._errors import NotFoundError, RejectedError
from ._plan import RemoteData
from ._remote import describe, missing_error, remote_data

__all__ = [
    "MAX_STATED_CHUNKS",
    "PREFETCH_LIMIT",
    "PREFETCH_TOTAL",
    "HeldAnswer",
    "Prefetched",
    "chunk_layout",
    "describe_by_id",
]

#: The most bytes asked for with one description: a small file's whole download, little memory.
PREFETCH_LIMIT = 1024 * 1024
#: The most kept for all the ids of one command (they wait in memory for their workers): the ids
#: after that are described by ``/data``, as without the extension.
PREFETCH_TOTAL = 64 * PREFETCH_LIMIT

#: The most chunks a stated layout may plan: a layout of more (two headers could ask for a chunk per
#: byte, billions of them planned and journaled before the map disagrees) is ignored, the map first.
MAX_STATED_CHUNKS = 1 << 20

_CONTENT_RANGE = re.compile(r"^bytes 0-\d+/(\d+)$")
_BODY_ERRORS = (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, TimeoutError, asyncio.IncompleteReadError)


@dataclass(eq=False)
class HeldAnswer:
    """The describing answer's bytes after its head, still on their connection for the file's first stream.

    The answer was to ``Range: bytes=0-(end - 1)``; its first ``start`` bytes were
    read (the head). Whoever takes it reads on from ``start`` and closes it; closed
    before its end, its connection is dropped, not reused (nothing unread is left on
    a pooled connection).
    """

    response: aiohttp.ClientResponse
    start: int
    end: int
    _exit: AsyncExitStack = field(repr=False)

    async def aclose(self) -> None:
        """Release the answer (and its connection when unread bytes remain); again: nothing."""
        await self._exit.aclose()


@dataclass(frozen=True)
class Prefetched:
    """A file's first bytes (a small one's all) as the describing answer carried them, not yet verified."""

    body: bytes
    etag: str | None
    checksum: str | None
    #: The chunk map's unit as the answer stated it ([ext] ``X-Chunk-Size``), a hint until the map agrees.
    chunk_size: int | None = None
    #: The rest of the answer, unread, for the file's first stream (None: the answer was all read).
    rest: HeldAnswer | None = None

    async def aclose(self) -> None:
        """Let go of :attr:`rest` if nobody took it (a file skipped, a failure before its streams)."""
        if self.rest is not None:
            await self.rest.aclose()


async def describe_by_id(
    client: FlowClient,
    ids: Sequence[str],
    *,
    limit: int = PREFETCH_LIMIT,
    total: int = PREFETCH_TOTAL,
    first: int = 0,
    on_streams: Callable[[int], None] | None = None,
) -> tuple[list[RemoteData], dict[str, Prefetched]]:
    """Each id's description and its first ``limit`` bytes (a small file's all).

    :param first: the first id's answer is asked for this many bytes (when more than
        ``limit``): what it brings after its head is held for the file's first stream
        (:attr:`Prefetched.rest`); the caller closes what no stream took.
    :param on_streams: told the first id's size when its answer's headers say it is
        longer than the answer brings (its streams will ask for the rest): opens their connections.

    Remembered capabilities may be stale (the server restarted with
    ``--no-extensions``, where the route is Flow's bare 404): then they are
    asked again, and without the extension the ids are described by ``/data``.

    :raises NotFoundError: some ids are unknown or not readable by this user.
    """
    bodies: dict[str, Prefetched] = {}
    try:
        return await _describe_each(client, ids, bodies, limit, total, first, on_streams)
    except BaseException:
        for body in bodies.values():  # a held answer is the caller's only once this returns
            with anyio.CancelScope(shield=True):
                await body.aclose()
        raise


async def _describe_each(
    client: FlowClient,
    ids: Sequence[str],
    bodies: dict[str, Prefetched],
    limit: int,
    total: int,
    first: int,
    on_streams: Callable[[int], None] | None,
) -> tuple[list[RemoteData], dict[str, Prefetched]]:
    """:func:`describe_by_id`'s loop; ``bodies`` fills as the answers come (closed by the caller on failure)."""
    items: list[RemoteData] = []
    missing: list[str] = []
    for n, data_id in enumerate(ids):
        if n * limit >= total:
            items += await describe(client, ids[n:])
            break
        url = f"/downloads/{quote(data_id, safe='')}"
        asked = first if n == 0 and first > limit else limit
        exit_stack = AsyncExitStack()
        held = False
        try:
            headers = {"Range": f"bytes=0-{asked - 1}"}
            answer = await exit_stack.enter_async_context(
                client.stream("GET", url, rate_class="download", headers=headers)
            )
            streams = on_streams if n == 0 else None
            item, prefetched = await _read(answer, data_id, limit, asked, exit_stack, streams)
            held = prefetched is not None and prefetched.rest is not None
        except RejectedError as exc:
            if exc.status != 416:
                raise
            items += await describe(client, [data_id])  # empty: no first byte to ask for
            continue
        except NotFoundError:
            fresh = await client.revalidate_capabilities()
            if fresh is not None and not fresh.download_by_id:
                for body in bodies.values():
                    await body.aclose()
                bodies.clear()
                return await describe(client, ids), bodies
            try:  # still claimed (a proxy may answer /capabilities itself): /data has the last word
                items += await describe(client, [data_id])
            except NotFoundError:
                missing.append(data_id)
            continue
        finally:
            if not held:
                with anyio.CancelScope(shield=True):
                    await exit_stack.aclose()
        items.append(item)
        if prefetched is not None:
            bodies[data_id] = prefetched
    if missing:
        raise missing_error(missing)
    return items, bodies


async def _read(
    answer: aiohttp.ClientResponse,
    data_id: str,
    limit: int,
    asked: int,
    exit_stack: AsyncExitStack,
    on_streams: Callable[[int], None] | None = None,
) -> tuple[RemoteData, Prefetched | None]:
    """The description in the answer's headers, and its body (a cut body is left to the streams).

    An answer longer than ``limit`` (``asked`` was more) is read to ``limit`` only, the rest
    held on its connection (:class:`HeldAnswer`, released by ``exit_stack``). ``on_streams``
    is told the size, before the body is read, of a file that is longer than ``asked``.
    """
    size: int | None = answer.content_length if answer.status == 200 else None
    if answer.status == 206:
        match = _CONTENT_RANGE.match(answer.headers.get("Content-Range", ""))
        size = int(match.group(1)) if match else None
    info = {
        "id": data_id,
        "filename": answer.content_disposition.filename if answer.content_disposition else None,
        "size": size,
        "checksum": answer.headers.get(protocol.HEADER_CHECKSUM),
    }
    item = remote_data(info, data_id)
    if on_streams is not None and item.size > asked:
        on_streams(item.size)
    length = answer.content_length
    if length is None or length != min(asked, item.size):
        return item, None  # not what was asked: leave it (the streams ask for ranges)
    try:
        body = await (answer.read() if length <= limit else answer.content.readexactly(limit))
    except _BODY_ERRORS:
        return item, None
    if len(body) != min(limit, item.size):
        return item, None
    rest = HeldAnswer(answer, limit, length, exit_stack) if length > limit else None
    layout = chunk_layout(answer.headers, item.size)
    return item, Prefetched(body, answer.headers.get("ETag"), item.checksum, layout, rest)


def chunk_layout(headers: Mapping[str, str], size: int) -> int | None:
    """The chunk size the headers state, if it and the chunk count add up to ``size``; else None (no hint)."""
    unit, count = headers.get(protocol.HEADER_CHUNK_SIZE, ""), headers.get(protocol.HEADER_CHUNK_COUNT, "")
    if not (unit.isascii() and unit.isdigit() and count.isascii() and count.isdigit()) or len(unit + count) > 38:
        return None
    chunk_size, chunks = int(unit), int(count)
    if size <= 0 or chunk_size <= 0 or chunks != -(-size // chunk_size) or chunks > MAX_STATED_CHUNKS:
        return None
    return chunk_size

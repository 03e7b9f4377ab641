"""What the server says about samples: its catalog, its samples, and what a lost answer said.

Metadata requests only (the ``api`` and ``search`` rate classes); the upload
itself is :mod:`._samples`'. A sample is made by the final chunk of its last
file; when that chunk's answer is lost, these calls find out whether the
server made it, before anything is sent again (``samples.md``):

- [ext] ``GET /upload/<id>`` names the sample a data item was linked into;
- ``GET /data/<id>``: 404 while the upload is unfinished (the final chunk
  never landed), and on hosted Flow ``sample`` once it is linked;
- ``/samples/search?owned=true&name=`` and each candidate's filesets, for
  a server that says neither, or when the last file's id itself was lost
  (its only chunk's answer): the sample whose fileset holds our data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from ._catalog import Catalog, attributes_with_options
from ._client import FlowClient
from ._errors import NotFoundError, ProtocolError, RejectedError
from ._runtime import task_group

__all__ = [
    "FoundSample",
    "LostFinal",
    "data_of_samples",
    "fetch_catalog",
    "find_made_sample",
    "owned_projects",
    "sample_data",
]

#: Slack on the clock when a sample's ``created`` is compared with when we began to send it.
_CLOCK_SLACK = 120.0


async def owned_projects(client: FlowClient) -> list[dict[str, Any]]:
    """Every page of ``GET /projects/owned``."""
    return await _pages(client, "/projects/owned", "projects", {})


async def fetch_catalog(client: FlowClient) -> Catalog:
    """Sample types, attributes (with the options of closed ones), organisms and the caller's projects.

    The requests that do not wait for one another go at once: types,
    metadata, organisms, projects and the server's capabilities (which the
    transfer asks next, and the client keeps), then every closed attribute's
    options as soon as the metadata names them. Each still takes its token
    from the rate limiter. Through a 50 ms round trip the six in a row cost
    ~0.33 s before any byte moved; at once, two round trips.
    """
    answers: dict[str, Any] = {}
    options: dict[str, Any] = {}

    async def get(key: str, path: str) -> None:
        answers[key] = await client.json_value(path)

    async def option(identifier: str) -> None:
        options[identifier] = await client.json_value(f"/samples/metadata/{quote(identifier, safe='')}/options")

    async def metadata_and_options() -> None:
        await get("metadata", "/samples/metadata")
        async with task_group() as group:
            for identifier in attributes_with_options(answers["metadata"]):
                group.start_soon(option, identifier)

    async def projects() -> None:
        answers["projects"] = await owned_projects(client)

    async def capabilities() -> None:
        await client.capabilities()

    async with task_group() as group:
        group.start_soon(get, "types", "/samples/types")
        group.start_soon(metadata_and_options)
        group.start_soon(get, "organisms", "/organisms")
        group.start_soon(projects)
        group.start_soon(capabilities)
    return Catalog.from_api(answers["types"], answers["metadata"], options, answers["organisms"], answers["projects"])


@dataclass(frozen=True)
class FoundSample:
    """A sample the server made: its id and its files' ids in link order."""

    id: str
    data_ids: tuple[str, ...]


@dataclass(frozen=True)
class LostFinal:
    """What we know of a sample whose final answer may be lost.

    :ivar last_data_id: the last file's data id, if an answer ever gave it.
    :ivar first_data_id: the first file's id when the sample has several files (``previous_data[0]``).
    :ivar filename, size: the last file's name and size (a one-file sample whose only chunk's answer was lost).
    :ivar since: when we began to send the last file (Unix time).
    """

    name: str
    last_data_id: str | None
    first_data_id: str | None
    filename: str
    size: int
    since: float


async def find_made_sample(client: FlowClient, lost: LostFinal, *, upload_status: bool) -> FoundSample | None:
    """The sample the server made from this upload, or None when it made none (send on)."""
    if lost.last_data_id is not None:
        data_id = quote(lost.last_data_id, safe="")
        if upload_status:
            try:
                status = await client.json_request("GET", f"/upload/{data_id}", rate_class="api")
            except (NotFoundError, RejectedError):
                return None  # the server no longer knows the upload: nothing was made of it
            sample_id = status.get("sample_id")
            if not sample_id:
                return None
            return await _described(client, str(sample_id))
        try:
            info = await client.json_request("GET", f"/data/{data_id}", rate_class="api")
        except NotFoundError:
            return None  # not ready: the final chunk never landed, so no sample either
        if "sample" in info:
            linked = info.get("sample")
            if not isinstance(linked, dict) or not linked.get("id"):
                return None
            return await _described(client, str(linked["id"]))
    return await _search(client, lost)


async def _described(client: FlowClient, sample_id: str) -> FoundSample:
    return FoundSample(sample_id, tuple(item["id"] for item in await sample_data(client, sample_id)))


async def sample_data(client: FlowClient, sample_id: str) -> list[dict[str, Any]]:
    """The data of a sample's filesets, in link order (``GET /samples/<id>``): ``{"id", "filename", "size"}``."""
    info = await client.json_request("GET", f"/samples/{quote(sample_id, safe='')}", rate_class="api")
    return _fileset_data(info)


def _fileset_data(info: dict[str, Any]) -> list[dict[str, Any]]:
    filesets = info.get("filesets")
    if not isinstance(filesets, list):
        raise ProtocolError(f"sample {info.get('id')!r}: malformed filesets")
    data = []
    for fileset in filesets:
        items = fileset.get("data") if isinstance(fileset, dict) else None
        if not isinstance(items, list):
            raise ProtocolError(f"sample {info.get('id')!r}: malformed fileset")
        for item in items:
            if not isinstance(item, dict) or not isinstance(item.get("id"), str | int):
                raise ProtocolError(f"sample {info.get('id')!r}: malformed fileset data")
            data.append({**item, "id": str(item["id"])})
    return data


async def _search(client: FlowClient, lost: LostFinal) -> FoundSample | None:
    """Our own samples of this name, each checked by its files: the one holding ours."""
    for candidate in await _named(client, lost.name):
        created = candidate.get("created")
        if isinstance(created, int | float) and created < lost.since - _CLOCK_SLACK:
            continue  # made before we began to send: not ours
        sample_id = str(candidate["id"])
        data = await sample_data(client, sample_id)
        ids = [item["id"] for item in data]
        if _matches(lost, data, ids):
            return FoundSample(sample_id, tuple(ids))
    return None


def _matches(lost: LostFinal, data: Sequence[dict[str, Any]], ids: Sequence[str]) -> bool:
    if lost.last_data_id is not None:
        return lost.last_data_id in ids
    if lost.first_data_id is not None:
        return bool(ids) and ids[0] == lost.first_data_id
    return len(data) == 1 and data[0].get("filename") == lost.filename and data[0].get("size") == lost.size


async def _named(client: FlowClient, name: str) -> list[dict[str, Any]]:
    """Every sample of ours named exactly ``name`` (the search matches substrings)."""
    found = await _pages(client, "/samples/search", "samples", {"owned": "true", "name": name}, rate_class="search")
    return [item for item in found if item.get("name") == name and item.get("id") is not None]


async def _pages(
    client: FlowClient, path: str, key: str, params: dict[str, str], rate_class: str = "api"
) -> list[dict[str, Any]]:
    """Every item of a page-numbered listing (``page``/``count``, 100 a page)."""
    items: list[dict[str, Any]] = []
    page = 1
    while True:
        answer = await client.json_request(
            "GET", path, rate_class=rate_class, params={**params, "count": "100", "page": str(page)}
        )
        listed, total = answer.get(key), answer.get("count")
        if not isinstance(listed, list) or not isinstance(total, int):
            raise ProtocolError(f"{path}: malformed answer")
        items += [item for item in listed if isinstance(item, dict)]
        if not listed or len(items) >= total:
            return items
        page += 1


async def data_of_samples(
    client: FlowClient, samples: Sequence[str] = (), projects: Sequence[str] = (), *, raw_only: bool = False
) -> list[str]:
    """The ids of every data file of these samples, and of every sample of these projects (``download --sample``).

    Every file related to a sample, as hosted Flow's ``GET /samples/<id>/data``
    lists them: its raw reads and the outputs of every execution run on it
    (``samples.md``: "raw inputs plus pipeline-produced outputs"). With
    ``raw_only``, only the reads it was made of: its filesets in
    ``GET /samples/<id>`` (one request a sample, no paging).

    A project is named by id; its samples are found by its name among the
    caller's samples (Flow's search takes a project's name, not its id), so
    only projects the caller owns can be named.

    :raises NotFoundError: a sample or project that does not exist or is not the caller's (all named at once).
    """
    sample_ids = [str(s) for s in samples]
    missing: list[str] = []
    if projects:
        names = {str(p.get("id")): str(p.get("name")) for p in await owned_projects(client)}
        for project in projects:
            name = names.get(str(project))
            if name is None:
                missing.append(f"project {project}")
                continue
            found = await _pages(
                client, "/samples/search", "samples", {"owned": "true", "project": name}, rate_class="search"
            )
            sample_ids += [str(item["id"]) for item in found if item.get("project_name") == name]
    ids: list[str] = []
    for sample_id in dict.fromkeys(sample_ids):
        try:
            data = await (
                sample_data(client, sample_id)
                if raw_only
                else _pages(client, f"/samples/{quote(sample_id, safe='')}/data", "data", {})
            )
        except NotFoundError:
            missing.append(f"sample {sample_id}")
            continue
        ids += [str(item["id"]) for item in data if item.get("id") is not None]
    if missing:
        raise NotFoundError(f"no readable {', '.join(missing)} (unknown, or not yours)", 404)
    return list(dict.fromkeys(ids))

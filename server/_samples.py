"""Samples, projects and the catalog as hosted Flow shows them (``/samples/...``, ``/organisms``, ...).

Shapes follow hosted Flow's published agent docs (goodwright/flow-skills,
``endpoints/samples.md``, ``projects.md``, ``organisms.md``) where they
describe a field, and flowbio's models otherwise: ids are strings, text is
never null, ``created`` is an integer Unix time. Uploads that make samples
live with the chunk machinery (:mod:`._upload_routes`).
"""

from __future__ import annotations

import asyncio
import datetime
from typing import Any

from aiohttp import web

from ._annotation import template_xlsx
from ._catalog import Catalog
from ._http import ApiError, bad_request, json_response, not_found, query_int
from ._ids import is_id
from ._state import State, state_of, user_of
from ._store_samples import SAMPLE_SORTS, ProjectRow, SampleFilter, SampleRow

#: Hosted Flow's page sizes: 10 unless asked, at most 100 (more is a 400, not a clamp).
DEFAULT_COUNT = 10
MAX_COUNT = 100
#: Options listed per attribute (hosted Flow: the first 100 by value, no pages).
MAX_OPTIONS = 100
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
#: Routes anyone may call without a token (hosted Flow: "Auth: none required").
PUBLIC_ROUTES = frozenset({"sample_types", "sample_metadata", "metadata_options", "organisms"})
_TRUE = ("1", "true", "yes")
_FALSE = ("0", "false", "no")


def _page(request: web.Request) -> tuple[int, int]:
    """(page, count) as hosted Flow reads them; a bad value is a 400 here, where hosted Flow's is a 500."""
    count = query_int(request, "count", DEFAULT_COUNT, minimum=1, maximum=MAX_COUNT)
    page = query_int(request, "page", 1, minimum=1, maximum=10**9)
    assert count is not None and page is not None
    return page, count


def _unix(created: float) -> int:
    return int(created)


def _metadata(catalog: Catalog, metadata: dict[str, dict[str, str | None]], *, full: bool) -> dict[str, Any]:
    shown: dict[str, Any] = {}
    for identifier, item in metadata.items():
        attribute = catalog.attribute(identifier)
        value: dict[str, Any] = {
            "attribute_name": attribute.name if attribute else identifier,
            "value": item.get("value"),
            "annotation": item.get("annotation"),
        }
        if full:
            value.update(
                attribute_description=attribute.description if attribute else "", is_list=False, url_pattern=""
            )
        shown[identifier] = value
    return shown


def _organism(catalog: Catalog, organism_id: str | None) -> dict[str, str] | None:
    if organism_id is None:
        return None
    organism = catalog.organism(organism_id)
    return {"id": organism_id, "name": organism.name if organism else organism_id}


def sample_item(catalog: Catalog, row: SampleRow, user: str, *, full: bool = False) -> dict[str, Any]:
    """One sample as ``/samples/search`` lists it (``full``: its metadata as the detail view shows it)."""
    sample_type = catalog.sample_type(row.sample_type)
    return {
        "id": row.id,
        "name": row.name,
        "created": _unix(row.created),
        "can_delete": row.owner == user,
        "organism": _organism(catalog, row.organism),
        "sample_type": {"identifier": row.sample_type, "name": sample_type.name if sample_type else row.sample_type},
        "metadata": _metadata(catalog, row.metadata, full=full),
        "project_name": row.project_name,
        "owner_name": row.owner,
        "is_paired": row.is_paired,
    }


def _project(row: ProjectRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "description": row.description,
        "created": _unix(row.created),
        "private": row.private,
        "owner_name": row.owner,
    }


async def _visible_sample(request: web.Request) -> SampleRow:
    """The sample named in the URL if the caller may see it (theirs, or public); 404 otherwise."""
    state = state_of(request)
    sample_id = request.match_info["sample_id"]
    row = await state.store.run(state.store.get_sample, sample_id) if is_id(sample_id) else None
    if row is None or (row.private and row.owner != user_of(request)):
        not_found()
    return row


# --- the catalog -----------------------------------------------------------------


async def sample_types(request: web.Request) -> web.StreamResponse:
    catalog = state_of(request).catalog
    return json_response(
        [
            {"identifier": t.identifier, "name": t.name, "description": t.description}
            for t in sorted(catalog.sample_types, key=lambda t: t.name)
        ]
    )


async def sample_metadata(request: web.Request) -> web.StreamResponse:
    catalog = state_of(request).catalog
    names = {t.identifier: t.name for t in catalog.sample_types}
    return json_response(
        [
            {
                "identifier": a.identifier,
                "name": a.name,
                "description": a.description,
                "required": a.required,
                "required_for_public": False,
                "sample_type_links": [
                    {
                        "sample_type_identifier": t,
                        "sample_type_name": names.get(t, t),
                        "required": True,
                        "required_for_public": False,
                    }
                    for t in a.required_for
                ],
                "all_sample_types": True,
                "has_options": a.options is not None,
                "allow_user_terms": a.allow_user_terms,
                "allow_annotation": a.allow_annotation,
                "in_table": True,
                "is_list": False,
                "regex_validator": None,
                "url_pattern": None,
                "order": order,
            }
            for order, a in enumerate(catalog.attributes)
        ]
    )


async def metadata_options(request: web.Request) -> web.StreamResponse:
    catalog = state_of(request).catalog
    identifier = request.match_info["identifier"]
    attribute = catalog.attribute(identifier)
    if attribute is None:
        raise ApiError(404, "Not found")
    number = catalog.attributes.index(attribute) + 1
    options = [
        {"id": str(number * 1000 + i + 1), "value": v, "validated": True} for i, v in enumerate(attribute.options or ())
    ]
    total = len(options)
    validated = request.query.get("validated")
    if validated is not None and validated != "true":
        options = []  # only the caller's own unvalidated terms, and we keep none
    value = request.query.get("value")
    if value:
        options = [o for o in options if value.casefold() in str(o["value"]).casefold()]
    options.sort(key=lambda o: str(o["value"]))
    return json_response({"count": len(options), "total_count": total, "options": options[:MAX_OPTIONS]})


async def organisms(request: web.Request) -> web.StreamResponse:
    catalog = state_of(request).catalog
    return json_response(
        [{"id": o.id, "name": o.name, "latin_name": o.latin_name, "latest_fileset": None} for o in catalog.organisms]
    )


async def annotation_template(request: web.Request) -> web.StreamResponse:
    state = state_of(request)
    sample_type = request.match_info.get("sample_type", "generic")
    if sample_type != "generic" and state.catalog.sample_type(sample_type) is None:
        not_found(f"no sample type {sample_type[:100]!r}")
    # Building a workbook takes some milliseconds of CPU: not on the event loop.
    body = await asyncio.get_running_loop().run_in_executor(state.io, template_xlsx, state.catalog, sample_type)
    return web.Response(
        body=body, content_type=XLSX, headers={"Content-Disposition": f'attachment; filename="{sample_type}.xlsx"'}
    )


# --- projects and samples ----------------------------------------------------------------


async def owned_projects(request: web.Request) -> web.StreamResponse:
    state = state_of(request)
    page, count = _page(request)
    total, rows = await state.store.run(state.store.owned_projects, user_of(request), count, (page - 1) * count)
    return json_response({"count": total, "page": page, "projects": [_project(r) for r in rows]})


def _flag(request: web.Request, name: str) -> bool | None:
    """Hosted Flow's filter booleans: 1/true/yes, 0/false/no; absent or anything else: no filter."""
    text = request.query.get(name, "").strip().lower()
    return True if text in _TRUE else False if text in _FALSE else None


def _unix_param(request: web.Request, name: str) -> float | None:
    text = request.query.get(name)
    if text is None:
        return None
    try:
        value = int(text)
    except ValueError:
        bad_request(f"{name} must be an integer Unix time")
    if abs(value) > 10**15:
        bad_request(f"{name} is beyond any Unix time")
    return float(value)


async def search_samples(request: web.Request) -> web.StreamResponse:
    """``GET /samples/search``: hosted Flow's filters; parameters it does not know are ignored, as there."""
    state = state_of(request)
    user = user_of(request)
    page, count = _page(request)
    sort = request.query.get("sort", "-created")
    if sort not in SAMPLE_SORTS:
        bad_request(f"sort must be one of {', '.join(SAMPLE_SORTS)}")
    organism = request.query.get("organism", "").strip()
    has_organism = _flag(request, "organism")
    for name in ("name", "project", "owner"):
        if len(request.query.get(name, "")) > 255:
            bad_request(f"{name} filter longer than 255 characters")
    types = tuple(t for t in request.query.get("sample_types", "").split(",") if t.strip())
    if len(types) > 100:
        bad_request("at most 100 sample_types")
    flt = SampleFilter(
        user=user,
        owned=_flag(request, "owned") is True,
        name=request.query.get("name") or None,
        project=request.query.get("project") or None,
        organism=organism if organism and has_organism is None else None,
        has_organism=has_organism,
        sample_types=tuple(t.strip() for t in types),
        created_gt=_unix_param(request, "created_gt"),
        created_lt=_unix_param(request, "created_lt"),
        owner=request.query.get("owner") or None,
        metadata=tuple(_metadata_filters(request, state.catalog)),
        sort=sort,
    )
    full = _flag(request, "full_metadata") is True
    total, rows = await state.store.run(state.store.search_samples, flt, count, (page - 1) * count)
    return json_response(
        {"count": total, "page": page, "samples": [sample_item(state.catalog, r, user, full=full) for r in rows]}
    )


def _metadata_filters(request: web.Request, catalog: Catalog) -> list[tuple[str, str | bool]]:
    """``?<attribute>=<text>`` filters, for the catalog's attributes only (others are ignored, as hosted)."""
    filters: list[tuple[str, str | bool]] = []
    for attribute in catalog.attributes:
        text = request.query.get(attribute.identifier)
        if text:
            if len(text) > 255:
                bad_request(f"{attribute.identifier} filter longer than 255 characters")
            flag = _flag(request, attribute.identifier)
            filters.append((attribute.identifier, flag if flag is not None else text))
    return filters


async def owned_samples(request: web.Request) -> web.StreamResponse:
    """``GET /samples/owned?limit=&offset=``: the seed's older list, in the same envelope."""
    state = state_of(request)
    user = user_of(request)
    limit = query_int(request, "limit", 20, minimum=1, maximum=MAX_COUNT)
    offset = query_int(request, "offset", 0, minimum=0)
    assert limit is not None and offset is not None
    total, rows = await state.store.run(state.store.search_samples, SampleFilter(user=user, owned=True), limit, offset)
    return json_response(
        {"count": total, "page": offset // limit + 1, "samples": [sample_item(state.catalog, r, user) for r in rows]}
    )


async def get_sample(request: web.Request) -> web.StreamResponse:
    state = state_of(request)
    row = await _visible_sample(request)
    user = user_of(request)
    filesets = await state.store.run(state.store.filesets, row.id)
    sample_type = state.catalog.sample_type(row.sample_type)
    return json_response(
        {
            "id": row.id,
            "created": _unix(row.created),
            "name": row.name,
            "private": row.private,
            "can_edit": row.owner == user,
            "pubmed": "",
            "sample_type": sample_type.name if sample_type else row.sample_type,
            "metadata": _metadata(state.catalog, row.metadata, full=True),
            "organism": _organism(state.catalog, row.organism),
            "filesets": [
                {
                    "id": f.id,
                    "created": _unix(f.created),
                    "data": [{"id": d, "filename": n, "size": s} for d, n, s in f.data],
                }
                for f in filesets
            ],
            "owner": {"username": row.owner, "name": row.owner, "image": None},
            "group_owner": None,
            "project": {"id": row.project_id, "name": row.project_name} if row.project_id else None,
        }
    )


async def sample_data(request: web.Request) -> web.StreamResponse:
    """``GET /samples/<id>/data``: every data file related to the sample: its own, then its runs' outputs."""
    state = state_of(request)
    row = await _visible_sample(request)
    user = user_of(request)
    page, count = _page(request)
    text = request.query.get("filter", "").casefold()
    filesets = await state.store.run(state.store.filesets, row.id)
    when = min((f.created for f in filesets), default=row.created)
    files: list[tuple[str, str, int, float, str | None, str | None, str]] = [
        (d, n, s, when, None, None, row.owner) for f in filesets for d, n, s in f.data
    ]
    runs = await state.store.run(state.store.visible_executions, user, row.id)
    outputs = await state.store.run(state.store.execution_outputs, [r.id for r in runs])
    files += [
        (o.data_id, o.filename, o.size, o.created, r.pipeline_name, o.process_name, r.owner)
        for r in runs
        for o in outputs[r.id]
    ]
    files = [f for f in files if any(text in (t or row.name).casefold() for t in (f[1], f[4], f[5], f[6]))]
    shown = files[(page - 1) * count : page * count]
    return json_response(
        {
            "count": len(files),
            "page": page,
            "data": [
                {
                    "id": d,
                    "filename": n,
                    "size": s,
                    "created": datetime.datetime.fromtimestamp(c, datetime.UTC).isoformat(),
                    "pipeline_name": pipeline,
                    "process_execution_name": process,
                    "sample_name": row.name,
                    "owner_name": owner,
                    "can_delete": owner == user,
                }
                for d, n, s, c, pipeline, process, owner in shown
            ],
        }
    )


async def sample_imports(request: web.Request) -> web.StreamResponse:
    """flowbio's ``import_samples``/``get_import``: importing from public repositories needs hosted Flow."""
    raise ApiError(501, "this server does not import samples from public repositories (ENA, SRA, GEO)")


def sample_routes(state: State) -> list[web.RouteDef]:
    return [
        web.post("/v2/sample-imports", sample_imports, name="sample_imports"),
        web.get("/v2/sample-imports/{job_id}", sample_imports, name="sample_import", allow_head=False),
        web.get("/samples/types", sample_types, name="sample_types", allow_head=False),
        web.get("/samples/metadata", sample_metadata, name="sample_metadata", allow_head=False),
        web.get("/samples/metadata/{identifier}/options", metadata_options, name="metadata_options", allow_head=False),
        web.get("/organisms", organisms, name="organisms", allow_head=False),
        web.get("/projects/owned", owned_projects, name="projects_owned", allow_head=False),
        web.get("/samples/search", search_samples, name="samples_search", allow_head=False),
        web.get("/samples/owned", owned_samples, name="samples_owned", allow_head=False),
        web.get("/samples/{sample_id:[0-9]+}", get_sample, name="sample", allow_head=False),
        web.get("/samples/{sample_id:[0-9]+}/data", sample_data, name="sample_data", allow_head=False),
        web.get("/annotation", annotation_template, name="annotation_generic", allow_head=False),
        web.get("/annotation/{sample_type}", annotation_template, name="annotation", allow_head=False),
    ]

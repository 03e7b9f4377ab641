"""Executions (pipeline runs) as hosted Flow shows them: ``/executions/...``, ``/samples/<id>/executions``.

Shapes follow hosted Flow's published agent docs (goodwright/flow-skills,
``endpoints/executions.md`` and ``samples.md``). Where they are silent this
server infers, and docs/protocol.md ("Executions") says what: the detail's
``process_executions[]`` items and its ``downstream_data`` list. This server
runs no pipelines; runs come from ``flowxfer admin execution add``.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from ._http import bad_request, json_response, not_found, query_float
from ._ids import is_id
from ._samples import _flag, _page, _unix_param, _visible_sample
from ._state import state_of, user_of
from ._store_executions import TERMINAL, ExecutionRow, OutputRow

#: Sorts /executions/search understands (hosted: ``-created``, ``name``, ``-name``).
EXECUTION_SORTS = ("-created", "created", "name", "-name")
#: Longest text filter accepted (hosted's columns are 255 characters).
MAX_FILTER = 255
#: The top-level fields of ``GET /executions/<id>`` (what ``include=``/``exclude=`` choose among).
DETAIL_FIELDS = (
    "id",
    "identifier",
    "uuid",
    "status",
    "created",
    "started",
    "finished",
    "nextflow_version",
    "stdout",
    "stderr",
    "log",
    "command",
    "params",
    "data_params",
    "csv_params",
    "pipeline",
    "sample",
    "project",
    "fileset",
    "owner",
    "group_owner",
    "retries",
    "retried_by",
    "can_edit",
    "process_executions",
    "downstream_data",
)


def _iso(when: float | None) -> str | None:
    return None if when is None else datetime.datetime.fromtimestamp(when, datetime.UTC).isoformat()


def _item(row: ExecutionRow, user: str, now: float, iso: bool = False) -> dict[str, Any]:
    """One execution as the search (Unix times) and ``/samples/<id>/executions`` (ISO-8601) list it."""
    status, finished = row.status_at(now)
    stamp: Callable[[float | None], Any] = _iso if iso else (lambda t: t)
    return {
        "id": row.id,
        "identifier": row.identifier,
        "pipeline_name": row.pipeline_name,
        "pipeline_version": row.pipeline_version,
        "created": _iso(row.created) if iso else int(row.created),
        "started": stamp(row.created),
        "finished": stamp(finished),
        "status": status,
        "can_delete": row.owner == user,
        "retries": None,
        "retried_by": None,
        "fileset": None,
        "sample_name": row.sample_name,
        "owner_name": row.owner,
    }


def _downstream(outputs: list[OutputRow]) -> list[dict[str, Any]]:
    return [
        {
            "id": o.data_id,
            "filename": o.filename,
            "filetype": o.filetype or "",
            "process_execution_name": o.process_name,
        }
        for o in outputs
    ]


def _process_status(status: str, last: bool) -> str:
    """A step's status, from its run's: steps finish in order; only the last one shares an ERROR or CANCELED."""
    if status == "OK":
        return "COMPLETED"
    if status in TERMINAL:
        return status if last else "COMPLETED"
    return "RUNNING" if last else "COMPLETED"


def _process_executions(row: ExecutionRow, outputs: list[OutputRow], now: float) -> list[dict[str, Any]]:
    """One step per process that produced outputs, in the order the outputs were registered."""
    status, finished = row.status_at(now)
    names = list(dict.fromkeys(o.process_name for o in outputs))
    steps = []
    for number, name in enumerate(names):
        mine = [o for o in outputs if o.process_name == name]
        steps.append(
            {
                "id": f"{row.id}-{number + 1}",
                "name": name,
                "process_name": name,
                "status": _process_status(status, number == len(names) - 1),
                "started": row.created,
                "finished": finished,
                "downstream_data": [
                    {"id": o.data_id, "filename": o.filename, "filetype": o.filetype or "", "size": o.size}
                    for o in mine
                ],
            }
        )
    return steps


def _matches(row: ExecutionRow, outputs: list[OutputRow], request: web.Request, now: float, user: str) -> bool:
    """Hosted Flow's search filters (pipeline pks: this server has no pipeline table, so names match)."""
    query = request.query
    status, finished = row.status_at(now)

    def has(name: str, *texts: str | None) -> bool:
        wanted = query.get(name, "").casefold()
        return not wanted or any(wanted in (t or "").casefold() for t in texts)

    checks = [
        has("name", row.pipeline_name, row.pipeline_version, row.sample_name),
        has("owner", row.owner),
        has("process_execution", *(o.process_name for o in outputs)),
        has("terminal", row.stdout, row.stderr),
        _flag(request, "owned") is not True or row.owner == user,
        not query.get("status") or status == query["status"],
        not query.get("pipeline") or query["pipeline"] == row.pipeline_name,
        not query.get("pipeline_version") or query["pipeline_version"] == row.pipeline_version,
        not query.get("nextflow_version") or query["nextflow_version"] == row.nextflow_version,
    ]
    versions = [v for v in query.get("pipeline_versions", "").split(",") if v]
    checks.append(not versions or row.pipeline_version in versions)
    for name, bound in (("created_gt", 1), ("created_lt", -1)):
        limit = _unix_param(request, name)
        checks.append(limit is None or (row.created - limit) * bound >= 0)
    for name, bound in (("duration_gt", 1), ("duration_lt", -1)):
        limit = query_float(request, name)
        if limit is not None:
            checks.append(finished is not None and (finished - row.created - limit) * bound >= 0)
    return all(checks)


def _check_filters(request: web.Request) -> None:
    for name in (
        "name",
        "owner",
        "process_execution",
        "terminal",
        "pipeline",
        "pipeline_version",
        "pipeline_versions",
        "nextflow_version",
        "status",
        "filter",
    ):
        if len(request.query.get(name, "")) > MAX_FILTER:
            bad_request(f"{name} filter longer than {MAX_FILTER} characters")


async def search_executions(request: web.Request) -> web.StreamResponse:
    """``GET /executions/search``: the runs the caller may see, filtered, a page at a time."""
    state = state_of(request)
    user = user_of(request)
    page, count = _page(request)
    sort = request.query.get("sort", "-created")
    if sort not in EXECUTION_SORTS:
        bad_request(f"sort must be one of {', '.join(EXECUTION_SORTS)}")
    _check_filters(request)
    now = time.time()
    rows = await state.store.run(state.store.visible_executions, user)
    outputs = await state.store.run(state.store.execution_outputs, [r.id for r in rows])
    rows = [r for r in rows if _matches(r, outputs[r.id], request, now, user)]
    if sort in ("name", "-name"):
        rows.sort(key=lambda r: (r.pipeline_name.casefold(), r.identifier), reverse=sort == "-name")
    elif sort == "created":
        rows.reverse()
    shown = rows[(page - 1) * count : page * count]
    items = []
    for row in shown:
        item = _item(row, user, now)
        if _flag(request, "return_data") is True:
            item["downstream_data"] = _downstream(outputs[row.id])
        if _flag(request, "return_inputs") is True:
            item["inputs"] = await _inputs(request, row)
        items.append(item)
    return json_response({"count": len(rows), "page": page, "executions": items})


async def _inputs(request: web.Request, row: ExecutionRow) -> list[dict[str, Any]]:
    """An execution's inputs: its sample's raw files (no pipeline parameters are kept here)."""
    if row.sample_id is None:
        return []
    state = state_of(request)
    filesets = await state.store.run(state.store.filesets, row.sample_id)
    return [{"id": d, "filename": n, "filetype": ""} for f in filesets for d, n, _s in f.data]


def _trimmed(request: web.Request, body: dict[str, Any]) -> dict[str, Any]:
    """Hosted Flow's ``include=``/``exclude=`` (repeatable; both at once is a 400)."""
    include = request.query.getall("include", [])
    exclude = request.query.getall("exclude", [])
    if include and exclude:
        bad_request("use include or exclude, not both")
    if include:
        return {k: v for k, v in body.items() if k in include}
    return {k: v for k, v in body.items() if k not in exclude}


async def get_execution(request: web.Request) -> web.StreamResponse:
    """``GET /executions/<id>``: one run; poll its ``status`` (trim with ``include=``)."""
    state = state_of(request)
    user = user_of(request)
    execution_id = request.match_info["execution_id"]
    row = await state.store.run(state.store.get_execution, execution_id) if is_id(execution_id) else None
    if row is None or not row.visible_to(user):
        not_found()
    text = request.query.get("log", "0")
    try:
        offset = int(text)
    except ValueError:
        bad_request("log must be an integer byte offset")
    if offset < 0:
        bad_request("log must be at least 0")
    now = time.time()
    status, finished = row.status_at(now)
    outputs = (await state.store.run(state.store.execution_outputs, [row.id]))[row.id]
    log = (row.stdout + row.stderr).encode()
    body: dict[str, Any] = {
        "id": row.id,
        "identifier": row.identifier,
        "uuid": f"{int(row.id):032x}"[-32:],
        "status": status,
        "created": int(row.created),
        "started": int(row.created),
        "finished": None if finished is None else int(finished),
        "nextflow_version": row.nextflow_version,
        "stdout": row.stdout,
        "stderr": row.stderr,
        "log": log[offset:].decode(errors="replace"),
        "command": "",
        "params": {},
        "data_params": {},
        "csv_params": {},
        "pipeline": {
            "id": row.pipeline_name,
            "name": row.pipeline_version,
            "pipeline_name": row.pipeline_name,
            "schema": {},
        },
        "sample": {"id": row.sample_id, "name": row.sample_name} if row.sample_id else None,
        "project": {"id": row.project_id, "name": row.project_name} if row.project_id else None,
        "fileset": None,
        "owner": {"username": row.owner, "name": row.owner, "image": None},
        "group_owner": None,
        "retries": None,
        "retried_by": None,
        "can_edit": row.owner == user,
        "process_executions": _process_executions(row, outputs, now),
        "downstream_data": _downstream(outputs),
    }
    return json_response(_trimmed(request, body))


async def sample_executions(request: web.Request) -> web.StreamResponse:
    """``GET /samples/<id>/executions``: the sample's runs, newest first; ``filter`` spans several fields."""
    state = state_of(request)
    user = user_of(request)
    sample = await _visible_sample(request)
    page, count = _page(request)
    _check_filters(request)
    wanted = request.query.get("filter", "").casefold()
    now = time.time()
    rows = await state.store.run(state.store.visible_executions, user, sample.id)
    if wanted:
        rows = [
            r
            for r in rows
            if any(
                wanted in (t or "").casefold()
                for t in (
                    r.identifier,
                    r.pipeline_name,
                    r.pipeline_version,
                    r.sample_name,
                    r.owner,
                    r.status_at(now)[0],
                )
            )
        ]
    shown = rows[(page - 1) * count : page * count]
    return json_response(
        {"count": len(rows), "page": page, "executions": [_item(r, user, now, iso=True) for r in shown]}
    )


def execution_routes() -> list[web.RouteDef]:
    return [
        web.get("/executions/search", search_executions, name="executions_search", allow_head=False),
        web.get("/executions/{execution_id}", get_execution, name="execution", allow_head=False),
        web.get(
            "/samples/{sample_id:[0-9]+}/executions", sample_executions, name="sample_executions", allow_head=False
        ),
    ]

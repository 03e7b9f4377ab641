"""The OpenAPI description of the execution endpoints (merged into ``/openapi.json`` by :mod:`._openapi`)."""

from __future__ import annotations

from typing import Any

from ._executions import DETAIL_FIELDS, EXECUTION_SORTS, MAX_FILTER
from ._openapi_samples import _PAGING, _STR, _err, _get, _path, _q

_NULLABLE_STR = {"type": ["string", "null"]}
_TEXT = {"type": "string", "maxLength": MAX_FILTER}
_UNIX = {"type": "integer", "minimum": -(10**15), "maximum": 10**15}
_SECONDS = {"type": "number", "minimum": -(10**15), "maximum": 10**15}
_REF = {"type": ["object", "null"], "properties": {"id": _STR, "identifier": _STR}}
_OUTPUT = {
    "type": "object",
    "required": ["id", "filename", "filetype", "process_execution_name"],
    "properties": {"id": _STR, "filename": _STR, "filetype": _STR, "process_execution_name": _STR},
}
_ITEM: dict[str, Any] = {
    "type": "object",
    "required": [
        "id",
        "identifier",
        "pipeline_name",
        "pipeline_version",
        "created",
        "started",
        "finished",
        "status",
        "can_delete",
        "retries",
        "retried_by",
        "fileset",
        "sample_name",
        "owner_name",
    ],
    "properties": {
        "id": _STR,
        "identifier": _STR,
        "pipeline_name": _STR,
        "pipeline_version": _STR,
        "status": {"type": "string", "description": "OK, ERROR, CANCELED; '' or '-' while it runs"},
        "can_delete": {"type": "boolean"},
        "retries": _REF,
        "retried_by": _REF,
        "fileset": {"type": ["object", "null"]},
        "sample_name": _NULLABLE_STR,
        "owner_name": _STR,
        "downstream_data": {"type": "array", "items": _OUTPUT, "description": "with return_data=true"},
        "inputs": {"type": "array", "description": "with return_inputs=true"},
    },
}


def _page(kind: str) -> dict[str, Any]:
    """A page of executions whose times are ``kind`` (integers in the search, ISO-8601 strings per sample)."""
    times = {"created": {"type": kind}, "started": {"type": [kind, "null"]}, "finished": {"type": [kind, "null"]}}
    item = {**_ITEM, "properties": {**_ITEM["properties"], **times}}
    return {
        "type": "object",
        "required": ["count", "page", "executions"],
        "properties": {
            "count": {"type": "integer"},
            "page": {"type": "integer"},
            "executions": {"type": "array", "items": item},
        },
    }


_STEP = {
    "type": "object",
    "required": ["id", "name", "process_name", "status", "downstream_data"],
    "properties": {
        "id": _STR,
        "name": _STR,
        "process_name": _STR,
        "status": _STR,
        "downstream_data": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["id", "filename", "size"],
                "properties": {"id": _STR, "filename": _STR, "filetype": _STR, "size": {"type": "integer"}},
            },
        },
    },
}
_DETAIL = {
    "type": "object",
    "description": "every field below, or only those include= names (or all but those exclude= names)",
    "properties": {
        "id": _STR,
        "identifier": _STR,
        "uuid": _STR,
        "status": _STR,
        "created": {"type": "integer"},
        "started": {"type": ["integer", "null"]},
        "finished": {"type": ["integer", "null"]},
        "nextflow_version": _STR,
        "stdout": _STR,
        "stderr": _STR,
        "log": _STR,
        "command": _STR,
        "params": {"type": "object"},
        "data_params": {"type": "object"},
        "csv_params": {"type": "object"},
        "pipeline": {"type": "object", "properties": {"name": _STR, "pipeline_name": _STR}},
        "sample": {"type": ["object", "null"]},
        "project": {"type": ["object", "null"]},
        "fileset": {"type": ["object", "null"]},
        "owner": {"type": ["object", "null"]},
        "group_owner": {"type": ["object", "null"]},
        "retries": _REF,
        "retried_by": _REF,
        "can_edit": {"type": "boolean"},
        "process_executions": {"type": "array", "items": _STEP},
        "downstream_data": {"type": "array", "items": _OUTPUT},
    },
}


def execution_paths() -> dict[str, Any]:
    """``/executions/search``, ``/executions/{execution_id}``, ``/samples/{sample_id}/executions``."""
    missing = {"404": _err("unknown, or not visible to the caller")}
    fields = {"type": "array", "items": {"enum": list(DETAIL_FIELDS)}}
    return {
        "/executions/search": {
            "get": _get(
                "pipeline runs the caller may see; unknown parameters are ignored",
                _page("integer"),
                params=[
                    *_PAGING,
                    _q("sort", {"enum": list(EXECUTION_SORTS)}),
                    *(
                        _q(name, _TEXT)
                        for name in (
                            "name",
                            "pipeline",
                            "pipeline_version",
                            "pipeline_versions",
                            "status",
                            "owner",
                            "process_execution",
                            "nextflow_version",
                            "terminal",
                        )
                    ),
                    *(_q(name, _STR) for name in ("owned", "organism", "return_data", "return_inputs")),
                    _q("created_gt", _UNIX),
                    _q("created_lt", _UNIX),
                    _q("duration_gt", _SECONDS),
                    _q("duration_lt", _SECONDS),
                ],
                extra={"400": _err("bad parameter")},
            )
        },
        "/executions/{execution_id}": {
            "get": _get(
                "one run: poll its status (trim with include=status&include=finished)",
                _DETAIL,
                params=[
                    _path("execution_id"),
                    {**_q("include", fields), "style": "form", "explode": True},
                    {**_q("exclude", fields), "style": "form", "explode": True},
                    _q("log", {"type": "integer", "minimum": 0, "maximum": 2**62}, "log byte offset"),
                ],
                extra={"400": _err("include and exclude together, or a bad log offset"), **missing},
            )
        },
        "/samples/{sample_id}/executions": {
            "get": _get(
                "a sample's runs, newest first (times as ISO-8601)",
                _page("string"),
                params=[_path("sample_id", "^[0-9]+$"), *_PAGING, _q("filter", _TEXT)],
                extra={"400": _err("bad page or count"), **missing},
            )
        },
    }

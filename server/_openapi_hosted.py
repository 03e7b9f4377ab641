"""The OpenAPI of the routes shaped after hosted Flow's docs: data records, search, types, contents, ``/me``.

Apart from :mod:`._openapi` so that neither outgrows a file; it fills in
the paths and schemas :func:`._openapi.openapi_document` serves.
"""

from __future__ import annotations

from typing import Any

from ._openapi_parts import _BOOL_PATTERN, _MAX_INT, _err, _id_param, _json, _q

#: A token is optional: without one, public data (or a record of nulls) answers.
OPTIONAL_AUTH: list[dict[str, list[str]]] = [{"bearer": []}, {}]

_NAMED = {"type": ["object", "null"], "properties": {"id": {"type": "string"}, "name": {"type": "string"}}}
_STR_OR_NULL = {"type": ["string", "null"]}

RECORD = {
    "type": "object",
    "required": [
        "id",
        "filename",
        "filetype",
        "size",
        "is_binary",
        "is_directory",
        "created",
        "category",
        "data_type",
        "private",
        "absolute_path",
        "owner",
        "group_owner",
        "paired",
        "fileset",
        "execution",
        "sample",
        "project",
        "can_edit",
    ],
    "properties": {
        "id": {"type": "string"},
        "filename": {"type": "string"},
        "filetype": {"type": "string"},
        "size": {"type": "integer"},
        "is_binary": {"type": "boolean"},
        "is_directory": {"type": "boolean"},
        "is_ready": {"type": "boolean"},
        "created": {"type": "integer", "description": "Unix time"},
        "category": {"type": "integer", "description": "1 generic, 2 annotation, 3 multiplexed, 4 demultiplexed"},
        "data_type": {
            "type": ["object", "null"],
            "required": ["identifier", "name", "description"],
            "properties": {
                "identifier": {"type": "string"},
                "name": {"type": "string"},
                "description": {"type": "string"},
            },
        },
        "private": {"type": "boolean"},
        "absolute_path": {"type": "string", "description": "the data's path under the server's root"},
        "owner": {
            "type": ["object", "null"],
            "properties": {"username": {"type": "string"}, "name": {"type": "string"}, "image": _STR_OR_NULL},
        },
        "group_owner": {"type": ["object", "null"]},
        "paired": {
            "type": ["object", "null"],
            "properties": {"id": {"type": "string"}, "filename": {"type": "string"}},
        },
        "fileset": _NAMED,
        "execution": {"type": ["object", "null"]},
        "sample": _NAMED,
        "project": _NAMED,
        "can_edit": {"type": "boolean"},
        "checksum": {"type": ["string", "null"], "description": "[ext]"},
    },
}
SEARCH_ITEM = {
    "type": "object",
    "required": [
        "id",
        "filename",
        "size",
        "absolute_path",
        "created",
        "pipeline_name",
        "process_execution_name",
        "sample_name",
        "owner_name",
        "can_delete",
    ],
    "properties": {
        "id": {"type": "string"},
        "filename": {"type": "string"},
        "size": {"type": "integer"},
        "absolute_path": {"type": "string"},
        "created": {"type": "integer"},
        "pipeline_name": _STR_OR_NULL,
        "process_execution_name": _STR_OR_NULL,
        "sample_name": _STR_OR_NULL,
        "owner_name": {"type": "string"},
        "can_delete": {"type": "boolean"},
        "paired_filename": {**_STR_OR_NULL, "description": "only with is_single=false"},
        "checksum": {"type": ["string", "null"], "description": "[ext]"},
    },
}
SEARCH_PAGE = {
    "type": "object",
    "required": ["count", "page", "data"],
    "properties": {
        "count": {"type": "integer"},
        "page": {"type": "integer"},
        "data": {"type": "array", "items": {"$ref": "#/components/schemas/SearchItem"}},
    },
}
_DATA_TYPE = {
    "type": "object",
    "required": ["identifier", "name", "description", "data_count"],
    "properties": {
        "identifier": {"type": "string"},
        "name": {"type": "string"},
        "description": {"type": "string"},
        "data_count": {"type": "integer"},
    },
}
_ME = {
    "type": "object",
    "required": [
        "id",
        "username",
        "name",
        "image",
        "is_admin",
        "can_run_pipelines",
        "can_impersonate",
        "has_ssh_key",
        "impersonator",
        "features",
        "memberships",
        "notifications",
    ],
    "properties": {
        "id": _STR_OR_NULL,
        "username": _STR_OR_NULL,
        "name": _STR_OR_NULL,
        "image": _STR_OR_NULL,
        "is_admin": {"type": "boolean"},
        "can_run_pipelines": {"type": "boolean"},
        "can_impersonate": {"type": "boolean"},
        "has_ssh_key": {"type": "boolean"},
        "impersonator": {"type": ["object", "null"]},
        "features": {"type": "object"},
        "memberships": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "slug", "is_admin"],
                "properties": {"name": {"type": "string"}, "slug": {"type": "string"}, "is_admin": {"type": "boolean"}},
            },
        },
        "notifications": {"type": "object", "required": ["count", "unread_count", "notifications"]},
    },
}
SCHEMAS = {"Record": RECORD, "SearchItem": SEARCH_ITEM, "SearchPage": SEARCH_PAGE}


def _anonymous_ok(
    summary: str, parameters: list[dict[str, Any]], ok: dict[str, Any], refusals: dict[str, str]
) -> dict[str, Any]:
    return {
        "summary": summary,
        "security": OPTIONAL_AUTH,
        "parameters": parameters,
        "responses": {
            "200": ok,
            **{code: _err(why) for code, why in refusals.items()},
            "401": _err("a token was sent and is bad (forged, expired, malformed, revoked)"),
            "429": _err("rate limited"),
        },
    }


def _search_parameters() -> list[dict[str, Any]]:
    number = {"type": "number", "minimum": -1e15, "maximum": 1e15}
    return [
        _q("filename", {"type": "string", "maxLength": 255}, "case-insensitive substring"),
        _q(
            "pattern",
            {"type": "string", "format": "regex", "maxLength": 256},
            "regular expression (re.search) on the filename",
        ),
        _q("owned", {"type": "string", "pattern": _BOOL_PATTERN}),
        _q("uploaded", {"type": "string", "pattern": _BOOL_PATTERN}, "true: not produced by a pipeline"),
        _q(
            "is_single",
            {"type": "string", "pattern": _BOOL_PATTERN},
            "true: alone in its fileset; false: the first of each pair, with paired_filename",
        ),
        _q("category", {"type": "integer", "minimum": 0, "maximum": 2**31}),
        _q("data_types", {"type": "string", "maxLength": 4096}, "comma-separated identifiers"),
        _q("owner", {"type": "string", "maxLength": 255}, "case-insensitive substring of the owner's name"),
        _q("sort", {"enum": ["created", "-created", "filename", "-filename"]}),
        _q("created_gt", number, "Unix time, inclusive"),
        _q("created_lt", number, "Unix time, inclusive"),
        _q("size_gt", {"type": "integer", "minimum": -1, "maximum": _MAX_INT}, "bytes, inclusive"),
        _q("size_lt", {"type": "integer", "minimum": 0, "maximum": _MAX_INT}, "bytes, inclusive"),
        _q("pipeline", {"type": "string"}, "nothing here is produced by a pipeline"),
        _q("process_execution", {"type": "string"}, "nothing here is produced by a process"),
        _q("page", {"type": "integer", "minimum": 1, "maximum": 10**9}),
        _q("count", {"type": "integer", "minimum": 1, "maximum": 100}, "default 10"),
    ]


def hosted_paths() -> dict[str, dict[str, Any]]:
    """The path items of the hosted-shaped read routes (merged into the document's paths)."""
    bad = {"400": "bad parameter"}
    unreadable = {"404": "unknown, not ready, or not readable (private data, anonymous caller)"}
    contents = {
        "type": "object",
        "required": ["contents", "has_more"],
        "properties": {"contents": {"type": "string"}, "has_more": {"type": "boolean"}},
    }
    return {
        "/data/search": {
            "get": _anonymous_ok(
                "search ready data the caller may read (public data without a token); unknown parameters are ignored",
                _search_parameters(),
                _json("SearchPage"),
                bad,
            )
        },
        "/data/types": {
            "get": _anonymous_ok(
                "the data types, and how many ready data carry each",
                [],
                _json({"type": "array", "items": _DATA_TYPE}),
                {},
            )
        },
        "/data/{data_id}/contents": {
            "get": _anonymous_ok(
                "the position-th 10 KB of a text file, decoded",
                [
                    _id_param("data_id"),
                    _q(
                        "position",
                        {"type": "integer", "minimum": 0, "maximum": _MAX_INT},
                        "chunk index, not a byte offset",
                    ),
                ],
                _json(contents),
                {"400": "binary or directory data, or a bad position", **unreadable},
            )
        },
        "/me": {
            "get": _anonymous_ok("the caller's user record; without a token, a record of nulls", [], _json(_ME), {})
        },
    }


def record_get() -> dict[str, Any]:
    """``GET /data/<id>``: the full record, public data without a token."""
    return _anonymous_ok(
        "one ready data's full record",
        [_id_param("data_id")],
        _json("Record"),
        {"404": "unknown, not ready, or not readable"},
    )

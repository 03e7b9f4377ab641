"""The OpenAPI description of the sample endpoints (merged into ``/openapi.json`` by :mod:`._openapi`)."""

from __future__ import annotations

from typing import Any

from ._openapi_parts import _BOOL_PATTERN, _q
from ._samples import MAX_COUNT, XLSX

_STR = {"type": "string"}
#: Django-style refusals: a message, or field -> messages.
_FIELD_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {"oneOf": [_STR, {"type": "object", "additionalProperties": {"type": "array", "items": _STR}}]}
    },
}
_PROBLEMS = {
    "type": "array",
    "items": {
        "type": "object",
        "required": ["row", "message"],
        "properties": {"row": {"type": ["integer", "null"]}, "message": _STR},
    },
}
_ANNOTATION_REFUSAL = {
    "oneOf": [
        {
            "type": "object",
            "required": ["validation"],
            "properties": {"validation": _PROBLEMS},
            "additionalProperties": False,
        },
        {
            "type": "object",
            "required": ["warnings"],
            "properties": {"warnings": _PROBLEMS},
            "additionalProperties": False,
        },
        {"$ref": "#/components/schemas/Error"},
    ]
}
_NAMED = {"type": ["object", "null"], "required": ["id", "name"], "properties": {"id": _STR, "name": _STR}}
_SAMPLE_ITEM = {
    "type": "object",
    "required": [
        "id",
        "name",
        "created",
        "organism",
        "sample_type",
        "metadata",
        "project_name",
        "owner_name",
        "is_paired",
    ],
    "properties": {
        "id": _STR,
        "name": _STR,
        "created": {"type": "integer"},
        "can_delete": {"type": "boolean"},
        "organism": _NAMED,
        "sample_type": {"type": ["object", "null"], "properties": {"identifier": _STR, "name": _STR}},
        "metadata": {"type": "object"},
        "project_name": {"type": ["string", "null"]},
        "owner_name": _STR,
        "is_paired": {"type": "boolean"},
    },
}
_SAMPLE_PAGE = {
    "type": "object",
    "required": ["count", "page", "samples"],
    "properties": {
        "count": {"type": "integer"},
        "page": {"type": "integer"},
        "samples": {"type": "array", "items": _SAMPLE_ITEM},
    },
}
_FILE = {
    "type": "object",
    "required": ["id", "filename", "size"],
    "properties": {"id": _STR, "filename": _STR, "size": {"type": "integer"}},
}
_SAMPLE = {
    "type": "object",
    "required": [
        "id",
        "created",
        "name",
        "private",
        "sample_type",
        "metadata",
        "organism",
        "filesets",
        "owner",
        "project",
    ],
    "properties": {
        "id": _STR,
        "created": {"type": "integer"},
        "name": _STR,
        "private": {"type": "boolean"},
        "can_edit": {"type": "boolean"},
        "pubmed": _STR,
        "sample_type": _STR,
        "metadata": {"type": "object"},
        "organism": _NAMED,
        "owner": {"type": "object"},
        "group_owner": {"type": ["object", "null"]},
        "project": _NAMED,
        "filesets": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["id", "created", "data"],
                "properties": {"id": _STR, "created": {"type": "integer"}, "data": {"type": "array", "items": _FILE}},
            },
        },
    },
}


def _ok(schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": "OK", "content": {"application/json": {"schema": schema}}}


def _err(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": schema or {"$ref": "#/components/schemas/Error"}}},
    }


def _path(name: str, pattern: str | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string", "minLength": 1}
    if pattern:
        schema["pattern"] = pattern
    return {"name": name, "in": "path", "required": True, "schema": schema}


_PAGING = [
    _q("page", {"type": "integer", "minimum": 1, "maximum": 10**9}),
    _q("count", {"type": "integer", "minimum": 1, "maximum": MAX_COUNT}, "more than 100 is a 400"),
]
_AUTHED = {"401": _err("no, invalid or expired token"), "429": _err("rate limited")}


def _get(
    summary: str,
    schema: dict[str, Any],
    *,
    auth: bool = True,
    params: list[dict[str, Any]] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary,
        "parameters": params or [],
        "responses": {"200": _ok(schema), **(_AUTHED if auth else {}), **(extra or {})},
    }
    if auth:
        operation["security"] = [{"bearer": []}]
    else:
        operation["responses"]["429"] = _err("rate limited (per client address)")
    return operation


def sample_paths(
    upload_form: dict[str, Any], upload_answer: dict[str, Any], upload_responses: dict[str, Any]
) -> dict[str, Any]:
    """The sample endpoints' paths, built on ``POST /upload``'s form, answer and refusals."""

    def upload(
        summary: str,
        fields: dict[str, Any],
        answer: dict[str, Any] | None = None,
        refusal: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        form = {**upload_form, "properties": {**upload_form["properties"], **fields}}
        responses = {
            **upload_responses,
            "200": _ok(answer or upload_answer),
            "400": _err("a refused field or chunk", refusal or _FIELD_ERROR),
        }
        return {
            "post": {
                "summary": summary,
                "security": [{"bearer": []}],
                "responses": responses,
                "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": form}}},
            }
        }

    sample_answer = {
        **upload_answer,
        "required": [*upload_answer["required"], "sample_id"],
        "properties": {**upload_answer["properties"], "sample_id": {"type": ["string", "null"]}},
    }
    sample_form = {
        "sample_name": {"type": "string", "description": "no spaces"},
        "sample_type": {"type": "string", "description": "an identifier of GET /samples/types"},
        "is_last_sample": {"type": "string", "pattern": _BOOL_PATTERN},
        "previous_data": {
            "type": "array",
            "items": {"type": "string"},
            "description": "the sample's earlier files, in order (one part each)",
        },
        "project": {"type": "string"},
        "organism": {"type": "string"},
    }
    return {
        "/upload/sample": upload(
            "one chunk of one file of a sample; the last file's final chunk creates it", sample_form, sample_answer
        ),
        "/upload/multiplexed": upload(
            "one chunk of multiplexed reads (the second file names the first)", {"reads1": {"type": "string"}}
        ),
        "/upload/annotation": upload(
            "one chunk of an annotation sheet (.csv, .xlsx), checked on the last",
            {"ignore_warnings": {"type": "string", "pattern": _BOOL_PATTERN}},
            refusal=_ANNOTATION_REFUSAL,
        ),
        "/samples/types": {
            "get": _get(
                "the sample types",
                {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["identifier", "name", "description"],
                        "properties": {"identifier": _STR, "name": _STR, "description": _STR},
                    },
                },
                auth=False,
            )
        },
        "/samples/metadata": {
            "get": _get(
                "the metadata attributes",
                {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": [
                            "identifier",
                            "name",
                            "description",
                            "required",
                            "sample_type_links",
                            "has_options",
                            "allow_user_terms",
                            "allow_annotation",
                        ],
                        "properties": {
                            "identifier": _STR,
                            "name": _STR,
                            "description": _STR,
                            "required": {"type": "boolean"},
                            "sample_type_links": {"type": "array"},
                            "has_options": {"type": "boolean"},
                            "allow_user_terms": {"type": "boolean"},
                            "allow_annotation": {"type": "boolean"},
                        },
                    },
                },
                auth=False,
            )
        },
        "/samples/metadata/{identifier}/options": {
            "get": _get(
                "an attribute's options (the first 100 by value)",
                {
                    "type": "object",
                    "required": ["count", "total_count", "options"],
                    "properties": {
                        "count": {"type": "integer"},
                        "total_count": {"type": "integer"},
                        "options": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["id", "value", "validated"],
                                "properties": {"id": _STR, "value": _STR, "validated": {"type": "boolean"}},
                            },
                        },
                    },
                },
                auth=False,
                params=[_path("identifier"), _q("value", _STR), _q("validated", _STR)],
                extra={"404": _err("no such attribute")},
            )
        },
        "/organisms": {
            "get": _get(
                "the organisms",
                {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["id", "name", "latin_name"],
                        "properties": {"id": _STR, "name": _STR, "latin_name": _STR},
                    },
                },
                auth=False,
            )
        },
        "/projects/owned": {
            "get": _get(
                "the caller's projects, a page at a time",
                {
                    "type": "object",
                    "required": ["count", "page", "projects"],
                    "properties": {
                        "count": {"type": "integer"},
                        "page": {"type": "integer"},
                        "projects": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["id", "name", "description"],
                                "properties": {"id": _STR, "name": _STR, "description": _STR},
                            },
                        },
                    },
                },
                params=_PAGING,
                extra={"400": _err("bad page or count")},
            )
        },
        "/samples/search": {
            "get": _get(
                "samples the caller may see; unknown parameters are ignored",
                _SAMPLE_PAGE,
                params=[
                    *_PAGING,
                    _q("sort", {"enum": ["-created", "created", "name", "-name"]}),
                    _q("owned", _STR),
                    _q("name", {"type": "string", "maxLength": 255}),
                    _q("project", {"type": "string", "maxLength": 255}),
                    _q("organism", _STR, "an organism id, or true/false"),
                    _q("sample_types", _STR, "comma-separated identifiers"),
                    _q("created_gt", {"type": "integer", "minimum": -(10**15), "maximum": 10**15}),
                    _q("created_lt", {"type": "integer", "minimum": -(10**15), "maximum": 10**15}),
                    _q("owner", {"type": "string", "maxLength": 255}),
                    _q("full_metadata", _STR),
                ],
                extra={"400": _err("bad parameter")},
            )
        },
        "/samples/owned": {
            "get": _get(
                "the caller's samples (offset pages)",
                _SAMPLE_PAGE,
                params=[
                    _q("limit", {"type": "integer", "minimum": 1, "maximum": MAX_COUNT}),
                    _q("offset", {"type": "integer", "minimum": 0, "maximum": 2**62}),
                ],
                extra={"400": _err("bad parameter")},
            )
        },
        "/samples/{sample_id}": {
            "get": _get(
                "one sample with its filesets (files in link order)",
                _SAMPLE,
                params=[_path("sample_id", "^[0-9]+$")],
                extra={"404": _err("unknown, or not visible to the caller")},
            )
        },
        "/samples/{sample_id}/data": {
            "get": _get(
                "every data file of a sample",
                {
                    "type": "object",
                    "required": ["count", "page", "data"],
                    "properties": {
                        "count": {"type": "integer"},
                        "page": {"type": "integer"},
                        "data": {"type": "array", "items": _FILE},
                    },
                },
                params=[_path("sample_id", "^[0-9]+$"), *_PAGING, _q("filter", _STR)],
                extra={"400": _err("bad page or count"), "404": _err("unknown, or not visible to the caller")},
            )
        },
        "/v2/sample-imports": {
            "post": {
                "summary": "importing samples from public repositories: not offered here",
                "security": [{"bearer": []}],
                "responses": {"501": _err("not offered by this server"), **_AUTHED},
            }
        },
        "/v2/sample-imports/{job_id}": {
            "get": {
                "summary": "an import job: not offered here",
                "security": [{"bearer": []}],
                "parameters": [_path("job_id")],
                "responses": {"501": _err("not offered by this server"), **_AUTHED},
            }
        },
        "/annotation": {
            "get": {
                "summary": "the generic annotation template",
                "security": [{"bearer": []}],
                "responses": {
                    "200": {"description": "an .xlsx workbook", "content": {XLSX: {"schema": {}}}},
                    **_AUTHED,
                },
            }
        },
        "/annotation/{sample_type}": {
            "get": {
                "summary": "the annotation template of a sample type (generic: the base columns)",
                "security": [{"bearer": []}],
                "parameters": [_path("sample_type")],
                "responses": {
                    "200": {"description": "an .xlsx workbook", "content": {XLSX: {"schema": {}}}},
                    "404": _err("no such sample type"),
                    **_AUTHED,
                },
            }
        },
    }

"""``GET /openapi.json``: a hand-written OpenAPI 3.1 description of every endpoint.

Kept next to the handlers' contracts rather than generated, so it can say
what the generated kind cannot (which answers are bare, which fields are
[ext]). Schemathesis fuzzes the server against it, so it must stay exact.
"""

from __future__ import annotations

from typing import Any

from flowxfer import __version__

from ._openapi_executions import execution_paths
from ._openapi_hosted import OPTIONAL_AUTH, RECORD, SCHEMAS, hosted_paths, record_get
from ._openapi_parallel import parallel_paths
from ._openapi_parts import _BOOL_PATTERN, _ERROR, _MAX_INT, _err, _id_param, _json, _q
from ._openapi_samples import sample_paths

_CHUNK = {
    "type": "object",
    "required": ["offset", "size", "checksum"],
    "properties": {
        "offset": {"type": "integer"},
        "size": {"type": "integer"},
        "checksum": {"type": "string"},
    },
}
_PAGE = {
    "type": "object",
    "required": ["count", "page", "data"],
    "properties": {
        "count": {"type": "integer"},
        "page": {"type": "integer"},
        "data": {"type": "array", "items": {"$ref": "#/components/schemas/Data"}},
    },
}
_JOB = {
    "type": "object",
    "required": ["id", "status", "progress"],
    "properties": {
        "id": {"type": "string"},
        "status": {"enum": ["pending", "running", "completed", "failed", "expired"]},
        "progress": {"type": "number", "minimum": 0, "maximum": 1},
        "size": {"type": ["integer", "null"]},
        "name": {"type": "string"},
        "download_url": {"type": ["string", "null"]},
        "error": {"type": ["string", "null"]},
        "created": {"type": "number"},
        "expires": {"type": ["number", "null"]},
        "data_ids": {"type": "array", "items": {"type": "string"}},
    },
}


_CHECKSUM_PATTERN = "^(xxh3-128:[0-9a-fA-F]{32})?$"
#: .zip, .tar.gz or .tgz: the name only; the server's --archive-format decides the content.
_ARCHIVE_NAME_PATTERN = "^[^ /\\u0000-\\u001f\\u007f]*[.]([zZ][iI][pP]|[tT][gG][zZ]|[tT][aA][rR][.][gG][zZ])$"
_BARE_404 = {"description": "unknown, unreadable, not ready, or wrong filename (no body)"}
_AUTH: list[dict[str, list[str]]] = [{"bearer": []}]
_RATE_HEADERS = {
    name: {"schema": {"type": "integer"}}
    for name in ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset")
}


def _file_get(summary: str, params: list[dict[str, Any]]) -> dict[str, Any]:
    responses = {
        "200": {"description": "the bytes", "content": {"application/octet-stream": {"schema": {}}}},
        "206": {"description": "one byte range", "content": {"application/octet-stream": {"schema": {}}}},
        "304": {"description": "If-None-Match matched"},
        "401": _err("no, invalid or expired token"),
        "404": dict(_BARE_404),
        "416": _err("malformed, multiple or unsatisfiable Range"),
        "429": _err("rate limited"),
    }
    header_params = [
        {"name": "Range", "in": "header", "required": False, "schema": {"type": "string"}},
        {"name": "If-Range", "in": "header", "required": False, "schema": {"type": "string"}},
        {"name": "If-None-Match", "in": "header", "required": False, "schema": {"type": "string"}},
    ]
    return {
        "summary": summary,
        "security": _AUTH,
        "responses": responses,
        "parameters": params
        + header_params
        + [
            _q("token", {"type": "string"}, "access token, instead of the header"),
            _q("direct", {"type": "string"}, "a true value (yes, 1, true...): no Content-Disposition"),
        ],
    }


def openapi_document(max_chunk_size: int) -> dict[str, Any]:
    """The OpenAPI document served by the extension-enabled server."""
    upload_form = {
        "type": "object",
        "required": ["filename", "expected_file_size", "blob"],
        "properties": {
            "filename": {
                "type": "string",
                "minLength": 1,
                "maxLength": 255,
                "pattern": "^[^ /\\u0000-\\u001f\\u007f]+$",
                "description": "at most 255 UTF-8 bytes; no spaces, '/' or control characters; not . or ..",
            },
            "expected_file_size": {
                "type": "string",
                "pattern": "^[0-9]{1,19}$",
                "description": "byte offset at which this chunk starts",
            },
            "is_last": {"type": "string", "pattern": _BOOL_PATTERN, "description": "absent means false"},
            "data": {
                "type": "string",
                "pattern": "^([0-9]+)?$",
                "description": "the upload's id; empty or absent on the first chunk",
            },
            "data_type": {"type": "string", "maxLength": 255},
            "is_directory": {"type": "string", "pattern": _BOOL_PATTERN},
            "checksum": {"type": "string", "pattern": _CHECKSUM_PATTERN, "description": "[ext] of this chunk"},
            "file_checksum": {
                "type": "string",
                "pattern": _CHECKSUM_PATTERN,
                "description": "[ext] of the whole file, on the last chunk",
            },
            "blob": {"type": "string", "format": "binary", "maxLength": max_chunk_size},
        },
        "description": "other fields are ignored, as hosted Flow does",
    }
    upload_answer = {
        "type": "object",
        "required": ["id", "data_id", "filename", "size", "is_ready"],
        "properties": {
            "id": {"type": "string"},
            "data_id": {"type": "string"},
            "filename": {"type": "string"},
            "size": {"type": "integer"},
            "is_ready": {"type": "boolean"},
            "checksum": {"type": "string"},
        },
    }
    paths: dict[str, Any] = {
        "/login": {
            "post": {
                "summary": "log in: an access token, and the refresh token as the flow_refresh_token cookie",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["username", "password"],
                                "properties": {
                                    "username": {"type": "string", "minLength": 1, "maxLength": 64},
                                    "password": {"type": "string", "minLength": 1, "maxLength": 256},
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["token"],
                            "properties": {
                                "token": {"type": "string"},
                                "refresh_token": {"type": "string", "description": "[ext]"},
                            },
                        }
                    ),
                    "400": _err("bad credentials or body"),
                    "413": _err("body too large"),
                    "429": _err("rate limited (per client address)"),
                },
            }
        },
        "/token": {
            "get": {
                "summary": "a new access token from the flow_refresh_token cookie",
                "parameters": [
                    {
                        "name": "flow_refresh_token",
                        "in": "cookie",
                        "required": False,
                        "schema": {"type": "string"},
                    }
                ],
                "responses": {
                    "200": _json(
                        {"type": "object", "required": ["token"], "properties": {"token": {"type": "string"}}}
                    ),
                    "401": _err("missing, invalid or expired refresh token"),
                    "429": _err("rate limited"),
                },
            }
        },
        "/capabilities": {
            "get": {
                "summary": "[ext] what this server offers beyond hosted Flow (no auth)",
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["server", "version", "checksums"],
                            "properties": {
                                "server": {"type": "string"},
                                "version": {"type": "string"},
                                "checksums": {"type": "array", "items": {"type": "string"}},
                                "upload_status": {"type": "boolean"},
                                "chunk_maps": {"type": "boolean"},
                                "directory_listing": {"type": "boolean"},
                                "parallel_chunks": {"type": "boolean"},
                                "download_by_id": {"type": "boolean"},
                                "max_chunk_size": {"type": "integer"},
                            },
                        }
                    )
                },
            }
        },
        "/openapi.json": {"get": {"summary": "[ext] this document", "responses": {"200": _json({"type": "object"})}}},
        "/upload": {
            "post": {
                "summary": "one chunk of a chunked upload, strictly in order",
                "security": _AUTH,
                "requestBody": {
                    "required": True,
                    "content": {"multipart/form-data": {"schema": upload_form}},
                },
                "responses": {
                    "200": _json(upload_answer),
                    "400": _err("bad field, or offset mismatch (then expected_file_size says what is held)"),
                    "401": _err("no, invalid or expired token"),
                    "404": _err("unknown upload id, or not the caller's"),
                    "409": _err("the server lost bytes of this upload"),
                    "413": _err("chunk larger than max_chunk_size"),
                    "422": _err("[ext] checksum or file_checksum mismatch; nothing stored"),
                    "429": _err("rate limited"),
                },
            }
        },
        "/upload/{data_id}": {
            "get": {
                "summary": "[ext] what the server holds of one of the caller's uploads",
                "security": _AUTH,
                "parameters": [_id_param("data_id")],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["id", "filename", "size", "is_ready", "chunks"],
                            "properties": {
                                "id": {"type": "string"},
                                "filename": {"type": "string"},
                                "size": {"type": "integer"},
                                "is_ready": {"type": "boolean"},
                                "state": {"type": "string"},
                                "chunks": {"type": "array", "items": _CHUNK},
                            },
                        }
                    ),
                    "401": _err("no token"),
                    "404": _err("unknown, or not the caller's"),
                    "429": _err("rate limited"),
                },
            }
        },
        "/data/owned": {
            "get": {
                "summary": "the caller's own ready data, newest first",
                "security": _AUTH,
                "parameters": [
                    _q("limit", {"type": "integer", "minimum": 1, "maximum": 100}),
                    _q("offset", {"type": "integer", "minimum": 0, "maximum": _MAX_INT}),
                ],
                "responses": {
                    "200": _json("Page"),
                    "400": _err("bad parameter"),
                    "401": _err("no token"),
                    "429": _err("rate limited"),
                },
            }
        },
        "/data/{data_id}": {
            "get": record_get(),
            "patch": {
                "summary": "make data private or public (needs edit)",
                "security": _AUTH,
                "parameters": [_id_param("data_id")],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["private"],
                                "properties": {"private": {"type": "boolean"}},
                                "additionalProperties": False,
                            }
                        }
                    },
                },
                "responses": {
                    "200": _json("Data"),
                    "400": _err("bad body"),
                    "401": _err("no token"),
                    "403": _err("readable but not editable"),
                    "404": _err("not readable"),
                    "413": _err("body too large"),
                    "429": _err("rate limited"),
                },
            },
        },
        "/data/{data_id}/permissions": {
            "put": {
                "summary": "grant a user or group a level: 0 none, 1 read, 2 edit, 3 share (needs share)",
                "security": _AUTH,
                "parameters": [_id_param("data_id")],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["level"],
                                "properties": {
                                    "user": {"type": "string", "minLength": 1},
                                    "group": {"type": "string", "minLength": 1},
                                    "level": {"type": "integer", "minimum": 0, "maximum": 3},
                                },
                                "oneOf": [{"required": ["user"]}, {"required": ["group"]}],
                                "additionalProperties": False,
                            }
                        }
                    },
                },
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "id": {"type": "string"},
                                "private": {"type": "boolean"},
                                "permissions": {"type": "array", "items": {"type": "object"}},
                            },
                        }
                    ),
                    "400": _err("bad body, unknown user or group"),
                    "401": _err("no token"),
                    "403": _err("readable but not shareable"),
                    "404": _err("not readable"),
                    "413": _err("body too large"),
                    "429": _err("rate limited"),
                },
            }
        },
        "/data/{data_id}/chunks": {
            "get": {
                "summary": "[ext] the chunk map recorded at upload",
                "security": _AUTH,
                "parameters": [_id_param("data_id")],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["checksum", "chunks"],
                            "properties": {
                                "id": {"type": "string"},
                                "size": {"type": "integer"},
                                "checksum": {"type": "string"},
                                "chunks": {"type": "array", "items": _CHUNK},
                            },
                        }
                    ),
                    "401": _err("no token"),
                    "404": _err("not readable"),
                    "429": _err("rate limited"),
                },
            }
        },
        "/data/{data_id}/files": {
            "get": {
                "summary": "[ext] the files unpacked from an is_directory upload",
                "security": _AUTH,
                "parameters": [
                    _id_param("data_id"),
                    _q("limit", {"type": "integer", "minimum": 1, "maximum": 10000}),
                    _q("offset", {"type": "integer", "minimum": 0, "maximum": _MAX_INT}),
                ],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["count", "files"],
                            "properties": {
                                "id": {"type": "string"},
                                "count": {"type": "integer"},
                                "limit": {"type": "integer"},
                                "offset": {"type": "integer"},
                                "files": {
                                    "type": "array",
                                    "items": {
                                        "type": "object",
                                        "properties": {
                                            "path": {"type": "string"},
                                            "size": {"type": "integer"},
                                            "checksum": {"type": "string"},
                                        },
                                    },
                                },
                            },
                        }
                    ),
                    "400": _err("bad parameter"),
                    "401": _err("no token"),
                    "404": _err("not readable, or not a directory upload"),
                    "429": _err("rate limited"),
                },
            }
        },
        "/downloads": {
            "post": {
                "summary": "start building a zip archive of several data (202: built in the background)",
                "security": _AUTH,
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["data_ids"],
                                "properties": {
                                    "data_ids": {
                                        "type": "array",
                                        "minItems": 1,
                                        "maxItems": 10000,
                                        "items": {"type": "string", "minLength": 1},
                                    },
                                    "name": {"type": "string", "maxLength": 255, "pattern": _ARCHIVE_NAME_PATTERN},
                                },
                                "additionalProperties": False,
                            }
                        }
                    },
                },
                "responses": {
                    "202": _json("Job"),
                    "400": _err("empty list or bad name"),
                    "401": _err("no token"),
                    "404": _err("some id is not readable"),
                    "413": _err("body too large"),
                    "429": _err("rate limited"),
                },
            }
        },
        "/downloads/jobs/{job_id}": {
            "get": {
                "summary": "an archive job's state (creator only)",
                "security": _AUTH,
                "parameters": [_id_param("job_id", None)],
                "responses": {
                    "200": _json("Job"),
                    "401": _err("no token"),
                    "404": _err("unknown or not yours"),
                    "429": _err("rate limited"),
                },
            }
        },
        "/downloads/jobs/{job_id}/{name}": {
            "get": _file_get(
                "a completed job's archive (410 once expired)", [_id_param("job_id", None), _id_param("name", None)]
            ),
        },
        "/downloads/{data_id}/{filename}": {
            "get": _file_get("one ready data's bytes", [_id_param("data_id", None), _id_param("filename", None)]),
        },
    }
    paths["/downloads/jobs/{job_id}/{name}"]["get"]["responses"]["410"] = _err("the archive expired")
    paths["/downloads/{data_id}"] = {
        "get": _file_get(
            "[ext] one ready data's bytes by id alone, named in Content-Disposition on every answer",
            [_id_param("data_id", None)],
        )
    }
    layout = {
        "X-Chunk-Size": {
            "schema": {"type": "integer", "minimum": 1},
            "description": "[ext] every chunk of the chunk map but the last is this size (absent otherwise)",
        },
        "X-Chunk-Count": {
            "schema": {"type": "integer", "minimum": 1},
            "description": "[ext] the chunk map's number of chunks, with X-Chunk-Size",
        },
    }
    paths["/downloads/{data_id}"]["get"]["responses"]["206"]["headers"] = layout
    bad_token = _err("a token (header, ?token= or the flow_refresh_token cookie) was sent and is bad")
    for route in ("/downloads/{data_id}/{filename}", "/downloads/{data_id}"):
        single = paths[route]["get"]
        single["security"] = OPTIONAL_AUTH
        single["responses"]["401"] = bad_token
    paths.update(hosted_paths())
    paths.update(sample_paths(upload_form, upload_answer, paths["/upload"]["post"]["responses"]))
    paths.update(execution_paths())
    paths.update(parallel_paths(upload_form, max_chunk_size))
    status = paths["/upload/{data_id}"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    status["properties"].update(
        sample_id={"type": ["string", "null"], "description": "[ext] its sample, if any"},
        previous_data={"type": "array", "items": {"type": "string"}, "description": "[ext] the files linked before it"},
        parallel={
            "type": "object",
            "required": ["total", "chunk_size"],
            "properties": {"total": {"type": "integer"}, "chunk_size": {"type": "integer"}},
            "description": "[ext] a parallel-chunk upload's size and chunk size",
        },
    )
    for path, methods in paths.items():
        for method, operation in list(methods.items()):
            if path.startswith("/downloads/") and method == "get" and "Range" in str(operation["parameters"]):
                methods.setdefault("head", {**operation, "summary": "headers only: " + operation["summary"]})
            for response in operation["responses"].values():
                if operation.get("security"):
                    response.setdefault("headers", _RATE_HEADERS)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "flowxfer local Flow server",
            "version": __version__,
            "description": "Hosted Flow's API plus [ext] extensions; see docs/protocol.md.",
        },
        "paths": paths,
        "components": {
            "schemas": {"Error": _ERROR, "Data": RECORD, "Page": _PAGE, "Job": _JOB, **SCHEMAS},
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "an access JWT, or an API key (fxk_...)"}
            },
        },
    }

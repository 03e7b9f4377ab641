"""The OpenAPI part of the parallel-chunk upload endpoints [ext] (:mod:`._upload_parallel`)."""

from __future__ import annotations

from typing import Any

from ._openapi_parts import _MAX_INT, _err, _id_param, _json

_AUTH: list[dict[str, list[str]]] = [{"bearer": []}]
_CHECKSUM = "^xxh3-128:[0-9a-fA-F]{32}$"


def parallel_paths(upload_form: dict[str, Any], max_chunk_size: int) -> dict[str, Any]:
    """``POST /upload/parallel``, a chunk at its slot, and ``finish``; built on ``POST /upload``'s form."""
    opened = {
        "type": "object",
        "required": ["id", "data_id", "filename", "size", "total", "chunk_size", "is_directory", "is_ready"],
        "properties": {
            "id": {"type": "string"},
            "data_id": {"type": "string"},
            "filename": {"type": "string"},
            "size": {"type": "integer"},
            "total": {"type": "integer"},
            "chunk_size": {"type": "integer"},
            "is_directory": {"type": "boolean"},
            "is_ready": {"type": "boolean"},
        },
    }
    stored = {
        "type": "object",
        "required": ["id", "data_id", "offset", "size", "checksum"],
        "properties": {
            "id": {"type": "string"},
            "data_id": {"type": "string"},
            "offset": {"type": "integer"},
            "size": {"type": "integer"},
            "checksum": {"type": "string"},
        },
    }
    finished = {
        "type": "object",
        "required": ["id", "data_id", "filename", "size", "is_ready", "checksum"],
        "properties": {
            "id": {"type": "string"},
            "data_id": {"type": "string"},
            "filename": {"type": "string"},
            "size": {"type": "integer"},
            "is_ready": {"const": True},
            "checksum": {"type": "string"},
        },
    }
    form = {
        **upload_form,
        "required": ["filename", "expected_file_size", "blob"],
        "description": "fields before the blob; the chunk's slot is expected_file_size (a multiple of chunk_size)",
    }
    return {
        "/upload/parallel": {
            "post": {
                "summary": "[ext] open an upload whose chunks may come in any order, on any connection",
                "security": _AUTH,
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["filename", "size", "chunk_size"],
                                "properties": {
                                    "filename": upload_form["properties"]["filename"],
                                    "size": {"type": "integer", "minimum": 0, "maximum": _MAX_INT},
                                    "chunk_size": {"type": "integer", "minimum": 1, "maximum": max_chunk_size},
                                    "data_type": {"type": "string", "maxLength": 255},
                                    "is_directory": {
                                        "type": "boolean",
                                        "description": "the file is an archive, unpacked at finish as POST /upload's",
                                    },
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "200": _json(opened),
                    "400": _err("bad field"),
                    "401": _err("no, invalid or expired token"),
                    "413": _err("body too large"),
                    "429": _err("rate limited"),
                },
            }
        },
        "/upload/parallel/{data_id}": {
            "post": {
                "summary": "[ext] one chunk of a parallel-chunk upload, at its slot; a repeat is compared, not stored",
                "security": _AUTH,
                "parameters": [_id_param("data_id")],
                "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": form}}},
                "responses": {
                    "200": _json(stored),
                    "400": _err("bad field, not a slot of this upload, wrong size, or not a parallel upload"),
                    "401": _err("no, invalid or expired token"),
                    "404": _err("unknown upload id, or not the caller's"),
                    "408": _err("the body stalled"),
                    "409": _err("the slot holds other bytes (its checksum is named), or the server lost bytes"),
                    "413": _err("chunk larger than its slot or max_chunk_size"),
                    "422": _err("checksum mismatch; nothing stored"),
                    "429": _err("rate limited"),
                },
            }
        },
        "/upload/parallel/{data_id}/finish": {
            "post": {
                "summary": "[ext] assemble: every chunk held, the whole file's checksum matched, then ready",
                "security": _AUTH,
                "parameters": [_id_param("data_id")],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {"file_checksum": {"type": "string", "pattern": _CHECKSUM}},
                            }
                        }
                    },
                },
                "responses": {
                    "200": _json(finished),
                    "400": _err(
                        "chunks missing (listed), bad field, not a parallel upload, or a directory's archive "
                        "that cannot be unpacked safely"
                    ),
                    "401": _err("no, invalid or expired token"),
                    "404": _err("unknown upload id, or not the caller's"),
                    "409": _err("the server lost bytes of this upload"),
                    "413": _err("body too large"),
                    "422": _err("file checksum mismatch"),
                    "429": _err("rate limited"),
                },
            }
        },
    }

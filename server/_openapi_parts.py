"""The building blocks of the OpenAPI document, shared by the modules that write its parts.

:mod:`._openapi` (the document and the chunk protocol's paths),
:mod:`._openapi_hosted` (hosted Flow's data routes) and :mod:`._openapi_samples`
(samples) all describe parameters and answers the same way; the helpers live
here, below all three, so that no part of the document imports another to
borrow them (``_openapi`` assembles the parts).
"""

from __future__ import annotations

from typing import Any

_ERROR = {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}
_MAX_INT = 2**62
#: Form booleans, any case: true/false, 1/0, yes/no, on/off (empty means false).
_BOOL_PATTERN = "^([Tt][Rr][Uu][Ee]|[Ff][Aa][Ll][Ss][Ee]|1|0|[Yy][Ee][Ss]|[Nn][Oo]|[Oo][Nn]|[Oo][Ff][Ff])?$"


def _json(schema: dict[str, Any] | str, description: str = "") -> dict[str, Any]:
    if isinstance(schema, str):
        schema = {"$ref": f"#/components/schemas/{schema}"}
    return {"description": description or "OK", "content": {"application/json": {"schema": schema}}}


def _err(description: str) -> dict[str, Any]:
    return _json("Error", description)


def _id_param(name: str, pattern: str | None = "^[0-9]+$") -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string", "minLength": 1}
    if pattern:
        schema["pattern"] = pattern
    return {"name": name, "in": "path", "required": True, "schema": schema}


def _q(name: str, schema: dict[str, Any], description: str = "") -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}

"""How one ready data item is shown: shared by the data routes and ``PATCH /data/<id>`` (permissions)."""

from __future__ import annotations

from typing import Any

from ._store import DataRow


def data_json(row: DataRow, extensions: bool) -> dict[str, Any]:
    """How one ready data is shown (hosted Flow's fields, plus ``checksum`` [ext])."""
    body: dict[str, Any] = {
        "id": row.id,
        "filename": row.filename,
        "size": row.size,
        "created": row.created,
        "private": row.private,
        "owner": {"username": row.owner},
        "data_type": row.data_type,
        "is_directory": row.is_directory,
        "is_ready": True,
    }
    if extensions:
        body["checksum"] = row.checksum
    return body

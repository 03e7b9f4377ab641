"""What a transfer did: the report every kind of transfer returns, one entry per file.

Apart from the facade and the runner so that the parts they drive (bulk,
sync) build reports without importing their callers.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

__all__ = ["FileReport", "TransferReport"]


@dataclass
class FileReport:
    """One file's outcome, as ``cli.md``'s JSON shows it."""

    path: str
    id: str | None
    filename: str
    size: int
    status: str
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class TransferReport:
    """What a transfer did. ``status`` is ``completed``, ``partial``, ``failed`` or ``interrupted``.

    :ivar stop_reason: why an interrupted run stopped: ``"budget"`` (rate
        limits and ``max_wait``), ``"stopped"`` (asked to, e.g. a signal), or None.
    :ivar error_kinds: failed files counted by cause: the :attr:`~FlowxferError.kind` of the error
        each failed with (``rejected``, ``not_found``, ``unavailable``, ``integrity``, ``local``, ...).
    """

    transfer_id: str
    kind: str
    status: str
    files: list[FileReport]
    bytes_transferred: int
    bytes_skipped: int
    seconds: float
    retries: int
    resumed: bool = False
    stop_reason: str | None = None
    requests: dict[str, int] = field(default_factory=dict)
    error_kinds: dict[str, int] = field(default_factory=dict)
    verified: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "transfer_id": self.transfer_id,
            "kind": self.kind,
            "status": self.status,
            "files": [f.to_json() for f in self.files],
            "bytes_transferred": self.bytes_transferred,
            "bytes_skipped": self.bytes_skipped,
            "seconds": round(self.seconds, 3),
            "retries": self.retries,
            "resumed": self.resumed,
            "stop_reason": self.stop_reason,
            "requests": self.requests,
            "verified": self.verified,
        }
        document.update(self.extra)
        return document

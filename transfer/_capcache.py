"""What each server answered to ``GET /capabilities``, remembered between commands.

Why: every command asked ``/capabilities`` before its first byte, one more
round trip before anything moves (issue 20: 50-150 ms each on the paths labs
use). A server's capabilities change only when it is upgraded or restarted
with other options, so the answer is kept in ``<config_dir>/capabilities.json``
per server URL for :data:`TTL` seconds. A remembered answer that turns out
wrong (an extension the server no longer has answers 404) is forgotten and
the server asked again (:meth:`FlowClient.revalidate_capabilities`).

The raw answer is kept, not our reading of it, so a field a newer flowxfer
reads is there for it; a file that cannot be read or written only costs the
round trip again, never the command.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

CACHE_FILE = "capabilities.json"

#: How long a remembered answer is used without asking again: an upgrade is seen within the hour.
TTL = 3600.0


class CapabilityCache:
    """``/capabilities`` answers by server URL, each with the time it was asked."""

    def __init__(self, config_dir: Path, *, ttl: float = TTL, clock: Callable[[], float] = time.time) -> None:
        self.path = config_dir / CACHE_FILE
        self.ttl = ttl
        self._clock = clock

    def load(self, base_url: str) -> dict[str, Any] | None:
        """The answer remembered for ``base_url``, or None when there is none fresh enough."""
        entry = self._servers().get(base_url)
        if not isinstance(entry, dict) or not isinstance(entry.get("answer"), dict):
            return None
        asked = entry.get("asked")
        if not isinstance(asked, (int, float)) or not 0 <= self._clock() - asked < self.ttl:
            return None
        answer: dict[str, Any] = entry["answer"]
        return answer

    def save(self, base_url: str, answer: dict[str, Any]) -> None:
        servers = self._servers()
        servers[base_url] = {"answer": answer, "asked": self._clock()}
        self._write(servers)

    def forget(self, base_url: str) -> None:
        servers = self._servers()
        if servers.pop(base_url, None) is not None:
            self._write(servers)

    def _servers(self) -> dict[str, Any]:
        try:
            document = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        servers = document.get("servers") if isinstance(document, dict) else None
        return servers if isinstance(servers, dict) else {}

    def _write(self, servers: dict[str, Any]) -> None:
        """Replace the file atomically (two commands writing at once leave one's version, never a torn one).

        Only into an existing config dir: creating one is ``login``'s, with its mode.
        """
        temporary = self.path.with_name(f".{CACHE_FILE}.{os.getpid()}")
        try:
            temporary.write_text(json.dumps({"servers": servers}), encoding="utf-8")
            os.replace(temporary, self.path)
        except OSError:
            with contextlib.suppress(OSError):
                temporary.unlink()


__all__ = ["CACHE_FILE", "TTL", "CapabilityCache"]

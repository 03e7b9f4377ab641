"""What each server answered to ``GET /capabilities``, remembered between commands.

Why: every command asked ``/capabilities`` before its first byte, one more
round trip before anything moves (issue 20: 50-150 ms each on the paths labs
use). A server's capabilities change only when it is upgraded or restarted
with other options, so the answer is kept in ``<config_dir>/capabilities.json``
per server URL for :data:`TTL` seconds. A remembered answer that turns out
wrong (an extension the server no longer has answers 404) is forgotten and
the server asked again (:meth:`FlowClient.revalidate_capabilities`).

Beside a server's answer, the rate the last long enough transfer with it
carried in each direction (``upload``, ``download``), with its own age
(:data:`RATE_TTL`): :mod:`._pathfit` fits the next transfer's counts to it.
Nothing secret is kept here; the file is written with mode 0600 like the rest
of the config folder all the same.

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
#: How long a measured rate is used: a lab's link changes seldom, and a stale measure can
#: only raise the counts (see :mod:`._pathmodel`), never starve a transfer.
RATE_TTL = 86400.0


class CapabilityCache:
    """``/capabilities`` answers by server URL, each with the time it was asked."""

    def __init__(
        self,
        config_dir: Path,
        *,
        ttl: float = TTL,
        rate_ttl: float = RATE_TTL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = config_dir / CACHE_FILE
        self.ttl = ttl
        self.rate_ttl = rate_ttl
        self._clock = clock

    def load(self, base_url: str) -> dict[str, Any] | None:
        """The answer remembered for ``base_url``, or None when there is none fresh enough."""
        entry = self._servers().get(base_url)
        if not isinstance(entry, dict) or not isinstance(entry.get("answer"), dict):
            return None
        if not self._fresh(entry.get("asked"), self.ttl):
            return None
        answer: dict[str, Any] = entry["answer"]
        return answer

    def save(self, base_url: str, answer: dict[str, Any]) -> None:
        servers = self._servers()
        entry = servers.get(base_url)
        rates = entry.get("rates") if isinstance(entry, dict) else None
        servers[base_url] = {"answer": answer, "asked": self._clock(), **({"rates": rates} if rates else {})}
        self._write(servers)

    def forget(self, base_url: str) -> None:
        """Forget the answer (it proved wrong); the measured rates stay: the path did not change."""
        servers = self._servers()
        entry = servers.get(base_url)
        if not isinstance(entry, dict) or "answer" not in entry:
            return
        rates = entry.get("rates")
        if rates:
            servers[base_url] = {"rates": rates}
        else:
            del servers[base_url]
        self._write(servers)

    def rate(self, base_url: str, direction: str) -> float | None:
        """The rate (bytes/s) measured with ``base_url`` in ``direction``, or None when none is recent."""
        entry = self._servers().get(base_url)
        rates = entry.get("rates") if isinstance(entry, dict) else None
        measure = rates.get(direction) if isinstance(rates, dict) else None
        if not isinstance(measure, dict) or not self._fresh(measure.get("measured"), self.rate_ttl):
            return None
        rate = measure.get("rate")
        return float(rate) if isinstance(rate, (int, float)) and rate > 0 else None

    def save_rate(self, base_url: str, direction: str, rate: float) -> None:
        servers = self._servers()
        entry = servers.get(base_url)
        entry = entry if isinstance(entry, dict) else {}
        rates = entry.get("rates")
        rates = rates if isinstance(rates, dict) else {}
        rates[direction] = {"rate": rate, "measured": self._clock()}
        servers[base_url] = {**entry, "rates": rates}
        self._write(servers)

    def _fresh(self, when: Any, ttl: float) -> bool:
        """Younger than ``ttl`` (a time in the future, a clock set back: not fresh)."""
        return isinstance(when, (int, float)) and 0 <= self._clock() - when < ttl

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
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with open(descriptor, "w", encoding="utf-8") as stream:
                stream.write(json.dumps({"servers": servers}))
            os.replace(temporary, self.path)
        except OSError:
            with contextlib.suppress(OSError):
                temporary.unlink()


__all__ = ["CACHE_FILE", "RATE_TTL", "TTL", "CapabilityCache"]

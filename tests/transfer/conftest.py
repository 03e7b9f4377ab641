"""Engine test helpers: logged-in Flowxfer clients against the real local server."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from flowxfer.transfer import Flowxfer, TransferConfig
from flowxfer.transfer.events import BytesMoved
from tests.support.faultproxy import FaultProxy
from tests.support.server import RunningServer, running_server

KiB = 1024


def write_random(path: Path, size: int, seed: int = 0) -> Path:
    """A file of ``size`` pseudo-random bytes (deterministic per seed, incompressible)."""
    import random

    rng = random.Random(seed * 7919 + size)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        remaining = size
        while remaining:
            block = min(remaining, 1 << 20)
            handle.write(rng.randbytes(block))
            remaining -= block
    return path


@asynccontextmanager
async def client(
    srv: RunningServer,
    home: Path,
    *,
    user: str = "alice",
    events: list[Any] | None = None,
    progress: Callable[[Any], None] | None = None,
    **config: Any,
) -> AsyncIterator[Flowxfer]:
    """A Flowxfer logged in as ``user``, with its own config dir and journal under ``home``."""
    settings = {
        "chunk_size": 64 * KiB,
        "download_chunk_size": 64 * KiB,
        "block_size": 16 * KiB,
        "upload_block_size": 16 * KiB,
        "min_segment_size": 64 * KiB,
        # Counts fixed at the short path's: on a loaded machine a loopback answer can take
        # 30 ms, and the path model would change how many requests a test sees. Tests of the
        # model pass None.
        "segments": 4,
        "upload_streams": 1,
        "concurrency": 16,
        "backoff_base": 0.05,
        "backoff_cap": 0.5,
        "journal_flush_interval": 0.05,
        **config,
    }

    def record(event: Any) -> None:
        if events is not None:
            events.append(event)
        if progress is not None:
            progress(event)

    fx = Flowxfer(
        srv.base_url,
        config_dir=home / "config",
        journal=home / "journal.db",
        config=TransferConfig(**settings),
        progress=record,
    )
    async with fx:
        await fx.login(user, srv.users[user])
        yield fx


@pytest.fixture(params=[True, False], ids=["extensions", "hosted-flow"])
async def any_server(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[RunningServer]:
    """The local server with and without our extensions (hosted Flow's behaviour)."""
    async with running_server(tmp_path / "flow-root", extensions=request.param) as srv:
        yield srv


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def file_sizes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): os.path.getsize(p) for p in sorted(root.rglob("*")) if p.is_file()}


class StopAfter:
    """A progress callback that stops the transfer once ``threshold`` bytes have moved, noting
    how many requests had reached the proxy at that moment."""

    def __init__(self, threshold: int, proxy: FaultProxy | None = None) -> None:
        self.threshold, self.proxy = threshold, proxy
        self.fx: Flowxfer | None = None
        self.moved = 0
        self.requests_at_stop: int | None = None

    def __call__(self, event: Any) -> None:
        if isinstance(event, BytesMoved):
            self.moved += event.nbytes
            if self.moved >= self.threshold and self.fx is not None and not self.fx.stopping:
                if self.proxy is not None:
                    self.requests_at_stop = self.proxy.stats.requests
                self.fx.stop()

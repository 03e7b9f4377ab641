"""What every WAN scenario shares: the path as a subprocess, a server behind it, a row of the table.

Split out of ``bench_wan`` so that its scenarios (large files, small files,
the goals) can live in files of their own; ``bench_wan`` re-exports these
names for the benchmarks that import them from there (samples, fleet).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ._common import WORK, MiB, Series, Server, flowxfer_home, start_listening, stop
from .wanpath import spec_from_args


class WanProcess:
    """``python -m benchmarks.wanpath`` in front of ``upstream``, as a subprocess (its own core, not ours)."""

    def __init__(
        self,
        upstream: str,
        rtt_ms: float,
        link_mbit: float,
        connection_mbit: float,
        window_mib: float,
        trace_file: Path | None = None,
    ) -> None:
        """:param trace_file: where the path keeps its downward link's trace (``--trace-file``; None: none)."""
        self.stats_file = WORK / f"wanpath-{id(self)}.json"
        self.trace_file = trace_file
        self.arguments = [
            "--upstream",
            upstream,
            "--rtt-ms",
            str(rtt_ms),
            "--link-mbit",
            str(link_mbit),
            "--connection-mbit",
            str(connection_mbit),
            "--window-mib",
            str(window_mib),
            "--stats-file",
            str(self.stats_file),
            *(["--trace-file", str(trace_file)] if trace_file is not None else []),
        ]
        self.spec = spec_from_args(rtt_ms, link_mbit, connection_mbit, int(window_mib * MiB))
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""

    def __enter__(self) -> WanProcess:
        WORK.mkdir(parents=True, exist_ok=True)
        self.proc, self.url = start_listening(
            [sys.executable, "-m", "benchmarks.wanpath", *self.arguments], subprocess.DEVNULL
        )
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            stop(self.proc)
        self.stats_file.unlink(missing_ok=True)
        if self.trace_file is not None:
            self.trace_file.unlink(missing_ok=True)

    def connections(self) -> int:
        """Connections the path has accepted so far (each one a handshake's round trip)."""
        return int(json.loads(self.stats_file.read_text(encoding="utf-8"))["connections"])


@dataclass
class Row:
    path: str
    task: str
    tool: str
    series: Series
    nbytes: int
    link_rate: float | None
    against: str = ""

    @property
    def link_share(self) -> float | None:
        return self.nbytes / self.series.median / self.link_rate if self.link_rate else None

    def render(self) -> str:
        share = f"{self.link_share:.0%}" if self.link_share is not None else ""
        return (
            f"| {self.path} | {self.task} | {self.tool} | {self.series.median:.2f} s | "
            f"{self.series.rate(self.nbytes):.0f} MiB/s | {share} | {self.series.peak_rss:.0f} MiB | "
            f"{self.against} |"
        )


def speedup(anchor: Series, ours: Series) -> str:
    return f"**{anchor.median / ours.median:.2f}×** faster than {anchor.name}"


def time_ratio(ours: Series, anchor: Series) -> str:
    return f"**{ours.median / anchor.median:.2f}×** {anchor.name.split()[0]}'s time"


@contextmanager
def served(name: str) -> Iterator[tuple[Server, dict[str, str]]]:
    """A fresh server (its root emptied: a full run uploads tens of GiB) and a flowxfer home on loopback."""
    with Server(WORK / "server-wan", "--access-ttl", "7200") as server, flowxfer_home(name, server) as direct:
        yield server, direct


@contextmanager
def through(
    server: Server, name: str, spec_args: tuple[float, float, float, float], trace_file: Path | None = None
) -> Iterator[tuple[WanProcess, dict[str, str]]]:
    """A path in front of ``server`` and a flowxfer home logged in through it."""
    with WanProcess(server.url, *spec_args, trace_file) as path, flowxfer_home(name, path) as env:
        yield path, env

"""Issue 20's small files through the WAN path: 2,000 files of 64 KiB, one by one and packed.

Three tools upload the same folder through the same path, alternating:

- ``flowxfer sync DIR``: one upload per file, as a lab syncs a folder of
  small files without packing (a fresh journal each run, so every file goes);
- ``flowxfer sync DIR --pack-small 1M``: the files packed into tars per folder;
- the official client (flowbio 0.14, ``bench_sync``'s loop over the folder,
  one ``upload_data`` per file), which sends one request a file in series
  on one kept-alive connection (measured): at 50 ms about 2 minutes for 2,000
  files, 4 at 150 ms, too long to repeat next to flowxfer's seconds. It
  runs on the first ``sample`` files, and once with no file at all (start-up
  and login); its time for every file is then
  ``start-up + (sample run - start-up) × files / sample``. That linear
  scaling holds because its requests and connections a file are the same
  for each file (measured: the server's access log and the path's count of
  connections, before and after each run, are printed with the figures).
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ._common import FLOWXFER, PASSWORD, USER, Run, Series, Server, alternate, measure
from ._wan import Row, WanProcess
from .bench_sync import FLOWBIO_LOOP, make_small_files
from .bench_sync import WORK as SYNC_WORK

KiB = 1024
#: ``--pack-small`` packs files strictly under this size: the 64 KiB files all go into tars.
PACK_UNDER = "1M"
ONE_BY_ONE, PACKED = "flowxfer sync", "flowxfer sync --pack-small"
BASELINE, BASELINE_START = "flowbio v2", "flowbio v2, no file"


def scaled(sample_seconds: float, start_seconds: float, sample: int, files: int) -> float:
    """The official client's time for ``files`` from its time for ``sample`` of them: start-up once,
    the per-file part ``files / sample`` times."""
    return start_seconds + (sample_seconds - start_seconds) * files / sample


@dataclass(frozen=True)
class PerFile:
    """Where one tool's time went, a file at a time.

    :param files: how many files the figures are for.
    :param seconds: wall time in all (start-up left out where it was measured).
    :param requests: requests in all, from the server's access log.
    :param connections: new connections in all, from the path (each a handshake).
    :param rtt: the path's round trip.
    """

    files: int
    seconds: float
    requests: int
    connections: int
    rtt: float

    @property
    def round_trips(self) -> float:
        """A file's share of the time, in round trips of the path."""
        return self.seconds / self.files / self.rtt if self.rtt else 0.0

    @property
    def in_flight(self) -> float:
        """Requests under way at once, on average: each costs a round trip (a new connection one more)."""
        return (self.requests + self.connections) / self.files / self.round_trips if self.round_trips else 0.0

    def describe(self) -> str:
        return (
            f"{self.requests:,} requests and {self.connections:,} new connections for {self.files:,} files "
            f"({self.requests / self.files:.2f} requests a file) in {self.seconds:.2f} s, "
            f"{self.seconds / self.files * 1000:.1f} ms a file = {self.round_trips:.2f} round trips: "
            f"{self.in_flight:.1f} requests in flight on average"
        )


def per_file(seconds: float, files: int, requests: int, connections: int, rtt: float) -> PerFile:
    return PerFile(files, seconds, requests, connections, rtt)


@dataclass
class Traffic:
    """Requests and connections of each run of one tool."""

    requests: list[int] = field(default_factory=list)
    connections: list[int] = field(default_factory=list)


@dataclass
class SmallResult:
    rows: list[Row]
    per_file: dict[str, PerFile]
    ratios: dict[str, float]  # ONE_BY_ONE and PACKED: the official client's (scaled) time over ours
    note: str


def folders(count: int, size: int, sample: int) -> tuple[Path, Path, Path]:
    """The folder of ``count`` files, one of its first ``sample`` (hard links) and an empty one."""
    folder = make_small_files(SYNC_WORK / f"wan-small-{count}x{size}", count, size)
    part = folder.with_name(f"{folder.name}-first-{sample}")
    if not part.exists() or len(list(part.iterdir())) != sample:
        shutil.rmtree(part, ignore_errors=True)
        part.mkdir(parents=True)
        for file in sorted(folder.iterdir())[:sample]:
            os.link(file, part / file.name)
    empty = folder.with_name("wan-small-empty")
    empty.mkdir(exist_ok=True)
    return folder, part, empty


def _counted(run: Callable[[int], Run], server: Server, path: WanProcess, traffic: Traffic) -> Callable[[int], Run]:
    def counting(round_: int) -> Run:
        requests, connections = server.requests(), path.connections()
        result = run(round_)
        traffic.requests.append(server.requests() - requests)
        traffic.connections.append(path.connections() - connections)
        return result

    return counting


def bench_small(
    label: str,
    server: Server,
    path: WanProcess,
    env: dict[str, str],
    *,
    count: int,
    size: int,
    sample: int,
    repeats: int,
    baseline_repeats: int,
) -> SmallResult:
    """``count`` files of ``size`` up through ``path``: flowxfer one by one, packed, and (unless
    ``baseline_repeats`` is 0) the official client on ``sample`` of them."""
    sample = min(sample, count)
    folder, part, empty = folders(count, size, sample)
    journal = Path(env["FLOWXFER_JOURNAL"])

    def sync(*extra: str) -> Callable[[int], Run]:
        def run(round_: int) -> Run:
            fresh = journal.with_name(f"small-{len(extra)}-{round_}.db")
            for stale in fresh.parent.glob(f"{fresh.name}*"):
                stale.unlink()
            command = [*FLOWXFER, "--no-progress", "sync", str(folder), *extra]
            return measure(command, env={**env, "FLOWXFER_JOURNAL": str(fresh)})

        return run

    def flowbio(where: Path) -> Callable[[int], Run]:
        return lambda _r: measure([sys.executable, "-c", FLOWBIO_LOOP, path.url, USER, PASSWORD, str(where)])

    tools = {ONE_BY_ONE: sync(), PACKED: sync("--pack-small", PACK_UNDER)}
    if baseline_repeats:
        tools |= {BASELINE_START: flowbio(empty), BASELINE: flowbio(part)}
    traffic = {name: Traffic() for name in tools}
    counted = {name: _counted(run, server, path, traffic[name]) for name, run in tools.items()}
    task = f"upload {count:,} × {size // KiB} KiB"
    print(f"{task} (median of {repeats}; the official client {baseline_repeats} round(s) on {sample})", flush=True)
    limits = {BASELINE_START: baseline_repeats, BASELINE: baseline_repeats}
    series = alternate(counted, repeats, before_each=lambda _n, _r: os.sync(), rounds=limits)
    return summarise(label, task, count * size, count, sample, path.spec.rtt, series, traffic)


def summarise(
    label: str,
    task: str,
    nbytes: int,
    count: int,
    sample: int,
    rtt: float,
    series: dict[str, Series],
    traffic: dict[str, Traffic],
) -> SmallResult:
    """Rows, ratios and the time a file from the runs (pure: no process is started here)."""
    ours, packed = series[ONE_BY_ONE], series[PACKED]
    files = {name: count for name in (ONE_BY_ONE, PACKED)}
    rows = [Row(label, task, ONE_BY_ONE, ours, nbytes, None), Row(label, task, PACKED, packed, nbytes, None)]
    costs = {
        name: per_file(series[name].median, count, _median(t.requests), _median(t.connections), rtt)
        for name, t in traffic.items()
        if name in files
    }
    ratios: dict[str, float] = {}
    note = "no official client in this run"
    if BASELINE in series:
        start = series[BASELINE_START].median
        sample_run = series[BASELINE]
        whole = Series(
            f"flowbio v2 ({sample:,} of {count:,} files, scaled)",
            [Run(r.code, scaled(r.seconds, start, sample, count), r.rss_mib) for r in sample_run.runs],
        )
        ratios = {name: whole.median / series[name].median for name in (ONE_BY_ONE, PACKED)}
        for row in rows:
            row.against = f"**{ratios[row.tool]:.2f}×** faster than flowbio (scaled)"
        rows.append(Row(label, task, whole.name, whole, nbytes, None))
        extra = traffic[BASELINE_START]
        costs[BASELINE] = per_file(
            sample_run.median - start,
            sample,
            _median(traffic[BASELINE].requests) - _median(extra.requests),
            _median(traffic[BASELINE].connections) - _median(extra.connections),
            rtt,
        )
        note = (
            f"flowbio: {sample:,} of {count:,} files, scaled: {sample_run.median:.2f} s for {sample:,} files, "
            f"{start:.2f} s with none (start-up and login), so {start:.2f} s + "
            f"{(sample_run.median - start) / sample * 1000:.1f} ms × {count:,} files = {whole.median:.2f} s"
        )
    return SmallResult(rows, costs, ratios, note)


def _median(values: list[int]) -> int:
    return sorted(values)[len(values) // 2] if values else 0


def where_the_time_goes(label: str, result: SmallResult) -> list[str]:
    """A line a tool: requests, connections and round trips a file, and how many files moved at once."""
    return [f"- {label}, {name}: {cost.describe()}." for name, cost in result.per_file.items()]

"""WAN benchmarks (issue 20): flowxfer, the official client, curl and aria2c through one emulated path.

    python -m benchmarks.bench_wan [--rtt-ms 50] [--size 1G] [--files 16] [--file-size 64M] [--repeats 3]
    python -m benchmarks.bench_wan --quick          # small sizes, one round, RESULTS.md left alone
    python -m benchmarks.bench_wan --tasks download,fixed   # some comparisons only (printed, not recorded)

Every tool talks to the local server (a subprocess, rate limits off) through
``benchmarks.wanpath``, a userspace proxy on loopback playing the path
between a lab and Flow. Two paths, each with a link shared by all
connections and a window per connection:

- clean: one connection can fill the link;
- lossy-like: each connection alone is capped (``--lossy-mbit``), as loss on
  a long path caps a TCP connection.

On each: one large file up (flowxfer vs flowbio) and down (flowxfer vs curl
and ``aria2c -x4``), several files up (flowxfer vs flowbio), alternating
rounds, medians; throughput as a share of the link. Then the fixed cost of
a command: a 4 KiB file down and up through the clean path and on plain
loopback, the difference counted in round trips. First of all, the proxy's
own ceiling: curl through an unlimited path with no delay.

Figures go to stdout and to the "WAN path (issue 20), N ms RTT" section of
benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from flowxfer.transfer._sizes import parse_size

from ._common import (
    FLOWXFER,
    WORK,
    MiB,
    Run,
    Series,
    Server,
    alternate,
    compile_sources,
    download_tools,
    emptied,
    flowxfer_home,
    login_token,
    machine_line,
    measure,
    random_file,
    record_section,
    start_listening,
    stop,
    upload_tools,
)
from .bench_engine import ensure_aria2c
from .wanpath import PathSpec, spec_from_args

#: The fixed cost's probe: small enough that its transfer is nothing next to the round trips.
PROBE_SIZE = 4096


class WanProcess:
    """``python -m benchmarks.wanpath`` in front of ``upstream``, as a subprocess (its own core, not ours)."""

    def __init__(
        self, upstream: str, rtt_ms: float, link_mbit: float, connection_mbit: float, window_mib: float
    ) -> None:
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
        ]
        self.spec = spec_from_args(rtt_ms, link_mbit, connection_mbit, int(window_mib * MiB))
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""

    def __enter__(self) -> WanProcess:
        self.proc, self.url = start_listening(
            [sys.executable, "-m", "benchmarks.wanpath", *self.arguments], subprocess.DEVNULL
        )
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            stop(self.proc)


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


@dataclass
class Data:
    large: Path
    files: list[Path]
    probe: Path


def prepare(size: int, count: int, file_size: int) -> Data:
    folder = WORK / "data" / f"wan-{count}x{file_size}"
    files = [random_file(folder / f"part_{i:02d}.bin", file_size) for i in range(count)]
    for stale in set(folder.iterdir()) - set(files):
        stale.unlink()
    return Data(
        random_file(WORK / "data" / f"wan-{size}.bin", size),
        files,
        random_file(WORK / "data" / "wan-probe.bin", PROBE_SIZE),
    )


def upload_id(file: Path, env: dict[str, str]) -> str:
    """Upload ``file`` straight to the server (no path) and return its data id, for the downloads."""
    answer = subprocess.run(
        [*FLOWXFER, "--json", "--no-progress", "upload", str(file)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return str(json.loads(answer.stdout)["files"][0]["id"])


@contextmanager
def served(name: str) -> Iterator[tuple[Server, dict[str, str]]]:
    """A fresh server (its root emptied: a full run uploads tens of GiB) and a flowxfer home on loopback."""
    with Server(WORK / "server-wan", "--access-ttl", "7200") as server, flowxfer_home(name, server) as direct:
        yield server, direct


@contextmanager
def through(
    server: Server, name: str, spec_args: tuple[float, float, float, float]
) -> Iterator[tuple[WanProcess, dict[str, str]]]:
    """A path in front of ``server`` and a flowxfer home logged in through it."""
    with WanProcess(server.url, *spec_args) as path, flowxfer_home(name, path) as env:
        yield path, env


def _sync(_name: str, _round: int) -> None:
    os.sync()


def speedup(anchor: Series, ours: Series) -> str:
    return f"**{anchor.median / ours.median:.2f}×** faster than {anchor.name}"


def time_ratio(ours: Series, anchor: Series) -> str:
    return f"**{ours.median / anchor.median:.2f}×** {anchor.name.split()[0]}'s time"


#: What a run can be limited to (``--tasks``): each a comparison through each path, or the fixed cost.
TASKS = ("upload", "download", "many", "fixed", "ceiling")


def bench_path(
    label: str,
    spec_args: tuple[float, float, float, float],
    data: Data,
    repeats: int,
    aria2c: str | None,
    tasks: frozenset[str] = frozenset(TASKS),
) -> list[Row]:
    """Large file up and down, many files up, through one path (those of ``tasks``)."""
    rows: list[Row] = []
    with served("wan-direct") as (server, direct), through(server, f"wan-{label}", spec_args) as (path, env):
        data_id = upload_id(data.large, direct)
        token = login_token(server)
        print(f"\n{label} path: {path.spec.describe()}", flush=True)

        if "upload" in tasks:
            rows += _upload_rows(label, data, repeats, path, env)
        if "download" in tasks:
            rows += _download_rows(label, data, repeats, path, env, data_id, token, aria2c)
        if "many" in tasks:
            rows += _many_rows(label, data, repeats, path, env)
    return rows


def _upload_rows(label: str, data: Data, repeats: int, path: WanProcess, env: dict[str, str]) -> list[Row]:
    size, link = data.large.stat().st_size, path.spec.link_rate
    print(f"upload of {size / MiB:.0f} MiB (median of {repeats}, alternating)", flush=True)
    up = alternate(upload_tools([data.large], path.url, env), repeats, before_each=_sync)
    return [
        Row(
            label,
            f"upload {size / MiB:.0f} MiB",
            "flowxfer",
            up["flowxfer upload"],
            size,
            link,
            speedup(up["flowbio upload"], up["flowxfer upload"]),
        ),
        Row(label, f"upload {size / MiB:.0f} MiB", "flowbio v2", up["flowbio upload"], size, link),
    ]


def _download_rows(
    label: str,
    data: Data,
    repeats: int,
    path: WanProcess,
    env: dict[str, str],
    data_id: str,
    token: str,
    aria2c: str | None,
) -> list[Row]:
    size, link = data.large.stat().st_size, path.spec.link_rate
    out = WORK / "wan-out"
    print(f"download of {size / MiB:.0f} MiB (median of {repeats}, alternating)", flush=True)
    url = f"{path.url}/downloads/{data_id}/{data.large.name}"
    down = alternate(download_tools(data_id, url, token, out, env, aria2c), repeats, before_each=emptied(out))
    ours = down.pop("flowxfer download")
    return [
        Row(
            label,
            f"download {size / MiB:.0f} MiB",
            "flowxfer",
            ours,
            size,
            link,
            ", ".join(time_ratio(ours, anchor) for anchor in down.values()),
        ),
        *(
            Row(label, f"download {size / MiB:.0f} MiB", name.removesuffix(" download"), series, size, link)
            for name, series in down.items()
        ),
    ]


def _many_rows(label: str, data: Data, repeats: int, path: WanProcess, env: dict[str, str]) -> list[Row]:
    many, link = sum(f.stat().st_size for f in data.files), path.spec.link_rate
    task = f"upload {len(data.files)} × {data.files[0].stat().st_size / MiB:.0f} MiB"
    print(f"{task} (median of {repeats}, alternating)", flush=True)
    files = alternate(upload_tools(data.files, path.url, env), repeats, before_each=_sync)
    return [
        Row(
            label,
            task,
            "flowxfer",
            files["flowxfer upload"],
            many,
            link,
            speedup(files["flowbio upload"], files["flowxfer upload"]),
        ),
        Row(label, task, "flowbio v2", files["flowbio upload"], many, link),
    ]


def bench_fixed_cost(spec_args: tuple[float, float, float, float], data: Data, repeats: int) -> list[str]:
    """A 4 KiB file down and up, on loopback and through the path: what a command costs before its bytes.

    The loopback and path runs alternate with each other too, after one
    round that is not counted (the first commands after a server starts
    are slower whatever the path).
    """
    out = WORK / "wan-probe-out"
    rtt = spec_args[0] / 1000
    with served("wan-direct") as (server, direct), through(server, "wan-probe", spec_args) as (path, env):
        data_id = upload_id(data.probe, direct)
        token = login_token(server)
        tools = {}
        for where, (url, home) in {"path": (path.url, env), "loopback": (server.url, direct)}.items():
            mine = {
                **download_tools(data_id, f"{url}/downloads/{data_id}/{data.probe.name}", token, out, home, None),
                **upload_tools([data.probe], url, home),
            }
            tools.update({f"{where}: {name}": run for name, run in mine.items()})
        print(
            f"\nfixed cost: {PROBE_SIZE} B down and up, through the path and on loopback "
            f"(one round to warm up, then the median of {repeats}, alternating)",
            flush=True,
        )
        alternate(tools, 1, before_each=emptied(out))
        results = alternate(tools, repeats, before_each=emptied(out))
    lines = []
    for name, on_path in results.items():
        if not name.startswith("path: "):
            continue
        tool = name.removeprefix("path: ")
        local = results[f"loopback: {tool}"]
        extra = on_path.median - local.median
        lines.append(
            f"| {tool} {PROBE_SIZE // 1024} KiB | {on_path.median:.2f} s | {local.median:.2f} s | {extra / rtt:.1f} |"
        )
    goal = 0.3 + 2 * rtt
    for direction in ("download", "upload"):
        ours = results[f"path: flowxfer {direction}"].median
        lines.append(
            f"| **flowxfer {direction}: {ours:.2f} s** against the goal of 0.3 s + 2 round trips = "
            f"{goal:.2f} s: **{'met' if ours <= goal else 'missed'}** | | | |"
        )
    return lines


def ceiling(data: Data, window_mib: float, repeats: int) -> str:
    """curl through the proxy with no delay and no rate limit: the fastest the proxy itself relays."""
    size = data.large.stat().st_size
    with served("wan-direct") as (server, direct), WanProcess(server.url, 0, 0, 0, window_mib) as path:
        data_id = upload_id(data.large, direct)
        token = login_token(server)

        def curl(base: str) -> Callable[[int], Run]:
            url = f"{base}/downloads/{data_id}/{data.large.name}"
            return lambda _r: measure(
                ["curl", "-sS", "--fail", "-o", os.devnull, "-H", f"Authorization: Bearer {token}", url]
            )

        print(
            f"\nthe proxy's ceiling: curl to /dev/null, {size / MiB:.0f} MiB (median of {repeats}, alternating)",
            flush=True,
        )
        runs = alternate({"direct": curl(server.url), "through the proxy": curl(path.url)}, repeats)
    rate = {where: size / series.median * 8 / 1e9 for where, series in runs.items()}
    return (
        f"The proxy's own ceiling (curl to /dev/null, {size / MiB:.0f} MiB, no delay or rate limit, median of "
        f"{repeats}): **{rate['through the proxy']:.1f} Gbit/s** through it, {rate['direct']:.1f} Gbit/s direct."
    )


#: The issue's goals for flowxfer's share of the link, by path and task.
GOALS = {
    "clean": {"download": 0.93, "upload 1": 0.90, "upload many": 0.93},
    "lossy": {"download": 0.90, "upload 1": 0.85, "upload many": 0.90},
}


def verdicts(rows: list[Row]) -> list[str]:
    """Each goal of the issue on these rows, met or missed."""
    lines = []
    for row in rows:
        if row.tool != "flowxfer" or row.link_share is None:
            continue
        kind = "download" if row.task.startswith("download") else "upload many" if "×" in row.task else "upload 1"
        goal = GOALS[row.path][kind]
        verdict = "met" if row.link_share >= goal else "missed"
        lines.append(f"- {row.path}, {row.task}: {row.link_share:.0%} of the link (goal ≥ {goal:.0%}): {verdict}.")
    clean = {(r.task.split()[0], "×" in r.task, r.tool): r.series.median for r in rows if r.path == "clean"}
    curl, ours = clean.get(("download", False, "curl")), clean.get(("download", False, "flowxfer"))
    if curl and ours:
        lines.append(
            f"- clean, download: {ours / curl:.2f}× curl's time (goal ≤ 1.05×): "
            f"{'met' if ours / curl <= 1.05 else 'missed'}."
        )
    flowbio, ours = clean.get(("upload", True, "flowbio v2")), clean.get(("upload", True, "flowxfer"))
    if flowbio and ours:
        lines.append(
            f"- clean, many files up: {flowbio / ours:.1f}× the official client (goal ≥ 7×): "
            f"{'met' if flowbio / ours >= 7 else 'missed'}."
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    compile_sources()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rtt-ms", type=float, default=50.0, help="round-trip time of both paths (default 50)")
    parser.add_argument("--link-mbit", type=float, default=1000.0, help="the shared link each way (default 1000)")
    parser.add_argument(
        "--lossy-mbit", type=float, default=250.0, help="the lossy-like path's cap per connection (default 250)"
    )
    parser.add_argument("--window-mib", type=float, default=16.0, help="in flight per connection (default 16)")
    parser.add_argument("--size", default=None, help="the large file (default 1G; --quick 256M)")
    parser.add_argument(
        "--files", type=int, default=None, help="how many files in the many-files upload (default 16; --quick 4)"
    )
    parser.add_argument("--file-size", default=None, help="their size (default 64M; --quick 32M)")
    parser.add_argument("--repeats", type=int, default=None, help="rounds per comparison (default 3; --quick 1)")
    parser.add_argument("--paths", default="clean,lossy", help="which paths (default clean,lossy)")
    parser.add_argument("--quick", action="store_true", help="small sizes, one round, RESULTS.md left alone")
    parser.add_argument("--no-record", action="store_true", help="do not write RESULTS.md")
    parser.add_argument(
        "--tasks",
        default=",".join(TASKS),
        help=f"which comparisons (default all: {','.join(TASKS)}); a subset is printed, not recorded",
    )
    given = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(given)
    quick = args.quick
    size = parse_size(args.size or ("256M" if quick else "1G"))
    count = args.files or (4 if quick else 16)
    file_size = parse_size(args.file_size or ("32M" if quick else "64M"))
    repeats = args.repeats or (1 if quick else 3)
    paths = {"clean": 0.0, "lossy": args.lossy_mbit}
    chosen = [p.strip() for p in args.paths.split(",") if p.strip()]
    unknown = set(chosen) - set(paths)
    if unknown:
        parser.error(f"unknown path(s) {sorted(unknown)}: choose from clean, lossy")
    data = prepare(size, count, file_size)
    aria2c = ensure_aria2c()
    rows: list[Row] = []
    tasks = frozenset(t.strip() for t in args.tasks.split(",") if t.strip())
    if tasks - set(TASKS):
        parser.error(f"unknown task(s) {sorted(tasks - set(TASKS))}: choose from {', '.join(TASKS)}")
    ceiling_line = ceiling(data, args.window_mib, max(repeats, 7)) if "ceiling" in tasks else ""
    for label in chosen:
        spec = (args.rtt_ms, args.link_mbit, paths[label], args.window_mib)
        rows += bench_path(label, spec, data, repeats, aria2c, tasks)
    fixed: list[str] = []
    if "fixed" in tasks:
        fixed = bench_fixed_cost((args.rtt_ms, args.link_mbit, 0.0, args.window_mib), data, max(repeats, 7))
    clean = PathSpec(rtt=args.rtt_ms / 1000, link_rate=args.link_mbit * 1e6 / 8, window=int(args.window_mib * MiB))
    body = "\n".join(
        [
            machine_line() + f" Medians of {repeats} alternating rounds. Every tool talks to `flowxfer serve` "
            "(rate limits off) through `benchmarks/wanpath.py`, a userspace proxy on the same two cores.",
            f"Paths: clean = {clean.describe()}; lossy = the same with each connection alone capped at "
            f"{args.lossy_mbit:g} Mbit/s. Share of the link = bytes / median time / link rate.",
            "",
            "| path | task | tool | median time | throughput | share of the link | peak RSS | against |",
            "|---|---|---|---|---|---|---|---|",
            *(row.render() for row in rows),
            "",
            f"Fixed cost of a command (start to last byte of a 4 KiB file, clean path against plain loopback, "
            f"medians of {max(repeats, 7)} alternating rounds after one to warm up; the difference counted in "
            "round trips):",
            "",
            "| command | through the path | loopback | extra round trips |",
            "|---|---|---|---|",
            *fixed,
            "",
            *verdicts(rows),
            "",
            ceiling_line,
            "",
            f"Reproduce: `{' '.join(['python -m benchmarks.bench_wan', *given])}` (`--quick` for a smoke run).",
        ]
    )
    print("\n" + body)
    if not (args.no_record or quick or tasks != set(TASKS)):
        record_section(f"WAN path (issue 20), {args.rtt_ms:g} ms RTT", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

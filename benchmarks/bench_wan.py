"""WAN benchmarks (issue 20): flowxfer, the official client, curl and aria2c through one emulated path.

    python -m benchmarks.bench_wan [--rtt-ms 50] [--size 1G] [--files 16] [--file-size 64M] [--repeats 3]
    python -m benchmarks.bench_wan --quick          # small sizes, one round, RESULTS.md left alone
    python -m benchmarks.bench_wan --tasks download,fixed   # some comparisons only (printed, not recorded)
    python -m benchmarks.bench_wan --rtt-ms 150 --window-mib 32 --repeats 2 --baseline-on small
    python -m benchmarks.bench_wan --readme         # the README's WAN table again, from RESULTS.md

Every tool talks to the local server (a subprocess, rate limits off) through
``benchmarks.wanpath``, a userspace proxy on loopback playing the path
between a lab and Flow. Two paths, each with a link shared by all
connections and a window per connection:

- clean: one connection can fill the link;
- lossy-like: each connection alone is capped (``--lossy-mbit``), as loss on
  a long path caps a TCP connection.

On each: one large file up (flowxfer vs flowbio) and down (flowxfer vs curl
and ``aria2c -x4``), several files up (flowxfer vs flowbio), 2,000 files of
64 KiB up one by one and packed (flowxfer vs flowbio on a sample of them,
scaled: ``benchmarks.wan_small``), alternating rounds, medians; throughput as
a share of the link. The official client's runs take 75-200 s each, so they
run ``--baseline-repeats`` rounds (the first ones) while the others run
``--repeats``; ``--baseline-on small`` keeps it to the small files (at 150 ms
the large transfers' goal is a share of the link within 10 points of the
50 ms figures, which needs no official client), ``--no-baseline`` leaves it
out. Then the fixed cost of a command: a 4 KiB file down and up
through the clean path and on plain loopback, the difference counted in
round trips. First of all, the proxy's own ceiling: curl through an
unlimited path with no delay.

Figures go to stdout and to the "WAN path (issue 20), N ms RTT" section of
benchmarks/RESULTS.md, each goal of the issue met or missed at its end
(``benchmarks.wan_goals``); the README's WAN table is then written again from
the recorded sections.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flowxfer.transfer._sizes import parse_size

from . import wan_goals
from ._common import (
    FLOWXFER,
    RESULTS,
    ROOT,
    WORK,
    MiB,
    Run,
    alternate,
    compile_sources,
    download_tools,
    emptied,
    login_token,
    machine_line,
    measure,
    random_file,
    record_section,
    upload_tools,
)
from ._wan import Row, WanProcess, served, speedup, through, time_ratio
from .bench_engine import ensure_aria2c
from .wan_goals import Goal
from .wan_small import bench_small, where_the_time_goes
from .wanpath import PathSpec

__all__ = ["Row", "WanProcess", "main", "speedup", "through"]  # samples and fleet import these from here

#: The fixed cost's probe: small enough that its transfer is nothing next to the round trips.
PROBE_SIZE = 4096
FLOWBIO = "flowbio upload"


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


def _sync(_name: str, _round: int) -> None:
    os.sync()


#: What a run can be limited to (``--tasks``): each a comparison through each path, or the fixed cost.
TASKS = ("upload", "download", "many", "small", "fixed", "ceiling")
#: The tasks where the official client takes part.
BASELINE_TASKS = ("upload", "many", "small", "fixed")


@dataclass(frozen=True)
class Plan:
    """How much of everything a run does.

    :param baseline_repeats: the official client's rounds (0: left out).
    :param baseline_tasks: the tasks it runs in (``--baseline-on``: at 150 ms only the small files,
        whose goals are ratios to it, while the large transfers' goals are shares of the link).
    :param small_files: files in the small-file scenario, ``small_size`` bytes each.
    :param baseline_files: how many of them the official client uploads (scaled to all).
    """

    repeats: int
    baseline_repeats: int
    small_files: int
    small_size: int
    baseline_files: int
    tasks: frozenset[str] = frozenset(TASKS)
    baseline_tasks: frozenset[str] = frozenset(BASELINE_TASKS)

    def baseline(self, task: str) -> int:
        """The official client's rounds in ``task``."""
        return self.baseline_repeats if task in self.baseline_tasks else 0

    def uploads(self, files: list[Path], url: str, env: dict[str, str], task: str) -> dict[str, Callable[[int], Run]]:
        tools = upload_tools(files, url, env)
        if not self.baseline(task):
            del tools[FLOWBIO]
        return tools


@dataclass
class PathResult:
    rows: list[Row] = field(default_factory=list)
    goals: list[Goal] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def bench_path(
    label: str, spec_args: tuple[float, float, float, float], data: Data, plan: Plan, aria2c: str | None
) -> PathResult:
    """Large file up and down, many files up, small files up, through one path (those of the plan's tasks)."""
    result = PathResult()
    tasks = plan.tasks
    with served("wan-direct") as (server, direct), through(server, f"wan-{label}", spec_args) as (path, env):
        print(f"\n{label} path: {path.spec.describe()}", flush=True)
        if "upload" in tasks:
            result.rows += _upload_rows(label, [data.large], plan, path, env, "upload")
        if "download" in tasks:
            data_id, token = upload_id(data.large, direct), login_token(server)
            result.rows += _download_rows(label, data, plan.repeats, path, env, data_id, token, aria2c)
        if "many" in tasks:
            result.rows += _upload_rows(label, data.files, plan, path, env, "many")
        if "small" in tasks:
            small = bench_small(
                label,
                server,
                path,
                env,
                count=plan.small_files,
                size=plan.small_size,
                sample=plan.baseline_files,
                repeats=plan.repeats,
                baseline_repeats=plan.baseline("small"),
            )
            result.rows += small.rows
            result.notes += [*where_the_time_goes(label, small), f"- {label}: {small.note}."]
            scaled = f"flowbio on {min(plan.baseline_files, plan.small_files):,} of {plan.small_files:,} files, scaled"
            result.goals += wan_goals.small_goals(label, small.rows[0].task, small.ratios, scaled)
    return result


def _upload_rows(
    label: str, files: list[Path], plan: Plan, path: WanProcess, env: dict[str, str], kind: str
) -> list[Row]:
    """``files`` up, flowxfer against the official client (which runs the plan's baseline rounds)."""
    size, link = sum(f.stat().st_size for f in files), path.spec.link_rate
    each = files[0].stat().st_size
    task = f"upload {size / MiB:.0f} MiB" if len(files) == 1 else f"upload {len(files)} × {each / MiB:.0f} MiB"
    print(f"{task} (median of {plan.repeats}, the official client {plan.baseline(kind)}, alternating)", flush=True)
    up = alternate(
        plan.uploads(files, path.url, env, kind), plan.repeats, before_each=_sync, rounds={FLOWBIO: plan.baseline(kind)}
    )
    ours = up["flowxfer upload"]
    if FLOWBIO not in up:
        return [Row(label, task, "flowxfer", ours, size, link)]
    return [
        Row(label, task, "flowxfer", ours, size, link, speedup(up[FLOWBIO], ours)),
        Row(label, task, "flowbio v2", up[FLOWBIO], size, link),
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


def bench_fixed_cost(
    spec_args: tuple[float, float, float, float], data: Data, repeats: int, plan: Plan
) -> tuple[list[str], list[Goal]]:
    """A 4 KiB file down and up, on loopback and through the path: what a command costs before its bytes.

    The loopback and path runs alternate with each other too, after one
    round that is not counted (the first commands after a server starts
    are slower whatever the path).
    """
    out = WORK / "wan-probe-out"
    rtt = spec_args[0] / 1000
    trace_file = WORK / "wan-probe-trace.json"
    trace_file.unlink(missing_ok=True)
    with (
        served("wan-direct") as (server, direct),
        through(server, "wan-probe", spec_args, trace_file) as (path, env),
    ):
        data_id = upload_id(data.probe, direct)
        token = login_token(server)
        tools = {}
        for where, (url, home) in {"path": (path.url, env), "loopback": (server.url, direct)}.items():
            mine = {
                **download_tools(data_id, f"{url}/downloads/{data_id}/{data.probe.name}", token, out, home, None),
                **plan.uploads([data.probe], url, home, "fixed"),
            }
            tools.update({f"{where}: {name}": run for name, run in mine.items()})
        print(
            f"\nfixed cost: {PROBE_SIZE} B down and up, through the path and on loopback "
            f"(one round to warm up, then the median of {repeats}, alternating)",
            flush=True,
        )
        alternate(tools, 1, before_each=emptied(out))
        results = alternate(tools, repeats, before_each=emptied(out))
        time.sleep(0.5)  # the path rewrites its trace as each connection ends: the last one's too
        trace = json.loads(trace_file.read_text(encoding="utf-8")) if trace_file.exists() else {}
    lines = []
    for name, on_path in results.items():
        if not name.startswith("path: "):
            continue
        tool = name.removeprefix("path: ")
        local = results[f"loopback: {tool}"]
        extra = on_path.median - local.median
        firsts = [t for t in (first_answer_byte(trace, run, rtt) for run in on_path.runs) if t is not None]
        first = f"{statistics.median(firsts):.2f} s" if firsts else "-"
        lines.append(
            f"| {tool} {PROBE_SIZE // 1024} KiB | {on_path.median:.2f} s | {local.median:.2f} s | {extra / rtt:.1f} "
            f"| {first} |"
        )
    ours = {direction: results[f"path: flowxfer {direction}"].median for direction in ("download", "upload")}
    return lines, wan_goals.fixed_goals(ours, rtt)


def first_answer_byte(trace: dict[str, Any], run: Run, rtt: float) -> float | None:
    """Seconds from a command's start to the first byte the server sent it reaching it, read from the path's trace.

    The issue's own measure of the fixed cost is start to first byte; the
    goal is still judged on start to exit. The first downward block of any
    connection the path accepted while the command ran began at ``first`` on
    the link and reached the client half a round trip later. For a download
    that is its first data byte (the answer carries them); for an upload,
    the server's answer to its request, after the file went up.
    """
    if not run.started:
        return None
    ended = run.started + run.seconds
    firsts = [
        first
        for accepted, first, _last, _size in trace.get("connections", {}).values()
        if first is not None and run.started <= accepted <= ended
    ]
    return min(firsts) + rtt / 2 - run.started if firsts else None


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


def estimate_seconds(
    plan: Plan, *, rtt_ms: float, link_mbit: float, lossy_mbit: float, size: int, many: int, paths: int
) -> float:
    """A full run's duration from a rough model of each tool, to print before it starts.

    Fitted to the recorded runs: flowxfer fills ~90% of the link after ~1 s
    of start-up; the official client pays a round trip plus ~18 ms a 1 MB
    chunk; curl alone is held to a lossy connection's cap; a small file is
    one request, ~12 at once for flowxfer, one after the other (plus ~12 ms)
    for the official client; the packed files go on one capped connection.
    """
    rtt, link = rtt_ms / 1000, link_mbit * 1e6 / 8
    capped = min(link, lossy_mbit * 1e6 / 8) if lossy_mbit else link
    tasks, repeats, base = plan.tasks, plan.repeats, plan.baseline

    def ours(nbytes: float) -> float:
        return 1.0 + nbytes / (0.9 * link)

    def flowbio(nbytes: float, rate: float) -> float:
        return 1.5 + nbytes / 1e6 * (rtt + 1e6 / rate + 0.018)

    total = 0.0
    for rate in [link, capped][:paths]:
        total += 4 + size / 400e6  # a server, a login, the file to download put in place
        if "upload" in tasks:
            total += repeats * ours(size) + base("upload") * flowbio(size, rate)
        if "download" in tasks:
            total += repeats * (2 * ours(size) + size / rate + 2 * rtt)
        if "many" in tasks:
            total += repeats * ours(many) + base("many") * flowbio(many, rate)
        if "small" in tasks:
            one_by_one = 1.5 + plan.small_files * rtt / 12
            packed = 1.5 + plan.small_files * plan.small_size / rate
            total += repeats * (one_by_one + packed + 0.5) + base("small") * (1.5 + plan.baseline_files * (rtt + 0.012))
    if "fixed" in tasks:
        total += 5 + (max(repeats, 7) + 1) * 4 * (1.4 + 3 * rtt)
    if "ceiling" in tasks:
        total += 5 + 2 * max(repeats, 7) * (0.3 + size / 500e6)
    return total


def goals_of(rows: list[Row], rtt_ms: float, results: str) -> list[Goal]:
    """The share and ratio goals of the large transfers."""
    recorded_50 = wan_goals.recorded_shares(wan_goals.section(results, wan_goals.HEADING.format(rtt=50)))
    return [*wan_goals.share_goals(rows, rtt_ms, recorded_50), *wan_goals.ratio_goals(rows)]


def write_readme() -> None:
    """The README's WAN table, written again from the recorded sections of RESULTS.md."""
    readme = ROOT / "README.md"
    table = wan_goals.readme_table(RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else "")
    readme.write_text(wan_goals.write_readme(readme.read_text(encoding="utf-8"), table), encoding="utf-8")
    print(f"wrote the WAN table of {readme}")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rtt-ms", type=float, default=50.0, help="round-trip time of both paths (default 50)")
    p.add_argument("--link-mbit", type=float, default=1000.0, help="the shared link each way (default 1000)")
    p.add_argument("--lossy-mbit", type=float, default=250.0, help="the lossy-like path's cap per connection")
    p.add_argument("--window-mib", type=float, default=16.0, help="in flight per connection (default 16)")
    p.add_argument("--size", default=None, help="the large file (default 1G; --quick 256M)")
    p.add_argument("--files", type=int, default=None, help="files in the many-files upload (default 16; --quick 4)")
    p.add_argument("--file-size", default=None, help="their size (default 64M; --quick 32M)")
    p.add_argument("--small-files", type=int, default=None, help="small files (default 2000; --quick 200)")
    p.add_argument("--small-size", default="64K", help="their size (default 64K)")
    p.add_argument(
        "--baseline-files",
        type=int,
        default=None,
        help="of the small files, how many the official client "
        "uploads, its time scaled to all (default 200; --quick 20)",
    )
    p.add_argument("--repeats", type=int, default=None, help="rounds per comparison (default 3; --quick 1)")
    p.add_argument("--baseline-repeats", type=int, default=1, help="the official client's rounds (default 1)")
    p.add_argument(
        "--baseline-on",
        default=",".join(BASELINE_TASKS),
        help=f"the tasks the official client takes part in (default all: {','.join(BASELINE_TASKS)})",
    )
    p.add_argument("--no-baseline", action="store_true", help="leave the official client out of every task")
    p.add_argument("--paths", default="clean,lossy", help="which paths (default clean,lossy)")
    p.add_argument("--quick", action="store_true", help="small sizes, one round, RESULTS.md left alone")
    p.add_argument("--no-record", action="store_true", help="do not write RESULTS.md (nor the README)")
    p.add_argument("--readme", action="store_true", help="only write the README's WAN table from RESULTS.md")
    p.add_argument(
        "--tasks",
        default=",".join(TASKS),
        help=f"which comparisons (default all: {','.join(TASKS)}); a subset is printed, not recorded",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    given = sys.argv[1:] if argv is None else argv
    command = parser()
    args = command.parse_args(given)
    if args.readme:
        write_readme()
        return 0
    compile_sources()
    quick = args.quick
    size = parse_size(args.size or ("256M" if quick else "1G"))
    count = args.files or (4 if quick else 16)
    file_size = parse_size(args.file_size or ("32M" if quick else "64M"))
    repeats = args.repeats or (1 if quick else 3)
    paths = {"clean": 0.0, "lossy": args.lossy_mbit}
    chosen = [p.strip() for p in args.paths.split(",") if p.strip()]
    if set(chosen) - set(paths):
        command.error(f"unknown path(s) {sorted(set(chosen) - set(paths))}: choose from clean, lossy")
    tasks = frozenset(t.strip() for t in args.tasks.split(",") if t.strip())
    if tasks - set(TASKS):
        command.error(f"unknown task(s) {sorted(tasks - set(TASKS))}: choose from {', '.join(TASKS)}")
    baseline_on = frozenset(t.strip() for t in args.baseline_on.split(",") if t.strip())
    if baseline_on - set(BASELINE_TASKS):
        command.error(f"--baseline-on {sorted(baseline_on - set(BASELINE_TASKS))}: choose from {BASELINE_TASKS}")
    if args.baseline_repeats < 1 and not args.no_baseline:
        command.error("--baseline-repeats must be at least 1 (--no-baseline leaves the official client out)")
    plan = Plan(
        repeats=repeats,
        baseline_repeats=0 if args.no_baseline else min(args.baseline_repeats, repeats),
        small_files=args.small_files or (200 if quick else 2000),
        small_size=parse_size(args.small_size),
        baseline_files=args.baseline_files or (20 if quick else 200),
        tasks=tasks,
        baseline_tasks=frozenset() if args.no_baseline else baseline_on,
    )
    estimate = estimate_seconds(
        plan,
        rtt_ms=args.rtt_ms,
        link_mbit=args.link_mbit,
        lossy_mbit=args.lossy_mbit,
        size=size,
        many=count * file_size,
        paths=len(chosen),
    )
    print(f"estimated duration of this run: about {estimate / 60:.0f} min", flush=True)
    started = time.monotonic()
    data = prepare(size, count, file_size)
    aria2c = ensure_aria2c()
    result = PathResult()
    ceiling_line = ceiling(data, args.window_mib, max(repeats, 7)) if "ceiling" in tasks else ""
    for label in chosen:
        spec = (args.rtt_ms, args.link_mbit, paths[label], args.window_mib)
        found = bench_path(label, spec, data, plan, aria2c)
        result.rows += found.rows
        result.notes += found.notes
        result.goals += found.goals
    fixed: list[str] = []
    if "fixed" in tasks:
        fixed, fixed_goals = bench_fixed_cost(
            (args.rtt_ms, args.link_mbit, 0.0, args.window_mib), data, max(repeats, 7), plan
        )
        result.goals += fixed_goals
    results = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else ""
    goals = [*goals_of(result.rows, args.rtt_ms, results), *result.goals, *wan_goals.loopback_goals(results)]
    body = section_body(args, plan, result, fixed, goals, ceiling_line, given)
    print("\n" + body)
    print(f"\nthis run took {(time.monotonic() - started) / 60:.1f} min (estimated {estimate / 60:.0f})")
    if not (args.no_record or quick or tasks != set(TASKS)):
        record_section(wan_goals.HEADING.format(rtt=args.rtt_ms), body)
        write_readme()
    return 0


def section_body(
    args: argparse.Namespace,
    plan: Plan,
    result: PathResult,
    fixed: list[str],
    goals: list[Goal],
    ceiling_line: str,
    given: list[str],
) -> str:
    clean = PathSpec(rtt=args.rtt_ms / 1000, link_rate=args.link_mbit * 1e6 / 8, window=int(args.window_mib * MiB))
    where = [t for t in BASELINE_TASKS if plan.baseline(t)]
    baseline = (
        "the official client left out"
        if not where
        else f"the official client's runs {plan.baseline_repeats} round(s), the first ones"
        + ("" if len(where) == len(BASELINE_TASKS) else f", in {', '.join(where)} only")
    )
    return "\n".join(
        [
            machine_line() + f" Medians of {plan.repeats} alternating rounds; {baseline}. Every tool talks to "
            "`flowxfer serve` (rate limits off) through `benchmarks/wanpath.py`, a userspace proxy on the same "
            "two cores.",
            f"Paths: clean = {clean.describe()}; lossy = the same with each connection alone capped at "
            f"{args.lossy_mbit:g} Mbit/s. Share of the link = bytes / median time / link rate.",
            "",
            "| path | task | tool | median time | throughput | share of the link | peak RSS | against |",
            "|---|---|---|---|---|---|---|---|",
            *(row.render() for row in result.rows),
            "",
            *(
                [
                    "Small files, a file at a time (requests from the server's access log, new connections "
                    "from the path, the median run; flowxfer's times include its start-up):",
                    "",
                    *result.notes,
                    "",
                ]
                if result.notes
                else []
            ),
            *(
                [
                    "Fixed cost of a command (start to last byte of a 4 KiB file, clean path against plain "
                    f"loopback, medians of {max(plan.repeats, 7)} alternating rounds after one to warm up; the "
                    "difference counted in round trips; and through the path, start to the first byte of the "
                    "server's answer reaching the command, from the path's trace: a download's first data "
                    "byte, an upload's answer after its file went up):",
                    "",
                    "| command | through the path | loopback | extra round trips | to the first answer byte |",
                    "|---|---|---|---|---|",
                    *fixed,
                    "",
                ]
                if fixed
                else []
            ),
            "Goals (issue 20"
            + ("" if args.rtt_ms == 50 else "; at this round trip the shares against the recorded 50 ms section")
            + "):",
            "",
            *(goal.line() for goal in goals),
            "",
            *([ceiling_line, ""] if ceiling_line else []),
            f"Reproduce: `{' '.join(['python -m benchmarks.bench_wan', *given])}` (`--quick` for a smoke run).",
        ]
    )


if __name__ == "__main__":
    raise SystemExit(main())

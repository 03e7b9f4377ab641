"""Sample benchmarks (issue 19): ``flowxfer samples upload-batch`` against ``flowbio samples upload-batch``.

    python -m benchmarks.bench_samples [--size 128M] [--samples 8] [--repeats 3] [--rerun 200] [--no-record]
    python -m benchmarks.bench_samples --wan [--rtt-ms 50] [--link-mbit 1000] [--window-mib 16] [--repeats 1]
    python -m benchmarks.bench_samples [--wan] --first-byte-only [--repeats 5]

Against the local server (a subprocess, rate limits off), on loopback or,
with ``--wan``, through the WAN issue's path (``benchmarks.wanpath``, started
as ``bench_wan`` starts it: 50 ms round trip, a 1 Gbit/s link shared by all
connections, 16 MiB in flight per connection):

- the same sheet of ``--samples`` paired samples (two files of ``--size``
  each) uploaded by the official CLI and by flowxfer, alternating rounds,
  medians; every round names its samples afresh (flowxfer would otherwise,
  rightly, make none) — goal: flowxfer at least 3x faster on loopback, 7x
  through the path; peak RSS ≤ 200 MiB;
- a re-run of ``upload-batch`` over ``--rerun`` samples already made — goal
  ≤ 2 s and no upload request;
- the time to first byte: ``upload-batch --dry-run`` of the same sheet, which
  pays everything a batch does before its first byte (start-up, login,
  the catalog's requests, every row checked against it and the disk) and
  stops there; ``--first-byte-only`` measures just that (no flowbio rounds).

Figures go to stdout and to the "Samples (issue 19)" section of
benchmarks/RESULTS.md, or with ``--wan`` to "Samples (issue 19), WAN path,
N ms RTT" (through the path flowbio takes minutes a round at full size, so
that run is usually given fewer rounds).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from flowxfer.transfer._sizes import parse_size

from ._common import (
    FLOWXFER,
    WORK,
    Endpoint,
    MiB,
    Server,
    alternate,
    compile_sources,
    flowxfer_home,
    login_token,
    machine_line,
    measure,
    random_file,
    record_section,
)
from .bench_wan import Row, WanProcess, speedup, through
from .wanpath import spec_from_args

FLOWBIO = [str(Path(sys.executable).with_name("flowbio"))]

#: The WAN path's arguments as ``bench_wan.through`` takes them: RTT (ms), link, per-connection cap (Mbit/s), window.
WanArgs = tuple[float, float, float, float]


def write_sheet(path: Path, names: list[str], reads: list[tuple[Path, Path]]) -> Path:
    lines = ["name,reads1,reads2,organism,strandedness"]
    lines += [f"{name},{r1},{r2},Hs,reverse" for name, (r1, r2) in zip(names, reads, strict=True)]
    path.write_text("\n".join(lines) + "\n")
    return path


@contextmanager
def reached(
    server: Server, name: str, wan: WanArgs | None
) -> Iterator[tuple[Endpoint, WanProcess | None, dict[str, str]]]:
    """Where the clients connect (the server itself, or a WAN path in front of it) and a flowxfer home there."""
    if wan is None:
        with flowxfer_home(name, server) as env:
            yield server, None, env
    else:
        with through(server, name, wan) as (path, env):
            yield path, path, env


def bench_batch(
    size: int, samples: int, repeats: int, wan: WanArgs | None, first_only: bool = False
) -> tuple[list[Row], dict[str, float]]:
    data = WORK / "samples-data"
    reads = [
        (
            random_file(data / f"S{n}_R1.fastq.gz", size, seed=2 * n + 1),
            random_file(data / f"S{n}_R2.fastq.gz", size, seed=2 * n + 2),
        )
        for n in range(samples)
    ]
    total = 2 * size * samples
    label = "loopback" if wan is None else f"WAN {wan[0]:g} ms"
    with (
        Server(WORK / "server-samples", "--access-ttl", "7200") as server,
        reached(server, "samples", wan) as (endpoint, path, env),
    ):
        flowbio_env = {"FLOW_API_URL": endpoint.url, "FLOW_API_TOKEN": login_token(server)}
        link = path.spec.link_rate if path is not None else None
        if path is not None:
            print(f"\nthrough the path: {path.spec.describe()}", flush=True)

        def sheet(tool: str, round_: int) -> str:
            names = [f"{tool}_r{round_}_S{n}" for n in range(samples)]
            return str(write_sheet(WORK / f"sheet-{tool}-{round_}.csv", names, reads))

        first_byte = bench_first_byte(sheet("fx", 0), env, max(repeats, 5))
        if first_only:
            return [], {"first_byte": first_byte}
        print(f"\n{samples} paired samples of 2 x {size / MiB:.0f} MiB (median of {repeats}, alternating)", flush=True)
        tools = {
            "flowxfer samples upload-batch": lambda r: measure(flowxfer_batch(sheet("fx", r)), env=env),
            "flowbio samples upload-batch": lambda r: measure(
                [
                    *FLOWBIO,
                    "--no-progress",
                    "samples",
                    "upload-batch",
                    "--sheet",
                    sheet("fb", r),
                    "--sample-type",
                    "RNA-Seq",
                ],
                env=flowbio_env,
            ),
        }
        runs = alternate(tools, repeats, before_each=lambda _n, _r: os.sync())
    fx, fb = runs["flowxfer samples upload-batch"], runs["flowbio samples upload-batch"]
    task = f"{samples} × 2 × {size / MiB:.0f} MiB"
    rows = [
        Row(label, task, "flowxfer", fx, total, link, speedup(fb, fx)),
        Row(label, task, "flowbio 0.14 CLI", fb, total, link),
    ]
    return rows, {"speedup": fb.median / fx.median, "rss": fx.peak_rss, "first_byte": first_byte}


def flowxfer_batch(sheet: str, *more: str) -> list[str]:
    return [*FLOWXFER, "--no-progress", "samples", "upload-batch", "--sheet", sheet, "--sample-type", "RNA-Seq", *more]


def bench_first_byte(sheet: str, env: dict[str, str], repeats: int) -> float:
    """Median seconds of ``upload-batch --dry-run``: what a batch pays before its first byte moves."""
    runs = [measure(flowxfer_batch(sheet, "--dry-run"), env=env) for _ in range(repeats)]
    if any(run.code != 0 for run in runs):
        raise RuntimeError(f"the dry run failed: exit {[run.code for run in runs]}")
    seconds = sorted(run.seconds for run in runs)
    print(f"time to first byte (--dry-run), {repeats} runs: " + ", ".join(f"{t:.2f}" for t in seconds), flush=True)
    return statistics.median(seconds)


def bench_rerun(count: int, wan: WanArgs | None) -> tuple[str, dict[str, float]]:
    small = WORK / "samples-small"
    small.mkdir(parents=True, exist_ok=True)
    reads = [
        (
            random_file(small / f"T{n}_R1.fq.gz", 1024, seed=n + 1),
            random_file(small / f"T{n}_R2.fq.gz", 512, seed=n + 7),
        )
        for n in range(count)
    ]
    sheet = write_sheet(WORK / "sheet-rerun.csv", [f"T{n}" for n in range(count)], reads)
    with (
        Server(WORK / "server-rerun", "--access-ttl", "7200") as server,
        reached(server, "rerun", wan) as (_endpoint, _path, env),
    ):
        command = [
            *FLOWXFER,
            "--no-progress",
            "--json",
            "samples",
            "upload-batch",
            "--sheet",
            str(sheet),
            "--sample-type",
            "RNA-Seq",
        ]
        subprocess.run(command, env={**os.environ, **env}, check=True, capture_output=True)
        timed = measure(command, env=env)
        again = subprocess.run(command, env={**os.environ, **env}, check=True, capture_output=True, text=True)
    document = json.loads(again.stdout)
    uploads = document["requests"].get("upload", 0)
    skipped = sum(1 for s in document["samples"] if s["status"] == "skipped")
    verdict = "met" if timed.seconds <= 2 and uploads == 0 else "missed"
    line = (
        f"- re-run over {count} made samples: **{timed.seconds:.2f} s**, {uploads} upload requests, "
        f"{skipped} skipped, peak RSS {timed.rss_mib:.0f} MiB (goal ≤ 2 s, no upload request): {verdict}."
    )
    return line, {"rerun_seconds": timed.seconds, "rerun_uploads": uploads}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="128M", help="size of each reads file")
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rerun", type=int, default=200, help="samples in the re-run measurement")
    parser.add_argument(
        "--wan", action="store_true", help="through the WAN path (benchmarks.wanpath) instead of plain loopback"
    )
    parser.add_argument("--rtt-ms", type=float, default=50.0, help="the path's round-trip time (default 50)")
    parser.add_argument("--link-mbit", type=float, default=1000.0, help="its link, shared, each way (default 1000)")
    parser.add_argument("--window-mib", type=float, default=16.0, help="in flight per connection (default 16)")
    parser.add_argument("--no-record", action="store_true", help="print only; leave RESULTS.md alone")
    parser.add_argument(
        "--first-byte-only", action="store_true", help="only the time to first byte (a --dry-run); print, no record"
    )
    given = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(given)
    compile_sources()
    size = parse_size(args.size)
    wan: WanArgs | None = (args.rtt_ms, args.link_mbit, 0.0, args.window_mib) if args.wan else None
    rows, figures = bench_batch(size, args.samples, args.repeats, wan, args.first_byte_only)
    if args.first_byte_only:
        print(f"time to first byte: median {figures['first_byte']:.2f} s")
        return 0
    rerun, more = bench_rerun(args.rerun, wan)
    figures.update(more)
    goal = 3 if wan is None else 7
    verdicts = [
        f"- speed-up: **{figures['speedup']:.2f}×** (goal ≥ {goal}×): "
        f"{'met' if figures['speedup'] >= goal else 'missed'}.",
        f"- flowxfer's peak RSS: {figures['rss']:.0f} MiB (goal ≤ 200 MiB): "
        f"{'met' if figures['rss'] <= 200 else 'missed'}.",
        rerun,
        f"- time to first byte (`upload-batch --dry-run`: start-up, login, catalog, every row checked): "
        f"median {figures['first_byte']:.2f} s.",
    ]
    where = "plain loopback"
    if wan is not None:
        spec = spec_from_args(wan[0], wan[1], wan[2], int(wan[3] * MiB))
        where = f"`benchmarks/wanpath.py` ({spec.describe()}), a userspace proxy on the same two cores"
    body = "\n".join(
        [
            machine_line() + f" Medians of {args.repeats} alternating rounds. Both CLIs talk to `flowxfer serve` "
            f"(rate limits off) over {where}.",
            "",
            "| path | task | tool | median time | throughput | share of the link | peak RSS | against |",
            "|---|---|---|---|---|---|---|---|",
            *(row.render() for row in rows),
            "",
            *verdicts,
            "",
            f"Reproduce: `{' '.join(['python -m benchmarks.bench_samples', *given])}`.",
        ]
    )
    print("\n" + body)
    if not args.no_record:
        heading = "Samples (issue 19)" if wan is None else f"Samples (issue 19), WAN path, {args.rtt_ms:g} ms RTT"
        record_section(heading, body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Sample benchmarks (issue 19): ``flowxfer samples upload-batch`` against ``flowbio samples upload-batch``.

    python -m benchmarks.bench_samples [--size 128M] [--samples 8] [--repeats 3] [--rerun 200] [--no-record]

On loopback, against the local server (a subprocess, rate limits off):

- the same sheet of ``--samples`` paired samples (two files of ``--size``
  each) uploaded by the official CLI and by flowxfer, alternating rounds,
  medians; every round names its samples afresh (flowxfer would otherwise,
  rightly, make none) — goal: flowxfer at least 3x faster; peak RSS ≤ 200 MiB;
- a re-run of ``upload-batch`` over ``--rerun`` samples already made — goal
  ≤ 2 s and no upload request.

The WAN-like path (50 ms round trip, 1 Gbit/s; goal ≥ 7x) needs the WAN
issue's shaping and is not measured here. Figures go to stdout and to the
"Samples (issue 19)" section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from flowxfer.transfer._sizes import parse_size

from ._common import (
    FLOWXFER,
    WORK,
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

FLOWBIO = [str(Path(sys.executable).with_name("flowbio"))]


def write_sheet(path: Path, names: list[str], reads: list[tuple[Path, Path]]) -> Path:
    lines = ["name,reads1,reads2,organism,strandedness"]
    lines += [f"{name},{r1},{r2},Hs,reverse" for name, (r1, r2) in zip(names, reads, strict=True)]
    path.write_text("\n".join(lines) + "\n")
    return path


def bench_batch(size: int, samples: int, repeats: int) -> tuple[list[str], dict[str, float]]:
    data = WORK / "samples-data"
    reads = [
        (
            random_file(data / f"S{n}_R1.fastq.gz", size, seed=2 * n + 1),
            random_file(data / f"S{n}_R2.fastq.gz", size, seed=2 * n + 2),
        )
        for n in range(samples)
    ]
    total = 2 * size * samples
    with Server(WORK / "server-samples", "--access-ttl", "7200") as server, flowxfer_home("samples", server) as env:
        flowbio_env = {"FLOW_API_URL": server.url, "FLOW_API_TOKEN": login_token(server)}

        def sheet(tool: str, round_: int) -> str:
            names = [f"{tool}_r{round_}_S{n}" for n in range(samples)]
            return str(write_sheet(WORK / f"sheet-{tool}-{round_}.csv", names, reads))

        print(f"\n{samples} paired samples of 2 x {size / MiB:.0f} MiB (median of {repeats}, alternating)", flush=True)
        tools = {
            "flowxfer samples upload-batch": lambda r: measure(
                [
                    *FLOWXFER,
                    "--no-progress",
                    "samples",
                    "upload-batch",
                    "--sheet",
                    sheet("fx", r),
                    "--sample-type",
                    "RNA-Seq",
                ],
                env=env,
            ),
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
    speedup = fb.median / fx.median
    lines = [
        f"| {samples} x 2 x {size / MiB:.0f} MiB | {name} | {s.median:.2f} s | {s.rate(total):.0f} MiB/s | "
        f"{s.peak_rss:.0f} MiB |"
        for name, s in (("flowxfer", fx), ("flowbio 0.14 CLI", fb))
    ]
    lines.append(f"| | **flowxfer / flowbio speed-up** | **{speedup:.1f}×** (goal ≥ 3×) | | |")
    return lines, {"speedup": speedup, "rss": fx.peak_rss}


def bench_rerun(count: int) -> tuple[list[str], dict[str, float]]:
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
    with Server(WORK / "server-rerun", "--access-ttl", "7200") as server, flowxfer_home("rerun", server) as env:
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
    lines = [
        f"| re-run over {count} made samples | flowxfer | {timed.seconds:.2f} s (goal ≤ 2 s) | "
        f"{uploads} upload requests, {skipped} skipped | {timed.rss_mib:.0f} MiB |"
    ]
    return lines, {"rerun_seconds": timed.seconds, "rerun_uploads": uploads}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="128M", help="size of each reads file")
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rerun", type=int, default=200, help="samples in the re-run measurement")
    parser.add_argument("--no-record", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args(argv)
    compile_sources()
    size = parse_size(args.size)
    batch, figures = bench_batch(size, args.samples, args.repeats)
    rerun, more = bench_rerun(args.rerun)
    figures.update(more)
    table = ["| task | tool | time (median) | rate | peak RSS |", "|---|---|---|---|---|", *batch, *rerun]
    body = "\n".join(
        [machine_line(), "", *table, "", "The WAN-like path (50 ms, 1 Gbit/s; goal ≥ 7×) is not measured yet."]
    )
    print("\n" + body)
    if not args.no_record:
        record_section("Samples (issue 19)", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

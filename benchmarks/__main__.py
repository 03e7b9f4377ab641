"""Run every benchmark of the project, one after the other, and record them all.

    python -m benchmarks [--quick]

Each part writes its own section of ``benchmarks/RESULTS.md``; the size sweep
also draws ``benchmarks/plot.png``; the load run (issue 6), the WAN path (issue 20) and the fleet
on PostgreSQL (issue 21) come last.
Anchors that are missing (nginx, aria2c) are installed from Debian by the
parts that need them, or skipped with a message — never faked. ``--quick``
uses small sizes for a smoke run and leaves RESULTS.md alone.
"""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
import time

PARTS: list[tuple[str, list[str], list[str]]] = [
    # (module, full arguments, quick arguments)
    ("benchmarks.bench_server", [], ["--size-mib", "64", "--runs", "1", "--no-write"]),
    ("benchmarks.bench_engine", [], ["--size", "64M", "--files", "500", "--repeats", "1", "--no-record"]),
    ("benchmarks.bench_sync", [], ["--quick", "--no-record"]),
    ("benchmarks.bench_sizes", [], ["--sizes", "1M,16M", "--repeats", "1", "--no-record"]),
    (
        "benchmarks.bench_samples",
        [],
        ["--size", "8M", "--samples", "2", "--repeats", "1", "--rerun", "20", "--no-record"],
    ),
    # Through the WAN path flowbio takes ~2.5 min a round at full size: one round.
    (
        "benchmarks.bench_samples",
        ["--wan", "--repeats", "1"],
        ["--wan", "--size", "8M", "--samples", "2", "--repeats", "1", "--rerun", "20", "--no-record"],
    ),
    ("benchmarks.bench_load", [], ["--clients", "4", "--files", "5", "--no-record"]),
    ("benchmarks.bench_wan", [], ["--quick", "--no-record"]),
    # After the 50 ms section, which its shares are compared with; the official client on the small files only.
    (
        "benchmarks.bench_wan",
        ["--rtt-ms", "150", "--window-mib", "32", "--repeats", "2", "--baseline-on", "small"],
        ["--quick", "--rtt-ms", "150", "--window-mib", "32", "--baseline-on", "small", "--no-record"],
    ),
    # Starts its own throwaway PostgreSQL cluster (tests.support.postgres); about 10 minutes.
    ("benchmarks.bench_fleet", [], ["--quick", "--no-record"]),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, one run each (a smoke test)")
    parser.add_argument("--only", help="comma-separated module names to run (e.g. bench_engine)")
    args = parser.parse_args(argv)
    failed = []
    for module, full, quick in PARTS:
        if args.only and module.split(".")[-1] not in args.only.split(","):
            continue
        try:
            importlib.import_module(module)
        except ImportError as exc:
            print(f"== {module}: not available ({exc}); skipped", flush=True)
            continue
        arguments = quick if args.quick else full
        print(f"\n== {module} {' '.join(arguments)}", flush=True)
        started = time.monotonic()
        code = subprocess.call([sys.executable, "-m", module, *arguments])
        print(f"== {module}: exit {code} after {time.monotonic() - started:.0f} s", flush=True)
        if code:
            failed.append(module)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

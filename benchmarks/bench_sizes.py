"""Throughput against file size, for the plot (issue 5).

    python -m benchmarks.bench_sizes [--sizes 1M,16M,128M,1G] [--repeats 3]

For each size, on loopback against the local server: upload with flowxfer
and the official flowbio client, download with flowxfer, curl and aria2c
(when installed). Writes ``benchmarks/plot.png`` (MiB/s against file size,
log scale) and the "Throughput by file size" section of RESULTS.md. Process
start-up is part of every tool's time, as a user would see it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
from pathlib import Path

from flowxfer.transfer import format_size, parse_size

from ._common import (
    FLOWXFER,
    ROOT,
    WORK,
    MiB,
    Series,
    Server,
    alternate,
    compile_sources,
    download_tools,
    emptied,
    flowxfer_home,
    login_token,
    machine_line,
    random_file,
    record_section,
    upload_tools,
)
from .bench_engine import ensure_aria2c

PLOT = ROOT / "benchmarks" / "plot.png"


def sweep(sizes: list[int], repeats: int) -> dict[str, dict[int, float]]:
    """MiB/s per tool per size (medians)."""
    rates: dict[str, dict[int, float]] = {}
    aria2c = ensure_aria2c()
    with Server(WORK / "server-sizes", "--access-ttl", "7200") as server, flowxfer_home("sizes", server) as env:
        token = login_token(server)
        for size in sizes:
            print(f"\n{format_size(size)}", flush=True)
            for name, series in _one_size(size, repeats, server, env, token, aria2c).items():
                rates.setdefault(name, {})[size] = series.rate(size)
    return rates


def _one_size(
    size: int, repeats: int, server: Server, env: dict[str, str], token: str, aria2c: str | None
) -> dict[str, Series]:
    data = random_file(WORK / "data" / f"sweep-{size}.bin", size)
    up = alternate(upload_tools([data], server.url, env), repeats, before_each=lambda _n, _r: os.sync())
    answer = subprocess.run(
        [*FLOWXFER, "--json", "--no-progress", "upload", str(data)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    data_id = json.loads(answer.stdout)["files"][0]["id"]
    url = f"{server.url}/downloads/{data_id}/{data.name}"
    out = WORK / "sweep-out"
    tools = download_tools(data_id, url, token, out, env, aria2c)
    return {**up, **alternate(tools, repeats, before_each=emptied(out))}


def plot(rates: dict[str, dict[int, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 5), dpi=120)
    styles = {
        "flowxfer upload": ("tab:blue", "-", "o"),
        "flowbio upload": ("tab:orange", "-", "s"),
        "flowxfer download": ("tab:blue", "--", "o"),
        "curl download": ("tab:green", "--", "^"),
        "aria2c -x4 download": ("tab:red", "--", "v"),
    }
    for name, by_size in rates.items():
        sizes = sorted(by_size)
        colour, line, marker = styles.get(name, ("gray", ":", "x"))
        axes.plot([s / MiB for s in sizes], [by_size[s] for s in sizes], line, color=colour, marker=marker, label=name)
    axes.set_xscale("log", base=2)
    axes.set_xlabel("file size (MiB, log scale)")
    axes.set_ylabel("throughput (MiB/s, process start-up included)")
    axes.set_title("flowxfer against the official client, curl and aria2c (loopback, 2 cores)")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    compile_sources()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1M,16M,128M,1G")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args(argv)
    sizes = [parse_size(s) for s in args.sizes.split(",")]
    rates = sweep(sizes, args.repeats)
    header = "| tool | " + " | ".join(format_size(s) for s in sizes) + " |"
    rows = [header, "|---|" + "---:|" * len(sizes)]
    for name, by_size in rates.items():
        rows.append(f"| {name} | " + " | ".join(f"{by_size[s]:.0f}" for s in sizes) + " |")
    body = "\n".join(
        [
            machine_line() + f" MiB/s, medians of {args.repeats} alternating runs, process start-up included.",
            "",
            *rows,
            "",
            "![throughput against file size](plot.png)",
            "",
            "Reproduce: `python -m benchmarks.bench_sizes`.",
        ]
    )
    print("\n" + body)
    if not args.no_record:
        plot(rates, PLOT)
        record_section("Throughput by file size (issue 5)", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Driver (not committed): flowxfer 1 GiB upload through the WAN path, this branch vs main, alternating."""
from __future__ import annotations

import sys

from benchmarks._common import MiB, alternate, measure
from benchmarks.bench_wan import _sync, prepare, served, through

MAIN = "/work/main/.venv/bin/flowxfer"
OURS = "/work/wt/wanup/.venv/bin/flowxfer"


def main() -> None:
    rtt, repeats = float(sys.argv[1]), int(sys.argv[2])
    paths = sys.argv[3].split(",")
    size = int(sys.argv[4]) if len(sys.argv) > 4 else 1024 * MiB
    data = prepare(size, 1, 1 * MiB)
    big = str(data.large)
    for label in paths:
        cap = 250.0 if label == "lossy" else 0.0
        spec = (rtt, 1000.0, cap, 16.0)
        with served("wan-direct") as (server, _direct), through(server, f"wan-{label}", spec) as (path, env):
            tools = {
                "ours": lambda _r: measure([OURS, "--no-progress", "upload", "--force", big], env=env),
                "main": lambda _r: measure([MAIN, "--no-progress", "upload", "--force", big], env=env),
            }
            import os
            only = os.environ.get("ONLY")
            if only:
                tools = {k: v for k, v in tools.items() if k in only.split(",")}
            res = alternate(tools, repeats, before_each=_sync)
            for name, s in res.items():
                secs = [round(r.seconds, 2) for r in s.runs]
                share = size / s.median / path.spec.link_rate
                print(f"{label} {name}: median {s.median:.2f} s share {share:.0%} rss {s.peak_rss:.0f} MiB runs {secs}", flush=True)


main()

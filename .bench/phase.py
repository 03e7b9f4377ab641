"""Driver (not committed): one upload through the path, with wall-clock marks to place against the server log."""
from __future__ import annotations

import datetime
import sys
import time

from benchmarks._common import MiB, measure
from benchmarks.bench_wan import prepare, served, through

OURS = "/work/wt/wanup/.venv/bin/flowxfer"
label = sys.argv[1]
data = prepare(1024 * MiB, 1, 1 * MiB)
cap = 250.0 if label == "lossy" else 0.0
with served("wan-direct") as (server, _d), through(server, f"wan-{label}", (50.0, 1000.0, cap, 16.0)) as (path, env):
    t0 = time.time()
    run = measure([OURS, "--no-progress", "upload", "--force", str(data.large)], env=env)
    t1 = time.time()
    fmt = lambda t: datetime.datetime.fromtimestamp(t).strftime("%H:%M:%S.%f")[:-3]
    print(f"start {fmt(t0)} end {fmt(t1)} took {run.seconds:.2f} rss {run.rss_mib:.0f}")

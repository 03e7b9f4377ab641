"""Where a WAN download's time goes: the link's idle spells, each connection's bytes, the requests, the exit.

For issue 20's clean 1 GiB download through ``benchmarks.wanpath`` (50 ms by
default): ``flowxfer download --force`` of a file uploaded straight to the
server, with the path tracing its downward link (``--trace-file``). Printed
per run: start to the first request the server saw, from there to the first
byte on the link, the link from its first to its last byte against the link
alone (the difference is its idle spells, listed where they are long), from
the last byte's arrival to the command's exit; each connection's first and
last byte and the requests it carried; the CPU of client, server and path.
Nothing is recorded. Run it under the benchmark lock, e.g.
``flock /work/wt/bench.lock python -m benchmarks.trace_download --rounds 2``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from pathlib import Path

from ._common import FLOWXFER, WORK, MiB, Server, emptied, random_file
from ._wan import WanProcess, served, through
from .bench_wan import upload_id
from .trace_upload import cpu_seconds, requests_since

#: What ``--strace`` shows of the client: its disk syncs, renames and end (``-ttt``: wall-clock seconds;
#: ``-T``: how long each call took).
STRACE = [
    *("strace", "-f", "-ttt", "-T", "--seccomp-bpf"),
    *("-e", "trace=fsync,fdatasync,fallocate,rename,renameat2,exit_group"),
]


def trace(
    label: str,
    data_id: str,
    size: int,
    env: dict[str, str],
    server: Server,
    path: WanProcess,
    strace: Path | None = None,
) -> str:
    """One download: its phases, the link's idle spells and the CPU of each process."""
    assert server.proc is not None and path.proc is not None
    out = WORK / "trace-download-out"
    emptied(out)("", 0)
    trace_file = path.trace_file
    assert trace_file is not None
    command = [*FLOWXFER, "--no-progress", "download", "--force", data_id, "-o", str(out)]
    if strace is not None:
        command = [*STRACE, "-o", str(strace), *command]
    server_cpu, path_cpu = cpu_seconds(server.proc.pid), cpu_seconds(path.proc.pid)
    started = time.time()
    child = subprocess.Popen(command, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    ended = time.time() - started
    server_cpu, path_cpu = cpu_seconds(server.proc.pid) - server_cpu, cpu_seconds(path.proc.pid) - path_cpu
    time.sleep(0.3)  # the access log's last line, the path's last connection closed
    seen = requests_since(Path(server.log.name), started)
    link = json.loads(trace_file.read_text())
    if status or not seen:
        return f"{label}: exit status {status}, {len(seen)} requests seen"
    rtt = path.spec.rtt
    rate = path.spec.link_rate or 1.0
    first_request = min(r.start for r in seen) - started
    mine = {n: c for n, c in link["connections"].items() if c[0] >= started - 0.01 and c[1] is not None}
    first_byte = min(c[1] for c in mine.values()) - started
    last_byte = max(c[2] for c in mine.values()) - started
    gaps = [(a - started, b - started) for a, b in link["gaps"] if a >= started + first_byte - 1e-6]
    idle = sum(b - a for a, b in gaps)
    arrived = last_byte + rtt / 2
    carried = sum(c[3] for c in mine.values())
    lines = [
        f"{label}: {ended:.3f} s = start {first_request:.3f} + to the first byte on the link "
        f"{first_byte - first_request:.3f} + link {last_byte - first_byte:.3f} (alone {size / rate:.3f}, "
        f"idle {idle:.3f} in {len(gaps)} spells of >= 2 ms) + arrival {rtt / 2:.3f} + to the exit "
        f"{ended - arrived:.3f}; CPU client {usage.ru_utime + usage.ru_stime:.2f} s, server {server_cpu:.2f} s, "
        f"path {path_cpu:.2f} s; {len(seen)} requests, {len(mine)} connections; the link carried "
        f"{(carried - size) / MiB:.1f} MiB more than the file ({(carried - size) / rate:.3f} s of it)"
    ]
    for a, b in sorted(gaps, key=lambda g: g[0] - g[1])[:8]:
        lines.append(f"    idle {1000 * (b - a):6.1f} ms from {a:.3f} s")
    for n, (accepted, first, last, nbytes) in sorted(mine.items(), key=lambda item: int(item[0])):
        lines.append(
            f"    connection {n}: accepted {accepted - started:.3f}, bytes {first - started:.3f}-{last - started:.3f}"
            f" s, {nbytes / MiB:.1f} MiB"
        )
    for r in sorted(seen, key=lambda r: r.start):
        lines.append(f"    {r.method} {r.path[:60]}: {r.start - started:.3f}-{r.end - started:.3f} s")
    if strace is not None:
        for line in strace.read_text().splitlines():
            pid, stamp, call = line.split(None, 2)
            if not call.startswith("---"):
                lines.append(f"    {float(stamp) - started:.3f} {call[:100]}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rtt-ms", type=float, default=50.0)
    p.add_argument("--connection-mbit", type=float, default=0.0, help="per-connection cap (250: the lossy path)")
    p.add_argument("--window-mib", type=float, default=16.0)
    p.add_argument("--size-mib", type=int, default=1024)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--strace", action="store_true", help="list the client's syncs, renames and exit (strace)")
    args = p.parse_args(argv)
    large = random_file(WORK / "data" / f"wan-{args.size_mib * MiB}.bin", args.size_mib * MiB)
    spec = (args.rtt_ms, 1000.0, args.connection_mbit, args.window_mib)
    trace_file = WORK / f"trace-download-{os.getpid()}.json"
    with (
        served("trace-direct") as (server, direct),
        through(server, "trace-path", spec, trace_file) as (path, env),
    ):
        data_id = upload_id(large, direct)
        for round_ in range(1, args.rounds + 1):
            subprocess.run(["sync"], check=False)
            strace = WORK / "trace-download.strace" if args.strace else None
            print(trace(f"round {round_}", data_id, large.stat().st_size, env, server, path, strace), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Where a WAN upload's time goes: one command's phases from the server's access log, and each process's CPU.

For issue 20's uploads through ``benchmarks.wanpath`` (50 ms by default): the
1 GiB file and the 16 x 64 MiB files, each ``flowxfer upload --force`` run
with ``--log-format json``. Printed per run: start to the first request the
server saw, from there to the first chunk, the chunks (first chunk's start to
the last chunk's answer, against the link alone), the finish and the exit;
the CPU seconds of the client (``wait4``), the server and the path (``/proc``).
``--timeline`` adds every request the server saw and every event the client
logged, in order; ``tiny`` (a 4 KiB file) is the upload to compare against.
``--link`` adds the upward link's own account (the path's link trace): its
first and last byte and every idle spell between them, which is exactly the
share of the link a run misses inside its data phase; with ``--timeline``,
each connection's first and last byte too. Nothing is recorded. Run it under the benchmark lock, e.g.
``flock /work/wt/bench.lock python -m benchmarks.trace_upload --rounds 2``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from ._common import FLOWXFER, GiB, MiB, Server
from ._wan import WanProcess, served, through
from .bench_wan import prepare

_TICKS = os.sysconf("SC_CLK_TCK")
#: ``2026-12-07 18:47:52,652 aiohttp.access 127.0.0.1 "POST /upload/parallel/1" 200 307 2.302``
_ACCESS = re.compile(r'^(\S+ \S+) aiohttp\.access \S+ "(\w+) (\S+)" (\d+) \S+ ([\d.]+)')


@dataclass(frozen=True)
class Request:
    start: float
    end: float
    method: str
    path: str


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a running process so far."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def requests_since(log: Path, since: float) -> list[Request]:
    """The access log's requests that ended after ``since`` (wall clock), each with its start."""
    found = []
    with open(log, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            match = _ACCESS.match(line)
            if match is None:
                continue
            end = datetime.datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            if end >= since:
                found.append(Request(end - float(match.group(5)), end, match.group(2), match.group(3)))
    return found


def timeline(seen: list[Request], events: list[str], started: float) -> list[str]:
    """Every request the server saw and every event the client logged (but progress), in order, seconds from the start.

    Requests of one kind that start within 10 ms of each other are folded into one line (16 files'
    chunks, or their first requests), with their count and the span of their ends.
    """
    rows: list[tuple[float, str]] = []
    for line in events:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and isinstance(event.get("ts"), int | float) and event.get("event") != "bytes_moved":
            rows.append((event["ts"] - started, f"client {event.get('event')}"))
    group: list[Request] = []

    def fold() -> None:
        if group:
            ends = sorted(r.end - started for r in group)
            where = f"ends {ends[0]:.3f}" + (f"-{ends[-1]:.3f}" if len(group) > 1 else "")
            first = group[0]
            rows.append((first.start - started, f"server {len(group)} x {first.method} {first.path} ({where})"))
            group.clear()

    def kind(request: Request) -> tuple[str, str]:
        return request.method, re.sub(r"\d+", "N", request.path)

    for request in sorted(seen, key=lambda r: r.start):
        if group and (kind(group[0]) != kind(request) or request.start - group[0].start > 0.01):
            fold()
        group.append(request)
    fold()
    return [f"  {at:7.3f} {what}" for at, what in sorted(rows)]


def link_spells(trace_file: Path, started: float, ended: float, show: bool = False) -> str:
    """The upward link in one run: its first and last byte, and where it idled between them (seconds from start).

    Read from the path's link trace (``wanpath --trace-file``, the upward direction):
    what the share of the link misses inside the data phase is exactly these idle spells.
    """
    try:
        data = json.loads(trace_file.read_text())
    except (OSError, ValueError):
        return "; no link trace"
    spans = [(c[1], c[2]) for c in data["connections"].values() if c[1] is not None and started <= c[1] <= ended]
    if not spans:
        return "; no link bytes"
    first, last = min(a for a, _ in spans), max(b for _, b in spans)
    gaps = [(a, b) for a, b in data["gaps"] if first <= a and b <= last]
    idle = sum(b - a for a, b in gaps)
    listed = ", ".join(f"{a - started:.3f}+{(b - a) * 1000:.0f}ms" for a, b in gaps if b - a >= 0.005)
    listed = f" ({listed})" if listed else ""
    per = sorted(
        (c[1] - started, c[2] - started, int(c[3]))
        for c in data["connections"].values()
        if c[1] is not None and started <= c[1] <= ended
    )
    if show:
        listed += "".join(f"\n    connection: first byte {a:.3f}, last {b:.3f}, {n} bytes" for a, b, n in per)
    return (
        f"; link: first byte {first - started:.3f}, last {last - started:.3f} ({last - first:.3f} s),"
        f" idle between {idle:.3f} s in {len(gaps)} gaps{listed}"
    )


def trace(
    label: str,
    files: list[Path],
    env: dict[str, str],
    server: Server,
    path: WanProcess,
    *,
    show: bool = False,
    trace_file: Path | None = None,
) -> str:
    """One upload of ``files``: its phases and the CPU of each process, as one line (``show``: and its timeline)."""
    assert server.proc is not None and path.proc is not None
    command = [*FLOWXFER, "--no-progress", "--log-format", "json", "upload", "--force", *map(str, files)]
    server_cpu, path_cpu = cpu_seconds(server.proc.pid), cpu_seconds(path.proc.pid)
    started = time.time()
    child = subprocess.Popen(
        command,
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE if show else subprocess.DEVNULL,
    )
    logged = child.stderr.read().decode(errors="replace").splitlines() if child.stderr is not None else []
    _, status, usage = os.wait4(child.pid, 0)
    ended = time.time() - started
    server_cpu, path_cpu = cpu_seconds(server.proc.pid) - server_cpu, cpu_seconds(path.proc.pid) - path_cpu
    time.sleep(0.2)  # the access log's last line
    seen = requests_since(Path(server.log.name), started)
    chunks = [r for r in seen if r.method == "POST" and re.fullmatch(r"/upload(/parallel/\d+)?", r.path)]
    if status or not chunks:
        return f"{label}: exit status {status}, {len(chunks)} chunk requests seen"
    first = min(r.start for r in seen) - started
    first_chunk = min(r.start for r in chunks) - started
    last_chunk = max(r.end for r in chunks) - started
    last = max(r.end for r in seen) - started
    size = sum(f.stat().st_size for f in files)
    alone = size / (path.spec.link_rate or 1)
    lines = "".join(f"\n{row}" for row in timeline(seen, logged, started)) if show else ""
    link = "" if trace_file is None else link_spells(trace_file, started, started + ended, show)
    return (
        f"{label}: {ended:.2f} s = start {first:.2f} + to the first chunk {first_chunk - first:.2f}"
        f" + chunks {last_chunk - first_chunk:.2f} (link alone {alone:.2f}) + finish {last - last_chunk:.2f}"
        f" + exit {ended - last:.2f}; CPU client {usage.ru_utime + usage.ru_stime:.2f} s, server"
        f" {server_cpu:.2f} s, path {path_cpu:.2f} s; {len(chunks)} chunk requests{link}{lines}"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rtt-ms", type=float, default=50.0)
    p.add_argument("--connection-mbit", type=float, default=0.0, help="per-connection cap (250: the lossy path)")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--tasks", default="upload,many", help="upload (1 GiB), many (16 x 64 MiB), tiny (4 KiB)")
    p.add_argument("--timeline", action="store_true", help="also every request and client event, in order")
    p.add_argument("--link", action="store_true", help="also the upward link's first and last byte and idle spells")
    args = p.parse_args(argv)
    data = prepare(GiB, 16, 64 * MiB)
    spec = (args.rtt_ms, 1000.0, args.connection_mbit, 16.0)
    trace_file = Path(f"/tmp/trace-upload-link-{os.getpid()}.json") if args.link else None
    if args.link:
        os.environ["WANPATH_TRACE_DIRECTION"] = "up"
    with (
        served("trace-direct") as (server, _direct),
        through(server, "trace-path", spec, trace_file) as (path, env),
    ):
        for round_ in range(1, args.rounds + 1):
            for task in args.tasks.split(","):
                files = {"upload": [data.large], "tiny": [data.probe]}.get(task, data.files)
                label = f"{task} round {round_}"
                print(trace(label, files, env, server, path, show=args.timeline, trace_file=trace_file), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

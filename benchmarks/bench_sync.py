"""Sync and bulk benchmarks (issue 4): ``python -m benchmarks.bench_sync``.

1. **Scan + plan of an unchanged run folder**: 100,000 small files in a
   run-folder-like tree, synced once with ``--pack-small``, then synced again
   (nothing changed): the re-run's wall time and the CLI process's peak RSS
   (goals: <= 10 s, <= 200 MiB). The same for 10,000 files synced one by one
   (no packing), where every file is a lookup in the journal's inventory.
2. **10,000 files of 16 KiB**: the official client's loop (``flowbio.v2``
   ``Client.data.upload_data`` per file, default configuration) against
   ``flowxfer sync`` without packing (goal >= 3x faster) and with
   ``--pack-small`` (goal >= 20x), median of ``--runs`` alternating runs, each
   into a fresh server root.

The server runs as a subprocess with rate limits off, on loopback. Peak RSS
is the measured process's own (``ru_maxrss`` of ``RUSAGE_CHILDREN`` in a
wrapper process that runs nothing else). Self-contained on purpose: it
shares no helpers with the other benchmark scripts but two, the
byte-compilation every benchmark does first and the writing of its section.
Figures go to ``benchmarks/RESULTS.md`` under ``## Sync and bulk (issue 4)``;
other sections of that file, and the notes under this one's marker, are left
as they are.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ._common import compile_sources, record_section

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "benchmarks" / "work" / "sync"
TRASH = WORK / "trash"
HEADING = "## Sync and bulk (issue 4)"
USER, PASSWORD = "bench", "bench-pw-4"
KiB = 1024
MiB = 1024 * KiB
CLI = [sys.executable, "-c", "from flowxfer.cli import run; run()"]

_MEASURE = r"""
import json, resource, subprocess, sys, time
start = time.perf_counter()
code = subprocess.call(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
seconds = time.perf_counter() - start
print(json.dumps({"code": code, "seconds": seconds,
                  "rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""

FLOWBIO_LOOP = r"""
import sys
from pathlib import Path
from flowbio.v2 import Client
from flowbio.v2.auth import UsernamePasswordCredentials
client = Client(base_url=sys.argv[1])
client.log_in(UsernamePasswordCredentials(username=sys.argv[2], password=sys.argv[3]))
for path in sorted(Path(sys.argv[4]).iterdir()):
    client.data.upload_data(path)
"""


@dataclass
class Run:
    code: int
    seconds: float
    rss_mib: float


def measure(command: Sequence[str], env: dict[str, str]) -> Run:
    """Run ``command`` in a wrapper process; its exit code, wall time and its own peak RSS."""
    out = subprocess.run(
        [sys.executable, "-c", _MEASURE, *command], env=env, capture_output=True, text=True, check=True
    )
    result = json.loads(out.stdout)
    return Run(result["code"], result["seconds"], result["rss_mib"])


class Server:
    """``flowxfer serve`` as a subprocess on a fresh root, rate limits off."""

    def __init__(self, root: Path) -> None:
        self.root = root
        discard(root)
        root.mkdir(parents=True)
        self.log = open(root.parent / f"{root.name}.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [*CLI, "serve", "--root", str(root), "--port", "0", "--user", f"{USER}:{PASSWORD}", "--rate-limits", "off"],
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("listening on "):
            self.stop()
            raise RuntimeError(f"the server did not start: {line!r}")
        self.url = line.split()[-1]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=60)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.log.close()
        discard(self.root)


def discard(root: Path) -> None:
    """Set a finished server root aside; :func:`empty_trash` deletes them all when the benchmark ends.

    On an ext4 filesystem without a journal (this machine's), a new file
    skips inodes freed in the last minutes: right after a server root of
    10,000 files was deleted, every create near it cost 0.3-0.6 ms instead of
    ~20 us, a cost of the benchmark's own clean-up that fell on whichever
    client ran next.
    """
    if root.exists():
        TRASH.mkdir(parents=True, exist_ok=True)
        root.rename(TRASH / f"{root.name}-{os.getpid()}-{len(list(TRASH.iterdir()))}")


def empty_trash() -> None:
    shutil.rmtree(TRASH, ignore_errors=True)


@contextmanager
def server(name: str) -> Iterator[Server]:
    srv = Server(WORK / name)
    try:
        yield srv
    finally:
        srv.stop()


def flowxfer_env(srv: Server, home: Path) -> dict[str, str]:
    """A fresh config dir and journal for ``srv``, logged in."""
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    env = {
        **os.environ,
        "FLOW_API_URL": srv.url,
        "FLOWXFER_CONFIG_DIR": str(home / "config"),
        "FLOWXFER_JOURNAL": str(home / "journal.db"),
    }
    subprocess.run(
        [*CLI, "login", "-u", USER, "--password-stdin"],
        input=PASSWORD + "\n",
        text=True,
        env=env,
        check=True,
        capture_output=True,
    )
    return env


def make_scan_tree(root: Path, files: int) -> Path:
    """``files`` small files laid out like BaseCalls: lanes, then cycles of 250 tiles' files each."""
    marker = root / ".complete"
    if marker.exists() and marker.read_text() == str(files):
        return root
    shutil.rmtree(root, ignore_errors=True)
    rng = random.Random(4)
    per_folder = 250
    for index in range(files):
        lane, rest = divmod(index, max(1, files // 4))
        folder = root / "Data" / "Intensities" / "BaseCalls" / f"L{lane + 1:03d}" / f"C{rest // per_folder + 1}.1"
        if rest % per_folder == 0:
            folder.mkdir(parents=True, exist_ok=True)
        (folder / f"s_{lane + 1}_{1101 + rest % per_folder}.bcl.gz").write_bytes(rng.randbytes(rng.randint(100, 2048)))
    marker.write_text(str(files))
    return root


def make_small_files(root: Path, files: int, size: int) -> Path:
    marker = root.parent / f"{root.name}.complete"
    if marker.exists() and marker.read_text() == f"{files}x{size}":
        return root
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    for index in range(files):
        (root / f"sample_{index:06d}.fastq.gz").write_bytes(os.urandom(size))
    marker.write_text(f"{files}x{size}")
    return root


def sync(env: dict[str, str], folder: Path, *args: str) -> Run:
    run = measure([*CLI, "sync", str(folder), *args], env)
    if run.code != 0:
        raise RuntimeError(f"sync {folder} {' '.join(args)} exited {run.code}")
    return run


def bench_scan(files: int, runs: int) -> tuple[list[str], dict[str, float]]:
    tree = make_scan_tree(WORK / f"scan-{files}", files)
    with server("server-scan") as srv:
        env = flowxfer_env(srv, WORK / "home-scan")
        first = sync(env, tree, "--pack-small", "64k")
        reruns = [sync(env, tree, "--pack-small", "64k") for _ in range(runs)]
    seconds = statistics.median(r.seconds for r in reruns)
    rss = max(r.rss_mib for r in reruns)
    lines = [
        f"| scan + plan, {files:,} files packed per folder, unchanged re-run | {seconds:.2f} s | {rss:.0f} MiB "
        f"| {', '.join(f'{r.seconds:.2f}' for r in reruns)} |",
        f"| first sync of the same ({files:,} files -> {files // 250} tars) | {first.seconds:.2f} s | "
        f"{first.rss_mib:.0f} MiB | 1 run |",
    ]
    return lines, {"scan_seconds": seconds, "scan_rss": rss}


def bench_scan_singles(files: int, runs: int) -> tuple[list[str], dict[str, float]]:
    """The unchanged re-run when every file was uploaded on its own (a journal lookup per file)."""
    tree = make_scan_tree(WORK / f"scan-{files}", files)
    with server("server-singles") as srv:
        env = flowxfer_env(srv, WORK / "home-singles")
        first = sync(env, tree, "--name-from-path", "--concurrency", "8")
        reruns = [sync(env, tree, "--name-from-path") for _ in range(runs)]
    seconds = statistics.median(r.seconds for r in reruns)
    rss = max(r.rss_mib for r in reruns)
    lines = [
        f"| scan + plan, {files:,} files uploaded one by one, unchanged re-run | {seconds:.2f} s | {rss:.0f} MiB "
        f"| {', '.join(f'{r.seconds:.2f}' for r in reruns)} |",
        f"| first sync of the same ({files:,} uploads) | {first.seconds:.2f} s | {first.rss_mib:.0f} MiB | 1 run |",
    ]
    return lines, {"singles_seconds": seconds, "singles_rss": rss}


def bench_small(files: int, size: int, runs: int, skip_flowbio: bool) -> tuple[list[str], dict[str, float]]:
    folder = make_small_files(WORK / f"small-{files}", files, size)
    times: dict[str, list[float]] = {"flowbio": [], "sync": [], "pack": []}
    rss: dict[str, float] = {}
    rerun: Run | None = None
    for index in range(runs):
        if not skip_flowbio:
            with server("server-small") as srv:
                run = measure(
                    [sys.executable, "-c", FLOWBIO_LOOP, srv.url, USER, PASSWORD, str(folder)], dict(os.environ)
                )
                if run.code != 0:
                    raise RuntimeError(f"the flowbio loop exited {run.code}")
                times["flowbio"].append(run.seconds)
                rss["flowbio"] = max(rss.get("flowbio", 0.0), run.rss_mib)
        with server("server-small") as srv:
            env = flowxfer_env(srv, WORK / "home-small")
            run = sync(env, folder)
            times["sync"].append(run.seconds)
            rss["sync"] = max(rss.get("sync", 0.0), run.rss_mib)
            if index == 0:
                rerun = sync(env, folder)
        with server("server-small") as srv:
            env = flowxfer_env(srv, WORK / "home-small")
            run = sync(env, folder, "--pack-small", "64k")
            times["pack"].append(run.seconds)
            rss["pack"] = max(rss.get("pack", 0.0), run.rss_mib)
        print(f"  run {index + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items() if v), flush=True)
    med = {k: statistics.median(v) for k, v in times.items() if v}
    label = f"{files:,} files of {size // KiB} KiB"
    lines = []
    if "flowbio" in med:
        lines.append(
            f"| upload {label}: flowbio v2 loop (default config) | {med['flowbio']:.2f} s | "
            f"{rss['flowbio']:.0f} MiB | {', '.join(f'{t:.2f}' for t in times['flowbio'])} |"
        )
    lines.append(
        f"| upload {label}: `flowxfer sync` (one upload per file) | {med['sync']:.2f} s | "
        f"{rss['sync']:.0f} MiB | {', '.join(f'{t:.2f}' for t in times['sync'])} |"
    )
    lines.append(
        f"| upload {label}: `flowxfer sync --pack-small 64k` | {med['pack']:.2f} s | "
        f"{rss['pack']:.0f} MiB | {', '.join(f'{t:.2f}' for t in times['pack'])} |"
    )
    if rerun is not None:
        lines.append(
            f"| scan + plan, {files:,} files uploaded one by one, unchanged re-run | {rerun.seconds:.2f} s "
            f"| {rerun.rss_mib:.0f} MiB | 1 run |"
        )
    figures = {f"{k}_seconds": v for k, v in med.items()}
    if "flowbio" in med:
        figures["speedup_sync"] = med["flowbio"] / med["sync"]
        figures["speedup_pack"] = med["flowbio"] / med["pack"]
    return lines, figures


def _verdict(figure: float, goal: float) -> str:
    """Met or missed, judged on the unrounded figure (19.97x printed as "20x" once read as met)."""
    return "met" if figure >= goal else "missed"


def main(argv: Sequence[str] | None = None) -> None:
    compile_sources()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scan-files", type=int, default=100_000)
    parser.add_argument(
        "--scan-singles",
        type=int,
        default=0,
        help="Also time the re-run of this many files uploaded one by one (the first sync "
        "uploads each: minutes for 100,000).",
    )
    parser.add_argument("--small-files", type=int, default=10_000)
    parser.add_argument("--small-size", type=int, default=16 * KiB)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--skip-flowbio", action="store_true", help="Leave out the official client (slow).")
    parser.add_argument("--no-record", action="store_true", help="Print only; do not touch RESULTS.md.")
    args = parser.parse_args(argv)
    WORK.mkdir(parents=True, exist_ok=True)
    try:
        measure_all(args)
    finally:
        empty_trash()


def measure_all(args: argparse.Namespace) -> None:
    print(f"scan + plan of {args.scan_files:,} files ...", flush=True)
    scan_lines, scan = bench_scan(args.scan_files, args.runs)
    print("\n".join(scan_lines), flush=True)
    if args.scan_singles:
        print(f"scan + plan of {args.scan_singles:,} files uploaded one by one ...", flush=True)
        singles_lines, singles = bench_scan_singles(args.scan_singles, args.runs)
        scan_lines += singles_lines
        print("\n".join(singles_lines), flush=True)
    print(f"{args.small_files:,} files of {args.small_size} bytes ...", flush=True)
    small_lines, small = bench_small(args.small_files, args.small_size, args.runs, args.skip_flowbio)
    print("\n".join(small_lines), flush=True)
    verdicts = [
        f"- Unchanged re-run of {args.scan_files:,} files: **{scan['scan_seconds']:.2f} s**, peak RSS "
        f"**{scan['scan_rss']:.0f} MiB** (goals <= 10 s, <= 200 MiB).",
    ]
    if args.scan_singles:
        verdicts.append(
            f"- Unchanged re-run of {args.scan_singles:,} files uploaded one by one: "
            f"**{singles['singles_seconds']:.2f} s**, peak RSS **{singles['singles_rss']:.0f} MiB**."
        )
    if "speedup_sync" in small:
        verdicts.append(
            f"- {args.small_files:,} small files, flowxfer sync vs the flowbio loop: "
            f"**{small['speedup_sync']:.2f}x** faster (goal >= 3x: {_verdict(small['speedup_sync'], 3)}); "
            f"with `--pack-small`: **{small['speedup_pack']:.2f}x** "
            f"(goal >= 20x: {_verdict(small['speedup_pack'], 20)})."
        )
    cpus = os.cpu_count()
    body = "\n".join(
        [
            f"Loopback, server subprocess with rate limits off, median of {args.runs} runs (each upload into a fresh "
            f"server root and journal); {cpus} cores, Python {platform.python_version()}, {platform.machine()}. "
            "Produced by `python -m benchmarks.bench_sync`. Peak RSS is the measured process's own.",
            "",
            "| what | median | peak RSS | runs (s) |",
            "|---|---:|---:|---|",
            *scan_lines,
            *small_lines,
            "",
            *verdicts,
        ]
    )
    print(body)
    if not args.no_record:
        record_section(HEADING.removeprefix("## "), body)


if __name__ == "__main__":
    main()

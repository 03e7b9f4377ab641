"""Load: many client processes against one server with rate limits on (issue 6).

    python -m benchmarks.bench_load [--clients 20] [--files 50] [--users 4] [--rate-limits SPEC]

Every client is the real CLI in its own process with its own journal: it
logs in, uploads its ``--files`` files (16 KiB to 2 MiB, random bytes) and
downloads them back. Clients share a few users, so several processes spend
one user's budget without knowing of each other and meet the server's 429s,
which they must handle (wait for ``Retry-After``, go on). Checked: every
command exits 0, every downloaded file is exactly its source, the server
answered nothing but successes and the documented 429s (no 5xx, no
traceback in its log), and its memory (RSS, sampled every 0.1 s with
psutil) stays bounded. Reported: requests/s and MiB/s (both directions)
held over the run, 429s met, peak server RSS; written to the
"Load (issue 6)" section of ``benchmarks/RESULTS.md``.

``tests/load/test_load.py`` runs the same code small (CI).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

MiB = 1024 * 1024
KiB = 1024
#: The command every client runs (the CLI of this interpreter's environment).
FLOWXFER = [sys.executable, "-c", "from flowxfer.cli import run; run()"]
#: Generous enough to finish, tight enough that the clients sharing a user meet 429s.
DEFAULT_LIMITS = "api=3000/20s,upload=120/10s,download=600/10s,search=300/10s"
_ACCESS = re.compile(r'"([A-Z]+) (\S+)" (\d{3}) ')
#: What a healthy run may answer: successes and the documented rate-limit refusal.
ALLOWED_STATUSES = {200, 201, 202, 206, 429}


@dataclass
class LoadResult:
    clients: int
    files_per_client: int
    users: int
    rate_limits: str
    seconds: float
    files: int
    bytes_up: int
    bytes_down: int
    requests: int
    statuses: dict[int, int]
    server_rss_start_mib: float
    server_rss_peak_mib: float
    failures: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)

    @property
    def requests_per_second(self) -> float:
        return self.requests / self.seconds

    @property
    def mib_per_second(self) -> float:
        return (self.bytes_up + self.bytes_down) / MiB / self.seconds

    @property
    def rate_limited(self) -> int:
        return self.statuses.get(429, 0)

    @property
    def unexpected_statuses(self) -> dict[int, int]:
        return {s: n for s, n in self.statuses.items() if s not in ALLOWED_STATUSES}


class _RssWatch(threading.Thread):
    """Samples a process's resident memory until stopped; keeps the peak."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.process = psutil.Process(pid)
        self.interval = interval
        self.peak = 0
        self.start_rss = self.process.memory_info().rss
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(self.interval):
            try:
                self.peak = max(self.peak, self.process.memory_info().rss)
            except psutil.Error:
                return

    def stop(self) -> None:
        self._done.set()
        self.join()


def _write_files(folder: Path, count: int, seed: int, sizes: tuple[int, int]) -> dict[str, str]:
    """``count`` files of random bytes; their sha256 by name."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    digests = {}
    for index in range(count):
        size = rng.randint(*sizes) if index else sizes[1]  # every client has one file of the largest size
        data = rng.randbytes(size)
        name = f"c{seed:03d}_sample_{index:03d}.fastq.gz"
        (folder / name).write_bytes(data)
        digests[name] = hashlib.sha256(data).hexdigest()
    return digests


def _run_client(
    index: int, url: str, user: str, password: str, home: Path, digests: dict[str, str], extra: list[str]
) -> tuple[list[str], list[str], int]:
    """One client's whole life: log in, upload, download back, compare. (failures, mismatches, bytes)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLOW_", "FLOWXFER_"))}
    env.update(
        {
            "FLOW_API_URL": url,
            "FLOWXFER_CONFIG_DIR": str(home / "config"),
            "FLOWXFER_JOURNAL": str(home / "journal.db"),
            "XDG_STATE_HOME": str(home / "state"),
        }
    )
    failures: list[str] = []

    def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [*FLOWXFER, *args], input=stdin, capture_output=True, text=True, env=env, check=False, timeout=1800
        )
        if done.returncode != 0 or "Traceback" in done.stderr:
            failures.append(f"client {index}: {' '.join(args[:3])} exited {done.returncode}: {done.stderr[-500:]}")
        return done

    run("login", "-u", user, "--password-stdin", stdin=password + "\n")
    up = run("--json", "upload", str(home / "src"), *extra)
    if up.returncode != 0:
        return failures, [], 0
    ids = [f["id"] for f in json.loads(up.stdout)["files"]]
    run("--json", "download", *ids, "-o", str(home / "out"), *extra)
    mismatched = []
    moved = 0
    for name, digest in digests.items():
        path = home / "out" / name
        data = path.read_bytes() if path.exists() else b""
        moved += len(data)
        if hashlib.sha256(data).hexdigest() != digest:
            mismatched.append(f"client {index}: {name}")
    return failures, mismatched, moved


def run_load(
    work: Path,
    *,
    clients: int = 20,
    files: int = 50,
    users: int = 4,
    rate_limits: str = DEFAULT_LIMITS,
    sizes: tuple[int, int] = (16 * KiB, 2 * MiB),
    client_args: tuple[str, ...] = (),
) -> LoadResult:
    """Run the load once in ``work`` (emptied first) and return what was measured."""
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    accounts = [(f"lab{u}", f"lab{u}-password-{u}") for u in range(users)]
    homes = [work / f"client{i:02d}" for i in range(clients)]
    digests = [_write_files(home / "src", files, i, sizes) for i, home in enumerate(homes)]
    payload = sum((home / "src" / name).stat().st_size for home, d in zip(homes, digests, strict=True) for name in d)

    command = [*FLOWXFER, "serve", "--root", str(work / "root"), "--port", "0", "--rate-limits", rate_limits]
    for name, password in accounts:
        command += ["--user", f"{name}:{password}"]
    log_path = work / "server.log"
    with open(log_path, "w") as log:
        server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        assert server.stdout is not None
        line = server.stdout.readline().strip()
        if not line.startswith("listening on "):
            raise RuntimeError(f"server did not start: {line!r}\n{log_path.read_text()[-2000:]}")
        url = line.split()[-1]
        watch = _RssWatch(server.pid)
        watch.start()
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=clients) as pool:
            futures = [
                pool.submit(_run_client, i, url, *accounts[i % users], home, digests[i], list(client_args))
                for i, home in enumerate(homes)
            ]
            outcomes = [f.result() for f in futures]
        seconds = time.monotonic() - started
        watch.stop()
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(30)
        if server.stdout is not None:
            server.stdout.close()
    log_text = log_path.read_text(errors="replace")
    statuses = Counter(int(m.group(3)) for m in _ACCESS.finditer(log_text))
    failures = [f for outcome in outcomes for f in outcome[0]]
    if "Traceback" in log_text or "internal error" in log_text:
        failures.append("the server logged a traceback")
    return LoadResult(
        clients=clients,
        files_per_client=files,
        users=users,
        rate_limits=rate_limits,
        seconds=seconds,
        files=clients * files,
        bytes_up=payload,
        bytes_down=sum(o[2] for o in outcomes),
        requests=sum(statuses.values()),
        statuses=dict(sorted(statuses.items())),
        server_rss_start_mib=watch.start_rss / MiB,
        server_rss_peak_mib=watch.peak / MiB,
        failures=failures,
        mismatched=[m for outcome in outcomes for m in outcome[1]],
    )


def report(result: LoadResult) -> str:
    ok = not result.failures and not result.mismatched and not result.unexpected_statuses
    return "\n".join(
        [
            f"{result.clients} client processes x {result.files_per_client} files (16 KiB-2 MiB, "
            f"{result.bytes_up / MiB:.0f} MiB up and the same back down), {result.users} users sharing them, "
            f"rate limits `{result.rate_limits}`; each client: `login`, `upload` its folder, `download` it back.",
            "",
            "| figure | value |",
            "|---|---|",
            f"| wall time | {result.seconds:.1f} s |",
            f"| requests answered | {result.requests} ({result.requests_per_second:.0f}/s held) |",
            f"| bytes moved | {(result.bytes_up + result.bytes_down) / MiB:.0f} MiB "
            f"({result.mib_per_second:.1f} MiB/s held, both directions) |",
            f"| 429s met and handled | {result.rate_limited} |",
            f"| statuses | {', '.join(f'{s}: {n}' for s, n in result.statuses.items())} |",
            f"| commands failed / files not exact | {len(result.failures)} / {len(result.mismatched)} |",
            f"| server RSS | {result.server_rss_start_mib:.0f} MiB at start, "
            f"{result.server_rss_peak_mib:.0f} MiB peak |",
            f"| verdict | {'held: every file exact, only documented 429s' if ok else 'FAILED'} |",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--files", type=int, default=50)
    parser.add_argument("--users", type=int, default=4)
    parser.add_argument("--rate-limits", default=DEFAULT_LIMITS)
    parser.add_argument("--no-record", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args(argv)
    from ._common import WORK, compile_sources, machine_line, record_section

    compile_sources()

    result = run_load(
        WORK / "load", clients=args.clients, files=args.files, users=args.users, rate_limits=args.rate_limits
    )
    text = report(result)
    print(text)
    print(
        json.dumps(
            {
                **asdict(result),
                "requests_per_second": result.requests_per_second,
                "mib_per_second": result.mib_per_second,
            },
            indent=1,
        )
    )
    if not args.no_record:
        record_section("Load (issue 6)", f"`python -m benchmarks.bench_load` -- {machine_line()}\n\n{text}")
    failed = result.failures or result.mismatched or result.unexpected_statuses
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""Shared helpers for the benchmark scripts: a server subprocess, test data, timing, peak RSS.

Benchmarks are scripts, not tests: they print and record figures, never
assert wall-clock speed. Everything runs on loopback against the local
server started as a real subprocess, with rate limits off, its root on disk
under ``benchmarks/work`` (git-ignored). Runs of the tools being compared
alternate (A B A B ...) so that disk cache and CPU frequency drift hit each
tool alike, and the median of the runs is reported.
"""

from __future__ import annotations

import compileall
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "benchmarks" / "work"
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
MiB = 1024 * 1024
GiB = 1024 * MiB

USER, PASSWORD = "bench", "bench-password-1"

#: How every child process runs the CLI: the console script beside this interpreter.
_SCRIPT = Path(sys.executable).with_name("flowxfer")
FLOWXFER = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-c", "from flowxfer.cli import run; run()"]

#: The official client uploading the files named after its URL, user and password (flowbio v2, default config).
FLOWBIO_UPLOAD = """
import sys
from pathlib import Path
from flowbio.v2 import Client, UsernamePasswordCredentials
client = Client(base_url=sys.argv[1])
client.log_in(UsernamePasswordCredentials(username=sys.argv[2], password=sys.argv[3]))
for name in sys.argv[4:]:
    client.data.upload_data(Path(name))
"""

# A wrapper that runs one command and reports its exit code, wall time and peak RSS:
# ru_maxrss of RUSAGE_CHILDREN in a fresh process is exactly that one child's peak.
_MEASURE = r"""
import json, os, resource, subprocess, sys, time
quiet = os.environ.pop("BENCH_QUIET", "") == "1"
started = time.time()
start = time.perf_counter()
out = subprocess.DEVNULL if quiet else None
code = subprocess.call(sys.argv[1:], stdout=out, stderr=out)
seconds = time.perf_counter() - start
rss_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"code": code, "seconds": seconds, "rss_mib": rss_kib / 1024, "started": started}), file=sys.stderr)
"""


@dataclass
class Run:
    code: int
    seconds: float
    rss_mib: float
    #: When the command started, wall-clock (``time.time()``; 0.0: not known).
    started: float = 0.0


def measure(
    command: Sequence[str], *, env: dict[str, str] | None = None, quiet: bool = True, cwd: Path | None = None
) -> Run:
    """Run ``command`` once; its exit code, wall time and peak RSS (MiB)."""
    environment = {**os.environ, **(env or {})}
    if quiet:
        environment["BENCH_QUIET"] = "1"
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, *command],
        env=environment,
        cwd=cwd,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
    )
    last = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "{}"
    try:
        figures = json.loads(last)
    except ValueError:
        raise RuntimeError(f"measuring {command[:3]} failed: {done.stderr[-2000:]}") from None
    return Run(figures["code"], figures["seconds"], figures["rss_mib"], figures.get("started", 0.0))


@dataclass
class Series:
    """Repeated runs of one tool on one task."""

    name: str
    runs: list[Run] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(r.seconds for r in self.runs)

    @property
    def peak_rss(self) -> float:
        return max(r.rss_mib for r in self.runs)

    def rate(self, nbytes: int) -> float:
        return nbytes / self.median / MiB


def round_plan(names: Sequence[str], repeats: int, rounds: dict[str, int] | None = None) -> list[list[str]]:
    """Which tools run in each round, in order: every tool, except that one named in ``rounds`` runs
    only in the first ``rounds[name]`` rounds (the official client's runs of 75-200 s each, where
    one round of it next to three of the others fits a run in the time a recording has).
    """
    limit = rounds or {}
    return [[name for name in names if round_ < limit.get(name, repeats)] for round_ in range(repeats)]


def alternate(
    tools: dict[str, Callable[[int], Run]],
    repeats: int,
    *,
    before_each: Callable[[str, int], None] | None = None,
    rounds: dict[str, int] | None = None,
) -> dict[str, Series]:
    """Run each tool ``repeats`` times (or ``rounds[name]``), alternating between tools; failures raise."""
    series = {name: Series(name) for name in tools}
    for round_, names in enumerate(round_plan(list(tools), repeats, rounds)):
        for name in names:
            if before_each is not None:
                before_each(name, round_)
            result = tools[name](round_)
            if result.code != 0:
                raise RuntimeError(f"{name} failed (exit {result.code}) in round {round_}")
            series[name].runs.append(result)
            print(
                f"  {name:<28} round {round_ + 1}: {result.seconds:7.2f} s  peak RSS {result.rss_mib:6.1f} MiB",
                flush=True,
            )
    return series


def random_file(path: Path, size: int, seed: int = 0) -> Path:
    """Incompressible test data, written once and reused while its size matches."""
    if path.exists() and path.stat().st_size == size:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    block = os.urandom(4 * MiB) if seed == 0 else bytes((i * 131 + seed) & 0xFF for i in range(4 * MiB))
    with open(path, "wb") as handle:
        remaining = size
        while remaining:
            piece = block[: min(remaining, len(block))]
            handle.write(piece)
            remaining -= len(piece)
            block = block[1:] + block[:1]  # rotate so blocks differ
    return path


def drop_file_from_cache(path: Path) -> None:
    """Ask the kernel to forget a file's cached pages (fairness between runs; best effort)."""
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    except OSError:
        pass


#: A line of the server's access log: ``127.0.0.1 "POST /upload" 200 ...``.
ACCESS_LINE = re.compile(r'"[A-Z]+ /\S*" \d{3} ')


class Server:
    """``flowxfer serve`` as a subprocess with one user and rate limits off."""

    def __init__(self, root: Path, *extra: str) -> None:
        self.root = root
        self.extra = list(extra)
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""

    def __enter__(self) -> Server:
        if self.root.exists():
            shutil.rmtree(self.root)
        self.root.parent.mkdir(parents=True, exist_ok=True)
        command = [
            *FLOWXFER,
            "serve",
            "--root",
            str(self.root),
            "--port",
            "0",
            "--user",
            f"{USER}:{PASSWORD}",
            "--rate-limits",
            "off",
            *self.extra,
        ]
        self.log = open(self.root.parent / f"{self.root.name}.log", "w")  # noqa: SIM115
        self.proc, self.url = start_listening(command, self.log)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            stop(self.proc)
        self.log.close()

    def requests(self) -> int:
        """How many requests the server has answered so far (its access log's lines)."""
        with open(self.log.name, encoding="utf-8", errors="replace") as handle:
            return sum(1 for line in handle if ACCESS_LINE.search(line))


def start_listening(command: Sequence[str], stderr: IO[str] | int) -> tuple[subprocess.Popen[str], str]:
    """Start a child that prints ``listening on URL`` once it accepts connections; the child and its URL.

    :raises RuntimeError: if its first line says anything else (it is killed).
    """
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line.startswith("listening on "):
        stop(proc)
        raise RuntimeError(f"{' '.join(command[:4])} did not start: {line!r}")
    return proc, line.split()[-1]


def stop(proc: subprocess.Popen[str]) -> None:
    """End a child started by :func:`start_listening`: SIGTERM, then SIGKILL after 30 s."""
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


class Endpoint(Protocol):
    """Where clients connect: the server itself, or a path in front of it (benchmarks.wanpath)."""

    url: str


@contextmanager
def flowxfer_home(name: str, server: Endpoint) -> Iterator[dict[str, str]]:
    """Environment for CLI runs: their own config dir and journal, logged in to ``server``."""
    home = WORK / name
    if home.exists():
        shutil.rmtree(home)
    home.mkdir(parents=True)
    env = {
        "FLOW_API_URL": server.url,
        "FLOWXFER_CONFIG_DIR": str(home / "config"),
        "FLOWXFER_JOURNAL": str(home / "journal.db"),
    }
    subprocess.run(
        [*FLOWXFER, "login", "-u", USER, "--password-stdin"],
        input=PASSWORD + "\n",
        text=True,
        env={**os.environ, **env},
        check=True,
        stdout=subprocess.DEVNULL,
    )
    yield env


def login_token(server: Endpoint) -> str:
    import urllib.request

    request = urllib.request.Request(
        f"{server.url}/login",
        data=json.dumps({"username": USER, "password": PASSWORD}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request) as answer:  # noqa: S310 - loopback only
        return str(json.loads(answer.read())["token"])


def upload_tools(files: Sequence[Path], url: str, env: dict[str, str]) -> dict[str, Callable[[int], Run]]:
    """``flowxfer upload --force`` and the official client uploading ``files`` (to ``url`` for flowbio)."""
    names = [str(f) for f in files]
    return {
        "flowxfer upload": lambda _r: measure([*FLOWXFER, "--no-progress", "upload", "--force", *names], env=env),
        "flowbio upload": lambda _r: measure([sys.executable, "-c", FLOWBIO_UPLOAD, url, USER, PASSWORD, *names]),
    }


def download_tools(
    data_id: str, url: str, token: str, out: Path, env: dict[str, str], aria2c: str | None
) -> dict[str, Callable[[int], Run]]:
    """flowxfer, curl and (when installed) ``aria2c -x4`` downloading one file into ``out``.

    :param url: the file's ``/downloads/...`` address as curl and aria2c fetch it.
    """
    name = url.rsplit("/", 1)[-1]
    tools: dict[str, Callable[[int], Run]] = {
        "flowxfer download": lambda _r: measure(
            [*FLOWXFER, "--no-progress", "download", "--force", data_id, "-o", str(out)], env=env
        ),
        "curl download": lambda _r: measure(
            ["curl", "-sS", "--fail", "-o", str(out / name), "-H", f"Authorization: Bearer {token}", url]
        ),
    }
    if aria2c:
        tools["aria2c -x4 download"] = lambda _r: measure(
            [
                aria2c,
                "-q",
                "-x4",
                "-s4",
                "--allow-overwrite=true",
                "--auto-file-renaming=false",
                f"--header=Authorization: Bearer {token}",
                "-d",
                str(out),
                "-o",
                name,
                url,
            ]
        )
    return tools


def emptied(out: Path) -> Callable[[str, int], None]:
    """A ``before_each`` for downloads into ``out``: start each run with it empty and the disks synced."""

    def clear(_name: str, _round: int) -> None:
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        os.sync()

    return clear


def compile_sources() -> None:
    """Byte-compile flowxfer's own modules, as installing a wheel does, before anything is timed.

    An editable install leaves our sources uncompiled, and where
    ``PYTHONDONTWRITEBYTECODE`` is set (as on the benchmark machine) nothing
    ever writes the ``.pyc`` files, so every CLI start compiled all of them
    again: about 100 ms per invocation that an installed flowxfer never pays,
    while the tools we compare against (flowbio in site-packages, curl,
    aria2c) start precompiled.
    """
    for package in ("flowxfer", "transfer", "journal", "cli", "server"):
        compileall.compile_dir(ROOT / package, quiet=1)


#: In a section of RESULTS.md, what follows this line was written by people (how the figures
#: came about, what was tried) and is kept when a script records the section again.
NOTES_MARKER = "<!-- notes: kept when the figures above are recorded again -->"


def record_section(heading: str, body: str) -> None:
    """Replace (or add) one ``## heading`` section of RESULTS.md, leaving the others alone.

    The section's notes (from :data:`NOTES_MARKER` to the next section) stay:
    a re-run used to drop every word written about the figures it replaced.
    """
    text = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else "# Benchmark results\n"
    marker = f"## {heading}"
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == marker), None)
    block = [marker, "", *body.strip("\n").splitlines(), ""]
    if start is None:
        lines += ["", *block]
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        notes = next((i for i in range(start + 1, end) if lines[i].strip() == NOTES_MARKER), end)
        lines[start:end] = [*block, *lines[notes:end]]
    # Written aside and renamed over: a failed write (a full disk) leaves the old file whole.
    fresh = RESULTS.with_name(RESULTS.name + ".new")
    fresh.write_text("\n".join(lines).rstrip("\n") + "\n", encoding="utf-8")
    os.replace(fresh, RESULTS)


def machine_line() -> str:
    cpus = os.cpu_count()
    return f"Machine: {cpus} cores, Python {sys.version.split()[0]}, loopback, {time.strftime('%Y-%m-%d')}."

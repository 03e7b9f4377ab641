"""Fleet benchmarks (issue 21): many hosts on one PostgreSQL journal.

    python -m benchmarks.bench_fleet [--runs 30] [--fastq-size 24M] [--repeats 3] [--rtt-ms 50] [--link-mbit 300]
    python -m benchmarks.bench_fleet --quick        # small sizes, one round, RESULTS.md left alone

Three measurements, each against a throwaway PostgreSQL cluster
(``tests.support.postgres``, on loopback, with a lab's durable settings) and the local server (a
subprocess, rate limits off):

1. **Fleet against one host**: ``--runs`` run folders (one sample each: two
   FASTQs of about ``--fastq-size``, plus the run's small files packed), each
   synced with ``flowxfer sync RUN --samples`` by hosts passing over all the
   runs as cron would (``tests.support.fleet``); one host, or three with
   distinct ``FLOWXFER_HOST_ID``. Every host reaches the server through its
   share of a WAN path (``benchmarks.wanpath``: ``--link-mbit`` per host,
   ``--rtt-ms``), as ingest hosts each have their own uplink: one path of
   ``hosts x --link-mbit``, since the hosts must all name one server URL. Alternating rounds, each on a
   fresh server and database; medians. Goal: the fleet >= 2.5x one host.
   Runs are about 48 MiB (two 24 MiB FASTQs) so that one host is bound by its
   link (~36 MiB/s), as a real core's is, rather than by per-run overhead:
   with 12 MiB runs a visit's fixed costs (start-up, leases, the catalog)
   weighed as much as the bytes and the comparison measured those instead.
2. **The journal's cost per chunk**: the engine's batched writes (a batch of
   chunks acknowledged, their file's progress, one transaction) committed
   to a SQLite file and to PostgreSQL, per chunk, at several batch sizes,
   the two alternating (``--chunk-repeats`` rounds, medians). Each backend
   with its production settings: SQLite's WAL with ``synchronous=NORMAL``
   (a commit is not flushed; a checkpoint is), PostgreSQL with fsync on
   (the cluster's ``DURABLE`` settings) and the journal's batches committed
   without waiting for their WAL flush (``synchronous_commit`` off for that
   transaction only): the same durability, so neither is flattered.
   Beside these fixed batch sizes, the batches the engine really makes: a real
   ``flowxfer upload`` of ``--engine-files`` files over one host's WAN path (as
   in 1), once with each journal, alternating, each commit timed inside the CLI
   (``Journal.commit``): chunks per commit as they came, and per chunk
   acknowledged (all commits counted, those without a chunk included) the
   committing thread's CPU, the goal's measure there (what the journal costs the
   host: no chunk waits for a commit, the engine commits beside the transfer),
   and the commits' wall clock (round trips to the database included), with the
   flushes the upload did wait for (a file's start, the run's end) beside them.
   Goal: PostgreSQL within 2x SQLite.
3. **Unchanged re-run**: ``sync`` of ``--rerun-files`` small files uploaded
   one by one, run again with nothing changed, journal on PostgreSQL (and on
   SQLite for comparison). Goal: <= 5 s.

Figures go to stdout and to the "Fleet (issue 21)" section of
benchmarks/RESULTS.md, with the machine's load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from flowxfer.journal import ChunkState, Journal, JournalBatch, NewFile
from flowxfer.transfer._sizes import parse_size
from tests.support.fleet import make_runs
from tests.support.postgres import DURABLE, PostgresCluster

from . import bench_sync
from ._common import (
    WORK,
    MiB,
    Run,
    Server,
    alternate,
    compile_sources,
    flowxfer_home,
    machine_line,
    random_file,
    record_section,
)
from .bench_wan import WanProcess

ROOT = Path(__file__).resolve().parent.parent
SYNC = ["sync", "{run}", "--samples", "--sample-type", "RNA-Seq", "--metadata", "strandedness=reverse"]
SYNC += ["--pack-small", "1M"]
#: Chunks per journal measurement, and the batch sizes: 1 (a slow link: a chunk per flush), up to
#: the engine's ``journal_flush_events`` (512, a fast link's batch).
CHUNKS = 4096
BATCHES = (1, 16, 128, 512)


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.1f} (1 min), {five:.1f} (5 min)"


# --- 1. the fleet against one host ------------------------------------------------------


@contextmanager
def fleet(hosts: int, runs: list[Path], journal: str, wan: tuple[float, float]) -> Iterator[Callable[[], Run]]:
    """A fresh server, one WAN path and one logged-in home per host; yields the timed sync of all runs."""
    rtt_ms, link_mbit = wan
    with ExitStack() as stack:
        server = stack.enter_context(Server(WORK / "server-fleet", "--access-ttl", "7200"))
        envs = []
        # One path of ``hosts`` links' capacity, shared: the journal knows a server by its URL, so hosts
        # each behind a proxy port of their own would be hosts of different servers to it (no shared
        # inventory: each sent every run). Real ingest hosts all name the same Flow URL.
        path = stack.enter_context(WanProcess(server.url, rtt_ms, link_mbit * hosts, 0.0, 16.0))
        for number in range(hosts):
            home = stack.enter_context(flowxfer_home(f"fleet-host{number}", path))
            envs.append(
                {
                    **os.environ,
                    **home,
                    "FLOWXFER_JOURNAL": journal,
                    "FLOWXFER_HOST_ID": f"host{number}",
                    "PYTHONPATH": str(ROOT),
                }
            )
        command = [sys.executable, "-m", "tests.support.fleet", *map(str, runs), "--", "--no-progress", *SYNC]

        def run() -> Run:
            started = time.perf_counter()
            procs = [subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, cwd=ROOT) for env in envs]
            codes = [proc.wait() for proc in procs]
            return Run(max(codes), time.perf_counter() - started, 0.0)

        yield run


def bench_fleet(
    runs: list[Path], cluster: PostgresCluster, repeats: int, wan: tuple[float, float]
) -> tuple[list[str], float]:
    nbytes = sum(f.stat().st_size for run in runs for f in run.rglob("*") if f.is_file())

    def rounds(hosts: int) -> Callable[[int], Run]:
        def one(_round: int) -> Run:
            with fleet(hosts, runs, cluster.new_database(), wan) as run:
                return run()

        return one

    print(f"\n{len(runs)} runs, {nbytes / MiB:.0f} MiB: 1 host against 3 (median of {repeats}, alternating)")
    series = alternate({"1 host": rounds(1), "3 hosts": rounds(3)}, repeats, before_each=lambda _n, _r: os.sync())
    one, three = series["1 host"], series["3 hosts"]
    speedup = one.median / three.median
    rows = [
        f"| {name} | {s.median:.2f} s | {nbytes / s.median / MiB:.1f} MiB/s | "
        f"{', '.join(f'{r.seconds:.2f}' for r in s.runs)} |"
        for name, s in series.items()
    ]
    lines = [
        f"Fleet against one host: {len(runs)} runs of one sample each ({nbytes / MiB:.0f} MiB in all: two FASTQs "
        f"and the run's small files packed), `sync RUN --samples` per run as cron would; each host through its "
        f"share of one `benchmarks/wanpath.py` path ({wan[0]:g} ms RTT, {wan[1]:g} Mbit/s a host); "
        "one PostgreSQL journal; "
        f"a fresh server and database per round; medians of {repeats} alternating rounds.",
        "",
        "| hosts | median time | throughput | rounds |",
        "|---|---|---|---|",
        *rows,
        "",
        f"- the fleet: **{speedup:.2f}×** one host (goal ≥ 2.5×): {'met' if speedup >= 2.5 else 'missed'}.",
    ]
    return lines, speedup


# --- 2. the journal's cost per chunk ----------------------------------------------------


def chunk_cost(url: str, batch_size: int) -> float:
    """Seconds per chunk to record :data:`CHUNKS` acknowledged chunks, ``batch_size`` to a commit."""
    with Journal.open(url, host_id="bench") as journal:
        record, lease, _ = journal.begin_transfer("upload", "http://bench", "bench", {}, f"bench-{batch_size}")
        journal.add_files(record.id, [NewFile(local_path="/bench/file", remote_name="file", size=CHUNKS)])
        (file,) = list(journal.iter_files(record.id))
        plan = JournalBatch()
        plan.plan_chunks(file.id, [(index, 1) for index in range(CHUNKS)])
        journal.commit(plan)
        started = time.perf_counter()
        for first in range(0, CHUNKS, batch_size):
            batch = JournalBatch()
            for index in range(first, min(first + batch_size, CHUNKS)):
                batch.chunk(file.id, index, ChunkState.ACKED, f"{index:032x}")
            batch.update_file(file.id, bytes_done=min(first + batch_size, CHUNKS))
            journal.commit(batch)
        seconds = time.perf_counter() - started
        lease.release()
    return seconds / CHUNKS


#: The CLI with each :meth:`Journal.commit` timed: ``[chunks acknowledged, wall seconds, CPU seconds]``
#: per commit (CPU: the committing thread's own, ``time.thread_time``, so no other thread's work and
#: no wait for the database, a core or the GIL counts), and ``[flushes, seconds]`` a transfer's tasks awaited a
#: flush themselves (a file's start, the run's end: the only commits anything waits for; the periodic ones
#: run beside the transfer), written to ``$BENCH_COMMITS`` as the process exits (``cli.run`` runs
#: atexit functions). ``$BENCH_SWITCH_INTERVAL``: Python's GIL switch interval for the run (a probe).
_TIMED_CLI = """
import atexit, contextvars, json, os, sys, time
from flowxfer.journal import Journal
from flowxfer.transfer._runtime import JournalWriter
if os.environ.get("BENCH_SWITCH_INTERVAL"):
    sys.setswitchinterval(float(os.environ["BENCH_SWITCH_INTERVAL"]))
commits, awaited = [], [0, 0.0]
untimed = Journal.commit
def commit(self, batch, fence=None):
    started, cpu = time.perf_counter(), time.thread_time()
    try:
        return untimed(self, batch, fence)
    finally:
        commits.append((len(batch.chunk_updates), time.perf_counter() - started, time.thread_time() - cpu))
Journal.commit = commit
periodic = contextvars.ContextVar("periodic", default=False)
unwatched_run, unwatched_flush = JournalWriter.run, JournalWriter.flush
async def run(self):
    periodic.set(True)
    await unwatched_run(self)
async def flush(self):
    if periodic.get():
        return await unwatched_flush(self)
    started = time.perf_counter()
    try:
        return await unwatched_flush(self)
    finally:
        awaited[0] += 1
        awaited[1] += time.perf_counter() - started
JournalWriter.run, JournalWriter.flush = run, flush
def save():
    with open(os.environ["BENCH_COMMITS"], "w") as out:
        json.dump({"commits": commits, "awaited": awaited}, out)
atexit.register(save)
from flowxfer.cli import run
run()
"""


@dataclass
class EngineCommits:
    """One upload's commits: chunks, wall and CPU seconds each; flushes awaited; the upload's seconds."""

    commits: list[tuple[int, float, float]]
    awaited: tuple[int, float]
    seconds: float

    @property
    def chunks(self) -> int:
        return sum(chunks for chunks, _, _ in self.commits)

    @property
    def journal_seconds(self) -> float:
        return sum(seconds for _, seconds, _ in self.commits)

    @property
    def per_chunk(self) -> float:
        """Wall clock per chunk: the commits' whole calls, their waits for the database included."""
        return self.journal_seconds / max(1, self.chunks)

    @property
    def cpu_per_chunk(self) -> float:
        """The committing thread's CPU per chunk: what the journal costs the host."""
        return sum(cpu for _, _, cpu in self.commits) / max(1, self.chunks)


def engine_commits(files: list[Path], journal: str, wan: tuple[float, float], tag: str) -> EngineCommits:
    """``flowxfer upload`` of ``files`` over one host's WAN path to a fresh server, ``journal`` its journal."""
    with ExitStack() as stack:
        server = stack.enter_context(Server(WORK / f"server-engine-{tag}"))
        path = stack.enter_context(WanProcess(server.url, wan[0], wan[1], 0.0, 16.0))
        home = stack.enter_context(flowxfer_home(f"engine-{tag}", path))
        stats = WORK / f"engine-commits-{tag}.json"
        env = {**os.environ, **home, "FLOWXFER_JOURNAL": journal, "BENCH_COMMITS": str(stats)}
        command = [sys.executable, "-c", _TIMED_CLI, "--no-progress", "upload", "--force", *map(str, files)]
        started = time.perf_counter()
        subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL, cwd=ROOT)
        seconds = time.perf_counter() - started
        saved = json.loads(stats.read_text())
        commits = [(int(chunks), float(took), float(cpu)) for chunks, took, cpu in saved["commits"]]
        awaited = (int(saved["awaited"][0]), float(saved["awaited"][1]))
        stats.unlink()
    return EngineCommits(commits, awaited, seconds)


def bench_engine_batches(
    cluster: PostgresCluster, files: list[Path], repeats: int, wan: tuple[float, float]
) -> tuple[list[str], float, list[str]]:
    """The engine's own batches in a real upload, per backend alternately: rows, the CPU ratio, notes.

    Two rows: the committing thread's CPU per chunk (what the journal costs the host, the goal's
    measure) and the wall clock of the commits (PostgreSQL's also its round trips to another
    process that needs a core of its own, and its connection's opening in the first commits: the
    time a batch takes to be durable, which a transfer waits for only where it flushes itself,
    counted in the notes). Setting the GIL's switch interval to 0.5 ms (``$BENCH_SWITCH_INTERVAL``)
    left PostgreSQL's wall clock as it was: the gap is the database's, not the GIL's.
    """
    runs: dict[str, list[EngineCommits]] = {"SQLite": [], "PostgreSQL": []}
    for n in range(repeats):
        runs["SQLite"].append(engine_commits(files, str(WORK / f"chunk-cost-engine-{n}.db"), wan, f"s{n}"))
        runs["PostgreSQL"].append(engine_commits(files, cluster.new_database(), wan, f"p{n}"))
    for name, series in runs.items():
        for r in series:
            print(
                f"  {name}: {r.chunks} chunks, {len(r.commits)} commits, wall {r.per_chunk * 1e6:.0f} µs/chunk, "
                f"CPU {r.cpu_per_chunk * 1e6:.0f} µs/chunk, {r.awaited[0]} flushes awaited "
                f"{r.awaited[1] * 1e3:.1f} ms of {r.seconds:.2f} s",
                flush=True,
            )
    every = [run for series in runs.values() for run in series]
    commits = [chunks for run in every for chunks, _, _ in run.commits]
    with_chunks = [chunks for chunks in commits if chunks]
    size = sum(f.stat().st_size for f in files)
    label = (
        f"engine: `upload` of {len(files)} × {size // len(files) // MiB} MiB over a {wan[1]:g} Mbit/s, "
        f"{wan[0]:g} ms path: {min(r.chunks for r in every)}-{max(r.chunks for r in every)} chunks in "
        f"{min(len(r.commits) for r in every)}-{max(len(r.commits) for r in every)} commits an upload; "
        f"chunks per commit median {statistics.median(with_chunks):g}, mean {statistics.mean(with_chunks):.1f}, "
        f"max {max(with_chunks)}; {1 - len(with_chunks) / len(commits):.0%} of commits without a chunk"
    )
    rows, ratios = [], []
    for measure, what in (
        (lambda r: r.cpu_per_chunk, "CPU of the committing thread (the journal's cost to the host)"),
        (
            lambda r: r.per_chunk,
            "wall clock of `Journal.commit` (round trips to the database and its connection's opening included)",
        ),
    ):
        sqlite, postgres = (statistics.median(measure(r) for r in runs[name]) for name in ("SQLite", "PostgreSQL"))
        spread = "; ".join(
            f"{name} {min(measure(r) for r in series) * 1e6:.0f}-{max(measure(r) for r in series) * 1e6:.0f}"
            for name, series in runs.items()
        )
        rows.append(
            f"| {label}; {what} | {sqlite * 1e6:.1f} µs | {postgres * 1e6:.1f} µs | {postgres / sqlite:.2f}× "
            f"| {spread} |"
        )
        ratios.append(postgres / sqlite)
        print(rows[-1], flush=True)
    waited = {
        name: (
            statistics.median(r.awaited[0] for r in series),
            statistics.median(r.awaited[1] for r in series),
            statistics.median(r.journal_seconds / r.seconds for r in series),
        )
        for name, series in runs.items()
    }
    notes = [
        "- what the upload waited for: the engine commits beside the transfer (a chunk's answer is "
        "added to the next batch; no chunk waits for a commit); only a file's start (its upload id, durable before its "
        "first chunk) and the run's end flush and wait: "
        + "; ".join(
            f"{name} {flushes:g} such flushes, {seconds * 1e3:.0f} ms an upload (commits in all {share:.2%} "
            "of the upload's time, mostly beside it)"
            for name, (flushes, seconds, share) in waited.items()
        )
        + " (medians)."
    ]
    middle = {
        name: statistics.median(wall for r in series for _, wall, _ in r.commits) for name, series in runs.items()
    }
    notes.append(
        f"- a commit's wall clock, median of all: SQLite {middle['SQLite'] * 1e3:.2f} ms, PostgreSQL "
        f"{middle['PostgreSQL'] * 1e3:.2f} ms."
    )
    return rows, ratios[0], [f"(wall-clock ratio {ratios[1]:.2f}×)", *notes]


def bench_chunks(
    cluster: PostgresCluster, repeats: int, engine: tuple[list[Path], int, tuple[float, float]] | None = None
) -> tuple[list[str], float]:
    """Per batch size, SQLite and PostgreSQL alternately, ``repeats`` rounds each: medians.

    Alternating (rather than all of one backend, then the other) puts both under the same load
    when other work shares the machine; each round is a fresh journal.
    """
    rows, ratios = [], {}
    before = load()
    for size in BATCHES:
        figures: dict[str, list[float]] = {"SQLite": [], "PostgreSQL": []}
        for n in range(repeats):
            figures["SQLite"].append(chunk_cost(f"sqlite:///{WORK / f'chunk-cost-{size}-{n}.db'}", size))
            figures["PostgreSQL"].append(chunk_cost(cluster.new_database(), size))
        sqlite, postgres = (statistics.median(figures[name]) for name in ("SQLite", "PostgreSQL"))
        ratios[size] = postgres / sqlite
        spread = "; ".join(f"{name} {min(runs) * 1e6:.0f}-{max(runs) * 1e6:.0f}" for name, runs in figures.items())
        rows.append(f"| {size} | {sqlite * 1e6:.1f} µs | {postgres * 1e6:.1f} µs | {ratios[size]:.2f}× | {spread} |")
        print(rows[-1], flush=True)
    engine_rows, engine_ratio, engine_notes = bench_engine_batches(cluster, *engine) if engine else ([], 0.0, [])
    for stale in WORK.glob("chunk-cost-*"):
        stale.unlink()
    worst = max(ratios.values())
    lines = [
        f"The journal's cost per chunk: {CHUNKS} chunks acknowledged, a batch of N and its file's progress "
        "per transaction (the engine commits every 0.1 s or 512 events), the same rows through the same "
        "`Journal.commit` on both; SQLite on this machine's disk (WAL, `synchronous=NORMAL`: its production "
        "settings), PostgreSQL on loopback with a lab's settings (fsync on; a batch's commit does not wait "
        "for its WAL flush, as SQLite's does not); medians of "
        f"{repeats} alternating rounds (load average {before} before, {load()} after).",
        "",
        "| chunks per commit | SQLite | PostgreSQL | PostgreSQL / SQLite | range (µs) |",
        "|---|---|---|---|---|",
        *rows,
        *engine_rows,
        "",
        f"- PostgreSQL within **{worst:.2f}×** SQLite's cost per chunk at every fixed batch size (goal ≤ 2×): "
        f"{'met' if worst <= 2 else 'missed'}.",
    ]
    if engine_rows:
        assert engine is not None
        lines.append(
            f"- in the engine's own batches (a real upload, medians of {engine[1]} alternating rounds), the "
            f"journal's CPU per chunk: **{engine_ratio:.2f}×** (goal ≤ 2×): "
            f"{'met' if engine_ratio <= 2 else 'missed'} {engine_notes[0]}."
        )
        lines += engine_notes[1:]
    return lines, worst


# --- 3. the unchanged re-run --------------------------------------------------------------


def bench_rerun(cluster: PostgresCluster, files: int, repeats: int) -> tuple[list[str], float]:
    tree = bench_sync.make_scan_tree(bench_sync.WORK / f"scan-{files}", files)
    rows, figures = [], {}
    for label, journal in (("PostgreSQL", cluster.new_database()), ("SQLite", "")):
        with bench_sync.server("server-fleet-rerun") as srv:
            env = bench_sync.flowxfer_env(srv, WORK / "home-fleet-rerun")
            if journal:
                env["FLOWXFER_JOURNAL"] = journal
            first = bench_sync.sync(env, tree, "--name-from-path", "--concurrency", "8")
            reruns = [bench_sync.sync(env, tree, "--name-from-path") for _ in range(repeats)]
        figures[label] = statistics.median(r.seconds for r in reruns)
        rows.append(
            f"| {label} | {figures[label]:.2f} s | {max(r.rss_mib for r in reruns):.0f} MiB | "
            f"{', '.join(f'{r.seconds:.2f}' for r in reruns)} | {first.seconds:.1f} s |"
        )
    ours = figures["PostgreSQL"]
    lines = [
        f"Unchanged re-run: `sync --name-from-path` of {files:,} small files uploaded one by one, run again "
        f"with nothing changed (median of {repeats}).",
        "",
        "| journal | re-run | peak RSS | runs | first sync |",
        "|---|---|---|---|---|",
        *rows,
        "",
        f"- on PostgreSQL: **{ours:.2f} s** (goal ≤ 5 s): {'met' if ours <= 5 else 'missed'}.",
    ]
    return lines, ours


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=None, help="run folders (default 30; --quick 6)")
    parser.add_argument("--fastq-size", default=None, help="about this much per FASTQ (default 24M; --quick 1M)")
    parser.add_argument("--repeats", type=int, default=None, help="rounds per comparison (default 3; --quick 1)")
    parser.add_argument("--rtt-ms", type=float, default=50.0, help="each host's path round trip (default 50)")
    parser.add_argument("--link-mbit", type=float, default=300.0, help="each host's own link (default 300)")
    parser.add_argument(
        "--chunk-repeats", type=int, default=None, help="rounds per batch size of the journal's cost (default 7)"
    )
    parser.add_argument(
        "--engine-files", default=None, help="the engine's batches: COUNTxSIZE uploaded (default 4x64M; --quick 2x8M)"
    )
    parser.add_argument("--rerun-files", type=int, default=None, help="files in the re-run (default 10000)")
    parser.add_argument(
        "--parts",
        default="fleet,chunks,rerun",
        help="which parts (default all three; 'engine': only the chunk part's engine row)",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, one round, RESULTS.md left alone")
    parser.add_argument("--no-record", action="store_true", help="do not write RESULTS.md")
    given = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(given)
    quick = args.quick
    count = args.runs or (6 if quick else 30)
    fastq_size = parse_size(args.fastq_size or ("1M" if quick else "24M"))
    repeats = args.repeats or (1 if quick else 3)
    rerun_files = args.rerun_files or (500 if quick else 10_000)
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    unknown = parts - {"fleet", "chunks", "engine", "rerun"}
    if unknown:
        parser.error(f"unknown part(s) {sorted(unknown)}: choose from fleet, chunks, engine, rerun")
    compile_sources()
    before = load()
    sections: list[str] = []
    # A lab's server makes commits durable (fsync on); the tests' cluster does not need to.
    with PostgresCluster(settings=DURABLE) as cluster:
        if "fleet" in parts:
            runs = make_runs(WORK / "fleet-runs" / f"{count}x{fastq_size}", count, fastq_size=fastq_size, samples=1)
            sections += bench_fleet(runs, cluster, repeats, (args.rtt_ms, args.link_mbit))[0] + [""]
        if parts & {"chunks", "engine"}:
            count_text, _, size_text = (args.engine_files or ("2x8M" if quick else "4x64M")).partition("x")
            engine_size = parse_size(size_text)
            files = [
                random_file(WORK / "data" / f"engine-{engine_size}-{n}.bin", engine_size, seed=n)
                for n in range(int(count_text))
            ]
            engine = (files, repeats, (args.rtt_ms, args.link_mbit))
        if "chunks" in parts:
            sections += bench_chunks(cluster, args.chunk_repeats or (3 if quick else 7), engine)[0] + [""]
        elif "engine" in parts:
            rows, ratio, notes = bench_engine_batches(cluster, *engine)
            sections += [*rows, "", f"- engine CPU per chunk {ratio:.2f}× {notes[0]}", *notes[1:], ""]
        if "rerun" in parts:
            sections += bench_rerun(cluster, rerun_files, repeats)[0] + [""]
    body = "\n".join(
        [
            machine_line() + f" PostgreSQL {cluster.binaries.parent.name} on loopback (a throwaway cluster, "
            "fsync on, PostgreSQL's durable defaults, as a lab runs it). "
            f"Load average before: {before}; after: {load()} (other work shared "
            "the two cores).",
            "",
            *sections,
            f"Reproduce: `{' '.join(['python -m benchmarks.bench_fleet', *given])}` (`--quick` for a smoke run).",
        ]
    )
    print("\n" + body)
    if not (args.no_record or quick):
        record_section("Fleet (issue 21)", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

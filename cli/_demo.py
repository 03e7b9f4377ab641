"""``flowxfer demo``: the main job, end to end, on an embedded local server.

No account and no network: a local Flow server starts on a free loopback port
over a temporary root, a synthetic Illumina run folder is generated, and the
product's point is shown with real bytes through real sockets —

1. ``sync`` waits while the run is still being written (no marker yet);
2. once the run is complete, ``sync`` uploads it and is *interrupted* part-way
   (a real cancellation: in-flight requests finish, the journal is saved);
3. ``resume`` (a new session, as after a crash) finishes without re-sending
   what the server acknowledged;
4. ``bulk`` fetches everything back as one server-built archive, downloads it
   through the resumable verified path and extracts it safely;
5. every file is compared byte for byte with the original;
6. the run's FASTQs become one Flow sample per Sample_ID of its
   ``SampleSheet.csv`` (lanes merged), and a second run makes none; a closing
   table shows files, bytes, throughput, samples, requests spent against each
   rate limit and what was verified.

It exits 0 only if every check passed. This module may import the server:
the architecture allows ``cli → server`` for ``serve`` and ``demo`` only.
"""

from __future__ import annotations

import json
import secrets
import shutil
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import click

from flowxfer.protocol import parse_rate_limit_spec
from flowxfer.transfer import Flowxfer, SyncOptions, TransferConfig, TransferReport, events, format_rate, format_size

from . import _exits
from ._common import SIZE, global_options
from ._render import Output
from ._runfolder import MARKERS, make_run_folder, run_files

DEMO_USER = "demo"
#: Files under this size are packed into tars per folder (InterOp, BCLs, logs, XML).
PACK_SMALL = 64 * 1024
#: Small chunks so the interruption lands inside files and resume works at chunk level.
DEMO_CHUNK = 1024 * 1024
#: The share of the run's bytes after which the upload is interrupted.
INTERRUPT_AT = 0.4


@dataclass
class Step:
    name: str
    ok: bool
    detail: str


@dataclass
class DemoOutcome:
    steps: list[Step] = field(default_factory=list)
    reports: list[TransferReport] = field(default_factory=list)
    files: int = 0
    bytes: int = 0
    upload_seconds: float = 0.0
    download_seconds: float = 0.0
    resent: int = 0
    requests: dict[str, int] = field(default_factory=dict)
    limits: dict[str, str] = field(default_factory=dict)
    verified: list[str] = field(default_factory=list)
    samples_made: int = 0
    samples_remade: int = 0

    @property
    def ok(self) -> bool:
        return bool(self.steps) and all(step.ok for step in self.steps)

    def check(self, name: str, ok: bool, detail: str) -> bool:
        self.steps.append(Step(name, ok, detail))
        mark = "ok  " if ok else "FAIL"
        _say(f"  [{mark}] {name}: {detail}")
        return ok

    def count(self, report: TransferReport) -> None:
        self.reports.append(report)
        for name, value in report.requests.items():
            self.requests[name] = self.requests.get(name, 0) + value


#: Where the demo's narration goes: stdout, or stderr when --json keeps stdout for the document.
_NARRATION = sys.stdout
#: The display the narration is told above (each step ends the live phase before it), while it runs.
_DISPLAY: Output | None = None


def _say(text: str) -> None:
    if _DISPLAY is not None:
        _DISPLAY.say(text, _NARRATION)
    else:
        print(text, file=_NARRATION, flush=True)


async def run_demo(workdir: Path, fastq_bytes: int, output: Output) -> DemoOutcome:
    """Everything the demo does; returns what it found (never raises for a failed check)."""
    # Imported here, not at the top: every other command would pay for loading the server.
    from flowxfer.server import ServerConfig, serve_in_background

    outcome = DemoOutcome()
    password = secrets.token_urlsafe(12)
    server_root, home, results = workdir / "server", workdir / "home", workdir / "results"
    config = ServerConfig(
        root=server_root, host="127.0.0.1", port=0, users={DEMO_USER: password}, rate_limits="default"
    )
    async with serve_in_background(config) as url:
        _say(f"1. A local Flow server is listening on {url} (hosted Flow's rate limits, user {DEMO_USER!r}).")
        samples = 4
        per_fastq = max(1, fastq_bytes // (2 * samples * 2))
        run = await anyio.to_thread.run_sync(
            lambda: make_run_folder(
                workdir / "instrument",
                lanes=2,
                samples=samples,
                fastq_size=per_fastq,
                small_files=120,
                complete=False,
                sample_sheet="v2",
            )
        )
        source = await anyio.to_thread.run_sync(run_files, run)
        _say(f"2. A sequencing run is being written: {run}")
        _say(
            f"   {len(source)} files, {format_size(sum(source.values()))}: paired FASTQs for {samples} samples "
            "in 2 lanes, InterOp metrics, per-cycle BCLs, logs."
        )
        options = SyncOptions(ready_marker=MARKERS[-1], pack_small=PACK_SMALL)
        transfer = TransferConfig(chunk_size=DEMO_CHUNK, concurrency=4, grace_period=10.0)

        def session(progress: Any) -> Flowxfer:
            return Flowxfer(
                url,
                config_dir=home / "config",
                journal=home / "journal.db",
                config=transfer,
                progress=progress,
                environment=False,
            )

        async with session(output.event) as fx:
            await fx.login(DEMO_USER, password)
            waiting = await fx.sync(run, options)
            outcome.check(
                "not ready, nothing sent",
                waiting.status == "waiting" and waiting.bytes_transferred == 0,
                f"sync found no {MARKERS[-1]} and is {waiting.status}: "
                f"{waiting.extra.get('waiting_for')!r} (exit 0 for cron)",
            )

        await anyio.to_thread.run_sync(_complete, run)
        source = await anyio.to_thread.run_sync(run_files, run)
        total = sum(source.values())
        outcome.files, outcome.bytes = len(source), total
        _say(
            f"3. The instrument wrote {MARKERS[-1]}: syncing {len(source)} files, {format_size(total)} "
            f"(files under {format_size(PACK_SMALL)} packed into tars per folder) ..."
        )

        holder: dict[str, Flowxfer] = {}
        moved = 0

        def interrupting(event: events.Event) -> None:
            nonlocal moved
            output.event(event)
            if isinstance(event, events.BytesMoved):
                moved += event.nbytes
                if moved >= INTERRUPT_AT * total and "fx" in holder:
                    holder["fx"].stop()

        started = time.monotonic()
        async with session(interrupting) as fx:
            holder["fx"] = fx
            first = await fx.sync(run, options)
        outcome.count(first)
        outcome.check(
            "interrupted part-way",
            first.status == "interrupted",
            f"stopped after {format_size(first.bytes_transferred)} of about {format_size(total)}; "
            f"transfer {first.transfer_id} is {first.status} in the journal",
        )

        _say("4. A new session resumes from the journal (as after a crash or a reboot) ...")
        async with session(output.event) as fx:
            resumed = await fx.resume(first.transfer_id)
        outcome.upload_seconds = time.monotonic() - started
        second = resumed[0] if resumed else None
        if second is not None:
            outcome.count(second)
        sent = first.bytes_transferred + (second.bytes_transferred if second else 0)
        planned = sum(f.size for f in (second or first).files)
        outcome.resent = max(0, sent - planned)
        done = second is not None and second.status == "completed"
        outcome.check(
            "resumed to completion",
            done,
            f"{second.status if second else 'nothing resumed'}; {format_size(sent)} sent for "
            f"{format_size(planned)} planned: {format_size(outcome.resent)} re-sent",
        )
        ids = [f.id for f in (second or first).files if f.id]

        _say(f"5. Fetching all {len(ids)} uploaded items back as one archive (bulk job), extracting safely ...")
        started = time.monotonic()
        async with session(output.event) as fx:
            bulk = await fx.bulk(ids, name="demo-run.zip", output_dir=results, extract=True)
        outcome.download_seconds = time.monotonic() - started
        outcome.count(bulk)
        outcome.check(
            "archive downloaded, verified, extracted",
            bulk.status == "completed",
            f"job {bulk.extra.get('job_id')}, {len(bulk.extra.get('extracted', []))} files extracted; "
            f"{bulk.extra.get('verified', 'verified')}",
        )
        if bulk.extra.get("verified"):
            outcome.verified.append(str(bulk.extra["verified"]))

        _say("6. Comparing every file of the run with what came back ...")
        matched, problems = await anyio.to_thread.run_sync(_compare, run, results)
        outcome.check(
            "byte-for-byte identical",
            not problems and matched == len(source),
            f"{matched} of {len(source)} files identical"
            + (f"; first differences: {problems[:3]}" if problems else ""),
        )
        outcome.verified.append(f"{matched} files compared byte for byte with the originals")
        await _samples_step(outcome, session, output, run, samples)
    for name, limit in (parse_rate_limit_spec("default") or {}).items():
        outcome.limits[name] = f"{limit.count}/h"
    return outcome


async def _samples_step(outcome: DemoOutcome, session: Any, output: Output, run: Path, expected: int) -> None:
    """7. The run's FASTQs become Flow samples from its SampleSheet.csv, and a second run makes none."""
    _say(f"7. Making one Flow sample per Sample_ID of {run.name}/SampleSheet.csv (lanes merged), twice ...")
    wanted = {"root": str(run), "organism": "Hs", "metadata": {"strandedness": "reverse"}}
    async with session(output.event) as fx:
        first = await fx.upload_samples(run=wanted, sample_type="RNA-Seq")
        again = await fx.upload_samples(run=wanted, sample_type="RNA-Seq")
    outcome.count(first)
    made = [
        s
        for s in first.extra.get("samples", [])
        if s["status"] == "done" and [f["status"] for f in s["files"]] == ["done", "done"]
    ]
    repeated = [s for s in again.extra.get("samples", []) if s["status"] != "skipped"]
    outcome.samples_made, outcome.samples_remade = len(made), len(repeated)
    outcome.check(
        "samples made exactly once",
        len(made) == expected and not repeated and again.bytes_transferred == 0,
        f"{len(made)} of {expected} samples made, each linking R1 then R2; the second run made "
        f"{len(repeated)} and sent {format_size(again.bytes_transferred)}",
    )


def _complete(run: Path) -> None:
    for marker in MARKERS:
        (run / marker).write_text("done\n")


def _compare(run: Path, results: Path) -> tuple[int, list[str]]:
    """Match every source file with an extracted file (plain, or a member of an extracted tar)."""
    got: dict[str, bytes | Path] = {}
    for path in results.rglob("*"):
        if not path.is_file():
            continue
        if path.suffix == ".tar" and tarfile.is_tarfile(path):
            with tarfile.open(path) as archive:
                for member in archive.getmembers():
                    extracted = archive.extractfile(member) if member.isfile() else None
                    if extracted is not None:
                        got[member.name] = extracted.read()
        else:
            got.setdefault(path.name, path)
    matched = 0
    problems: list[str] = []
    for relative in run_files(run):
        original = (run / relative).read_bytes()
        candidate = got.get(relative, got.get(Path(relative).name))
        if candidate is None:
            problems.append(f"{relative}: missing")
            continue
        data = candidate if isinstance(candidate, bytes) else candidate.read_bytes()
        if data == original:
            matched += 1
        else:
            problems.append(f"{relative}: differs")
    return matched, problems


def _table(outcome: DemoOutcome) -> list[tuple[str, str]]:
    upload_rate = outcome.bytes / outcome.upload_seconds if outcome.upload_seconds else 0.0
    download_rate = outcome.bytes / outcome.download_seconds if outcome.download_seconds else 0.0
    spent = ", ".join(
        f"{name} {count}" + (f" of {outcome.limits[name]}" if name in outcome.limits else "")
        for name, count in sorted(outcome.requests.items())
    )
    return [
        ("files", f"{outcome.files}"),
        ("bytes", format_size(outcome.bytes)),
        ("upload (interrupted + resumed)", f"{outcome.upload_seconds:.1f} s, {format_rate(upload_rate)}"),
        ("re-sent after the interruption", format_size(outcome.resent)),
        ("bulk download + extraction", f"{outcome.download_seconds:.1f} s, {format_rate(download_rate)}"),
        ("samples", f"{outcome.samples_made} made from the run; a re-run made {outcome.samples_remade}"),
        ("requests spent (against limits)", spent or "none"),
        ("retries", str(sum(r.retries for r in outcome.reports))),
        ("verified", "; ".join(outcome.verified) or "nothing"),
        ("result", "every check passed" if outcome.ok else "SOME CHECKS FAILED"),
    ]


def _print_table(rows: list[tuple[str, str]]) -> None:
    width = max(len(name) for name, _ in rows)
    _say("")
    for name, value in rows:
        _say(f"  {name:<{width}}  {value}")


@click.command()
@click.option(
    "--size",
    type=SIZE,
    default="48M",
    show_default=True,
    help="Total size of the run's FASTQ files (the demo moves about this much each way).",
)
@click.option(
    "--keep",
    type=click.Path(file_okay=False, path_type=Path),
    help="Leave the server root, the run folder, the journal and the results in this folder.",
)
@click.pass_context
def demo(ctx: click.Context, size: int, keep: Path | None) -> None:
    """Run the main job on an embedded local Flow server: no account, no network.

    A synthetic sequencing run is synced (waiting for its ready marker,
    interrupted part-way and resumed without re-sending), fetched back as
    one verified archive, extracted, and compared byte for byte; then its
    FASTQs become Flow samples, once. Exit 0 only if every check passed.

    Example: flowxfer demo --size 200M --keep /tmp/flowxfer-demo
    """
    options = global_options(ctx)
    if keep is not None:
        if keep.exists() and any(keep.iterdir()):
            raise click.UsageError(f"--keep {keep}: the folder is not empty")
        keep.mkdir(parents=True, exist_ok=True)
        workdir = keep
    else:
        workdir = Path(tempfile.mkdtemp(prefix="flowxfer-demo-"))
    global _NARRATION, _DISPLAY
    _NARRATION = sys.stderr if options.json else sys.stdout
    output = Output("sync", progress=options.progress_mode(), results=False, verbose=options.verbose)
    try:
        with output:
            _DISPLAY = output
            try:
                outcome = anyio.run(run_demo, workdir, size, output)
            finally:
                _DISPLAY = None
    except Exception as exc:  # noqa: BLE001 - the demo reports any failure as a failed check
        print(f"flowxfer: error: the demo failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        if keep is None:
            shutil.rmtree(workdir, ignore_errors=True)
        sys.exit(_exits.FAILED)
    rows = _table(outcome)
    if options.json:
        print(json.dumps({"ok": outcome.ok, "steps": [s.__dict__ for s in outcome.steps], "summary": dict(rows)}))
    else:
        _print_table(rows)
        if keep is not None:
            _say(
                f"\nEverything is kept in {workdir}: server/ (the server's root), instrument/ (the run), "
                "home/ (credentials and journal.db), results/."
            )
    if keep is None:
        shutil.rmtree(workdir, ignore_errors=True)
    sys.exit(_exits.OK if outcome.ok else _exits.FAILED)

"""What a person (or a log shipper) sees: result lines, progress, the closing summary.

Three progress modes, chosen once: ``bars`` (rich, only on a terminal),
``plain`` (a line every few seconds, one per notice, no carriage returns: for
cron mail and CI logs) and ``json`` (one event object per line on stderr).
Result lines go to stdout; ``--json`` replaces them with one document.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
import time
from typing import TYPE_CHECKING, Any, TextIO

import anyio

from flowxfer.transfer import TransferReport
from flowxfer.transfer._sizes import format_duration, format_rate, format_size
from flowxfer.transfer.events import (
    BytesMoved,
    Event,
    FileFinished,
    FilesPlanned,
    FileStarted,
    FileVerifying,
    JobProgress,
    Notice,
    Retrying,
    SampleFinished,
    TransferStarted,
    Waiting,
)

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

#: Seconds between two plain progress lines; FLOWXFER_PROGRESS_INTERVAL changes it (cron mail, tests).
_PLAIN_INTERVAL = 5.0

#: What a terminal would act on rather than show: C0/C1 controls (ESC sequences can rewrite
#: the screen) and lone surrogates (bytes of a file name that were not UTF-8; printing them fails).
_UNSHOWABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    if 0xDC80 <= code <= 0xDCFF:  # os.fsdecode's stand-in for the byte code - 0xDC00
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def visible(text: str) -> str:
    """``text`` safe to print for a person: names from disk or a server shown, never obeyed."""
    return _UNSHOWABLE.sub(_escape, text)


def _plain_interval() -> float:
    try:
        return max(0.1, float(os.environ.get("FLOWXFER_PROGRESS_INTERVAL", _PLAIN_INTERVAL)))
    except ValueError:
        return _PLAIN_INTERVAL


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


class Output:
    """Renders events and results for one command run.

    :param kind: ``upload``/``download``/``bulk``/``sync`` (how result lines read).
    :param progress: ``bars``, ``plain``, ``json`` or ``none``.
    :param results: print one line per finished file on stdout.
    """

    def __init__(self, kind: str, *, progress: str, results: bool, verbose: bool = False,
                 stdout: TextIO | None = None, stderr: TextIO | None = None) -> None:
        self.kind = kind
        self.mode = progress
        self.results = results
        self.verbose = verbose
        self.stdout = stdout or sys.stdout
        self.stderr = stderr or sys.stderr
        self.files_total = 0
        self.bytes_total = 0
        self.files_done = 0
        self.bytes_done = 0
        self.started = time.monotonic()
        self.status = ""
        self._bars: Progress | None = None
        self._overall: TaskID | None = None
        self._file_tasks: dict[str, TaskID] = {}
        self._last_plain = time.monotonic()
        self.interval = _plain_interval()

    # -- lifecycle -----------------------------------------------------

    def __enter__(self) -> Output:
        if self.mode == "bars":
            # rich is imported only when bars are drawn: plain and JSON runs (cron) start faster.
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            console = Console(file=self.stderr)
            self._bars = Progress(
                TextColumn("{task.description}", justify="left"), BarColumn(), DownloadColumn(binary_units=True),
                TransferSpeedColumn(), TimeRemainingColumn(), console=console, transient=True,
            )
            self._bars.start()
            self._overall = self._bars.add_task("total", total=None)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bars is not None:
            self._bars.stop()
            self._bars = None

    async def ticker(self) -> None:
        """The plain mode's periodic line (runs until cancelled)."""
        if self.mode != "plain":
            return
        while True:
            await anyio.sleep(self.interval)
            self._plain_progress()

    # -- events --------------------------------------------------------

    def event(self, event: Event) -> None:
        """The engine's progress callback: cheap, never raises."""
        try:
            self._event(event)
        except Exception:  # noqa: BLE001 - a display bug must never break a transfer
            pass

    def _event(self, event: Event) -> None:
        if self.mode == "json":
            self._json_line(event)
        if isinstance(event, TransferStarted):
            self.files_total, self.bytes_total = event.files_total, event.bytes_total
            self._set_total()
        elif isinstance(event, FilesPlanned):
            self.files_total = max(self.files_total, event.files)
            self.bytes_total = max(self.bytes_total, event.bytes)
            self._set_total()
        elif isinstance(event, BytesMoved):
            self.bytes_done += event.nbytes
            if self._bars is not None and self._overall is not None:
                self._bars.advance(self._overall, event.nbytes)
                task = self._file_tasks.get(event.path)
                if task is not None:
                    self._bars.advance(task, event.nbytes)
        elif isinstance(event, FileStarted):
            if self._bars is not None:
                self._file_tasks[event.path] = self._bars.add_task(
                    f"  {visible(event.name)}", total=event.size, completed=event.bytes_done)
        elif isinstance(event, FileVerifying):
            self._file_description(event.path, "verifying")
        elif isinstance(event, FileFinished):
            self._finished(event)
        elif isinstance(event, Waiting):
            self.status = (f"waiting for {event.rate_class} budget ({event.limit}) — resumes in "
                           f"{format_duration(event.seconds)}")
            self._notice(self.status)
        elif isinstance(event, Retrying):
            self.status = f"retrying {event.what} after {event.reason} (attempt {event.attempt}/{event.max_attempts})"
            self._notice(self.status, verbose_only=event.attempt < 3)
        elif isinstance(event, Notice):
            self._notice(event.message)
        elif isinstance(event, JobProgress):
            self.status = f"archive job {event.job_id}: {event.status} {event.progress * 100:.0f}%"
            self._notice(self.status, verbose_only=True)
        elif isinstance(event, SampleFinished) and self.results:
            self._print_out(sample_line(event))
        if self._bars is not None and self._overall is not None:
            self._bars.update(self._overall, description=self._overall_description())
        if self.mode == "plain" and time.monotonic() - self._last_plain >= self.interval:
            self._plain_progress()

    def _set_total(self) -> None:
        if self._bars is not None and self._overall is not None:
            self._bars.update(self._overall, total=self.bytes_total or None)

    def _overall_description(self) -> str:
        text = f"{self.files_done}/{self.files_total} files"
        return f"{text} · {self.status}" if self.status else text

    def _file_description(self, path: str, state: str) -> None:
        if self._bars is not None and path in self._file_tasks:
            task = self._file_tasks[path]
            description = self._bars.tasks[task].description if task < len(self._bars.tasks) else ""
            self._bars.update(task, description=f"{description} ({state})")

    def _finished(self, event: FileFinished) -> None:
        self.files_done += 1
        if event.status == "skipped" and self._bars is not None and self._overall is not None:
            self._bars.advance(self._overall, event.size)
        self.status = ""
        task = self._file_tasks.pop(event.path, None)
        if task is not None and self._bars is not None:
            self._bars.remove_task(task)
        if self.results:
            self._print_out(self.result_line(event))

    def result_line(self, event: FileFinished) -> str:
        """``cli.md``'s human result lines."""
        if event.status == "failed":
            return f"failed {event.path}: {event.error}"
        if self.kind in ("upload", "sync"):
            if event.status == "skipped":
                return f"skipped {event.path} (unchanged, {event.data_id})"
            return f"uploaded {event.path} -> {event.data_id}"
        if event.status == "skipped":
            return f"skipped {event.path} (identical, {event.data_id})"
        return f"downloaded {event.data_id} -> {event.path}"

    def _notice(self, text: str, *, verbose_only: bool = False) -> None:
        if self.mode == "json" or self.mode == "none" or (verbose_only and not self.verbose):
            return
        text = visible(text)
        if self._bars is not None:
            self._bars.console.print(text, highlight=False, markup=False)
        else:
            print(text, file=self.stderr, flush=True)

    def _plain_progress(self) -> None:
        self._last_plain = time.monotonic()
        elapsed = max(time.monotonic() - self.started, 1e-6)
        rate = self.bytes_done / elapsed
        line = (f"{time.strftime('%H:%M:%S')} {self.files_done}/{self.files_total} files, "
                f"{format_size(self.bytes_done)} moved, {format_rate(rate)}")
        if self.status:
            line += f"; {self.status}"
        print(line, file=self.stderr, flush=True)

    def _json_line(self, event: Event) -> None:
        record: dict[str, Any] = {"ts": round(time.time(), 3), "event": _snake(type(event).__name__)}
        record.update(dataclasses.asdict(event))
        print(json.dumps(record, default=str), file=self.stderr, flush=True)

    def _print_out(self, text: str) -> None:
        if self._bars is not None:
            # Keep stdout lines intact while bars redraw on stderr.
            self._bars.console.file.flush()
        print(visible(text), file=self.stdout, flush=True)

    # -- the end -------------------------------------------------------

    def summary_line(self, report: TransferReport) -> str:
        counts: dict[str, int] = {}
        for f in report.files:
            counts[f.status] = counts.get(f.status, 0) + 1
        verb = {"upload": "uploaded", "sync": "uploaded", "samples": "uploaded", "multiplexed": "uploaded"}.get(
            report.kind, "downloaded")
        parts = [f"{counts.get('done', 0)} {verb}", f"{counts.get('skipped', 0)} skipped",
                 f"{counts.get('failed', 0)} failed"]
        if counts.get("pending"):
            parts.append(f"{counts['pending']} pending")
        rate = report.bytes_transferred / report.seconds if report.seconds > 0 else 0.0
        text = (f"{report.status}: {', '.join(parts)}; {format_size(report.bytes_transferred)} in "
                f"{report.seconds:.1f} s ({format_rate(rate)}); transfer {report.transfer_id}")
        if report.status == "interrupted":
            text += " — run the same command again, or 'flowxfer resume', to finish"
        return text

    def error(self, message: str) -> None:
        if self.mode == "json":
            print(json.dumps({"ts": round(time.time(), 3), "event": "error", "message": message}),
                  file=self.stderr, flush=True)
        else:
            print(f"flowxfer: error: {visible(message)}", file=self.stderr, flush=True)


def sample_line(event: SampleFinished) -> str:
    """A sample's human result line: made (its id), already on Flow, or failed (why)."""
    if event.status == "done":
        return f"sample {event.name} (row {event.row}) -> {event.sample_id}"
    if event.status == "skipped":
        return f"sample {event.name} (row {event.row}) already on Flow ({event.sample_id})"
    return f"sample {event.name} (row {event.row}) failed: {event.error}"

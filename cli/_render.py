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
import threading
import time
from typing import TYPE_CHECKING, Any, TextIO

import anyio

from flowxfer.transfer import TransferReport, format_duration, format_rate, format_size
from flowxfer.transfer.events import TRANSFER_EVENTS, FileFinished, Notice, Retrying, Waiting

from ._text import execution_text, visible

if TYPE_CHECKING:
    from flowxfer.transfer.events import Event, ExecutionWaiting, SampleFinished

    from ._display import DisplayModel
    from ._live import LiveRegion

#: Seconds between two plain progress lines; FLOWXFER_PROGRESS_INTERVAL changes it (cron mail, tests).
_PLAIN_INTERVAL = 5.0


#: The progress modes that draw the display model; the others (``none``, ``json``) never load it.
_DRAWN = frozenset({"bars", "plain"})


def _plain_interval() -> float:
    try:
        return max(0.1, float(os.environ.get("FLOWXFER_PROGRESS_INTERVAL", _PLAIN_INTERVAL)))
    except ValueError:
        return _PLAIN_INTERVAL


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


class Output:
    """Renders events and results for one command run.

    The live display's state is a :class:`~._display.DisplayModel` (the
    truth of what to show); in ``bars`` mode a :class:`~._live.LiveRegion`
    draws it, and every line printed meanwhile goes above the region; in
    ``plain`` mode its counters make the periodic line. The ``none`` and
    ``json`` modes draw nothing and keep no model.

    :param kind: ``upload``/``download``/``bulk``/``sync`` (how result lines read).
    :param progress: ``bars``, ``plain``, ``json`` or ``none``.
    :param results: print one line per finished file on stdout; a sample's files
        only with ``verbose``: a samples batch says a line per sample (made,
        already on Flow, failed), which names what its files' lines would.
    """

    def __init__(
        self,
        kind: str,
        *,
        progress: str,
        results: bool,
        verbose: bool = False,
        stdout: TextIO | None = None,
        stderr: TextIO | None = None,
    ) -> None:
        self.kind = kind
        self.mode = progress
        self.results = results
        self.verbose = verbose
        self.stdout = stdout or sys.stdout
        self.stderr = stderr or sys.stderr
        #: What the display shows; only when one is drawn (its module and work are not every command's).
        self.model: DisplayModel | None = None
        if progress in _DRAWN:
            from ._display import DisplayModel

            self.model = DisplayModel(kind)
        self._lock = threading.RLock()
        self._live: LiveRegion | None = None
        self.started = time.monotonic()
        self._last_plain = time.monotonic()
        self.interval = _plain_interval()
        #: The local paths of the samples' files seen so far (their lines wait for ``verbose``).
        self._sample_files: set[str] = set()

    # -- lifecycle -----------------------------------------------------

    def __enter__(self) -> Output:
        if self.mode == "bars" and self.model is not None:
            # rich is imported only when bars are drawn: plain and JSON runs (cron) start faster.
            from ._live import LiveRegion

            self._live = LiveRegion(self.stderr, self.model, self._lock)
            self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        live, self._live = self._live, None
        if live is not None:
            live.stop()

    async def ticker(self) -> None:
        """The plain mode's periodic line (runs until cancelled)."""
        if self.mode != "plain":
            return
        while True:
            await anyio.sleep(self.interval)
            self._plain_progress()

    def say(self, text: str, stream: TextIO | None = None) -> None:
        """A line of a story (``demo``'s steps): it ends the phase before it and stays above the display."""
        with self._lock:
            if self.model is not None:
                self.model.end(time.monotonic())
            self._print(text, stream or self.stdout)

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
        if self.model is not None:
            with self._lock:
                self.model.apply(event, time.monotonic())
        if isinstance(event, FileFinished):
            if self.results and (self.verbose or event.path not in self._sample_files):
                self._print_out(self.result_line(event))
        elif isinstance(event, Waiting):
            self._notice(
                f"waiting for {event.rate_class} budget ({event.limit}) — resumes in {format_duration(event.seconds)}"
            )
        elif isinstance(event, Retrying):
            self._notice(
                f"retrying {event.what} after {event.reason} (attempt {event.attempt}/{event.max_attempts})",
                verbose_only=event.attempt < 3,
            )
        elif isinstance(event, Notice):
            self._notice(event.message)
        elif not isinstance(event, TRANSFER_EVENTS):
            self._job_event(event)
        if self.mode == "plain" and time.monotonic() - self._last_plain >= self.interval:
            self._plain_progress()

    def _job_event(self, event: Event) -> None:
        """A job's, an execution's or a sample's event: their classes are loaded, since one was sent."""
        from flowxfer.transfer.events import ExecutionWaiting, JobProgress, SampleFinished, SampleStarted

        if isinstance(event, SampleStarted):
            self._sample_files.update(f.path for f in event.reads)
        elif isinstance(event, ExecutionWaiting):
            self._execution(event)
        elif isinstance(event, JobProgress):
            self._notice(f"archive job {event.job_id}: {event.status} {event.progress * 100:.0f}%", verbose_only=True)
        elif isinstance(event, SampleFinished) and self.results:
            self._print_out(sample_line(event))

    def _execution(self, event: ExecutionWaiting) -> None:
        """A poll of a pipeline execution: always said (a wait may last hours); the live region shows it too."""
        self._notice(execution_text(event))

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
        self._print(visible(text), self.stderr)

    def _print(self, text: str, stream: TextIO) -> None:
        """A whole line on ``stream``: above the live region while there is one."""
        live = self._live
        if live is not None:
            live.print_above(text, stream)
        else:
            print(text, file=stream, flush=True)

    def _plain_progress(self) -> None:
        self._last_plain = time.monotonic()
        if self.model is None:
            return
        with self._lock:
            counted = self.model.plain_counters(time.monotonic())
        rate = counted.moved / max(counted.seconds, 1e-6)
        samples = f"{counted.samples_done}/{counted.samples_total} samples, " if counted.samples_total else ""
        line = (
            f"{time.strftime('%H:%M:%S')} {samples}{counted.files_done}/{counted.files_total} files, "
            f"{format_size(counted.moved)} moved, {format_rate(rate)}"
        )
        if counted.status:
            line += f"; {counted.status}"
        print(line, file=self.stderr, flush=True)

    def _json_line(self, event: Event) -> None:
        record: dict[str, Any] = {"ts": round(time.time(), 3), "event": _snake(type(event).__name__)}
        record.update(dataclasses.asdict(event))
        print(json.dumps(record, default=str), file=self.stderr, flush=True)

    def _print_out(self, text: str) -> None:
        self._print(visible(text), self.stdout)

    # -- the end -------------------------------------------------------

    def summary_line(self, report: TransferReport) -> str:
        counts: dict[str, int] = {}
        for f in report.files:
            counts[f.status] = counts.get(f.status, 0) + 1
        verb = {"upload": "uploaded", "sync": "uploaded", "samples": "uploaded", "multiplexed": "uploaded"}.get(
            report.kind, "downloaded"
        )
        parts = [
            f"{counts.get('done', 0)} {verb}",
            f"{counts.get('skipped', 0)} skipped",
            f"{counts.get('failed', 0)} failed",
        ]
        if counts.get("pending"):
            parts.append(f"{counts['pending']} pending")
        rate = report.bytes_transferred / report.seconds if report.seconds > 0 else 0.0
        text = (
            f"{report.status}: {', '.join(parts)}; {format_size(report.bytes_transferred)} in "
            f"{report.seconds:.1f} s ({format_rate(rate)}); transfer {report.transfer_id}"
        )
        if report.status == "interrupted":
            text += " — run the same command again, or 'flowxfer resume', to finish"
        return text

    def error(self, message: str) -> None:
        if self.mode == "json":
            print(
                json.dumps({"ts": round(time.time(), 3), "event": "error", "message": message}),
                file=self.stderr,
                flush=True,
            )
        else:
            self._print(f"flowxfer: error: {visible(message)}", self.stderr)


def sample_line(event: SampleFinished) -> str:
    """A sample's human result line: made (its id), already on Flow, or failed (why)."""
    if event.status == "done":
        return f"sample {event.name} (row {event.row}) -> {event.sample_id}"
    if event.status == "skipped":
        return f"sample {event.name} (row {event.row}) already on Flow ({event.sample_id})"
    return f"sample {event.name} (row {event.row}) failed: {event.error}"

"""The live display's model: engine events in, what a person should see out.

Plain synchronous code with no terminal in it (``_live.py`` draws it with
rich), so it is tested directly. The rules it keeps:

- one phase at a time (scan, upload, samples, archive job, download,
  extract, verify), told apart from the events' order: files planned before
  a transfer starts are the scan; a transfer's kind names its work; a bulk
  transfer goes archive job -> download (the archive's file starts) ->
  extract (the archive is verified and unpacked);
- counters belong to their phase and start from the journal's truth
  (a resumed file counts what was done before), never past their total;
- rows only for work in flight; a finished file's row goes away. A samples
  transfer has a row per sample in flight (its files, its bytes, what it
  is doing), not per file: a sample's files go one after the other, and it
  is the sample a person waits for;
- a phase that did something ends as one line at its final state, handed out
  once by :meth:`DisplayModel.take_ended` to be printed above the live region;
- nothing to show (no phase, no wait) draws nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

from flowxfer.transfer import format_duration, format_rate, format_size
from flowxfer.transfer.events import (
    TRANSFER_EVENTS,
    BytesMoved,
    FileFinished,
    FilesPlanned,
    FileStarted,
    FileVerifying,
    Retrying,
    TransferStarted,
    Waiting,
)

from ._text import execution_text

if TYPE_CHECKING:
    from flowxfer.transfer.events import Event, SampleFinished, SampleStarted

PHASES = ("scan", "upload", "samples", "archive job", "download", "extract", "verify")
#: The phase a transfer of each kind works in once its plan is made.
_WORK_PHASE = {"upload": "upload", "sync": "upload", "download": "download", "bulk": "archive job"}
#: Rows shown at most; the rest are counted on one line.
MAX_ROWS = 8


@dataclass
class Row:
    """One file in flight."""

    path: str
    name: str
    size: int
    done: int
    started: float
    moved: int = 0
    verifying: bool = False


@dataclass
class SampleRow:
    """One sample in flight: its files (sent one after the other) and what it is doing now."""

    row: int
    name: str
    files: list[Row]
    started: float
    sent: int = 0
    state: str = "starting"

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def done(self) -> int:
        return sum(min(f.done, f.size) for f in self.files)

    @property
    def moved(self) -> int:
        return sum(f.moved for f in self.files)


@dataclass
class Phase:
    name: str
    started: float
    files_done: int = 0
    files_total: int = 0
    bytes_done: int = 0
    bytes_total: int = 0
    #: Bytes this run moved (the rate); ``bytes_done`` also counts what earlier runs did.
    moved: int = 0
    failed: int = 0
    #: What the phase works on beyond counters: the job's id and state, the archive's name.
    detail: str = ""
    #: A job's own progress (0..1), where bytes say nothing.
    fraction: float | None = None
    rows: dict[str, Row] = field(default_factory=dict)
    ended: float | None = None
    #: A samples phase counts samples (made, or on Flow from earlier runs) and draws one row per sample.
    samples_done: int = 0
    samples_total: int = 0
    samples_failed: int = 0
    #: Samples this run began to send: a batch that had nothing left to send leaves no line.
    samples_started: int = 0
    samples: dict[int, SampleRow] = field(default_factory=dict)
    #: Every file of the samples started, by path (not drawn: their bytes count for their sample's row).
    reads: dict[str, Row] = field(default_factory=dict)

    @property
    def has_bytes(self) -> bool:
        return self.bytes_total > 0


@dataclass(frozen=True)
class Bar:
    """One line of the live region: a label, a bar (``total`` None: no bar) and the text after it."""

    label: str
    completed: float
    total: float | None
    text: str


class PlainCounters(NamedTuple):
    """What the plain mode's periodic line says: files done and planned, bytes moved in seconds, samples."""

    files_done: int
    files_total: int
    moved: int
    seconds: float
    status: str
    samples_done: int = 0
    samples_total: int = 0


@dataclass(frozen=True)
class View:
    lines: tuple[Bar, ...]
    status: str

    @property
    def empty(self) -> bool:
        return not self.lines and not self.status


class DisplayModel:
    """What the live region shows, kept from the engine's events (see the module doc)."""

    def __init__(self, kind: str = "") -> None:
        self.kind = kind
        self.phase: Phase | None = None
        #: The phase shown last (the current one, or the one that ended last).
        self.last: Phase | None = None
        self._ended: list[Phase] = []
        self._status = ""
        self._status_until = 0.0
        self._transfer_open = False
        #: A samples plan told before its transfer starts: (samples, made already).
        self._samples_plan: tuple[int, int] | None = None

    # -- events in -----------------------------------------------------

    def apply(self, event: Event, now: float) -> None:
        if isinstance(event, BytesMoved):
            self._moved(event.path, event.nbytes)
        elif isinstance(event, FilesPlanned):
            phase = self._phase("scan", now, fresh=self._transfer_open)
            self._transfer_open = False
            phase.files_total = max(phase.files_total, event.files)
            phase.bytes_total = max(phase.bytes_total, event.bytes)
        elif isinstance(event, TransferStarted):
            self.kind = event.kind
            self._transfer_open = True
            phase = self._begin(_WORK_PHASE.get(event.kind, event.kind), now)
            phase.files_total, phase.bytes_total = event.files_total, event.bytes_total
            phase.files_done, phase.bytes_done = event.files_done, event.bytes_done
            if event.kind == "bulk":
                phase.files_total = phase.bytes_total = phase.files_done = phase.bytes_done = 0
            elif event.kind == "samples":
                self._plan_samples(phase)
        elif isinstance(event, FileStarted):
            self._started(event, now)
        elif isinstance(event, FileVerifying):
            if self.kind == "bulk":
                archive = self.phase.detail if self.phase is not None and self.phase.name == "download" else ""
                self._begin("extract", now).detail = archive
            elif self.phase is not None and event.path in self.phase.rows:
                self.phase.rows[event.path].verifying = True
            elif (found := self._in_sample(event.path)) is not None:
                found[0].state = f"verifying {found[1].name}"
        elif isinstance(event, FileFinished):
            self._finished(event, now)
        elif isinstance(event, Waiting):
            self._say(
                f"waiting for {event.rate_class} budget ({event.limit}) — resumes in {format_duration(event.seconds)}",
                now + event.seconds + 1.0,
            )
        elif isinstance(event, Retrying):
            self._say(
                f"retrying {event.what} after {event.reason} (attempt {event.attempt}/{event.max_attempts})",
                now + event.delay + 2.0,
            )
        elif not isinstance(event, TRANSFER_EVENTS):
            self._apply_job_event(event, now)

    def _apply_job_event(self, event: Event, now: float) -> None:
        """A job's, an execution's or a sample's event: their classes are loaded, since one was sent."""
        from flowxfer.transfer.events import (
            ExecutionWaiting,
            JobProgress,
            SampleAsking,
            SampleFinished,
            SamplesPlanned,
            SampleStarted,
        )

        if isinstance(event, SamplesPlanned):
            self._samples_plan = (max(0, event.samples), max(0, event.done))
            if self.phase is not None and self.phase.name == "samples":
                self._plan_samples(self.phase)
        elif isinstance(event, SampleStarted):
            self._sample_started(event, now)
        elif isinstance(event, SampleAsking):
            if self.phase is not None and event.row in self.phase.samples:
                self.phase.samples[event.row].state = "asking the server"
        elif isinstance(event, SampleFinished):
            self._sample_finished(event)
        elif isinstance(event, JobProgress):
            phase = self._phase("archive job", now)
            phase.detail = f"{event.job_id}: {event.status}"
            phase.fraction = max(0.0, min(1.0, event.progress))
        elif isinstance(event, ExecutionWaiting):
            self._say(execution_text(event), now + event.next_poll + 1.0 if event.next_poll is not None else now)

    def _say(self, status: str, until: float) -> None:
        self._status, self._status_until = status, until

    def _started(self, event: FileStarted, now: float) -> None:
        if self.kind == "bulk":
            # The archive's download begins once its job is completed: a phase of its own.
            phase = self._begin("download", now)
            phase.detail = event.name
            phase.files_total, phase.bytes_total, phase.bytes_done = 1, event.size, min(event.bytes_done, event.size)
            return
        phase = self.phase if self.phase is not None else self._begin(_WORK_PHASE.get(self.kind, "upload"), now)
        found = self._in_sample(event.path)
        if found is not None:
            sample, row = found
            row.size, row.done, row.verifying = event.size, min(event.bytes_done, event.size), False
            sample.state = f"sending {row.name}"
            return
        phase.rows[event.path] = Row(event.path, event.name, event.size, min(event.bytes_done, event.size), now)

    def _moved(self, path: str, nbytes: int) -> None:
        phase = self.phase
        if phase is None:
            return
        phase.moved += nbytes
        row = phase.rows.get(path) or phase.reads.get(path)
        if row is not None:
            row.moved += nbytes
            counted = min(nbytes, max(0, row.size - row.done))  # bytes sent again add nothing done
            row.done += counted
        else:
            counted = nbytes
        phase.bytes_done = min(phase.bytes_done + counted, max(phase.bytes_total, phase.bytes_done))

    def _finished(self, event: FileFinished, now: float) -> None:
        phase = self.phase if self.phase is not None else self._phase("scan", now)
        if self.kind == "bulk" and phase.name in ("download", "extract", "archive job"):
            if event.status != "failed":
                phase.bytes_done = phase.bytes_total
                phase.files_done = phase.files_total
            self.end(now)
            return
        found = self._in_sample(event.path)
        row = phase.rows.pop(event.path, None) or phase.reads.pop(event.path, None)
        if event.status == "failed":
            phase.failed += 1
        else:
            remaining = event.size - (row.done if row is not None else 0)
            if found is not None:
                sample, row = found
                row.done = row.size
                sample.sent = min(sample.sent + 1, len(sample.files))
                sample.state = f"sent {row.name}"
            phase.bytes_done += max(0, remaining)
            phase.bytes_total = max(phase.bytes_total, phase.bytes_done)
        phase.files_done += 1
        phase.files_total = max(phase.files_total, phase.files_done)

    # -- samples ---------------------------------------------------------

    def _plan_samples(self, phase: Phase) -> None:
        """The batch's sample counts, told before its transfer started, join its phase (once)."""
        if self._samples_plan is None:
            return
        total, done = self._samples_plan
        self._samples_plan = None
        phase.samples_total = max(total, phase.samples_done + len(phase.samples))
        phase.samples_done = max(phase.samples_done, min(done, phase.samples_total))

    def _sample_started(self, event: SampleStarted, now: float) -> None:
        phase = self.phase
        if phase is None or phase.name != "samples":
            phase = self._begin("samples", now)
            self._plan_samples(phase)
        files = [
            Row(f.path, f.label or os.path.basename(f.path), f.size, min(f.bytes_done, f.size), now)
            for f in event.reads
        ]
        phase.samples[event.row] = SampleRow(
            event.row, event.name, files, now, sent=sum(f.finished for f in event.reads)
        )
        phase.reads.update((row.path, row) for row in files)
        phase.samples_started += 1
        # A sample nobody planned (no plan was told) still counts: the counter stays within its total.
        phase.samples_total = max(phase.samples_total, phase.samples_done + len(phase.samples))

    def _sample_finished(self, event: SampleFinished) -> None:
        """A sample in flight leaves the region; one on Flow before this run was counted by its plan."""
        phase = self.phase
        if phase is None or phase.samples.pop(event.row, None) is None:
            return
        phase.samples_done = min(phase.samples_done + 1, phase.samples_total)
        if event.status == "failed":
            phase.samples_failed += 1

    def _in_sample(self, path: str) -> tuple[SampleRow, Row] | None:
        """The sample in flight that ``path`` is a file of, and that file's row."""
        phase = self.phase
        row = phase.reads.get(path) if phase is not None else None
        if phase is None or row is None:
            return None
        sample = next((s for s in phase.samples.values() if any(f is row for f in s.files)), None)
        return (sample, row) if sample is not None else None

    def _phase(self, name: str, now: float, *, fresh: bool = False) -> Phase:
        """The current phase if it is ``name`` (and not ``fresh`` asked), else a new one."""
        if self.phase is not None and self.phase.name == name and not fresh:
            return self.phase
        return self._begin(name, now)

    def _begin(self, name: str, now: float) -> Phase:
        self.end(now)
        self.phase = self.last = Phase(name, now)
        return self.phase

    def end(self, now: float) -> None:
        """The current phase is over (a transfer ended, a step of a story begins)."""
        phase, self.phase = self.phase, None
        self._status = ""
        if phase is None:
            return
        phase.ended = now
        phase.rows.clear()
        phase.samples.clear()
        phase.reads.clear()
        # A scan is told by the phase after it; a phase that did nothing leaves no line (a samples
        # batch whose samples were all made before did nothing, whatever its counters say).
        if phase.name == "samples" and phase.samples_total:
            did = bool(phase.samples_started or phase.moved)
        else:
            did = bool(phase.files_done or phase.bytes_done or phase.detail)
        if phase.name != "scan" and did:
            self._ended.append(phase)

    # -- what to show --------------------------------------------------

    def take_ended(self) -> list[Bar]:
        """Lines for the phases ended since the last call, at their final state (each handed out once)."""
        ended, self._ended = self._ended, []
        return [phase_bar(phase, phase.ended or phase.started) for phase in ended]

    def status(self, now: float) -> str:
        """A wait or a retry while it lasts; else what an archive job is doing."""
        if now < self._status_until:
            return self._status
        phase = self.phase
        if phase is not None and phase.name == "archive job" and phase.detail:
            return f"archive job {phase.detail} {(phase.fraction or 0) * 100:.0f}%"
        return ""

    def plain_counters(self, now: float) -> PlainCounters:
        """The periodic plain line's numbers, of the last phase."""
        phase = self.last
        if phase is None:
            return PlainCounters(0, 0, 0, 0.0, self.status(now))
        return PlainCounters(
            min(phase.files_done, phase.files_total),
            phase.files_total,
            phase.moved,
            (phase.ended or now) - phase.started,
            self.status(now),
            min(phase.samples_done, phase.samples_total),
            phase.samples_total,
        )

    def view(self, now: float) -> View:
        status = self._status if now < self._status_until else ""
        phase = self.phase
        if phase is None or not (
            phase.files_total or phase.bytes_total or phase.detail or phase.rows or phase.samples_total
        ):
            return View((), status)
        lines = [phase_bar(phase, now)]
        samples = sorted(phase.samples.values(), key=lambda s: (s.started, s.row))
        rows = sorted(phase.rows.values(), key=lambda r: r.started)
        shown = [sample_bar(sample, now) for sample in samples[:MAX_ROWS]]
        shown += [row_bar(row, now) for row in rows[: MAX_ROWS - len(shown)]]
        lines += shown
        if len(samples) + len(rows) > len(shown):
            what = "sample(s)" if samples else "file(s)"
            lines.append(Bar("  …", 0, None, f"and {len(samples) + len(rows) - len(shown)} more {what} in flight"))
        return View(tuple(lines), status)


def _rate(nbytes: int, seconds: float, least: float) -> float | None:
    return nbytes / seconds if seconds >= least and nbytes else None


def _progress_text(done: int, total: int, moved: int, seconds: float, ended: bool) -> str:
    text = f"{format_size(min(done, total))}/{format_size(total)}"
    # A live rate over less than half a second swings wildly; an ended phase's is its average.
    rate = _rate(moved, seconds, 0.05 if ended else 0.5)
    if ended:
        return f"{text} in {format_duration(seconds)}" + (f", {format_rate(rate)}" if rate else "")
    if rate:
        text += f"  {format_rate(rate)}"
        if total > done:
            text += f"  {format_duration((total - done) / rate)} left"
    return text


def phase_bar(phase: Phase, now: float) -> Bar:
    """The phase's own line: what it is, how far (files and bytes of this phase only)."""
    seconds = max(0.0, (phase.ended or now) - phase.started)
    ended = phase.ended is not None
    if phase.name == "scan":
        return Bar("scan", 0, None, f"{phase.files_total} file(s), {format_size(phase.bytes_total)} found")
    if phase.name == "archive job":
        text = f"{phase.detail}" if phase.detail else "created"
        if phase.fraction is not None and not ended:
            text += f" {phase.fraction * 100:.0f}%"
        if ended:
            text += f" in {format_duration(seconds)}"
        return Bar("archive job", phase.fraction or 0.0, 1.0, text)
    if phase.name == "extract":
        what = f"{phase.detail}: " if phase.detail else ""
        text = f"{what}unpacked and verified in {format_duration(seconds)}" if ended else f"{what}unpacking, verifying"
        return Bar("extract", 1.0 if ended else 0.0, 1.0 if ended else None, text)
    parts = []
    if phase.samples_total:
        parts.append(f"{min(phase.samples_done, phase.samples_total)}/{phase.samples_total} samples")
        if phase.samples_failed:
            parts.append(f"{phase.samples_failed} failed")
    else:
        if phase.files_total and phase.name != "download" or phase.files_total > 1:
            parts.append(f"{min(phase.files_done, phase.files_total)}/{phase.files_total} files")
        if phase.failed:
            parts.append(f"{phase.failed} failed")
    if phase.has_bytes:
        parts.append(_progress_text(phase.bytes_done, phase.bytes_total, phase.moved, seconds, ended))
    elif ended:
        parts.append(f"in {format_duration(seconds)}")
    label = phase.name
    if phase.detail:
        parts.insert(0, phase.detail)
    if phase.has_bytes:
        return Bar(label, min(phase.bytes_done, phase.bytes_total), phase.bytes_total, "  ".join(parts))
    if phase.samples_total:
        return Bar(label, min(phase.samples_done, phase.samples_total), phase.samples_total, "  ".join(parts))
    return Bar(label, min(phase.files_done, phase.files_total), phase.files_total or None, "  ".join(parts))


def sample_bar(sample: SampleRow, now: float) -> Bar:
    """A sample in flight: its files sent, what it is doing, its bytes (all its files')."""
    size, done = sample.size, sample.done
    parts = [f"{min(sample.sent, len(sample.files))}/{len(sample.files)} files", sample.state]
    if size:
        parts.append(_progress_text(done, size, sample.moved, now - sample.started, ended=False))
    return Bar(f"  {sample.name}", min(done, size), size or None, "  ".join(parts))


def row_bar(row: Row, now: float) -> Bar:
    text = _progress_text(row.done, row.size, row.moved, now - row.started, ended=False)
    if row.verifying:
        text += "  verifying"
    return Bar(f"  {row.name}", min(row.done, row.size), row.size or None, text)

"""The live region at the bottom of a terminal: the display model drawn with rich, redrawn on a clock.

Everything printed while it lives (result lines and narration on stdout,
notices on stderr, the final line of each ended phase) goes *above* it: the
region is erased, the line written and flushed, the region drawn again
below. So nothing is ever overwritten, and nothing is glued to a bar: the
region always ends with a newline, leaving the cursor at the start of the
line under it. Imported only when bars are drawn (rich costs start-up time).
"""

from __future__ import annotations

import shutil
import threading
import time
from typing import TextIO

from rich.console import Console
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from ._display import Bar, DisplayModel, Phase
from ._text import visible

#: Redraws per second.
_FPS = 8
_BAR_WIDTH = 32
_MIN_BAR_WIDTH = 10
#: The label column at least this wide: the phases' lines align ("archive job" is the longest).
_PHASE_WIDTH = 11
_HIDE_CURSOR, _SHOW_CURSOR, _ERASE_DOWN = "\x1b[?25l", "\x1b[?25h", "\x1b[J"


class LiveRegion:
    """Draws ``model`` on ``stream`` (a terminal) until :meth:`stop`; ``lock`` guards the model too."""

    def __init__(self, stream: TextIO, model: DisplayModel, lock: threading.RLock) -> None:
        self.stream = stream
        self.model = model
        self.lock = lock
        self.console = Console(file=stream, highlight=False)
        self._height = 0
        self._drawn = ""
        self._drawn_phase: Phase | None = None
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="flowxfer-live", daemon=True)

    def start(self) -> None:
        self._write(_HIDE_CURSOR)
        self._thread.start()

    def stop(self) -> None:
        """End the current phase (its line stays, above), erase the region, give the cursor back."""
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)
        with self.lock:
            self.model.end(time.monotonic())
            self._erase()
            self._print_ended()
            self._write(_SHOW_CURSOR)

    def print_above(self, text: str, stream: TextIO) -> None:
        """``text`` (one or more lines) on ``stream``, above the region, which is drawn again below it."""
        with self.lock:
            self._erase()
            self._print_ended()
            print(text, file=stream, flush=True)
            # The same phase: its last drawing (a line per finished file must not cost a render);
            # another phase: drawn anew, never the rows of the phase that ended.
            self._draw(self._drawn if self.model.phase is self._drawn_phase else self._render_model())

    def refresh(self) -> None:
        with self.lock:
            text = self._render_model()
            self._erase()
            self._print_ended()
            self._draw(text)

    def _render_model(self) -> str:
        self._drawn_phase = self.model.phase
        view = self.model.view(time.monotonic())
        return self._render(view.lines, view.status)

    # -- drawing -------------------------------------------------------

    def _run(self) -> None:
        while not self._stopped.wait(1 / _FPS):
            try:
                self.refresh()
            except Exception:  # noqa: BLE001 - a drawing bug must never break a transfer
                pass

    def _width(self) -> int:
        return shutil.get_terminal_size((100, 24)).columns

    def _render(self, bars: tuple[Bar, ...], status: str) -> str:
        """The region's text: at most the terminal's height less two, every line shorter than its width."""
        if not bars and not status:
            return ""
        width = self._width()
        room = max(1, shutil.get_terminal_size((100, 24)).lines - 2)
        if status:
            bars = bars[: max(0, room - 1)]
        else:
            bars = bars[:room]
        table = self._table(bars, width)
        with self.console.capture() as captured:
            self.console.print(table, width=width - 1, crop=True, overflow="ellipsis", no_wrap=True)
            if status:
                self.console.print(
                    Text(visible(status), style="yellow"), width=width - 1, crop=True, overflow="ellipsis", no_wrap=True
                )
        return captured.get()

    def _table(self, bars: tuple[Bar, ...], width: int) -> Table:
        """Label, bar, text; the bar gives way first on a narrow terminal, then the label, then the text."""
        label_width = min(max([len(bar.label) for bar in bars] + [_PHASE_WIDTH]), max(_PHASE_WIDTH, width // 3))
        text_width = max((len(bar.text) for bar in bars), default=0)
        bar_width = max(_MIN_BAR_WIDTH, min(_BAR_WIDTH, width - 3 - label_width - text_width))
        table = Table.grid(padding=(0, 1))
        table.add_column(width=label_width, no_wrap=True, overflow="ellipsis")
        table.add_column(width=bar_width, no_wrap=True)
        table.add_column(no_wrap=True, overflow="ellipsis")
        for bar in bars:
            drawn = ProgressBar(total=bar.total, completed=bar.completed, width=bar_width) if bar.total else Text("")
            table.add_row(Text(visible(bar.label)), drawn, Text(visible(bar.text)))
        return table

    def _print_ended(self) -> None:
        """Ended phases' lines, at their final state, where the region was (the region is erased)."""
        ended = self.model.take_ended()
        if ended:
            self._write(self._render(tuple(ended), ""))

    def _draw(self, text: str) -> None:
        self._drawn = text
        self._height = text.count("\n")
        self._write(text)

    def _erase(self) -> None:
        if self._height:
            self._write(f"\r\x1b[{self._height}A{_ERASE_DOWN}")
            self._height = 0

    def _write(self, text: str) -> None:
        if text:
            self.stream.write(text)
            self.stream.flush()

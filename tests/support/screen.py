"""What a person sees: a command run in a real pty, its bytes replayed on a virtual terminal (pyte).

Stable API:

``run_on_screen(argv, env, *, columns=120, rows=200, within=120, on_output=None) -> Screen``
    Runs ``argv`` with stdin, stdout and stderr all on one pty of that size
    (as in a terminal window), feeding every byte it writes to a
    :class:`pyte.Screen`. ``Screen.frames`` holds the screen's text after each
    read (what a person could have seen at that moment), ``Screen.lines`` the
    final screen, ``Screen.code`` the exit code. ``on_output(screen, process)``
    is called after each read (to send a signal once something shows).

``counters(line) -> list[tuple[float, float]]``
    Every ``done/total`` counter on a line: ``3/47 files``, ``2/6 samples``, ``17.3/50.8 MiB``,
    ``1.4 GiB/1.5 GiB``, in bytes for sizes.

The screen is tall (200 rows) so nothing scrolls off it: the final screen
is the whole session, top to bottom.
"""

from __future__ import annotations

import fcntl
import os
import re
import select
import signal
import struct
import subprocess
import termios
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pyte

_UNITS = {"B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "TiB": 1024**4}
_SIZE = r"(\d+(?:\.\d+)?) ?(B|KiB|MiB|GiB|TiB)?"
_COUNTER = re.compile(rf"(\d+)/(\d+) (?:files|samples)|([\d,]+)/([\d,]+) bytes|(?<![\w.,]){_SIZE}/{_SIZE}(?![\w.,])")


@dataclass
class Screen:
    code: int | None = None
    frames: list[list[str]] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "\n".join(line.rstrip() for line in self.lines).rstrip("\n")

    def where(self, needle: str) -> int:
        """The row of the final screen holding ``needle`` (-1 when none does)."""
        return next((row for row, line in enumerate(self.lines) if needle in line), -1)


def counters(line: str) -> list[tuple[float, float]]:
    found = []
    for match in _COUNTER.finditer(line):
        files_done, files_total, bytes_done, bytes_total, done, done_unit, total, total_unit = match.groups()
        if files_done is not None:
            found.append((float(files_done), float(files_total)))
        elif bytes_done is not None:
            found.append((float(bytes_done.replace(",", "")), float(bytes_total.replace(",", ""))))
        elif total_unit is not None:  # without a unit it is a date or a ratio, not a size counter
            found.append((float(done) * _UNITS[done_unit or total_unit], float(total) * _UNITS[total_unit]))
    return found


def run_on_screen(
    argv: Sequence[str],
    env: dict[str, str],
    *,
    columns: int = 120,
    rows: int = 200,
    within: float = 120,
    on_output: Callable[[Screen, subprocess.Popen[bytes]], None] | None = None,
) -> Screen:
    leader, follower = os.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    environment = {**env, "TERM": "xterm-256color", "COLUMNS": str(columns), "LINES": str(rows)}
    process = subprocess.Popen(
        list(argv), env=environment, stdin=follower, stdout=follower, stderr=follower, start_new_session=True
    )
    os.close(follower)
    terminal = pyte.Screen(columns, rows)
    stream = pyte.ByteStream(terminal)
    screen = Screen()
    deadline = time.monotonic() + within
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.2)
            if not ready:
                if process.poll() is not None:
                    break
                continue
            try:
                piece = os.read(leader, 65536)
            except OSError:  # EIO: the child closed its side
                break
            if not piece:
                break
            stream.feed(piece)
            screen.frames.append(list(terminal.display))
            if on_output is not None:
                on_output(screen, process)
        else:
            os.killpg(process.pid, signal.SIGKILL)
            raise AssertionError(f"{argv} did not end within {within} s:\n" + "\n".join(terminal.display))
        screen.code = process.wait(timeout=30)
    finally:
        os.close(leader)
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    screen.lines = list(terminal.display)
    return screen

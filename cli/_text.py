"""Text shown to a person: names from disk or a server escaped, an execution's poll said.

Apart from the display model (:mod:`._display`) because every command prints
lines, while only a drawn display (progress bars, plain progress lines)
needs the model: a ``--no-progress``, ``-q`` or ``--log-format json`` run
never loads it (issue 20: a command's fixed cost).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from flowxfer.transfer import format_duration

if TYPE_CHECKING:
    from flowxfer.transfer.events import ExecutionWaiting

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


def execution_text(event: ExecutionWaiting) -> str:
    """One poll of a pipeline execution, as said to a person."""
    status = event.status if event.status not in ("", "-") else "running"
    text = f"execution {event.execution_id} ({event.identifier}): {status}"
    if event.next_poll is not None:
        text += f", waited {format_duration(event.waited)}, next poll in {format_duration(event.next_poll)}"
    return text

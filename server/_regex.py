"""Evaluating user-supplied regular expressions without letting one stall the server.

Python's ``re`` backtracks, so a pattern like ``(a+)+$`` can take
exponential time, and a running match cannot be interrupted in a thread.
Patterns are therefore capped in length, compiled here (syntax errors are a
400) and matched in a short-lived child interpreter (``python -I -S``, ~20 ms
to start) that is killed when it overruns its time budget; the request then
gets a 400. A plain subprocess rather than multiprocessing, so nothing
depends on how the embedding program's ``__main__`` is written.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sys

from aiohttp import web

from ._http import bad_request

_WORKER = (
    "import json, re, sys\n"
    "job = json.load(sys.stdin)\n"
    "rx = re.compile(job['pattern'])\n"
    "json.dump([i for i, n in enumerate(job['names']) if rx.search(n)], sys.stdout)\n"
)


def check_pattern(pattern: str, max_length: int) -> None:
    """400 unless ``pattern`` is short enough and compiles."""
    if len(pattern) > max_length:
        bad_request(f"pattern longer than {max_length} characters")
    try:
        re.compile(pattern)
    except (re.error, RecursionError, OverflowError, ValueError) as exc:
        bad_request(f"bad pattern: {exc}")


class RegexWorker:
    """Matches patterns in a child process with a time budget; a few at a time."""

    def __init__(self, timeout: float, concurrency: int = 2) -> None:
        self.timeout = timeout
        self._slots = asyncio.Semaphore(concurrency)

    async def matching(self, pattern: str, names: list[str]) -> list[int]:
        """Indexes of ``names`` in which ``pattern`` finds a match (``re.search``).

        :raises ApiError: 400 when the match overran the time budget.
        """
        if not names:
            return []
        payload = json.dumps({"pattern": pattern, "names": names}).encode()
        async with self._slots:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-I",
                "-S",
                "-c",
                _WORKER,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL,
            )
            try:
                out, _ = await asyncio.wait_for(proc.communicate(payload), self.timeout)
            except TimeoutError:
                bad_request(f"pattern took longer than {self.timeout:g} s to evaluate; simplify it")
            finally:
                if proc.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                    await proc.wait()
        if proc.returncode != 0:
            bad_request("pattern could not be evaluated")
        hits = json.loads(out)
        return [int(i) for i in hits]

    async def close(self) -> None:
        """Nothing persistent to stop (children live only as long as their request)."""


#: The application's regex worker (``/data/search``'s ``regex`` filter).
REGEX = web.AppKey("flowxfer_regex", RegexWorker)

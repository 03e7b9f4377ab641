"""A sequencing core's fleet in miniature: many run folders, and hosts cron-syncing them (issue 21).

Stable API (the fleet test and ``benchmarks/bench_fleet.py`` use it)::

    make_runs(root, count, *, fastq_size=4096, samples=2, lanes=1) -> list[Path]
        ``count`` finished Illumina runs under ``root``, each with a v2 sample
        sheet whose samples are named after the run (``R07Sample1``), so that
        every run makes samples of its own: with the generator's names every
        run would name ``Sample1`` and later runs would rightly find it made.

    python -m tests.support.fleet RUN... -- FLOWXFER-ARGS...
        One host: passes over the runs in order, as cron would (``for run in
        /seq/*/``), running ``flowxfer FLOWXFER-ARGS`` with ``{run}`` replaced
        by the run, until every run has exited 0 (a run another host holds
        exits 75 and is tried again on the next pass). The CLI runs inside this
        process, so a host pays Python's start-up once and not per run, which
        on two shared cores is the difference between seconds and a minute;
        its environment (``FLOWXFER_HOST_ID``, the journal, the server) is the
        host's. One JSON line per run and pass on stdout: ``{"run", "pass",
        "code", "seconds"}``; exit 1 on any other exit code or after
        :data:`MAX_PASSES`.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import sys
import time
from pathlib import Path

from tests.support.runfolder import make_run_folder

#: Passes a host makes before it gives up on runs other hosts still hold.
MAX_PASSES = 20
#: Exit code of a run another process holds (EX_TEMPFAIL): try it on the next pass.
HELD = 75


def run_name(index: int) -> str:
    return f"2412{index % 100:02d}_A01234_{index:04d}_BFLEET{index:03d}"


def make_runs(root: Path, count: int, *, fastq_size: int = 4096, samples: int = 2, lanes: int = 1) -> list[Path]:
    """``count`` complete runs under ``root`` (see the module doc); no small files, so nothing clashes by name."""
    runs = []
    for index in range(count):
        run = make_run_folder(
            root,
            lanes=lanes,
            samples=samples,
            fastq_size=fastq_size,
            small_files=0,
            name=run_name(index),
            seed=index,
            sample_sheet="v2",
        )
        prefix = f"R{index:02d}"
        for fastq in sorted((run / "Fastq").rglob("Sample*.fastq.gz")):
            fastq.rename(fastq.with_name(prefix + fastq.name))
        sheet = run / "SampleSheet.csv"
        sheet.write_text(re.sub(r",Sample(\d+),", rf",{prefix}Sample\1,", sheet.read_text()))
        runs.append(run)
    return runs


def _invoke(arguments: list[str]) -> int:
    """``flowxfer ARGUMENTS`` in this process; its exit code (its output is discarded)."""
    from flowxfer.cli import main

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            main.main(arguments, prog_name="flowxfer")
        except SystemExit as done:
            code = done.code
            return code if isinstance(code, int) else (0 if code is None else 1)
    return 0


def host(runs: list[str], template: list[str]) -> int:
    """Pass over ``runs`` until none is held by another host (see the module doc); 0, or 1 on a failure.

    A later pass goes over only the runs the last one found held: a run that
    exited 0 is, as this host sees it, all on Flow (had another host held it,
    it would have exited 75), so cron's next pass over it would send nothing.
    """
    pending = list(runs)
    for number in range(1, MAX_PASSES + 1):
        held = []
        for run in pending:
            started = time.monotonic()
            code = _invoke([part.replace("{run}", run) for part in template])
            seconds = time.monotonic() - started
            print(json.dumps({"run": run, "pass": number, "code": code, "seconds": round(seconds, 3)}), flush=True)
            if code == HELD:
                held.append(run)
            elif code != 0:
                return 1
        if not held:
            return 0
        pending = held
        time.sleep(0.5)
    return 1


if __name__ == "__main__":
    given = sys.argv[1:]
    split = given.index("--")
    raise SystemExit(host(given[:split], given[split + 1 :]))

"""The synthetic run-folder generator, which lives in the package (``flowxfer demo`` uses it).

Re-exported here so tests and benchmarks keep importing it from ``tests.support``.
"""

from __future__ import annotations

from flowxfer.cli._runfolder import (
    MARKERS,
    RUN_NAME,
    complete_run,
    illumina_sample_sheet,
    make_run_folder,
    run_files,
)

__all__ = ["MARKERS", "RUN_NAME", "complete_run", "illumina_sample_sheet", "make_run_folder", "run_files"]

"""Registering a pipeline run offline: ``flowxfer admin execution add``.

This server runs no pipelines, so a lab demo or a test registers what a run
would have left behind: its pipeline, its sample, the files each process
produced (copied in as ready data, hashed) and when it turns ``OK``,
``ERROR`` or ``CANCELED`` (a *schedule*; see :mod:`._store_executions`).
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from flowxfer._os import fsync_dir
from flowxfer.protocol import checksum_of, filename_problem, format_checksum, new_hasher

from ._ids import is_id, new_id
from ._store import Store
from ._store_executions import TERMINAL, NewExecution, NewOutput

_ADJECTIVES = (
    "small",
    "brave",
    "calm",
    "eager",
    "quiet",
    "bold",
    "keen",
    "lucid",
    "merry",
    "noble",
    "proud",
    "swift",
    "tidy",
    "vivid",
    "wise",
    "zesty",
)
_NOUNS = (
    "meucci",
    "curie",
    "darwin",
    "franklin",
    "hodgkin",
    "mendel",
    "pasteur",
    "sanger",
    "turing",
    "volta",
    "watson",
    "crick",
    "lovelace",
    "noether",
    "ramon",
    "mcclintock",
)
#: Statuses a schedule may name: pending ("" or "-", as hosted shows it) and the terminal ones.
STATUSES = ("", "-", *TERMINAL)
#: The chunk map's unit for registered outputs (an upload's, with 1 MiB chunks).
CHUNK = 1024 * 1024


@dataclass(frozen=True)
class ExecutionSpec:
    """What ``admin execution add`` was told.

    :ivar outputs: ``(process name, local file)`` in order.
    :ivar schedule: ``(seconds after now, status)``; empty: ``OK`` at once.
    """

    owner: str
    pipeline: str
    version: str
    sample_id: str | None = None
    outputs: Sequence[tuple[str, Path]] = ()
    schedule: Sequence[tuple[float, str]] = ()
    public: bool = False
    identifier: str | None = None
    stdout: str = ""
    stderr: str = ""
    filetypes: dict[str, str] = field(default_factory=dict)


def schedule_problem(schedule: Sequence[tuple[float, str]]) -> str | None:
    """Why a schedule is refused: unknown statuses, times going back, anything after a terminal status."""
    last = -1.0
    for position, (after, status) in enumerate(schedule):
        if status not in STATUSES:
            return f"unknown status {status!r} (use one of: {', '.join(repr(s) for s in STATUSES)})"
        if after < 0 or after < last:
            return "the schedule's times must start at 0 or later and never go back"
        if status in TERMINAL and position != len(schedule) - 1:
            return f"nothing can follow the terminal status {status}"
        last = after
    return None


def _identifier(store: Store) -> str:
    for _ in range(50):
        candidate = f"{secrets.choice(_ADJECTIVES)}_{secrets.choice(_NOUNS)}"
        if not store.identifier_taken(candidate):
            return candidate
    return f"{secrets.choice(_ADJECTIVES)}_{secrets.choice(_NOUNS)}_{secrets.token_hex(3)}"


def _filetype(name: str) -> str:
    for suffix in (".gz", ".bz2", ".zst"):
        name = name.removesuffix(suffix)
    return name.rpartition(".")[2].lower() if "." in name else ""


def _copy_in(source: Path, data_dir: Path, data_id: str) -> tuple[int, str, list[tuple[int, int, str]]]:
    """Copy ``source`` to ``data/<data_id>`` durably; (size, checksum, chunk map).

    The chunk map is what an upload in :data:`CHUNK` pieces would have left:
    downloads with extensions verify and resume by it.
    """
    final = data_dir / data_id
    partial = data_dir / f".{data_id}.admin"
    whole = new_hasher()
    chunks: list[tuple[int, int, str]] = []
    size = 0
    with open(source, "rb") as src, open(partial, "wb") as dst:
        while block := src.read(CHUNK):
            dst.write(block)
            whole.update(block)
            chunks.append((size, len(block), checksum_of(block)))
            size += len(block)
        dst.flush()
        os.fsync(dst.fileno())
    os.replace(partial, final)
    fsync_dir(data_dir)
    return size, format_checksum(whole.hexdigest()), chunks


def register_execution(store: Store, data_dir: Path, spec: ExecutionSpec) -> tuple[str, str]:
    """Copy the outputs in and record the run; (its id, its identifier).

    :raises ValueError: a bad name, schedule, user, sample or file (nothing is recorded).
    """
    problem = schedule_problem(spec.schedule)
    if problem:
        raise ValueError(problem)
    if not store.user_exists(spec.owner):
        raise ValueError(f"no such user: {spec.owner}")
    for label, text in (("pipeline name", spec.pipeline), ("pipeline version", spec.version)):
        if not text.strip() or len(text) > 255:
            raise ValueError(f"a {label} is 1 to 255 characters")
    if spec.sample_id is not None and not is_id(spec.sample_id):
        raise ValueError(f"no sample {spec.sample_id}")
    for process, path in spec.outputs:
        if not process.strip() or len(process) > 255:
            raise ValueError("a process name is 1 to 255 characters")
        if not path.is_file():
            raise ValueError(f"{path}: not a file")
        problem = filename_problem(path.name)
        if problem:
            raise ValueError(f"{path.name}: {problem}")
    now = time.time()
    schedule = tuple((now + after, status) for after, status in spec.schedule) or ((now, "OK"),)
    if schedule[0][0] > now:
        schedule = ((now, ""), *schedule)
    data_dir.mkdir(parents=True, exist_ok=True)
    outputs = []
    for process, path in spec.outputs:
        data_id = new_id()
        size, checksum, chunks = _copy_in(path, data_dir, data_id)
        outputs.append(
            NewOutput(
                process,
                data_id,
                path.name,
                size,
                checksum,
                spec.filetypes.get(path.name) or _filetype(path.name),
                tuple(chunks),
            )
        )
    execution_id = new_id()
    identifier = spec.identifier or _identifier(store)
    try:
        store.add_execution(
            NewExecution(
                execution_id,
                identifier,
                spec.owner,
                spec.pipeline,
                spec.version,
                spec.sample_id,
                not spec.public,
                schedule,
                now,
                stdout=spec.stdout,
                stderr=spec.stderr,
            ),
            outputs,
        )
    except ValueError:
        for output in outputs:
            (data_dir / output.data_id).unlink(missing_ok=True)
        raise
    return execution_id, identifier

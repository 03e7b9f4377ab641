"""How hosted Flow shows a data: the full record of ``GET /data/<id>`` and the row of ``/data/search``.

The field lists are those of Goodwright's docs of the hosted API
(``goodwright/flow-skills``, ``endpoints/data.md``). Hosted Flow's server is
not public, so a few values are inferred rather than copied; each inference
is named where it is made and listed in ``docs/protocol.md``.

What links a data to the rest of Flow (its category, sample, fileset,
project, paired file) is gathered by :func:`links_of` alone: it is the one
place where samples and projects are wired in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ._state import State
from ._store import DataRow, Store

#: Hosted Flow's data categories (``/data/search?category=``).
GENERIC, ANNOTATION, MULTIPLEXED, DEMULTIPLEXED = 1, 2, 3, 4

#: Suffixes that compress whatever they wrap: ``x.fastq.gz`` is a fastq, and binary.
_COMPRESSED = frozenset({"gz", "bz2", "xz", "zst", "zip", "bgz"})
#: Filetypes whose bytes are text. Inferred: Flow's own list is not public; these
#: are the text formats its pipelines read and write.
_TEXT = frozenset(
    {
        "txt",
        "csv",
        "tsv",
        "fastq",
        "fq",
        "fasta",
        "fa",
        "fna",
        "sam",
        "vcf",
        "bed",
        "gtf",
        "gff",
        "gff3",
        "json",
        "html",
        "htm",
        "md",
        "log",
        "yaml",
        "yml",
        "xml",
        "sh",
        "nf",
        "py",
        "r",
        "tab",
        "out",
        "err",
    }
)

#: Data types with a name of their own (``GET /data/types``); any other identifier
#: a data was uploaded with is listed under its own name.
KNOWN_TYPES: dict[str, tuple[str, str]] = {
    "fastq": ("FASTQ", "Sequencing reads with per-base qualities"),
    "fasta": ("FASTA", "Sequences without qualities"),
    "bam": ("BAM", "Aligned reads, binary"),
    "bed": ("BED", "Genomic intervals"),
    "vcf": ("VCF", "Variant calls"),
    "csv": ("CSV", "Comma-separated table"),
}


def filetype_of(filename: str) -> str:
    """Flow's filetype string: the last extension, lower case, under any compression suffix.

    Inferred from the docs' examples (``"fastq"``, ``"html"``): ``reads.fastq.gz`` is ``"fastq"``.
    """
    parts = filename.lower().split(".")[1:]
    while len(parts) > 1 and parts[-1] in _COMPRESSED:
        parts.pop()
    return parts[-1] if parts else ""


def is_binary(filename: str) -> bool:
    """Whether a file's bytes are not text, judged by its name (no byte is read).

    Inferred: hosted Flow stores the flag at upload; we have no such flag, and
    reading a file's head on every ``GET /data/<id>`` would cost a disk read.
    """
    suffix = filename.lower().rpartition(".")[2] if "." in filename else ""
    return suffix in _COMPRESSED or filetype_of(filename) not in _TEXT


def data_type_json(identifier: str | None) -> dict[str, str] | None:
    if identifier is None:
        return None
    name, description = KNOWN_TYPES.get(identifier, (identifier, ""))
    return {"identifier": identifier, "name": name, "description": description}


@dataclass(frozen=True)
class Links:
    """What ties one data to the rest of Flow; ``None`` where nothing does."""

    category: int = GENERIC
    sample: dict[str, str] | None = None
    fileset: dict[str, str] | None = None
    project: dict[str, str] | None = None
    paired: dict[str, str] | None = None


async def links_of(store: Store, rows: Sequence[DataRow]) -> list[Links]:
    """The category, sample, fileset, project and paired file of each of ``rows``, in order (one store call).

    A fileset is named after its sample (ours have no names of their own).
    """
    found = await store.run(store.data_links, [row.id for row in rows])
    links = []
    for row in rows:
        link = found.get(row.id)
        if link is None:  # removed since the page was read: shown as it stood, alone
            links.append(Links())
            continue
        sample = {"id": link.sample[0], "name": link.sample[1]} if link.sample else None
        links.append(
            Links(
                category=link.category,
                sample=sample,
                fileset={"id": link.fileset_id, "name": sample["name"]} if link.fileset_id and sample else None,
                project={"id": link.project[0], "name": link.project[1]} if link.project else None,
                paired={"id": link.paired[0], "filename": link.paired[1]} if link.paired else None,
            )
        )
    return links


def _created(row: DataRow) -> int:
    return int(row.created)


def data_record(row: DataRow, links: Links, *, level: int, extensions: bool) -> dict[str, Any]:
    """``GET /data/<id>``: hosted Flow's full record, plus ``checksum`` [ext].

    ``absolute_path`` is the data's path under the server's root, not the
    host's absolute path: hosted Flow's is internal too, and ours need not
    tell a caller where the root lies.
    """
    body: dict[str, Any] = {
        "id": row.id,
        "filename": row.filename,
        "filetype": filetype_of(row.filename),
        "size": row.size,
        "is_binary": is_binary(row.filename),
        "is_directory": row.is_directory,
        "is_ready": True,
        "created": _created(row),
        "category": links.category,
        "data_type": data_type_json(row.data_type),
        "private": row.private,
        "absolute_path": f"data/{row.id}",
        "owner": {"username": row.owner, "name": row.owner, "image": None},
        "group_owner": None,
        "paired": links.paired,
        "fileset": links.fileset,
        "execution": None,
        "sample": links.sample,
        "project": links.project,
        "can_edit": level >= 2,
    }
    if extensions:
        body["checksum"] = row.checksum
    return body


def search_item(row: DataRow, links: Links, *, user: str, paired: bool, extensions: bool) -> dict[str, Any]:
    """One row of ``/data/search``: fewer fields than the record, as hosted Flow's ``data_list()``."""
    body: dict[str, Any] = {
        "id": row.id,
        "filename": row.filename,
        "size": row.size,
        "absolute_path": f"data/{row.id}",
        "created": _created(row),
        "pipeline_name": None,
        "process_execution_name": None,
        "sample_name": links.sample["name"] if links.sample else None,
        "owner_name": row.owner,
        "can_delete": bool(user) and row.owner == user,
    }
    if paired:
        body["paired_filename"] = links.paired["filename"] if links.paired else None
    if extensions:
        body["checksum"] = row.checksum
    return body


async def records_of(state: State, rows: Sequence[DataRow], level: int | None = None) -> list[dict[str, Any]]:
    """The full records of ready data (see :func:`data_record`); ``level`` None: the owner's.

    Shared by the data routes and ``PATCH /data/<id>`` (permissions), which is
    why it lives here and not with either.
    """
    links = await links_of(state.store, rows)
    return [
        data_record(row, link, level=3 if level is None else level, extensions=state.config.extensions)
        for row, link in zip(rows, links, strict=True)
    ]

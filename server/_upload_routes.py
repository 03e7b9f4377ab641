"""What the four upload endpoints add to the one chunk machinery (:class:`._uploads.UploadManager`).

``POST /upload``, ``/upload/sample``, ``/upload/multiplexed`` and
``/upload/annotation`` speak the same chunk protocol; each differs only in
the extra form fields it reads, what it checks before a byte is stored
(:meth:`UploadRoute.prepare`, on every chunk) and when the file is whole
(:meth:`UploadRoute.check_file`), what it records with the final commit
(a category, a sample) and what its answer adds. The manager asks its route
at those points and does everything else once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._annotation import SheetLimits, check_sheet, read_sheet
from ._catalog import check_sample_fields
from ._config import MULTIPART_OVERHEAD, SAMPLE_MULTIPART_OVERHEAD
from ._http import ShapedError
from ._ids import is_id, new_id
from ._store_samples import ANNOTATION, DEMULTIPLEXED, GENERIC_KIND, MULTIPLEXED, DataKind, NewSample

if TYPE_CHECKING:
    from ._state import State

#: The chunk protocol's own fields: never metadata.
BASE_FIELDS = frozenset(
    {
        "filename",
        "expected_file_size",
        "is_last",
        "data",
        "data_type",
        "is_directory",
        "checksum",
        "file_checksum",
        "blob",
    }
)
#: The words a form boolean may be (case-insensitive; empty is false), as flowbio writes them.
TRUE_WORDS = frozenset({"true", "1", "yes", "on"})
FALSE_WORDS = frozenset({"false", "0", "no", "off", ""})


def form_bool(fields: Mapping[str, str], name: str) -> bool:
    """A form boolean as flowbio (httpx) writes it; anything else is a 400 in Django's shape."""
    word = fields.get(name, "").strip().lower()
    if word in TRUE_WORDS:
        return True
    if word not in FALSE_WORDS:
        raise ShapedError(400, {"error": {name: ["Must be true or false."]}})
    return False


@dataclass(frozen=True)
class Prepared:
    """What a route decided for one chunk: the new row's kind and, on a sample's final chunk, the sample."""

    kind: DataKind = GENERIC_KIND
    sample: NewSample | None = None
    answer: dict[str, Any] = field(default_factory=dict)


class UploadRoute:
    """``POST /upload``: the chunk protocol alone. Subclasses add their fields and checks."""

    name = "upload"
    path = "/upload"
    #: Form fields that may repeat (one part per list item).
    repeatable: frozenset[str] = frozenset()
    #: Fields that must have arrived before the blob streams straight into place.
    before_blob: frozenset[str] = frozenset()
    #: A replay of a complete upload's last chunk answers what the lost answer said.
    replayable = False
    #: A chunk of a parallel-chunk upload [ext] (:mod:`._upload_parallel` places and records it).
    parallel = False

    def __init__(self, state: State) -> None:
        self.state = state

    def max_parts(self) -> int:
        return self.state.config.max_form_parts

    def overhead(self) -> int:
        return MULTIPART_OVERHEAD

    async def prepare(
        self,
        user: str,
        fields: Mapping[str, str],
        lists: Mapping[str, Sequence[str]],
        *,
        final: bool,
        data_id: str | None,
        offset: int,
    ) -> Prepared:
        """Check the chunk's route fields before a byte is stored.

        :raises ApiError: the refusal to answer.
        """
        return Prepared()

    async def check_file(self, path: Path, filename: str, fields: Mapping[str, str]) -> None:
        """The whole file is at ``path``, not yet recorded: refuse it here if it must be."""

    async def replay(self, data_id: str) -> dict[str, Any]:
        """What the last chunk's answer added, for a replay of it."""
        return {}


class SampleRoute(UploadRoute):
    """``POST /upload/sample``: each file of a sample; the last one's final chunk creates the sample."""

    name = "upload_sample"
    path = "/upload/sample"
    repeatable = frozenset({"previous_data"})
    before_blob = frozenset({"sample_name", "sample_type", "is_last_sample"})
    replayable = True
    #: The sample form's own fields (the rest are metadata).
    RESERVED = BASE_FIELDS | {"sample_name", "sample_type", "is_last_sample", "previous_data", "project", "organism"}

    def max_parts(self) -> int:
        return self.state.config.max_sample_form_parts

    def overhead(self) -> int:
        return SAMPLE_MULTIPART_OVERHEAD

    async def prepare(
        self,
        user: str,
        fields: Mapping[str, str],
        lists: Mapping[str, Sequence[str]],
        *,
        final: bool,
        data_id: str | None,
        offset: int,
    ) -> Prepared:
        store = self.state.store
        if data_id is not None and is_id(data_id) and await store.run(store.sample_of_data, data_id) is not None:
            # Its sample exists: this can only be a replay of the final chunk, which the
            # manager answers from the record (or refuses) without creating anything.
            return Prepared(DataKind(DEMULTIPLEXED))
        checked, error = check_sample_fields(self.state.catalog, fields, self.RESERVED)
        if error is not None:
            raise ShapedError(400, {"error": error})
        assert checked is not None
        last_file = form_bool(fields, "is_last_sample")
        previous = [item.strip() for item in lists.get("previous_data", ())]
        bad = [item for item in previous if not is_id(item)]
        if bad:
            raise ShapedError(400, {"error": {"previous_data": [f"{item[:40]!r} is not a data id" for item in bad]}})
        problems = await store.run(store.sample_link_problems, user, checked.project_id, previous)
        if data_id is not None and data_id in previous:
            problems.setdefault("previous_data", []).append(f"{data_id} is the file being uploaded")
        if problems:
            raise ShapedError(400, {"error": problems})
        sample = None
        if final and last_file:
            sample = NewSample(
                new_id(),
                new_id(),
                user,
                checked.name,
                checked.sample_type,
                checked.project_id,
                checked.organism,
                checked.metadata,
                tuple(previous),
            )
        return Prepared(DataKind(DEMULTIPLEXED), sample, {"sample_id": sample.id if sample else None})

    async def replay(self, data_id: str) -> dict[str, Any]:
        store = self.state.store
        return {"sample_id": await store.run(store.sample_completed_by, data_id)}


class MultiplexedRoute(UploadRoute):
    """``POST /upload/multiplexed``: reads of many samples; the second file names the first (``reads1``)."""

    name = "upload_multiplexed"
    path = "/upload/multiplexed"

    async def prepare(
        self,
        user: str,
        fields: Mapping[str, str],
        lists: Mapping[str, Sequence[str]],
        *,
        final: bool,
        data_id: str | None,
        offset: int,
    ) -> Prepared:
        reads1 = fields.get("reads1", "").strip() or None
        if reads1 is not None:
            store = self.state.store
            row = await store.run(store.get_data, reads1) if is_id(reads1) else None
            category = await store.run(store.data_category, reads1) if row is not None else None
            if row is None or row.owner != user or row.state != "ready" or category != MULTIPLEXED or reads1 == data_id:
                raise ShapedError(400, {"error": {"reads1": ["Not a ready multiplexed reads file of yours"]}})
        return Prepared(DataKind(MULTIPLEXED, reads1))


class AnnotationRoute(UploadRoute):
    """``POST /upload/annotation``: a multiplexed upload's sheet, checked whole when its last chunk arrives."""

    name = "upload_annotation"
    path = "/upload/annotation"

    async def prepare(
        self,
        user: str,
        fields: Mapping[str, str],
        lists: Mapping[str, Sequence[str]],
        *,
        final: bool,
        data_id: str | None,
        offset: int,
    ) -> Prepared:
        form_bool(fields, "ignore_warnings")
        limit = self.state.config.max_annotation_bytes
        if offset > limit:
            raise ShapedError(
                400, {"validation": [{"row": None, "message": f"annotation sheets are at most {limit} bytes"}]}
            )
        return Prepared(DataKind(ANNOTATION))

    async def check_file(self, path: Path, filename: str, fields: Mapping[str, str]) -> None:
        config = self.state.config
        limits = SheetLimits(config.max_annotation_bytes, config.max_annotation_rows, config.max_annotation_columns)
        sheet = await asyncio.get_running_loop().run_in_executor(self.state.io, read_sheet, path, filename, limits)
        errors, warnings = check_sheet(self.state.catalog, sheet)
        if errors:
            raise ShapedError(400, {"validation": errors})
        if warnings and not form_bool(fields, "ignore_warnings"):
            raise ShapedError(400, {"warnings": warnings})


class ParallelChunkRoute(UploadRoute):
    """``POST /upload/parallel/<id>`` [ext]: one chunk of a parallel-chunk upload, at its slot."""

    name = "upload_parallel_chunk"
    path = "/upload/parallel/{data_id:[0-9]+}"
    parallel = True


#: The parallel-chunk endpoints' route names (served only with extensions).
PARALLEL_ROUTE_NAMES = frozenset({"upload_parallel", ParallelChunkRoute.name, "upload_parallel_finish"})

ROUTES: tuple[type[UploadRoute], ...] = (UploadRoute, SampleRoute, MultiplexedRoute, AnnotationRoute)

"""The sample catalog: sample types, organisms, metadata attributes, and the rules a sample's fields obey.

Pure: loading a catalog (the default one, modelled on hosted Flow's, or
``serve --catalog FILE.json``) and checking a sample's form fields against
it. What needs the database (the project's owner, earlier files) is checked
by the store (:func:`._store_samples.link_problems`).

A catalog file is JSON::

    {
        "sample_types": [{"identifier": "RNA-Seq", "name": "RNA-Seq", "description": "..."}],
        "organisms": [{"id": "Hs", "name": "Human", "latin_name": "Homo sapiens"}],
        "attributes": [
            {
                "identifier": "strandedness",
                "name": "Strandedness",
                "description": "...",
                "required": false,
                "required_for": ["RNA-Seq"],
                "options": ["forward", "reverse", "unstranded"],
                "allow_user_terms": false,
                "allow_annotation": false,
            }
        ],
    }
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ANNOTATION_SUFFIX = "__annotation"
#: Sample names: no spaces (hosted Flow refuses them), no control characters, a sane length.
MAX_NAME = 250
MAX_VALUE = 1000
_IDENTIFIER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,99}$")


class CatalogError(ValueError):
    """A catalog file that cannot be used (said with its path and the offending entry)."""


@dataclass(frozen=True)
class SampleType:
    identifier: str
    name: str
    description: str = ""


@dataclass(frozen=True)
class Organism:
    id: str
    name: str
    latin_name: str


@dataclass(frozen=True)
class Attribute:
    identifier: str
    name: str
    description: str = ""
    required: bool = False
    required_for: tuple[str, ...] = ()
    options: tuple[str, ...] | None = None
    allow_user_terms: bool = False
    allow_annotation: bool = False

    def is_required(self, sample_type: str) -> bool:
        return self.required or sample_type in self.required_for


@dataclass(frozen=True)
class Catalog:
    sample_types: tuple[SampleType, ...]
    organisms: tuple[Organism, ...]
    attributes: tuple[Attribute, ...]
    _types: dict[str, SampleType] = field(init=False, repr=False, compare=False)
    _organisms: dict[str, Organism] = field(init=False, repr=False, compare=False)
    _attributes: dict[str, Attribute] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_types", {t.identifier: t for t in self.sample_types})
        object.__setattr__(self, "_organisms", {o.id: o for o in self.organisms})
        object.__setattr__(self, "_attributes", {a.identifier: a for a in self.attributes})

    def sample_type(self, identifier: str) -> SampleType | None:
        return self._types.get(identifier)

    def organism(self, organism_id: str) -> Organism | None:
        return self._organisms.get(organism_id)

    def attribute(self, identifier: str) -> Attribute | None:
        return self._attributes.get(identifier)


DEFAULT = Catalog(
    sample_types=(
        SampleType("ATAC-Seq", "ATAC-Seq", "Chromatin accessibility by transposase-accessible sequencing."),
        SampleType("ChIP-Seq", "ChIP-Seq", "Chromatin immunoprecipitation followed by sequencing."),
        SampleType("RNA-Seq", "RNA-Seq", "Sequencing of a sample's RNA."),
        SampleType("generic", "Generic", "Any other kind of sample."),
    ),
    organisms=(Organism("Hs", "Human", "Homo sapiens"), Organism("Mm", "Mouse", "Mus musculus")),
    attributes=(
        Attribute(
            "strandedness",
            "Strandedness",
            "Which strand the reads come from.",
            required_for=("RNA-Seq",),
            options=("forward", "reverse", "unstranded"),
        ),
        Attribute(
            "purification_target",
            "Purification target",
            "The protein the antibody targets.",
            required_for=("ChIP-Seq",),
        ),
        Attribute("condition", "Condition", "The experimental condition.", allow_annotation=True),
        Attribute("scientist", "Scientist", "Who prepared the sample."),
        Attribute("sequencer", "Sequencer", "The instrument that read it."),
    ),
)


def _text(entry: Mapping[str, Any], key: str, where: str, *, required: bool = True) -> str:
    value = entry.get(key, None if required else "")
    if not isinstance(value, str) or (required and not value):
        raise CatalogError(f"{where}: {key} must be a non-empty string")
    return value


def _flag(entry: Mapping[str, Any], key: str, where: str) -> bool:
    value = entry.get(key, False)
    if not isinstance(value, bool):
        raise CatalogError(f"{where}: {key} must be true or false")
    return value


def _strings(entry: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = entry.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise CatalogError(f"{where}: {key} must be a list of strings")
    return tuple(value)


def parse_catalog(document: Any, source: str = "catalog") -> Catalog:
    """A :class:`Catalog` from its JSON document.

    :raises CatalogError: naming the entry at fault.
    """
    if not isinstance(document, dict):
        raise CatalogError(f"{source}: expected a JSON object")
    lists: dict[str, list[Any]] = {}
    for key in ("sample_types", "organisms", "attributes"):
        value = document.get(key, [])
        if not isinstance(value, list) or not all(isinstance(e, dict) for e in value):
            raise CatalogError(f"{source}: {key} must be a list of objects")
        lists[key] = value
    types = []
    for i, e in enumerate(lists["sample_types"]):
        where = f"{source}: sample_types[{i}]"
        types.append(
            SampleType(
                _identifier(e, "identifier", where),
                _text(e, "name", where),
                _text(e, "description", where, required=False),
            )
        )
    organisms = []
    for i, e in enumerate(lists["organisms"]):
        where = f"{source}: organisms[{i}]"
        organisms.append(
            Organism(
                _identifier(e, "id", where), _text(e, "name", where), _text(e, "latin_name", where, required=False)
            )
        )
    known_types = {t.identifier for t in types}
    attributes = []
    for i, e in enumerate(lists["attributes"]):
        where = f"{source}: attributes[{i}]"
        required_for = _strings(e, "required_for", where)
        unknown = set(required_for) - known_types
        if unknown:
            raise CatalogError(f"{where}: required_for names unknown sample types {sorted(unknown)}")
        options = None if e.get("options") is None else _strings(e, "options", where)
        attributes.append(
            Attribute(
                _identifier(e, "identifier", where),
                _text(e, "name", where),
                _text(e, "description", where, required=False),
                _flag(e, "required", where),
                required_for,
                options,
                _flag(e, "allow_user_terms", where),
                _flag(e, "allow_annotation", where),
            )
        )
    for key, items in (
        ("sample_types", [t.identifier for t in types]),
        ("organisms", [o.id for o in organisms]),
        ("attributes", [a.identifier for a in attributes]),
    ):
        if len(set(items)) != len(items):
            raise CatalogError(f"{source}: {key} has duplicate identifiers")
    return Catalog(tuple(types), tuple(organisms), tuple(attributes))


def _identifier(entry: Mapping[str, Any], key: str, where: str) -> str:
    value = _text(entry, key, where)
    if not _IDENTIFIER.match(value) or value.endswith(ANNOTATION_SUFFIX):
        raise CatalogError(f"{where}: {key} {value!r} must be letters, digits, _ . + - (at most 100)")
    return value


def load_catalog(path: Path) -> Catalog:
    """Read and check a catalog file (blocking; at start-up).

    :raises CatalogError: unreadable, not JSON, or not a catalog.
    """
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CatalogError(f"cannot read the catalog {path}: {exc}") from None
    return parse_catalog(document, str(path))


@dataclass(frozen=True)
class SampleFields:
    """A sample's fields once checked against the catalog."""

    name: str
    sample_type: str
    project_id: str | None
    organism: str | None
    #: ``{attribute: {"value": ..., "annotation": ...}}``.
    metadata: dict[str, dict[str, str | None]]


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a sample (None: it can)."""
    if not name:
        return "This field is required."
    if " " in name:
        return "Sample names cannot contain spaces"
    if len(name) > MAX_NAME:
        return f"Ensure this field has no more than {MAX_NAME} characters."
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        return "Sample names cannot contain control characters"
    return None


def check_sample_fields(
    catalog: Catalog, fields: Mapping[str, str], reserved: frozenset[str]
) -> tuple[SampleFields | None, str | dict[str, list[str]] | None]:
    """Check a sample's form fields; (the sample's fields, None) or (None, the Django-style error).

    ``reserved``: the form's own field names, which are not metadata. Fields
    that name no attribute are ignored, as hosted Flow (a Django view reading
    the keys it knows) is inferred to do; a ``<id>__annotation`` without its
    attribute's value, or for an attribute that allows none, is refused.
    """
    sample_type = fields.get("sample_type", "").strip()
    if not sample_type or catalog.sample_type(sample_type) is None:
        return None, "Invalid sample type"
    problems: dict[str, list[str]] = {}
    name = fields.get("sample_name", "")
    problem = name_problem(name)
    if problem:
        problems["sample_name"] = [problem]
    organism = fields.get("organism", "").strip() or None
    if organism is not None and catalog.organism(organism) is None:
        problems["organism"] = ["Invalid organism"]
    project = fields.get("project", "").strip() or None
    metadata: dict[str, dict[str, str | None]] = {}
    for key, value in fields.items():
        if key in reserved or key.endswith(ANNOTATION_SUFFIX):
            continue
        attribute = catalog.attribute(key)
        if attribute is None or not value.strip():
            continue
        value = value.strip()
        if len(value) > MAX_VALUE:
            problems[key] = [f"Ensure this field has no more than {MAX_VALUE} characters."]
        elif attribute.options is not None and not attribute.allow_user_terms and value not in attribute.options:
            problems[key] = [f"'{value}' is not one of: {', '.join(attribute.options)}"]
        else:
            metadata[key] = {"value": value, "annotation": None}
    for key, value in fields.items():
        if not key.endswith(ANNOTATION_SUFFIX) or not value.strip():
            continue
        base = key[: -len(ANNOTATION_SUFFIX)]
        attribute = catalog.attribute(base)
        if attribute is None or base not in metadata:
            problems[key] = [f"an annotation needs a value for {base}"]
        elif not attribute.allow_annotation:
            problems[key] = [f"{base} does not allow an annotation"]
        elif len(value) > MAX_VALUE:
            problems[key] = [f"Ensure this field has no more than {MAX_VALUE} characters."]
        else:
            metadata[base]["annotation"] = value.strip()
    for attribute in catalog.attributes:
        if (
            attribute.is_required(sample_type)
            and attribute.identifier not in metadata
            and attribute.identifier not in problems
        ):
            problems[attribute.identifier] = [
                "This field is required." if attribute.required else f"required for {sample_type}"
            ]
    if problems:
        return None, problems
    return SampleFields(name, sample_type, project, organism, metadata), None

"""What a Flow server accepts for a sample: its catalog, as the engine reads it.

Built from the answers of ``GET /samples/types``, ``GET /samples/metadata``
(and ``GET /samples/metadata/<id>/options`` for each attribute with closed
options), ``GET /organisms`` and every page of ``GET /projects/owned``
(``samples.md``, "Catalog and listings"); the engine fetches them, this
module only reads them, so validation (:mod:`._validate`) stays pure.

An attribute's options are closed (a value must be one of them) only when
it ``has_options`` and does not ``allow_user_terms``: flowbio fetches the
options in exactly that case and treats every other attribute as free text.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ._errors import ProtocolError

__all__ = ["Attribute", "Catalog", "attributes_with_options"]


@dataclass(frozen=True)
class Attribute:
    """A metadata attribute.

    :ivar required: required for every sample.
    :ivar required_for: the sample types for which it is required.
    :ivar options: the values allowed, or None for any value.
    """

    identifier: str
    name: str = ""
    required: bool = False
    required_for: frozenset[str] = frozenset()
    options: tuple[str, ...] | None = None
    allow_user_terms: bool = False
    allow_annotation: bool = False

    def is_required(self, sample_type: str) -> bool:
        return self.required or sample_type in self.required_for


@dataclass(frozen=True)
class Catalog:
    """Sample types, metadata attributes, organisms and the caller's projects.

    :ivar sample_types: identifier -> name.
    :ivar attributes: identifier -> :class:`Attribute`, in the server's order.
    :ivar organisms: id -> (name, latin name).
    :ivar projects: id -> name (the projects the caller owns).
    """

    sample_types: Mapping[str, str]
    attributes: Mapping[str, Attribute]
    organisms: Mapping[str, tuple[str, str]]
    projects: Mapping[str, str]

    @classmethod
    def from_api(
        cls,
        types: Any,
        metadata: Any,
        options: Mapping[str, Any],
        organisms: Any,
        projects: Sequence[Any],
    ) -> Catalog:
        """The catalog from the server's answers, as decoded JSON.

        :param types: ``GET /samples/types``.
        :param metadata: ``GET /samples/metadata``.
        :param options: attribute id -> ``GET /samples/metadata/<id>/options``, for
            every id of :func:`attributes_with_options`.
        :param organisms: ``GET /organisms``.
        :param projects: the ``projects`` of every page of ``GET /projects/owned``, together.
        :raises ProtocolError: an answer does not have the documented shape.
        """
        sample_types = {
            _text(t, "identifier", "/samples/types"): str(t.get("name") or "") for t in _list(types, "/samples/types")
        }
        attributes = {}
        for item in _list(metadata, "/samples/metadata"):
            identifier = _text(item, "identifier", "/samples/metadata")
            closed = bool(item.get("has_options")) and not item.get("allow_user_terms")
            values: tuple[str, ...] | None = None
            if closed:
                if identifier not in options:
                    raise ProtocolError(f"no options were fetched for {identifier!r}, which has closed options")
                answer = options[identifier]
                listed = answer.get("options") if isinstance(answer, dict) else answer
                where = f"/samples/metadata/{identifier}/options"
                values = tuple(_text(o, "value", where) for o in _list(listed, where))
            links = item.get("sample_type_links") or []
            attributes[identifier] = Attribute(
                identifier=identifier,
                name=str(item.get("name") or ""),
                required=bool(item.get("required")),
                required_for=frozenset(
                    _text(link, "sample_type_identifier", "/samples/metadata")
                    for link in _list(links, "/samples/metadata")
                    if link.get("required")
                ),
                options=values,
                allow_user_terms=bool(item.get("allow_user_terms")),
                allow_annotation=bool(item.get("allow_annotation")),
            )
        return cls(
            sample_types=sample_types,
            attributes=attributes,
            organisms={
                _text(o, "id", "/organisms"): (str(o.get("name") or ""), str(o.get("latin_name") or ""))
                for o in _list(organisms, "/organisms")
            },
            projects={
                _text(p, "id", "/projects/owned"): str(p.get("name") or "")
                for p in _list(list(projects), "/projects/owned")
            },
        )


def attributes_with_options(metadata: Any) -> list[str]:
    """The attribute ids whose options must be fetched (``has_options`` and no user terms).

    :raises ProtocolError: the answer does not have the documented shape.
    """
    return [
        _text(item, "identifier", "/samples/metadata")
        for item in _list(metadata, "/samples/metadata")
        if item.get("has_options") and not item.get("allow_user_terms")
    ]


def _list(value: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise ProtocolError(f"{where} answered {type(value).__name__}, not a list of objects")
    return value


def _text(item: dict[str, Any], key: str, where: str) -> str:
    value = item.get(key)
    if not isinstance(value, str) or not value:
        raise ProtocolError(f"{where}: {key!r} is {value!r}, not a non-empty string")
    return value

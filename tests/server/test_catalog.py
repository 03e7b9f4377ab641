"""The catalog's pure rules: loading a catalog, checking a sample's fields, reading and checking sheets."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flowxfer.server._annotation import SheetLimits, check_sheet, read_sheet, template_columns
from flowxfer.server._catalog import DEFAULT, CatalogError, check_sample_fields, parse_catalog
from flowxfer.server._upload_routes import SampleRoute

RESERVED = SampleRoute.RESERVED
LIMITS = SheetLimits(1 << 20, 100, 50)


def test_a_catalog_document_round_trips() -> None:
    document = {
        "sample_types": [
            {"identifier": t.identifier, "name": t.name, "description": t.description} for t in DEFAULT.sample_types
        ],
        "organisms": [{"id": o.id, "name": o.name, "latin_name": o.latin_name} for o in DEFAULT.organisms],
        "attributes": [
            {
                "identifier": a.identifier,
                "name": a.name,
                "description": a.description,
                "required": a.required,
                "required_for": list(a.required_for),
                "options": None if a.options is None else list(a.options),
                "allow_user_terms": a.allow_user_terms,
                "allow_annotation": a.allow_annotation,
            }
            for a in DEFAULT.attributes
        ],
    }
    assert parse_catalog(document) == DEFAULT


@pytest.mark.parametrize(
    "document",
    [
        [],
        {"sample_types": {}},
        {"organisms": [{"id": "", "name": "x"}]},
        {"sample_types": [{"identifier": "a", "name": "A"}, {"identifier": "a", "name": "B"}]},
        {"attributes": [{"identifier": "x__annotation", "name": "x"}]},
        {"attributes": [{"identifier": "x", "name": "x", "required": "yes"}]},
        {"attributes": [{"identifier": "x", "name": "x", "options": [1, 2]}]},
    ],
)
def test_bad_catalogs_say_what_is_wrong(document: object) -> None:
    with pytest.raises(CatalogError):
        parse_catalog(document)


@given(extra=st.dictionaries(st.from_regex(r"\A[a-z]{1,12}\Z"), st.text(max_size=20), max_size=8))
def test_fields_that_name_no_attribute_are_ignored(extra: dict[str, str]) -> None:
    fields = {k: v for k, v in extra.items() if DEFAULT.attribute(k) is None and k not in RESERVED}
    fields.update(sample_name="s1", sample_type="RNA-Seq", strandedness="forward")
    checked, error = check_sample_fields(DEFAULT, fields, RESERVED)
    assert error is None and checked is not None
    assert set(checked.metadata) == {"strandedness"}


@given(
    sample_type=st.sampled_from([t.identifier for t in DEFAULT.sample_types]),
    given_values=st.dictionaries(
        st.sampled_from([a.identifier for a in DEFAULT.attributes]), st.sampled_from(["forward", "x"]), max_size=5
    ),
)
def test_required_attributes_and_options(sample_type: str, given_values: dict[str, str]) -> None:
    checked, error = check_sample_fields(
        DEFAULT, {"sample_name": "s", "sample_type": sample_type, **given_values}, RESERVED
    )
    missing = [
        a.identifier for a in DEFAULT.attributes if a.is_required(sample_type) and a.identifier not in given_values
    ]
    bad = [
        k
        for k, v in given_values.items()
        if DEFAULT.attribute(k).options  # type: ignore[union-attr]
        and v not in DEFAULT.attribute(k).options
    ]  # type: ignore[union-attr,operator]
    if missing or bad:
        assert checked is None and isinstance(error, dict) and set(error) == set(missing) | set(bad)
    else:
        assert error is None and checked is not None and set(checked.metadata) == set(given_values)


def test_csv_with_a_bom_and_an_xlsx_read_alike(tmp_path: Path) -> None:
    from openpyxl import Workbook

    (tmp_path / "s").write_bytes("\ufeffname,barcode,organism\nA,ACGT,Hs\n,,\nB,TTTT+GGGG,Mm\n".encode())
    from_csv = read_sheet(tmp_path / "s", "sheet.CSV", LIMITS)
    workbook = Workbook()
    sheet = workbook.active
    assert sheet is not None
    for row in (["name", "barcode", "organism"], ["A", "ACGT", "Hs"], [None, None, None], ["B", "TTTT+GGGG", "Mm"]):
        sheet.append(row)
    workbook.save(tmp_path / "x")
    from_xlsx = read_sheet(tmp_path / "x", "sheet.xlsx", LIMITS)
    assert (
        from_csv.rows
        == from_xlsx.rows
        == [
            (2, {"name": "A", "barcode": "ACGT", "organism": "Hs"}),
            (4, {"name": "B", "barcode": "TTTT+GGGG", "organism": "Mm"}),
        ]
    )
    assert check_sheet(DEFAULT, from_csv) == ([], [])


def test_template_columns() -> None:
    assert template_columns(DEFAULT, "generic") == ["name", "barcode", "organism", "project"]
    chip = template_columns(DEFAULT, "ChIP-Seq")
    assert "purification_target" in chip and "strandedness" not in chip and "condition__annotation" in chip

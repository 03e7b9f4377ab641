"""Bounds of the sample uploads, as for ``/upload``: form parts, field sizes, sheet sizes; refusals leave nothing."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp

from tests.server.conftest import Api
from tests.server.test_samples import sample_chunk
from tests.support.server import running_server

ATTRIBUTES = 60


def _wide_catalog(path: Path) -> Path:
    path.write_text(
        json.dumps(
            {
                "sample_types": [{"identifier": "wide", "name": "Wide"}],
                "attributes": [
                    {"identifier": f"a{i}", "name": f"A {i}", "allow_annotation": True, "required": i < 5}
                    for i in range(ATTRIBUTES)
                ],
            }
        )
    )
    return path


async def _nothing_left(api: Api, root: Path) -> None:
    assert (await api.call("GET", "/data/owned", "alice")).json()["count"] == 0
    assert (await api.call("GET", "/samples/owned", "alice")).json()["count"] == 0
    assert not list((root / "partial").iterdir())


async def test_sixty_attributes_with_annotations_fit(
    server_root: Path, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    async with running_server(server_root, catalog=_wide_catalog(tmp_path / "c.json")) as srv:
        api = Api(http, srv.base_url, srv.users)
        fields = {"sample_type": "wide"}
        for i in range(ATTRIBUTES):
            fields[f"a{i}"] = f"value {i} " + "x" * 200
            fields[f"a{i}__annotation"] = "note " + "y" * 200
        previous = []
        for n in range(5):
            earlier = await sample_chunk(api, "alice", b"r", last_file=False, fields=fields, filename=f"r{n}.fq")
            assert earlier.status == 200, earlier.body
            previous.append(str(earlier.json()["id"]))
        made = await sample_chunk(api, "alice", b"last", previous=previous, fields=fields)
        assert made.status == 200, made.body
        detail = (await api.call("GET", f"/samples/{made.json()['sample_id']}", "alice")).json()
        assert len(detail["metadata"]) == ATTRIBUTES and detail["metadata"]["a59"]["annotation"].startswith("note")
        assert len(detail["filesets"][0]["data"]) == 6
        missing = await sample_chunk(api, "alice", b"x", fields={"sample_type": "wide", "a0": "only one"})
        assert missing.status == 400 and sorted(missing.json()["error"]) == ["a1", "a2", "a3", "a4"]


async def test_part_and_field_bounds(server_root: Path, http: aiohttp.ClientSession) -> None:
    async with running_server(server_root) as srv:
        api = Api(http, srv.base_url, srv.users)
        many = {f"junk{i}": "v" for i in range(srv.config.max_sample_form_parts)}
        too_many = await sample_chunk(api, "alice", b"x", fields=many)
        assert too_many.status == 400 and too_many.json()["error"]
        plain = await api.chunk("alice", b"x", is_last=True, extra={f"junk{i}": "v" for i in range(40)})
        assert plain.status == 400  # /upload keeps its own bound
        for fields in (
            {"sample_name": "n" * 251},
            {"condition": "c" * 1001},
            {"scientist": "s" * (srv.config.max_form_field_bytes + 1)},
            {"is_last_sample": "maybe"},
            {"sample_name": "tab\there"},
            {"sample_name": ""},
        ):
            answer = await sample_chunk(api, "alice", b"x", fields=fields)
            assert answer.status == 400 and answer.json()["error"], fields
        await _nothing_left(api, srv.root)


async def test_annotation_sheet_bounds(server_root: Path, http: aiohttp.ClientSession) -> None:
    async with running_server(server_root, max_annotation_bytes=2048, max_annotation_rows=5) as srv:
        api = Api(http, srv.base_url, srv.users)
        rows = "".join(f"S{i},ACGT{'ACGT' * i}\n" for i in range(6))
        answer = await api.chunk(
            "alice", f"name,barcode\n{rows}".encode(), filename="s.csv", is_last=True, path="/upload/annotation"
        )
        assert answer.status == 400 and "more than 5 rows" in answer.json()["validation"][0]["message"]
        big = await api.chunk(
            "alice", b"name,barcode\n" + b"x" * 3000, filename="s.csv", is_last=True, path="/upload/annotation"
        )
        assert big.status == 400 and "at most 2048 bytes" in big.json()["validation"][0]["message"]
        first = await api.chunk("alice", b"n" * 2049, filename="s.csv", path="/upload/annotation")
        assert first.status == 200  # the first chunk of a sheet, not yet known too big
        beyond = await api.chunk(
            "alice",
            b"n",
            filename="s.csv",
            offset=2049,
            data_id=str(first.json()["id"]),
            is_last=True,
            path="/upload/annotation",
        )
        assert beyond.status == 400 and "validation" in beyond.json()
        assert (await api.call("GET", "/data/owned", "alice")).json()["count"] == 0

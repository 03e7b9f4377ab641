"""``POST /upload/sample`` and the sample listings, spoken by hand: replays, links, refusals, visibility."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pytest

from flowxfer.server._ids import new_id
from flowxfer.server._store import ChunkRow, DataRow, Store
from flowxfer.server._store_samples import NewSample, SampleRefused
from tests.server.conftest import Answer, Api
from tests.support.server import RunningServer, running_server

CHUNK = 32 * 1024
RNA = {"sample_type": "RNA-Seq", "strandedness": "forward"}


async def sample_chunk(
    api: Api,
    user: str,
    blob: bytes,
    *,
    name: str = "S",
    last_file: bool = True,
    previous: Sequence[str] = (),
    offset: int = 0,
    data_id: str = "",
    is_last: bool = True,
    filename: str = "r.fq",
    fields: dict[str, str] | None = None,
) -> Answer:
    extra = {"sample_name": name, "is_last_sample": "true" if last_file else "false", **RNA, **(fields or {})}
    return await api.chunk(
        user,
        blob,
        filename=filename,
        offset=offset,
        data_id=data_id,
        is_last=is_last,
        extra=extra,
        path="/upload/sample",
        lists={"previous_data": list(previous)},
    )


async def upload_file(api: Api, user: str, content: bytes, **kwargs: object) -> dict[str, object]:
    """One file of a sample in chunks of CHUNK; the last answer."""
    data_id, offset = "", 0
    while True:
        blob = content[offset : offset + CHUNK]
        last = offset + len(blob) >= len(content)
        answer = await sample_chunk(api, user, blob, offset=offset, data_id=data_id, is_last=last, **kwargs)  # type: ignore[arg-type]
        assert answer.status == 200, answer.body
        body = answer.json()
        assert set(body) >= {"id", "data_id", "sample_id", "filename", "size", "is_ready"}
        data_id, offset = str(body["id"]), offset + len(blob)
        if last:
            return dict(body)
        assert body["sample_id"] is None


async def test_a_replayed_final_chunk_answers_the_same_sample(server: RunningServer, api: Api) -> None:
    reads1, reads2 = os.urandom(2 * CHUNK + 5), os.urandom(3 * CHUNK)
    first = await upload_file(api, "alice", reads1, last_file=False, filename="r1.fq")
    assert first["sample_id"] is None and first["is_ready"] is True
    last = await upload_file(api, "alice", reads2, previous=[str(first["id"])], filename="r2.fq")
    assert isinstance(last["sample_id"], str) and last["sample_id"]
    replay = await sample_chunk(
        api,
        "alice",
        reads2[2 * CHUNK :],
        offset=2 * CHUNK,
        data_id=str(last["id"]),
        previous=[str(first["id"])],
        filename="r2.fq",
    )
    assert replay.status == 200 and replay.json()["sample_id"] == last["sample_id"]
    assert replay.json()["id"] == last["id"] and replay.json()["size"] == len(reads2)
    other = await sample_chunk(
        api,
        "alice",
        b"different",
        offset=2 * CHUNK,
        data_id=str(last["id"]),
        previous=[str(first["id"])],
        filename="r2.fq",
    )
    assert other.status == 400  # not the chunk it got: refused, as for any complete upload
    owned = (await api.call("GET", "/samples/owned", "alice")).json()
    assert owned["count"] == 1
    # A replay of the first file's final chunk says what it said then: no sample.
    again = await sample_chunk(
        api, "alice", reads1[2 * CHUNK :], offset=2 * CHUNK, data_id=str(first["id"]), last_file=False, filename="r1.fq"
    )
    assert again.status == 200 and again.json()["sample_id"] is None


async def test_previous_data_must_be_the_callers_ready_unlinked_data(server: RunningServer, api: Api) -> None:
    mine = str((await upload_file(api, "alice", b"a" * 10, last_file=False))["id"])
    bobs = str((await upload_file(api, "bob", b"b" * 10, last_file=False))["id"])
    open_one = await sample_chunk(api, "alice", b"c" * 10, is_last=False, last_file=False)
    unready = str(open_one.json()["id"])
    for previous, why in (
        ([bobs], "not your data"),
        ([unready], "not ready"),
        ([mine, mine], "given twice"),
        (["12"], "not a data id"),
        ([new_id()], "not your data"),
    ):
        answer = await sample_chunk(api, "alice", b"x", previous=previous)
        assert answer.status == 400, previous
        assert why in str(answer.json()["error"]["previous_data"]), answer.body
    done = await sample_chunk(api, "alice", b"z", previous=[mine])
    assert done.status == 200 and done.json()["sample_id"]
    linked = await sample_chunk(api, "alice", b"y", previous=[mine], name="S2")
    assert linked.status == 400 and "already in a sample" in str(linked.json()["error"])
    owned = (await api.call("GET", "/samples/owned", "alice")).json()
    assert owned["count"] == 1


def test_the_link_is_checked_again_in_the_commit(tmp_path: Path) -> None:
    """The store refuses a sample whose earlier file was linked since the chunks were checked; nothing stays."""
    store = Store(tmp_path)
    try:

        def commit(sample: NewSample | None = None) -> str:
            data_id = new_id()
            row = DataRow(data_id, "alice", "f", None, False, True, "uploading", 0, None, 0.0, 0.0, None)
            store.commit_chunk(data_id, 0, ChunkRow(0, 1, "c"), new=row, final_checksum="c", ready=True, sample=sample)
            return data_id

        def sample(previous: str) -> NewSample:
            return NewSample(new_id(), new_id(), "alice", "S", "RNA-Seq", None, None, {}, (previous,))

        earlier = commit()
        first = commit(sample(earlier))
        with pytest.raises(SampleRefused) as caught:
            commit(sample(earlier))
        assert "already in a sample" in str(caught.value.error)
        assert len(store.all_data_ids()) == 2  # the refused chunk, its row and its sample rolled back together
        assert store.sample_of_data(first) is not None and list(store.integrity_problems()) == []
    finally:
        store.close()


async def test_samples_are_private_to_their_owner(server: RunningServer, api: Api) -> None:
    made = await sample_chunk(api, "alice", b"x")
    sample_id = made.json()["sample_id"]
    assert (await api.call("GET", f"/samples/{sample_id}", "alice")).status == 200
    for path in (f"/samples/{sample_id}", f"/samples/{sample_id}/data"):
        answer = await api.call("GET", path, "bob")
        assert answer.status == 404 and "error" in answer.json()
    assert (await api.call("GET", "/samples/search", "bob")).json()["count"] == 0
    assert (await api.call("GET", "/samples/search", "alice")).json()["count"] == 1
    assert (await api.call("GET", f"/upload/{made.json()['id']}", "bob")).status == 404


@pytest.mark.parametrize(
    ("query", "status"),
    [
        ("count=101", 400),
        ("count=0", 400),
        ("page=x", 400),
        ("page=0", 400),
        ("sort=owner", 400),
        ("created_gt=2026-01-01", 400),
        ("count=100&page=2", 200),
        ("tissue=brain&owned=maybe", 200),
        ("organism=true", 200),
        ("organism=Hs&sample_types=RNA-Seq,ChIP-Seq", 200),
        ("sort=-name", 200),
    ],
)
async def test_search_parameters(server: RunningServer, api: Api, query: str, status: int) -> None:
    answer = await api.call("GET", f"/samples/search?{query}", "alice")
    assert answer.status == status, answer.body
    assert set(answer.json()) == ({"count", "page", "samples"} if status == 200 else {"error"})


async def test_search_filters(server: RunningServer, api: Api) -> None:
    await sample_chunk(api, "alice", b"1", name="liver_1", fields={"organism": "Hs", "strandedness": "reverse"})
    await sample_chunk(
        api, "alice", b"2", name="brain_1", fields={"sample_type": "ChIP-Seq", "purification_target": "H3K4me3"}
    )

    async def names(query: str) -> list[str]:
        return [s["name"] for s in (await api.call("GET", f"/samples/search?{query}", "alice")).json()["samples"]]

    assert await names("sort=name") == ["brain_1", "liver_1"]
    assert await names("organism=Hs") == ["liver_1"] and await names("organism=false") == ["brain_1"]
    assert await names("sample_types=ChIP-Seq") == ["brain_1"] and await names("name=LIVER") == ["liver_1"]
    assert await names("created_lt=1") == [] and await names("owned=true&count=1&page=2&sort=name") == ["liver_1"]
    assert await names("strandedness=REV") == ["liver_1"] and await names("purification_target=true") == ["brain_1"]
    assert await names("purification_target=no") == ["liver_1"] and len(await names("owner=ALI&tissue=x")) == 2
    assert await names("owner=bob") == []
    full = (await api.call("GET", "/samples/search?full_metadata=1&name=liver", "alice")).json()["samples"][0]
    assert full["metadata"]["strandedness"]["attribute_description"]


async def test_catalog_is_public_and_options_as_hosted(server: RunningServer, api: Api) -> None:
    for path in ("/samples/types", "/samples/metadata", "/organisms", "/samples/metadata/strandedness/options"):
        assert (await api.call("GET", path)).status == 200, path
    options = (await api.call("GET", "/samples/metadata/strandedness/options?value=REV")).json()
    assert options["count"] == 1 and options["total_count"] == 3
    assert [o["value"] for o in options["options"]] == ["reverse"] and isinstance(options["options"][0]["id"], str)
    free = (await api.call("GET", "/samples/metadata/scientist/options")).json()
    assert free == {"count": 0, "total_count": 0, "options": []}
    unknown = await api.call("GET", "/samples/metadata/tissue/options")
    assert unknown.status == 404 and unknown.json() == {"error": "Not found"}
    assert (await api.call("GET", "/samples/search")).status == 401  # listings still need a token


async def test_multiplexed_second_file_names_the_first(server: RunningServer, api: Api) -> None:
    first = await api.chunk("alice", b"reads", is_last=True, path="/upload/multiplexed")
    assert first.status == 200
    plain = await api.chunk("alice", b"plain", is_last=True)
    for reads1 in (str(plain.json()["id"]), "nope", new_id()):
        refused = await api.chunk("alice", b"r2", is_last=True, path="/upload/multiplexed", extra={"reads1": reads1})
        assert refused.status == 400 and "reads1" in refused.json()["error"]
    bob = await api.chunk(
        "bob", b"r2", is_last=True, path="/upload/multiplexed", extra={"reads1": str(first.json()["id"])}
    )
    assert bob.status == 400
    second = await api.chunk(
        "alice", b"r2", is_last=True, path="/upload/multiplexed", extra={"reads1": str(first.json()["id"])}
    )
    assert second.status == 200 and second.json()["id"]


@pytest.mark.parametrize(
    ("sheet", "filename", "key"),
    [
        (b"name,barcode\nA,ACGT\n", "a.txt", "validation"),
        (b"PK\x03\x04 not really a zip", "a.xlsx", "validation"),
        (b"\xff\xfe bad text", "a.csv", "validation"),
        (b"name,barcode,colour\nA,ACGT,red\n", "a.csv", "warnings"),
        (b"name\nA\n", "a.csv", "validation"),
        (b"", "a.csv", "validation"),
    ],
)
async def test_annotation_bodies_have_no_error_key(
    server: RunningServer, api: Api, sheet: bytes, filename: str, key: str
) -> None:
    answer = await api.chunk("alice", sheet, filename=filename, is_last=True, path="/upload/annotation")
    assert answer.status == 400 and list(answer.json()) == [key], answer.body
    assert all(set(item) == {"row", "message"} for item in answer.json()[key])
    assert (await api.call("GET", "/data/owned", "alice")).json()["count"] == 0
    if key == "warnings":
        accepted = await api.chunk(
            "alice",
            sheet,
            filename=filename,
            is_last=True,
            path="/upload/annotation",
            extra={"ignore_warnings": "true"},
        )
        assert accepted.status == 200


async def test_without_extensions_only_the_ext_parts_go(server_root: Path, tmp_path: Path) -> None:
    import aiohttp

    async with running_server(server_root, extensions=False) as srv, aiohttp.ClientSession() as session:
        api = Api(session, srv.base_url, srv.users)
        made = await sample_chunk(api, "alice", b"x")
        assert made.status == 200 and "checksum" not in made.json() and made.json()["sample_id"]
        assert (await api.call("GET", f"/upload/{made.json()['id']}", "alice")).status == 404
        assert (await api.call("GET", f"/samples/{made.json()['sample_id']}", "alice")).status == 200
        assert (await api.call("GET", "/annotation/RNA-Seq", "alice")).status == 200


async def test_concurrent_samples_claiming_one_file_one_wins(server: RunningServer, api: Api) -> None:
    """Both pass the per-chunk check; the commit's second check refuses one, and its bytes go too."""
    import asyncio

    for round_number in range(8):
        earlier = str((await upload_file(api, "alice", b"e", last_file=False))["id"])
        answers = await asyncio.gather(
            *(sample_chunk(api, "alice", b"last", previous=[earlier], name=f"S{round_number}_{n}") for n in range(2))
        )
        assert sorted(a.status for a in answers) == [200, 400], [a.body for a in answers]
    owned = (await api.call("GET", "/data/owned?limit=100", "alice")).json()
    assert owned["count"] == 16  # each round: the shared file and the winner's
    stored = {path.name for path in (server.root / "data").iterdir()}
    assert stored == {d["id"] for d in owned["data"]}

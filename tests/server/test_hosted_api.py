"""The documented hosted API (goodwright/flow-skills ``endpoints/``): each endpoint read field by field.

Each test reads the fields the hosted docs list for its endpoint, against
the real server, with and without our extensions.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from flowxfer.protocol import REFRESH_COOKIE
from tests.server.conftest import Api
from tests.support.server import RunningServer, running_server

#: ``GET /data/<id>``'s top-level fields, as ``endpoints/data.md`` lists them.
RECORD_FIELDS = {
    "id",
    "filename",
    "filetype",
    "size",
    "is_binary",
    "is_directory",
    "created",
    "category",
    "data_type",
    "private",
    "absolute_path",
    "owner",
    "group_owner",
    "paired",
    "fileset",
    "execution",
    "sample",
    "project",
    "can_edit",
}
#: ``/data/search``'s per-item fields (``data_list()``).
SEARCH_FIELDS = {
    "id",
    "filename",
    "size",
    "absolute_path",
    "created",
    "pipeline_name",
    "process_execution_name",
    "sample_name",
    "owner_name",
    "can_delete",
}
#: ``GET /me``'s fields (``endpoints/users.md``).
ME_FIELDS = {
    "id",
    "username",
    "name",
    "image",
    "is_admin",
    "can_run_pipelines",
    "can_impersonate",
    "has_ssh_key",
    "impersonator",
    "features",
    "memberships",
    "notifications",
}


@pytest.fixture(params=[True, False], ids=["extensions", "hosted-flow"])
async def hosted(request: pytest.FixtureRequest, tmp_path: Path, http: Any) -> Any:
    async with running_server(tmp_path / "root", extensions=request.param) as srv:
        yield Api(http, srv.base_url, srv.users), srv


async def test_data_record_has_the_documented_fields(hosted: tuple[Api, RunningServer]) -> None:
    api, srv = hosted
    before = int(time.time())
    data_id = await api.upload("alice", b"@r1\nACGT\n+\nIIII\n", "reads.fastq.gz", extra={"data_type": "fastq"})
    record = (await api.call("GET", f"/data/{data_id}", "alice")).json()
    assert RECORD_FIELDS <= set(record)
    assert record["id"] == data_id and record["filename"] == "reads.fastq.gz" and record["size"] == 16
    assert isinstance(record["created"], int) and before <= record["created"] <= time.time()
    assert record["filetype"] == "fastq" and record["is_binary"] is True  # gzip: binary whatever it wraps
    assert record["is_directory"] is False and record["private"] is True
    assert record["category"] == 1  # generic
    assert (
        record["data_type"]
        == {"identifier": "fastq", "name": "FASTQ", "description": record["data_type"]["description"]}
        and record["data_type"]["description"]
    )
    assert record["owner"] == {"username": "alice", "name": "alice", "image": None}
    assert record["absolute_path"] == f"data/{data_id}" and str(srv.root) not in str(record)
    for link in ("group_owner", "paired", "fileset", "execution", "sample", "project"):
        assert record[link] is None, link
    assert record["can_edit"] is True
    assert ("checksum" in record) is srv.config.extensions
    plain = await api.upload("alice", b"x", "notes.txt")
    text = (await api.call("GET", f"/data/{plain}", "alice")).json()
    assert text["data_type"] is None and text["filetype"] == "txt" and text["is_binary"] is False


async def test_search_defaults_items_and_pages(hosted: tuple[Api, RunningServer]) -> None:
    api, srv = hosted
    ids = [await api.upload("alice", b"x" * (i + 1), f"f{i:02}.txt") for i in range(12)]
    first = (await api.call("GET", "/data/search", "alice")).json()
    assert first["count"] == 12 and first["page"] == 1 and len(first["data"]) == 10  # hosted default: 10
    item = first["data"][0]
    assert SEARCH_FIELDS <= set(item) and "paired_filename" not in item
    assert item["id"] == ids[-1] and isinstance(item["created"], int)  # -created: newest first
    assert item["owner_name"] == "alice" and item["can_delete"] is True and item["sample_name"] is None
    assert item["pipeline_name"] is None and item["process_execution_name"] is None
    assert ("checksum" in item) is srv.config.extensions
    second = (await api.call("GET", "/data/search?page=2", "alice")).json()
    assert [d["id"] for d in second["data"]] == ids[1::-1]
    assert (await api.call("GET", "/data/search?page=3", "alice")).json()["data"] == []
    assert (await api.call("GET", "/data/search?count=101", "alice")).status == 400
    assert len((await api.call("GET", "/data/search?count=100", "alice")).json()["data"]) == 12
    # Unknown parameters are ignored, as hosted Flow ignores them.
    assert (await api.call("GET", "/data/search?bogus=1&limit=x&q=", "alice")).json()["count"] == 12


async def test_search_filters(api: Api) -> None:
    a = await api.upload("alice", b"aaaa", "b_reads.fastq", extra={"data_type": "fastq"})
    b = await api.upload("alice", b"bb", "a_aligned.bam", extra={"data_type": "bam"})
    c = await api.upload("bob", b"c", "c_counts.csv", extra={"data_type": "csv"})
    assert (await api.call("PATCH", f"/data/{c}", "bob", json={"private": False})).status == 200

    async def ids(query: str, user: str | None = "alice") -> list[str]:
        answer = await api.call("GET", f"/data/search?{query}", user)
        assert answer.status == 200, (query, answer.body)
        return [d["id"] for d in answer.json()["data"]]

    assert await ids("sort=filename") == [b, a, c]
    assert await ids("sort=-filename") == [c, a, b]
    assert await ids("sort=created") == [a, b, c]
    assert await ids("") == [c, b, a]
    assert await ids("data_types=fastq,csv") == [c, a]
    assert await ids("data_types=bam") == [b]
    assert await ids("data_types=nothing") == []
    assert await ids("owner=BO") == [c] and await ids("owner=lic") == [b, a]
    assert await ids("owned=true") == [b, a]
    assert await ids("uploaded=true") == [c, b, a]  # nothing here came from a pipeline
    assert await ids("category=1") == [c, b, a] and await ids("category=3") == []
    assert await ids("is_single=true") == [c, b, a]  # in no fileset
    paired = await api.call("GET", "/data/search?is_single=false", "alice")
    assert paired.json() == {"count": 0, "page": 1, "data": []}
    assert await ids("pipeline=12") == [] and await ids("process_execution=fastqc") == []
    # Anonymous: public data only; owned= filters to nothing.
    assert await ids("", None) == [c] and await ids("owned=true", None) == []


async def test_a_paired_samples_files_link_as_hosted_flow_shows_them(api: Api, server: RunningServer) -> None:
    import anyio

    from flowxfer.server import Admin
    from tests.server.test_samples import upload_file

    def project() -> str:
        with Admin(server.root) as admin:
            return admin.add_project("alice", "liver")[0]

    project_id = await anyio.to_thread.run_sync(project)
    r1 = await upload_file(
        api, "alice", b"@1\nA\n+\nI\n", last_file=False, filename="S1_R1.fq", name="S1", fields={"project": project_id}
    )
    r2 = await upload_file(
        api,
        "alice",
        b"@2\nC\n+\nI\n",
        previous=[str(r1["id"])],
        filename="S1_R2.fq",
        name="S1",
        fields={"project": project_id},
    )
    lone = await api.upload("alice", b"x", "lone.txt")
    sample = {"id": r2["sample_id"], "name": "S1"}
    record = (await api.call("GET", f"/data/{r1['id']}", "alice")).json()
    assert record["sample"] == sample and record["project"] == {"id": project_id, "name": "liver"}
    assert record["fileset"]["name"] == "S1" and record["fileset"]["id"]
    assert record["paired"] == {"id": r2["id"], "filename": "S1_R2.fq"}
    assert record["category"] == 4  # demultiplexed reads
    assert (await api.call("GET", f"/data/{r2['id']}", "alice")).json()["paired"] == {
        "id": r1["id"],
        "filename": "S1_R1.fq",
    }
    alone = (await api.call("GET", f"/data/{lone}", "alice")).json()
    assert alone["category"] == 1 and alone["sample"] is alone["paired"] is alone["fileset"] is None

    async def search(query: str) -> list[dict[str, Any]]:
        return list((await api.call("GET", f"/data/search?{query}", "alice")).json()["data"])

    pairs = await search("is_single=false")
    assert [(d["id"], d["paired_filename"], d["sample_name"]) for d in pairs] == [(r1["id"], "S1_R2.fq", "S1")]
    singles = await search("is_single=true")
    assert [d["id"] for d in singles] == [lone] and "paired_filename" not in singles[0]
    assert {d["id"] for d in await search("category=4")} == {r1["id"], r2["id"]}
    assert [d["id"] for d in await search("category=1")] == [lone]
    assert {d["sample_name"] for d in await search("")} == {"S1", None}
    # Three files in one fileset: no "paired" (hosted Flow names a pair only when there are exactly two).
    t1 = await upload_file(api, "alice", b"1", last_file=False, filename="T_1.fq", name="T")
    t2 = await upload_file(api, "alice", b"2", last_file=False, filename="T_2.fq", name="T")
    t3 = await upload_file(api, "alice", b"3", previous=[str(t1["id"]), str(t2["id"])], filename="T_3.fq", name="T")
    for member in (t1, t2, t3):
        shown = (await api.call("GET", f"/data/{member['id']}", "alice")).json()
        assert shown["paired"] is None and shown["sample"] == {"id": t3["sample_id"], "name": "T"}
    firsts = await search("is_single=false")
    assert [(d["id"], d["paired_filename"]) for d in firsts] == [(t1["id"], None), (r1["id"], "S1_R2.fq")]


async def test_bad_search_input_is_400_never_500(api: Api) -> None:
    for query in (
        "sort=size",
        "sort=-id",
        "sort=created;drop",
        "created_gt=2026-01-01T00:00:00",
        "created_lt=yesterday",
        "page=two",
        "page=1.5",
        "count=ten",
        "category=x",
        "is_single=maybe",
        "uploaded=perhaps",
        "size_gt=1e3",
    ):
        answer = await api.call("GET", f"/data/search?{query}", "alice")
        assert answer.status == 400 and answer.json()["error"], query
    position = await api.call("GET", f"/data/{await api.upload('alice', b'x', 'x.txt')}/contents?position=a", "alice")
    assert position.status == 400


async def test_data_types(api: Api) -> None:
    await api.upload("alice", b"x", "r.fastq", extra={"data_type": "fastq"})
    await api.upload("alice", b"y", "r2.fastq", extra={"data_type": "fastq"})
    await api.upload("bob", b"z", "m.mzml", extra={"data_type": "mzml"})
    answer = await api.call("GET", "/data/types")  # no token needed
    assert answer.status == 200
    types = {t["identifier"]: t for t in answer.json()}
    for item in types.values():
        assert set(item) == {"identifier", "name", "description", "data_count"}
    assert types["fastq"]["name"] == "FASTQ" and types["fastq"]["data_count"] == 2
    assert types["mzml"] == {"identifier": "mzml", "name": "mzml", "description": "", "data_count": 1}
    assert types["bam"]["data_count"] == 0


async def test_contents_in_10_kb_chunks(api: Api) -> None:
    text = ("".join(f"line {i} é\n" for i in range(3000))).encode()
    data_id = await api.upload("alice", text, "log.txt")
    pieces, position = [], 0
    while True:
        answer = await api.call("GET", f"/data/{data_id}/contents?position={position}", "alice")
        assert answer.status == 200
        body = answer.json()
        assert set(body) == {"contents", "has_more"}
        pieces.append(body["contents"])
        if not body["has_more"]:
            break
        position += 1
    assert position == len(text) // 10240
    joined = "".join(pieces).encode("utf-8", "surrogatepass")
    assert len(joined) >= len(text) - 2 * position and joined[:10000] == text[:10000]
    past = (await api.call("GET", f"/data/{data_id}/contents?position=999", "alice")).json()
    assert past == {"contents": "", "has_more": False}
    binary = await api.upload("alice", b"\x1f\x8b\x08", "x.fastq.gz")
    refused = await api.call("GET", f"/data/{binary}/contents", "alice")
    assert refused.status == 400 and refused.json() == {"error": "Data is binary"}
    assert (await api.call("GET", f"/data/{data_id}/contents", "bob")).status == 404
    assert (await api.call("GET", f"/data/{data_id}/contents")).status == 404


async def test_me(api: Api, server: RunningServer) -> None:
    import anyio

    from flowxfer.server import Admin

    def lab() -> None:
        with Admin(server.root) as admin:
            admin.add_group("lab")
            admin.add_member("lab", "alice")

    await anyio.to_thread.run_sync(lab)
    me = (await api.call("GET", "/me", "alice")).json()
    assert set(me) == ME_FIELDS
    assert isinstance(me["id"], str) and me["id"].isdigit() and me["username"] == "alice" and me["name"] == "alice"
    assert me["memberships"] == [{"name": "lab", "slug": "lab", "is_admin": False}]
    assert me["notifications"] == {"count": 0, "unread_count": 0, "notifications": []}
    assert me["is_admin"] is False and me["impersonator"] is None and isinstance(me["features"], dict)
    bob = (await api.call("GET", "/me", "bob")).json()
    assert bob["id"] != me["id"] and bob["memberships"] == []
    # No token: hosted Flow's record of nulls, with 200.
    anonymous = await api.call("GET", "/me")
    assert anonymous.status == 200 and anonymous.json()["id"] is None and anonymous.json()["username"] is None
    assert set(anonymous.json()) == ME_FIELDS


async def test_public_data_reads_without_a_token_and_bad_tokens_are_401(api: Api) -> None:
    public = await api.upload("alice", b"open data", "open.txt")
    private = await api.upload("alice", b"closed", "closed.txt")
    assert (await api.call("PATCH", f"/data/{public}", "alice", json={"private": False})).status == 200
    record = await api.call("GET", f"/data/{public}")
    assert record.status == 200 and record.json()["can_edit"] is False
    download = await api.call("GET", f"/downloads/{public}/open.txt")
    assert download.status == 200 and download.body == b"open data"
    assert (await api.call("GET", f"/data/{public}/contents")).json()["contents"] == "open data"
    assert [d["id"] for d in (await api.call("GET", "/data/search")).json()["data"]] == [public]
    assert (await api.call("GET", f"/data/{private}")).status == 404
    assert (await api.call("GET", f"/downloads/{private}/closed.txt")).status == 404
    for bad in ("forged.token.here", "x", _foreign_token(), "fxk_0123456789abcdef_" + "A" * 43, "fxk_short"):
        for path in (
            f"/data/{public}",
            "/data/search",
            f"/downloads/{public}/open.txt",
            "/me",
            "/data/types",
            f"/data/{public}/contents",
        ):
            answer = await api.call("GET", path, headers={"Authorization": f"Bearer {bad}"})
            assert answer.status == 401, (bad, path)
        assert (await api.call("GET", f"/downloads/{public}/open.txt?token={bad}")).status == 401
    assert (await api.call("GET", "/me", headers={"Authorization": "Basic abc"})).status == 401
    # Writes still need a token.
    assert (await api.call("PATCH", f"/data/{public}", json={"private": True})).status == 401


def _foreign_token() -> str:
    """An expired access token signed with a key that is not the server's."""
    import jwt

    return jwt.encode(
        {"sub": "alice", "type": "access", "exp": time.time() - 10}, "not-the-secret" * 4, algorithm="HS256"
    )


async def test_expired_token_signed_by_the_server_is_401(api: Api, server: RunningServer) -> None:
    import jwt

    from flowxfer.server._auth import SECRET_NAME

    secret = (server.root / SECRET_NAME).read_bytes()
    expired = jwt.encode({"sub": "alice", "type": "access", "exp": time.time() - 10}, secret, algorithm="HS256")
    data_id = await api.upload("alice", b"x", "x.txt")
    assert (await api.call("PATCH", f"/data/{data_id}", "alice", json={"private": False})).status == 200
    for path in (f"/data/{data_id}", "/data/search", f"/downloads/{data_id}/x.txt", "/me"):
        answer = await api.call("GET", path, headers={"Authorization": f"Bearer {expired}"})
        assert answer.status == 401 and "expired" in answer.json()["error"], path


async def test_downloads_take_the_refresh_cookie_and_direct(api: Api, server: RunningServer) -> None:
    data_id = await api.upload("alice", b"cookie bytes", "c.txt")
    login = await api.session.post(f"{api.base}/login", json={"username": "alice", "password": server.users["alice"]})
    refresh = login.cookies[REFRESH_COOKIE].value
    login.release()
    url = f"{api.base}/downloads/{data_id}/c.txt"
    async with api.session.get(url, headers={"Cookie": f"{REFRESH_COOKIE}={refresh}"}) as resp:
        assert resp.status == 200 and await resp.read() == b"cookie bytes"
        assert resp.headers["Content-Disposition"].startswith("attachment")
    async with api.session.get(url + "?direct=true", headers={"Cookie": f"{REFRESH_COOKIE}={refresh}"}) as resp:
        assert resp.status == 200 and "Content-Disposition" not in resp.headers
    async with api.session.get(url, headers={"Cookie": f"{REFRESH_COOKIE}=forged"}) as resp:
        assert resp.status == 401
    # An access token is no refresh token: the cookie must hold the refresh kind.
    async with api.session.get(url, headers={"Cookie": f"{REFRESH_COOKIE}={await api.token('alice')}"}) as resp:
        assert resp.status == 401
    # The cookie is for downloads only: elsewhere it is no credential.
    async with api.session.get(f"{api.base}/data/{data_id}", headers={"Cookie": f"{REFRESH_COOKIE}={refresh}"}) as r:
        assert r.status == 404
    for value, disposition in (("yes", False), ("1", False), ("0", True), ("false", True), ("", True)):
        answer = await api.call("GET", f"/downloads/{data_id}/c.txt?direct={value}", "alice")
        assert ("Content-Disposition" in answer.headers) is disposition, value

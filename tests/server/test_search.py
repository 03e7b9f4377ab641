"""/data/search and /data/owned: filters, pagination, limits, and regexes that cannot stall the server."""

from __future__ import annotations

import time
from pathlib import Path

import aiohttp

from tests.server.conftest import Api
from tests.support.server import running_server


async def test_filters_and_pages(api: Api) -> None:
    ids = {}
    for name, size in (("S1_R1.fastq.gz", 10), ("S1_R2.fastq.gz", 20), ("s2_R1.FASTQ.gz", 30), ("notes.txt", 5)):
        ids[name] = await api.upload("alice", b"x" * size, name)

    async def names(query: str) -> list[str]:
        answer = await api.call("GET", f"/data/search?{query}", "alice")
        assert answer.status == 200, answer.body
        return sorted(d["filename"] for d in answer.json()["data"])

    assert await names("filename=fastq") == ["S1_R1.fastq.gz", "S1_R2.fastq.gz", "s2_R1.FASTQ.gz"]
    assert await names("pattern=_R1%5C.") == ["S1_R1.fastq.gz", "s2_R1.FASTQ.gz"]
    # Size bounds are inclusive, as hosted Flow's (size >= size_gt).
    assert await names("pattern=%5ES1&size_gt=11") == ["S1_R2.fastq.gz"]
    assert await names("pattern=%5ES1&size_gt=10") == ["S1_R1.fastq.gz", "S1_R2.fastq.gz"]
    assert await names("size_lt=9") == ["notes.txt"]
    assert await names("created_gt=0&created_lt=9999999999&owned=true&filename=NOTES") == ["notes.txt"]
    assert await names("created_gt=9999999999") == []
    page1 = (await api.call("GET", "/data/search?count=3&page=1", "alice")).json()
    page2 = (await api.call("GET", "/data/search?count=3&page=2", "alice")).json()
    assert page1["count"] == page2["count"] == 4 and page2["page"] == 2
    assert len(page1["data"]) == 3 and len(page2["data"]) == 1
    assert not {d["id"] for d in page1["data"]} & {d["id"] for d in page2["data"]}
    regex_page = (await api.call("GET", "/data/search?pattern=fastq&count=1&page=2", "alice")).json()
    assert regex_page["count"] == 2 and len(regex_page["data"]) == 1  # the regex is case-sensitive
    owned = (await api.call("GET", "/data/owned?limit=2&offset=2", "alice")).json()
    assert owned["count"] == 4 and owned["page"] == 2 and len(owned["data"]) == 2


async def test_refusals(api: Api) -> None:
    for query in (
        "count=101",
        "count=0",
        "page=0",
        "count=x",
        "size_gt=abc",
        "created_lt=nan",
        "pattern=(",
        "pattern=" + "a" * 300,
        "owned=maybe",
    ):
        answer = await api.call("GET", f"/data/search?{query}", "alice")
        assert answer.status == 400 and answer.json()["error"], query
    for query in ("limit=101", "limit=0", "offset=-1", "offset=x", "limit=", "offset="):
        answer = await api.call("GET", f"/data/owned?{query}", "alice")
        assert answer.status == 400 and answer.json()["error"], query


async def test_catastrophic_regex_is_cut_short(server_root: Path, http: aiohttp.ClientSession) -> None:
    async with running_server(server_root, pattern_timeout=0.5) as srv:
        api = Api(http, srv.base_url, srv.users)
        await api.upload("alice", b"x", "a" * 40 + "b")
        started = time.monotonic()
        answer = await api.call("GET", "/data/search?pattern=%5E(a%2B)%2B%24", "alice")  # ^(a+)+$
        assert answer.status == 400 and "longer than" in answer.json()["error"]
        assert time.monotonic() - started < 5
        # The server still answers, and sane patterns still work.
        assert (await api.call("GET", "/data/search?pattern=b%24", "alice")).json()["count"] == 1

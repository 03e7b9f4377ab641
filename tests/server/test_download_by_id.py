"""[ext] ``GET /downloads/<id>``: the named route's answer, the name in ``Content-Disposition`` on every answer."""

from __future__ import annotations

import os
from pathlib import Path

import aiohttp

from flowxfer.protocol import checksum_of
from tests.server.conftest import Api
from tests.support.server import running_server


async def test_by_id_answers_as_the_named_route_and_names_the_file(api: Api) -> None:
    data = os.urandom(50_000)
    data_id = await api.upload("alice", data, "séquence_1.fastq.gz")
    named = await api.call("GET", f"/downloads/{data_id}/séquence_1.fastq.gz", "alice")
    url = f"/downloads/{data_id}"
    whole = await api.call("GET", url, "alice")
    assert whole.status == 200 and whole.body == data
    for header in ("Content-Disposition", "X-Checksum", "ETag", "Content-Length", "Accept-Ranges"):
        assert whole.headers[header] == named.headers[header], header
    assert "filename*=UTF-8''s%C3%A9quence_1.fastq.gz" in whole.headers["Content-Disposition"]
    assert whole.headers["X-Checksum"] == checksum_of(data)
    part = await api.call("GET", url, "alice", headers={"Range": "bytes=100-199"})
    assert part.status == 206 and part.body == data[100:200]
    assert part.headers["Content-Range"] == "bytes 100-199/50000" and "Content-Disposition" in part.headers
    refused = await api.call("GET", url, "alice", headers={"Range": "bytes=50000-"})
    assert refused.status == 416 and "Content-Disposition" in refused.headers
    cached = await api.call("GET", url, "alice", headers={"If-None-Match": whole.headers["ETag"]})
    assert cached.status == 304 and "Content-Disposition" in cached.headers
    direct = await api.call("GET", url + "?direct=1", "alice")
    assert direct.status == 200 and "Content-Disposition" in direct.headers  # the name is the point here
    head = await api.call("HEAD", url, "alice")
    assert head.status == 200 and head.body == b"" and head.headers["Content-Length"] == "50000"
    token = await api.token("alice")
    assert (await api.call("GET", f"{url}?token={token}")).body == data
    assert (await api.call("GET", f"{url}?token=forged.token.here")).status == 401
    capabilities = await api.call("GET", "/capabilities")
    assert capabilities.json()["download_by_id"] is True


async def test_by_id_refuses_with_the_same_bare_404(api: Api) -> None:
    data_id = await api.upload("alice", b"secret bytes", "s.txt")
    for path, user in (
        ("/downloads/999999999999999999", "alice"),
        ("/downloads/nonsense", "alice"),
        (f"/downloads/{data_id}", "bob"),
        (f"/downloads/{data_id}", None),
    ):
        refused = await api.call("GET", path, user)
        assert refused.status == 404 and refused.body == b"", (path, user)


async def test_without_extensions_there_is_no_by_id_route(tmp_path: Path) -> None:
    """Hosted Flow has no such route: the server playing it answers its unknown-path 404 (and has no capabilities)."""
    async with running_server(tmp_path / "root", extensions=False) as srv, aiohttp.ClientSession() as http:
        api = Api(http, srv.base_url, srv.users)
        data_id = await api.upload("alice", b"bytes", "b.txt")
        assert (await api.call("GET", f"/downloads/{data_id}/b.txt", "alice")).body == b"bytes"
        gone = await api.call("GET", f"/downloads/{data_id}", "alice")
        assert gone.status == 404 and gone.body != b"bytes"
        assert (await api.call("GET", "/capabilities")).status == 404

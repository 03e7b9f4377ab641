"""``GET /capabilities`` answered by something else than our server: an HTML page, or a lie that never ends.

``tests/transfer/test_capcache.py`` covers a *remembered* answer gone stale
(asked again, the server tells the truth). Not covered: a proxy in front of
hosted Flow (no extensions) that answers ``/capabilities`` itself on every
ask, with an HTML page or with JSON claiming ``parallel_chunks`` and
``download_by_id``. The engine must then fall back to what hosted Flow
speaks and land exact bytes (HTML), or fail cleanly without looping (a lie
that never ends: the server claims what it cannot do).
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.faultproxy import Match, RespondWith
from tests.support.rig import rig, stored
from tests.transfer.conftest import KiB, client, write_random

MiB = 1024 * KiB
CAPABILITIES = Match("GET", "^/capabilities$")

HTML = b"<!doctype html><html><body><h1>Welcome to nginx!</h1></body></html>\n"
#: Our server's own answer, word for word: only the server behind the proxy is hosted Flow.
LIE = json.dumps(
    {
        "server": "flowxfer",
        "version": "0.1.0",
        "checksums": ["xxh3-128"],
        "upload_status": True,
        "chunk_maps": True,
        "directory_listing": True,
        "parallel_chunks": True,
        "download_by_id": True,
        "max_chunk_size": 64 * KiB,
    }
).encode()


async def test_an_html_capabilities_page_means_hosted_flow_and_exact_bytes(tmp_path: Path) -> None:
    """A 200 HTML page where the JSON should be: taken as "no extensions", both ways exact, asked once."""
    source = write_random(tmp_path / "src" / "reads.bin", 9 * MiB + 11, 9)
    async with rig(tmp_path, False) as r:
        caps = r.proxy.add(RespondWith(200, HTML, {"Content-Type": "text/html"}, match=CAPABILITIES, times=None))
        async with client(r.via_proxy, tmp_path / "home", upload_streams=4) as fx:
            up = await fx.upload([source])
            assert up.status == "completed", [f.error for f in up.files]
            (item,) = up.files
            assert item.id
            down = await fx.download([item.id], output_dir=tmp_path / "out")
            assert down.status == "completed", [f.error for f in down.files]
        assert await stored(r.server, {"reads.bin": item.id}) == {"reads.bin": source.read_bytes()}
        assert (tmp_path / "out" / "reads.bin").read_bytes() == source.read_bytes()
        assert caps.hits == 1


async def test_capabilities_that_keep_lying_fail_an_upload_cleanly_without_a_loop(tmp_path: Path) -> None:
    """Every ask claims our extensions; the server behind has none. The upload may fail (the server said
    it speaks what it does not), but in one clean line, after a bounded number of tries."""
    source = write_random(tmp_path / "src" / "reads.bin", 9 * MiB + 11, 9)
    async with rig(tmp_path, False) as r:
        caps = r.proxy.add(RespondWith(200, LIE, {"Content-Type": "application/json"}, match=CAPABILITIES, times=None))
        async with client(r.via_proxy, tmp_path / "home", upload_streams=4) as fx:
            up = await fx.upload([source])
        (item,) = up.files
        if up.status == "completed":
            assert item.id and await stored(r.server, {"reads.bin": item.id}) == {"reads.bin": source.read_bytes()}
        else:
            assert item.error and "\n" not in item.error and "Traceback" not in item.error, item.error
        assert len(r.log.select("POST", r"^/upload/parallel")) <= 3 and caps.hits <= 3, (caps.hits, len(r.log.entries))


async def test_capabilities_that_keep_lying_still_download_a_readable_id(tmp_path: Path) -> None:
    """Every ask claims ``download_by_id``; the server behind has no such route (its bare 404). The id is
    readable through ``/data``: the download must land exact bytes, not call the id unknown."""
    source = write_random(tmp_path / "src" / "reads.bin", 300 * KiB + 11, 9)
    async with rig(tmp_path, False) as r:
        async with client(r.server, tmp_path / "direct") as fx:
            (honest,) = (await fx.upload([source])).files
        assert honest.id
        r.proxy.add(RespondWith(200, LIE, {"Content-Type": "application/json"}, match=CAPABILITIES, times=None))
        async with client(r.via_proxy, tmp_path / "home") as fx:
            down = await fx.download([honest.id], output_dir=tmp_path / "out")
        assert down.status == "completed", [f.error for f in down.files]
        assert (tmp_path / "out" / "reads.bin").read_bytes() == source.read_bytes()

"""A data description whose size disagrees with the bytes the server then streams (hosted Flow: no checksums).

Against hosted Flow there is no checksum to catch a wrong file: the size in
``GET /data/<id>`` and the ``Content-Range`` totals of the byte streams are
all there is. When they disagree (a proxy that rewrote the description, a
file replaced on the server between the two answers), the download must not
complete with a file of the description's size cut from the stream's bytes:
it completes with the stream's exact bytes or fails in one clean line.
"""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import pytest

from tests.support.faultproxy import Match, RespondWith
from tests.support.rig import rig
from tests.support.server import login
from tests.transfer.test_faults import CHUNK, download_through, upload_direct


async def _description(base_url: str, password: str, data_id: str) -> dict[str, object]:
    async with aiohttp.ClientSession() as session:
        token = await login(session, base_url, "alice", password)
        async with session.get(f"{base_url}/data/{data_id}", headers={"Authorization": f"Bearer {token}"}) as answer:
            assert answer.status == 200
            described: dict[str, object] = await answer.json()
            return described


@pytest.mark.parametrize("delta", [-1000, +1000], ids=["says-shorter", "says-longer"])
async def test_a_size_that_disagrees_with_the_stream_is_never_a_completed_wrong_file(
    tmp_path: Path, delta: int
) -> None:
    async with rig(tmp_path, False) as r:
        source, data_id = await upload_direct(r.server, tmp_path, size=5 * CHUNK + 77)
        described = await _description(r.server.base_url, r.server.users["alice"], data_id)
        assert described["size"] == len(source)
        lie = json.dumps({**described, "size": len(source) + delta})
        where = Match("GET", f"^/data/{data_id}$")
        rule = r.proxy.add(RespondWith(200, lie, {"Content-Type": "application/json"}, match=where, times=None))
        report, data = await download_through(r, tmp_path, data_id)
        assert rule.hits >= 1
        if report.status == "completed":
            assert data == source, (len(data), len(source))
        else:
            assert data == b""
            error = report.files[0].error or ""
            assert error and "\n" not in error and "Traceback" not in error, error

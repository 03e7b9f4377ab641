"""[ext] ``download_by_id``: the describing ``GET /downloads/<id>`` brings the first chunk, checked as any.

Through the recording fault proxy in front of the real server: what the
describing answer carries is written and verified as a stream's bytes, so a
server that lies about them is caught, a cut answer leaves the bytes to a
stream, and a name from its header is made safe as one from ``/data``.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import anyio

from flowxfer.protocol import checksum_of
from flowxfer.transfer._plan import RemoteData, target_names
from tests.support.faultproxy import FlipBodyByte, Match, ResetMidBody, RespondWith, StallMidBody
from tests.support.rig import Rig, rig

from .conftest import KiB, client, write_random
from .test_faults import CHUNK, SIZE, STREAM, MiB, done, download_through, engine, upload_direct

#: The describing request: the bytes' URL without the filename.
DESCRIBE = r"^/downloads/[^/]+$"
#: How long the describing answer's body stalls in the test of the streams' early connections.
STALL = 1.5


async def test_the_first_chunk_comes_with_the_description_and_is_not_asked_again(tmp_path: Path) -> None:
    async with rig(tmp_path, True) as r:
        source, data_id = await upload_direct(r.server, tmp_path)
        report, data = await download_through(r, tmp_path, data_id, segments=3)
        done(report)
        assert data == source
        assert [e.path for e in r.log.select("GET", DESCRIBE)] == [f"/downloads/{data_id}"]
        assert r.log.select("GET", r"^/data/[^/]+$") == []
        assert r.download_bytes() == SIZE  # the head was used, not fetched again
        assert all(not dict(e.request_headers)["Range"].startswith("bytes=0-") for e in r.log.select("GET", STREAM))


async def test_an_id_downloaded_before_costs_no_download_request_unless_forced(tmp_path: Path) -> None:
    """Downloaded again into the same folder it is skipped: described by ``/data`` (an API call), no bytes
    fetched with its description from the hourly download budget; with ``force`` it goes by id again."""
    async with rig(tmp_path, True) as r:
        source, data_id = await upload_direct(r.server, tmp_path, size=CHUNK - 100)
        done((await download_through(r, tmp_path, data_id))[0])
        r.log.clear()
        report, data = await download_through(r, tmp_path, data_id)
        assert [f.status for f in report.files] == ["skipped"] and data == source
        assert report.requests.get("download", 0) == 0
        assert [e.path for e in r.log.entries if e.path != "/login"] == [f"/data/{data_id}"]
        r.log.clear()
        async with engine(r, tmp_path / "home") as fx:
            forced = await fx.download([data_id], output_dir=tmp_path / "out", force=True)
        assert [f.status for f in forced.files] == ["done"]
        assert [e.path for e in r.log.entries if e.path != "/login"] == [f"/downloads/{data_id}"]


async def test_bytes_that_never_match_the_checksum_are_refused(tmp_path: Path) -> None:
    """A server whose bytes differ from its checksum, in the describing answer and every later one."""
    async with rig(tmp_path, True) as r:
        _, data_id = await upload_direct(r.server, tmp_path, size=CHUNK - 100)
        flip = r.proxy.add(FlipBodyByte("GET ^/downloads/", direction="down", at=1000, times=None))
        report, data = await download_through(r, tmp_path, data_id)
        assert report.status != "completed" and data == b""
        assert "checksum" in (report.files[0].error or "") or "match" in (report.files[0].error or "")
        assert flip.hits >= 2 and len(r.log.select("GET", DESCRIBE)) == 1


async def test_a_flipped_byte_in_the_description_is_fetched_again(tmp_path: Path) -> None:
    async with rig(tmp_path, True) as r:
        source, data_id = await upload_direct(r.server, tmp_path, size=CHUNK - 100)
        flip = r.proxy.add(FlipBodyByte(Match("GET", DESCRIBE), direction="down", at=1000))
        report, data = await download_through(r, tmp_path, data_id)
        done(report)
        assert flip.hits == 1 and data == source
        assert len(r.log.select("GET", STREAM)) == 1


async def test_a_description_cut_mid_body_leaves_the_bytes_to_a_stream(tmp_path: Path) -> None:
    async with rig(tmp_path, True) as r:
        source, data_id = await upload_direct(r.server, tmp_path, size=CHUNK - 100)
        cut = r.proxy.add(ResetMidBody(Match("GET", DESCRIBE), direction="down", at_bytes=20 * KiB))
        report, data = await download_through(r, tmp_path, data_id)
        done(report)
        assert cut.hits == 1 and data == source
        assert len(r.log.select("GET", STREAM)) == 1


async def test_an_unsafe_name_in_the_header_is_made_safe_as_one_from_data(tmp_path: Path) -> None:
    """The name only the header gives goes through the same checks and the same safe local name."""
    body = b"not where you think\n"
    async with rig(tmp_path, True) as r:
        _, data_id = await upload_direct(r.server, tmp_path, size=10)
        name = "../../evil.bin"
        headers = {
            "Content-Disposition": "attachment; filename=\"evil.bin\"; filename*=UTF-8''..%2F..%2Fevil.bin",
            "Content-Range": f"bytes 0-{len(body) - 1}/{len(body)}",
            "ETag": '"lie"',
            "X-Checksum": checksum_of(body),
        }
        r.proxy.add(RespondWith(206, body, headers, match=Match("GET", DESCRIBE)))
        out = tmp_path / "out"
        async with engine(r, tmp_path / "home") as fx:
            done(await fx.download([data_id], output_dir=out))
        (safe,) = target_names([RemoteData(data_id, name, len(body), None)])
        assert "/" not in safe and [p.name for p in out.iterdir()] == [safe]
        assert (out / safe).read_bytes() == body
        assert not (tmp_path / "evil.bin").exists() and not (tmp_path.parent / "evil.bin").exists()


async def test_a_remembered_capability_the_server_lost_falls_back_to_data(tmp_path: Path) -> None:
    """Capabilities remembered from a run before; the server now answers as without extensions
    (the by-id route and ``/capabilities`` are 404s): asked again, the ids are described by ``/data``."""
    async with rig(tmp_path, True) as r:
        source, data_id = await upload_direct(r.server, tmp_path, size=CHUNK - 100)
        # Remembers the capabilities; not by downloading this id, which would then be described by
        # /data anyway (downloaded before: it may be skipped, and a skip costs no download request).
        other = tmp_path / "other" / "other.bin"
        other.parent.mkdir()
        other.write_bytes(b"x" * 1000)
        async with engine(r, tmp_path / "home") as fx:
            done(await fx.upload([other]))
        r.log.clear()
        for path in (DESCRIBE, "^/capabilities$"):
            r.proxy.add(RespondWith(404, b'{"error": "Not Found"}', match=Match("GET", path), times=None))
        report, data = await download_through(r, tmp_path, data_id)
        done(report)
        assert data == source
        assert [e.path for e in r.log.entries if e.path != "/login"] == [
            f"/downloads/{data_id}",
            "/capabilities",
            f"/data/{data_id}",
            f"/downloads/{data_id}/reads.bin",
        ]


def _starts(r: Rig) -> list[int]:
    """Where each stream's ranged request began."""
    ranges = (dict(e.request_headers)["Range"] for e in r.log.select("GET", STREAM))
    return sorted(int(value.split("=")[1].split("-")[0]) for value in ranges)


async def test_a_head_that_ends_inside_a_block_is_written_not_asked_again(tmp_path: Path) -> None:
    """The describing answer's 1 MiB ends inside a 768 KiB write block: kept, not fetched twice.

    (The engine's defaults: 1 MiB described, 4 MiB blocks; every large download refetched its head.)
    """
    async with rig(tmp_path, True) as r:
        src = write_random(tmp_path / "src" / "reads.bin", 3 * MiB, 5)
        async with client(r.server, tmp_path / "uploader", chunk_size=3 * MiB) as fx:
            (item,) = done(await fx.upload([src])).files
        assert item.id
        report, data = await download_through(
            r, tmp_path, item.id, segments=2, block_size=768 * KiB, download_chunk_size=4 * MiB
        )
        done(report)
        assert data == src.read_bytes()
        assert r.download_bytes() == 3 * MiB and 0 not in _starts(r)


async def test_the_streams_connections_open_while_the_describing_answer_arrives(tmp_path: Path) -> None:
    """A large file's streams need connections: they open when the describing answer's headers say its
    size, while its body still comes, not after (on a long path each handshake idled the link a round
    trip, issue 20). Here the answer's body stalls for a second: the connections open meanwhile."""
    async with rig(tmp_path, True) as r:
        _, data_id = await upload_direct(r.server, tmp_path)  # 12 chunks: 4 segments
        r.proxy.add(StallMidBody(f"GET {DESCRIBE}", at_bytes=1000, seconds=STALL, then="resume"))
        async with engine(r, tmp_path / "home") as fx:
            opened_before = r.proxy.stats.connections
            async with anyio.create_task_group() as group:
                group.start_soon(partial(fx.download, [data_id], output_dir=tmp_path / "out"))
                await anyio.sleep(STALL / 2)  # the answer's headers came, its body is stalled
                opened_during = r.proxy.stats.connections - opened_before
        assert (tmp_path / "out" / "reads.bin").read_bytes() == (tmp_path / "src" / "reads.bin").read_bytes()
        # The describing answer's own (or a pooled one), and one for each of the 3 other streams.
        assert opened_during >= 3, opened_during

"""Audit of the staged unpack of a parallel directory upload [ext]: what a refused ``finish`` leaves.

The head start unpacks the archive's hashed prefix into ``trees/<id>.tmp``
before ``finish``; a ``finish`` that does not publish it must not leave that
copy of the whole tree on disk (the next ``finish`` stages again from the
archive anyway, and an upload given up after a refusal is never finished).
"""

from __future__ import annotations

from tests.server.conftest import Api
from tests.server.test_upload import _tar_bytes
from tests.server.test_upload_parallel import CHUNK, _finish, _open
from tests.server.test_upload_parallel_dirs import _tree
from tests.server.test_upload_parallel_staged import FILES, _held, _send, _until
from tests.support.server import RunningServer


async def test_a_finish_refused_for_its_checksum_leaves_no_staged_tree(api: Api, server: RunningServer) -> None:
    archive = _tar_bytes(FILES, "w")
    data_id = await _open(api, len(archive), is_directory=True)
    await _send(api, data_id, archive, list(range(0, len(archive), CHUNK)))
    trees = server.root / "trees"
    staging = trees / f"{data_id}.tmp"
    await _until(lambda: _held(staging) == FILES, "the members in the staging folder")
    code, body = await _finish(api, data_id, archive + b"other bytes")
    assert code == 422, body
    # Nothing writes the staging folder any more (every slot is recorded, the head start was dropped).
    assert not staging.exists(), sorted(p.name for p in trees.iterdir())
    assert not list(trees.iterdir())
    # The upload stays open and the right checksum still finishes it, staged again from the archive.
    code, body = await _finish(api, data_id, archive)
    assert code == 200, body
    assert _tree(trees / data_id) == FILES and not staging.exists()

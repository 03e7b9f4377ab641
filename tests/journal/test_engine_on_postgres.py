"""The engine on a PostgreSQL journal, end to end: ``Flowxfer(journal="postgresql://...")`` against the local server."""

from __future__ import annotations

from pathlib import Path

import psycopg

from flowxfer.transfer import Flowxfer, TransferConfig
from tests.support.server import RunningServer
from tests.transfer.conftest import tree_bytes, write_random

KiB = 1024


async def test_upload_rerun_and_download_with_a_postgresql_journal(
    server: RunningServer, postgres_url: str, tmp_path: Path
) -> None:
    sizes = {"a.bin": 0, "b.bin": 5 * KiB, "c.bin": 200 * KiB, "sub/d.bin": 333 * KiB}
    for i, (name, size) in enumerate(sizes.items()):
        write_random(tmp_path / "src" / name, size, i)
    config = TransferConfig(chunk_size=64 * KiB, download_chunk_size=64 * KiB, journal_flush_interval=0.05)
    async with Flowxfer(server.base_url, config_dir=tmp_path / "cfg", journal=postgres_url, config=config) as fx:
        await fx.login("alice", server.users["alice"])
        journal = await fx.journal()
        assert journal.path is None and journal.location.backend == "postgresql"
        up = await fx.upload([tmp_path / "src"])
        assert up.status == "completed", up
        again = await fx.upload([tmp_path / "src"])
        assert again.status == "completed" and {f.status for f in again.files} == {"skipped"}
        assert again.requests["upload"] == 0
        down = await fx.download([f.id for f in up.files], output_dir=tmp_path / "out")
        assert down.status == "completed", down
    assert tree_bytes(tmp_path / "out") == {Path(n).name: (tmp_path / "src" / n).read_bytes() for n in sizes}
    with psycopg.connect(postgres_url) as conn:
        kinds = conn.execute("SELECT kind, status, host <> '' FROM transfers ORDER BY created").fetchall()
        chunks = conn.execute(
            # An empty file's download chunk stays planned (as on SQLite): nothing to fetch.
            "SELECT count(*), count(*) FILTER (WHERE state NOT IN ('acked', 'verified') AND size > 0) FROM chunks"
        ).fetchone()
    assert kinds == [("upload", "completed", True), ("upload", "completed", True), ("download", "completed", True)]
    assert chunks is not None and chunks[0] >= 4 + 6 and chunks[1] == 0  # c and d's chunks at least, all done

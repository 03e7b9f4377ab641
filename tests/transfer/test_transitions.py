"""The journal's state machine is enforced on the engine's own path, not only when called directly.

A file the journal already holds as ``done`` cannot go back to ``active``:
an upload that tries (here because another process finished the file under
it) stops with :class:`IllegalTransition` instead of recording the step back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from flowxfer.journal import FileState, IllegalTransition, Journal
from flowxfer.transfer.events import FileStarted
from tests.support.server import RunningServer

from .conftest import KiB, client, write_random


async def test_an_upload_stepping_a_done_file_back_to_active_raises(server: RunningServer, tmp_path: Path) -> None:
    source = write_random(tmp_path / "data" / "a.bin", 200 * KiB)
    journal_path = tmp_path / "home" / "journal.db"

    def finish_it_elsewhere(event: Any) -> None:
        # Another journal connection (another process, in effect) marks the file done as our worker starts it.
        if isinstance(event, FileStarted):
            other = Journal.open(journal_path)
            try:
                (transfer,) = other.unfinished_transfers()
                (row,) = other.files_page(transfer.id)
                other.set_file(row.id, status=FileState.DONE.value)
            finally:
                other.close()

    async with client(server, tmp_path / "home", progress=finish_it_elsewhere, concurrency=1) as fx:
        with pytest.raises(IllegalTransition, match="from done to active"):
            await fx.upload([str(source)])
    journal = Journal.open(journal_path)
    try:
        (transfer,) = journal.find_transfers("")
        assert transfer.status != "running"  # the run still ended as recorded (and let its lease go)
        (row,) = journal.files_page(transfer.id, (FileState.DONE,))
        assert row.status is FileState.DONE  # the illegal step was not recorded
    finally:
        journal.close()

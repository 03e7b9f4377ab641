"""The shared runtime of a transfer: the journal writer's batches survive cancellation."""

from __future__ import annotations

from pathlib import Path

import anyio
import anyio.to_thread

from flowxfer.journal import Journal, NewFile
from flowxfer.transfer._runtime import JournalWriter


async def test_a_flush_cancelled_midway_loses_no_event(tmp_path: Path) -> None:
    """Regression: the periodic flush swapped the batch out, then was cancelled (the transfer
    ending) before its commit ran, and those events were gone: a finished file stayed
    ``active`` and a completed upload reported ``interrupted``."""
    journal = Journal.open(tmp_path / "journal.db")
    try:
        record, lease, _ = journal.begin_transfer("upload", "http://127.0.0.1:1", "alice", {}, "key")
        journal.add_files(record.id, [NewFile("/data/a.bin", "a.bin", size=10)])
        (row,) = journal.iter_files(record.id)
        writer = JournalWriter(journal, interval=60.0, max_events=100)
        writer.batch.update_file(row.id, bytes_done=7)

        # Hold every worker thread for a while, so the flush waits for one after taking the batch,
        # and is cancelled meanwhile.
        limiter = anyio.to_thread.current_default_thread_limiter()
        borrowed = [object() for _ in range(int(limiter.total_tokens))]
        for token in borrowed:
            await limiter.acquire_on_behalf_of(token)

        async def give_back_later() -> None:
            await anyio.sleep(0.5)
            for token in borrowed:
                limiter.release_on_behalf_of(token)

        async with anyio.create_task_group() as group:
            group.start_soon(give_back_later)
            with anyio.move_on_after(0.1):
                await writer.flush()
        await writer.flush()  # the final, shielded flush of a transfer
        stored = journal.get_file(row.id)
        assert stored is not None and stored.bytes_done == 7
        lease.release()
    finally:
        journal.close()

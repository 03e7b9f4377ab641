"""The metadata store's group commit: folders named by a batch are flushed once, before its commit.

Real SQLite files and real folders; only ``os.fsync`` (the standard library's)
is wrapped, to see when a folder is flushed and what was committed by then.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from flowxfer.server._store import DB_NAME, FlushError, Store, StoreError
from tests.support.flushes import on_folder_fsync


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store(tmp_path)
    yield store
    store.close()


def committed_groups(root: Path) -> set[str]:
    """What another connection sees: only what was committed."""
    with sqlite3.connect(root / DB_NAME) as db:
        return {name for (name,) in db.execute("SELECT name FROM groups")}


def watch_folder_flushes(
    monkeypatch: pytest.MonkeyPatch, folder: Path, on_flush: Callable[[], None] = lambda: None
) -> list[set[str]]:
    """Each flush of ``folder``: the groups committed at that instant (``on_flush`` runs first)."""
    flushes: list[set[str]] = []

    def seen() -> None:
        on_flush()
        flushes.append(committed_groups(folder.parent))

    on_folder_fsync(monkeypatch, folder, seen)
    return flushes


async def test_a_batch_flushes_its_folder_once_and_before_it_commits(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    flushes = watch_folder_flushes(monkeypatch, folder)
    names = [f"g{i}" for i in range(6)]
    # Submitted together, they wait for one batch.
    created = await asyncio.gather(*(store.run_after_flushing(folder, store.add_group, name) for name in names))
    assert created == [True] * len(names)
    assert flushes == [set()]  # one flush, and nothing of the batch was committed before it
    assert committed_groups(tmp_path) == set(names)


async def test_each_batch_flushes_again(store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    flushes = watch_folder_flushes(monkeypatch, folder)
    await store.run_after_flushing(folder, store.add_group, "first")
    await store.run(store.add_group, "unflushed")
    await store.run_after_flushing(folder, store.add_group, "second")
    assert flushes == [set(), {"first", "unflushed"}]


async def test_a_failed_flush_fails_only_the_calls_that_needed_it(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "data"
    folder.mkdir()

    def fail() -> None:
        raise OSError(5, "Input/output error")

    watch_folder_flushes(monkeypatch, folder, on_flush=fail)
    outcomes = await asyncio.gather(
        store.run_after_flushing(folder, store.add_group, "needs-the-flush"),
        store.run(store.add_group, "independent"),
        return_exceptions=True,
    )
    assert isinstance(outcomes[0], FlushError) and "Input/output error" in str(outcomes[0])
    assert outcomes[1] is True
    assert committed_groups(tmp_path) == {"independent"}


async def test_a_missing_folder_is_a_store_error_not_a_crash(store: Store, tmp_path: Path) -> None:
    with pytest.raises(FlushError, match="durable"):
        await store.run_after_flushing(tmp_path / "gone", store.add_group, "never")
    assert issubclass(FlushError, StoreError)
    assert committed_groups(tmp_path) == set()
    assert await store.run(store.add_group, "later") is True

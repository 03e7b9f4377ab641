"""The state machines, and the journal's crash/resume property.

The property: whatever sequence of acknowledgements, batch commits and crashes
(a crash drops every event not yet committed and reopens the journal), the
journal never claims a chunk that was not acknowledged, and resuming from it
(re-doing every chunk it does not claim) always ends with the same complete,
verified file.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from flowxfer.journal import (
    ChunkState,
    FileState,
    IllegalTransition,
    Journal,
    JournalBatch,
    NewFile,
    TransferState,
    check_chunk_transition,
    check_file_transition,
    transfer_outcome,
)

ALL_FILE_STATES = list(FileState)
ALL_CHUNK_STATES = list(ChunkState)


def test_terminal_file_states_are_terminal() -> None:
    for new in ALL_FILE_STATES:
        for terminal in (FileState.DONE, FileState.SKIPPED):
            if new != terminal:
                with pytest.raises(IllegalTransition):
                    check_file_transition(terminal, new)


def test_chunk_cannot_skip_to_verified() -> None:
    with pytest.raises(IllegalTransition):
        check_chunk_transition(ChunkState.PLANNED, ChunkState.VERIFIED)
    with pytest.raises(IllegalTransition):
        check_chunk_transition(ChunkState.VERIFIED, ChunkState.ACKED)
    check_chunk_transition(ChunkState.ACKED, ChunkState.VERIFIED)


@given(st.sampled_from(ALL_CHUNK_STATES))
def test_staying_put_is_always_legal(state: ChunkState) -> None:
    check_chunk_transition(state, state)


@given(st.dictionaries(st.sampled_from(ALL_FILE_STATES), st.integers(0, 5)), st.booleans())
def test_transfer_outcome(counts: dict[FileState, int], interrupted: bool) -> None:
    outcome = transfer_outcome(counts, interrupted)
    total = sum(counts.values())
    finished = counts.get(FileState.DONE, 0) + counts.get(FileState.SKIPPED, 0)
    if finished == total:
        assert outcome is TransferState.COMPLETED
    elif interrupted:
        assert outcome is TransferState.INTERRUPTED
    elif counts.get(FileState.FAILED, 0) and finished:
        assert outcome is TransferState.PARTIAL
    else:
        assert outcome in (TransferState.FAILED, TransferState.INTERRUPTED)


class CrashingTransfer(RuleBasedStateMachine):
    """A download-like transfer of one file, acknowledged chunk by chunk, crashed at will."""

    def __init__(self) -> None:
        super().__init__()
        self.truth: set[int] = set()  # chunks really written and synced in this life

    @initialize(chunks=st.integers(1, 12), tmp=st.just(None))
    def start(self, chunks: int, tmp: None) -> None:
        import tempfile

        self.dir = Path(tempfile.mkdtemp())
        self.path = self.dir / "j.db"
        self.journal = Journal.open(self.path)
        record, _lease, _ = self.journal.begin_transfer("download", "s", "u", {}, "k")
        self.tid = record.id
        self.journal.add_files(self.tid, [NewFile("/f", size=chunks * 4)])
        self.file_id = self.journal.files_page(self.tid)[0].id
        self.count = chunks
        batch = JournalBatch()
        batch.plan_chunks(self.file_id, [(i * 4, 4) for i in range(chunks)])
        self.journal.commit(batch)
        self.batch = JournalBatch()
        self.claimed: set[int] = set()

    def _claimed_now(self) -> set[int]:
        return {c.idx for c in self.journal.chunks(self.file_id) if c.state is not ChunkState.PLANNED}

    @rule(data=st.data())
    def ack_one(self, data: st.DataObject) -> None:
        todo = sorted(set(range(self.count)) - self.truth)
        if not todo:
            return
        idx = data.draw(st.sampled_from(todo))
        self.truth.add(idx)
        self.batch.chunk(self.file_id, idx, ChunkState.ACKED)

    @rule()
    def commit(self) -> None:
        self.journal.commit(self.batch)
        self.batch = JournalBatch()

    @rule()
    def crash(self) -> None:
        # Uncommitted events die with the process; what the disk held stays.
        self.batch = JournalBatch()
        self.journal.close()
        self.journal = Journal.open(self.path)
        self.truth = self._claimed_now()

    @precondition(lambda self: hasattr(self, "journal"))
    @invariant()
    def never_claims_more_than_was_acknowledged(self) -> None:
        assert self._claimed_now() <= self.truth

    @rule()
    def resume_to_the_end(self) -> None:
        self.crash()
        batch = JournalBatch()
        for idx in sorted(set(range(self.count)) - self._claimed_now()):
            batch.chunk(self.file_id, idx, ChunkState.ACKED)
        batch.file_state(self.file_id, FileState.DONE, bytes_done=self.count * 4)
        batch.verify_chunks(self.file_id)
        self.journal.commit(batch)
        chunks = self.journal.chunks(self.file_id)
        assert [c.state for c in chunks] == [ChunkState.VERIFIED] * self.count
        assert self.journal.summary(self.tid).bytes_done == self.count * 4
        # Restart the same file for more crash sequences.
        reset = JournalBatch()
        reset.plan_chunks(self.file_id, [(i * 4, 4) for i in range(self.count)])
        self.journal.commit(reset)
        self.truth = set()

    def teardown(self) -> None:
        if hasattr(self, "journal"):
            self.journal.close()


TestCrashingTransfer = CrashingTransfer.TestCase
TestCrashingTransfer.settings = settings(
    max_examples=40, stateful_step_count=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

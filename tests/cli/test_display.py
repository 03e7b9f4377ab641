"""The live display's model (cli/_display.py), events in, what to show out: tested directly."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from flowxfer.cli._display import MAX_ROWS, DisplayModel
from flowxfer.transfer.events import (
    BytesMoved,
    Event,
    FileFinished,
    FilesPlanned,
    FileStarted,
    FileVerifying,
    JobProgress,
    TransferStarted,
    Waiting,
)
from tests.support.screen import counters

MiB = 1024 * 1024


def _run(model: DisplayModel, events: list[Event], start: float = 0.0) -> None:
    for offset, event in enumerate(events):
        model.apply(event, start + offset * 0.1)


def test_nothing_is_drawn_before_there_is_something_to_show() -> None:
    model = DisplayModel("upload")
    assert model.view(0).empty
    model.apply(FilesPlanned(0, 0), 0)
    assert model.view(0).empty
    model.apply(FilesPlanned(3, 3 * MiB), 0)
    assert [bar.label for bar in model.view(0).lines] == ["scan"]


def test_a_resumed_file_counts_what_was_done_before_in_the_overall_bar() -> None:
    model = DisplayModel("upload")
    _run(model, [TransferStarted("t", "upload", 1, 10 * MiB, True, 0, 7 * MiB),
                 FileStarted("/a", "a", 10 * MiB, 7 * MiB), BytesMoved("/a", MiB)])
    overall, row = model.view(1).lines
    assert overall.completed == row.completed == 8 * MiB
    assert overall.text.startswith("0/1 files  8 MiB/10 MiB")


def test_counters_belong_to_their_phase_and_rows_to_work_in_flight() -> None:
    model = DisplayModel("sync")
    _run(model, [TransferStarted("t1", "sync", 2, 2 * MiB, False), FileStarted("/a", "a", MiB, 0),
                 FileStarted("/b", "b", MiB, 0), BytesMoved("/a", MiB),
                 FileFinished("/a", "a", "done", MiB, "1", None)])
    assert [bar.label.strip() for bar in model.view(1).lines] == ["upload", "b"]
    # A bulk transfer follows with the upload's row still open (it was interrupted).
    _run(model, [TransferStarted("t2", "bulk", 1, 0, False), JobProgress("j", "running", 0.5)], start=2)
    ended = model.take_ended()
    assert [bar.label for bar in ended] == ["upload"] and ended[0].text.startswith("1/2 files")
    lines = model.view(3).lines
    assert [bar.label for bar in lines] == ["archive job"] and "files" not in lines[0].text
    _run(model, [FileStarted("/z", "z.zip", 4 * MiB, 0), BytesMoved("/z", 4 * MiB), FileVerifying("/z")], start=4)
    assert [bar.label for bar in model.take_ended()] == ["archive job", "download"]
    assert [bar.label for bar in model.view(5).lines] == ["extract"]
    model.apply(FileFinished("/z", "z.zip", "done", 4 * MiB, "j", None), 6)
    assert [bar.label for bar in model.take_ended()] == ["extract"]
    assert model.view(7).empty


def test_a_phase_without_work_leaves_no_line_and_a_scan_none() -> None:
    model = DisplayModel("upload")
    _run(model, [FilesPlanned(2, MiB), TransferStarted("t", "upload", 2, MiB, False)])
    model.end(1)
    assert model.take_ended() == []


def test_rows_are_capped_with_a_count_of_the_rest() -> None:
    model = DisplayModel("upload")
    model.apply(TransferStarted("t", "upload", 20, 20 * MiB, False), 0)
    for index in range(MAX_ROWS + 3):
        model.apply(FileStarted(f"/{index}", f"f{index}", MiB, 0), 0)
    lines = model.view(1).lines
    assert len(lines) == 1 + MAX_ROWS + 1 and "3 more" in lines[-1].text


def test_a_wait_is_shown_while_it_lasts() -> None:
    model = DisplayModel("upload")
    model.apply(Waiting("upload", 5.0, "100/h"), 0)
    assert "waiting for upload budget" in model.view(1).status
    assert model.view(10).status == ""


_events = st.lists(st.one_of(
    st.builds(TransferStarted, st.just("t"), st.sampled_from(["upload", "download", "bulk", "sync"]),
              st.integers(0, 5), st.integers(0, 10 * MiB), st.booleans(), st.integers(0, 5), st.integers(0, 10 * MiB)),
    st.builds(FilesPlanned, st.integers(0, 5), st.integers(0, 10 * MiB)),
    st.builds(FileStarted, st.sampled_from(["/a", "/b"]), st.just("n"), st.integers(0, 4 * MiB),
              st.integers(0, 4 * MiB)),
    st.builds(BytesMoved, st.sampled_from(["/a", "/b", "/c"]), st.integers(0, 2 * MiB)),
    st.builds(FileVerifying, st.sampled_from(["/a", "/b"])),
    st.builds(FileFinished, st.sampled_from(["/a", "/b"]), st.just("n"), st.sampled_from(["done", "skipped", "failed"]),
              st.integers(0, 4 * MiB), st.none(), st.none()),
    st.builds(JobProgress, st.just("j"), st.sampled_from(["running", "completed"]), st.floats(-1, 2)),
), max_size=40)


@given(_events)
def test_no_counter_is_ever_past_its_total(events: list[Event]) -> None:
    model = DisplayModel("upload")
    for step, event in enumerate(events):
        model.apply(event, step * 0.1)
        for bar in (*model.view(step * 0.1).lines, *model.take_ended()):
            if bar.total is not None:
                assert 0 <= bar.completed <= bar.total, (bar, events[: step + 1])
            for done, total in counters(bar.text):
                assert done <= total * 1.001, (bar, events[: step + 1])

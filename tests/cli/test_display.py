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
    SampleAsking,
    SampleFile,
    SampleFinished,
    SamplesPlanned,
    SampleStarted,
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
    _run(
        model,
        [
            TransferStarted("t", "upload", 1, 10 * MiB, True, 0, 7 * MiB),
            FileStarted("/a", "a", 10 * MiB, 7 * MiB),
            BytesMoved("/a", MiB),
        ],
    )
    overall, row = model.view(1).lines
    assert overall.completed == row.completed == 8 * MiB
    assert overall.text.startswith("0/1 files  8 MiB/10 MiB")


def test_counters_belong_to_their_phase_and_rows_to_work_in_flight() -> None:
    model = DisplayModel("sync")
    _run(
        model,
        [
            TransferStarted("t1", "sync", 2, 2 * MiB, False),
            FileStarted("/a", "a", MiB, 0),
            FileStarted("/b", "b", MiB, 0),
            BytesMoved("/a", MiB),
            FileFinished("/a", "a", "done", MiB, "1", None),
        ],
    )
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


def _paired(row: int, name: str, size: int = 4 * MiB, done: tuple[int, int] = (0, 0)) -> SampleStarted:
    """A sample of two files (``/<name>_R1``, ``/<name>_R2``), ``done`` bytes of each sent before."""
    reads = tuple(SampleFile(f"/{name}_R{n}", f"reads{n}", size, done[n - 1], done[n - 1] == size) for n in (1, 2))
    return SampleStarted(row, name, 2, reads)


def _sample_rows(model: DisplayModel, now: float) -> dict[str, str]:
    return {bar.label.strip(): bar.text for bar in model.view(now).lines[1:]}


def test_a_samples_phase_draws_a_row_per_sample_in_flight_not_per_file() -> None:
    model = DisplayModel("upload")
    _run(
        model,
        [
            FilesPlanned(6, 24 * MiB),
            SamplesPlanned(3, 0),
            TransferStarted("t", "samples", 6, 24 * MiB, False),
            _paired(1, "A"),
            _paired(2, "B"),
            FileStarted("/A_R1", "A_R1.fq", 4 * MiB, 0),
            BytesMoved("/A_R1", MiB),
            FileStarted("/B_R1", "B_R1.fq", 4 * MiB, 0),
        ],
    )
    overall = model.view(1).lines[0]
    assert overall.label == "samples" and overall.text.startswith("0/3 samples  1 MiB/24 MiB")
    rows = _sample_rows(model, 1)
    assert list(rows) == ["A", "B"]  # no row for a file
    assert rows["A"].startswith("0/2 files  sending reads1  1 MiB/8 MiB")
    _run(
        model,
        [
            BytesMoved("/A_R1", 3 * MiB),
            FileFinished("/A_R1", "A_R1.fq", "done", 4 * MiB, "d1", None),
            FileStarted("/A_R2", "A_R2.fq", 4 * MiB, 0),
            BytesMoved("/A_R2", 4 * MiB),
            SampleAsking(2, "B"),
        ],
        start=2,
    )
    rows = _sample_rows(model, 3)
    assert rows["A"].startswith("1/2 files  sending reads2  8 MiB/8 MiB")
    assert rows["B"].startswith("0/2 files  asking the server  0 B/8 MiB")
    # A made sample leaves the region; its last file's end comes after it and counts its bytes once.
    _run(
        model,
        [SampleFinished(1, "A", "done", "s1", None), FileFinished("/A_R2", "A_R2.fq", "done", 4 * MiB, "d2", None)],
        start=4,
    )
    assert list(_sample_rows(model, 5)) == ["B"]
    assert model.view(5).lines[0].text.startswith("1/3 samples  8 MiB/24 MiB")
    _run(model, [SampleFinished(2, "B", "failed", None, "B: refused")], start=6)
    assert model.view(7).lines[0].text.startswith("2/3 samples  1 failed")
    model.end(8)
    (ended,) = model.take_ended()
    assert ended.label == "samples" and ended.text.startswith("2/3 samples  1 failed")


def test_a_resumed_batch_counts_what_earlier_runs_made_and_sent() -> None:
    model = DisplayModel("upload")
    # Two samples made before, one skipped (on Flow already) told before the transfer starts.
    _run(
        model,
        [
            FilesPlanned(8, 32 * MiB),
            SamplesPlanned(4, 2),
            SampleFinished(3, "C", "skipped", "s3", None),
            TransferStarted("t", "samples", 8, 32 * MiB, True, 5, 22 * MiB),
            _paired(4, "D", done=(4 * MiB, 2 * MiB)),
            FileStarted("/D_R2", "D_R2.fq", 4 * MiB, 2 * MiB),
        ],
    )
    assert model.view(1).lines[0].text.startswith("2/4 samples  22 MiB/32 MiB")
    assert _sample_rows(model, 1)["D"].startswith("1/2 files  sending reads2  6 MiB/8 MiB")
    _run(model, [BytesMoved("/D_R2", 2 * MiB), SampleFinished(4, "D", "done", "s4", None)], start=2)
    assert model.view(3).lines[0].text.startswith("3/4 samples  24 MiB/32 MiB")


def test_a_batch_with_every_sample_made_before_leaves_no_line() -> None:
    model = DisplayModel("upload")
    _run(
        model,
        [
            FilesPlanned(4, 8 * MiB),
            SamplesPlanned(2, 2),
            SampleFinished(1, "A", "skipped", "s1", None),
            SampleFinished(2, "B", "skipped", "s2", None),
            TransferStarted("t", "samples", 4, 8 * MiB, False, 4, 8 * MiB),
        ],
    )
    assert model.view(1).lines[0].text.startswith("2/2 samples")
    model.end(2)
    assert model.take_ended() == []


def test_samples_in_flight_are_capped_with_a_count_of_the_rest() -> None:
    model = DisplayModel("upload")
    _run(model, [SamplesPlanned(MAX_ROWS + 2, 0), TransferStarted("t", "samples", 0, 0, False)])
    _run(model, [_paired(n, f"S{n}") for n in range(MAX_ROWS + 2)])
    lines = model.view(1).lines
    assert len(lines) == 1 + MAX_ROWS + 1 and lines[-1].text == "and 2 more sample(s) in flight"


_transfer_started = st.builds(
    TransferStarted,
    st.just("t"),
    st.sampled_from(["upload", "download", "bulk", "sync", "samples"]),
    st.integers(0, 5),
    st.integers(0, 10 * MiB),
    st.booleans(),
    st.integers(0, 5),
    st.integers(0, 10 * MiB),
)
_file_events = [
    st.builds(FilesPlanned, st.integers(0, 5), st.integers(0, 10 * MiB)),
    st.builds(
        FileStarted, st.sampled_from(["/a", "/b"]), st.just("n"), st.integers(0, 4 * MiB), st.integers(0, 4 * MiB)
    ),
    st.builds(BytesMoved, st.sampled_from(["/a", "/b", "/c"]), st.integers(0, 2 * MiB)),
    st.builds(FileVerifying, st.sampled_from(["/a", "/b"])),
    st.builds(
        FileFinished,
        st.sampled_from(["/a", "/b"]),
        st.just("n"),
        st.sampled_from(["done", "skipped", "failed"]),
        st.integers(0, 4 * MiB),
        st.none(),
        st.none(),
    ),
]
_sample_events = [
    st.builds(SamplesPlanned, st.integers(0, 3), st.integers(0, 4)),
    st.builds(
        SampleStarted,
        st.integers(1, 3),
        st.just("s"),
        st.just(2),
        st.lists(
            st.builds(
                SampleFile,
                st.sampled_from(["/a", "/b", "/c"]),
                st.just("reads1"),
                st.integers(0, 4 * MiB),
                st.integers(0, 4 * MiB),
                st.booleans(),
            ),
            max_size=2,
        ).map(tuple),
    ),
    st.builds(SampleAsking, st.integers(1, 3), st.just("s")),
    st.builds(
        SampleFinished,
        st.integers(1, 3),
        st.just("s"),
        st.sampled_from(["done", "skipped", "failed"]),
        st.none(),
        st.none(),
    ),
]
_events = st.lists(
    st.one_of(
        _transfer_started,
        *_file_events,
        *_sample_events,
        st.builds(JobProgress, st.just("j"), st.sampled_from(["running", "completed"]), st.floats(-1, 2)),
    ),
    max_size=40,
)
#: A samples batch's events only (a samples transfer, its files, its samples): what samples upload-batch sees.
_batch_events = st.lists(
    st.one_of(
        st.builds(
            TransferStarted,
            st.just("t"),
            st.just("samples"),
            st.integers(0, 5),
            st.integers(0, 10 * MiB),
            st.booleans(),
            st.integers(0, 5),
            st.integers(0, 10 * MiB),
        ),
        *_file_events,
        *_sample_events,
    ),
    max_size=40,
)


def _assert_within_totals(events: list[Event]) -> None:
    model = DisplayModel("upload")
    for step, event in enumerate(events):
        model.apply(event, step * 0.1)
        for bar in (*model.view(step * 0.1).lines, *model.take_ended()):
            if bar.total is not None:
                assert 0 <= bar.completed <= bar.total, (bar, events[: step + 1])
            for done, total in counters(bar.text):
                assert done <= total * 1.001, (bar, events[: step + 1])


@given(_events)
def test_no_counter_is_ever_past_its_total(events: list[Event]) -> None:
    _assert_within_totals(events)


@given(_batch_events)
def test_no_counter_of_a_samples_batch_is_ever_past_its_total(events: list[Event]) -> None:
    _assert_within_totals(events)

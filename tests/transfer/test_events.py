"""The public event types (``flowxfer.transfer.events``): what a library's callback may rely on.

Some classes load on first use (:mod:`flowxfer.transfer._job_events`, a start-up cost a plain
transfer need not pay); ``events.Event`` must still be the union of every class the engine
sends, usable at run time as it was (``isinstance``, ``typing.get_args``), and each event
must survive ``pickle`` and come back as the same class.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
import typing

from flowxfer.transfer import events

_ALL = (
    "TransferStarted FilesPlanned FileStarted BytesMoved FileVerifying FileFinished Waiting Retrying Notice"
    " JobProgress ExecutionWaiting SamplesPlanned SampleStarted SampleAsking SampleFinished"
).split()


def test_event_is_the_union_of_every_event_class_at_run_time() -> None:
    classes = [getattr(events, name) for name in _ALL]
    assert set(typing.get_args(events.Event)) == set(classes)
    started = events.FileStarted("a", "a", 1, 0)
    sample = events.SampleAsking(3, "s1")
    assert isinstance(started, events.Event) and isinstance(sample, events.Event)
    assert not isinstance("no event", events.Event)
    assert typing.get_args(events.ProgressCallback) == ([events.Event], None)


def test_a_lazily_loaded_event_pickles_as_itself() -> None:
    sample = events.SampleFinished(1, "s1", "done", "42", None)
    back = pickle.loads(pickle.dumps(sample))
    assert back == sample and type(back) is events.SampleFinished


def test_importing_the_events_or_their_type_loads_no_job_event() -> None:
    """The union is built when asked for, not at import: a plain transfer's start-up stays as it was."""
    code = (
        "import sys\n"
        "from flowxfer.transfer import events\n"
        "import flowxfer.cli._render, flowxfer.transfer._api\n"
        "assert 'flowxfer.transfer._job_events' not in sys.modules, 'loaded at import'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)

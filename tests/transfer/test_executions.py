"""``download_executions`` against the real local server: wait, fail, stop, lay out, mirror, budgets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from flowxfer.journal import Journal
from flowxfer.server import Admin
from flowxfer.server._admin_executions import ExecutionSpec
from flowxfer.transfer import ExecutionFailed, ExecutionUnfinished, NotFoundError, blocking
from flowxfer.transfer._executions import ExecutionOutput, output_targets
from flowxfer.transfer._plan import RemoteData
from flowxfer.transfer.events import ExecutionWaiting
from tests.support.server import RunningServer, running_server

from .conftest import KiB, client, tree_bytes, write_random

FAST = 0.2  # seconds between polls: hosted's 60 s, accelerated


async def register(
    srv: RunningServer,
    tmp_path: Path,
    outputs: dict[str, dict[str, int]],
    schedule: list[tuple[float, str]],
    owner: str = "alice",
) -> tuple[str, dict[str, bytes]]:
    """An execution whose processes made these files (``{process: {filename: size}}``); its id and their bytes."""
    made: list[tuple[str, Path]] = []
    expected: dict[str, bytes] = {}
    for seed, (process, files) in enumerate(outputs.items()):
        for name, size in files.items():
            path = write_random(tmp_path / "made" / process / name, size, seed)
            made.append((process, path))
            expected[f"{process}/{name}"] = path.read_bytes()

    def add() -> str:
        with Admin(srv.root) as admin:
            return admin.add_execution(ExecutionSpec(owner, "RNA-Seq", "3.4", outputs=made, schedule=schedule))[0]

    return await anyio.to_thread.run_sync(add), expected


SAME_NAMES = {"fastqc": {"report.html": 40 * KiB, "reads_fastqc.zip": 3 * KiB}, "multiqc": {"report.html": 90 * KiB}}


async def test_waits_downloads_every_output_by_process_and_a_rerun_moves_nothing(
    any_server: RunningServer, tmp_path: Path
) -> None:
    """With our extensions and as hosted Flow (executions are hosted Flow's: served either way)."""
    server = any_server
    execution_id, expected = await register(server, tmp_path, SAME_NAMES, [(1.0, "-"), (1.5, "OK")])
    events: list[Any] = []
    out = tmp_path / "results"
    async with client(server, tmp_path / "home", events=events) as fx:
        report = await fx.download_executions([execution_id], output_dir=out, wait=True, poll_interval=FAST)
        assert report.status == "completed" and report.kind == "results", report.files
        assert tree_bytes(out) == expected  # both report.html arrive, each in its process's folder
        assert ("xxh3" in (report.verified or "")) == server.config.extensions
        waits = [e for e in events if isinstance(e, ExecutionWaiting)]
        assert [w.status for w in waits][0] == "" and waits[-1].status == "OK" and waits[-1].next_poll is None
        assert {w.status for w in waits} == {"", "-", "OK"}
        assert report.extra["executions"][execution_id]["status"] == "OK"

        again = await fx.download_executions([execution_id], output_dir=out, wait=True, poll_interval=FAST)
        assert again.status == "completed" and again.bytes_transferred == 0
        assert {f.status for f in again.files} == {"skipped"}
        # A changed file is fetched again, and only it.
        (out / "multiqc" / "report.html").write_bytes(b"edited")
        third = await fx.download_executions([execution_id], output_dir=out)
        assert third.bytes_transferred == len(expected["multiqc/report.html"])
        assert tree_bytes(out) == expected


async def test_flat_layout_keeps_same_named_outputs_apart(server: RunningServer, tmp_path: Path) -> None:
    execution_id, expected = await register(server, tmp_path, SAME_NAMES, [])
    out = tmp_path / "flat"
    async with client(server, tmp_path / "home") as fx:
        report = await fx.download_executions([execution_id], output_dir=out, layout="flat")
    got = tree_bytes(out)
    assert report.status == "completed" and len(got) == 3 and all("/" not in name for name in got)
    assert sorted(got.values()) == sorted(expected.values())
    assert "report.html" in got and any(n.startswith("report (") and n.endswith(").html") for n in got)


async def test_an_error_after_a_wait_names_the_run_and_downloads_nothing(server: RunningServer, tmp_path: Path) -> None:
    execution_id, expected = await register(server, tmp_path, {"salmon": {"quant.sf": 5 * KiB}}, [(0.8, "ERROR")])
    out = tmp_path / "results"
    async with client(server, tmp_path / "home") as fx:
        with pytest.raises(ExecutionFailed, match=f"execution {execution_id} \\(\\w+\\) ended ERROR"):
            await fx.download_executions([execution_id], output_dir=out, wait=True, poll_interval=FAST)
        assert not out.exists()
        report = await fx.download_executions([execution_id], output_dir=out, partial=True)
        assert report.status == "completed" and report.extra["executions"][execution_id]["status"] == "ERROR"
        assert tree_bytes(out) == expected


async def test_an_execution_nobody_showed_us_is_not_found(server: RunningServer, tmp_path: Path) -> None:
    execution_id, _ = await register(server, tmp_path, {"p": {"f.txt": KiB}}, [], owner="bob")
    async with client(server, tmp_path / "home") as fx:
        for unknown in (execution_id, "123456789012345678", "../data"):
            with pytest.raises(NotFoundError, match="no execution .* that you may see"):
                await fx.download_executions([unknown], output_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()


async def test_a_running_execution_without_wait_is_try_later(server: RunningServer, tmp_path: Path) -> None:
    execution_id, _ = await register(server, tmp_path, {"salmon": {"quant.sf": KiB}}, [(0, "-")])
    async with client(server, tmp_path / "home") as fx:
        with pytest.raises(ExecutionUnfinished, match="still running"):
            await fx.download_executions([execution_id], output_dir=tmp_path / "out")


async def test_max_wait_stops_cleanly_and_the_journal_keeps_the_wait(server: RunningServer, tmp_path: Path) -> None:
    execution_id, _ = await register(server, tmp_path, {"salmon": {"quant.sf": KiB}}, [(0, "-")])
    async with client(server, tmp_path / "home") as fx:
        with anyio.fail_after(10):
            report = await fx.download_executions(
                [execution_id], output_dir=tmp_path / "out", wait=True, poll_interval=FAST, max_wait=1.0
            )
        assert report.status == "interrupted" and report.stop_reason == "max-wait"
        assert report.extra["executions"][execution_id]["status"] == "-"
        assert 3 <= report.requests["api"] <= 7 and report.requests["download"] == 0
    with Journal.open(tmp_path / "home" / "journal.db") as journal:
        (record,) = journal.unfinished_transfers()
        assert record.kind == "results" and record.state["executions"][execution_id]["status"] == "-"


async def test_a_long_wait_keeps_its_lease_fresh(server: RunningServer, tmp_path: Path) -> None:
    """The workers' heartbeat starts after planning; a wait (hours on hosted Flow) renews the lease itself."""
    import sqlite3
    import time

    execution_id, _ = await register(server, tmp_path, {"p": {"f.txt": KiB}}, [(2.0, "OK")])
    ages: list[float] = []

    async def watch() -> None:
        while True:
            await anyio.sleep(0.3)
            with sqlite3.connect(tmp_path / "home" / "journal.db") as db:
                rows = db.execute("SELECT heartbeat FROM leases WHERE key LIKE 'transfer:%'").fetchall()
            ages.extend(time.time() - row[0] for row in rows)

    async with (
        client(server, tmp_path / "home", heartbeat_interval=0.2, lease_stale_after=0.6) as fx,
        anyio.create_task_group() as group,
    ):
        group.start_soon(watch)
        report = await fx.download_executions([execution_id], output_dir=tmp_path / "out", wait=True, poll_interval=1.0)
        group.cancel_scope.cancel()
    assert report.status == "completed"
    assert len(ages) >= 3 and max(ages) < 0.6, ages


async def test_resume_takes_an_interrupted_wait_up_again(server: RunningServer, tmp_path: Path) -> None:
    execution_id, expected = await register(server, tmp_path, {"salmon": {"quant.sf": 3 * KiB}}, [(1.5, "OK")])
    async with client(server, tmp_path / "home") as fx:
        stopped = await fx.download_executions(
            [execution_id], output_dir=tmp_path / "out", wait=True, poll_interval=FAST, max_wait=0.3
        )
        assert stopped.status == "interrupted"
        (report,) = await fx.resume()
        assert report.transfer_id == stopped.transfer_id and report.status == "completed"
        assert tree_bytes(tmp_path / "out") == expected


async def test_polling_spends_the_api_budget_never_the_download_one(tmp_path: Path) -> None:
    """Two downloads allowed an hour: a wait of many polls must leave both to the outputs."""
    async with running_server(tmp_path / "root", rate_limits="download=2/3600s,api=200/60s,search=5/60s") as srv:
        execution_id, expected = await register(
            srv, tmp_path, {"a": {"x.txt": KiB}, "b": {"y.txt": KiB}}, [(1.2, "OK")]
        )
        async with client(srv, tmp_path / "home", max_wait=0.5) as fx:
            report = await fx.download_executions(
                [execution_id], output_dir=tmp_path / "out", wait=True, poll_interval=FAST
            )
            assert report.status == "completed", report
            assert report.requests["download"] == 2 and report.requests["api"] >= 5
            assert tree_bytes(tmp_path / "out") == expected
            # The server counted those two against its download budget: a third must wait an hour.
            again = await fx.download_executions([execution_id], output_dir=tmp_path / "again")
            assert again.stop_reason == "budget" and again.bytes_transferred == 0, again


async def test_the_blocking_wrapper(server: RunningServer, tmp_path: Path) -> None:
    execution_id, expected = await register(server, tmp_path, {"p": {"f.txt": 2 * KiB}}, [])
    async with client(server, tmp_path / "home"):
        pass  # logs in, saving the tokens the wrapper uses
    report = await anyio.to_thread.run_sync(
        lambda: blocking.download_executions(
            [execution_id],
            output_dir=tmp_path / "out",
            base_url=server.base_url,
            config_dir=tmp_path / "home/config",
            journal=tmp_path / "home/journal.db",
        )
    )
    assert report.status == "completed" and tree_bytes(tmp_path / "out") == expected
    reports = await anyio.to_thread.run_sync(
        lambda: blocking.bulk_executions(
            [execution_id],
            output_dir=tmp_path / "archived",
            job_poll_interval=0.2,
            base_url=server.base_url,
            config_dir=tmp_path / "home/config",
            journal=tmp_path / "home/journal.db",
        )
    )
    assert [r.kind for r in reports] == ["results", "bulk"] and tree_bytes(tmp_path / "archived") == expected


def _outputs(specs: list[tuple[str, str, str]]) -> list[ExecutionOutput]:
    return [
        ExecutionOutput(run, f"run_{run}", process, RemoteData(str(i), name, 1, None))
        for i, (run, process, name) in enumerate(specs)
    ]


NAMES = st.sampled_from(["report.html", "Report.html", "a.txt", "a:b", "CON", "x" * 300 + ".gz", ".", "-rf"])


@given(
    st.lists(
        st.tuples(st.sampled_from(["1", "2"]), st.sampled_from(["fastqc", "FastQC", "a:b", "a_b", "multiqc"]), NAMES),
        min_size=1,
        max_size=12,
    ),
    st.sampled_from(["process", "flat"]),
)
def test_no_two_outputs_ever_share_a_path(specs: list[tuple[str, str, str]], layout: str) -> None:
    outputs = _outputs(specs)
    targets = output_targets(outputs, Path("/out"), layout)
    assert len({str(t).lower() for t in targets}) == len(targets)
    for target in targets:
        assert target.is_relative_to("/out") and ".." not in target.parts
        depth = len(target.relative_to("/out").parts)
        runs = len({o.execution_id for o in outputs})
        assert depth == (2 if layout == "process" else 1) + (1 if runs > 1 else 0)


def test_the_process_layout_by_example() -> None:
    outputs = _outputs([("1", "NFCORE:FASTQC", "r.html"), ("1", "MULTIQC", "r.html"), ("1", "MULTIQC", "r.html")])
    assert [str(t) for t in output_targets(outputs, Path("/o"), "process")] == [
        "/o/NFCORE_FASTQC/r.html",
        "/o/MULTIQC/r.html",
        "/o/MULTIQC/r (2).html",
    ]


def test_outputs_are_read_from_either_shape_and_an_unknown_one_is_an_error() -> None:
    from flowxfer.transfer import ProtocolError
    from flowxfer.transfer._executions import _listed

    item = {"id": "7", "filename": "a.txt"}
    assert _listed("1", {"downstream_data": [{**item, "process_execution_name": "p"}]}) == [
        ("p", {**item, "process_execution_name": "p"})
    ]
    assert _listed(
        "1",
        {
            "process_executions": [
                {"process_name": "p", "downstream_data": [item]},
                {"name": "q", "downstream_data": []},
            ]
        },
    ) == [("p", item)]
    assert _listed("1", {"process_executions": []}) == []  # a run that made nothing
    for unknown in ({}, {"process_executions": [{"name": "p", "outputs": [item]}]}):
        with pytest.raises(ProtocolError, match="lists no outputs"):
            _listed("1", unknown)


def many_small(count: int) -> dict[str, dict[str, int]]:
    """Outputs as nf-core leaves them: many small files, and names (report.html, versions.yml) every process shares."""
    shared = {"report.html": 3 * KiB, "versions.yml": 200}
    return {
        "fastqc": {**{f"s{i}_fastqc.zip": KiB + i for i in range(count)}, **shared},
        "multiqc": dict(shared),
        "salmon": {**{f"s{i}.quant.sf": 2 * KiB + i for i in range(count)}, **shared},
    }


@pytest.mark.parametrize("layout", ["process", "flat"])
async def test_bulk_executions_lands_every_output_where_download_puts_it(
    any_server: RunningServer, tmp_path: Path, layout: str
) -> None:
    """One archive (POST /downloads with the outputs' ids, as hosted Flow offers), laid out as download lays it out."""
    server = any_server
    execution_id, expected = await register(server, tmp_path, many_small(30), [])
    out, singly = tmp_path / "archived", tmp_path / "singly"
    async with client(server, tmp_path / "home") as fx:
        reports = await fx.bulk_executions([execution_id], output_dir=out, layout=layout)
        assert [r.kind for r in reports] == ["results", "bulk"] and {r.status for r in reports} == {"completed"}
        assert reports[0].bytes_transferred == 0 and len(reports[1].files) == 1  # every byte came in the archive
        single = await fx.download_executions([execution_id], output_dir=singly, layout=layout)
        assert single.status == "completed"
        got = tree_bytes(out)
        assert got == tree_bytes(singly)  # same paths, same bytes: same-named outputs kept apart alike
        assert len(got) == sum(len(files) for files in many_small(30).values())
        if layout == "process":
            assert got == expected
        assert not (out / ".flowxfer-archive").exists() and not (out / "flow-results.zip").exists()

        again = await fx.bulk_executions([execution_id], output_dir=out, layout=layout)
        assert [r.kind for r in again] == ["results"] and again[0].bytes_transferred == 0
        assert {f.status for f in again[0].files} == {"skipped"}  # remembered where the archive put them
        # One output changed locally: only it is fetched again (in an archive of one).
        (out / next(iter(got))).write_bytes(b"edited")
        third = await fx.bulk_executions([execution_id], output_dir=out, layout=layout)
        assert [r.kind for r in third] == ["results", "bulk"] and tree_bytes(out) == got


async def test_auto_bulk_takes_the_archive_only_past_the_threshold(server: RunningServer, tmp_path: Path) -> None:
    few, _ = await register(server, tmp_path / "few", many_small(5), [])
    many, expected = await register(server, tmp_path / "many", many_small(30), [(0.5, "OK")])
    async with client(server, tmp_path / "home") as fx:
        reports = await fx.bulk_executions([few], auto=True, output_dir=tmp_path / "few-out")
        assert [r.kind for r in reports] == ["results"] and reports[0].bytes_transferred > 0
        reports = await fx.bulk_executions(
            [many], auto=True, output_dir=tmp_path / "out", wait=True, poll_interval=FAST
        )
        assert [r.kind for r in reports] == ["results", "bulk"], reports
        assert reports[0].extra["executions"][many]["status"] == "OK"
        assert tree_bytes(tmp_path / "out") == expected


def test_archive_wanted_counts_as_download_does() -> None:
    from flowxfer.transfer._advice import BULK_MIN_FILES, BULK_SMALL_FILE
    from flowxfer.transfer._executions import archive_wanted

    small = [RemoteData(str(i), "f", 10, None) for i in range(BULK_MIN_FILES)]
    large = RemoteData("L", "big", BULK_SMALL_FILE, None)
    assert archive_wanted([*small, large], "auto") == [False] * (BULK_MIN_FILES + 1)  # 50: not more than 50
    more = [*small, RemoteData("x", "g", 1, None), large]
    assert archive_wanted(more, "auto") == [True] * (BULK_MIN_FILES + 1) + [False]
    assert archive_wanted(more, "all") == [True] * len(more) and archive_wanted(more, None) == [False] * len(more)


async def test_an_output_the_archive_names_otherwise_is_downloaded_singly(
    server: RunningServer, tmp_path: Path
) -> None:
    """A backslash is a folder in an archive (Windows-made ones use it): that member is not where it was
    expected, so the output comes by the single path, to the same place download gives it."""
    execution_id, _ = await register(server, tmp_path, {"qc": {"a\\b.txt": 3 * KiB, "c.txt": 2 * KiB}}, [])
    async with client(server, tmp_path / "home") as fx:
        reports = await fx.bulk_executions([execution_id], output_dir=tmp_path / "archived")
        assert [r.kind for r in reports] == ["results", "bulk", "results"], reports
        assert reports[1].extra["unplaced"] and reports[2].bytes_transferred == 3 * KiB
        await fx.download_executions([execution_id], output_dir=tmp_path / "singly")
    assert tree_bytes(tmp_path / "archived") == tree_bytes(tmp_path / "singly")
    assert not (tmp_path / "archived" / ".flowxfer-archive").exists()


async def test_an_output_named_like_the_archive_is_not_in_its_way(server: RunningServer, tmp_path: Path) -> None:
    execution_id, expected = await register(
        server, tmp_path, {"zip": {"flow-results.zip": 2 * KiB, ".flowxfer-archive": KiB}}, []
    )
    async with client(server, tmp_path / "home") as fx:
        reports = await fx.bulk_executions([execution_id], output_dir=tmp_path / "out", layout="flat")
        again = await fx.bulk_executions([execution_id], output_dir=tmp_path / "out", layout="flat", force=True)
    assert (
        [(r.kind, r.status) for r in reports]
        == [(r.kind, r.status) for r in again]
        == [("results", "completed"), ("bulk", "completed")]
    ), (reports, again)
    assert sorted(tree_bytes(tmp_path / "out").values()) == sorted(expected.values())
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [".flowxfer-archive", "flow-results.zip"]

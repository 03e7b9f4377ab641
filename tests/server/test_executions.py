"""Executions against the real server: registered offline, read as hosted Flow documents them."""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from flowxfer.protocol import HEADER_LIMIT
from flowxfer.server import Admin, AdminError
from flowxfer.server._admin_executions import ExecutionSpec, schedule_problem
from flowxfer.server._store import Store
from flowxfer.server._store_executions import TERMINAL, ExecutionRow
from tests.server.conftest import Api
from tests.server.test_samples import upload_file
from tests.support.server import RunningServer, running_server


async def register(root: Path, spec: ExecutionSpec) -> str:
    """``admin execution add``, in a thread (the server runs on this loop)."""

    def add() -> str:
        with Admin(root) as admin:
            return admin.add_execution(spec)[0]

    return await anyio.to_thread.run_sync(add)


def outputs(tmp_path: Path, *pairs: tuple[str, str, bytes]) -> list[tuple[str, Path]]:
    found = []
    for process, name, content in pairs:
        folder = tmp_path / "made" / process
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(content)
        found.append((process, folder / name))
    return found


async def test_a_run_turns_ok_on_schedule_and_shows_its_outputs(
    server: RunningServer, api: Api, tmp_path: Path
) -> None:
    files = outputs(tmp_path, ("fastqc", "report.html", b"a" * 10), ("multiqc", "report.html", b"b" * 20))
    execution_id = await register(
        server.root, ExecutionSpec("alice", "RNA-Seq", "3.4", outputs=files, schedule=[(1.5, "OK")])
    )
    pending = await api.call("GET", f"/executions/{execution_id}", "alice")
    assert pending.status == 200
    body = pending.json()
    assert body["status"] == "" and body["finished"] is None
    assert body["pipeline"]["pipeline_name"] == "RNA-Seq" and body["pipeline"]["name"] == "3.4"
    steps = {p["name"]: p for p in body["process_executions"]}
    assert steps["fastqc"]["status"] == "COMPLETED" and steps["multiqc"]["status"] == "RUNNING"
    assert [d["process_execution_name"] for d in body["downstream_data"]] == ["fastqc", "multiqc"]
    assert {d["filename"] for d in body["downstream_data"]} == {"report.html"}
    await anyio.sleep(1.7)
    trimmed = await api.call("GET", f"/executions/{execution_id}?include=status&include=finished", "alice")
    assert trimmed.json()["status"] == "OK" and set(trimmed.json()) == {"status", "finished"}
    assert trimmed.json()["finished"] <= time.time()
    # Each output is ordinary data: its record and its bytes.
    for item in body["downstream_data"]:
        data = await api.call("GET", f"/data/{item['id']}", "alice")
        assert data.status == 200 and data.json()["filename"] == "report.html"
        got = await api.call("GET", f"/downloads/{item['id']}/report.html", "alice")
        assert got.body in (b"a" * 10, b"b" * 20)


async def test_detail_refuses_bad_parameters_and_hides_others_runs(server: RunningServer, api: Api) -> None:
    execution_id = await register(server.root, ExecutionSpec("alice", "ChIP-Seq", "1.0"))
    assert (await api.call("GET", f"/executions/{execution_id}?include=status&exclude=log", "alice")).status == 400
    assert (await api.call("GET", f"/executions/{execution_id}?log=x", "alice")).status == 400
    assert (await api.call("GET", f"/executions/{execution_id}?exclude=stdout", "alice")).json().get("stdout") is None
    assert (await api.call("GET", f"/executions/{execution_id}", "bob")).status == 404
    assert (await api.call("GET", "/executions/12", "alice")).status == 404
    assert (await api.call("GET", f"/executions/{execution_id}")).status == 401
    public = await register(server.root, ExecutionSpec("alice", "ChIP-Seq", "1.0", public=True))
    assert (await api.call("GET", f"/executions/{public}", "bob")).status == 200


async def test_search_has_hosted_flows_envelope_and_filters(server: RunningServer, api: Api, tmp_path: Path) -> None:
    files = outputs(tmp_path, ("salmon", "quant.sf", b"q"))
    ok = await register(server.root, ExecutionSpec("alice", "RNA-Seq", "3.4", outputs=files))
    failed = await register(server.root, ExecutionSpec("alice", "ChIP-Seq", "2.0", schedule=[(0, "ERROR")]))
    await register(server.root, ExecutionSpec("bob", "RNA-Seq", "3.4"))
    page = (await api.call("GET", "/executions/search", "alice")).json()
    assert set(page) == {"count", "page", "executions"} and page["count"] == 2 and page["page"] == 1
    assert [e["id"] for e in page["executions"]] == [failed, ok]  # newest first
    item = page["executions"][1]
    assert {
        "id",
        "identifier",
        "pipeline_name",
        "pipeline_version",
        "created",
        "started",
        "finished",
        "status",
        "can_delete",
        "retries",
        "retried_by",
        "fileset",
        "sample_name",
        "owner_name",
    } <= set(item)
    assert isinstance(item["created"], int) and "downstream_data" not in item
    with_data = (await api.call("GET", "/executions/search?return_data=true&status=OK", "alice")).json()
    assert with_data["count"] == 1
    assert with_data["executions"][0]["downstream_data"][0]["filename"] == "quant.sf"
    assert (await api.call("GET", "/executions/search?name=chip", "alice")).json()["count"] == 1
    assert (await api.call("GET", "/executions/search?process_execution=salm", "alice")).json()["count"] == 1
    assert (await api.call("GET", "/executions/search?sort=name", "alice")).json()["executions"][0]["id"] == failed
    assert (await api.call("GET", "/executions/search?count=1&page=2", "alice")).json()["executions"][0]["id"] == ok
    for bad in ("count=101", "sort=status", "created_gt=yesterday", "duration_gt=long", "page=0"):
        assert (await api.call("GET", f"/executions/search?{bad}", "alice")).status == 400, bad


async def test_a_samples_runs_and_their_outputs_join_its_data(server: RunningServer, api: Api, tmp_path: Path) -> None:
    sample = await upload_file(api, "alice", b"ACGT" * 10, filename="reads.fq")
    sample_id = str(sample["sample_id"])
    files = outputs(tmp_path, ("salmon", "quant.sf", b"q" * 3))
    execution_id = await register(
        server.root, ExecutionSpec("alice", "RNA-Seq", "3.4", sample_id=sample_id, outputs=files)
    )
    runs = (await api.call("GET", f"/samples/{sample_id}/executions", "alice")).json()
    assert runs["count"] == 1 and runs["executions"][0]["id"] == execution_id
    assert runs["executions"][0]["created"].endswith("+00:00")  # ISO-8601 here, as hosted documents
    data = (await api.call("GET", f"/samples/{sample_id}/data", "alice")).json()
    assert data["count"] == 2
    by_name = {d["filename"]: d for d in data["data"]}
    assert by_name["reads.fq"]["pipeline_name"] is None
    assert by_name["quant.sf"]["process_execution_name"] == "salmon"
    assert by_name["quant.sf"]["pipeline_name"] == "RNA-Seq"
    assert (await api.call("GET", f"/samples/{sample_id}/data?filter=salmon", "alice")).json()["count"] == 1
    assert (await api.call("GET", f"/samples/{sample_id}/executions", "bob")).status == 404
    detail = (await api.call("GET", f"/executions/{execution_id}?include=sample", "alice")).json()
    assert detail == {"sample": {"id": sample_id, "name": "S"}}


async def test_polling_a_run_counts_against_the_api_class(server_root: Path, tmp_path: Path) -> None:
    import aiohttp

    async with (
        running_server(server_root, rate_limits="api=50/60s,download=2/60s,search=2/60s") as srv,
        aiohttp.ClientSession() as http,
    ):
        api = Api(http, srv.base_url, srv.users)
        execution_id = await register(srv.root, ExecutionSpec("alice", "RNA-Seq", "3.4"))
        for _ in range(4):
            answer = await api.call("GET", f"/executions/{execution_id}?include=status", "alice")
            assert answer.status == 200 and answer.headers[HEADER_LIMIT] == "50"
        assert (await api.call("GET", "/executions/search", "alice")).headers[HEADER_LIMIT] == "50"


def test_admin_refuses_what_it_cannot_register(tmp_path: Path) -> None:
    with Admin(tmp_path / "root") as admin:
        admin.add_user("alice", "alice-pw-1")
        for spec, why in (
            (ExecutionSpec("zoe", "P", "1"), "no such user"),
            (ExecutionSpec("alice", "", "1"), "pipeline name"),
            (ExecutionSpec("alice", "P", "1", outputs=[("p", tmp_path / "missing")]), "not a file"),
            (ExecutionSpec("alice", "P", "1", sample_id="123456789012345678"), "no sample"),
            (ExecutionSpec("alice", "P", "1", schedule=[(0, "OK"), (1, "ERROR")]), "terminal"),
        ):
            with pytest.raises(AdminError, match=why):
                admin.add_execution(spec)
        assert admin.executions() == []
        assert not list((tmp_path / "root" / "data").glob("*"))


@given(st.lists(st.tuples(st.floats(0, 100), st.sampled_from(["", "-", *TERMINAL])), max_size=5), st.floats(-10, 200))
def test_a_schedule_shows_one_status_and_never_leaves_a_terminal_one(
    steps: list[tuple[float, str]], now: float
) -> None:
    if schedule_problem(steps) is not None:
        return
    row = ExecutionRow("1", "x", "alice", "P", "1", None, None, None, None, None, True, "", tuple(steps), "", "", 0.0)
    status, finished = row.status_at(now)
    later_status, later_finished = row.status_at(now + 50)
    if status in TERMINAL:
        assert (later_status, later_finished) == (status, finished) and finished is not None and finished <= now
    else:
        assert finished is None


def test_the_schedule_rules() -> None:
    assert schedule_problem([(0, "-"), (5, "OK")]) is None
    assert schedule_problem([(5, "-"), (1, "OK")]) is not None
    assert schedule_problem([(0, "RUNNING")]) is not None
    assert schedule_problem([(0, "OK"), (1, "-")]) is not None


def test_admin_execution_add_on_the_command_line(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from flowxfer.cli import main

    runner = CliRunner()
    root = str(tmp_path / "root")
    with Admin(root) as admin:
        admin.add_user("alice", "alice-pw-1")
    (tmp_path / "quant.sf").write_bytes(b"q")
    base = ["admin", "--root", root, "execution", "add", "alice", "--pipeline", "RNA-Seq", "--version", "3.4"]
    for bad, why in (
        (["--output", "quant.sf"], "PROCESS=FILE"),
        (["--schedule", "soon"], "TIME=STATUS"),
        (["--schedule", "1s=RUNNING"], "unknown status"),
        (["--status", "DONE"], "DONE"),
        (["--output", f"salmon={tmp_path / 'nope'}"], "not a file"),
    ):
        result = runner.invoke(main, [*base, *bad])
        assert result.exit_code == 2 and why in result.output, (bad, result.output)
    added = runner.invoke(
        main,
        [
            *base,
            "--output",
            f"salmon={tmp_path / 'quant.sf'}",
            "--schedule",
            "0s=-,1h=OK",
            "--identifier",
            "small_meucci",
        ],
    )
    assert added.exit_code == 0 and added.output.startswith("added execution ") and "small_meucci" in added.output
    listed = runner.invoke(main, ["admin", "--root", root, "execution", "list"])
    assert listed.output.split()[1:] == ["small_meucci", "alice", "RNA-Seq", "3.4"]
    again = runner.invoke(main, [*base, "--identifier", "small_meucci"])
    assert again.exit_code == 2 and "already called" in again.output


def test_admin_execution_finish_ends_a_running_run_once(tmp_path: Path) -> None:
    """``admin execution finish``: the run ends now, whatever its schedule said; an ended run stays ended."""
    from click.testing import CliRunner

    from flowxfer.cli import main

    runner = CliRunner()
    root = tmp_path / "root"
    with Admin(root) as admin:
        admin.add_user("alice", "alice-pw-1")
        running, _ = admin.add_execution(ExecutionSpec("alice", "RNA-Seq", "3.4", schedule=[(0, "-"), (3600, "OK")]))
        done, _ = admin.add_execution(ExecutionSpec("alice", "RNA-Seq", "3.4"))
    finish = ["admin", "--root", str(root), "execution", "finish"]
    for args, why in (
        (["nope"], "no execution nope"),
        ([done], "ended already (OK)"),
        ([running, "--status", "-"], "'-'"),
    ):
        result = runner.invoke(main, [*finish, *args])
        assert result.exit_code == 2 and why in result.output, (args, result.output)
    ended = runner.invoke(main, [*finish, running, "--status", "ERROR"])
    assert ended.exit_code == 0 and ended.output == f"execution {running} ended ERROR\n", ended.output
    store = Store(root)
    row = store.get_execution(running)
    store.close()
    assert row is not None
    status, finished = row.status_at(time.time() + 7200)  # the hour's OK is gone
    assert status == "ERROR" and finished is not None and finished <= time.time()
    with Admin(root) as admin:
        with pytest.raises(AdminError, match="ended already"):
            admin.finish_execution(running, "OK")
        with pytest.raises(AdminError, match="one of"):
            admin.finish_execution(running, "")

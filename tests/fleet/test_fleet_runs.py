"""Three hosts cron-syncing thirty runs from shared storage through one PostgreSQL journal: each run once.

Issue 21's first "must hold": a core's ingest hosts (``FLOWXFER_HOST_ID``
host0..host2) each pass over the same 30 run folders as cron would,
``flowxfer sync RUN --samples ...`` per run (``tests.support.fleet``), against
one rate-limited server process and one PostgreSQL journal. Then:

- every run is on Flow exactly once: each expected data item (the run's
  FASTQs and its pack of small files) once by name, each sample once, with
  its two reads linked; nothing else;
- the fleet met no more 429s than one host alone would: none (see
  :data:`ALONE_429`); with a budget each, hosts that all read the window's
  ``X-RateLimit-Remaining`` each spend it, and walk into 429s;
- ``jobs --all --json`` from any host shows every run's transfers as done,
  with the host that did them, and more than one host did some.

The upload limit (20 per 4 s against 90 uploads: 30 packs, 60 FASTQs) bites:
the fleet uploads faster than that and must wait for windows to turn (at 50
per 5 s it never did, and the check below could not fail).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.fleet import make_runs
from tests.support.server import ServerProcess

RUNS = 30
#: The 429s one host alone meets on this work, by the limit arithmetic: once it has seen one answer
#: it spends no more than the server's ``X-RateLimit-Remaining``, and before that it has at most its
#: first run's 3 uploads in flight, far below a window's 20. Measured too: 0 in each of two lone-host
#: runs at these limits while this test was written (and in four at 50-60 uploads per 5 s). Three
#: hosts met 1 with the budget shared through the journal as built (merged every 2 s, so hosts
#: spending in between overshoot a window), 8 with no sharing at all.
ALONE_429 = 0
LIMITS = "upload=20/4s,api=5000/60s"
SYNC = ["sync", "{run}", "--samples", "--sample-type", "RNA-Seq", "--metadata", "strandedness=reverse"]
SYNC += ["--pack-small", "1M"]
ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-c", "from flowxfer.cli import main; main()"]


@dataclass
class Outcome:
    """What one fleet (or lone host) left behind: the server's view, its 429s, and the journal's."""

    data: Counter[str]
    samples: dict[str, list[dict[str, Any]]]
    rate_limited: int
    transfers: list[dict[str, Any]]
    passes: list[list[dict[str, Any]]]


def _get(base_url: str, token: str, path: str) -> Any:
    request = urllib.request.Request(f"{base_url}{path}", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310 - loopback only
        return json.loads(answer.read())


def _token(server: ServerProcess) -> str:
    body = json.dumps({"username": "alice", "password": server.users["alice"]}).encode()
    request = urllib.request.Request(
        f"{server.base_url}/login", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310 - loopback only
        return str(json.loads(answer.read())["token"])


def _owned(server: ServerProcess, token: str, kind: str) -> list[dict[str, Any]]:
    """Every item of ``/data/owned`` or ``/samples/owned``, page by page."""
    items: list[dict[str, Any]] = []
    while True:
        page = _get(server.base_url, token, f"/{kind}/owned?limit=100&offset={len(items)}")
        items += page[kind]
        if not page[kind] or len(items) >= page["count"]:
            return items


def _server_view(server: ServerProcess) -> tuple[Counter[str], dict[str, list[dict[str, Any]]]]:
    """Data names (with how often each is stored) and samples by name, each with its linked data."""
    token = _token(server)
    data = Counter(item["filename"] for item in _owned(server, token, "data"))
    samples: dict[str, list[dict[str, Any]]] = {}
    for item in _owned(server, token, "samples"):
        sample = _get(server.base_url, token, f"/samples/{item['id']}")
        linked = [d["filename"] for fileset in sample["filesets"] for d in fileset["data"]]
        samples.setdefault(item["name"], []).append({"id": item["id"], "data": linked})
    return data, samples


def _piped(env: dict[str, str]) -> dict[str, Any]:
    return {"env": env, "stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}


def _fleet(root: Path, runs: list[Path], hosts: int, journal: str) -> Outcome:
    """``hosts`` host processes syncing ``runs`` against a fresh rate-limited server and ``journal``."""
    root.mkdir(parents=True)
    with ServerProcess(root / "flow-root", "--rate-limits", LIMITS) as server:
        envs = [
            {
                **os.environ,
                "FLOW_API_URL": server.base_url,
                "FLOWXFER_CONFIG_DIR": str(root / f"host{number}"),
                "FLOWXFER_JOURNAL": journal,
                "FLOWXFER_HOST_ID": f"host{number}",
                "PYTHONPATH": str(ROOT),
            }
            for number in range(hosts)
        ]
        # Each host logs in on its own (its own tokens, one Flow user), all at once: each start costs seconds.
        logins = [subprocess.Popen([*CLI, "login", "-u", "alice", "--password-stdin"], **_piped(env)) for env in envs]
        for login in logins:
            _, stderr = login.communicate("alice-pw-1\n", timeout=60)
            assert login.returncode == 0, stderr
        command = [sys.executable, "-m", "tests.support.fleet", *map(str, runs), "--", "--json", "--no-progress", *SYNC]
        procs = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True, cwd=ROOT) for env in envs]
        outputs = [proc.communicate(timeout=240)[0] for proc in procs]
        passes = [[json.loads(line) for line in output.splitlines()] for output in outputs]
        assert [proc.returncode for proc in procs] == [0] * hosts, passes
        jobs = subprocess.run(
            [*CLI, "--json", "jobs", "--all"],
            env=envs[-1],
            capture_output=True,
            text=True,
            check=True,
        )
        data, samples = _server_view(server)
    rate_limited = sum('" 429 ' in line for line in server.log_path.read_text().splitlines())
    return Outcome(data, samples, rate_limited, json.loads(jobs.stdout)["transfers"], passes)


def _expected(runs: list[Path]) -> tuple[set[str], dict[str, set[str]]]:
    """Data names (each run's FASTQs and its pack) and sample names with the FASTQs they link."""
    data: set[str] = set()
    samples: dict[str, set[str]] = {}
    for run in runs:
        data.add(f"{run.name}.tar")
        for fastq in (run / "Fastq").rglob("*.fastq.gz"):
            data.add(fastq.name)
            samples.setdefault(fastq.name.split("_S")[0], set()).add(fastq.name)
    return data, samples


def _assert_each_run_once(outcome: Outcome, runs: list[Path]) -> None:
    data, samples = _expected(runs)
    twice = {name: count for name, count in outcome.data.items() if count > 1}
    assert not twice, f"stored more than once: {twice}"
    assert set(outcome.data) == data
    assert {name: len(made) for name, made in outcome.samples.items()} == dict.fromkeys(samples, 1)
    assert {name: set(made[0]["data"]) for name, made in outcome.samples.items()} == samples


def _by_run(transfers: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for transfer in transfers:
        params = transfer["params"]
        root = params["root"] if transfer["kind"] == "sync" else params["run"]["root"]
        found.setdefault(root, []).append(transfer)
    return found


def test_three_hosts_send_thirty_runs_exactly_once(tmp_path: Path, postgres_url: str) -> None:
    runs = make_runs(tmp_path / "seq", RUNS, samples=1)
    hosts = {f"host{n}" for n in range(3)}

    fleet = _fleet(tmp_path / "fleet", runs, 3, postgres_url)

    _assert_each_run_once(fleet, runs)
    transfers = _by_run(fleet.transfers)
    assert set(transfers) == {str(run) for run in runs}
    for root, made in transfers.items():
        assert {t["kind"] for t in made} == {"sync", "samples"}, (root, made)
        assert all(t["status"] == "completed" and t["host"] in hosts for t in made), (root, made)
        sending = [t for t in made if t["bytes_done"] > 0]
        assert len(sending) == 2, f"{root}: more than one sync or samples transfer sent bytes: {sending}"
    workers = {t["host"] for t in fleet.transfers if t["bytes_done"] > 0}
    assert len(workers) >= 2, f"one host did everything ({workers}): the fleet was not tested"
    assert fleet.rate_limited <= ALONE_429, (
        f"the fleet met {fleet.rate_limited} 429s where one host alone meets {ALONE_429}: "
        "the hosts did not spend one shared budget"
    )

"""The chaos scenarios, on a file whose chunks travel on several connections (the parallel-chunk [ext]).

Issue 20: "everything the reliability suites assert today" must hold for the
multi-connection upload too. ``tests/chaos/test_chaos.py`` runs its
scenarios with the test client's default of one stream, so every upload
there goes ``POST /upload`` in strict order and its bounded-resend check
only counts that route; the parallel extension has crash tests of its own
(``tests/chaos/test_parallel_crash.py``) but meets none of the network's
faults. Here each scenario (plus a lost answer, so a chunk the server stored
is sent again) meets a large file on four streams. What must hold, as
there: the server holds exactly the source, the extension was used, and
what went on the wire again is bounded by the faults (about one chunk
each), never the file again.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos.test_chaos import CHUNK, ENVELOPE, SCENARIOS, STALLS
from tests.support.faultproxy import DropResponse, Match, Rule, StallMidBody
from tests.support.rig import rig, stored
from tests.transfer.conftest import client, write_random

MiB = 1024 * 1024
SIZE = 3 * MiB + 4321
PARALLEL = r"^/upload/parallel/\d+$"
UPLOADS = r"^/upload(/parallel/\d+)?$"

CASES = {
    # The strict route's stall matches only "POST /upload": the parallel chunks get one of their own.
    **{name: SCENARIOS[name] for name in SCENARIOS if name not in ("bandwidth cap", STALLS)},
    STALLS: lambda seed: [
        StallMidBody(
            Match("POST", PARALLEL, probability=0.3),
            direction="down",
            at_fraction=0.5,
            seconds=3.0,
            then="close",
            times=2,
        )
    ],
    "lost answers to chunks": lambda seed: [
        DropResponse(Match("POST", PARALLEL, probability=0.3), times=4, reset=bool(seed % 2))
    ],
}


@pytest.mark.parametrize("scenario", list(CASES))
async def test_a_parallel_upload_survives_the_scenario_exactly(tmp_path: Path, scenario: str) -> None:
    source = write_random(tmp_path / "src" / "big_R1.fastq.gz", SIZE, 11)
    async with rig(tmp_path, True, seed=3) as r:
        # A short read timeout only where the stalls are the fault (see STALLS).
        timeout = 1.0 if scenario == STALLS else 10.0
        settings = {"upload_streams": 4, "read_timeout": timeout, "max_attempts": 12, "backoff_cap": 0.3}
        async with client(r.via_proxy, tmp_path / "home", **settings) as fx:
            rules: list[Rule] = [r.proxy.add(rule) for rule in CASES[scenario](3)]
            report = await fx.upload([source])
        for rule in rules:
            r.proxy.remove(rule)
        assert report.status == "completed", (report.status, [f.error for f in report.files])
        (item,) = report.files
        assert item.id
        assert await stored(r.server, {source.name: item.id}) == {source.name: source.read_bytes()}

        posts = r.log.select("POST", PARALLEL)
        assert len(posts) >= SIZE // CHUNK, "the parallel extension was not used: this tested the strict path"
        assert len({e.connection for e in posts}) > 1
        faults = sum(r.proxy.stats.faults_injected.values())
        if scenario != "latency+jitter":
            assert faults > 0, "the scenario injected nothing: it tested nothing"
        wire = r.wire("POST", UPLOADS, "request_bytes")
        requests = len(r.log.select("POST", UPLOADS))
        resent = wire - SIZE
        assert resent <= requests * ENVELOPE + faults * 2 * CHUNK, (resent, requests, faults)

        # Nothing half is left beside the finished file: the upload's partial area is gone.
        assert not (r.server.root / "partial" / item.id).exists()

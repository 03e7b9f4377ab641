"""The catalog a batch is checked against, fetched from the real server through the fault proxy.

Its requests do not wait for one another (issue 19): through a WAN path six
requests in a row cost six round trips before any byte moved.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from flowxfer.transfer import ProtocolError
from tests.support.faultproxy import Match, RespondWith
from tests.support.rig import rig
from tests.transfer.conftest import client

CATALOG_PATHS = {"/samples/types", "/samples/metadata", "/organisms", "/projects/owned"}


async def test_the_catalog_requests_go_at_once(tmp_path: Path) -> None:
    """Types, metadata, organisms and projects each on a connection of its own (in a row they would share
    one kept-alive connection), then the closed attribute's options; the catalog is whole."""
    async with rig(tmp_path, True) as r, client(r.via_proxy, tmp_path / "home") as fx:
        r.log.clear()
        before = fx.client.limiter.requests_by_class().get("api", 0)
        catalog = await fx.samples_catalog()
        # Each request still took its token: the four, and the options (capabilities are not counted).
        assert fx.client.limiter.requests_by_class().get("api", 0) - before == len(CATALOG_PATHS) + 1
    entries = [e for e in r.log.select("GET") if e.path.split("?", 1)[0] in CATALOG_PATHS]
    assert {e.path.split("?", 1)[0] for e in entries} == CATALOG_PATHS
    assert len({e.connection for e in entries}) == len(CATALOG_PATHS)
    assert len(r.log.select("GET", r"^/samples/metadata/strandedness/options$")) == 1
    assert {"RNA-Seq", "ChIP-Seq", "generic"} <= set(catalog.sample_types)
    assert catalog.attributes["strandedness"].options == ("forward", "reverse", "unstranded")
    assert set(catalog.organisms) >= {"Hs", "Mm"}


async def test_one_malformed_answer_among_them_is_the_error(tmp_path: Path) -> None:
    """A request of the group that fails raises its own error, not a group of them."""
    async with rig(tmp_path, True) as r, client(r.via_proxy, tmp_path / "home") as fx:
        r.proxy.add(RespondWith.json(200, {"organisms": "none"}, match=Match("GET", r"^/organisms$")))
        with pytest.raises(ProtocolError, match="/organisms"):
            await fx.samples_catalog()

"""Issue 21: leases with a heartbeat and a TTL "default at most 60 s".

The fleet tests use short TTLs of their own, or age a lease by 120 s; a
default raised to, say, ten minutes (a dead host's runs waiting that long)
would pass them all. Pinned here: the engine's, the journal's and a schema-4
lease's defaults, and at least four heartbeats per TTL, for any TTL.
"""

from __future__ import annotations

import inspect

from hypothesis import given
from hypothesis import strategies as st

from flowxfer.journal import Journal
from flowxfer.transfer import TransferConfig

MINUTE = 60.0


def test_every_default_lease_ttl_is_at_most_a_minute() -> None:
    assert 0 < TransferConfig().lease_stale_after <= MINUTE
    for method in (Journal.acquire_lease, Journal.begin_transfer, Journal.reopen_transfer):
        default = inspect.signature(method).parameters["stale_after"].default
        assert 0 < default <= MINUTE, (method.__name__, default)


@given(ttl=st.floats(min_value=0.05, max_value=86_400, allow_nan=False))
def test_a_lease_is_renewed_at_least_four_times_per_ttl(ttl: float) -> None:
    config = TransferConfig(lease_stale_after=ttl)
    assert 0 < config.heartbeat_period <= ttl / 4

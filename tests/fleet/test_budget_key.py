"""One server, one shared budget: every spelling of a server's URL keys the same budget (issue 21).

A fleet shares its rate-limit budgets per Flow user and server through the
journal. Hosts configured with trivially different spellings of one server
URL (the scheme's or host's case, the default port, a trailing slash) must
spend one budget, not one each.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from flowxfer.journal import Journal
from flowxfer.transfer._limiter import budget_server
from tests.cli.conftest import Cli
from tests.fleet.conftest import make_run
from tests.support.server import RunningServer

SAME = [
    ("https://flow.example", "https://flow.example"),
    ("HTTPS://FLOW.Example", "https://flow.example"),
    ("https://flow.example/", "https://flow.example"),
    ("https://flow.example:443", "https://flow.example"),
    ("https://flow.example:443///", "https://flow.example"),
    ("https://flow.example./", "https://flow.example"),
    ("  https://flow.example  ", "https://flow.example"),
    ("https://alice:secret@flow.example", "https://flow.example"),
    ("https://flow.example/?next=1#top", "https://flow.example"),
    ("HTTP://Host:80/", "http://host"),
    ("http://127.0.0.1:80", "http://127.0.0.1"),
    ("http://[::1]:8080/", "http://[::1]:8080"),
    ("http://[::1]:80/", "http://[::1]"),
    ("https://Flow.Example/API/", "https://flow.example/API"),
    ("https://bücher.example", "https://xn--bcher-kva.example"),
    ("https://xn--bcher-kva.example", "https://xn--bcher-kva.example"),
]

DIFFERENT = [
    ("http://flow.example", "https://flow.example"),  # another scheme: another port, maybe another server
    ("https://flow.example:8443", "https://flow.example"),
    ("http://flow.example:443", "https://flow.example"),  # 443 is not http's default port
    ("https://flow.example/a", "https://flow.example/b"),  # two servers behind one host
    ("https://flow.example/API", "https://flow.example/api"),  # paths are case-sensitive
    ("https://a.flow.example", "https://flow.example"),
]


@pytest.mark.parametrize(("url", "key"), SAME)
def test_spellings_of_one_server_share_a_key(url: str, key: str) -> None:
    assert budget_server(url) == key


@pytest.mark.parametrize(("one", "other"), DIFFERENT)
def test_different_servers_keep_their_own_keys(one: str, other: str) -> None:
    assert budget_server(one) != budget_server(other)


_LABEL = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
_HOST = st.lists(_LABEL, min_size=1, max_size=4).map(".".join)
_PATH = st.lists(st.from_regex(r"[A-Za-z0-9_.~-]{1,8}", fullmatch=True), max_size=3).map(
    lambda parts: "".join(f"/{p}" for p in parts)
)


def _spell(scheme: str, host: str, port: int | None, path: str, upper: st.DataObject) -> str:
    """One of the many ways to write ``scheme://host[:port]path``."""
    case = upper.draw(st.sampled_from([str.lower, str.upper, str.title]))
    default = {"http": 80, "https": 443}[scheme]
    if port is None:
        port = upper.draw(st.sampled_from([None, default]))
    netloc = case(host) + upper.draw(st.sampled_from(["", "."])) + (f":{port}" if port is not None else "")
    return f"{case(scheme)}://{netloc}{path}{upper.draw(st.sampled_from(['', '/', '//']))}"


@given(
    scheme=st.sampled_from(["http", "https"]),
    host=_HOST,
    port=st.one_of(st.none(), st.integers(1, 65535)),
    path=_PATH,
    data=st.data(),
)
def test_every_spelling_of_a_url_has_the_plain_one_s_key(
    scheme: str, host: str, port: int | None, path: str, data: st.DataObject
) -> None:
    if port == {"http": 80, "https": 443}[scheme]:
        port = None
    plain = f"{scheme}://{host}{f':{port}' if port is not None else ''}{path}"
    spelled = _spell(scheme, host, port, path, data)
    assert budget_server(spelled) == budget_server(plain) == plain
    assert budget_server(budget_server(spelled)) == budget_server(spelled)


def _bucket_servers(url: str) -> set[str]:
    with Journal.open(url, host_id="observer") as journal:
        return {row["server"] for row in journal._read("SELECT DISTINCT server FROM buckets")}


async def test_two_hosts_spelling_the_server_differently_spend_one_budget(
    server: RunningServer, tmp_path: Path, postgres_url: str
) -> None:
    """Host a names ``http://127.0.0.1:PORT``, host b ``HTTP://127.0.0.1:PORT/``: the journal holds one budget."""
    shouting = server.base_url.replace("http://", "HTTP://", 1) + "/"
    for name, base_url in (("a", server.base_url), ("b", shouting)):
        make_run(tmp_path / f"run_{name}", seed=ord(name))
        cli = Cli(base_url, tmp_path / name, {"FLOWXFER_JOURNAL": postgres_url, "FLOWXFER_HOST_ID": name})
        await cli.login("alice", server.users["alice"])
        result = await cli.run("--json", "upload", str(tmp_path / f"run_{name}"))
        assert result.code == 0, result
    assert await anyio.to_thread.run_sync(_bucket_servers, postgres_url) == {server.base_url}

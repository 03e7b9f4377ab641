"""Remembered ``/capabilities`` answers: used between commands, forgotten when stale or wrong.

A command that remembers the server's capabilities starts one round trip
sooner (issue 20); one that believes a stale answer must still work when the
server was restarted without the extensions it remembered.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from flowxfer.transfer._capcache import CACHE_FILE, CapabilityCache
from tests.support.faultproxy import FaultProxy, Record
from tests.support.server import running_server
from tests.transfer.conftest import client, write_random

KiB = 1024
OURS = {"server": "flowxfer", "version": "9", "chunk_maps": True, "max_chunk_size": 1 << 20}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_answer_is_used_until_its_ttl_then_asked_again(tmp_path: Path) -> None:
    clock = Clock()
    cache = CapabilityCache(tmp_path, ttl=60, clock=clock)
    assert cache.load("http://a") is None
    cache.save("http://a", OURS)
    cache.save("http://b", {})
    clock.now += 59
    assert cache.load("http://a") == OURS
    assert cache.load("http://b") == {}
    clock.now += 1
    assert cache.load("http://a") is None
    clock.now -= 120  # a clock set back does not make an old answer young for ever
    assert cache.load("http://a") is None


def test_a_measured_rate_lives_beside_the_answer_with_its_own_age(tmp_path: Path) -> None:
    """Per server and direction; kept when the answer is replaced or forgotten; a file only its owner reads."""
    clock = Clock()
    cache = CapabilityCache(tmp_path, ttl=60, rate_ttl=600, clock=clock)
    assert cache.rate("http://a", "upload") is None
    cache.save_rate("http://a", "upload", 5e6)
    cache.save("http://a", OURS)
    cache.save_rate("http://a", "download", 7e6)
    assert (tmp_path / CACHE_FILE).stat().st_mode & 0o777 == 0o600
    assert cache.load("http://a") == OURS
    assert (cache.rate("http://a", "upload"), cache.rate("http://a", "download"), cache.rate("http://b", "upload")) == (
        5e6,
        7e6,
        None,
    )
    clock.now += 120  # the answer is stale, the rates are not
    assert cache.load("http://a") is None
    cache.save("http://a", {})
    cache.forget("http://a")
    assert cache.load("http://a") is None and cache.rate("http://a", "upload") == 5e6
    clock.now += 600
    assert cache.rate("http://a", "upload") is None


def test_forget_drops_one_server_only(tmp_path: Path) -> None:
    cache = CapabilityCache(tmp_path)
    cache.save("http://a", OURS)
    cache.save("http://b", {"server": "flowxfer"})
    cache.forget("http://a")
    assert cache.load("http://a") is None
    assert cache.load("http://b") == {"server": "flowxfer"}


@given(st.binary(max_size=64))
def test_an_unreadable_file_only_costs_the_question(garbage: bytes) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / CACHE_FILE).write_bytes(garbage)
        cache = CapabilityCache(Path(folder))
        assert cache.load("http://a") is None and cache.rate("http://a", "upload") is None
        cache.save("http://a", OURS)
        cache.save_rate("http://a", "upload", 1e6)
        assert cache.load("http://a") == OURS and cache.rate("http://a", "upload") == 1e6


def test_no_config_dir_no_file_and_no_error(tmp_path: Path) -> None:
    cache = CapabilityCache(tmp_path / "missing")
    cache.save("http://a", OURS)
    assert not (tmp_path / "missing").exists()
    assert cache.load("http://a") is None


async def test_a_second_command_does_not_ask_and_a_stale_answer_is_replaced(tmp_path: Path) -> None:
    """Remembered across sessions; when the server comes back without extensions, the download still works.

    The first server has extensions (chunk maps); the second, on the same root
    behind the same URL, has none: the remembered answer sends the engine to
    ``/data/<id>/chunks``, which now answers 404, and the engine must ask
    ``/capabilities`` again and download without a map.
    """
    source = write_random(tmp_path / "src" / "reads.bin", 300 * KiB, 3)
    home = tmp_path / "home"
    root = tmp_path / "root"
    async with FaultProxy("127.0.0.1", None) as proxy:
        log = proxy.add(Record())
        async with running_server(root, extensions=True) as first:
            proxy.upstream_port = _port(first.base_url)
            via = dataclasses.replace(first, base_url=proxy.url)
            async with client(via, home) as fx:
                data_id = (await fx.upload([source])).files[0].id
                assert data_id
            asked = len(log.select("GET", r"^/capabilities$"))
            assert asked == 1
            assert _remembered(home, proxy.url)["chunk_maps"] is True

            async with client(via, home) as fx:
                report = await fx.download([data_id], output_dir=tmp_path / "out1")
                assert report.status == "completed", report
            assert len(log.select("GET", r"^/capabilities$")) == asked, "the remembered answer was not used"
            assert log.select("GET", r"^/data/[^/]+/chunks$"), "the download used no chunk map"

        async with running_server(root, extensions=False) as second:
            proxy.upstream_port = _port(second.base_url)
            async with client(dataclasses.replace(second, base_url=proxy.url), home) as fx:
                report = await fx.download([data_id], output_dir=tmp_path / "out2")
                assert report.status == "completed", report
        assert len(log.select("GET", r"^/capabilities$")) == asked + 1
        assert _remembered(home, proxy.url).get("chunk_maps") is not True
    assert (tmp_path / "out2" / "reads.bin").read_bytes() == source.read_bytes()


async def test_an_upload_told_parallel_chunks_by_a_stale_answer_goes_in_order(tmp_path: Path) -> None:
    """The server comes back without extensions while the cache says ``parallel_chunks``: the upload still lands.

    The remembered answer sends the upload to ``POST /upload/parallel``, which
    now answers 404: the engine asks ``/capabilities`` again, remembers the new
    answer and sends the file in strict order.
    """
    first_file = write_random(tmp_path / "src" / "one.bin", 300 * KiB, 4)
    second_file = write_random(tmp_path / "src" / "two.bin", 300 * KiB, 5)
    home = tmp_path / "home"
    root = tmp_path / "root"
    async with FaultProxy("127.0.0.1", None) as proxy:
        log = proxy.add(Record())
        async with running_server(root, extensions=True) as first:
            proxy.upstream_port = _port(first.base_url)
            async with client(dataclasses.replace(first, base_url=proxy.url), home, upload_streams=4) as fx:
                assert (await fx.upload([first_file])).status == "completed"
            assert [e.status for e in log.select("POST", r"^/upload/parallel$")] == [200]
            assert _remembered(home, proxy.url)["parallel_chunks"] is True
        asked = len(log.select("GET", r"^/capabilities$"))

        async with running_server(root, extensions=False) as second:
            proxy.upstream_port = _port(second.base_url)
            async with client(dataclasses.replace(second, base_url=proxy.url), home, upload_streams=4) as fx:
                report = await fx.upload([second_file])
                assert report.status == "completed", [f.error for f in report.files]
                data_id = report.files[0].id or ""
                await fx.download([data_id], output_dir=tmp_path / "out")
        assert [e.status for e in log.select("POST", r"^/upload/parallel$")] == [200, 404]
        assert len(log.select("GET", r"^/capabilities$")) == asked + 1
        assert {e.status for e in log.select("POST", r"^/upload$")} == {200}
        assert _remembered(home, proxy.url).get("parallel_chunks") is not True
    assert (tmp_path / "out" / "two.bin").read_bytes() == second_file.read_bytes()


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def _remembered(home: Path, url: str) -> dict[str, object]:
    answer: dict[str, object] = json.loads((home / "config" / CACHE_FILE).read_text())["servers"][url]["answer"]
    return answer


async def test_a_fresh_probe_replaces_what_was_remembered(tmp_path: Path) -> None:
    """``doctor`` reports what the server says now: a wrong remembered answer is neither used nor kept."""
    async with running_server(tmp_path / "root", extensions=True) as srv:
        async with client(srv, tmp_path / "home") as fx:
            wrong = {"server": "flowxfer", "chunk_maps": False}
            CapabilityCache(tmp_path / "home" / "config").save(srv.base_url, wrong)
            assert (await fx.client.capabilities()).chunk_maps is False
            assert (await fx.client.capabilities(fresh=True)).chunk_maps is True
        assert _remembered(tmp_path / "home", srv.base_url)["chunk_maps"] is True

"""Who may do what.

(owner, granted user, group member, stranger, anonymous) x (read, download, continue, share, bulk).
"""

from __future__ import annotations

import pytest

from flowxfer.server import Admin
from tests.server.conftest import Api
from tests.support.server import RunningServer

# carol is the stranger; "dave" is in group "lab"; bob holds a direct grant.
ACTORS = ("owner", "granted", "member", "stranger", "anonymous")


@pytest.fixture
async def world(server: RunningServer, api: Api) -> dict[str, str]:
    def setup() -> None:
        with Admin(server.root, scrypt_n=2**10) as admin:
            admin.add_user("dave", "dave-pw-4")
            admin.add_group("lab")
            admin.add_member("lab", "dave")

    import anyio

    await anyio.to_thread.run_sync(setup)
    api.users["dave"] = "dave-pw-4"
    data_id = await api.upload("alice", b"private bytes", "p.txt")
    open_upload = (await api.chunk("alice", b"half", filename="open.txt")).json()["id"]
    assert (
        await api.call("PUT", f"/data/{data_id}/permissions", "alice", json={"user": "bob", "level": 1})
    ).status == 200
    assert (
        await api.call("PUT", f"/data/{data_id}/permissions", "alice", json={"group": "lab", "level": 1})
    ).status == 200
    return {"data": data_id, "upload": open_upload}


USER_OF = {"owner": "alice", "granted": "bob", "member": "dave", "stranger": "carol", "anonymous": None}
EXPECTED = {
    #            read  download continue share bulk
    "owner": (200, 200, 200, 200, 202),
    "granted": (200, 200, 404, 403, 202),
    "member": (200, 200, 404, 403, 202),
    "stranger": (404, 404, 404, 404, 404),
    # hosted Flow: reads of private data without a token are "not found"; writes need a token
    "anonymous": (404, 404, 401, 401, 401),
}


@pytest.mark.parametrize("actor", ACTORS)
async def test_permission_matrix(api: Api, world: dict[str, str], actor: str) -> None:
    user = USER_OF[actor]
    data_id = world["data"]
    read = await api.call("GET", f"/data/{data_id}", user)
    download = await api.call("GET", f"/downloads/{data_id}/p.txt", user)
    cont = await api.chunk(user, b"more", filename="open.txt", offset=4, data_id=world["upload"])
    share = await api.call("PUT", f"/data/{data_id}/permissions", user, json={"user": "carol", "level": 0})
    bulk = await api.call("POST", "/downloads", user, json={"data_ids": [data_id]})
    got = (read.status, download.status, cont.status, share.status, bulk.status)
    assert got == EXPECTED[actor]
    if actor in ("stranger",):
        assert download.body == b""  # hosted Flow's bare 404
        assert read.json()["error"]


async def test_levels_public_and_revocation(api: Api, world: dict[str, str]) -> None:
    data_id = world["data"]
    # edit lets bob make it public; share is still the owner's.
    assert (await api.call("PATCH", f"/data/{data_id}", "bob", json={"private": False})).status == 403
    assert (
        await api.call("PUT", f"/data/{data_id}/permissions", "alice", json={"user": "bob", "level": 2})
    ).status == 200
    patched = await api.call("PATCH", f"/data/{data_id}", "bob", json={"private": False})
    assert patched.status == 200 and patched.json()["private"] is False
    assert (await api.call("GET", f"/data/{data_id}", "carol")).status == 200  # public: every user reads
    assert (await api.call("PATCH", f"/data/{data_id}", "carol", json={"private": True})).status == 403
    # Public data is anonymous-readable, as on hosted Flow.
    assert (await api.call("GET", f"/data/{data_id}")).status == 200
    assert (await api.call("GET", f"/downloads/{data_id}/p.txt")).status == 200
    found = (await api.call("GET", "/data/search?filename=P.TXT", "carol")).json()
    assert [d["id"] for d in found["data"]] == [data_id]
    assert (await api.call("PATCH", f"/data/{data_id}", "alice", json={"private": True})).status == 200
    assert (await api.call("GET", f"/data/{data_id}", "carol")).status == 404
    # Share lets the grantee grant; level 0 revokes.
    assert (
        await api.call("PUT", f"/data/{data_id}/permissions", "alice", json={"user": "bob", "level": 3})
    ).status == 200
    granted = await api.call("PUT", f"/data/{data_id}/permissions", "bob", json={"user": "carol", "level": 1})
    assert granted.status == 200 and {"user": "carol", "level": 1} in granted.json()["permissions"]
    assert (await api.call("GET", f"/data/{data_id}", "carol")).status == 200
    assert (
        await api.call("PUT", f"/data/{data_id}/permissions", "alice", json={"user": "carol", "level": 0})
    ).status == 200
    assert (await api.call("GET", f"/data/{data_id}", "carol")).status == 404
    assert (
        await api.call("PUT", f"/data/{data_id}/permissions", "alice", json={"group": "lab", "level": 0})
    ).status == 200
    assert (await api.call("GET", f"/data/{data_id}", "dave")).status == 404


async def test_permission_body_refusals(api: Api, world: dict[str, str]) -> None:
    url = f"/data/{world['data']}/permissions"
    for body in (
        {"user": "nobody", "level": 1},
        {"group": "nogroup", "level": 1},
        {"user": "bob", "level": 4},
        {"user": "bob", "level": "1"},
        {"user": "bob", "level": True},
        {"user": "bob"},
        {"user": "bob", "group": "lab", "level": 1},
        {"level": 1},
        {"user": "alice", "level": 1},
        {"user": "bob", "level": 1, "extra": 1},
    ):
        answer = await api.call("PUT", url, "alice", json=body)
        assert answer.status == 400 and answer.json()["error"], body
    for body in ({"private": "yes"}, {}, {"private": True, "filename": "x"}):
        answer = await api.call("PATCH", f"/data/{world['data']}", "alice", json=body)
        assert answer.status == 400 and answer.json()["error"], body


async def test_owned_and_search_only_show_readable(api: Api, world: dict[str, str]) -> None:
    assert (await api.call("GET", "/data/owned", "bob")).json()["count"] == 0
    assert (await api.call("GET", "/data/owned", "alice")).json()["count"] == 1
    assert (await api.call("GET", "/data/search", "bob")).json()["count"] == 1
    assert (await api.call("GET", "/data/search?owned=true", "bob")).json()["count"] == 0
    assert (await api.call("GET", "/data/search", "carol")).json()["count"] == 0

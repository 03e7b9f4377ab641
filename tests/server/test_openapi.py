"""/openapi.json describes exactly the routes the server has."""

from __future__ import annotations

import re

from aiohttp import web

from flowxfer.server import ServerConfig
from flowxfer.server._app import build_app
from flowxfer.server._openapi import openapi_document
from tests.server.conftest import Api


async def test_openapi_matches_the_routes(api: Api, tmp_path) -> None:  # type: ignore[no-untyped-def]
    served = (await api.call("GET", "/openapi.json")).json()
    assert served["openapi"].startswith("3.")
    documented = {(path, method) for path, methods in served["paths"].items() for method in methods}
    from flowxfer.server._app import _open_state

    state = _open_state(ServerConfig(root=tmp_path / "r", scrypt_n=2**10))
    try:
        app: web.Application = build_app(state)
        routes = {
            (re.sub(r"\{(\w+)\}", r"{\1}", r.resource.canonical), r.method.lower())
            for r in app.router.routes()
            if r.resource is not None
        }
    finally:
        state.store.close()
        state.io.shutdown()
    assert routes == documented
    assert openapi_document(1)["components"]["schemas"]["Error"]["required"] == ["error"]

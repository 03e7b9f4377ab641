"""/openapi.json describes exactly the routes the server has."""

from __future__ import annotations

import re
from pathlib import Path

import anyio

from flowxfer.server import ServerConfig
from flowxfer.server._app import _NO_ROUTE, _open_state, build_app
from flowxfer.server._openapi import openapi_document
from tests.server.conftest import Api


def _routes(root: Path) -> set[tuple[str, str]]:
    state = _open_state(ServerConfig(root=root, scrypt_n=2**10))
    try:
        app = build_app(state)
        return {
            (re.sub(r"\{(\w+)\}", r"{\1}", r.resource.canonical), r.method.lower())
            for r in app.router.routes()
            if r.resource is not None and r.resource.name != _NO_ROUTE  # the refusal of everything else
        }
    finally:
        state.store.close()
        state.io.shutdown()


async def test_openapi_matches_the_routes(api: Api, tmp_path: Path) -> None:
    served = (await api.call("GET", "/openapi.json")).json()
    assert served["openapi"].startswith("3.")
    documented = {(path, method) for path, methods in served["paths"].items() for method in methods}
    assert await anyio.to_thread.run_sync(_routes, tmp_path / "r") == documented
    assert openapi_document(1)["components"]["schemas"]["Error"]["required"] == ["error"]

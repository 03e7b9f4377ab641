"""``serve --catalog/--project`` and ``admin project``: the sample catalog and projects from the command line."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import aiohttp
import pytest
from click.testing import CliRunner

from flowxfer.cli import main
from tests.server.conftest import Api
from tests.server.test_cli import FLOWXFER
from tests.support.server import ServerProcess

CATALOG = {
    "sample_types": [{"identifier": "Hi-C", "name": "Hi-C", "description": "Chromosome conformation"}],
    "organisms": [{"id": "Dm", "name": "Fly", "latin_name": "Drosophila melanogaster"}],
    "attributes": [
        {"identifier": "enzyme", "name": "Enzyme", "required_for": ["Hi-C"], "options": ["DpnII", "HindIII"]}
    ],
}


def test_admin_project_add_and_list(tmp_path: Path) -> None:
    runner = CliRunner()
    root = str(tmp_path / "root")
    assert (
        runner.invoke(
            main, ["admin", "--root", root, "user", "add", "eve", "--password-stdin"], input="pw-eve\n"
        ).exit_code
        == 0
    )
    added = runner.invoke(main, ["admin", "--root", root, "project", "add", "eve", "lab", "--description", "d"])
    assert added.exit_code == 0 and added.output.startswith("added project eve:lab ")
    again = runner.invoke(main, ["admin", "--root", root, "project", "add", "eve", "lab"])
    assert again.exit_code == 0 and again.output.split()[-1] == added.output.split()[-1]
    listed = runner.invoke(main, ["admin", "--root", root, "project", "list"])
    assert listed.output.split() == ["eve:lab", added.output.split()[-1]]
    assert runner.invoke(main, ["admin", "--root", root, "project", "add", "ghost", "lab"]).exit_code == 2
    assert runner.invoke(main, ["admin", "--root", root, "project", "add", "--help"]).exit_code == 0


async def test_serve_with_a_catalog_and_projects(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog.json"
    catalog.write_text(json.dumps(CATALOG))
    args = ("--catalog", str(catalog), "--project", "alice:lab", "--project", "alice:lab")
    async with ServerProcess(tmp_path / "root", *args) as proc, aiohttp.ClientSession() as session:
        api = Api(session, proc.base_url, proc.users)
        types = (await api.call("GET", "/samples/types")).json()
        assert types == [{"identifier": "Hi-C", "name": "Hi-C", "description": "Chromosome conformation"}]
        organisms = (await api.call("GET", "/organisms")).json()
        assert [o["id"] for o in organisms] == ["Dm"]
        projects = (await api.call("GET", "/projects/owned", "alice")).json()
        assert projects["count"] == 1 and projects["projects"][0]["name"] == "lab"
        refused = await api.chunk(
            "alice",
            b"x",
            path="/upload/sample",
            is_last=True,
            extra={"sample_name": "s", "sample_type": "Hi-C", "is_last_sample": "true"},
        )
        assert refused.status == 400 and refused.json() == {"error": {"enzyme": ["required for Hi-C"]}}


@pytest.mark.parametrize(
    ("catalog", "args", "code"),
    [
        ('{"sample_types": [{"identifier": "a b", "name": "x"}]}', [], 2),
        ('{"attributes": [{"identifier": "x", "name": "x", "required_for": ["nope"]}]}', [], 2),
        ("not json", [], 2),
        (None, ["--project", "nobody:lab"], 2),
        (None, ["--project", "alice"], 2),
    ],
)
def test_bad_catalogs_and_projects_are_refused(tmp_path: Path, catalog: str | None, args: list[str], code: int) -> None:
    if catalog is not None:
        (tmp_path / "c.json").write_text(catalog)
        args = [*args, "--catalog", str(tmp_path / "c.json")]
    result = subprocess.run(
        [*FLOWXFER, "serve", "--root", str(tmp_path / "R"), "--port", "0", "--user", "alice:alice-pw", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr and "Error" in result.stderr

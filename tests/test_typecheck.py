"""The type check sees across packages: a cross-package type error in a project laid out like ours is reported.

The fixture has our layout in small: top-level folders installed as one
package through ``package-dir``, and the project's own ``[tool.mypy]``
configuration. ``.ci/typecheck.py`` (what CI and the README run) must report
the one deliberate error, where a function of one folder returns an ``int``
that a function of another returns as a ``str``; mypy run on the folders
the old way (a global ``ignore_missing_imports``) passes it as ``Any``.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TYPECHECK = ROOT / ".ci" / "typecheck.py"
ERROR = re.compile(
    r'^front[/\\]__init__\.py:7: error: Incompatible return value type \(got "int", expected "str"\)', re.M
)


def project_mypy_config() -> str:
    """The ``[tool.mypy]`` sections of our pyproject.toml, verbatim."""
    text = (ROOT / "pyproject.toml").read_text()
    sections = re.split(r"(?m)^(?=\[)", text)
    return "".join(s for s in sections if s.startswith(("[tool.mypy]", "[[tool.mypy.")))


def make_project(root: Path, mypy_config: str) -> Path:
    files = {
        "pyproject.toml": (
            '[project]\nname = "fixture"\nversion = "0"\n\n'
            "[tool.setuptools]\n"
            'package-dir = { "flowxfer" = "flowxfer", "flowxfer.engine" = "engine", "flowxfer.front" = "front" }\n'
            'packages = ["flowxfer", "flowxfer.engine", "flowxfer.front"]\n\n' + mypy_config
        ),
        "flowxfer/__init__.py": "",
        "engine/__init__.py": "from ._size import size_of\n\n__all__ = ['size_of']\n",
        "engine/_size.py": "def size_of(name: str) -> int:\n    return len(name)\n",
        "front/__init__.py": (
            "from __future__ import annotations\n\n"
            "from flowxfer.engine import size_of\n\n\n"
            "def label(name: str) -> str:\n"
            "    return size_of(name)\n"
        ),
    }
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=300, check=False)


def test_the_project_check_reports_a_cross_package_type_error(tmp_path: Path) -> None:
    config = project_mypy_config()
    assert "[tool.mypy]" in config and not re.search(r"(?m)^\[tool\.mypy\][^\[]*ignore_missing_imports", config), (
        "ignore_missing_imports belongs only to overrides naming untyped dependencies"
    )
    project = make_project(tmp_path / "fixture", config)
    done = run(str(TYPECHECK), str(project), cwd=project)
    assert done.returncode == 1, done.stdout + done.stderr
    assert ERROR.search(done.stdout), done.stdout + done.stderr


def test_the_same_error_passes_the_old_way(tmp_path: Path) -> None:
    """Why the check is built so: mypy on the folders, imports unresolved and ignored, sees nothing wrong."""
    old_config = '[tool.mypy]\npython_version = "3.11"\nignore_missing_imports = true\n'
    project = make_project(tmp_path / "fixture", old_config)
    done = run("-m", "mypy", "--cache-dir", str(tmp_path / "cache"), "engine", "front", cwd=project)
    assert done.returncode == 0, done.stdout + done.stderr
    assert not ERROR.search(done.stdout)


def test_the_project_itself_type_checks_clean() -> None:
    done = run(str(TYPECHECK), cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr

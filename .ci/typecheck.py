#!/usr/bin/env python3
"""Type-check the installed package as mypy would with ``mypy -p flowxfer``, had it understood our layout.

The repository keeps the architecture's top-level folders (``transfer/``,
``journal/``, ...) and installs them as one package through setuptools'
``package-dir`` (pyproject.toml). mypy knows nothing of ``package-dir``: run
on the folders it names their modules ``transfer._api``, ``cli._common``, so
every ``from flowxfer.transfer import ...`` stays unresolved, and a global
``ignore_missing_imports`` once turned all of them into ``Any`` (a function
returning an ``int`` where the caller wants a ``str`` passed across packages).

This script reads ``package-dir`` and hands mypy each file under its real
module name (``transfer/_api.py`` is ``flowxfer.transfer._api``), with the
project's ``[tool.mypy]`` configuration, so cross-package imports are typed
and errors are reported at the files' real paths.

Usage: ``python .ci/typecheck.py [PROJECT_ROOT]`` (default: this repository);
exits 1 when mypy reports an error.
"""

from __future__ import annotations

import os
import sys
import tomllib
from pathlib import Path

from mypy import build
from mypy.config_parser import parse_config_file
from mypy.modulefinder import BuildSource
from mypy.options import Options


def package_sources(root: Path) -> list[BuildSource]:
    """Every ``.py`` file of the distribution's packages, named as it is installed."""
    setuptools = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    package_dir: dict[str, str] = setuptools.get("package-dir", {})
    sources = []
    for package in setuptools["packages"]:
        folder = root / package_dir.get(package, package.replace(".", "/"))
        for path in sorted(folder.glob("*.py")):
            module = package if path.stem == "__init__" else f"{package}.{path.stem}"
            sources.append(BuildSource(str(path.relative_to(root)), module, base_dir=str(root)))
    return sources


def check(root: Path) -> list[str]:
    """mypy's messages for the package at ``root``, under its ``pyproject.toml`` configuration."""
    options = Options()
    parse_config_file(options, lambda: None, str(root / "pyproject.toml"), sys.stdout, sys.stderr)
    options.cache_dir = str(root / ".mypy_cache")
    sources = package_sources(root)
    try:
        result = build.build(sources, options)
    except build.CompileError as exc:  # a blocking error (a syntax error, a missing module)
        return list(exc.messages)
    return list(result.errors)


def main() -> int:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent).resolve()
    os.chdir(root)  # messages name files relative to the project, as mypy's command line does
    messages = check(root)
    for line in messages:
        print(line)
    files = len(package_sources(root))
    if messages:
        print(f"mypy: errors in the flowxfer package ({files} source files)", file=sys.stderr)
        return 1
    print(f"mypy: no issues found in {files} source files of the flowxfer package")
    return 0


if __name__ == "__main__":
    sys.exit(main())

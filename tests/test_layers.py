"""The package's layers hold: no import cycle between modules, and the CLI uses only the engine's public surface.

Every module of the installed ``flowxfer`` package is read with ``ast``;
every import counts, including those inside functions (a function-level
import that breaks a cycle hides two modules calling each other), except
those under ``if TYPE_CHECKING:``, which never run.
"""

from __future__ import annotations

import ast
import graphlib
import importlib
import pkgutil
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES: list[str] = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]


def installed_modules() -> dict[str, Path]:
    """Every module of the installed package, by its import name, with its file."""
    modules: dict[str, Path] = {}
    for name in PACKAGES:
        package = importlib.import_module(name)
        assert package.__file__ is not None
        modules[name] = Path(package.__file__)
        for info in pkgutil.iter_modules(package.__path__):
            assert not info.ispkg, f"{name}.{info.name} is a package missing from pyproject's packages"
            modules[f"{name}.{info.name}"] = Path(package.__path__[0]) / f"{info.name}.py"
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


class _Imports(ast.NodeVisitor):
    """The import statements of one module, wherever they are, ``if TYPE_CHECKING:`` blocks left out."""

    def __init__(self) -> None:
        self.found: list[tuple[str, list[str], int]] = []  # (module, names, line); module absolute or relative

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node.test):
            for child in node.orelse:
                self.visit(child)
        else:
            self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.found.append((alias.name, [], node.lineno))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        self.found.append(("." * node.level + (node.module or ""), [a.name for a in node.names], node.lineno))


def _absolute(module: str, importer: str, is_package: bool) -> str:
    level = len(module) - len(module.lstrip("."))
    if not level:
        return module
    base = importer.split(".") if is_package else importer.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    rest = module.lstrip(".")
    return ".".join(base + ([rest] if rest else []))


def imports_of(modules: dict[str, Path]) -> dict[str, list[tuple[str, int]]]:
    """Each module's imports of the package's own modules: ``(target, line)``."""
    graph: dict[str, list[tuple[str, int]]] = {}
    for name, path in modules.items():
        visitor = _Imports()
        visitor.visit(ast.parse(path.read_text(), str(path)))
        targets = []
        for module, names, line in visitor.found:
            base = _absolute(module, name, path.name == "__init__.py")
            for imported in names or [""]:
                full = f"{base}.{imported}" if imported else base
                target = full if full in modules else base
                if target in modules and target != name:
                    targets.append((target, line))
        graph[name] = targets
    return graph


MODULES = installed_modules()
GRAPH = imports_of(MODULES)


def test_every_package_and_module_is_found() -> None:
    assert {
        "flowxfer.transfer._api",
        "flowxfer.transfer._runner",
        "flowxfer.cli._common",
        "flowxfer.server._app",
        "flowxfer.journal._journal",
        "flowxfer.protocol",
    } <= set(MODULES)
    assert any(target == "flowxfer.transfer._runner" for target, _ in GRAPH["flowxfer.transfer._api"])


def test_no_import_cycle_between_modules() -> None:
    sorter = graphlib.TopologicalSorter({name: {t for t, _ in targets} for name, targets in GRAPH.items()})
    try:
        sorter.prepare()
    except graphlib.CycleError as exc:
        cycle = exc.args[1]
        steps = []
        for here, there in zip(cycle, cycle[1:], strict=False):
            line = next(line for target, line in GRAPH[here] if target == there)
            steps.append(f"{MODULES[here].relative_to(ROOT)}:{line} imports {there}")
        pytest.fail("import cycle:\n  " + "\n  ".join(steps))


def test_the_cli_uses_only_the_engine_s_public_surface() -> None:
    private = []
    for name, path in MODULES.items():
        if not name.startswith("flowxfer.cli"):
            continue
        visitor = _Imports()
        visitor.visit(ast.parse(path.read_text(), str(path)))
        for module, names, line in visitor.found:
            base = _absolute(module, name, path.name == "__init__.py")
            # `from flowxfer.transfer._sizes import x` and `from flowxfer.transfer import _sizes` alike
            for full in [base] + [f"{base}.{n}" for n in names if n.startswith("_")]:
                parts = full.split(".")
                if (
                    parts[:2] in (["flowxfer", "transfer"], ["flowxfer", "journal"])
                    and len(parts) > 2
                    and parts[2].startswith("_")
                ):
                    private.append(f"{path.relative_to(ROOT)}:{line} imports {'.'.join(parts[:3])}")
    assert not private, "the CLI reaches into the engine's private modules:\n  " + "\n  ".join(sorted(set(private)))


def test_the_walk_sees_imports_inside_functions_but_not_type_checking_blocks() -> None:
    """The guard itself: a function-level import counts, an ``if TYPE_CHECKING:`` import does not."""
    visitor = _Imports()
    visitor.visit(
        ast.parse(
            "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n    from .a import A\n"
            "def f():\n    from .b import B\n    import c.d\n"
        )
    )
    assert [(m, n) for m, n, _ in visitor.found] == [("typing", ["TYPE_CHECKING"]), (".b", ["B"]), ("c.d", [])]
    assert _absolute(".b", "flowxfer.transfer._api", False) == "flowxfer.transfer.b"
    assert _absolute("..journal", "flowxfer.transfer", True) == "flowxfer.journal"

"""The tree is the architecture: these rules keep it so (README, "How it works")."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ordermgr"
IO_LIBRARIES = ("psycopg", "psycopg_pool", "aiormq", "pamqp", "aiohttp", "pybit", "requests", "anyio", "socket")
ADAPTERS = ("ordermgr.db", "ordermgr.amqp", "ordermgr.bybit", "ordermgr.http", "ordermgr.paper", "ordermgr.app")


def imports_of(path: Path) -> set[str]:
    """Every module a file imports, at any depth (TYPE_CHECKING blocks and functions included)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def modules_under(package: str) -> list[Path]:
    return sorted((PACKAGE / package).rglob("*.py"))


def is_within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


@pytest.mark.parametrize("path", modules_under("domain"), ids=lambda p: p.name)
def test_the_domain_is_pure(path: Path) -> None:
    imported = imports_of(path)
    assert not {name for name in imported if is_within(name, IO_LIBRARIES)}
    outside = {n for n in imported if n.startswith("ordermgr") and not is_within(n, ("ordermgr.domain",))}
    assert not outside, f"{path.name} imports outside the domain: {sorted(outside)}"


CLOCK_AND_FILES = {("datetime", "now"), ("datetime", "utcnow"), ("date", "today"), ("time", "time"),
                   ("time", "monotonic"), ("time", "time_ns"), ("time", "sleep")}


def calls_of(path: Path) -> set[tuple[str, str]]:
    """(receiver, name) of every ``receiver.name(...)`` call, and ("", name) of plain calls."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
                found.add((func.value.id, func.attr))
            elif isinstance(func, ast.Name):
                found.add(("", func.id))
    return found


@pytest.mark.parametrize("path", modules_under("domain"), ids=lambda p: p.name)
def test_the_domain_reads_no_clock_and_no_file(path: Path) -> None:
    used = calls_of(path) & (CLOCK_AND_FILES | {("", "open")})
    assert not used, f"{path.name} calls {sorted(used)}: the caller passes the time (or the data) in"


@pytest.mark.parametrize("path", modules_under("actors"), ids=lambda p: p.name)
def test_actors_talk_to_the_outside_through_ports(path: Path) -> None:
    imported = imports_of(path)
    adapters = {name for name in imported if is_within(name, ADAPTERS)}
    libraries = {name for name in imported if is_within(name, IO_LIBRARIES[:-2])}
    assert not adapters and not libraries, f"{path.name} imports {sorted(adapters | libraries)}"


def test_importing_the_domain_loads_no_io_library() -> None:
    modules = " ".join(f"ordermgr.domain.{p.stem}" for p in modules_under("domain") if p.stem != "__init__")
    script = f"import sys, importlib; [importlib.import_module(m) for m in {modules.split()!r}]; " \
             f"print(sorted(m for m in sys.modules if m.split('.')[0] in {IO_LIBRARIES!r}))"
    loaded = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"


def test_the_paper_venue_has_no_import_cycle() -> None:
    graph = {
        f"ordermgr.paper.{path.stem}": {n for n in imports_of(path) if n.startswith("ordermgr.paper.")}
        for path in modules_under("paper")
    }
    graph = {module: {n for n in names if n in graph} for module, names in graph.items()}
    visiting: list[str] = []

    def visit(module: str, done: set[str]) -> None:
        assert module not in visiting, f"import cycle: {' -> '.join([*visiting, module])}"
        if module in done:
            return
        visiting.append(module)
        for imported in graph[module]:
            visit(imported, done)
        visiting.pop()
        done.add(module)

    done: set[str] = set()
    for module in graph:
        visit(module, done)

"""The package layout of DESIGN.md, checked on every import statement of the source.

Edges and the Distribution service meet only over HTTP, through the wire contract; the
contract itself is pure, so a device's agent can install it without any server code;
benchmarks never import the tests. An import against these rules fails here, naming the
file, the line and the rule.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROJECT = {
    "storage_backends",
    "repository",
    "wire",
    "distribution",
    "edge",
    "fleet",
    "transfer",
    "agent",
    "console",
    "devstack",
    "tests",
    "bench",
}

# What each folder may import of the project (DESIGN.md, "The parts").
MAY_IMPORT = {
    "wire": set(),
    "storage_backends": set(),
    "repository": {"storage_backends", "wire"},
    "transfer": {"repository", "storage_backends", "wire"},
    "edge": {"repository", "storage_backends", "wire", "transfer"},
    "distribution": {"repository", "storage_backends", "wire", "transfer"},
    # the service's web console, a plugin of the service like the fleet, whose pages it shows
    "console": {"distribution", "fleet", "repository", "storage_backends", "wire", "transfer"},
    "devstack": PROJECT - {"tests", "bench"},
    "bench": PROJECT - {"tests"},
}
# Besides the standard library, the wire contract uses python-gnupg alone.
WIRE_THIRD_PARTY = {"gnupg"}


def imports(folder: str) -> Iterator[tuple[Path, int, str]]:
    """Every absolute import in ``folder``'s Python files: (file, line, top-level module)."""
    for path in sorted((ROOT / folder).rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield path, node.lineno, alias.name.partition(".")[0]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                yield path, node.lineno, node.module.partition(".")[0]


def where(path: Path, line: int) -> str:
    return f"{path.relative_to(ROOT)}:{line}"


@pytest.mark.parametrize("folder", sorted(MAY_IMPORT))
def test_each_part_imports_only_the_parts_the_design_allows(folder: str) -> None:
    allowed = MAY_IMPORT[folder] | {folder}
    crossings = [
        f"{where(path, line)} imports {module}"
        for path, line, module in imports(folder)
        if module in PROJECT and module not in allowed
    ]
    assert crossings == [], f"{folder}/ may import only {sorted(allowed)} of the project"


def test_the_wire_contract_needs_nothing_but_the_standard_library_and_python_gnupg() -> None:
    foreign = [
        f"{where(path, line)} imports {module}"
        for path, line, module in imports("wire")
        if module not in sys.stdlib_module_names and module not in WIRE_THIRD_PARTY and module != "wire"
    ]
    assert foreign == []


def test_the_checker_sees_a_crossing_import() -> None:
    """The walk above finds imports anywhere in a file, inside functions too."""
    edge_imports = {module for _, _, module in imports("edge")}
    assert {"repository", "wire", "aiohttp"} <= edge_imports
    assert any(module == "wire" for _, _, module in imports("distribution"))


def test_benchmarks_find_the_project_without_editing_sys_path() -> None:
    """They run from the environment the project is installed in, as any user's script does."""
    edits = [
        where(path, node.lineno)
        for path in sorted((ROOT / "bench").glob("*.py"))
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Attribute) and node.attr == "path" and getattr(node.value, "id", None) == "sys"
    ]
    assert edits == []


def test_the_wire_contract_imports_on_a_machine_without_the_servers_code() -> None:
    """Every module of wire/ imports with the servers' packages made unimportable."""
    servers = sorted(PROJECT - {"wire"})
    code = f"""
import importlib, pkgutil, sys
class NoServers:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in {servers!r}:
            raise ImportError("no server code on this machine: " + name)
sys.meta_path.insert(0, NoServers())
import wire
for module in pkgutil.iter_modules(wire.__path__):
    importlib.import_module("wire." + module.name)
print(sorted(m for m in sys.modules if m.partition(".")[0] in {servers!r}))
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"

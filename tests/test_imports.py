"""Every module imports on its own, in any order, and the top-level imports form no cycle."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("lvjax", "kernels_pallas")


def _modules() -> dict[str, Path]:
    """Dotted name → file of every module of the packages."""
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imported(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Modules of the packages that `name` imports when it is imported (not under TYPE_CHECKING,
    not inside functions)."""
    found = set()

    def visit(body):
        for node in body:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the package of `name`
                    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                    base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
                found.update(f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names)
            for field in ("body", "orelse", "finalbody"):
                if isinstance(node, (ast.If, ast.Try, ast.With)) and getattr(node, field, None):
                    visit(getattr(node, field))
            for handler in getattr(node, "handlers", []):
                visit(handler.body)

    visit(ast.parse(path.read_text()).body)
    return found & modules.keys()


def test_top_level_imports_have_no_cycle():
    modules = _modules()
    graph = {name: _imported(name, path, modules) for name, path in modules.items()}
    state: dict[str, str] = {}  # "open" while on the DFS stack, "done" after

    def dfs(name: str, stack: list[str]):
        state[name] = "open"
        for dep in sorted(graph[name]):
            if state.get(dep) == "open":
                cycle = stack[stack.index(dep):] + [name, dep]
                pytest.fail("import cycle: " + " → ".join(cycle))
            if dep not in state:
                dfs(dep, stack + [name])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            dfs(name, [])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_module_imports_in_a_random_order(seed):
    """A fresh interpreter imports all modules shuffled by `seed` (ImportError, circular imports fail)."""
    script = f"""
import importlib, random
names = {sorted(_modules())!r}
random.Random({seed}).shuffle(names)
for name in names:
    importlib.import_module(name)
"""
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    r = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]

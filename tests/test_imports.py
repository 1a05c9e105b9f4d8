"""The package's imports run one way: no import cycle among kimi_mini's modules (module-level imports,
which are what runs at import time), no library module importing the exercises or the benchmarks, no
kernel importing a model part at import time, and every module importable on its own."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Drivers that may import anything: the CLI and the GPU check sit above the library.
DRIVERS = {"kimi_mini.cli", "kimi_mini.train_cli", "kimi_mini.gpu_check", "kimi_mini.notebooks"}


def _modules() -> dict[str, Path]:
    mods = {}
    for base, prefix in ((ROOT / "kimi_mini", "kimi_mini"), (ROOT / "kernels", "kimi_mini.kernels")):
        for path in sorted(base.rglob("*.py")):
            rel = path.relative_to(base).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            mods[".".join([prefix, *parts])] = path
    return mods


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The deepest known module that ``name`` denotes (``a.b.c`` may be a module or a name in ``a.b``)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _skipped(node: ast.AST) -> bool:
    """``if TYPE_CHECKING:`` (never runs) and ``if __name__ == "__main__":`` (a driver: a kernel's benchmark)."""
    if not isinstance(node, ast.If):
        return False
    test = ast.unparse(node.test)
    return "TYPE_CHECKING" in test or "__main__" in test


def _imports(module: str, path: Path, module_level_only: bool) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    is_pkg = path.name == "__init__.py"
    found = set()
    stack, nodes = [n for n in tree.body if not _skipped(n)], []
    while stack:  # module-level statements, inside module-level if/try blocks too; everything when asked
        node = stack.pop()
        nodes.append(node)
        if module_level_only and not isinstance(node, (ast.If, ast.Try)):
            continue
        stack.extend(n for n in ast.iter_child_nodes(node) if not _skipped(n))
    for node in nodes:
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                pkg = module if is_pkg else module.rpartition(".")[0]
                for _ in range(node.level - 1):
                    pkg = pkg.rpartition(".")[0]
                base = f"{pkg}.{node.module}" if node.module else pkg
            else:
                base = node.module or ""
            names = [f"{base}.{a.name}" for a in node.names] if base.startswith("kimi_mini") else [base]
        else:
            continue
        for n in names:
            target = _resolve(n) if n.startswith("kimi_mini") else None
            if target and target != module:
                found.add(target)
    return found


def _graph(module_level_only: bool) -> dict[str, set[str]]:
    return {m: _imports(m, p, module_level_only) for m, p in MODULES.items()}


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_scanner_sees_the_package():
    assert "kimi_mini.model" in MODULES and "kimi_mini.kernels.rmsnorm" in MODULES
    graph = _graph(module_level_only=True)
    assert "kimi_mini.registry" in graph["kimi_mini.model"]  # a known edge is found


def test_the_cycle_finder_finds_a_cycle():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle():
    cycle = _find_cycle(_graph(module_level_only=True))
    assert cycle is None, "import cycle: " + " → ".join(cycle)


def test_library_never_imports_exercises_or_bench():
    bad = []
    for module, deps in _graph(module_level_only=False).items():
        upper = module.startswith(("kimi_mini.exercises", "kimi_mini.bench")) or module in DRIVERS
        if upper:
            continue
        bad += [f"{module} → {d}" for d in deps if d.startswith(("kimi_mini.exercises", "kimi_mini.bench"))]
    assert not bad, "library modules import exercises/bench: " + "; ".join(bad)


def test_kernels_import_no_model_part_at_import_time():
    bad = [f"{m} → {d}" for m, deps in _graph(module_level_only=True).items() if m.startswith("kimi_mini.kernels")
           for d in deps if not d.startswith("kimi_mini.kernels") and d != "kimi_mini"]
    assert not bad, "kernels must stay below the model: " + "; ".join(bad)


@pytest.mark.parametrize("module", ["kimi_mini.k2", "kimi_mini.optim", "kimi_mini.qk_clip", "kimi_mini.moba",
                                    "kimi_mini.optim.muonclip", "kimi_mini.train"])
def test_module_imports_on_its_own(module):
    # a fresh interpreter: import order from other tests cannot hide a cycle
    proc = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]

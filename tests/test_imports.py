"""The package's imports run one way: no import cycle among kimi_mini's modules (imports inside functions
included: a cycle that only closes at call time is still a knot), every import pointing down the layers of
:data:`LAYERS` (kernels → foundation → core model parts → topics → exercises/bench → drivers), no kernel
importing a model part at import time, and every module importable on its own."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Drivers that may import anything: the CLI, the grader and the GPU check sit above the library.
DRIVERS = {"kimi_mini.cli", "kimi_mini.train_cli", "kimi_mini.gpu_check", "kimi_mini.notebooks", "kimi_mini.grade"}
# The layers, lowest first: a module may import its own layer and the layers below it, never one above.
# A new module or subpackage must be placed here (the test says so) — that is where its imports get decided.
LAYERS: list[tuple[str, set[str]]] = [
    ("kernels", {"kimi_mini.kernels"}),
    ("foundation", {"kimi_mini.checks", "kimi_mini.testing", "kimi_mini.impl", "kimi_mini.registry",
                    "kimi_mini.presets", "kimi_mini.report", "kimi_mini.data", "kimi_mini.sources",
                    "kimi_mini.realdata"}),
    ("core", {"kimi_mini", "kimi_mini.layers", "kimi_mini.mla", "kimi_mini.model", "kimi_mini.moe", "kimi_mini.moba",
              "kimi_mini.qk_clip", "kimi_mini.optim", "kimi_mini.k2", "kimi_mini.train"}),
    ("topics", {"kimi_mini.agentic", "kimi_mini.fusion", "kimi_mini.invariance", "kimi_mini.prompts",
                "kimi_mini.rationale", "kimi_mini.storywars"}),
    ("exercises and bench", {"kimi_mini.exercises", "kimi_mini.bench"}),
    ("drivers", DRIVERS),
]


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


def _layer(module: str) -> int | None:
    """Index in :data:`LAYERS` of the deepest group that contains ``module`` (``kimi_mini.moe.router`` is in
    ``kimi_mini.moe``'s layer; the package root ``kimi_mini`` only when named exactly)."""
    best, best_len = None, -1
    for i, (_, groups) in enumerate(LAYERS):
        for g in groups:
            hit = module == g or (g != "kimi_mini" and module.startswith(g + "."))
            if hit and len(g) > best_len:
                best, best_len = i, len(g)
    return best


def test_no_import_cycle():
    cycle = _find_cycle(_graph(module_level_only=False))
    assert cycle is None, "import cycle (imports inside functions included): " + " → ".join(cycle)


def test_the_layer_check_can_fail():
    assert _layer("kimi_mini.kernels.moba") < _layer("kimi_mini.moba.attention") < _layer("kimi_mini.prompts.zoo")
    assert _layer("kimi_mini.prompts.zoo") < _layer("kimi_mini.bench") < _layer("kimi_mini.gpu_check")
    assert _layer("kimi_mini.cli") == _layer("kimi_mini.notebooks") and _layer("kimi_mini") == _layer("kimi_mini.model")


def test_every_module_has_a_layer():
    missing = sorted(m for m in MODULES if _layer(m) is None)
    assert not missing, f"place these modules in a layer of tests/test_imports.py LAYERS: {missing}"


def test_no_module_imports_upward():
    """Kernels and the core model parts never import a topic, the exercises, the benchmarks or the CLI; the
    GPU check sits above the benchmarks it reports and nothing in the library imports it."""
    bad = [f"{m} ({LAYERS[_layer(m)][0]}) → {d} ({LAYERS[_layer(d)][0]})"
           for m, deps in _graph(module_level_only=False).items() if _layer(m) is not None
           for d in deps if _layer(d) is not None and _layer(d) > _layer(m)]
    assert not bad, "imports that point up the layers: " + "; ".join(sorted(bad))


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

"""The tool world of Kimi K2's agentic data synthesis, in miniature: real tool specs, evolved tools, a simulator.

Paper: *Kimi K2: Open Agentic Intelligence* (arXiv 2507.20534), §3.1.1 "Large-Scale Agentic Data Synthesis
for Tool Use Learning": (1) tool specifications — real ones plus synthetic tools grown by **domain
evolution**; (3) a **tool simulator**, "a world model" that executes calls, keeps state and injects
controlled randomness (here: a *flaky* tool that fails with probability p and returns an error).

Real specs: the multi-turn API documents of the Berkeley Function-Calling Leaderboard (``bfcl-eval``
2026.3.23, Apache-2.0), read from the wheel's ``bfcl_eval/data/multi_turn_func_doc/*.json`` (one JSON spec
per line: name, description, parameters, response). Back-ends: the Math API's own source
(``func_source_code/math_api.py``, which imports only the stdlib and mpmath) is loaded from the extracted file
with importlib and runs unchanged; the Gorilla file system's source imports another bfcl module, so
:class:`FileSystem` re-implements the six commands used here (``ls cd mkdir touch echo cat``) from its spec
and source, with the same results and error messages.

A call is one line ``name(arg,arg)``: positional, in the spec's parameter order, no quotes.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from kimi_mini.data import cache_dir, save_atomically
from kimi_mini.registry import Registry
from kimi_mini.sources import package_file

__all__ = ["BFCL", "Tool", "load_specs", "load_spec_dataset", "math_backend", "FileSystem", "real_tools", "evolve_tool",
           "evolve_domain", "ToolWorld", "parse_call", "render_result", "TOOLS", "EVOLUTION_RULES"]

BFCL = ("bfcl-eval", "2026.3.23")
_DOC = "bfcl_eval/data/multi_turn_func_doc/{api}.json"
_SRC = "bfcl_eval/eval_checker/multi_turn_eval/func_source_code/{api}.py"
MATH_TOOLS = ("add", "subtract", "multiply")
FS_TOOLS = ("ls", "cd", "mkdir", "touch", "echo", "cat")


def load_specs(api: str) -> list[dict]:
    """The BFCL JSON specs of one multi-turn API (``"math_api"``, ``"gorilla_file_system"``, …), in file order."""
    if not isinstance(api, str) or not re.fullmatch(r"[a-z_]+", api):
        raise ValueError(f"api: expected a BFCL API name like 'math_api', got {api!r}")
    try:
        path = package_file(*BFCL, _DOC.format(api=api))
    except ValueError:
        raise ValueError(f"api: no spec file for {api!r} in {BFCL[0]}=={BFCL[1]}") from None
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def load_spec_dataset(apis=("math_api", "gorilla_file_system")):
    """The specs of ``apis`` as a Hugging Face ``datasets.DatasetDict`` with one named split per API (in the order
    given; columns ``name``, ``description``, ``parameters`` as JSON text, rows in file order), built once and
    cached under ``data/cache/``."""
    if isinstance(apis, (str, bytes)) or not isinstance(apis, (tuple, list)) or not apis or \
            any(not isinstance(a, str) or not re.fullmatch(r"[a-z_]+", a) for a in apis):
        raise ValueError(f"apis: expected a non-empty tuple of BFCL API names like ('math_api',), got {apis!r}")
    import datasets

    datasets.disable_progress_bars()
    target = cache_dir() / f"bfcl-{BFCL[1]}-specs-by-api-{'-'.join(apis)}"
    if not target.exists():
        specs = {}
        for api in apis:
            try:
                specs[api] = load_specs(api)
            except ValueError as exc:
                raise ValueError(f"apis: {exc}") from None
        dd = datasets.DatasetDict({api: datasets.Dataset.from_list(
            [{"name": s["name"], "description": s["description"], "parameters": json.dumps(s["parameters"])}
             for s in specs[api]]) for api in apis})
        save_atomically(dd, target)  # notebooks may build it side by side
    return datasets.load_from_disk(str(target))


_MATH_CLASS = None


def math_backend():
    """An instance of BFCL's own ``MathAPI`` class, loaded from the extracted source file (not imported as bfcl)."""
    global _MATH_CLASS
    if _MATH_CLASS is None:
        path = package_file(*BFCL, _SRC.format(api="math_api"))
        spec = importlib.util.spec_from_file_location("_bfcl_math_api", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)  # imports math, decimal, typing, mpmath: nothing from bfcl
        _MATH_CLASS = module.MathAPI
    return _MATH_CLASS()


class FileSystem:
    """BFCL's Gorilla file system, the commands used here, re-implemented from its spec and source:
    a tree of directories (``dict`` name → sub-tree) and files (``str`` contents) with a current directory."""

    def __init__(self, files: dict | None = None, root: str = "workspace"):
        self.root = root
        self.tree: dict = copy.deepcopy(files or {})
        self.path: list[str] = []  # current directory, as names below the root

    def _cwd(self) -> dict:
        node = self.tree
        for name in self.path:
            node = node[name]
        return node

    @staticmethod
    def _valid(name: str) -> bool:
        return not any(c in name for c in '|/\\?%*:"><')

    def ls(self, a: bool = False) -> dict:
        return {"current_directory_content": [k for k in self._cwd() if a or not k.startswith(".")]}

    def cd(self, folder: str) -> dict:
        folder = folder.rstrip("/") or "/"
        if folder not in {".", "..", "/"} and "/" in folder:
            return {"error": f"cd: {folder}: Unsupported path. Only one folder level at a time is supported."}
        if folder == "..":
            if not self.path:
                return {"error": "Current directory is already the root. Cannot go back."}
            self.path.pop()
            return {}
        if folder == "/":
            self.path = []
            return {"current_working_directory": self.root}
        if folder == ".":
            return {"current_working_directory": self.path[-1] if self.path else self.root}
        if not isinstance(self._cwd().get(folder), dict):
            return {"error": f"cd: '{folder}': No such file or directory"}
        self.path.append(folder)
        return {"current_working_directory": folder}

    def mkdir(self, dir_name: str) -> dict | None:
        if not self._valid(dir_name):
            return {"error": f"mkdir: cannot create directory '{dir_name}': Invalid character"}
        if dir_name in self._cwd():
            return {"error": f"mkdir: cannot create directory '{dir_name}': File exists"}
        self._cwd()[dir_name] = {}
        return None

    def touch(self, file_name: str) -> dict | None:
        if not self._valid(file_name):
            return {"error": f"touch: cannot touch '{file_name}': Invalid character"}
        if file_name in self._cwd():
            return {"error": f"touch: cannot touch '{file_name}': File exists"}
        self._cwd()[file_name] = ""
        return None

    def echo(self, content: str, file_name: str | None = None) -> dict | None:
        if file_name is None or file_name == "":
            return {"terminal_output": content}
        if not self._valid(file_name):
            return {"error": f"echo: cannot write to '{file_name}': Invalid character"}
        if not isinstance(self._cwd().get(file_name), str):
            return {"error": f"echo: cannot write to '{file_name}': No such file"}
        self._cwd()[file_name] = content
        return None

    def cat(self, file_name: str) -> dict:
        if not self._valid(file_name):
            return {"error": f"cat: '{file_name}': Invalid character"}
        item = self._cwd().get(file_name)
        if item is None:
            return {"error": f"cat: '{file_name}': No such file or directory"}
        if isinstance(item, dict):
            return {"error": f"cat: '{file_name}': Is a directory"}
        return {"file_content": item}


@dataclass(frozen=True)
class Tool:
    """One callable tool: its (BFCL-format) spec and an executable simulator ``fn(world, kwargs) -> dict | None``.

    ``params`` are ``(name, type)`` pairs in call order; ``required`` the names that must be given;
    ``evolved_from``/``rule`` say how a synthetic tool was grown from a real one (None for real tools).
    """

    name: str
    api: str
    params: tuple[tuple[str, str], ...]
    required: tuple[str, ...]
    description: str
    fn: Callable = field(compare=False, repr=False)
    evolved_from: str | None = None
    rule: str | None = None

    @property
    def spec(self) -> dict:
        return {"name": self.name, "description": self.description,
                "parameters": {"type": "dict", "properties": {n: {"type": t} for n, t in self.params},
                               "required": list(self.required)}}


TOOLS: Registry[Tool] = Registry("tool")


def _method_tool(spec: dict, api: str, attr: str) -> Tool:
    props = spec["parameters"]["properties"]
    name = spec["name"]

    def fn(world, kwargs):
        return getattr(getattr(world, attr), name)(**kwargs)

    return Tool(name, api, tuple((p, props[p]["type"]) for p in props), tuple(spec["parameters"].get("required", [])),
                spec["description"], fn)


def real_tools() -> dict[str, Tool]:
    """The real BFCL tools used here: the Math API's add/subtract/multiply and six file-system commands."""
    out = {}
    for api, attr, names in (("math_api", "math", MATH_TOOLS), ("gorilla_file_system", "fs", FS_TOOLS)):
        specs = {s["name"]: s for s in load_specs(api)}
        for n in names:
            out[n] = _method_tool(specs[n], api, attr)
    for t in out.values():
        if t.name not in TOOLS:
            TOOLS.add(t.name, t)
    return out


# ------------------------------------------------------------------------------ domain evolution
def _rename(tool: Tool, name: str, **_) -> Tool:
    return replace(tool, name=name, description=f"{tool.description} (alias of {tool.name})")


def _reorder(tool: Tool, name: str, **_) -> Tool:
    params = tuple(reversed(tool.params))
    return replace(tool, name=name, params=params, description=f"{tool.description} Arguments in reverse order.")


def _extra_param(tool: Tool, name: str, **_) -> Tool:
    base = tool.fn

    def fn(world, kwargs):
        scale = kwargs.pop("scale")
        out = base(world, kwargs)
        if isinstance(out, dict) and "result" in out:
            out = {"result": out["result"] * scale}
        return out

    return replace(tool, name=name, params=tool.params + (("scale", "float"),), required=tool.required + ("scale",),
                   description=f"{tool.description} The result is multiplied by `scale`.", fn=fn)


def _unit(tool: Tool, name: str, factor: float = 100, **_) -> Tool:
    base = tool.fn

    def fn(world, kwargs):
        out = base(world, kwargs)
        if isinstance(out, dict) and "result" in out:
            out = {"result": out["result"] * factor}
        return out

    return replace(tool, name=name, fn=fn, description=f"{tool.description} Result in units of 1/{factor:g}.")


NUMERIC_RULES = ("extra_param", "unit")
EVOLUTION_RULES: dict[str, Callable[..., Tool]] = {"rename": _rename, "reorder": _reorder, "extra_param": _extra_param,
                                                   "unit": _unit}


def evolve_tool(tool: Tool, rule: str, name: str, **options) -> Tool:
    """A synthetic tool grown from ``tool`` by one rule (K2's domain evolution): ``rename`` (same behaviour,
    new name), ``reorder`` (parameters reversed), ``extra_param`` (a required ``scale`` multiplies the result),
    ``unit`` (result reported ×``factor``). Each comes with its executable simulator."""
    if not isinstance(tool, Tool):
        raise ValueError(f"tool: expected a Tool, got {type(tool).__name__}")
    if rule not in EVOLUTION_RULES:
        raise ValueError(f"rule: expected one of {sorted(EVOLUTION_RULES)}, got {rule!r}")
    if not isinstance(name, str) or not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise ValueError(f"name: expected a lower-case identifier, got {name!r}")
    if rule in NUMERIC_RULES and tool.api != "math_api":
        raise ValueError(f"rule: {rule!r} changes a numeric result; expected a Math API tool, got {tool.name!r}")
    return replace(EVOLUTION_RULES[rule](tool, name, **options), evolved_from=tool.name, rule=rule)


def evolve_domain(tools: list[Tool], n: int, rng: random.Random) -> list[Tool]:
    """``n`` synthetic tools: each applies a random applicable rule to a random real tool (``<base>_v<k>``)."""
    if isinstance(tools, (str, bytes)) or not isinstance(tools, (list, tuple)) or not tools or \
            any(not isinstance(t, Tool) for t in tools):
        raise ValueError(f"tools: expected a non-empty list of Tool, got {tools!r}"[:200])
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= 10**5:
        raise ValueError(f"n: expected an int in [0, 100000], got {n!r}")
    out = []
    for k in range(n):
        base = rng.choice(tools)
        rules = [r for r in EVOLUTION_RULES if base.api == "math_api" or r not in NUMERIC_RULES]
        out.append(evolve_tool(base, rng.choice(rules), f"{base.name}_v{k + 2}"))
    return out


# ------------------------------------------------------------------------------ the simulator
_CALL = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\((.*)\)")


def parse_call(line: str) -> tuple[str, list[str]] | None:
    """``"add(3,4)"`` → ``("add", ["3", "4"])``; None if the line is not a call."""
    if not isinstance(line, str):
        raise ValueError(f"line: expected a str, got {type(line).__name__}")
    m = _CALL.fullmatch(line.strip())
    if m is None:
        return None
    args = m.group(2)
    return m.group(1), ([] if args == "" else args.split(","))


def _convert(text: str, kind: str):
    if kind in ("float", "integer"):
        value = float(text)
        return int(value) if kind == "integer" or value.is_integer() and "." not in text else value
    if kind == "boolean":
        if text not in ("true", "false"):
            raise ValueError(text)
        return text == "true"
    return text


def _fmt(v) -> str:
    if isinstance(v, float):
        return str(int(v)) if v.is_integer() and abs(v) < 1e15 else f"{v:.6g}"
    if isinstance(v, (list, tuple)):
        return " ".join(map(_fmt, v))
    return str(v)


def render_result(out) -> str:
    """A back-end's return value as the short text the agent sees: ``{"result": 7}`` → ``"7"``, ``None`` → ``"ok"``,
    an error dict → ``"!error"``."""
    if out is None or out == {}:
        return "ok"
    if "error" in out:
        return "!error"
    return " ".join(_fmt(v) for v in out.values())


class ToolWorld:
    """A stateful tool simulator with controlled randomness.

    Holds the back-ends' state (a Math API instance, a :class:`FileSystem`), a log of successful calls
    ``(name, args, result_text)``, and a ``random.Random(seed)``: a tool named in ``flaky`` fails with its
    probability and answers ``"!busy"`` without touching the state — the agent has to retry.
    """

    def __init__(self, tools: dict[str, Tool], *, files: dict | None = None, flaky: dict[str, float] | None = None,
                 seed: int = 0):
        if not isinstance(tools, dict) or any(not isinstance(t, Tool) for t in tools.values()):
            raise ValueError(f"tools: expected a dict name -> Tool, got {type(tools).__name__}")
        flaky = dict(flaky or {})
        for name, p in flaky.items():
            if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p <= 1:
                raise ValueError(f"flaky: expected probabilities in [0, 1], got {name}={p!r}")
        self.tools, self.flaky, self.rng = dict(tools), flaky, random.Random(seed)
        self.math, self.fs = math_backend(), FileSystem(files)
        self.log: list[tuple[str, tuple, str]] = []
        self.failures = 0

    def call(self, name: str, args: list[str]) -> str:
        """Execute ``name(*args)`` (argument strings converted by the spec's types); returns the result text."""
        tool = self.tools.get(name)
        if tool is None:
            return "!unknown tool"
        if not len(tool.required) <= len(args) <= len(tool.params):
            return "!bad args"
        try:
            kwargs = {p: _convert(a, kind) for (p, kind), a in zip(tool.params, args, strict=False)}
        except ValueError:
            return "!bad args"
        if self.rng.random() < self.flaky.get(name, 0.0):
            self.failures += 1
            return "!busy"
        text = render_result(tool.fn(self, dict(kwargs)))
        if not text.startswith("!"):
            self.log.append((name, tuple(kwargs.values()), text))
        return text

"""Benchmarks: candidates measured side by side in one process, reported as tables and ratios.

A topic is a function ``fn(quick: bool = False) -> BenchResult`` registered with ``@register(name)``
in a module of this package (found automatically). ``quick=True`` shrinks every size so the suite can
check that a topic runs; real numbers come from ``kimi-mini bench <topic>``. Benchmarks never assert:
speed and memory targets are read off their printed ratios.

Timing: warm-up runs, then the median of several repeats (CUDA synchronised). Peak memory: on CUDA
``max_memory_allocated``; on CPU the process's resident-set high-water mark (``VmHWM``, reset through
``/proc/self/clear_refs``) above the resident set at the start — what the OS actually had to give.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import platform
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from kimi_mini.registry import Registry

__all__ = ["BenchResult", "TOPICS", "register", "discover", "time_it", "peak_memory", "trim_heap", "machine_info",
           "format_table"]


@dataclass
class BenchResult:
    rows: list[dict]
    summary: dict
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Topic:
    name: str
    fn: Callable[..., BenchResult]
    help: str


TOPICS: Registry[Topic] = Registry("benchmark topic")


def register(name: str, help: str = "") -> Callable:
    """Decorator: ``@register("moe")`` on ``fn(quick=False) -> BenchResult`` makes it ``kimi-mini bench moe``
    (a second, different function under the same name is an error)."""
    def decorator(fn: Callable[..., BenchResult]) -> Callable[..., BenchResult]:
        if name in TOPICS and TOPICS.get(name).fn is fn:  # the same module imported twice
            return fn
        TOPICS.add(name, Topic(name, fn, help or (fn.__doc__ or "").strip().splitlines()[0]))
        return fn

    return decorator


def discover() -> dict[str, Topic]:
    """Import every module of this package so that its topics register themselves."""
    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")
    return TOPICS


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def time_it(fn: Callable[[], object], warmup: int = 1, repeat: int = 5) -> float:
    """Median wall time of ``fn()`` in seconds over ``repeat`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    _sync()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        _sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _status_bytes(key: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(rf"{key}:\s+(\d+) kB", f.read()).group(1)) * 1024


def trim_heap() -> None:
    """Hand freed heap pages back to the OS (glibc keeps them resident otherwise, so a candidate measured
    after another would reuse its pages and read as using nothing)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def peak_memory(fn: Callable[[], object], device: str = "cpu") -> int | None:
    """Extra bytes at the peak of ``fn()`` (see the module docstring); None where it cannot be measured."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    trim_heap()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS
        base = _status_bytes("VmRSS")
        fn()
        return max(0, _status_bytes("VmHWM") - base)
    except OSError:
        return None


def machine_info() -> dict:
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:  # pragma: no cover
        info["triton"] = None
    return info


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "-" if v is None else str(v)


def format_table(rows: list[dict]) -> str:
    """Rows of dicts as an aligned text table (columns in first-seen order)."""
    if not rows:
        return "(no rows)"
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    cells = [[_fmt(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    line = lambda vals: "  ".join(v.rjust(w) for v, w in zip(vals, widths, strict=True))
    return "\n".join([line(cols), line(["-" * w for w in widths])] + [line(row) for row in cells])

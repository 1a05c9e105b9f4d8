"""Benchmarks: candidates measured side by side in one process, reported as tables and ratios.

A topic is a function ``fn(quick: bool = False) -> BenchResult`` registered with ``@register(name)``
in a module of this package (found automatically). ``quick=True`` shrinks every size so the suite can
check that a topic runs; real numbers come from ``kimi-mini bench <topic>``. Benchmarks never assert:
speed and memory targets are read off their printed ratios.

Timing: warm-up runs, then several repeats (CUDA synchronised); candidates compared with each other are
timed round-robin (:func:`interleaved`) so a change in machine load hits them alike, and every ratio is
reported with its spread — the median of the per-round ratios and their min–max (:func:`ratio_spread`) —
so a reader can tell a margin from noise. Peak memory, two views: :func:`peak_allocated` — the peak of
live tensor bytes (CUDA's ``max_memory_allocated``; on the CPU the same sum over the profiler's
allocation events), exact and repeatable; and :func:`peak_memory` — on CPU the process's resident-set
high-water mark (``VmHWM``, reset through ``/proc/self/clear_refs``) above the resident set at the
start, what the OS actually had to give, including what glibc keeps resident between frees (so it
varies with what ran before).
"""

from __future__ import annotations

import contextlib
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

__all__ = ["BenchResult", "TOPICS", "register", "discover", "time_it", "interleaved", "spread", "ratio_spread",
           "peak_memory", "peak_allocated", "trim_heap", "machine_info", "machine_note", "format_table"]


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


def interleaved(steps: dict[str, Callable[[], object]], repeat: int, warmup: int = 1,
                slow: frozenset[str] | set[str] = frozenset()) -> dict[str, list[float]]:
    """Seconds of every run of each candidate, timed round-robin (a, b, a, b, ...) after ``warmup`` runs
    each, so that a change in machine load hits every candidate alike. ``slow`` ones run twice at most."""
    for step in steps.values():
        for _ in range(warmup):
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for r in range(repeat):
        for name, step in steps.items():
            if name in slow and r >= 2:
                continue
            _sync()
            t0 = time.perf_counter()
            step()
            _sync()
            times[name].append(time.perf_counter() - t0)
    return times


def spread(samples: list[float]) -> dict[str, float]:
    """``median``, ``min``, ``max`` and the quartiles ``q1``, ``q3`` of ``samples``."""
    xs = sorted(samples)
    q1, _, q3 = statistics.quantiles(xs, n=4, method="inclusive") if len(xs) > 1 else (xs[0],) * 3
    return {"median": statistics.median(xs), "min": xs[0], "max": xs[-1], "q1": q1, "q3": q3}


def ratio_spread(num: list[float], den: list[float]) -> dict[str, float]:
    """Spread of the per-round ratios ``num[i] / den[i]`` of two interleaved candidates (paired by round,
    so a load spike that slows both cancels); the ratio of the medians is reported as ``median``."""
    ratios = [a / b for a, b in zip(num, den, strict=False)]
    out = spread(ratios)
    out["median"] = statistics.median(num) / statistics.median(den)
    return out


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


@contextlib.contextmanager
def _quiet_stderr():
    """Silence file descriptor 2 (the profiler's C++ start/stop lines) for the duration."""
    try:
        saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    except OSError:  # pragma: no cover
        yield
        return
    try:
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def peak_allocated(fn: Callable[[], object], device: str = "cpu") -> int | None:
    """Peak bytes of *live tensors* allocated during ``fn()`` above those alive before it — what the
    algorithm holds at its worst moment, independent of the C allocator's caching. On CUDA
    ``max_memory_allocated``; on the CPU the same quantity from the profiler's allocation events
    (every tensor allocation and free, in order, summed). None where it cannot be measured.

    :func:`peak_memory` (resident-set growth) is the OS's view of the same run: it adds what glibc
    keeps resident after frees (memory it reuses later), so it depends on what ran before."""
    if device.startswith("cuda"):
        return peak_memory(fn, device)
    try:
        from torch.profiler import ProfilerActivity, profile

        with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            fn()
        cpu = torch.autograd.DeviceType.CPU
        events = [e for e in prof.profiler.kineto_results.events()
                  if e.name() == "[memory]" and e.device_type() == cpu]
    except Exception:  # pragma: no cover - a torch without these profiler internals
        return None
    live = peak = 0
    for e in sorted(events, key=lambda e: e.start_ns()):
        live += e.nbytes()
        peak = max(peak, live)
    return peak


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            found = re.search(r"^model name\s*:\s*(.+)$", f.read(), re.M)
        if found:
            return found.group(1).strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict:
    try:
        load = os.getloadavg()[0]
    except OSError:  # pragma: no cover
        load = None
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "load_1min": load,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:  # pragma: no cover
        info["triton"] = None
    return info


def machine_note() -> str:
    """One line naming the machine a bench ran on (CPU model, cores, torch threads, load) for its notes."""
    m = machine_info()
    load = "?" if m["load_1min"] is None else f"{m['load_1min']:.1f}"
    where = m["cuda"] or f"{m['cpu']}, {m['cpu_count']} cores"
    return (f"machine: {where}, torch {m['torch']}, {m['torch_threads']} torch threads "
            f"(OMP_NUM_THREADS={m['omp_num_threads']}), load average {load} at the end")


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

"""Launch configurations chosen by measurement on a GPU, once per problem key.

Triton's ``@triton.autotune`` re-runs a kernel for every candidate configuration on the real arguments.
Two of our kernels cannot be re-run in place: the MoE down projection adds into its output with atomic
adds (a second run doubles it), and a compile-only build (:mod:`kimi_mini.kernels.aot`) and the CPU
interpreter cannot time anything. So the MoE wrappers tune themselves with :func:`pick`:

- the per-architecture table's configuration is always the first candidate — it is the one the
  ahead-of-time compile test checks (shared memory, registers, wgmma), and the one used whenever timing
  is not possible (interpreter, compile-only builds, CPU tensors);
- on a CUDA GPU each candidate runs through a caller-supplied ``run(config)`` that writes into scratch
  buffers where a re-run would accumulate; a candidate other than the table's that fails to compile or
  launch (too much shared memory, say) is skipped; the fastest median time wins;
- the choice is cached per key (the wrapper's shapes, dtype and flags, and the device), so tuning happens
  once per shape, as with ``triton.autotune``'s ``key``. :func:`choices` shows what was picked.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable

import kimi_mini.kernels as K

__all__ = ["pick", "choices", "clear", "can_time"]

_CACHE: dict[Hashable, dict] = {}


def can_time(*tensors) -> bool:
    """True when launches can be timed: compiled kernels (not the interpreter, not a compile-only
    build) on CUDA tensors."""
    return not K.INTERPRETED and not K.COMPILE_ONLY and all(t.is_cuda for t in tensors)


def _gpu_median_ms(fn: Callable[[], None]) -> float:
    import triton.testing

    return float(triton.testing.do_bench(fn, warmup=5, rep=20, return_mode="median"))


def pick(key: Hashable, candidates: list[dict], run: Callable[[dict], None], *,
         timer: Callable[[Callable[[], None]], float] | None = None) -> dict:
    """The fastest of ``candidates`` (dicts of launch options; ``candidates[0]`` is the table's) for
    ``key``: each is timed by ``timer(lambda: run(config))`` (default: Triton's ``do_bench`` median, in
    ms) and the choice is cached per key. A candidate after the first whose run raises is skipped; an
    error of the first is raised (the table's configuration must work)."""
    if not isinstance(candidates, list) or not candidates or not all(isinstance(c, dict) for c in candidates):
        raise ValueError(f"candidates: expected a non-empty list of dicts, got {candidates!r:.80}")
    if key in _CACHE:
        return _CACHE[key]
    timer = timer or _gpu_median_ms
    best, best_t = candidates[0], math.inf
    for i, cfg in enumerate(candidates):
        if i and cfg == candidates[0]:
            continue
        try:
            t = timer(lambda cfg=cfg: run(cfg))
        except Exception:
            if i == 0:
                raise
            continue  # e.g. out of shared memory on this card: not a candidate here
        if t < best_t:
            best, best_t = cfg, t
    _CACHE[key] = best
    return best


def choices() -> dict[Hashable, dict]:
    """A copy of the configurations picked so far, by key."""
    return dict(_CACHE)


def clear() -> None:
    """Forget every choice (the next call of each key tunes again)."""
    _CACHE.clear()

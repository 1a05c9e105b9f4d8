"""Benchmark topic ``logprob``: per-token log p(target) from logits ``[N, V]``, three ways, side by side.

Candidates (forward; the question is the ``[N, V]`` log-probability buffer the fused path never writes):

- ``log_softmax+gather`` — ``torch.log_softmax(x, -1).gather(1, t)``: materialises ``N·V`` fp32 log-probs;
- ``cross_entropy`` — ``-F.cross_entropy(x, t, reduction="none")``: the same buffer inside ATen;
- ``fused`` — on a GPU the Triton kernel ``kimi_mini.kernels.logprob`` (online log-sum-exp, one row per
  program, only ``[N]`` outputs); on the CPU, where that kernel only runs in Triton's interpreter (far too
  slow to time), the same idea at torch's granularity: log-softmax over blocks of rows whose ``[rows, V]``
  temporary is capped at 2²⁰ numbers (4 MB).

On a GPU a fourth pair of rows times forward + backward (the LM-loss use), where torch also keeps the
``[N, V]`` softmax for its backward and the kernel keeps only ``lse [N]``.

Sizes: V = 256 … 163,840 (K2's vocabulary). N = 4,096 on a GPU; N = 1,024 on the CPU (the logits alone are
0.7 GB there, and the course machine is shared); quick: N = 64, V ≤ 4,096. Times are medians of
round-robin repeats with their min–max; peak memory (see :func:`kimi_mini.bench.peak_memory`) is the
median of three measurements, above the logits already held.
"""

from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F

from kimi_mini.bench import BenchResult, peak_memory, register


def _log_softmax_gather(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(x, -1).gather(1, t[:, None])[:, 0]


def _cross_entropy(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return -F.cross_entropy(x, t, reduction="none")


def _row_blocked(x: torch.Tensor, t: torch.Tensor, max_numel: int = 2**20) -> torch.Tensor:
    """log p(target) one block of rows at a time: the ``[rows, V]`` temporary never exceeds ``max_numel``."""
    rows = max(1, max_numel // x.shape[1])
    out = torch.empty(x.shape[0], dtype=torch.float32, device=x.device)
    for i in range(0, x.shape[0], rows):
        out[i:i + rows] = _log_softmax_gather(x[i:i + rows].float(), t[i:i + rows])
    return out


def _round_robin(steps: dict, repeat: int) -> dict[str, list[float]]:
    """Seconds per run of each candidate, interleaved (a, b, c, a, b, c, ...) after one warm-up each, so that
    a change in machine load hits every candidate alike."""
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    times: dict[str, list[float]] = {name: [] for name in steps}
    for step in steps.values():
        step()
    for _ in range(repeat):
        for name, step in steps.items():
            sync()
            t0 = time.perf_counter()
            step()
            sync()
            times[name].append(time.perf_counter() - t0)
    return times


def _fwd_bwd(fn, x, t):
    def step():
        x.grad = None
        fn(x, t).sum().backward()

    return step


@register("logprob", help="fused log-softmax+gather vs log_softmax().gather() and F.cross_entropy: memory, time")
def bench_logprob(quick: bool = False) -> BenchResult:
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    N = 64 if quick else (4096 if cuda else 1024)
    vocabs = [256, 4096] if quick else [256, 4096, 32768, 163840]
    repeat = 3 if quick else 7
    candidates = {"log_softmax+gather": _log_softmax_gather, "cross_entropy": _cross_entropy}
    if cuda:
        from kimi_mini.kernels.logprob import token_logprobs

        candidates["fused"] = token_logprobs
    else:
        candidates["fused"] = _row_blocked
    rows, mem_at, time_at = [], {}, {}
    g = torch.Generator(device=device).manual_seed(0)
    for V in vocabs:
        x = torch.randn(N, V, device=device, generator=g)
        t = torch.randint(0, V, (N,), device=device, generator=g)
        ref = _log_softmax_gather(x, t)
        passes = {f"fwd {name}": (lambda fn=fn, x=x, t=t: fn(x, t)) for name, fn in candidates.items()}
        if cuda:
            xg = x.clone().requires_grad_()
            passes |= {f"fwd+bwd {name}": _fwd_bwd(fn, xg, t) for name, fn in candidates.items()
                       if name != "cross_entropy"}
        times = _round_robin(passes, repeat)
        for key, step in passes.items():
            mems = [peak_memory(step, device) for _ in range(3)]
            mem = None if None in mems else statistics.median(mems)
            pass_, name = key.split(" ", 1)
            err = (candidates[name](x, t).float() - ref).abs().max().item() if pass_ == "fwd" else None
            ts = times[key]
            rows.append({"V": V, "N": N, "pass": pass_, "candidate": name, "ms (median)": 1e3 * statistics.median(ts),
                         "ms min": 1e3 * min(ts), "ms max": 1e3 * max(ts),
                         "peak MB": None if mem is None else mem / 2**20,
                         "logits MB": x.numel() * x.element_size() / 2**20, "max |Δ| vs torch": err})
            mem_at[(V, key)], time_at[(V, key)] = mem, statistics.median(ts)
        del x, t, ref, passes

    def ratio(table, V, a, b):
        return None if not table.get((V, b)) or table.get((V, a)) is None else table[(V, a)] / table[(V, b)]

    Vmax = vocabs[-1]  # 163,840 except in quick mode, where the v163840 keys stay None
    summary = {
        "memory_vs_torch_v163840": ratio(mem_at, 163840, "fwd fused", "fwd log_softmax+gather"),
        "memory_vs_cross_entropy_v163840": ratio(mem_at, 163840, "fwd fused", "fwd cross_entropy"),
        "time_vs_torch_v163840": ratio(time_at, 163840, "fwd fused", "fwd log_softmax+gather"),
        "largest_v": Vmax,
        "memory_vs_torch_largest_v": ratio(mem_at, Vmax, "fwd fused", "fwd log_softmax+gather"),
        "time_vs_torch_largest_v": ratio(time_at, Vmax, "fwd fused", "fwd log_softmax+gather"),
        "fused_impl": "triton" if cuda else "row-blocked torch (CPU stand-in for the kernel)",
        "shape": {"N": N, "V": vocabs, "dtype": "float32", "device": device},
    }
    if cuda:
        summary["fwd_bwd_memory_vs_torch_largest_v"] = ratio(mem_at, Vmax, "fwd+bwd fused",
                                                             "fwd+bwd log_softmax+gather")
    notes = [f"{device} fp32, N={N}; ratios are fused / torch at V={Vmax} (memory: < 1 means the fused path "
             "needs less). Peak memory is above the logits already held."]
    if not cuda:
        notes.append("CPU: 'fused' is a row-blocked torch log-softmax (the Triton kernel runs only in the "
                     "interpreter here); the kernel itself is measured with `kimi-mini bench logprob` on a GPU.")
    return BenchResult(rows, summary, notes)

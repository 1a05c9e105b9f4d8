"""Benchmark topic ``moe``: one MoE layer against a dense SwiGLU FFN with the same activated parameters.

Forward + backward, measured side by side in one process. On the CPU (fp32): N = 8192 tokens,
d_model = 512, 32 experts, top-4, expert width 256, one shared expert, against a dense SwiGLU of width
5 × 256 — so a token multiplies by exactly as many FFN weights either way and the MoE / dense time
ratio isolates the cost of routing, gathering and scattering (the ideal is ≈1.0). The ``"naive"``
per-expert-mask loop is timed too. On a GPU the grouped-GEMM ``"triton"`` impl runs at bf16 with a
larger N (the Triton interpreter is far too slow to time on a CPU, so it is left out there).
"""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn

from kimi_mini.bench import BenchResult, peak_memory, register
from kimi_mini.layers import SwiGLU
from kimi_mini.moe import MoE


def _fwd_bwd(module: nn.Module, x: torch.Tensor, dy: torch.Tensor):
    def step():
        for p in module.parameters():
            p.grad = None
        x.grad = None
        module(x).backward(dy)

    return step


def _interleaved_medians(steps: dict, repeat: int, slow: set[str] = frozenset()) -> dict[str, float]:
    """Median seconds per candidate, timed round-robin (dense, moe, dense, moe, ...) after one warm-up
    each, so that a change in machine load hits every candidate alike. ``slow`` ones run twice at most."""
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    times: dict[str, list[float]] = {name: [] for name in steps}
    for step in steps.values():
        step()
    for r in range(repeat):
        for name, step in steps.items():
            if name in slow and r >= 2:
                continue
            sync()
            t0 = time.perf_counter()
            step()
            sync()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


@register("moe", help="MoE layer vs dense SwiGLU at equal activated params: fwd+bwd time, peak memory")
def bench_moe(quick: bool = False) -> BenchResult:
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    dtype = torch.bfloat16 if cuda else torch.float32
    if quick:
        N, d, E, k, h = 256, 64, 8, 2, 32
    else:
        N, d, E, k, h = (65536, 1024, 64, 8, 512) if cuda else (8192, 512, 32, 4, 256)
    n_shared = 1
    repeat = 2 if quick else 7
    torch.manual_seed(0)
    dense = SwiGLU(d, (k + n_shared) * h).to(device, dtype)
    impls = ["torch", "triton"] if cuda else ["torch", "naive"]
    moes = {impl: MoE(d, E, k, h, n_shared=n_shared, impl=impl).to(device, dtype) for impl in impls}
    for m in moes.values():
        m.load_state_dict(moes[impls[0]].state_dict())
    x = torch.randn(1, N, d, device=device, dtype=dtype, requires_grad=True)
    dy = torch.randn(1, N, d, device=device, dtype=dtype)

    steps = {"dense": _fwd_bwd(dense, x, dy)} | {impl: _fwd_bwd(m, x, dy) for impl, m in moes.items()}
    times = _interleaved_medians(steps, repeat, slow={"naive"})
    ratios = {impl: times[impl] / times["dense"] for impl in moes}
    dense_params = sum(p.numel() for p in dense.parameters())
    rows = []
    for name, step in steps.items():
        mem = peak_memory(step, device)
        module = dense if name == "dense" else moes[name]
        total = sum(p.numel() for p in module.parameters())
        rows.append({"layer": "dense SwiGLU" if name == "dense" else f"MoE {E}e top-{k} +{n_shared}s",
                     "impl": "-" if name == "dense" else name,
                     "activated params": dense_params if name == "dense" else module.activated_numel(),
                     "total params": total, "ms": 1e3 * times[name],
                     "vs dense": 1.0 if name == "dense" else ratios[name],
                     "peak MB": None if mem is None else mem / 2**20})
    main = "triton" if cuda else "torch"
    summary = {
        "moe_over_dense_time": ratios[main],
        "impl": main,
        "ratios": ratios,
        "router_params": E * d,  # the only activated-parameter difference: the router
        "shape": {"N": N, "d_model": d, "n_experts": E, "top_k": k, "d_expert": h, "n_shared": n_shared,
                  "dtype": str(dtype).replace("torch.", ""), "device": device},
    }
    notes = [f"{device} {summary['shape']['dtype']}, N={N}, d={d}, E={E}, top-{k}, expert width {h}, "
             f"{n_shared} shared; dense width {(k + n_shared) * h}. Ratio = MoE time / dense time "
             f"(target <= 1.5 for impl={main!r})."]
    return BenchResult(rows, summary, notes)

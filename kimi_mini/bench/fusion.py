"""Benchmark topic ``fusion``: the cost of tensor fusion (TFN) against low-rank (LMF) and polynomial fusion
as the number of modalities grows — the curve that motivates low-rank fusion (Liu et al., arXiv 1806.00064;
Du et al., arXiv 1810.10565).

M = 2, 3, 4 modalities of width 32 (the summary's ratios are at M = 3), N rows (128 on the CPU, 2048 on a
GPU: TFN's four-modality activations are then ≈ 10 GB), 32 fused outputs; forward +
backward of the fusion head alone, timed round-robin (TFN, LMF, polynomial, TFN, …) after one warm-up each,
so a change in machine load hits every candidate alike; each sample repeats a fast step until it lasts
≈ 50 ms; medians with the min–max spread over the samples.
TFN's fused vector has Π(d_m + 1) entries per row (33⁴ ≈ 1.19 M at M = 4), LMF and the polynomial
(order P = M, so it holds the M-way products; rank 4) stay linear in M. On a GPU the polynomial also runs
through the fused Triton kernel; on the CPU the interpreter is far too slow to time, so it is left out.
"""

from __future__ import annotations

import math
import statistics
import time

import torch

from kimi_mini.bench import BenchResult, peak_memory, register
from kimi_mini.fusion import LowRankFusion, PolynomialFusion, TensorFusion, n_params


def _step(head, hs):
    def run():
        for p in head.parameters():
            p.grad = None
        head(hs).sum().backward()

    return run


def saved_activation_bytes(head, hs) -> int:
    """Bytes of the tensors autograd keeps for the backward of ``head(hs)`` (distinct storages, without the
    parameters and the inputs) — the activation memory that grows with TFN's Π(d_m + 1); exact on any device."""
    own = {t.untyped_storage().data_ptr() for t in [*head.parameters(), *hs]}
    seen: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in own:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        head(hs)
    return sum(seen.values())


def _timed(steps: dict, repeat: int, min_sample: float) -> dict[str, list[float]]:
    """Seconds per call of each step, ``repeat`` samples each, round-robin. A sample runs a step enough times
    to last ≈ ``min_sample`` seconds (calibrated on the warm-up), so a millisecond step is not one scheduler
    hiccup away from a 20× outlier on a shared machine."""
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    inner: dict[str, int] = {}
    for name, step in steps.items():
        step()
        sync()
        t0 = time.perf_counter()
        step()
        sync()
        inner[name] = max(1, math.ceil(min_sample / max(time.perf_counter() - t0, 1e-6)))
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeat):
        for name, step in steps.items():
            sync()
            t0 = time.perf_counter()
            for _ in range(inner[name]):
                step()
            sync()
            times[name].append((time.perf_counter() - t0) / inner[name])
    return times


@register("fusion", help="TFN vs low-rank vs polynomial fusion: time and peak memory as modalities grow 2 → 4")
def bench_fusion(quick: bool = False) -> BenchResult:
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    width, N, out, rank = (8, 32, 8, 2) if quick else (32, 2048 if cuda else 128, 32, 4)
    repeat = 2 if quick else 7
    rows, ratios = [], {}
    for M in (2, 3, 4):
        torch.manual_seed(M)
        dims = [width] * M
        heads = {"tfn": TensorFusion(dims, out), "lmf": LowRankFusion(dims, out, rank=rank),
                 "polynomial": PolynomialFusion(dims, out, rank=rank, order=M)}
        if cuda:
            heads["polynomial-triton"] = PolynomialFusion(dims, out, rank=rank, order=M, impl="triton")
        heads = {k: h.to(device) for k, h in heads.items()}
        hs = [torch.randn(N, width, device=device, requires_grad=True) for _ in range(M)]
        steps = {name: _step(h, hs) for name, h in heads.items()}
        times = _timed(steps, repeat, min_sample=0.002 if quick else 0.05)
        saved: dict[str, int] = {}
        med = {k: statistics.median(v) for k, v in times.items()}
        for name, head in heads.items():
            mem = peak_memory(steps[name], device)
            saved[name] = saved_activation_bytes(head, hs)
            rows.append({"modalities": M, "fusion": name,
                         "fused inputs": (width + 1) ** M if name == "tfn" else M * (width + 1),
                         "params": n_params(head), "ms": 1e3 * med[name],
                         "ms min–max": f"{1e3 * min(times[name]):.3g}–{1e3 * max(times[name]):.3g}",
                         "time vs lmf": med[name] / med["lmf"], "saved MB": saved[name] / 2**20,
                         "peak MB": None if mem is None else mem / 2**20})
        ratios[M] = {"time": med["tfn"] / med["lmf"], "memory": saved["tfn"] / saved["lmf"],
                     "time_min": min(times["tfn"]) / min(times["lmf"])}
    summary = {
        "tfn_over_lowrank_time": ratios[3]["time"],
        "tfn_over_lowrank_memory": ratios[3]["memory"],
        "tfn_over_lowrank_time_of_fastest_samples": ratios[3]["time_min"],
        "tfn_over_lowrank_time_by_modalities": {m: r["time"] for m, r in ratios.items()},
        "tfn_over_lowrank_memory_by_modalities": {m: r["memory"] for m, r in ratios.items()},
        "shape": {"width": width, "N": N, "out": out, "rank": rank, "device": device, "repeat": repeat},
    }
    notes = [f"{device} fp32, {N} rows, modality width {width}, {out} fused outputs, LMF/polynomial rank {rank}, "
             f"polynomial order = number of modalities; forward + backward of the head, median of {repeat} "
             "interleaved samples of ≥ 50 ms each (min–max beside it). Memory ratios use 'saved MB': the "
             "activations autograd keeps for backward (exact); 'peak MB' is CUDA's max allocated or the CPU "
             "resident-set high-water mark above the start (coarse: MB granularity, noisy on a shared machine).",
             "Summary ratios at 3 modalities; TFN's input grows as (width + 1)^M, LMF's as M·(width + 1)."]
    return BenchResult(rows, summary, notes)

"""Benchmark topic ``model``: the toy KimiMini's training throughput, and the attention core.

Two side-by-side measurements:
- training tokens/s of the toy dense KimiMini (forward + backward + AdamW step), fp32 on the CPU;
- causal attention, PyTorch SDPA vs the naive softmax(QKᵀ/√d)V, forward time and peak memory per
  sequence length — the naive path materialises the T×T score matrix, SDPA does not.
"""

from __future__ import annotations

import torch

from kimi_mini.bench import BenchResult, peak_memory, register, time_it
from kimi_mini.layers import causal_attention
from kimi_mini.model import KimiConfig, KimiMini


@register("model", help="toy KimiMini training tokens/s; attention core SDPA vs naive")
def bench_model(quick: bool = False) -> BenchResult:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    rows = []
    batch, seq = (2, 32) if quick else (16, 128)
    model = KimiMini(KimiConfig(max_seq_len=seq)).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randint(0, 256, (batch, seq), device=device)

    def step():
        _, loss = model(x, x)
        opt.zero_grad()
        loss.backward()
        opt.step()

    t = time_it(step, warmup=1, repeat=3 if quick else 10)
    rows.append({"case": "train step (toy KimiMini)", "T": seq, "ms": 1e3 * t, "tokens/s": batch * seq / t,
                 "peak MB": None})
    lengths = [64, 128] if quick else [256, 512, 1024, 2048]
    B, H, D = (1, 2, 16) if quick else (1, 4, 64)
    ratios = {}
    for T in lengths:
        q, k, v = (torch.randn(B, H, T, D, device=device) for _ in range(3))
        per_impl = {}
        for label, impl in (("sdpa", "torch"), ("naive", "naive")):
            fn = lambda impl=impl, q=q, k=k, v=v: causal_attention(q, k, v, impl=impl)
            ms = 1e3 * time_it(fn, warmup=1, repeat=3 if quick else 7)
            mem = peak_memory(fn, device)
            per_impl[label] = ms
            rows.append({"case": f"attention {label}", "T": T, "ms": ms, "tokens/s": None,
                         "peak MB": None if mem is None else mem / 2**20})
        ratios[T] = per_impl["naive"] / per_impl["sdpa"]
    summary = {"train_tokens_per_s": rows[0]["tokens/s"],
               "naive_over_sdpa_time": {str(T): r for T, r in ratios.items()}}
    return BenchResult(rows, summary, notes=[f"device {device}, B={B} H={H} D={D} fp32"])

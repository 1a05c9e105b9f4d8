"""Benchmark topic ``muon``: Muon vs AdamW on the toy KimiMini, Newton–Schulz cost, Distributed Muon's
communication (Moonlight, arXiv 2502.16982).

Side by side in one process:
(a) one optimizer step, Muon (hidden matrices; AdamW for the rest) vs AdamW, and its share of a
    forward + backward (the paper: 1–3 % at scale);
(b) end-to-end training throughput (tokens/s), Muon vs AdamW — target ≥ 0.85 on the toy model;
(c) NS5 time vs matrix size (and, on a GPU, the Triton kernel vs torch at 1024–8192);
(d) bytes per step of Distributed Muon vs ZeRO-1 AdamW over 2 ranks, counted from the collectives
    :class:`~kimi_mini.optim.DistributedMuon` issues (on a fake 2-rank process group: the same calls,
    no transport). The paper's bound, 1×–1.25×, assumes the momentum all-gather in bf16 with fp32
    gradients and parameters; on CPU the gather defaults to fp32 (exactness), which costs more.
"""

from __future__ import annotations

import statistics

import torch

from kimi_mini.bench import BenchResult, interleaved, machine_note, ratio_spread, register, time_it
from kimi_mini.model import KimiConfig, KimiMini
from kimi_mini.optim import build_optimizer, newton_schulz


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _toy(device: str, seq: int, quick: bool = False) -> KimiMini:
    """The toy preset's default KimiMini (128-d, 4 layers); quick: a 32-d, 1-layer one."""
    torch.manual_seed(0)
    config = KimiConfig(max_seq_len=seq)
    if quick:
        config = config.replace(d_model=32, n_layers=1, n_heads=2, d_ff=64)
    return KimiMini(config).to(device)


def _interleaved(fns: dict, repeat: int, device: str) -> tuple[dict, dict]:
    """Median seconds of each fn, measured in alternation (fair on a noisy, shared machine), and the
    samples themselves (for the spread of the ratios)."""
    samples = interleaved(fns, repeat)
    return {k: statistics.median(v) for k, v in samples.items()}, samples


def comm_bytes_per_step(model: KimiMini, name: str, gather_dtype=None) -> dict | None:
    """Bytes per step, by collective, of ZeRO-1 ``name`` (``"muon"``: Distributed Muon, ``"adamw"``) for
    ``model`` on a fake 2-rank process group (the optimizer's real calls, no transport); None where the
    fake group is unavailable or a process group is already running."""
    import torch.distributed as dist

    try:
        from torch.testing._internal.distributed.fake_pg import FakeStore
    except ImportError:  # pragma: no cover - internal torch API
        return None
    if dist.is_initialized():
        return None
    dist.init_process_group("fake", store=FakeStore(), rank=0, world_size=2)
    try:
        kw = {"gather_dtype": gather_dtype} if name == "muon" else {}
        opt = build_optimizer(model, name, lr=1e-3, weight_decay=0.1, distributed=True, **kw)
        for p in model.parameters():
            p.grad = torch.zeros_like(p)
        with torch.no_grad():
            saved = [p.detach().clone() for p in model.parameters()]
            opt.step()
            for p, s in zip(model.parameters(), saved, strict=True):
                p.copy_(s)  # the fake collectives return garbage; keep the model intact
        return dict(opt.comm_bytes)
    finally:
        dist.destroy_process_group()
        for p in model.parameters():
            p.grad = None


@register("muon", help="Muon vs AdamW: step time, training tokens/s, NS cost, Distributed Muon bytes")
def bench_muon(quick: bool = False) -> BenchResult:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    batch, seq = (2, 32) if quick else (16, 128)
    repeat = 3 if quick else 15
    rows: list[dict] = []
    x = torch.randint(0, 256, (batch, seq), device=device, generator=None)

    # (a) + (b): optimizer step alone, and a whole training step, Muon vs AdamW on identical models
    models = {name: _toy(device, seq, quick) for name in ("adamw", "muon")}
    opts = {name: build_optimizer(m, name, lr=3e-3, weight_decay=0.1) for name, m in models.items()}

    def fwd_bwd(name):
        opts[name].zero_grad(set_to_none=True)
        models[name](x, x)[1].backward()

    def train_step(name):
        fwd_bwd(name)
        opts[name].step()

    for name in models:
        fwd_bwd(name)  # gradients to step on
    step_t, _ = _interleaved({n: opts[n].step for n in models}, repeat, device)
    fb_t, _ = _interleaved({n: (lambda n=n: fwd_bwd(n)) for n in models}, repeat, device)
    train_t, train_s = _interleaved({n: (lambda n=n: train_step(n)) for n in models}, repeat, device)
    throughput = ratio_spread(train_s["adamw"], train_s["muon"])
    for name in models:
        size = "tiny KimiMini" if quick else "toy KimiMini"
        rows.append({"case": f"optimizer step {name}", "size": size, "ms": 1e3 * step_t[name],
                     "tokens/s": None, "note": f"{100 * step_t[name] / fb_t[name]:.1f}% of fwd+bwd"})
    for name in models:
        rows.append({"case": f"train step {name}", "size": f"B={batch} T={seq}", "ms": 1e3 * train_t[name],
                     "tokens/s": batch * seq / train_t[name],
                     "note": f"min–max {1e3 * min(train_s[name]):.1f}–{1e3 * max(train_s[name]):.1f} ms"})
    throughput_ratio = train_t["adamw"] / train_t["muon"]

    # (c) NS5 cost vs size (torch path; the kernel on a GPU)
    sizes = [32, 64] if quick else ([1024, 2048, 4096, 8192] if device == "cuda" else [128, 256, 512, 1024])
    for n in sizes:
        G = torch.randn(n, n, device=device)
        t_torch = time_it(lambda G=G: newton_schulz(G, impl="torch"), warmup=1, repeat=3 if quick else 5)
        row = {"case": "newton_schulz torch", "size": f"{n}x{n}", "ms": 1e3 * t_torch, "tokens/s": None,
               "note": "bf16" if device == "cuda" else "fp32"}
        rows.append(row)
        if device == "cuda":
            t_tri = time_it(lambda G=G: newton_schulz(G, impl="triton"), warmup=2, repeat=5)
            rows.append({"case": "newton_schulz triton", "size": f"{n}x{n}", "ms": 1e3 * t_tri,
                         "tokens/s": None, "note": f"torch/triton {t_torch / t_tri:.2f}x"})

    # (d) communication per step over 2 ranks
    comm_model = _toy("cpu", seq, quick)
    adamw = comm_bytes_per_step(comm_model, "adamw")
    muon_fp32 = comm_bytes_per_step(comm_model, "muon", torch.float32)
    muon_bf16 = comm_bytes_per_step(comm_model, "muon", torch.bfloat16)
    ratios = {}
    if adamw and muon_fp32 and muon_bf16:
        base = sum(adamw.values())
        for label, counts in (("ZeRO-1 AdamW", adamw), ("Distributed Muon, fp32 gather", muon_fp32),
                              ("Distributed Muon, bf16 gather", muon_bf16)):
            total = sum(counts.values())
            ratios[label] = total / base
            detail = ", ".join(f"{k} {v / 2**20:.2f}" for k, v in counts.items() if v >= 1024)
            rows.append({"case": f"bytes/step {label}", "size": "2 ranks", "ms": None, "tokens/s": None,
                         "note": f"{total / 2**20:.2f} MiB ({detail} MiB), {total / base:.3f}x AdamW"})

    summary = {
        "train_throughput_muon_over_adamw": throughput_ratio,
        "train_throughput_muon_over_adamw_min": throughput["min"],  # per-round ratios of interleaved steps
        "train_throughput_muon_over_adamw_max": throughput["max"],
        "repeats": repeat,
        "optimizer_step_muon_over_adamw": step_t["muon"] / step_t["adamw"],
        "muon_step_over_fwd_bwd": step_t["muon"] / fb_t["muon"],
        "comm_bytes_muon_over_adamw": ratios.get("Distributed Muon, bf16 gather"),
        "comm_bytes_muon_over_adamw_fp32_gather": ratios.get("Distributed Muon, fp32 gather"),
    }
    notes = [f"device {device}, {torch.get_num_threads()} threads, medians of {repeat} interleaved runs",
             "comm_bytes_muon_over_adamw: momentum all-gathered in bf16 (the paper's setting, the CUDA "
             "default); fp32 gather is the CPU default; byte counts are exact (no spread)",
             "target: train_throughput_muon_over_adamw >= 0.85 (its _min: the slowest round's ratio)", machine_note()]
    return BenchResult(rows, summary, notes=notes)

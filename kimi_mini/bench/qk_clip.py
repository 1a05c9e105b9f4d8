"""Benchmark topic ``qk_clip``: what max-logit tracking costs, and what one QK-Clip costs.

QK-Clip (Kimi K2, arXiv 2507.20534) needs every head's max logit of every training step. Side by side,
B = 2, H = 8, D = 64, causal, for several T: attention alone (SDPA), SDPA + the blockwise max logit
(``kimi_mini.layers.blockwise_max_logit``, the CPU path, never a T×T matrix), SDPA + the naive max
logit (one T×T matrix), and — on a GPU — the Triton flash kernel, which returns the max logit from its
running max at no extra cost. Also the time of one ``qk_clip_`` on a ``k2_mini`` model (a few row
scalings per layer: negligible next to a step).

Targets: blockwise tracking's peak memory stays ≪ the naive T×T matrix's (B·H·T²·4 bytes) and its time
below the naive one's; it is a second pass over Q·Kᵀ, so on a CPU it costs about one to two SDPA
forwards (measured on 2 cores: ×2.7 total at T = 4096, 256 MB vs 2 GB naive) — paid in forward passes
only, under ``no_grad``. On a GPU the flash kernel's time should stay within ~2× SDPA's with the max
logit included (not measured here: no GPU in this session).
"""

from __future__ import annotations

import math

import torch

from kimi_mini.bench import BenchResult, peak_memory, register, time_it


def _naive_max_logit(q, k, scale):
    T = q.shape[2]
    s = (q.float() @ k.float().transpose(-1, -2)) * scale  # [B, H, T, T]
    s = s.masked_fill(~torch.ones(T, T, dtype=torch.bool, device=q.device).tril(), float("-inf"))
    return s.amax(dim=(0, 2, 3))


@register("qk_clip", help="max-logit tracking: blockwise / naive / flash kernel vs plain SDPA; qk_clip_ cost")
def bench_qk_clip(quick: bool = False) -> BenchResult:
    from kimi_mini import KimiMini
    from kimi_mini.k2 import k2_mini
    from kimi_mini.layers import blockwise_max_logit
    from kimi_mini.qk_clip import qk_clip_, track_max_logits

    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    dtype = torch.bfloat16 if cuda else torch.float32
    B, H, D = 2, 8, 64
    lengths = (256, 512) if quick else ((1024, 2048, 4096, 8192) if cuda else (512, 1024, 2048, 4096))
    repeat = 2 if quick else 5
    scale = 1.0 / math.sqrt(D)
    sdpa = torch.nn.functional.scaled_dot_product_attention
    rows = []
    for T in lengths:
        g = torch.Generator(device=device).manual_seed(0)
        q, k, v = (torch.randn(B, H, T, D, device=device, dtype=dtype, generator=g) for _ in range(3))
        cands = {
            "sdpa": lambda q=q, k=k, v=v: sdpa(q, k, v, is_causal=True),
            "sdpa+blockwise": lambda q=q, k=k, v=v: (sdpa(q, k, v, is_causal=True),
                                                     blockwise_max_logit(q, k, scale)),
            "sdpa+naive": lambda q=q, k=k, v=v: (sdpa(q, k, v, is_causal=True),
                                                 _naive_max_logit(q, k, scale)),
        }
        if cuda:
            from kimi_mini.kernels.flash_attention import flash_attention

            cands["flash kernel (max logit included)"] = lambda q=q, k=k, v=v: flash_attention(q, k, v)
        base = None
        for name, fn in cands.items():
            with torch.no_grad():
                t = time_it(fn, warmup=1, repeat=repeat)
                mem = peak_memory(fn, device)
            base = base or t
            rows.append({"T": T, "candidate": name, "ms": round(t * 1e3, 3), "vs sdpa": round(t / base, 2),
                         "peak MB": None if mem is None else round(mem / 2**20, 1)})

    torch.manual_seed(0)
    model = KimiMini(k2_mini("toy", n_layers=2)).to(device)
    track_max_logits(model)
    x = torch.randint(0, 256, (4, 64), device=device)
    with torch.no_grad():
        model(x)
        saved = [m.max_logit.clone() for m in model.modules() if hasattr(m, "track_max_logit")]
        tau = float(torch.cat(saved).median())  # about half the heads clipped

    def one_clip():
        for m, s in zip([m for m in model.modules() if hasattr(m, "track_max_logit")], saved, strict=True):
            m.max_logit = s.clone()
        qk_clip_(model, tau=tau)

    clip_ms = time_it(one_clip, warmup=1, repeat=repeat) * 1e3
    by = {(r["T"], r["candidate"]): r for r in rows}
    T_max = lengths[-1]
    summary = {
        f"sdpa+blockwise at T={T_max} (x sdpa)": by[(T_max, "sdpa+blockwise")]["vs sdpa"],
        f"sdpa+naive at T={T_max} (x sdpa)": by[(T_max, "sdpa+naive")]["vs sdpa"],
        "qk_clip_ on k2_mini (2 layers), ms": round(clip_ms, 3),
    }
    return BenchResult(rows, summary, notes=[f"device {device}, dtype {dtype}, B={B}, H={H}, D={D}"])

"""Fused log-softmax + gather in Triton: per-token log p(target) without the ``[N, V]`` log-probabilities.

Rank classification (GPS, arXiv 2210.17041; ZeroPrompt, arXiv 2201.06910) and the LM loss both need only
one number per token: the log-probability of the target,

    ℓ_n = log softmax(x_n)[t_n] = x_{n,t_n} − lse_n,     lse_n = log Σ_v exp(x_{n,v})         (forward)
    CE  = −(1/|R|) Σ_{n∈R} ℓ_n,   R = {n : t_n ≠ ignore_index}                               (mean loss)
    ∂ℓ_n/∂x_{n,v} = 1[v = t_n] − exp(x_{n,v} − lse_n)                                         (backward)

``log_softmax(x).gather(t)`` writes all ``N·V`` log-probabilities (fp32) first, ``F.cross_entropy`` does
the same inside; at K2's vocabulary (V = 163,840) and N = 4,096 tokens that is 2.7 GB for 4,096 numbers.
Here one program owns one row and streams it in ``BLOCK_V`` chunks with an *online* log-sum-exp
(running max m and sum s: ``s ← s·e^{m_old−m} + Σ e^{x−m}``), so the forward keeps only ``ℓ`` and
``lse`` (``[N]`` each). The backward streams the row again and writes ``∂/∂x`` (which is ``[N, V]``
by nature) in the logits' dtype. Rows whose target is ``ignore_index`` give ℓ = 0 and a zero gradient.

Loads are upcast to fp32 right away (the CPU interpreter computes bf16 wrongly otherwise); outputs ℓ
and lse are fp32. Tests: ``tests/test_logprob_kernel.py`` (interpreter: fp32, fp16, V not a multiple
of the block, ignored rows); benchmark: ``kimi-mini bench logprob`` or ``python -m kimi_mini.kernels.logprob``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

import kimi_mini.kernels as K_
from kimi_mini.kernels import INTERPRETED

__all__ = ["token_logprobs", "cross_entropy", "TokenLogprobs", "logprob_fwd", "logprob_bwd"]

_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@triton.jit
def _logprob_fwd_kernel(X, T, LOGP, LSE, stride_x, V, ignore_index, BLOCK_V: tl.constexpr):
    row = tl.program_id(0)
    x_row = X + row.to(tl.int64) * stride_x
    cols = tl.arange(0, BLOCK_V)
    m = tl.max(tl.full([BLOCK_V], float("-inf"), tl.float32), axis=0)
    s = tl.sum(tl.zeros([BLOCK_V], tl.float32), axis=0)
    for start in range(0, V, BLOCK_V):
        mask = start + cols < V
        x = tl.load(x_row + start + cols, mask=mask, other=float("-inf")).to(tl.float32)
        m_new = tl.maximum(m, tl.max(x, axis=0))  # finite from the first chunk on (V >= 1)
        s = s * tl.exp(m - m_new) + tl.sum(tl.exp(x - m_new), axis=0)
        m = m_new
    lse = m + tl.log(s)
    t = tl.load(T + row)
    keep = t != ignore_index
    x_t = tl.load(x_row + tl.where(keep, t, 0)).to(tl.float32)
    tl.store(LSE + row, lse)
    tl.store(LOGP + row, tl.where(keep, x_t - lse, 0.0))


@triton.jit
def _logprob_bwd_kernel(X, T, LSE, DLOGP, DX, stride_x, stride_dx, V, ignore_index, BLOCK_V: tl.constexpr):
    row = tl.program_id(0)
    x_row = X + row.to(tl.int64) * stride_x
    dx_row = DX + row.to(tl.int64) * stride_dx
    cols = tl.arange(0, BLOCK_V)
    t = tl.load(T + row)
    g = tl.load(DLOGP + row).to(tl.float32)
    g = tl.where(t != ignore_index, g, 0.0)
    lse = tl.load(LSE + row)
    for start in range(0, V, BLOCK_V):
        idx = start + cols
        mask = idx < V
        x = tl.load(x_row + idx, mask=mask, other=0.0).to(tl.float32)
        p = tl.exp(x - lse)
        dx = g * (tl.where(idx == t, 1.0, 0.0) - p)
        tl.store(dx_row + idx, dx.to(DX.dtype.element_ty), mask=mask)


MAX_BLOCK_V = 1 << 16


def _block_v(V: int, block_v: int | None) -> int:
    if block_v is None:  # the interpreter pays per op, so fewer, bigger chunks; a GPU wants registers free
        return min(triton.next_power_of_2(V), 8192 if INTERPRETED else 4096)
    if isinstance(block_v, bool) or not isinstance(block_v, int) or not 16 <= block_v <= MAX_BLOCK_V or \
            block_v & (block_v - 1):  # Triton's largest block is 2**20 elements; wider chunks only spill registers
        raise ValueError(f"block_v: expected a power of two in [16, {MAX_BLOCK_V}], got {block_v!r}")
    return block_v


def _check(logits: Tensor, targets: Tensor, ignore_index: int) -> None:
    if not torch.is_tensor(logits) or logits.dim() != 2 or logits.shape[1] < 1:
        raise ValueError(f"logits: expected a [N, V] tensor with V >= 1, got "
                         f"{tuple(logits.shape) if torch.is_tensor(logits) else type(logits).__name__}")
    if logits.dtype not in _DTYPES:
        raise ValueError(f"logits: expected dtype float32, float16 or bfloat16, got {logits.dtype}")
    if logits.stride(1) != 1:
        raise ValueError(f"logits: expected a contiguous last dimension (stride 1), got strides {logits.stride()}")
    if not torch.is_tensor(targets) or targets.shape != logits.shape[:1] or targets.dtype not in (torch.int64,
                                                                                                   torch.int32):
        raise ValueError(f"targets: expected an int64 [N={logits.shape[0]}] tensor, got "
                         f"{getattr(targets, 'dtype', type(targets).__name__)} "
                         f"{tuple(targets.shape) if torch.is_tensor(targets) else ''}")
    if targets.device != logits.device:
        raise ValueError(f"targets: expected device {logits.device}, got {targets.device}")
    K_.check_device("logits", logits)  # a CUDA tensor on the current device when compiled
    if not isinstance(ignore_index, int):
        raise ValueError(f"ignore_index: expected an int, got {ignore_index!r}")
    bad = (targets != ignore_index) & ((targets < 0) | (targets >= logits.shape[1]))
    if targets.numel() and bool(bad.any()):
        raise ValueError(f"targets: expected ids in [0, {logits.shape[1]}) or ignore_index={ignore_index}, "
                         f"got {targets[bad][:4].tolist()}")


def logprob_fwd(logits: Tensor, targets: Tensor, ignore_index: int = -100,
                block_v: int | None = None) -> tuple[Tensor, Tensor]:
    """``logits [N, V]``, ``targets [N]`` → ``(logp [N] fp32, lse [N] fp32)``; ignored rows have logp 0."""
    N, V = logits.shape
    logp = torch.empty(N, device=logits.device, dtype=torch.float32)
    lse = torch.empty(N, device=logits.device, dtype=torch.float32)
    if N:
        _logprob_fwd_kernel[(N,)](logits, targets.contiguous(), logp, lse, logits.stride(0), V, ignore_index,
                                  BLOCK_V=_block_v(V, block_v))
    return logp, lse


def logprob_bwd(dlogp: Tensor, logits: Tensor, targets: Tensor, lse: Tensor, ignore_index: int = -100,
                block_v: int | None = None) -> Tensor:
    """``∂L/∂logits [N, V]`` (logits' dtype) from ``∂L/∂logp [N]``."""
    N, V = logits.shape
    dx = torch.empty_like(logits)
    if N:
        _logprob_bwd_kernel[(N,)](logits, targets.contiguous(), lse, dlogp.contiguous(), dx, logits.stride(0),
                                  dx.stride(0), V, ignore_index, BLOCK_V=_block_v(V, block_v))
    return dx


class TokenLogprobs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits: Tensor, targets: Tensor, ignore_index: int, block_v: int | None) -> Tensor:
        logp, lse = logprob_fwd(logits, targets, ignore_index, block_v)
        ctx.save_for_backward(logits, targets, lse)
        ctx.ignore_index, ctx.block_v = ignore_index, block_v
        return logp

    @staticmethod
    def backward(ctx, dlogp: Tensor):
        logits, targets, lse = ctx.saved_tensors
        return logprob_bwd(dlogp, logits, targets, lse, ctx.ignore_index, ctx.block_v), None, None, None


def token_logprobs(logits: Tensor, targets: Tensor, ignore_index: int = -100, block_v: int | None = None) -> Tensor:
    """Per-token ``log softmax(logits)[target]``: ``logits [N, V]`` (fp32/fp16/bf16, last dim contiguous),
    ``targets [N]`` int64 → ``[N]`` fp32, 0 where ``targets == ignore_index``. Differentiable in logits.
    ``block_v`` (a power of two) overrides the chunk width, for tests."""
    _check(logits, targets, ignore_index)
    _block_v(logits.shape[1], block_v)
    return TokenLogprobs.apply(logits, targets, ignore_index, block_v)


def cross_entropy(logits: Tensor, targets: Tensor, ignore_index: int = -100, block_v: int | None = None) -> Tensor:
    """Mean next-token cross-entropy over the rows whose target is not ``ignore_index`` (as
    ``F.cross_entropy(logits.float(), targets, ignore_index=...)``; NaN when every row is ignored)."""
    logp = token_logprobs(logits, targets, ignore_index, block_v)
    return -logp.sum() / (targets != ignore_index).sum()


if __name__ == "__main__":  # python -m kimi_mini.kernels.logprob: the kernel vs torch, side by side
    from kimi_mini.bench import format_table, time_it

    device = "cuda" if torch.cuda.is_available() else "cpu"
    sizes = [(4096, 32768), (4096, 163840)] if device == "cuda" else [(16, 1000)]
    rows = []
    for N, V in sizes:
        x = torch.randn(N, V, device=device)
        t = torch.randint(0, V, (N,), device=device)
        t_ref = time_it(lambda x=x, t=t: torch.log_softmax(x, -1).gather(1, t[:, None]))
        t_tri = time_it(lambda x=x, t=t: token_logprobs(x, t))
        rows.append({"N": N, "V": V, "torch ms": 1e3 * t_ref, "triton ms": 1e3 * t_tri, "torch/triton": t_ref / t_tri})
    print(format_table(rows))
    if device == "cpu":
        print("note: on CPU the kernel runs in Triton's interpreter — correctness, not speed")

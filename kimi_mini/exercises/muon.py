"""Exercises of notebook 02 (Muon): one Newton–Schulz step, and Moonlight's RMS-matching scale."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from kimi_mini.exercises import register_exercise
from kimi_mini.optim import NS_COEFFICIENTS, muon_update_scale, newton_schulz, newton_schulz_step, ns_polynomial


def _check_newton_schulz_step(candidate) -> None:
    g = torch.Generator().manual_seed(0)
    for shape in [(3, 5), (8, 20), (2, 4, 9)]:
        X = torch.randn(*shape, generator=g, dtype=torch.float64)
        X = X / torch.linalg.matrix_norm(X, keepdim=True)
        want = newton_schulz_step(X)
        got = candidate(X.clone())
        assert isinstance(got, Tensor) and got.shape == want.shape, (
            f"for X of shape {shape} expected a tensor of shape {tuple(want.shape)}, got "
            f"{getattr(got, 'shape', type(got).__name__)}")
        err = float((got - want).abs().max())
        assert err < 1e-9, (f"for X of shape {shape} the result is off by {err:.2e}: one step is "
                            f"a·X + (b·A + c·A·A)·X with A = X·Xᵀ (batched: use X.mT, not X.T) and "
                            f"(a, b, c) = {NS_COEFFICIENTS}")


def _wrong_newton_schulz_step(X: Tensor) -> Tensor:
    a, b, c = NS_COEFFICIENTS
    A = X @ X.mT
    return (b * A + c * A @ A) @ X  # forgets the linear term a·X


def _check_muon_update_scale(candidate) -> None:
    for shape in [(64, 64), (128, 512), (512, 128), (4, 96, 352)]:
        want = muon_update_scale(shape)
        got = candidate(shape)
        assert abs(float(got) - want) < 1e-9 * want, (
            f"for a matrix of shape {shape} expected {want:.6f}, got {got}: the orthogonalised update has "
            f"entry-RMS 1/sqrt(max(A, B)) and must end up with RMS 0.2 (use the last two dims)")


def _wrong_muon_update_scale(shape) -> float:
    A, B = shape[-2], shape[-1]
    return math.sqrt(max(1.0, A / B))  # Keller Jordan's original scale: RMS not matched to AdamW


register_exercise("newton_schulz_step", solution=newton_schulz_step, wrong=_wrong_newton_schulz_step,
                  checker=_check_newton_schulz_step,
                  description="one quintic Newton-Schulz step X <- aX + (bA + cA^2)X, A = X X^T")
register_exercise("muon_update_scale", solution=muon_update_scale, wrong=_wrong_muon_update_scale,
                  checker=_check_muon_update_scale,
                  description="Moonlight's RMS-matching factor 0.2*sqrt(max(A, B))")


# ------------------------------------------------------- predict, then run: how many Newton–Schulz steps
def ns_steps_needed(threshold: float = 0.6, seed: int = 0, max_steps: int = 12) -> int:
    """What the checker runs: the fewest quintic NS steps after which every singular value of a Gaussian
    64×256 matrix (Frobenius-normalised first, as ``newton_schulz`` does) is at least ``threshold``."""
    G = torch.randn(64, 256, generator=torch.Generator().manual_seed(seed))
    for steps in range(max_steps + 1):
        if float(torch.linalg.svdvals(newton_schulz(G, steps)).min()) >= threshold:
            return steps
    return max_steps + 1


def ns_steps_prediction() -> int:
    """Exercise solution: X₀ = G/‖G‖_F has σ ∈ ≈[(16−8)/128, (16+8)/128] = [0.06, 0.19] (Marchenko–Pastur
    edges √256 ± √64 over ‖G‖_F ≈ √(64·256) = 128). Iterating φ(σ) = aσ + bσ³ + cσ⁵ from the smallest:
    0.06 → 0.21 → 0.69 — two steps lift every singular value above 0.6."""
    sigma, steps = 8 / 128, 0
    while sigma < 0.6:
        sigma, steps = float(ns_polynomial(sigma)), steps + 1
    return steps


def _check_ns_steps_prediction(candidate) -> None:
    predicted = candidate()
    measured = ns_steps_needed()
    assert isinstance(predicted, int) and not isinstance(predicted, bool), (
        f"return a whole number of steps, got {predicted!r}")
    assert predicted == measured, (
        f"you predicted {predicted} step(s); the run needed {measured}. Hint: estimate the smallest singular "
        "value of G/‖G‖_F, then apply φ(σ) = aσ + bσ³ + cσ⁵ (ns_polynomial) until it passes 0.6.")


register_exercise("ns_steps_prediction", solution=ns_steps_prediction, wrong=lambda: 5,  # Muon's default
                  checker=_check_ns_steps_prediction,
                  description="predict, then run: NS steps until every singular value of a Gaussian matrix >= 0.6")


# ------------------------------------------------------- Triton: one tile of the Gram product X·Xᵀ
GRAM_BLOCK, GRAM_BLOCK_K = 16, 16


def launch_gram_tiles(kernel, X: Tensor) -> Tensor:
    """Run a learner's tile kernel over every ``BLOCK×BLOCK`` tile of ``C = X·Xᵀ`` (grid ``(T, T)``).

    ``kernel(X, C, M, K, stride_xm, stride_cm, BLOCK: tl.constexpr, BLOCK_K: tl.constexpr)``: program
    ``(ti, tj)`` computes rows ``ti·BLOCK …`` × columns ``tj·BLOCK …`` of C. C starts as NaN; a kernel that
    stores nothing raises ``NotImplementedError`` (the checker reports "not attempted")."""
    import triton

    X = X.contiguous()
    M, K = X.shape
    C = torch.full((M, M), float("nan"), dtype=torch.float32, device=X.device)
    tiles = triton.cdiv(M, GRAM_BLOCK)
    kernel[(tiles, tiles)](X, C, M, K, X.stride(0), C.stride(0), BLOCK=GRAM_BLOCK, BLOCK_K=GRAM_BLOCK_K)
    if bool(C.isnan().all()):
        raise NotImplementedError("the kernel stored nothing")
    return C


def _gram_solution_kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def gram_tile_kernel(X, C, M, K, stride_xm, stride_cm, BLOCK: tl.constexpr, BLOCK_K: tl.constexpr):
        ti, tj = tl.program_id(0), tl.program_id(1)
        rows = ti * BLOCK + tl.arange(0, BLOCK)  # rows of X (and of C) this tile covers
        cols = tj * BLOCK + tl.arange(0, BLOCK)  # rows of X that become columns of C
        acc = tl.zeros((BLOCK, BLOCK), dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):  # walk the shared dimension one BLOCK_K slice at a time
            ks = k0 + tl.arange(0, BLOCK_K)
            a = tl.load(X + rows[:, None] * stride_xm + ks[None, :], mask=(rows[:, None] < M) & (ks[None, :] < K),
                        other=0.0)
            bt = tl.load(X + cols[None, :] * stride_xm + ks[:, None], mask=(cols[None, :] < M) & (ks[:, None] < K),
                         other=0.0)  # X[cols, ks]ᵀ, loaded already transposed: [BLOCK_K, BLOCK]
            acc += tl.dot(a.to(tl.float32), bt.to(tl.float32), input_precision="ieee")
        tl.store(C + rows[:, None] * stride_cm + cols[None, :], acc, mask=(rows[:, None] < M) & (cols[None, :] < M))

    return gram_tile_kernel


def _gram_wrong_kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def gram_first_slice_only(X, C, M, K, stride_xm, stride_cm, BLOCK: tl.constexpr, BLOCK_K: tl.constexpr):
        ti, tj = tl.program_id(0), tl.program_id(1)
        rows = ti * BLOCK + tl.arange(0, BLOCK)
        cols = tj * BLOCK + tl.arange(0, BLOCK)
        ks = tl.arange(0, BLOCK_K)  # forgets to loop over K: only the first BLOCK_K columns count
        a = tl.load(X + rows[:, None] * stride_xm + ks[None, :], mask=(rows[:, None] < M) & (ks[None, :] < K),
                    other=0.0)
        bt = tl.load(X + cols[None, :] * stride_xm + ks[:, None], mask=(cols[None, :] < M) & (ks[:, None] < K),
                     other=0.0)
        acc = tl.dot(a.to(tl.float32), bt.to(tl.float32), input_precision="ieee")
        tl.store(C + rows[:, None] * stride_cm + cols[None, :], acc, mask=(rows[:, None] < M) & (cols[None, :] < M))

    return gram_first_slice_only


def gram_tiles_solution(X: Tensor) -> Tensor:
    """Exercise solution: ``X·Xᵀ`` from the tile kernel above (its source is shown after the checker)."""
    return launch_gram_tiles(_gram_solution_kernel(), X)


def _check_gram_tiles(candidate) -> None:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    for M, K in ((16, 16), (40, 72), (33, 20)):  # one tile; ragged tiles and a ragged K; K not a multiple
        X = torch.randn(M, K, generator=torch.Generator().manual_seed(M * K)).to(device)
        got = candidate(X)
        want = X.double() @ X.double().T
        assert torch.is_tensor(got) and tuple(got.shape) == (M, M), f"expected a [{M}, {M}] result"
        assert not bool(got.isnan().any()), (
            f"X [{M}, {K}]: some entries of C were never stored — cover every tile, and mask the ragged edge "
            "(rows >= M) instead of skipping it")
        err = float((got.double() - want).abs().max())
        assert err < 1e-4 * float(want.abs().max()), (
            f"X [{M}, {K}]: max error {err:.3g} — accumulate tl.dot over every BLOCK_K slice of K "
            "(a loop), masking columns >= K with zeros")


register_exercise("triton_gram_tile", solution=gram_tiles_solution,
                  wrong=lambda X: launch_gram_tiles(_gram_wrong_kernel(), X), checker=_check_gram_tiles,
                  description="Triton: one BLOCK x BLOCK tile of the Gram product X X^T, K in slices")

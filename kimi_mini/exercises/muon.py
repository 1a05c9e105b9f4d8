"""Exercises of notebook 02 (Muon): one Newton–Schulz step, and Moonlight's RMS-matching scale."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from kimi_mini.exercises import register_exercise
from kimi_mini.optim import NS_COEFFICIENTS, muon_update_scale, newton_schulz_step


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

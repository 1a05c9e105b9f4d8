"""Comparison helpers shared by the tests and the notebooks' "reference vs fast vs kernel" cells."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["max_rel_error", "assert_close"]


def max_rel_error(actual: Tensor, expected: Tensor) -> float:
    """‖a − e‖∞ / max(‖e‖∞, tiny), in fp32."""
    a, e = actual.detach().float(), expected.detach().float()
    return float((a - e).abs().max() / e.abs().max().clamp_min(1e-12))


def assert_close(actual: Tensor, expected: Tensor, rtol: float = 1e-5, atol: float = 1e-6, what: str = "") -> None:
    """fla-style check: ``‖a − e‖∞ ≤ atol + rtol·‖e‖∞`` (fp32), with a message that says by how much."""
    a, e = actual.detach().float(), expected.detach().float()
    assert a.shape == e.shape, f"{what}: shape {tuple(a.shape)} != {tuple(e.shape)}"
    err = (a - e).abs().max().item() if a.numel() else 0.0
    scale = e.abs().max().item() if e.numel() else 0.0
    assert err <= atol + rtol * scale, f"{what}: max abs error {err:.3e} > {atol:.1e} + {rtol:.1e}·{scale:.3e}"
    assert torch.isfinite(a).all(), f"{what}: non-finite values"

"""One ``impl=`` vocabulary for every operation that comes in several implementations.

- ``"naive"``  — the reference, straight from the paper's equations (loops and dense masks allowed);
- ``"torch"``  — the fast PyTorch path (SDPA for attention) that the CPU toy preset runs;
- ``"triton"`` — the Triton kernel in ``kimi_mini.kernels`` (CPU: Triton's interpreter);
- ``"auto"``   — ``"triton"`` when the data lives on a CUDA device, ``"torch"`` otherwise.

An operation that lacks one of them (Newton–Schulz has no separate reference) passes the subset it has.
"""

from __future__ import annotations

from torch import Tensor

__all__ = ["IMPLS", "check_impl", "resolve_impl"]

IMPLS = ("naive", "torch", "triton", "auto")


def check_impl(impl: object, available: tuple[str, ...] = IMPLS, name: str = "impl") -> str:
    """``impl`` itself when it is one of ``available`` (a subset of :data:`IMPLS`), else ``ValueError``."""
    if not isinstance(impl, str) or impl not in available:
        raise ValueError(f"{name}: expected one of {available}, got {impl!r}")
    return impl


def resolve_impl(impl: object, like: Tensor, available: tuple[str, ...] = IMPLS, name: str = "impl") -> str:
    """The concrete implementation to run: ``impl`` checked against ``available``, with ``"auto"``
    resolved from ``like``'s device (triton on CUDA, torch otherwise)."""
    impl = check_impl(impl, available, name)
    if impl == "auto":
        return "triton" if like.is_cuda and "triton" in available else "torch"
    return impl

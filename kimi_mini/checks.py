"""Argument checks for the public boundary: one ``ValueError`` that names the argument, its value and what
was expected — before any work is done (README, "Reliability")."""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["check_int", "check_number", "check_tensor", "describe"]


def describe(value: object) -> str:
    """A short description of ``value`` for an error message (tensors by dtype, shape and device)."""
    if isinstance(value, Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)} on {value.device}"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_int(name: str, value: object, lo: int | None = None, hi: int | None = None) -> int:
    """``value`` when it is an int (not a bool) in ``[lo, hi]``; ``ValueError`` otherwise."""
    ok = isinstance(value, int) and not isinstance(value, bool)
    ok = ok and (lo is None or value >= lo) and (hi is None or value <= hi)
    if not ok:
        rng = f" in [{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]" \
            if (lo is not None or hi is not None) else ""
        raise ValueError(f"{name}: expected an int{rng}, got {describe(value)}")
    return value


def check_number(name: str, value: object, lo: float = -math.inf, hi: float = math.inf, *,
                 lo_open: bool = False, hi_open: bool = False) -> float:
    """``float(value)`` when it is a finite real number in the interval; ``ValueError`` otherwise
    (NaN and ±inf are never valid hyper-parameters)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > lo if lo_open else value >= lo) and (value < hi if hi_open else value <= hi)
    if not ok:
        bounds = f"{'(' if lo_open or lo == -math.inf else '['}{lo}, {hi}{')' if hi_open or hi == math.inf else ']'}"
        raise ValueError(f"{name}: expected a finite number in {bounds}, got {describe(value)}")
    return float(value)


def check_tensor(name: str, value: object, *, dims: int | tuple[int, ...] | None = None,
                 kind: str | None = None, device: torch.device | None = None) -> Tensor:
    """``value`` when it is a tensor with ``dims`` dimensions, of ``kind`` (``"float"``: floating point;
    ``"int"``: an integer dtype) on ``device``; ``ValueError`` otherwise. A meta tensor is never data."""
    if not isinstance(value, Tensor):
        raise ValueError(f"{name}: expected a tensor, got {type(value).__name__}")
    if dims is not None:
        allowed = (dims,) if isinstance(dims, int) else dims
        if value.dim() not in allowed:
            raise ValueError(f"{name}: expected {' or '.join(map(str, allowed))} dimensions, got {describe(value)}")
    if kind == "float" and not value.is_floating_point():
        raise ValueError(f"{name}: expected a floating-point tensor, got {describe(value)}")
    if kind == "int" and (value.is_floating_point() or value.is_complex() or value.dtype == torch.bool):
        raise ValueError(f"{name}: expected an integer tensor, got {describe(value)}")
    if value.is_meta:
        raise ValueError(f"{name}: expected a tensor with data, got a meta tensor (shape only)")
    if device is not None and not _same_device(value.device, torch.device(device)):
        raise ValueError(f"{name}: expected a tensor on {device}, got {describe(value)}")
    return value


def _same_device(a: torch.device, b: torch.device) -> bool:
    return a.type == b.type and (a.index is None or b.index is None or a.index == b.index)

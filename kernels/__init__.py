"""Triton kernels for kimi-mini, installed as ``kimi_mini.kernels``.

**The one place that decides whether kernels are interpreted.** Without a CUDA GPU the kernels run in
Triton's CPU interpreter. ``TRITON_INTERPRET=1`` has to be in the environment before any ``@triton.jit``
definition executes, so it is set here, before any kernel module is imported (an explicit setting by
the user wins: ``TRITON_INTERPRET=0`` compiles even without a GPU, which is what the ahead-of-time
compile check in :mod:`kimi_mini.kernels.aot` does). Every kernel module reads :data:`INTERPRETED`.
Interpreter caveats: bf16 arithmetic is wrong (kernels upcast to fp32 after every load when
interpreted), ``libdevice`` and multi-config autotuning do not work, and it is slow — tests use tiny
shapes.

The input checks shared by every host wrapper live here too (:func:`check_tensor`, :func:`check_device`):
a compiled kernel handed a CPU tensor, or a tensor on another GPU than the current one, would fail
deep inside the launcher ("Pointer argument cannot be accessed from Triton") or read the wrong memory;
the wrappers raise a ``ValueError`` naming the argument instead.
"""

from __future__ import annotations

import os
import sys

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

INTERPRETED: bool = os.environ.get("TRITON_INTERPRET") == "1"
"""True when the kernels run in Triton's CPU interpreter (decided once, at import)."""

# Set by kimi_mini.kernels.aot.compile_only(): kernels are compiled for a GPU target but never launched,
# so tensors on any device (CPU, meta) may stand in for CUDA tensors.
COMPILE_ONLY: bool = False

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

if INTERPRETED and "triton" in sys.modules:
    import triton.language as _tl
    from triton.runtime.interpreter import InterpretedFunction as _Interpreted

    if not isinstance(_tl.standard.sum, _Interpreted):
        raise RuntimeError(
            "triton was imported before TRITON_INTERPRET=1 was set, so its kernels cannot run on the CPU. "
            "Import kimi_mini first (or export TRITON_INTERPRET=1) before anything imports triton."
        )


def dot_precision(dtype: torch.dtype) -> str:
    """``input_precision`` for every kernel's ``tl.dot`` (a ``PRECISION`` constexpr): fp32 inputs use
    ``"tf32x3"`` — three TF32 tensor-core products that recover fp32 accuracy (≈1e-6 relative), where
    plain ``"tf32"`` keeps 10 mantissa bits and breaks fp32 agreement with the references, and where
    ``"ieee"`` (scalar FMAs) spills tens of KB of registers per program at attention tile sizes
    (measured by ``kimi_mini.kernels.aot``). bf16/fp16 tiles go to the tensor cores as they are (the
    option only concerns fp32 inputs). The interpreter multiplies in fp32 whatever the option."""
    return "tf32x3" if dtype == torch.float32 else "tf32"


def default_device() -> str:
    """Where kernel inputs must live: ``"cpu"`` when interpreted, ``"cuda"`` when compiled."""
    return "cpu" if INTERPRETED else "cuda"


def check_device(name: str, t: torch.Tensor, like: torch.Tensor | None = None) -> None:
    """``ValueError`` naming ``name`` unless ``t`` can be handed to a kernel: on ``like``'s device, and —
    when kernels are compiled — a CUDA tensor on the current CUDA device."""
    if like is not None and t.device != like.device:
        raise ValueError(f"{name}: expected a tensor on {like.device} (the device of the other inputs), "
                         f"got {t.device}")
    if COMPILE_ONLY:
        return
    if t.device.type == "meta":
        raise ValueError(f"{name}: expected a tensor with data, got a meta tensor")
    if INTERPRETED:
        return  # the interpreter runs on host memory (it copies a CUDA tensor there and back)
    if t.device.type != "cuda":
        raise ValueError(f"{name}: expected a CUDA tensor — the kernels are compiled for the GPU here "
                         f"(TRITON_INTERPRET is off) — got a tensor on {t.device}; move it with .to('cuda')")
    current = torch.cuda.current_device()
    if t.device.index != current:
        raise ValueError(f"{name}: expected a tensor on the current CUDA device cuda:{current}, got {t.device}; "
                         f"launch inside `with torch.cuda.device({t.device.index}):`")


def check_tensor(name: str, t, *, ndim: int | None = None, dtypes: tuple | None = FLOAT_DTYPES,
                 like: torch.Tensor | None = None) -> None:
    """``ValueError`` naming ``name`` unless ``t`` is a tensor with ``ndim`` dims, a dtype in ``dtypes``,
    and a device a kernel can use (:func:`check_device`; same device as ``like``)."""
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if ndim is not None and t.dim() != ndim:
        raise ValueError(f"{name}: expected a {ndim}-d tensor, got shape {tuple(t.shape)}")
    if dtypes is not None and t.dtype not in dtypes:
        names = "/".join(str(d).replace("torch.", "") for d in dtypes)
        raise ValueError(f"{name}: expected dtype {names}, got {t.dtype}")
    check_device(name, t, like)

"""Triton kernels for kimi-mini, installed as ``kimi_mini.kernels``.

Without a CUDA GPU the kernels run in Triton's CPU interpreter. ``TRITON_INTERPRET=1`` has to be in
the environment before any ``@triton.jit`` definition executes, so it is set here, before any kernel
module is imported (an explicit setting by the user wins). Interpreter caveats: bf16 arithmetic is
wrong (kernels upcast to fp32 after every load), ``libdevice`` and multi-config autotuning do not work,
and it is slow — tests use tiny shapes.
"""

import os
import sys

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"

if INTERPRETED and "triton" in sys.modules:
    import triton.language as _tl
    from triton.runtime.interpreter import InterpretedFunction as _Interpreted

    if not isinstance(_tl.standard.sum, _Interpreted):
        raise RuntimeError(
            "triton was imported before TRITON_INTERPRET=1 was set, so its kernels cannot run on the CPU. "
            "Import kimi_mini first (or export TRITON_INTERPRET=1) before anything imports triton."
        )

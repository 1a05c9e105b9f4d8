"""kimi-mini: an educational reproduction of the Kimi (Moonshot AI) team's research.

Importing the package registers every model component (attention / FFN variants) by name.
"""

__version__ = "0.1.0"

import os as _os

import torch as _torch

# Without a GPU, Triton kernels run in its CPU interpreter, which must be switched on before triton is
# first imported (triton's own helpers such as tl.sum are @jit functions created at import time —
# and torch itself may import triton, e.g. when a model is built on the meta device).
if not _torch.cuda.is_available():
    _os.environ.setdefault("TRITON_INTERPRET", "1")

# Components: one line each, the module registers itself on import.
from . import (  # noqa: F401  (layers registers "mha" and "dense"; data its exercise)
    data,
    layers,
    mla,  # noqa: F401
    moba,  # noqa: F401
    moe,  # noqa: F401
    optim,  # noqa: F401  (optimizers and their exercises)
    qk_clip,  # noqa: F401
)
from .model import KimiConfig, KimiMini, count_params  # noqa: F401

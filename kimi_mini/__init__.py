"""kimi-mini: an educational reproduction of the Kimi (Moonshot AI) team's research.

Importing the package registers every model component (attention / FFN variants) and optimizer by name.

Imports run one way: topics (prompts/, rationale/, invariance/, agentic/, storywars/, fusion) → optim →
model parts (model, layers, mla, moe, moba, qk_clip) → harness (registry, impl, data, train, report,
presets, notebooks). ``exercises`` and ``bench`` import the library, never the reverse;
``tests/test_imports.py`` enforces it.
"""

__version__ = "0.1.0"

# First of all: kimi_mini.kernels decides, once, whether Triton kernels are interpreted (no GPU) and sets
# TRITON_INTERPRET before triton is imported by anyone (torch itself may import it, e.g. when a model is
# built on the meta device). It imports no kernel module and not triton itself.
from . import kernels as _kernels  # noqa: F401  (isort: skip — must run before the imports below)

# Model components: one import line each, the module registers itself ("mha"/"dense" in layers,
# "mla", "moba", "moe"); then the optimizers ("adamw", "muon", "muonclip") and the QK-Clip rules.
# Topics (kimi_mini.prompts, .invariance, ...) and exercises are imported on demand, never here.
from . import layers, mla, moba, moe, optim, qk_clip  # noqa: F401
from .model import KimiConfig, KimiMini, count_params  # noqa: F401

"""kimi-mini: an educational reproduction of the Kimi (Moonshot AI) team's research.

Importing the package registers every model component (attention / FFN variants) by name.
"""

__version__ = "0.1.0"

from . import layers  # noqa: F401  (registers "mha" and "dense")
from .model import KimiConfig, KimiMini, count_params  # noqa: F401

# Components: one line each, the module registers itself on import.

"""Name → builder registries for the model's swappable parts.

`KimiMini` never names a concrete attention or feed-forward class. It asks these registries, so adding
a component (MLA, MoBA, MoE, ...) is one new module plus one ``@register_*`` line — no edit of the model.

A builder is any callable ``builder(config, layer_idx) -> nn.Module``: usually the module class itself,
or a function when the choice depends on the layer (K2's dense first layers, MoBA's full-attention
last layers).

Contracts the model relies on:
- attention: ``forward(x [B, T, C], state: dict | None = None, start_pos: int = 0) -> [B, T, C]``;
  ``state`` is this layer's KV-cache dict when decoding (the module keeps whatever it needs in it).
- ffn: ``forward(x [B, T, C]) -> [B, T, C]``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from torch import nn

if TYPE_CHECKING:
    from kimi_mini.model import KimiConfig

Builder = Callable[["KimiConfig", int], nn.Module]

ATTENTION: dict[str, Builder] = {}
FFN: dict[str, Builder] = {}


def register_in(table: dict, kind: str, name: str) -> Callable:
    """Decorator factory shared by every name → builder table (here; optimizers in kimi_mini.optim)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"name: expected a non-empty string for the {kind} registry, got {name!r}")

    def decorator(builder):
        if name in table and table[name] is not builder:
            raise ValueError(f"name: {kind} {name!r} is already registered to {table[name]!r}")
        table[name] = builder
        return builder

    return decorator


def register_attention(name: str) -> Callable[[Builder], Builder]:
    """Decorator: make ``builder`` available as ``KimiConfig(attention=name)``."""
    return register_in(ATTENTION, "attention", name)


def register_ffn(name: str) -> Callable[[Builder], Builder]:
    """Decorator: make ``builder`` available as ``KimiConfig(ffn=name)``."""
    return register_in(FFN, "ffn", name)


def _lookup(table: dict[str, Builder], kind: str, name: str) -> Builder:
    if name not in table:
        raise ValueError(f"{kind}: unknown {kind} {name!r}; expected one of {sorted(table)}")
    return table[name]


def build_attention(config: KimiConfig, layer_idx: int) -> nn.Module:
    return _lookup(ATTENTION, "attention", config.attention)(config, layer_idx)


def build_ffn(config: KimiConfig, layer_idx: int) -> nn.Module:
    return _lookup(FFN, "ffn", config.ffn)(config, layer_idx)

"""Name → object registries: one helper for every table in the library.

:class:`Registry` is the one place where "register under a name" and "look a name up" are decided:
registering a *different* object under a taken name is an error (no silent overwrite), and an unknown
name is a ``ValueError`` that lists the valid ones. The model's swappable parts, the optimizers, the
QK-Clip rules and the benchmark topics each keep one ``Registry``.

The model's component tables
----------------------------
``KimiMini`` never names a concrete attention or feed-forward class. It asks :data:`ATTENTION` and
:data:`FFN`, so adding a component (MLA, MoBA, MoE, ...) is one new module plus one ``@register_*`` line
and one import line in ``kimi_mini/__init__.py`` — no edit of the model.

A builder is any callable ``builder(config, layer_idx) -> nn.Module``: usually the module class itself,
or a function when the choice depends on the layer (K2's dense first layers, MoBA's full-attention
last layers).

The whole contract a component must meet (nothing else is matched by name):

- attention: ``forward(x [B, T, C], state: dict | None = None, start_pos: int = 0) -> [B, T, C]``;
  ``state`` is this layer's KV-cache dict when decoding (the module keeps whatever it needs in it).
  For MuonClip it also needs a QK-Clip rule (``@register_qk_clip(ItsClass)`` in :mod:`kimi_mini.qk_clip`)
  and must record ``self.max_logit`` (per head) while ``self.track_max_logit`` is set.
- ffn: ``forward(x [B, T, C]) -> [B, T, C]``.
- both may declare, as class attributes,
  ``residual_projections: tuple[str, ...]`` — names of the weights that write into the residual
  stream (initialised with std / sqrt(2·n_layers), GPT-2 style; default: none), and
  ``non_muon_parameters: tuple[str, ...]`` — names of parameters that are *not* hidden matrices and so are
  trained by AdamW inside Muon (a router's bias, a gate's vector; default: every 2-D weight is a matrix).
  The model and the optimizer read these declarations; they never guess from a parameter's name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from torch import nn

if TYPE_CHECKING:
    from kimi_mini.model import KimiConfig

__all__ = ["Registry", "ATTENTION", "FFN", "register_attention", "register_ffn", "build_attention",
           "build_ffn", "register_in", "declared_parameters"]

T = TypeVar("T")


class Registry(Generic[T]):
    """A named table: ``@reg.register("name")`` adds, ``reg.get("name")`` looks up (``ValueError``
    listing the valid names otherwise). Registering the same object twice is a no-op (a module imported
    twice); a different object under a taken name is a ``ValueError``.

    >>> OPS = Registry("op")
    >>> @OPS.register("double")
    ... def double(x): return 2 * x
    >>> OPS.get("double")(21)
    42
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._table: dict[Any, T] = {}

    def register(self, name: Any) -> Callable[[T], T]:
        if isinstance(name, str) and not name:
            raise ValueError(f"name: expected a non-empty name for the {self.kind} registry, got {name!r}")
        if not isinstance(name, (str, type)):
            raise ValueError(f"name: expected a string (or a class) for the {self.kind} registry, got {name!r}")

        def decorator(obj: T) -> T:
            self.add(name, obj)
            return obj

        return decorator

    def add(self, name: Any, obj: T) -> None:
        if name in self._table and self._table[name] is not obj:
            raise ValueError(f"name: {self.kind} {name!r} is already registered to {self._table[name]!r}")
        self._table[name] = obj

    def pop(self, name: Any, default: Any = None) -> T | None:
        """Remove ``name`` (tests that register a throw-away entry clean up with this)."""
        return self._table.pop(name, default)

    def get(self, name: Any) -> T:
        if name not in self._table:
            raise ValueError(f"{self.kind}: unknown {self.kind} {name!r}; expected one of {self.names()}")
        return self._table[name]

    def names(self) -> list:
        return sorted(self._table, key=lambda k: k if isinstance(k, str) else k.__name__)

    def for_class(self, cls: type) -> T | None:
        """The entry registered for ``cls`` or its nearest base class (tables keyed by class)."""
        for base in cls.__mro__:
            if base in self._table:
                return self._table[base]
        return None

    def __contains__(self, name: Any) -> bool:
        return name in self._table

    def __getitem__(self, name: Any) -> T:
        return self.get(name)

    def __iter__(self) -> Iterator:
        return iter(self._table)

    def __len__(self) -> int:
        return len(self._table)

    def items(self):
        return self._table.items()

    def values(self):
        return self._table.values()

    def keys(self):
        return self._table.keys()

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(map(str, self.names()))})"


Builder = Callable[["KimiConfig", int], nn.Module]

ATTENTION: Registry[Builder] = Registry("attention")
FFN: Registry[Builder] = Registry("ffn")


def register_in(table: Registry, kind: str, name: str) -> Callable:
    """Kept for old callers: ``table.register(name)``."""
    return table.register(name)


def register_attention(name: str) -> Callable[[Builder], Builder]:
    """Decorator: make ``builder`` available as ``KimiConfig(attention=name)``."""
    return ATTENTION.register(name)


def register_ffn(name: str) -> Callable[[Builder], Builder]:
    """Decorator: make ``builder`` available as ``KimiConfig(ffn=name)``."""
    return FFN.register(name)


def build_attention(config: KimiConfig, layer_idx: int) -> nn.Module:
    return ATTENTION.get(config.attention)(config, layer_idx)


def build_ffn(config: KimiConfig, layer_idx: int) -> nn.Module:
    return FFN.get(config.ffn)(config, layer_idx)


def declared_parameters(model: nn.Module, declaration: str) -> set[int]:
    """``id``s of the parameters that ``model``'s modules declare under the class attribute ``declaration``
    (``"residual_projections"`` or ``"non_muon_parameters"``): each declared name is an attribute of the
    module — a submodule (all its parameters) or a parameter."""
    ids: set[int] = set()
    for module in model.modules():
        for attr in getattr(type(module), declaration, ()):
            target = getattr(module, attr, None)
            if isinstance(target, nn.Module):
                ids.update(id(p) for p in target.parameters())
            elif isinstance(target, nn.Parameter):
                ids.add(id(target))
            elif target is not None:
                raise ValueError(f"{declaration}: {type(module).__name__}.{attr} is neither a module nor a parameter")
    return ids

"""Named presets: one switch that scales every notebook from a CPU toy run to one GPU.

``toy``: CPU, fp32, every notebook in ≤ 90 s on 2 cores — enough to see the mechanism.
``gpu``: one H100/H200, bf16 autocast, minutes per notebook — closer to the papers' regimes.

Notebooks never hard-code sizes: they call ``P.pick(toy=..., gpu=...)`` so that both presets are
spelled out next to each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["Preset", "PRESETS", "get_preset"]


@dataclass(frozen=True)
class Preset:
    name: str
    device: str
    dtype: torch.dtype  # autocast dtype for training (fp32: none)
    description: str

    def pick(self, **choices: Any) -> Any:
        """The value for this preset: ``P.pick(toy=200, gpu=5000)``. Every preset must be given."""
        missing = sorted(set(PRESETS) - set(choices))
        unknown = sorted(set(choices) - set(PRESETS))
        if missing or unknown:
            raise ValueError(f"choices: expected exactly one value per preset {sorted(PRESETS)}; "
                             f"missing {missing}, unknown {unknown}")
        return choices[self.name]

    def check_device(self) -> None:
        """Fail early, with a clear message, when the preset's device is not here."""
        if self.device == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"preset {self.name!r} needs a CUDA GPU and none is available; use PRESET = 'toy'")

    def __repr__(self) -> str:
        return f"Preset({self.name!r}: {self.description})"


PRESETS: dict[str, Preset] = {
    "toy": Preset("toy", "cpu", torch.float32, "CPU, fp32, each notebook ≤ 90 s on 2 cores"),
    "gpu": Preset("gpu", "cuda", torch.bfloat16, "one H100/H200, bf16 autocast, minutes per notebook"),
}


def get_preset(name: str) -> Preset:
    """The preset called ``name``; ``ValueError`` listing the valid names otherwise."""
    if name not in PRESETS:
        raise ValueError(f"preset: unknown preset {name!r}; expected one of {sorted(PRESETS)}")
    return PRESETS[name]

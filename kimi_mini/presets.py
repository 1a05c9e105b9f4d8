"""Named presets: one switch that scales every notebook from a CPU toy run to one GPU.

``toy``: CPU, fp32, every notebook in ≤ 90 s on 2 cores — enough to see the mechanism.
``gpu``: one H100/H200, bf16 autocast, minutes per notebook — closer to the papers' regimes. It refuses a
GPU it was not sized for (compute capability below 8.0 — no bf16 — or under 40 GiB of memory): a free
Colab T4 (sm_75, 16 GB) runs the ``toy`` preset, on its CPU.

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
    min_capability: tuple[int, int] = (0, 0)  # CUDA compute capability the sizes assume (bf16: 8.0)
    min_memory_gib: float = 0.0

    def pick(self, **choices: Any) -> Any:
        """The value for this preset: ``P.pick(toy=200, gpu=5000)``. Every preset must be given."""
        missing = sorted(set(PRESETS) - set(choices))
        unknown = sorted(set(choices) - set(PRESETS))
        if missing or unknown:
            raise ValueError(f"choices: expected exactly one value per preset {sorted(PRESETS)}; "
                             f"missing {missing}, unknown {unknown}")
        return choices[self.name]

    def check_device(self) -> None:
        """Fail early, with a clear message, when the preset's device is not here or is not one the preset
        was sized for (``min_capability``, ``min_memory_gib``)."""
        if self.device != "cuda":
            return
        if not torch.cuda.is_available():
            raise RuntimeError(f"preset {self.name!r} needs a CUDA GPU and none is available; use PRESET = 'toy'")
        props = torch.cuda.get_device_properties(0)
        gib = props.total_memory / 2**30
        if (props.major, props.minor) < self.min_capability or gib < self.min_memory_gib:
            need = f"sm_{self.min_capability[0]}{self.min_capability[1]}+ with ≥ {self.min_memory_gib:.0f} GiB"
            raise RuntimeError(f"preset {self.name!r} is sized for {need} ({self.description}); this GPU is "
                               f"{props.name} (sm_{props.major}{props.minor}, {gib:.0f} GiB); use PRESET = 'toy'")

    def __repr__(self) -> str:
        return f"Preset({self.name!r}: {self.description})"


PRESETS: dict[str, Preset] = {
    "toy": Preset("toy", "cpu", torch.float32, "CPU, fp32, each notebook ≤ 90 s on 2 cores"),
    "gpu": Preset("gpu", "cuda", torch.bfloat16, "one H100/H200, bf16 autocast, minutes per notebook",
                  min_capability=(8, 0), min_memory_gib=40.0),
}


def get_preset(name: str) -> Preset:
    """The preset called ``name``; ``ValueError`` listing the valid names otherwise."""
    if name not in PRESETS:
        raise ValueError(f"preset: unknown preset {name!r}; expected one of {sorted(PRESETS)}")
    return PRESETS[name]

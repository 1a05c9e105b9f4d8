"""Test set-up: Triton's CPU interpreter when there is no GPU, and the `gpu` marker.

TRITON_INTERPRET must be set before any `@triton.jit` definition executes, i.e. before any kernel
module is imported — so here, at the very top, before torch or kimi_mini are imported.
"""

import os

try:
    import torch

    _has_cuda = torch.cuda.is_available()
except ImportError:  # pragma: no cover
    _has_cuda = False
if not _has_cuda:
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402


def pytest_collection_modifyitems(config, items):
    if _has_cuda:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


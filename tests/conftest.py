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


@pytest.fixture(autouse=True, scope="session")
def _one_intra_op_thread():
    """Test tensors are tiny: a second intra-op thread only spin-waits, and with two pytest workers on two
    cores it makes everything several times slower (`make test` also sets OMP_NUM_THREADS=1)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def device() -> str:
    """The device every kernel test puts its tensors on: "cuda" when the kernels are compiled, "cpu" when
    Triton interprets them — so a CPU tensor never reaches a compiled kernel (kimi_mini.kernels decides)."""
    from kimi_mini.kernels import default_device

    return default_device()

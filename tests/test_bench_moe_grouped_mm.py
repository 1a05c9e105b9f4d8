"""The MoE bench's ``torch._grouped_mm`` row: the guard (CUDA + bf16 only) and, where the op runs on the
CPU in fp32, the experts it computes equal the sorted torch path (values and gradients)."""

import pytest
import torch

from kimi_mini.bench.moe import experts_grouped_mm, grouped_mm_available
from kimi_mini.moe.experts import moe_experts


def test_guard_skips_the_row_without_a_cuda_gpu():
    assert not grouped_mm_available("cpu")
    assert not grouped_mm_available("meta")
    if not torch.cuda.is_available():
        assert not grouped_mm_available("cuda")


def test_grouped_mm_experts_equal_the_torch_path():
    if not hasattr(torch, "_grouped_mm"):
        pytest.skip("this PyTorch has no torch._grouped_mm")
    g = torch.Generator().manual_seed(0)
    N, d, h, E, k = 37, 16, 8, 6, 2
    x = torch.randn(N, d, generator=g)
    indices = torch.stack([torch.randperm(E - 1, generator=g)[:k] for _ in range(N)])  # expert 5: no rows
    weights = torch.rand(N, k, generator=g)
    w1, w3, w2 = (torch.randn(E, d, h, generator=g), torch.randn(E, d, h, generator=g),
                  torch.randn(E, h, d, generator=g))
    leaves = [t.clone().requires_grad_() for t in (x, w1, w3, w2)]
    try:
        got = experts_grouped_mm(leaves[0], indices, weights, *leaves[1:])
    except RuntimeError as e:  # the CPU kernel of some versions
        pytest.skip(f"torch._grouped_mm does not run on this CPU build: {e}")
    ref_leaves = [t.clone().requires_grad_() for t in (x, w1, w3, w2)]
    ref = moe_experts(ref_leaves[0], indices, weights, *ref_leaves[1:], impl="torch")
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)
    dy = torch.randn(N, d, generator=g)
    got.backward(dy)
    ref.backward(dy)
    for a, b in zip(leaves, ref_leaves, strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-4)

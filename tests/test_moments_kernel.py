"""The fused central-moment kernel (interpreter on CPU) against the loop reference: values and gradients."""

import pytest
import torch

from kimi_mini.kernels.moments import MAX_K, central_moments
from kimi_mini.rationale.cmd import central_moments_reference, cmd
from kimi_mini.testing import assert_close

# N not a multiple of the 64-row tile (and smaller than it), D not a multiple of the 64-column block
CASES = [(37, 5, 5, torch.float32), (130, 70, 3, torch.float16), (9, 3, 1, torch.float32),
         (65, 33, 2, torch.float32), (200, 17, 4, torch.float16), (71, 129, 5, torch.float32)]


@pytest.mark.parametrize("N,D,K,dtype", CASES, ids=[f"N{n}-D{d}-K{k}-{str(t)[6:]}" for n, d, k, t in CASES])
def test_central_moments_kernel_matches_reference(N, D, K, dtype, device):
    g = torch.Generator().manual_seed(N * 100 + K)
    x = (torch.randn(N, D, generator=g) * 0.8 + 0.3).to(device=device, dtype=dtype).requires_grad_()
    up = torch.randn(K, D, generator=g).to(device)
    got = central_moments(x, K)
    (dx,) = torch.autograd.grad(got, x, up)
    xr = x.detach().float().requires_grad_()
    want = central_moments_reference(xr, K)
    (dxr,) = torch.autograd.grad(want, xr, up)
    assert got.shape == (K, D) and got.dtype == torch.float32
    assert dx.dtype == dtype
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=2e-3, atol=2e-3)
    assert_close(got, want, **tol, what="moments")
    assert_close(dx.float(), dxr, **tol, what="dx")


def test_kernel_moments_of_a_known_distribution(device):
    # x = ±1 with equal counts: mean 0, c_k = 1 for even k, 0 for odd k
    x = torch.tensor([[1.0], [-1.0]] * 8, device=device)
    want = torch.tensor([0.0, 1.0, 0.0, 1.0, 0.0], device=device)
    assert_close(central_moments(x, 5)[:, 0], want, atol=1e-6, what="moments")


def test_cmd_triton_equals_torch_values_and_gradients(device):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(45, 12, generator=g).to(device).requires_grad_()
    y = (torch.randn(50, 12, generator=g) * 1.5 + 0.2).to(device).requires_grad_()
    out = {}
    for impl in ("torch", "triton"):
        val = cmd(x, y, 5, impl=impl)
        out[impl] = (val, *torch.autograd.grad(val, (x, y)))
    for a, b, name in zip(out["triton"], out["torch"], ("cmd", "dx", "dy"), strict=True):
        assert_close(a, b, rtol=1e-5, atol=1e-6, what=name)


def test_kernel_rejects_bad_input():
    with pytest.raises(ValueError, match="K"):
        central_moments(torch.randn(4, 3), 0)
    with pytest.raises(ValueError, match="K"):
        central_moments(torch.randn(4, 3), MAX_K + 1)
    with pytest.raises(ValueError, match="x"):
        central_moments(torch.randn(4, 3, 2), 3)
    with pytest.raises(ValueError, match="x"):
        central_moments(torch.randint(0, 3, (4, 3)), 3)

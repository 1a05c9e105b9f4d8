"""The RMSNorm kernel (interpreter on CPU) against the fp32 reference: outputs and both gradients."""

import pytest
import torch

from kimi_mini.kernels.rmsnorm import rmsnorm
from kimi_mini.layers import RMSNorm, rmsnorm_reference
from kimi_mini.testing import assert_close

CASES = [((3, 63), torch.float32), ((2, 5, 130), torch.float32), ((7, 64), torch.float16), ((4, 33), torch.float16)]


@pytest.mark.parametrize("shape,dtype", CASES, ids=[f"{'x'.join(map(str, s))}-{str(d)[6:]}" for s, d in CASES])
def test_rmsnorm_kernel_matches_reference(shape, dtype):
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(shape, generator=g) * 3).to(dtype).requires_grad_()
    w = (torch.rand(shape[-1], generator=g) + 0.5).to(dtype).requires_grad_()
    dy = torch.randn(shape, generator=g).to(dtype)
    y = rmsnorm(x, w, 1e-6)
    dx, dw = torch.autograd.grad(y, (x, w), dy)
    # reference in fp32 on the same (rounded) inputs
    xr, wr = x.detach().float().requires_grad_(), w.detach().float().requires_grad_()
    yr = rmsnorm_reference(xr, wr, 1e-6)
    dxr, dwr = torch.autograd.grad(yr, (xr, wr), dy.float())
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=2e-3, atol=2e-3)
    assert y.dtype == dtype
    assert_close(y, yr, **tol, what="y")
    assert_close(dx, dxr, **tol, what="dx")
    assert_close(dw, dwr, **dict(tol, rtol=tol["rtol"] * 4), what="dw")


def test_rmsnorm_layer_triton_impl_equals_torch_impl():
    torch.manual_seed(1)
    a, b = RMSNorm(48, impl="torch"), RMSNorm(48, impl="triton")
    with torch.no_grad():
        a.weight.uniform_(0.5, 1.5)
        b.weight.copy_(a.weight)
    x = torch.randn(2, 9, 48)
    assert_close(b(x), a(x), rtol=1e-5, what="layer output")


def test_rmsnorm_kernel_rejects_bad_weight():
    with pytest.raises(ValueError, match="weight"):
        rmsnorm(torch.randn(2, 8), torch.ones(7))
    with pytest.raises(ValueError, match="impl"):
        RMSNorm(8, impl="cuda")

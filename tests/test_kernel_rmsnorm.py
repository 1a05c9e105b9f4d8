"""The RMSNorm kernel (interpreter on CPU, compiled on a GPU) against the fp32 reference: outputs and both
gradients; the strided dg partial sums; empty shapes; bad inputs → ValueError naming the argument."""

import pytest
import torch

import kimi_mini.kernels as K
from kimi_mini.kernels import rmsnorm as R
from kimi_mini.kernels.rmsnorm import rmsnorm
from kimi_mini.layers import RMSNorm, rmsnorm_reference
from kimi_mini.testing import assert_close

CASES = [((3, 63), torch.float32), ((2, 5, 130), torch.float32), ((7, 64), torch.float16), ((4, 33), torch.float16)]


def _check(shape, dtype, device):
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(shape, generator=g) * 3).to(device, dtype).requires_grad_()
    w = (torch.rand(shape[-1], generator=g) + 0.5).to(device, dtype).requires_grad_()
    dy = torch.randn(shape, generator=g).to(device, dtype)
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


@pytest.mark.parametrize("shape,dtype", CASES, ids=[f"{'x'.join(map(str, s))}-{str(d)[6:]}" for s, d in CASES])
def test_rmsnorm_kernel_matches_reference(shape, dtype, device):
    _check(shape, dtype, device)


def test_backward_programs_stride_over_rows(monkeypatch, device):
    """dg is summed from a [programs, N] partial buffer, each program walking rows g, g + G, …: with 4
    programs for 11 rows (3, 3, 3, 2 rows each) the gradients still match."""
    monkeypatch.setattr(R, "MAX_BWD_PROGRAMS", 4)
    assert R.bwd_programs(11) == 4 and R.bwd_programs(3) == 3 and R.bwd_programs(0) == 1
    _check((11, 40), torch.float32, device)


def test_rmsnorm_layer_triton_impl_equals_torch_impl(device):
    torch.manual_seed(1)
    a, b = RMSNorm(48, impl="torch").to(device), RMSNorm(48, impl="triton").to(device)
    with torch.no_grad():
        a.weight.uniform_(0.5, 1.5)
        b.weight.copy_(a.weight)
    x = torch.randn(2, 9, 48, device=device)
    assert_close(b(x), a(x), rtol=1e-5, what="layer output")


@pytest.mark.parametrize("shape", [(0, 16), (2, 0, 16), (3, 0)], ids=str)
def test_empty_inputs_give_empty_outputs(shape, device):
    x = torch.randn(shape, device=device, requires_grad=True)
    w = torch.ones(shape[-1], device=device, requires_grad=True)
    y = rmsnorm(x, w)
    assert y.shape == x.shape
    dx, dw = torch.autograd.grad(y.sum(), (x, w), allow_unused=True)
    assert dx.shape == x.shape and torch.equal(dw, torch.zeros_like(w))


BAD = [
    ("x", lambda d: (torch.randn(2, 8, device=d).double(), torch.ones(8, device=d).double())),
    ("x", lambda d: ([1.0, 2.0], torch.ones(2, device=d))),
    ("x", lambda d: (torch.tensor(1.0, device=d), torch.ones(1, device=d))),
    ("x", lambda d: (torch.randn(2, 70000, device=d), torch.ones(70000, device=d))),
    ("weight", lambda d: (torch.randn(2, 8, device=d), torch.ones(7, device=d))),
    ("weight", lambda d: (torch.randn(2, 8, device=d), torch.ones(1, 8, device=d))),
    ("weight", lambda d: (torch.randn(2, 8, device=d), torch.ones(8, device=d, dtype=torch.int64))),
    ("weight", lambda d: (torch.randn(2, 8, device=d), torch.ones(8, device="meta"))),
]


@pytest.mark.parametrize("arg,make", BAD, ids=[f"{a}-{i}" for i, (a, _) in enumerate(BAD)])
def test_bad_inputs_name_the_argument(arg, make, device):
    with pytest.raises(ValueError, match=f"^{arg}:"):
        rmsnorm(*make(device))


@pytest.mark.parametrize("eps", [0.0, -1.0, float("nan"), float("inf"), "1e-6", True], ids=repr)
def test_bad_eps(eps, device):
    with pytest.raises(ValueError, match="^eps:"):
        rmsnorm(torch.randn(2, 8, device=device), torch.ones(8, device=device), eps)


def test_bad_impl():
    with pytest.raises(ValueError, match="impl"):
        RMSNorm(8, impl="cuda")


def test_cpu_tensor_to_a_compiled_kernel_is_a_value_error(monkeypatch):
    """With the kernels compiled (a GPU present), a CPU tensor must not reach the launcher."""
    monkeypatch.setattr(K, "INTERPRETED", False)
    with pytest.raises(ValueError, match="^x: expected a CUDA tensor"):
        rmsnorm(torch.randn(2, 8), torch.ones(8))

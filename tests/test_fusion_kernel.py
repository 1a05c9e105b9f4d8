"""The fused polynomial-fusion kernel (kernels/fusion.py; interpreter on CPU) against the naive order-P
tensor and the torch path: outputs and gradients, fp32 and fp16, odd sizes, P = 1..4, several tiles."""

import pytest
import torch

from kimi_mini.fusion import FusionClassifier, polynomial_fusion
from kimi_mini.kernels.fusion import polynomial_fusion as polynomial_fusion_triton
from kimi_mini.testing import assert_close

CASES = [  # (N, D, P, R, K, dtype)
    (37, 13, 1, 2, 5, torch.float32),
    (37, 13, 2, 3, 5, torch.float32),
    (21, 9, 3, 2, 3, torch.float32),
    (9, 7, 4, 2, 3, torch.float32),
    (37, 13, 2, 2, 5, torch.float16),
    (21, 9, 3, 2, 3, torch.float16),
    (67, 70, 2, 1, 33, torch.float32),  # 3 row tiles, 2 D chunks, 2 K tiles
]


@pytest.mark.parametrize("N,D,P,R,K,dtype", CASES,
                         ids=[f"N{c[0]}-D{c[1]}-P{c[2]}-R{c[3]}-K{c[4]}-{str(c[5])[6:]}" for c in CASES])
def test_kernel_matches_naive_values_and_gradients(N, D, P, R, K, dtype, device):
    g = torch.Generator().manual_seed(N + P)
    z = torch.randn(N, D, generator=g).to(device=device, dtype=dtype).requires_grad_()
    w = (torch.randn(P, R, D, K, generator=g) / D ** 0.5).to(device=device, dtype=dtype).requires_grad_()
    y = polynomial_fusion_triton(z, w)
    assert y.dtype == dtype and y.shape == (N, K)
    dy = torch.randn(N, K, generator=g).to(device=device, dtype=dtype)
    dz, dw = torch.autograd.grad(y, (z, w), dy)
    z64, w64 = z.detach().double().requires_grad_(), w.detach().double().requires_grad_()
    ref = polynomial_fusion(z64, w64, "naive" if D ** P <= 2 ** 16 else "torch")
    dz_ref, dw_ref = torch.autograd.grad(ref, (z64, w64), dy.double())
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-2, atol=1e-3)
    assert_close(y, ref, what="y", **tol)
    assert_close(dz, dz_ref, what="dz", **tol)
    assert_close(dw, dw_ref, what="dfactors", **tol)


def test_kernel_inside_the_classifier_equals_torch_path(device):
    torch.manual_seed(0)
    xs = [torch.randn(19, 4, device=device), torch.randn(19, 3, device=device)]
    a = FusionClassifier([4, 3], 3, fusion="polynomial", hidden=5, fused=6, order=3, rank=2, impl="torch").to(device)
    b = FusionClassifier([4, 3], 3, fusion="polynomial", hidden=5, fused=6, order=3, rank=2, impl="triton").to(device)
    b.load_state_dict(a.state_dict())
    ya, yb = a(xs), b(xs)
    assert_close(yb, ya, rtol=1e-5)
    ga = torch.autograd.grad(ya.square().sum(), a.fusion.factors)[0]
    gb = torch.autograd.grad(yb.square().sum(), b.fusion.factors)[0]
    assert_close(gb, ga, rtol=1e-5)


def test_kernel_rejects_bad_input(device):
    z, w = torch.randn(5, 4, device=device), torch.randn(2, 2, 4, 3, device=device)
    with pytest.raises(ValueError, match="factors"):
        polynomial_fusion_triton(z, torch.randn(2, 2, 5, 3, device=device))  # D mismatch
    with pytest.raises(ValueError, match="factors"):
        polynomial_fusion_triton(z, torch.randn(5, 2, 4, 3, device=device))  # P > 4
    with pytest.raises(ValueError, match="factors"):
        polynomial_fusion_triton(z, w.half())  # dtype mismatch
    with pytest.raises(ValueError, match="z"):
        polynomial_fusion_triton(torch.randn(4, 5, device=device).T, w)  # not contiguous
    with pytest.raises(ValueError, match="z"):
        polynomial_fusion_triton(z.long(), w)
    with pytest.raises(ValueError, match="z"):
        polynomial_fusion_triton(torch.randn(5, 4, device="meta"), w.to("meta"))

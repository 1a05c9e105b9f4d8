"""The Newton–Schulz Triton kernels (kernels/newton_schulz.py) against torch: X·Xᵀ on upper tiles,
mirrored (bitwise symmetric), the fused b·A + c·A·A, and a whole NS5 / Muon step with impl="triton".
In the CPU interpreter: fp32 and fp16, tiny shapes; bf16 on a GPU only. Tensors come from the ``device``
fixture; every comparison uses the tolerance of the dtype it computes in (``newton_schulz`` defaults to
bf16 on CUDA, so the fp32 comparisons pass ``dtype=torch.float32``). Empty shapes and bad inputs too."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import kimi_mini.kernels as K
from kimi_mini.kernels import newton_schulz as nsk
from kimi_mini.kernels.newton_schulz import newton_schulz_step_triton, ns_gram, ns_poly, ns_update
from kimi_mini.optim import NS_COEFFICIENTS, Muon, newton_schulz, newton_schulz_step
from kimi_mini.testing import assert_close

TOL = {torch.float32: dict(rtol=1e-5, atol=1e-6), torch.float16: dict(rtol=2e-3, atol=1e-3),
       torch.bfloat16: dict(rtol=2e-2, atol=1e-2)}
DTYPES = [torch.float32, torch.float16]
dtype_id = lambda d: str(d).replace("torch.", "")  # noqa: E731

# (batch, m, k, block): block 16 with m = 40 gives 3×3 tiles (6 launched), the last one ragged
CASES = [(1, 40, 70, 16), (2, 17, 33, 16), (1, 3, 20, None), (3, 16, 16, None)]
case_id = lambda c: f"b{c[0]}-m{c[1]}-k{c[2]}-blk{c[3]}"  # noqa: E731


DEVICE = None  # set for every test from the conftest's `device` fixture


@pytest.fixture(autouse=True)
def _device(device):
    global DEVICE
    DEVICE = device


def rand(*shape, dtype, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(DEVICE, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_gram_matches_torch_and_is_bitwise_symmetric(case, dtype):
    batch, m, k, block = case
    X = rand(batch, m, k, dtype=dtype) / k**0.5
    C = ns_gram(X, block)
    assert C.shape == (batch, m, m) and C.dtype == dtype
    assert_close(C, X.float() @ X.float().mT, **TOL[dtype], what="X·Xᵀ")
    assert torch.equal(C, C.mT), "X·Xᵀ from the kernel must be exactly symmetric"


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_poly_matches_torch_and_is_bitwise_symmetric(case, dtype):
    batch, m, k, block = case
    X = rand(batch, m, k, dtype=torch.float32, seed=1) / k**0.5
    A = (X @ X.mT).to(dtype)
    A = torch.triu(A) + torch.triu(A, 1).mT  # exactly symmetric input
    b, c = NS_COEFFICIENTS[1:]
    out = ns_poly(A, b, c, block)
    Af = A.float()
    assert_close(out, b * Af + c * Af @ Af, **TOL[dtype], what="b·A + c·A·A")
    assert torch.equal(out, out.mT)


def test_kernel_step_matches_reference_step():
    X = rand(2, 24, 40, dtype=torch.float32, seed=2) / 40**0.5
    assert_close(newton_schulz_step_triton(X, NS_COEFFICIENTS, block=16), newton_schulz_step(X), rtol=1e-5,
                 atol=1e-6, what="one NS step")


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("shape", [(1, 40, 70), (2, 17, 150), (1, 3, 5)], ids=str)
def test_update_matches_torch(shape, dtype):
    batch, m, n = shape
    X = rand(batch, m, n, dtype=dtype, seed=4) / n**0.5
    B = rand(batch, m, m, dtype=dtype, seed=5) / m**0.5
    assert_close(ns_update(B, X, 3.4445, block=16), 3.4445 * X.float() + B.float() @ X.float(), **TOL[dtype],
                 what="a·X + B·X")


def test_a_step_is_three_launches_on_a_reused_workspace(monkeypatch):
    from triton.runtime.jit import KernelInterface

    launched = []
    getitem = KernelInterface.__getitem__

    def counting(self, grid):
        launched.append(getattr(self, "__name__", str(self)))
        return getitem(self, grid)

    monkeypatch.setattr(KernelInterface, "__getitem__", counting)
    X = rand(2, 24, 40, dtype=torch.float32, seed=6) / 40**0.5
    Y = newton_schulz_step_triton(X, NS_COEFFICIENTS, block=16)
    assert launched == ["_ns_gram_fwd_kernel", "_ns_poly_fwd_kernel", "_ns_update_fwd_kernel"], launched
    A, _ = nsk._workspace(2, 24, torch.float32, X.device)
    newton_schulz_step_triton(Y, NS_COEFFICIENTS, block=16)
    assert nsk._workspace(2, 24, torch.float32, X.device)[0].data_ptr() == A.data_ptr()  # not reallocated


@pytest.mark.parametrize("n_tiles", [1, 5, 20])
def test_upper_tiles_in_grouped_order_cover_each_upper_tile_once(n_tiles):
    i, j = (t.cpu().tolist() for t in nsk._upper_tiles(n_tiles, "cpu"))
    assert sorted(zip(i, j, strict=True)) == [(a, b) for a in range(n_tiles) for b in range(a, n_tiles)]
    groups = [a // nsk.GROUP for a in i]
    assert groups == sorted(groups)  # one group of row blocks after the other, each column by column
    assert all(j[t] <= j[t + 1] for t in range(len(j) - 1) if groups[t] == groups[t + 1])


NS_TOL = {torch.float32: dict(rtol=1e-4, atol=1e-5), torch.float16: dict(rtol=2e-2, atol=1e-2),
          torch.bfloat16: dict(rtol=3e-2, atol=3e-2)}  # five steps: one step's rounding, amplified


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("shape", [(24, 40), (40, 24), (2, 9, 20)], ids=str)
def test_newton_schulz_triton_equals_torch(shape, dtype):
    G = rand(*shape, dtype=torch.float32, seed=3)
    out = newton_schulz(G, impl="triton", dtype=dtype)
    ref = newton_schulz(G, impl="torch", dtype=torch.float32)
    assert out.dtype == G.dtype
    assert_close(out, ref, **NS_TOL[dtype], what=f"NS5 triton ({dtype_id(dtype)}) vs torch fp32")


def test_newton_schulz_triton_fp16():
    G = rand(16, 48, dtype=torch.float16, seed=4)
    out = newton_schulz(G, impl="triton", dtype=torch.float16)
    ref = newton_schulz(G.float(), impl="torch", dtype=torch.float32)
    assert out.dtype == torch.float16
    assert_close(out, ref, **NS_TOL[torch.float16], what="NS5 fp16 kernel vs fp32 torch")


def test_muon_with_triton_newton_schulz():
    W = rand(20, 36, dtype=torch.float32, seed=5)
    G = rand(20, 36, dtype=torch.float32, seed=6)
    a, b = nn.Parameter(W.clone()), nn.Parameter(W.clone())
    a.grad, b.grad = G.clone(), G.clone()
    Muon([a], lr=0.1, impl="triton").step()
    Muon([b], lr=0.1, impl="torch").step()
    # the same compute dtype on both sides (bf16 on CUDA): its tolerance
    tol = NS_TOL[torch.float32] if DEVICE == "cpu" else NS_TOL[torch.bfloat16]
    assert_close(a.detach(), b.detach(), **tol, what="Muon step, triton vs torch NS")


BAD = [
    ("X", lambda: ns_gram(torch.randn(5, device=DEVICE))),
    ("X", lambda: ns_gram(torch.randint(0, 3, (4, 4), device=DEVICE))),
    ("X", lambda: ns_gram(torch.randn(4, 4, device=DEVICE).double())),
    ("X", lambda: ns_gram("X")),
    ("X", lambda: ns_gram(torch.randn(4, 4, device="meta"))),
    ("A", lambda: ns_poly(torch.randn(4, 5, device=DEVICE), 1.0, 1.0)),
    ("A", lambda: ns_poly(torch.randn(4, device=DEVICE), 1.0, 1.0)),
    ("b", lambda: ns_poly(torch.eye(4, device=DEVICE), float("nan"), 1.0)),
    ("c", lambda: ns_poly(torch.eye(4, device=DEVICE), 1.0, "1")),
    ("block", lambda: ns_gram(torch.randn(4, 4, device=DEVICE), block=24)),
    ("block", lambda: ns_gram(torch.randn(4, 4, device=DEVICE), block=8)),
    ("block", lambda: ns_gram(torch.randn(4, 4, device=DEVICE), block=16.0)),
]


@pytest.mark.parametrize("arg,call", BAD, ids=[f"{a}-{i}" for i, (a, _) in enumerate(BAD)])
def test_kernel_bad_input_names_the_argument(arg, call):
    with pytest.raises(ValueError, match=f"^{arg}:"):
        call()


@pytest.mark.parametrize("shape", [(0, 8), (3, 0), (0, 0), (0, 4, 6)], ids=str)
def test_empty_shapes(shape):
    X = torch.randn(shape, device=DEVICE)
    C = ns_gram(X)
    assert C.shape == (*shape[:-1], shape[-2]) and torch.equal(C, torch.zeros_like(C))  # X·Xᵀ of [m, 0] is 0
    P = ns_poly(C, 2.0, 3.0)
    assert P.shape == C.shape and torch.equal(P, torch.zeros_like(P))
    assert newton_schulz_step_triton(X, NS_COEFFICIENTS).shape == X.shape


def test_cpu_tensor_to_a_compiled_kernel_is_a_value_error(monkeypatch):
    monkeypatch.setattr(K, "INTERPRETED", False)
    with pytest.raises(ValueError, match="^X: expected a CUDA tensor"):
        ns_gram(torch.randn(4, 4))


@pytest.mark.gpu
@pytest.mark.parametrize("n", [256, 1000], ids=lambda n: f"n{n}")
def test_bf16_on_gpu(n):
    X = rand(n, 2 * n, dtype=torch.bfloat16, seed=7) / (2 * n) ** 0.5
    C = ns_gram(X)
    assert_close(C, X.float() @ X.float().mT, **TOL[torch.bfloat16], what="bf16 X·Xᵀ")
    assert torch.equal(C, C.mT)
    G = rand(n, 2 * n, dtype=torch.float32, seed=8)
    assert_close(newton_schulz(G, impl="triton", dtype=torch.bfloat16),
                 newton_schulz(G, impl="torch", dtype=torch.float32), **NS_TOL[torch.bfloat16],
                 what="bf16 NS5 triton vs fp32 torch")

"""The fused log-prob kernel (interpreter on CPU) against log_softmax().gather() and F.cross_entropy:
values and gradients, fp32 and fp16, V not a multiple of the block, several chunks per row, ignored rows."""

import pytest
import torch
import torch.nn.functional as F

from kimi_mini.kernels.logprob import cross_entropy, token_logprobs
from kimi_mini.testing import assert_close

# (N, V, block_v, dtype): block_v=None is the default chunk (one chunk here); 16/32 force several chunks
# with a ragged last one (V = 131 = 8·16 + 3, 200 = 6·32 + 8)
CASES = [(7, 131, 16, torch.float32), (5, 200, 32, torch.float32), (9, 63, None, torch.float32),
         (6, 131, 16, torch.float16), (4, 257, None, torch.float16), (1, 1, None, torch.float32)]


def _reference(x: torch.Tensor, t: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    keep = t != ignore_index
    lp = torch.log_softmax(x.float(), -1).gather(1, torch.where(keep, t, 0)[:, None])[:, 0]
    return torch.where(keep, lp, torch.zeros_like(lp))


def _inputs(N, V, dtype, device, seed=0, ignore=()):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(N, V, generator=g) * 4).to(device=device, dtype=dtype).requires_grad_()
    t = torch.randint(0, V, (N,), generator=g)
    for i in ignore:
        t[i] = -100
    return x, t.to(device)


@pytest.mark.parametrize("N,V,block_v,dtype", CASES,
                         ids=[f"N{n}-V{v}-b{b}-{str(d)[6:]}" for n, v, b, d in CASES])
def test_token_logprobs_match_log_softmax_gather(N, V, block_v, dtype, device):
    x, t = _inputs(N, V, dtype, device, ignore=(0,) if N > 2 else ())
    dy = torch.randn(N, generator=torch.Generator().manual_seed(1)).to(device)
    lp = token_logprobs(x, t, block_v=block_v)
    (dx,) = torch.autograd.grad(lp, x, dy)
    xr = x.detach().float().requires_grad_()
    lr = _reference(xr, t)
    (dxr,) = torch.autograd.grad(lr, xr, dy)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=2e-3, atol=2e-3)
    assert lp.dtype == torch.float32 and dx.dtype == dtype
    assert_close(lp, lr, **tol, what="log p(target)")
    assert_close(dx.float(), dxr, **tol, what="d logits")
    if N > 2:
        assert lp[0] == 0 and bool((dx[0] == 0).all()), "an ignored row has log p 0 and no gradient"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["float32", "float16"])
def test_cross_entropy_matches_torch_with_ignored_rows(dtype, device):
    x, t = _inputs(11, 150, dtype, device, seed=3, ignore=(2, 5, 9))
    loss = cross_entropy(x, t, block_v=64)
    (dx,) = torch.autograd.grad(loss, x)
    xr = x.detach().float().requires_grad_()
    ref = F.cross_entropy(xr, t, ignore_index=-100)
    (dxr,) = torch.autograd.grad(ref, xr)
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=2e-3, atol=1e-4)
    assert_close(loss, ref, **tol, what="mean CE")
    assert_close(dx.float(), dxr, **tol, what="d logits")


def test_large_logits_do_not_overflow(device):
    # exp(1000) overflows fp32: the online max has to be subtracted before exponentiating
    x = torch.tensor([[1000.0, 999.0, -1000.0] + [0.0] * 40, [-5.0] * 43], device=device)
    t = torch.tensor([1, 42], device=device)
    lp = token_logprobs(x, t, block_v=16)
    assert bool(torch.isfinite(lp).all())
    # fp32 resolves 1000 to ~6e-5, so the tolerance is relative to the logits' scale, not to log p's
    assert_close(lp, _reference(x, t), rtol=0, atol=1000 * 2**-22, what="log p")


def test_custom_ignore_index_and_strided_rows(device):
    base = torch.randn(6, 90, device=device)
    x = base[:, :70]  # row stride 90, last dim contiguous
    t = torch.tensor([3, 0, 69, 7, 0, 12], device=device)
    assert_close(token_logprobs(x, t, ignore_index=0, block_v=32), _reference(x, t, ignore_index=0),
                 rtol=1e-5, what="log p with ignore_index=0")


def test_bad_inputs_raise_value_error_naming_the_argument(device):
    x = torch.randn(4, 10, device=device)
    zeros = torch.zeros(4, dtype=torch.long, device=device)
    with pytest.raises(ValueError, match="targets"):
        token_logprobs(x, torch.tensor([0, 1, 2], device=device))
    with pytest.raises(ValueError, match="targets"):
        token_logprobs(x, torch.tensor([0, 1, 2, 10], device=device))
    with pytest.raises(ValueError, match="targets"):
        token_logprobs(x, torch.zeros(4, device=device))
    with pytest.raises(ValueError, match="logits"):
        token_logprobs(torch.randn(4, 10, 2, device=device), zeros)
    with pytest.raises(ValueError, match="logits"):
        token_logprobs(torch.randn(10, 4, device=device).t(), zeros)
    with pytest.raises(ValueError, match="logits"):
        token_logprobs(x.double(), zeros)
    with pytest.raises(ValueError, match="block_v"):
        token_logprobs(x, zeros, block_v=24)


def test_rank_classify_triton_impl_equals_torch_impl(device):
    from kimi_mini.model import KimiConfig, KimiMini
    from kimi_mini.prompts.rank import rank_classify

    torch.manual_seed(0)
    model = KimiMini(KimiConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64, max_seq_len=64)).to(device)
    prompts, options = ["Nice? great fun =>", "Is it bad? awful =>"], [["yes", "no"], ["yes", "no", "maybe"]]
    p_torch, s_torch = rank_classify(model, prompts, options, impl="torch")
    p_tri, s_tri = rank_classify(model, prompts, options, impl="triton")
    assert torch.equal(p_torch, p_tri)
    for a, b in zip(s_tri, s_torch, strict=True):
        assert_close(a, b, rtol=1e-5, atol=1e-5, what="option scores")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
def test_kernel_on_gpu_at_k2_vocabulary(dtype):
    g = torch.Generator(device="cuda").manual_seed(0)
    x = (torch.randn(64, 163840, device="cuda", generator=g) * 2).to(dtype).requires_grad_()
    t = torch.randint(0, 163840, (64,), device="cuda", generator=g)
    t[3] = -100
    lp = token_logprobs(x, t)
    (dx,) = torch.autograd.grad(lp.sum(), x)
    xr = x.detach().float().requires_grad_()
    lr = _reference(xr, t)
    (dxr,) = torch.autograd.grad(lr.sum(), xr)
    tol = dict(rtol=1e-5, atol=1e-4) if dtype == torch.float32 else dict(rtol=1e-2, atol=1e-2)
    assert_close(lp, lr, **tol, what="log p")
    assert_close(dx.float(), dxr, **tol, what="d logits")

"""Triton flash attention with max logit vs PyTorch SDPA and a naive max logit (interpreter on CPU,
compiled on a GPU: tensors come from the ``device`` fixture).

Odd lengths (63, 130) leave partial blocks; GQA, t_q < t_k (decoding) and MLA's D_qk ≠ D_v are covered;
bad inputs raise ValueError naming the argument; empty inputs give empty outputs.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import kimi_mini.kernels as K
from kimi_mini.kernels.flash_attention import flash_attention, flash_attention_reference
from kimi_mini.testing import assert_close

TOL = {torch.float32: dict(rtol=2e-5, atol=1e-6), torch.float16: dict(rtol=3e-3, atol=1e-3),
       torch.bfloat16: dict(rtol=2e-2, atol=1e-2)}

CASES = [
    # B, H, H_kv, t_q, t_k, D_qk, D_v
    pytest.param((2, 2, 2, 63, 63, 16, 16), id="mha-T63"),
    pytest.param((1, 2, 2, 130, 130, 32, 32), id="mha-T130"),
    pytest.param((1, 4, 2, 63, 63, 16, 16), id="gqa-T63"),
    pytest.param((1, 2, 1, 130, 130, 24, 16), id="mla-like-dqk24-dv16-T130"),
    pytest.param((2, 2, 2, 5, 70, 16, 16), id="decode-tq5-tk70"),
    pytest.param((1, 1, 1, 70, 200, 16, 16), id="tq70-tk200"),  # several unmasked key blocks, then the band
]


def _inputs(B, H, H_kv, t_q, t_k, D_qk, D_v, dtype, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, t_q, D_qk, generator=g).to(device, dtype).requires_grad_(True)
    k = torch.randn(B, H_kv, t_k, D_qk, generator=g).to(device, dtype).requires_grad_(True)
    v = torch.randn(B, H_kv, t_k, D_v, generator=g).to(device, dtype).requires_grad_(True)
    return q, k, v


def _sdpa(q, k, v):
    """PyTorch's attention in fp32 (the queries are the last t_q of the t_k positions)."""
    t_q, t_k = q.shape[2], k.shape[2]
    mask = torch.arange(t_k)[None, :] <= torch.arange(t_q)[:, None] + (t_k - t_q)
    return F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask.to(q.device),
                                          enable_gqa=q.shape[1] != k.shape[1])


def _naive_max_logit(q, k, scale):
    """max over causal pairs of scale·q·k per (batch, head), one query row at a time."""
    B, H, t_q, _ = q.shape
    rep, off = H // k.shape[1], k.shape[2] - t_q
    kf = k.float().repeat_interleave(rep, 1)
    out = torch.full((B, H), float("-inf"))
    for i in range(t_q):
        row = (q[:, :, i : i + 1].float() @ kf[:, :, : i + off + 1].transpose(-1, -2)) * scale  # [B, H, 1, j]
        out = torch.maximum(out, row.amax(dim=(-1, -2)).cpu())
    return out


def _check(case, dtype, device="cpu"):
    q, k, v = _inputs(*case, dtype, device)
    out, max_logit = flash_attention(q, k, v)
    ref = _sdpa(q, k, v)
    assert out.dtype == dtype and max_logit.dtype == torch.float32 and max_logit.shape == q.shape[:2]
    assert_close(out, ref, **TOL[dtype], what="out vs SDPA")
    scale = q.shape[-1] ** -0.5
    assert_close(max_logit.cpu(), _naive_max_logit(q, k, scale), **TOL[torch.float32],
                 what="max logit vs naive")

    do = torch.randn_like(out)
    grads = torch.autograd.grad(out, (q, k, v), do)
    ref_grads = torch.autograd.grad(ref, (q, k, v), do.float())
    for name, g, rg in zip("qkv", grads, ref_grads, strict=True):
        assert g.dtype == dtype
        assert_close(g, rg, rtol=TOL[dtype]["rtol"] * 3, atol=TOL[dtype]["atol"] * 3, what=f"d{name} vs SDPA")


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
def test_matches_sdpa_and_naive_max_logit(case, dtype, device):
    _check(case, dtype, device)


def test_bf16_in_the_interpreter():
    """The kernels upcast every load to fp32 when interpreted, so bf16 inputs are right on a CPU too."""
    if torch.cuda.is_available():
        pytest.skip("covered by test_bf16_on_gpu")
    _check((1, 4, 2, 63, 63, 16, 16), torch.bfloat16)


@pytest.mark.gpu
@pytest.mark.parametrize("case", CASES)
def test_bf16_on_gpu(case):
    _check(case, torch.bfloat16, device="cuda")


def test_reference_agrees_with_sdpa(device):
    q, k, v = _inputs(1, 4, 2, 9, 20, 8, 6, torch.float32, device)
    out, m = flash_attention_reference(q, k, v)
    assert_close(out, _sdpa(q, k, v), rtol=1e-5, what="reference vs SDPA")
    assert_close(m, _naive_max_logit(q, k, 8**-0.5).to(m.device), rtol=1e-6, what="reference max logit")


def test_max_logit_is_causal(device):
    """A huge logit between query 0 and key 5 (in the future) must not count."""
    q = torch.zeros(1, 1, 8, 16, device=device)
    k = torch.zeros(1, 1, 8, 16, device=device)
    q[0, 0, 0, 0] = 30.0
    k[0, 0, 5, 0] = 30.0
    v = torch.randn(1, 1, 8, 16, device=device)
    _, m = flash_attention(q, k, v, scale=1.0)
    assert float(m) == 0.0
    q[0, 0, 6, 0] = 2.0  # query 6 sees key 5: 2·30 = 60
    _, m = flash_attention(q, k, v, scale=1.0)
    assert float(m) == pytest.approx(60.0, rel=1e-6)  # base-2 round trip: last-bit rounding


def test_custom_scale(device):
    q, k, v = _inputs(1, 2, 2, 40, 40, 16, 16, torch.float32, device)
    out, m = flash_attention(q, k, v, scale=0.5)
    ref, ref_m = flash_attention_reference(q, k, v, scale=0.5)
    assert_close(out, ref, rtol=2e-5, what="out, scale 0.5")
    assert_close(m, ref_m, rtol=1e-6, what="max logit, scale 0.5")


def _t(*shape, dtype=torch.float32, device="cpu"):
    return torch.randn(*shape, device=device).to(dtype)


BAD = [  # (argument named in the error, q k v builder, message fragment)
    ("q", lambda d: (_t(2, 3, 4, device=d), _t(2, 1, 3, 4, device=d), _t(2, 1, 3, 4, device=d)), "expected a"),
    ("q", lambda d: ("q", _t(1, 2, 4, 8, device=d), _t(1, 2, 4, 8, device=d)), "expected a"),
    ("k", lambda d: (_t(1, 3, 4, 8, device=d), _t(1, 2, 4, 8, device=d), _t(1, 2, 4, 8, device=d)), "H_kv dividing"),
    ("q", lambda d: (_t(1, 2, 6, 8, device=d), _t(1, 2, 4, 8, device=d), _t(1, 2, 4, 8, device=d)), "t_q <= t_k"),
    ("k, v", lambda d: (_t(1, 2, 4, 8, device=d), _t(1, 2, 4, 6, device=d), _t(1, 2, 4, 8, device=d)), "expected"),
    ("k, v", lambda d: (_t(1, 2, 4, 8, device=d), _t(1, 2, 4, 8, device=d), _t(1, 2, 5, 8, device=d)), "expected"),
    ("q", lambda d: (_t(1, 2, 4, 8, dtype=torch.float64, device=d),) * 3, "dtype"),
    ("q", lambda d: (torch.ones(1, 2, 4, 8, dtype=torch.int32, device=d),) * 3, "dtype"),
    ("q, k, v", lambda d: (_t(1, 2, 4, 8, device=d), _t(1, 2, 4, 8, dtype=torch.float16, device=d),
                           _t(1, 2, 4, 8, device=d)), "one dtype"),
    ("k", lambda d: (_t(1, 2, 4, 8, device=d), _t(1, 2, 4, 8, device="meta"), _t(1, 2, 4, 8, device=d)), "device"),
    ("k", lambda d: (_t(1, 2, 4, 8, device=d), _t(1, 0, 4, 8, device=d), _t(1, 0, 4, 8, device=d)), "H_kv"),
]


@pytest.mark.parametrize("arg,make,match", BAD, ids=[f"{a.replace(', ', '')}-{i}" for i, (a, _, _) in enumerate(BAD)])
def test_bad_inputs_name_the_argument(arg, make, match, device):
    with pytest.raises(ValueError, match=f"^{arg}: .*{match}"):
        flash_attention(*make(device))


@pytest.mark.parametrize("scale", [0.0, -1.0, float("nan"), float("inf"), "0.5"], ids=repr)
def test_bad_scale(scale, device):
    q = torch.randn(1, 1, 4, 8, device=device)
    with pytest.raises(ValueError, match="^scale:"):
        flash_attention(q, q, q, scale=scale)


def test_cpu_tensor_to_a_compiled_kernel_is_a_value_error(monkeypatch):
    monkeypatch.setattr(K, "INTERPRETED", False)
    q = torch.randn(1, 1, 4, 8)
    with pytest.raises(ValueError, match="^q: expected a CUDA tensor"):
        flash_attention(q, q, q)


def test_empty_query_and_batch(device):
    """t_q = 0 or B = 0: empty outputs (max logit -inf: no pair), gradients of the right shapes."""
    for B, t_q in ((0, 4), (1, 0)):
        q = torch.randn(B, 2, t_q, 8, device=device, requires_grad=True)
        k = torch.randn(B, 2, 4, 8, device=device, requires_grad=True)
        out, m = flash_attention(q, k, k)
        assert out.shape == (B, 2, t_q, 8) and m.shape == (B, 2)
        assert bool((m == float("-inf")).all())
        dq, dk = torch.autograd.grad(out.sum(), (q, k))
        assert dq.shape == q.shape and torch.equal(dk, torch.zeros_like(k))


@pytest.mark.parametrize("n_kv_heads", [None, 2], ids=["mha", "gqa"])
def test_multihead_attention_triton_impl(n_kv_heads, device):
    """``attention_options={"impl": "triton"}`` in KimiMini: same logits, gradients and max logits as SDPA,
    and KV-cache decoding still agrees."""
    from kimi_mini import KimiConfig, KimiMini
    from kimi_mini.qk_clip import max_logits, track_max_logits

    torch.manual_seed(0)
    cfg = dict(d_model=32, n_layers=2, n_heads=4, n_kv_heads=n_kv_heads, max_seq_len=64)
    ref = KimiMini(KimiConfig(**cfg)).to(device)
    tri = KimiMini(KimiConfig(**cfg, attention_options={"impl": "triton"})).to(device)
    tri.load_state_dict(ref.state_dict())
    track_max_logits(ref)
    track_max_logits(tri)
    x = torch.randint(0, 256, (2, 40), device=device)
    (l_ref, loss_ref), (l_tri, loss_tri) = ref(x, x), tri(x, x)
    assert_close(l_tri, l_ref, rtol=1e-5, what="logits")
    assert_close(max_logits(tri), max_logits(ref), rtol=1e-6, what="max logits")
    loss_ref.backward()
    loss_tri.backward()
    for (name, p), p2 in zip(ref.named_parameters(), tri.parameters(), strict=True):
        assert_close(p2.grad, p.grad, rtol=1e-4, atol=1e-7, what=f"grad {name}")
    prompt = x[:1, :5]
    assert torch.equal(tri.generate(prompt, 4, temperature=0), ref.generate(prompt, 4, temperature=0))

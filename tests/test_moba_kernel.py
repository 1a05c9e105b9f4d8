"""The MoBA Triton kernels (interpreter on CPU) against the naive reference: outputs and dq, dk, dv,
fp32 and fp16, T = 63/130/257, block 16/32, top_k 1, 2, 3 and ≥ n_blocks; plus the paper's invariants
through the kernel; bad inputs to the wrapper → ValueError naming the argument (it would otherwise read
past the buffers). Shapes are tiny: the interpreter runs every program op by op. Tensors come from the
``device`` fixture (CUDA when the kernels are compiled)."""

import pytest
import torch

import kimi_mini.kernels as K
from kimi_mini.kernels.moba import moba_attention_triton, selection_table
from kimi_mini.layers import causal_attention
from kimi_mini.moba import moba_attention, moba_select
from kimi_mini.testing import assert_close


def _inputs(B, H, T, D, dtype, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, H, T, D, generator=g).to(device, dtype).requires_grad_() for _ in range(3))
    do = torch.randn(B, H, T, D, generator=g).to(device, dtype)
    return q, k, v, do


CASES = [  # (T, block_size, top_k, dtype): every T, block size, top_k class and dtype appears
    (63, 16, 1, torch.float32),
    (63, 32, 2, torch.float16),  # 2 blocks, top-2: covers everything
    (130, 16, 2, torch.float16),
    (130, 32, 3, torch.float32),
    (257, 32, 3, torch.float16),
    (257, 32, 9, torch.float32),  # top_k >= n_blocks (9)
    (257, 16, 2, torch.float32),
    (50, 24, 2, torch.float32),  # a block size that is not a power of two (masked key chunks)
]


@pytest.mark.parametrize("T,bs,top_k,dtype", CASES,
                         ids=[f"T{T}-B{bs}-k{k}-{str(d)[6:]}" for T, bs, k, d in CASES])
def test_triton_matches_naive_outputs_and_gradients(T, bs, top_k, dtype, device):
    q, k, v, do = _inputs(1, 2 if T < 200 else 1, T, 16, dtype, device=device)
    o = moba_attention(q, k, v, bs, top_k, impl="triton")
    dq, dk, dv = torch.autograd.grad(o, (q, k, v), do)
    # the reference in fp32 on the same (rounded) inputs
    qr, kr, vr = (t.detach().float().requires_grad_() for t in (q, k, v))
    o_ref = moba_attention(qr, kr, vr, bs, top_k, impl="naive")
    refs = (o_ref, *torch.autograd.grad(o_ref, (qr, kr, vr), do.float()))
    tol = 2e-5 if dtype == torch.float32 else 3e-3
    assert o.dtype == dtype
    for name, a, b in zip(("o", "dq", "dk", "dv"), (o, dq, dk, dv), refs, strict=True):
        assert_close(a, b, rtol=tol, atol=tol, what=f"{name} triton vs naive")


def test_triton_with_covering_top_k_is_causal_attention_and_top_1_block_diagonal(device):
    q, k, v, _ = _inputs(1, 1, 70, 16, torch.float32, seed=1, device=device)
    with torch.no_grad():
        assert_close(moba_attention(q, k, v, 16, 5, impl="triton"), causal_attention(q, k, v, impl="naive"),
                     rtol=2e-5, what="top_k >= n_blocks")
        diag = moba_attention(q, k, v, 32, 1, impl="triton")
        for s in (0, 32, 64):
            e = min(s + 32, 70)
            ref = causal_attention(q[:, :, s:e], k[:, :, s:e], v[:, :, s:e], impl="naive")
            assert_close(diag[:, :, s:e], ref, rtol=2e-5, what=f"top-1 block at {s}")


def test_triton_batch_equals_each_sequence_alone(device):
    q, k, v, _ = _inputs(2, 1, 40, 16, torch.float32, seed=2, device=device)
    with torch.no_grad():
        both = moba_attention(q, k, v, 16, 2, impl="triton")
        for b in range(2):
            one = moba_attention(q[b:b + 1], k[b:b + 1], v[b:b + 1], 16, 2, impl="triton")
            assert_close(both[b:b + 1], one, rtol=1e-6, what=f"sequence {b}")


def test_selection_table_appends_the_current_block_and_pads():
    q, k, _, _ = _inputs(1, 1, 40, 16, torch.float32)
    hist = moba_select(q, k, 8, 3)  # [1, 1, 40, 2]
    sel = selection_table(hist, 8)
    assert sel.shape == (1, 40, 4) and sel.dtype == torch.int32
    assert sel[0, :, 2].tolist() == [t // 8 for t in range(40)]
    assert (sel[0, :, 3] == -1).all()
    assert sel[0, 12, :2].tolist() == [0, -1]  # block 1 has one eligible history block


def _ok(device, T=20, D=16, dtype=torch.float32):
    q = torch.randn(1, 2, T, D, device=device, dtype=dtype)
    hist = torch.full((1, 2, T, 1), -1, device=device, dtype=torch.long)
    return q, q.clone(), q.clone(), hist


BAD = [  # (argument named, how to break the valid inputs q, k, v, hist, block_size)
    ("k, v", lambda q, k, v, h: (q, k[:, :, :10], v, h, 8)),  # k shorter than q: reads past k
    ("k, v", lambda q, k, v, h: (q, k, v[..., :8], h, 8)),
    ("q", lambda q, k, v, h: (q.long(), k.long(), v.long(), h, 8)),  # int inputs
    ("q", lambda q, k, v, h: (q[0], k[0], v[0], h, 8)),
    ("q", lambda q, k, v, h: ("q", k, v, h, 8)),
    ("q, k, v", lambda q, k, v, h: (q, k.half(), v, h, 8)),
    ("k", lambda q, k, v, h: (q, k.to("meta"), v, h, 8)),
    ("hist", lambda q, k, v, h: (q, k, v, h + 4, 8)),  # block id 3 of 3 blocks (0..2): past the end
    ("hist", lambda q, k, v, h: (q, k, v, h - 1, 8)),  # below -1
    ("hist", lambda q, k, v, h: (q, k, v, h.float(), 8)),
    ("hist", lambda q, k, v, h: (q, k, v, h[:, :, :5], 8)),
    ("hist", lambda q, k, v, h: (q, k, v, h[..., 0], 8)),
    ("block_size", lambda q, k, v, h: (q, k, v, h, 0)),
    ("block_size", lambda q, k, v, h: (q, k, v, h, 8.0)),
]


@pytest.mark.parametrize("arg,breaks", BAD, ids=[f"{a.replace(', ', '')}-{i}" for i, (a, _) in enumerate(BAD)])
def test_bad_inputs_name_the_argument(arg, breaks, device):
    with pytest.raises(ValueError, match=f"^{arg}:"):
        moba_attention_triton(*breaks(*_ok(device)))


def test_last_block_id_is_accepted_and_empty_batch_gives_empty_output(device):
    q, k, v, hist = _ok(device)
    hist[..., 0] = torch.arange(20, device=device) // 8 - 1  # the previous block (-1 in block 0)
    assert moba_attention_triton(q, k, v, hist, 8).shape == q.shape
    out = moba_attention_triton(q[:0], k[:0], v[:0], hist[:0], 8)
    assert out.shape == (0, 2, 20, 16)


def test_cpu_tensor_to_a_compiled_kernel_is_a_value_error(monkeypatch):
    monkeypatch.setattr(K, "INTERPRETED", False)
    with pytest.raises(ValueError, match="^q: expected a CUDA tensor"):
        moba_attention_triton(*_ok("cpu"), 8)


@pytest.mark.gpu
@pytest.mark.parametrize("T", [1000, 4096])
def test_triton_bf16_on_gpu_matches_naive(T):
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(1, 2, T, 64, device="cuda", generator=g, dtype=torch.bfloat16).requires_grad_()
               for _ in range(3))
    do = torch.randn_like(q)
    o = moba_attention(q, k, v, 128, 3, impl="triton")
    grads = torch.autograd.grad(o, (q, k, v), do)
    qr, kr, vr = (t.detach().float().requires_grad_() for t in (q, k, v))
    o_ref = moba_attention(qr, kr, vr, 128, 3, impl="naive")
    refs = (o_ref, *torch.autograd.grad(o_ref, (qr, kr, vr), do.float()))
    for name, a, b in zip(("o", "dq", "dk", "dv"), (o, *grads), refs, strict=True):
        assert_close(a, b, rtol=2e-2, atol=2e-2, what=f"{name} bf16 triton vs naive")

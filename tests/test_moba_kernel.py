"""The MoBA Triton kernels (interpreter on CPU) against the naive reference and the PyTorch path:
outputs and dq, dk, dv, fp32 and fp16, odd T (50, 63, 130, 257), block sizes 16/24/32, top_k 1, 2, 3
and ≥ n_blocks; the device gate against ``moba_select``; the key-block schedule (every chosen entry in
exactly one tile of its block, the tile padding, the pair count); the gate + schedule on meta tensors
with an op count that does not grow with T; the paper's invariants through the kernel; bad inputs to the
wrapper → ValueError naming the argument. Shapes are tiny: the interpreter runs every program op by op.
Tensors come from the ``device`` fixture (CUDA when the kernels are compiled)."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import kimi_mini.kernels as K
from kimi_mini.kernels.moba import (
    build_schedule,
    gate_select,
    moba_attention_gated,
    moba_attention_triton,
    schedule_pairs,
)
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
    (63, 16, 2, torch.float16),
    (130, 16, 3, torch.float16),
    (130, 32, 3, torch.float32),
    (257, 32, 9, torch.float32),  # top_k >= n_blocks (9): causal attention
    (50, 24, 2, torch.float32),  # a block size that is not a power of two (masked key chunks)
]


@pytest.mark.parametrize("T,bs,top_k,dtype", CASES,
                         ids=[f"T{T}-B{bs}-k{k}-{str(d)[6:]}" for T, bs, k, d in CASES])
def test_triton_matches_naive_and_torch_outputs_and_gradients(T, bs, top_k, dtype, device):
    q, k, v, do = _inputs(1, 2 if T < 200 else 1, T, 16, dtype, device=device)
    o = moba_attention(q, k, v, bs, top_k, impl="triton")  # the device gate + the key-block schedule
    dq, dk, dv = torch.autograd.grad(o, (q, k, v), do)
    # the reference and the PyTorch path in fp32 on the same (rounded) inputs
    qr, kr, vr = (t.detach().float().requires_grad_() for t in (q, k, v))
    refs = {}
    for impl in ("naive", "torch"):
        o_ref = moba_attention(qr, kr, vr, bs, top_k, impl=impl)
        refs[impl] = (o_ref, *torch.autograd.grad(o_ref, (qr, kr, vr), do.float()))
    tol = 2e-5 if dtype == torch.float32 else 3e-3
    assert o.dtype == dtype
    for name, a, b, c in zip(("o", "dq", "dk", "dv"), (o, dq, dk, dv), refs["naive"], refs["torch"], strict=True):
        assert_close(a, b, rtol=tol, atol=tol, what=f"{name} triton vs naive")
        assert_close(c, b, rtol=2e-5, atol=2e-5, what=f"{name} torch vs naive")


def test_triton_with_a_given_selection_matches_naive(device):
    """``moba_attention_triton`` takes ``moba_select``'s int64 selection: the same schedule and kernels."""
    q, k, v, do = _inputs(1, 2, 75, 16, torch.float32, seed=3, device=device)
    o = moba_attention_triton(q, k, v, moba_select(q, k, 16, 3), 16)
    grads = torch.autograd.grad(o, (q, k, v), do)
    o_ref = moba_attention(q, k, v, 16, 3, impl="naive")
    refs = (o_ref, *torch.autograd.grad(o_ref, (q, k, v), do))
    for name, a, b in zip(("o", "dq", "dk", "dv"), (o, *grads), refs, strict=True):
        assert_close(a, b, rtol=2e-5, atol=2e-5, what=f"{name} given selection")


def test_given_selection_ignores_current_later_and_repeated_blocks(device):
    """The blocks a query may attend are its own (causal) and earlier ones: listing its own block, a later
    block or a block twice changes nothing (they would otherwise be attended unmasked or twice)."""
    q, k, v, _ = _inputs(1, 1, 48, 16, torch.float32, seed=6, device=device)
    t_blk = torch.arange(48, device=device) // 8
    clean = torch.stack([t_blk - 1, torch.full_like(t_blk, -1), torch.full_like(t_blk, -1)], -1)[None, None]
    clean[..., 0].clamp_(min=-1)  # [1, 1, 48, 3]: the previous block only
    messy = torch.stack([t_blk - 1, t_blk.clamp(max=5), t_blk - 1], -1)[None, None].clamp(min=-1)
    messy[..., 16:20, 1] = 5  # a later block
    with torch.no_grad():
        assert_close(moba_attention_triton(q, k, v, messy, 8), moba_attention_triton(q, k, v, clean, 8),
                     rtol=1e-6, atol=1e-6, what="own, later and repeated blocks ignored")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
def test_device_gate_picks_the_blocks_of_moba_select(dtype):
    q, k, _, _ = _inputs(2, 3, 203, 16, dtype, seed=4)
    for bs, top_k in ((16, 4), (24, 3), (50, 2), (256, 3)):
        sel = gate_select(q, k, bs, top_k)  # [B·H, T, S] int32
        ref = moba_select(q, k, bs, top_k)  # [B, H, T, S] int64, slots in descending score
        assert sel.dtype == torch.int32 and sel.shape == (6, 203, ref.shape[-1])
        assert torch.equal(sel.reshape(ref.shape).long().sort(-1).values, ref.sort(-1).values), (bs, top_k)


def test_schedule_tiles_cover_every_chosen_entry_once_in_its_slot_and_block():
    q, k, _, _ = _inputs(2, 2, 300, 16, torch.float32, seed=5)
    bs, bm = 16, 8
    sel = gate_select(q, k, bs, 4)  # [4, 300, 3]
    sch = build_schedule(sel, bs, bm)
    BH, T, S = sel.shape
    n = -(-T // bs)
    n_tiles = int(sch.n_tiles)
    seen = torch.zeros(BH * T * S, dtype=torch.long)
    tile_slot = []
    for i, (g, r0, r1) in enumerate(sch.tiles.tolist()):
        if i >= n_tiles:
            assert r1 == r0  # past the real count: an empty tile
            continue
        assert 0 < r1 - r0 <= bm
        ents = sch.ent[r0:r1].long()
        seen[ents] += 1
        bh, blk = divmod(g, n)
        assert (ents // (T * S) == bh).all() and (sel.reshape(-1)[ents] == blk).all()
        slots = (ents % S).unique()
        assert len(slots) == 1  # a tile holds one slot's entries: in-place merges never collide
        tile_slot.append(int(slots))
    assert torch.equal(seen, (sel.reshape(-1) >= 0).long())  # every chosen entry exactly once
    assert tile_slot == sorted(tile_slot)  # slot-major
    for s in range(S):  # each slot's tiles: one contiguous range, within the slot's launch grid
        first, count = sch.slot_tiles[s].tolist()
        assert tile_slot[first:first + count] == [s] * count and count == tile_slot.count(s)
        assert count <= -(-BH * T // bm) + BH * n
    chosen = (sel >= 0).nonzero()  # [entries, 3]: bh, t, slot
    counts = torch.bincount(chosen[:, 2] * BH * n + chosen[:, 0] * n + sel[sel >= 0], minlength=S * BH * n)
    tiles = sch.tiles[:n_tiles].long()
    per_group = torch.bincount(torch.tensor(tile_slot) * BH * n + tiles[:, 0], minlength=S * BH * n)
    assert torch.equal(per_group, (counts + bm - 1) // bm)  # each (slot, block) group padded to whole tiles
    # the dK/dV view: each key block's range of blk_tiles lists exactly that block's tiles, every slot's
    assert torch.equal(sch.tile_first.long(), torch.cumsum(sch.tile_count.long(), 0) - sch.tile_count.long())
    for g in range(BH * n):
        ids = sch.blk_tiles[sch.tile_first[g]:sch.tile_first[g] + sch.tile_count[g]].long()
        assert sorted(ids.tolist()) == (tiles[:, 0] == g).nonzero()[:, 0].tolist()


def test_schedule_pairs_count_the_tiles_and_what_moba_needs():
    # T = 4 blocks of 8, every query of blocks 2, 3 chooses blocks {0, 1}; block 1's queries choose 0.
    T, bs = 32, 8
    sel = torch.full((1, T, 2), -1, dtype=torch.int32)
    sel[0, 8:16, 0] = 0
    sel[0, 16:, 0], sel[0, 16:, 1] = 0, 1
    computed, needed = schedule_pairs(build_schedule(sel, bs, 8), 8)
    assert needed == 4 * (8 * 9 // 2) + 8 * (8 + 16 + 16)
    # history: 3 full tiles on block 0 and 2 on block 1, 8 × 8 pairs each; diagonal: 4 tiles of 8 × 8
    assert computed == (3 + 2) * 64 + 4 * 64
    # 5-row tiles: block 0's 24 entries → 5 tiles, block 1's 16 → 4 (padded); the diagonal tiles see 5
    # and 8 keys, computed in one 8-key chunk each
    computed_5, needed_5 = schedule_pairs(build_schedule(sel, bs, 5), 8)
    assert needed_5 == needed and computed_5 == (5 + 4) * 5 * 8 + 4 * 2 * (5 * 8)


class _CountOps(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
def test_gate_and_schedule_run_on_meta_with_an_op_count_that_does_not_grow_with_T(dtype):
    """No host sync (a meta tensor has no data to sync: .item() or data-dependent Python would raise) and
    a bounded number of device ops: no more at 128K than at 4K."""
    counts = {}
    for T in (4096, 131072):
        q = torch.empty(1, 4, T, 64, device="meta", dtype=dtype)
        with _CountOps() as mode:
            sch = build_schedule(gate_select(q, q, 512, 3), 512, 64)
        assert sch.tiles.device.type == "meta" and sch.sel.dtype == torch.int32
        assert sch.sel.shape == (4, T, 2)
        counts[T] = len(mode.ops)
        assert not any("_local_scalar_dense" in op or "nonzero" in op for op in mode.ops), mode.ops
    assert counts[131072] <= counts[4096] < 300, counts  # the old gate: ~1,100 ops at 32K, ~6,600 at 128K


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


@pytest.mark.parametrize("arg,top_k,bs", [("top_k", 0, 8), ("top_k", 2.0, 8), ("block_size", 2, 0)])
def test_gated_wrapper_names_a_bad_block_size_or_top_k(arg, top_k, bs, device):
    q, k, v, _ = _ok(device)
    with pytest.raises(ValueError, match=f"^{arg}:"):
        moba_attention_gated(q, k, v, bs, top_k)


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


def test_bench_schedule_count_is_near_what_moba_needs_for_random_and_coherent_gates():
    """What ``kimi-mini bench moba`` reports at 32K / 128K (target ≤ 1.15), at 4K and 8K with one head."""
    from kimi_mini.bench.moba import triton_schedule_counts

    counts = triton_schedule_counts(Ts=(4096, 8192), heads=1)
    assert counts["tile"] == (64, 64)
    for gate in ("random", "coherent"):
        for T, ratio in counts[gate].items():
            assert 1.0 <= ratio <= 1.15, (gate, T, ratio)
    assert counts["coherent"][8192] < counts["random"][8192]  # whole blocks choose alike: no tile padding


def test_memory_plan_counts_the_wrappers_buffers():
    """``kimi-mini bench moba``'s ``triton_forward_bytes_over_sdpa_32k``: what the forward holds beyond
    q, k, v, o — lse and the schedule, no partial outputs — over SDPA's q, k, v, o (target ≤ 1.1), counted
    from the buffers the wrapper allocates (built on meta tensors)."""
    from kimi_mini.kernels.moba import memory_plan

    B, H, T, D, S = 1, 4, 32768, 64, 2
    plan = memory_plan(B, H, T, D, 512, S + 1)
    assert plan["sdpa"] == 4 * B * H * T * D * 2
    assert plan["lse"] == plan["delta"] == B * H * T * 4
    assert plan["schedule"] >= B * H * T * S * 4 * 2  # int32 selections and sorted entries
    assert set(plan) == {"sdpa", "lse", "delta", "schedule"}  # no partial-output buffers
    forward = (plan["sdpa"] + plan["lse"] + plan["schedule"]) / plan["sdpa"]
    assert 1.0 < forward <= 1.1, forward
    assert memory_plan(B, H, T, D, 512, 1)["schedule"] < plan["schedule"]  # top-1: no history entries


def test_in_place_merge_order_does_not_depend_on_the_slot_order(device):
    """Each slot's launch merges its blocks into o and dq in place: listing the same blocks in the other
    slot order gives the same result (up to rounding), values and gradients."""
    q, k, v, do = _inputs(1, 2, 96, 16, torch.float32, seed=7, device=device)
    sel = moba_select(q, k, 16, 3)
    outs = []
    for hist in (sel, sel.flip(-1)):
        o = moba_attention_triton(q, k, v, hist, 16)
        outs.append((o, *torch.autograd.grad(o, (q, k, v), do)))
    for name, a, b in zip(("o", "dq", "dk", "dv"), *outs, strict=True):
        assert_close(a, b, rtol=1e-5, atol=1e-5, what=f"{name} with the slots swapped")

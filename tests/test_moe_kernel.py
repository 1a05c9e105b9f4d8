"""The MoE grouped-GEMM kernel (kernels/moe.py; interpreter on CPU) against the naive reference:
alignment invariants, each GEMM mode, and the routed SwiGLU experts' outputs and gradients; bad inputs →
ValueError naming the argument. Tensors come from the ``device`` fixture (CUDA when compiled)."""

import pytest
import torch
import triton
import triton.language as tl

import kimi_mini.kernels as K
from kimi_mini.kernels.moe import (
    ROWS_PAIR,
    ROWS_SORTED,
    ROWS_TOKEN,
    GroupedGemm,
    _grouped_tile,
    align_to_tiles,
    grouped_gemm,
    grouped_gemm_dw,
    max_tiles,
    moe_swiglu_experts,
)
from kimi_mini.moe import MoE, moe_experts
from kimi_mini.testing import assert_close


def _ragged_indices(N, E, k, empty=(), seed=0):
    """Distinct expert ids per token, never using the experts in ``empty``, skewed towards expert 1."""
    g = torch.Generator().manual_seed(seed)
    scores = torch.rand(N, E, generator=g)
    scores[:, 1] += 0.5  # one heavy expert: ragged loads
    for e in empty:
        scores[:, e] = -1.0
    return scores.topk(k, dim=-1).indices


def test_align_to_tiles_invariants():
    N, E, k, bm = 37, 6, 2, 16
    idx = _ragged_indices(N, E, k, empty=(3,))
    plan = align_to_tiles(idx, E, bm)
    sp = plan.sorted_pair.long()
    valid = sp < N * k
    assert sorted(sp[valid].tolist()) == list(range(N * k))  # every pair exactly once
    assert plan.padded_rows % bm == 0 and plan.n_tiles == plan.padded_rows // bm
    counts = torch.bincount(idx.reshape(-1), minlength=E)
    assert plan.expert_tile_count.tolist() == ((counts + bm - 1) // bm).tolist()
    assert plan.expert_tile_count[3] == 0
    flat = idx.reshape(-1)
    for t in range(plan.n_tiles):  # every real row of a tile is routed to the tile's expert
        rows = sp[t * bm:(t + 1) * bm]
        rows = rows[rows < N * k]
        assert (flat[rows] == plan.tile_expert[t]).all()
    with pytest.raises(ValueError, match="indices"):
        align_to_tiles(torch.tensor([[0, 7]]), 4, 16)
    with pytest.raises(ValueError, match="block_m"):
        align_to_tiles(idx, E, 0)


MODES = [(ROWS_TOKEN, ROWS_SORTED, False), (ROWS_TOKEN, ROWS_PAIR, False), (ROWS_SORTED, ROWS_PAIR, True),
         (ROWS_PAIR, ROWS_SORTED, True), (ROWS_SORTED, ROWS_TOKEN, True), (ROWS_PAIR, ROWS_TOKEN, False)]
_NAMES = {ROWS_TOKEN: "token", ROWS_SORTED: "sorted", ROWS_PAIR: "pair"}


@pytest.mark.parametrize("x_rows,y_rows,weighted", MODES,
                         ids=[f"{_NAMES[a]}-to-{_NAMES[b]}{'-weighted' if w else ''}" for a, b, w in MODES])
def test_grouped_gemm_modes_match_per_pair_loop(x_rows, y_rows, weighted, device):
    N, E, k, d_in, Nout = 21, 5, 2, 24, 40
    idx = _ragged_indices(N, E, k, empty=(4,)).to(device)
    plan = align_to_tiles(idx, E, 16)
    g = torch.Generator().manual_seed(1)
    sp = plan.sorted_pair.long()
    valid = sp < N * k
    x = torch.randn(plan.n_rows(x_rows), d_in, generator=g).to(device)
    if x_rows == ROWS_SORTED:
        x[~valid] = 0.0
    x.requires_grad_()
    w = torch.randn(E, d_in, Nout, generator=g).to(device).requires_grad_()
    rw = torch.rand(N * k, generator=g).to(device).requires_grad_() if weighted else None
    y = GroupedGemm.apply(x, w, rw, plan, x_rows, y_rows)
    # the reference: one row per pair, written where the output layout puts that pair
    row_of_pair = torch.empty(N * k, dtype=torch.long, device=device)
    row_of_pair[sp[valid]] = torch.arange(plan.padded_rows, device=device)[valid]
    pairs = torch.arange(N * k, device=device)
    x_row = {ROWS_TOKEN: pairs // k, ROWS_PAIR: pairs, ROWS_SORTED: row_of_pair}
    per_pair = torch.einsum("pk,pkn->pn", x[x_row[x_rows]], w[idx.reshape(-1)])
    if weighted:
        per_pair = per_pair * rw[:, None]
    if y_rows == ROWS_PAIR:
        ref = per_pair
    elif y_rows == ROWS_TOKEN:  # each token's k pair rows added up (atomically, in the kernel)
        ref = per_pair.view(N, k, -1).sum(1)
    else:
        ref = torch.zeros(plan.padded_rows, Nout, device=device).index_copy(0, row_of_pair, per_pair)
    assert_close(y, ref, rtol=1e-5, atol=1e-5, what="y")
    dy = torch.randn(ref.shape, generator=g).to(device)
    inputs = [x, w] + ([rw] if weighted else [])
    got = torch.autograd.grad(y, inputs, dy)
    want = torch.autograd.grad(ref, inputs, dy)
    for name, a, b in zip(["dx", "dw", "drw"], got, want, strict=False):
        assert_close(a, b, rtol=1e-5, atol=1e-5, what=name)


CASES = [  # (N, d, E, k, h, dtype, empty experts)
    (37, 32, 6, 2, 48, torch.float32, (3,)),
    (16, 24, 4, 3, 40, torch.float32, ()),
    (29, 32, 5, 2, 32, torch.float16, (0, 4)),
]


@pytest.mark.parametrize("N,d,E,k,h,dtype,empty", CASES,
                         ids=[f"N{c[0]}-E{c[2]}-k{c[3]}-{str(c[5])[6:]}-empty{len(c[6])}" for c in CASES])
def test_swiglu_experts_kernel_matches_naive(N, d, E, k, h, dtype, empty, device):
    g = torch.Generator().manual_seed(0)
    idx = _ragged_indices(N, E, k, empty=empty).to(device)
    x = torch.randn(N, d, generator=g).to(device, dtype).requires_grad_()
    w1 = (torch.randn(E, d, h, generator=g) * d**-0.5).to(device, dtype).requires_grad_()
    w3 = (torch.randn(E, d, h, generator=g) * d**-0.5).to(device, dtype).requires_grad_()
    w2 = (torch.randn(E, h, d, generator=g) * h**-0.5).to(device, dtype).requires_grad_()
    wts = torch.rand(N, k, generator=g).to(device, dtype).requires_grad_()
    dy = torch.randn(N, d, generator=g).to(device, dtype)
    inputs = (x, wts, w1, w3, w2)
    y = moe_swiglu_experts(x, idx, wts, w1, w3, w2)
    got = torch.autograd.grad(y, inputs, dy)
    # reference: the naive loop in fp32 on the same (rounded) inputs
    ref_in = [t.detach().float().requires_grad_() for t in inputs]
    xr, wr, w1r, w3r, w2r = ref_in
    yr = moe_experts(xr, idx, wr, w1r, w3r, w2r, impl="naive")
    want = torch.autograd.grad(yr, ref_in, dy.float())
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-2, atol=1e-2)
    assert y.dtype == dtype
    assert_close(y, yr, **tol, what="y")
    for name, a, b in zip(["dx", "dweights", "dw1", "dw3", "dw2"], got, want, strict=True):
        assert_close(a, b, **tol, what=name)
    for e in empty:  # an expert without tokens gets exactly zero gradient
        assert got[2][e].abs().max() == 0 and got[4][e].abs().max() == 0


def test_moe_layer_triton_impl_trains_like_naive(device):
    torch.manual_seed(0)
    moe = MoE(32, 4, 2, 16, route_scale=2.0).to(device)
    x, dy = torch.randn(2, 9, 32, device=device), torch.randn(2, 9, 32, device=device)
    out = {}
    for impl in ("naive", "triton"):
        moe.impl = impl
        moe.zero_grad()
        xi = x.clone().requires_grad_()
        y = moe(xi)
        y.backward(dy)
        out[impl] = [y.detach(), xi.grad] + [p.grad.clone() for p in moe.parameters()]
    names = ["y", "dx"] + [n for n, _ in moe.named_parameters()]
    for name, a, b in zip(names, out["triton"], out["naive"], strict=True):
        assert_close(a, b, rtol=1e-5, atol=1e-5, what=name)


def _valid(device, N=4, d=8, E=3, k=2, h=6):
    return dict(x=torch.randn(N, d, device=device), indices=torch.zeros(N, k, dtype=torch.long, device=device),
                weights=torch.ones(N, k, device=device), w1=torch.randn(E, d, h, device=device),
                w3=torch.randn(E, d, h, device=device), w2=torch.randn(E, h, d, device=device))


BAD = [  # (argument named, changes to the valid inputs)
    ("x", dict(x=torch.randn(4, 8).double())),
    ("x", dict(x=torch.randn(2, 4, 8))),
    ("x", dict(x="x")),
    ("indices", dict(indices=torch.zeros(4, 2))),  # float ids
    ("indices", dict(indices=torch.zeros(3, 2, dtype=torch.long))),
    ("indices", dict(indices=torch.full((4, 2), 3, dtype=torch.long))),  # expert 3 of 3: past the end
    ("indices", dict(indices=torch.full((4, 2), -1, dtype=torch.long))),
    ("weights", dict(weights=torch.ones(4, 2, dtype=torch.int64))),
    ("weights", dict(weights=torch.ones(4, 2, device="meta"))),
    ("w1", dict(w1=torch.randn(3, 7, 6))),
    ("w2", dict(w2=torch.randn(3, 8, 6))),
    ("w3", dict(w3=torch.randn(3, 8, 6).to(torch.int32))),
]


@pytest.mark.parametrize("arg,change", BAD, ids=[f"{a}-{i}" for i, (a, _) in enumerate(BAD)])
def test_bad_inputs_name_the_argument(arg, change, device):
    ids = change.get("indices")
    if device == "cuda" and ids is not None and ids.dtype == torch.long and ids.shape == (4, 2):
        pytest.skip("on CUDA an expert id out of range is a device-side assertion (no host sync), not a ValueError")
    kwargs = _valid(device)
    kwargs.update({k: v.to(device) if torch.is_tensor(v) and v.device.type != "meta" else v
                   for k, v in change.items()})
    with pytest.raises(ValueError, match=rf"^{arg}\b"):
        moe_swiglu_experts(**kwargs)


def test_grouped_gemm_bad_inputs(device):
    idx = torch.zeros(4, 2, dtype=torch.long, device=device)
    plan = align_to_tiles(idx, 3, 16)
    x, w = torch.randn(4, 8, device=device), torch.randn(3, 8, 6, device=device)
    with pytest.raises(ValueError, match="^w:"):
        grouped_gemm(x, w.to("meta"), plan, ROWS_TOKEN, ROWS_SORTED)
    with pytest.raises(ValueError, match="^x:"):
        grouped_gemm(x[:3], w, plan, ROWS_TOKEN, ROWS_SORTED)
    with pytest.raises(ValueError, match="^plan:"):
        grouped_gemm(x, w, "plan", ROWS_TOKEN, ROWS_SORTED)
    with pytest.raises(ValueError, match="^route_weights:"):
        grouped_gemm_dw(x, torch.randn(plan.padded_rows, 6, device=device), plan, ROWS_TOKEN, ROWS_SORTED,
                        torch.ones(3, device=device))


def test_cpu_tensor_to_a_compiled_kernel_is_a_value_error(monkeypatch):
    monkeypatch.setattr(K, "INTERPRETED", False)
    with pytest.raises(ValueError, match="^x: expected a CUDA tensor"):
        moe_swiglu_experts(**_valid("cpu"))


@pytest.mark.gpu
def test_swiglu_experts_kernel_bf16_on_gpu():
    g = torch.Generator().manual_seed(0)
    N, d, E, k, h = 1000, 256, 16, 4, 128
    idx = _ragged_indices(N, E, k, empty=(5,)).cuda()
    x = torch.randn(N, d, generator=g).cuda().bfloat16().requires_grad_()
    w1 = (torch.randn(E, d, h, generator=g) * d**-0.5).cuda().bfloat16().requires_grad_()
    w3 = (torch.randn(E, d, h, generator=g) * d**-0.5).cuda().bfloat16().requires_grad_()
    w2 = (torch.randn(E, h, d, generator=g) * h**-0.5).cuda().bfloat16().requires_grad_()
    wts = torch.rand(N, k, generator=g).cuda().bfloat16().requires_grad_()
    dy = torch.randn(N, d, generator=g).cuda().bfloat16()
    inputs = (x, wts, w1, w3, w2)
    y = moe_swiglu_experts(x, idx, wts, w1, w3, w2)
    got = torch.autograd.grad(y, inputs, dy)
    ref_in = [t.detach().float().requires_grad_() for t in inputs]
    yr = moe_experts(ref_in[0], idx, ref_in[1], *ref_in[2:], impl="torch")
    want = torch.autograd.grad(yr, ref_in, dy.float())
    assert_close(y, yr, rtol=2e-2, atol=2e-2, what="y")
    for name, a, b in zip(["dx", "dweights", "dw1", "dw3", "dw2"], got, want, strict=True):
        assert_close(a, b, rtol=3e-2, atol=3e-2, what=name)


def test_align_to_tiles_sizes_the_layout_from_shapes_alone():
    """No host sync: on meta tensors (nothing to read back) the plan has max_tiles(P, E, BLOCK_M) tiles; on
    real routings the real tiles never exceed that bound and the tiles past them belong to expert E."""
    plan = align_to_tiles(torch.empty(37, 2, dtype=torch.long, device="meta"), 6, 16)
    assert plan.n_tiles == max_tiles(74, 6, 16) == (74 + 6 * 15) // 16 and plan.padded_rows == 16 * plan.n_tiles
    g = torch.Generator().manual_seed(0)
    for N, E, k, bm in [(37, 6, 2, 16), (5, 64, 4, 16), (100, 3, 1, 16), (64, 8, 2, 64), (1, 1, 1, 16)]:
        routings = [torch.rand(N, E, generator=g).topk(k, dim=-1).indices,  # spread
                    torch.arange(k).expand(N, k).clone()]  # everyone to the same k experts
        for idx in routings:
            plan = align_to_tiles(idx, E, bm)
            real = int(plan.expert_tile_count.sum())
            assert plan.n_tiles == max_tiles(N * k, E, bm) >= real
            assert (plan.tile_expert[real:] == E).all() and (plan.tile_expert[:real] < E).all()
            assert (plan.sorted_pair[real * bm:] == N * k).all()


@triton.jit
def _tile_order_kernel(out_ptr, n_tiles_m, n_tiles_n, GROUP_M: tl.constexpr):
    pid = tl.program_id(0)
    m, n = _grouped_tile(pid, n_tiles_m, n_tiles_n, GROUP_M)
    tl.store(out_ptr + 2 * pid, m)
    tl.store(out_ptr + 2 * pid + 1, n)


@pytest.mark.parametrize("n_m,n_n,group", [(5, 3, 2), (8, 4, 8), (3, 7, 4), (1, 1, 8)])
def test_grouped_tile_order_visits_every_tile_once_row_tiles_first(n_m, n_n, group, device):
    out = torch.full((n_m * n_n, 2), -1, dtype=torch.int32, device=device)
    _tile_order_kernel[(n_m * n_n,)](out, n_m, n_n, GROUP_M=group)
    pairs = [tuple(r) for r in out.cpu().tolist()]
    assert sorted(pairs) == [(m, n) for m in range(n_m) for n in range(n_n)]  # a permutation of the tiles
    first = pairs[:min(group, n_m)]  # the first programs: consecutive row tiles of column tile 0
    assert first == [(m, 0) for m in range(min(group, n_m))]
    for i in range(0, len(pairs), group):  # within a group, every column tile of the same GROUP_M row tiles
        rows = {m for m, _ in pairs[i:i + group]}
        assert max(rows) - min(rows) < group


def test_second_product_and_the_tiles_past_the_real_ones(device):
    N, E, k, d_in, Nout = 23, 5, 2, 24, 40
    idx = _ragged_indices(N, E, k, empty=(2,)).to(device)
    plan = align_to_tiles(idx, E, 16)
    g = torch.Generator().manual_seed(3)
    x, x2 = (torch.randn(N, d_in, generator=g).to(device) for _ in "ab")
    w, w2 = (torch.randn(E, d_in, Nout, generator=g).to(device) for _ in "ab")
    both = grouped_gemm(x, w, plan, ROWS_TOKEN, ROWS_SORTED, x2=x2, w2=w2)
    ref = grouped_gemm(x, w, plan, ROWS_TOKEN, ROWS_SORTED) + grouped_gemm(x2, w2, plan, ROWS_TOKEN, ROWS_SORTED)
    assert_close(both, ref, rtol=1e-5, atol=1e-5, what="X W + X2 W2")
    real = int(plan.expert_tile_count.sum())
    assert real < plan.n_tiles and (both[real * 16:] == 0).all()  # written as zeros, not left uninitialised
    with pytest.raises(ValueError, match="^x2, w2"):
        grouped_gemm(x, w, plan, ROWS_TOKEN, ROWS_SORTED, x2=x2)

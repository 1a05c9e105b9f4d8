"""Muon / Moonlight (arXiv 2502.16982): Newton–Schulz properties, the update rule step by step, the
parameter split of build_optimizer, RMS matching, state-dict resume, and single-rank DistributedMuon."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from kimi_mini.data import TokenData
from kimi_mini.model import KimiConfig, KimiMini
from kimi_mini.optim import (
    NS_COEFFICIENTS,
    OPTIMIZERS,
    DistributedMuon,
    Muon,
    build_optimizer,
    muon_param_groups,
    muon_update_scale,
    newton_schulz,
    newton_schulz_step,
    ns_polynomial,
    register_optimizer,
    svd_orthogonalize,
)
from kimi_mini.testing import assert_close
from kimi_mini.train import train


@pytest.fixture(autouse=True)
def _one_thread():
    # tiny matmuls: one thread avoids OpenMP barrier stalls on a shared 2-core machine
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny_config(**kw) -> KimiConfig:
    # odd sizes on purpose (d_model 25, d_ff 39)
    base = dict(d_model=25, n_layers=2, n_heads=2, head_dim=6, d_ff=39, max_seq_len=32)
    base.update(kw)
    return KimiConfig(**base)


def random_data(seed: int = 0) -> TokenData:
    """A random 97-token phrase repeated: learnable in a few steps."""
    g = torch.Generator().manual_seed(seed)
    phrase = torch.randint(0, 256, (97,), generator=g, dtype=torch.uint8)
    return TokenData(train=phrase.repeat(200), val=phrase.repeat(50))


# ------------------------------------------------------------------------------------ Newton–Schulz


def test_ns_spectrum_of_gaussian_256x1024():
    G = torch.randn(256, 1024, generator=torch.Generator().manual_seed(0))
    s = torch.linalg.svdvals(newton_schulz(G))
    assert s.min() > 0.66 and s.max() < 1.2, f"singular values in [{s.min():.3f}, {s.max():.3f}]"
    # the paper's ≈[0.68, 1.14]: the extremes are actually reached, not just bounded
    assert s.min() < 0.75 and s.max() > 1.05


@pytest.mark.parametrize("c", [1e-3, 7.0, 1e3], ids=lambda c: f"c={c:g}")
def test_ns_scale_invariance(c):
    G = torch.randn(24, 40, generator=torch.Generator().manual_seed(1))
    assert_close(newton_schulz(c * G), newton_schulz(G), rtol=1e-4, atol=1e-5, what=f"NS({c}·G) vs NS(G)")


@pytest.mark.parametrize("shape", [(24, 40), (40, 24), (3, 17, 9)], ids=str)
def test_ns_transpose_equivariance(shape):
    G = torch.randn(*shape, generator=torch.Generator().manual_seed(2))
    assert_close(newton_schulz(G.mT), newton_schulz(G).mT, rtol=1e-5, atol=1e-6, what="NS(Gᵀ) vs NS(G)ᵀ")


def test_ns_batched_equals_per_matrix():
    G = torch.randn(3, 17, 9, generator=torch.Generator().manual_seed(3))
    out = newton_schulz(G)
    for e in range(3):
        assert_close(out[e], newton_schulz(G[e]), rtol=1e-5, atol=1e-6, what=f"matrix {e}")


def test_ns_acts_on_singular_values_as_the_polynomial():
    # G = U·diag(s)·Vᵀ  ⇒  NS(G) = U·diag(φ⁵(s/‖s‖))·Vᵀ
    g = torch.Generator().manual_seed(4)
    U, _ = torch.linalg.qr(torch.randn(12, 12, generator=g, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(20, 12, generator=g, dtype=torch.float64))
    s = torch.linspace(0.05, 1.0, 12, dtype=torch.float64)
    G = U @ torch.diag(s) @ V.T
    x = s / s.norm()
    for _ in range(5):
        x = ns_polynomial(x)
    expected = U @ torch.diag(x) @ V.T
    assert_close(newton_schulz(G, eps=0.0, dtype=torch.float64), expected, rtol=1e-6, atol=1e-7,
                 what="NS vs polynomial on the singular values")


def test_ns_approximates_svd_orthogonal_factor():
    G = torch.randn(64, 256, generator=torch.Generator().manual_seed(5))
    O, exact = newton_schulz(G), svd_orthogonalize(G)
    # same singular vectors: Oᵀ-projection onto the exact factor is ≈ diagonal with entries in [0.68, 1.2]
    cos = float((O * exact).sum() / (O.norm() * exact.norm()))
    assert cos > 0.98, f"cosine(NS(G), U·Vᵀ) = {cos:.4f}"
    assert not torch.allclose(O, exact, atol=1e-2), "NS5 is an approximation, not the exact U·Vᵀ"


def test_ns_step_matches_formula():
    X = torch.randn(6, 10, generator=torch.Generator().manual_seed(6), dtype=torch.float64) / 5
    a, b, c = NS_COEFFICIENTS
    A = X @ X.T
    assert_close(newton_schulz_step(X), a * X + (b * A + c * A @ A) @ X, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("shape", [(9, 30), (30, 9), (2, 5, 13)], ids=str)
def test_ns_fast_path_equals_reference_steps(shape):
    # reference: normalise, then the readable step five times (transposing tall matrices)
    G = torch.randn(*shape, generator=torch.Generator().manual_seed(12), dtype=torch.float64)
    X = G.mT if shape[-2] > shape[-1] else G
    X = X / (torch.linalg.matrix_norm(X, keepdim=True) + 1e-7)
    for _ in range(5):
        X = newton_schulz_step(X)
    X = X.mT if shape[-2] > shape[-1] else X
    assert_close(newton_schulz(G, dtype=torch.float64), X, rtol=1e-6, atol=1e-7, what="fused vs reference")


def test_ns_zero_matrix_stays_zero():
    assert torch.equal(newton_schulz(torch.zeros(4, 6)), torch.zeros(4, 6))


@pytest.mark.parametrize("kwargs, match", [
    (dict(G=torch.randn(5)), "G"),
    (dict(G=torch.randint(0, 3, (4, 4))), "G"),
    (dict(G=torch.randn(4, 4), steps=-1), "steps"),
    (dict(G=torch.randn(4, 4), impl="cuda"), "impl"),
], ids=["1d", "int", "steps", "impl"])
def test_ns_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        newton_schulz(**kwargs)


# -------------------------------------------------------------------------------------- Muon update


def manual_muon(W, grads, lr, momentum, nesterov, wd):
    """Moonlight's rule written out: M ← μM + g; O = NS(μM + g | M); W ← W(1 − ηλ) − η·0.2√max(A,B)·O."""
    W, M = W.clone(), torch.zeros_like(W)
    scale = 0.2 * math.sqrt(max(W.shape[-2], W.shape[-1]))
    for g in grads:
        M = momentum * M + g
        O = newton_schulz(momentum * M + g if nesterov else M)
        W = W * (1 - lr * wd) - lr * scale * O
    return W


@pytest.mark.parametrize("shape", [(16, 40), (40, 16), (3, 8, 12)], ids=str)
@pytest.mark.parametrize("nesterov", [True, False], ids=["nesterov", "plain"])
def test_muon_matches_formula_step_by_step(shape, nesterov):
    g = torch.Generator().manual_seed(7)
    W0 = torch.randn(*shape, generator=g)
    grads = [torch.randn(*shape, generator=g) for _ in range(4)]
    p = nn.Parameter(W0.clone())
    opt = Muon([p], lr=0.05, momentum=0.9, nesterov=nesterov, weight_decay=0.3)
    for k, grad in enumerate(grads):
        p.grad = grad.clone()
        opt.step()
        expected = manual_muon(W0, grads[: k + 1], 0.05, 0.9, nesterov, 0.3)
        assert_close(p.detach(), expected, rtol=1e-5, atol=1e-6, what=f"after step {k + 1}")


def test_muon_3d_is_a_stack_of_matrices():
    g = torch.Generator().manual_seed(8)
    W = torch.randn(3, 8, 12, generator=g)
    G = torch.randn(3, 8, 12, generator=g)
    stacked = nn.Parameter(W.clone())
    single = [nn.Parameter(W[e].clone()) for e in range(3)]
    stacked.grad = G.clone()
    Muon([stacked], lr=0.1).step()
    opt = Muon(single, lr=0.1)
    for e in range(3):
        single[e].grad = G[e].clone()
    opt.step()
    for e in range(3):
        assert_close(stacked[e].detach(), single[e].detach(), rtol=1e-6, atol=1e-7, what=f"expert {e}")


def test_muon_matches_torch_optim_muon():
    # PyTorch's Muon with adjust_lr_fn="match_rms_adamw" is the same rule (EMA momentum, NS in bf16)
    g = torch.Generator().manual_seed(9)
    W0 = torch.randn(32, 48, generator=g) * 0.1
    ours, theirs = nn.Parameter(W0.clone()), nn.Parameter(W0.clone())
    o1 = Muon([ours], lr=0.02, weight_decay=0.1)
    o2 = torch.optim.Muon([theirs], lr=0.02, weight_decay=0.1, adjust_lr_fn="match_rms_adamw")
    for _ in range(3):
        grad = torch.randn(32, 48, generator=g)
        ours.grad, theirs.grad = grad.clone(), grad.clone()
        o1.step()
        o2.step()
    delta_ours, delta_theirs = ours.detach() - W0, theirs.detach() - W0
    rel = float((delta_ours - delta_theirs).norm() / delta_theirs.norm())
    assert rel < 0.03, f"relative difference of the updates {rel:.4f} (bf16 NS in torch's)"


@pytest.mark.parametrize("shape", [(64, 256), (256, 64), (128, 128), (96, 352)], ids=str)
def test_update_rms_is_about_0_2(shape):
    # RMS matching: the scaled Muon update has RMS ≈ 0.2 whatever the shape
    g = torch.Generator().manual_seed(10)
    p = nn.Parameter(torch.zeros(*shape))
    p.grad = torch.randn(*shape, generator=g)
    Muon([p], lr=1.0, weight_decay=0.0).step()
    rms = float(p.detach().pow(2).mean().sqrt())
    assert 0.15 < rms < 0.22, f"update RMS {rms:.3f} for {shape}"
    assert muon_update_scale(shape) == pytest.approx(0.2 * math.sqrt(max(shape)))


def test_muon_weight_decay_only_shrinks_when_grad_is_zero():
    p = nn.Parameter(torch.ones(4, 6))
    p.grad = torch.zeros(4, 6)
    Muon([p], lr=0.1, weight_decay=0.5).step()
    assert_close(p.detach(), torch.full((4, 6), 1 - 0.1 * 0.5), rtol=0, atol=1e-7)


def test_muon_rejects_non_matrices():
    with pytest.raises(ValueError, match=r"params: .*shape \(7,\)"):
        Muon([nn.Parameter(torch.zeros(7))], lr=0.1)
    with pytest.raises(ValueError, match="params"):
        Muon([nn.Parameter(torch.zeros(2, 3, 4, 5))], lr=0.1)
    opt = Muon([nn.Parameter(torch.zeros(3, 3))], lr=0.1)
    with pytest.raises(ValueError, match="params"):
        opt.add_param_group({"params": [nn.Parameter(torch.zeros(3))]})
    Muon([{"params": [nn.Parameter(torch.zeros(7))], "use_muon": False}], lr=0.1)  # AdamW group: fine


@pytest.mark.parametrize("kwargs, match", [
    (dict(lr=-1.0), "lr"), (dict(lr=0.1, momentum=1.0), "momentum"), (dict(lr=0.1, ns_steps=0), "ns_steps"),
    (dict(lr=0.1, weight_decay=-0.1), "weight_decay"), (dict(lr=0.1, impl="cuda"), "impl"),
], ids=["lr", "momentum", "ns_steps", "wd", "impl"])
def test_muon_bad_hyperparameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Muon([nn.Parameter(torch.zeros(3, 3))], **kwargs)


def test_adamw_groups_match_torch_adamw():
    g = torch.Generator().manual_seed(11)
    W0 = torch.randn(5, 7, generator=g)
    ours, theirs = nn.Parameter(W0.clone()), nn.Parameter(W0.clone())
    o1 = Muon([{"params": [ours], "use_muon": False}], lr=0.01, weight_decay=0.1)
    o2 = torch.optim.AdamW([theirs], lr=0.01, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    for _ in range(5):
        grad = torch.randn(5, 7, generator=g)
        ours.grad, theirs.grad = grad.clone(), grad.clone()
        o1.step()
        o2.step()
    assert_close(ours.detach(), theirs.detach(), rtol=1e-6, atol=1e-7, what="AdamW group vs torch AdamW")


# ---------------------------------------------------------------------------------- build_optimizer


def test_build_optimizer_parameter_split():
    model = KimiMini(tiny_config())
    muon, adamw = muon_param_groups(model)
    muon_names, adamw_names = {n for n, _ in muon}, {n for n, _ in adamw}
    assert {"tok_emb.weight", "lm_head.weight", "norm.weight"} <= adamw_names
    assert all(n.endswith("norm.weight") or n in ("tok_emb.weight", "lm_head.weight") for n in adamw_names)
    assert {"blocks.0.attn.wq.weight", "blocks.1.ffn.w2.weight"} <= muon_names
    assert all(p.dim() == 2 for _, p in muon)
    assert len(muon) + len(adamw) == len(list(model.parameters()))

    opt = build_optimizer(model, "muon", lr=3e-3, weight_decay=0.1)
    assert isinstance(opt, Muon)
    by_kind = {g["use_muon"]: g for g in opt.param_groups}
    assert by_kind[True]["lr"] == by_kind[False]["lr"] == 3e-3  # the same lr for both
    assert by_kind[True]["weight_decay"] == by_kind[False]["weight_decay"] == 0.1
    assert by_kind[False]["betas"] == (0.9, 0.95) and by_kind[False]["eps"] == 1e-8


def test_build_optimizer_stacked_experts_go_to_muon():
    class Experts(nn.Module):
        def __init__(self):
            super().__init__()
            self.w_in = nn.Parameter(torch.randn(4, 6, 10))
            self.emb = nn.Embedding(11, 6)
            self.bias = nn.Parameter(torch.zeros(10))

    muon, adamw = muon_param_groups(Experts())
    assert [n for n, _ in muon] == ["w_in"]
    assert sorted(n for n, _ in adamw) == ["bias", "emb.weight"]


def test_build_optimizer_adamw_and_errors():
    model = KimiMini(tiny_config())
    opt = build_optimizer(model, "adamw", lr=1e-3, weight_decay=0.1)
    assert isinstance(opt, torch.optim.AdamW) and opt.param_groups[0]["betas"] == (0.9, 0.95)
    with pytest.raises(ValueError, match="name: unknown optimizer 'sgdx'"):
        build_optimizer(model, "sgdx", lr=1e-3)
    assert {"adamw", "muon"} <= set(OPTIMIZERS)


def test_register_optimizer():
    @register_optimizer("_test_sgd")
    def _sgd(model, lr, weight_decay, **kw):
        return torch.optim.SGD(model.parameters(), lr=lr, weight_decay=weight_decay)

    try:
        opt = build_optimizer(nn.Linear(2, 2), "_test_sgd", lr=0.5, weight_decay=0.0)
        assert isinstance(opt, torch.optim.SGD) and opt.param_groups[0]["lr"] == 0.5
        with pytest.raises(ValueError, match="already registered"):
            register_optimizer("_test_sgd")(lambda model, lr, weight_decay: None)
    finally:
        OPTIMIZERS.pop("_test_sgd", None)


# --------------------------------------------------------------------------- training loop + resume


def test_muon_trains_and_resumes_exactly(tmp_path):
    data = random_data()

    def fresh():
        torch.manual_seed(0)
        model = KimiMini(tiny_config())
        return model, build_optimizer(model, "muon", lr=1e-2, weight_decay=0.1)

    kw = dict(batch_size=4, seq_len=16, eval_every=100, eval_batches=1, progress=False)
    model, opt = fresh()
    full = train(model, opt, data, steps=6, **kw)
    assert full[-1]["loss"] < full[0]["loss"]

    ckpt = tmp_path / "muon.pt"
    m1, o1 = fresh()
    train(m1, o1, data, steps=3, checkpoint=ckpt, **kw)
    m2, o2 = fresh()
    resumed = train(m2, o2, data, steps=6, checkpoint=ckpt, resume=True, **kw)
    assert [r["loss"] for r in resumed] == pytest.approx([r["loss"] for r in full], rel=1e-6)
    for (name, a), b in zip(model.state_dict().items(), m2.state_dict().values(), strict=True):
        assert_close(b, a, rtol=1e-6, atol=1e-7, what=name)


def test_state_dict_round_trip_keeps_momentum():
    model = KimiMini(tiny_config(n_layers=1))
    opt = build_optimizer(model, "muon", lr=1e-2)
    x = torch.randint(0, 256, (2, 8))
    model(x, x)[1].backward()
    opt.step()
    sd = opt.state_dict()
    opt2 = build_optimizer(model, "muon", lr=1e-2)
    opt2.load_state_dict(sd)
    for p in model.parameters():
        for key, val in opt.state[p].items():
            other = opt2.state[p][key]
            assert torch.equal(other, val) if isinstance(val, torch.Tensor) else other == val


# ------------------------------------------------------------------------- DistributedMuon, one rank


def test_distributed_muon_single_rank_equals_muon():
    torch.manual_seed(0)
    m1 = KimiMini(tiny_config())
    m2 = KimiMini(tiny_config())
    m2.load_state_dict(m1.state_dict())
    o1 = build_optimizer(m1, "muon", lr=1e-2, weight_decay=0.1)
    o2 = build_optimizer(m2, "muon", lr=1e-2, weight_decay=0.1, distributed=True)
    assert isinstance(o2, DistributedMuon) and o2.world_size == 1
    for step in range(3):
        x = torch.randint(0, 256, (3, 12), generator=torch.Generator().manual_seed(step))
        for m, o in ((m1, o1), (m2, o2)):
            o.zero_grad()
            m(x, x)[1].backward()
            o.step()
    for (name, a), b in zip(m1.state_dict().items(), m2.state_dict().values(), strict=True):
        assert_close(b, a, rtol=1e-5, atol=1e-6, what=name)
    # its consolidated state loads into single-process Muon
    o3 = build_optimizer(m1, "muon", lr=1e-2)
    o3.load_state_dict(o2.consolidated_state_dict())
    p = m1.blocks[0].attn.wq.weight
    assert_close(o3.state[p]["momentum_buffer"], o1.state[p]["momentum_buffer"], rtol=1e-5, atol=1e-7)


def test_distributed_muon_clips_like_clip_grad_norm():
    torch.manual_seed(0)
    w1 = nn.Parameter(torch.randn(6, 9))
    w2 = nn.Parameter(w1.detach().clone())
    grad = torch.randn(6, 9) * 10
    w1.grad, w2.grad = grad.clone(), grad.clone()
    torch.nn.utils.clip_grad_norm_([w1], 1.0)
    Muon([{"params": [w1], "use_muon": False}], lr=0.1).step()
    opt = DistributedMuon([{"params": [w2], "use_muon": False}], lr=0.1, max_grad_norm=1.0)
    opt.step()
    assert opt.last_grad_norm == pytest.approx(float(grad.norm()), rel=1e-5)
    assert_close(w2.detach(), w1.detach(), rtol=1e-6, atol=1e-7)

"""QK-Clip and MuonClip: the invariants of Kimi K2 §2.1 for MHA, GQA and MLA.

A clipped head's logits all scale by exactly γ = τ / S_max (so the same batch recomputed has
S_max = τ); other heads stay bit-identical; a second clip is a no-op; MLA's shared k_rope and every
V are untouched; MuonClip = Muon step + QK-Clip.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

from kimi_mini import KimiConfig, KimiMini
from kimi_mini.layers import MultiHeadAttention, causal_mask
from kimi_mini.mla import MultiHeadLatentAttention, mla_logits_reference
from kimi_mini.optim import Muon, MuonClip, build_optimizer, max_logits, qk_clip_
from kimi_mini.qk_clip import attention_modules, max_logit_callback, qk_clip_gamma, track_max_logits
from kimi_mini.testing import assert_close

MLA_OPTS = dict(q_lora_rank=24, kv_lora_rank=20, qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=6)
KINDS = {
    "mha": dict(attention="mha"),
    "gqa": dict(attention="mha", n_kv_heads=2),
    "mla": dict(attention="mla", attention_options=MLA_OPTS),
    "mla-full-q": dict(attention="mla", attention_options={**MLA_OPTS, "q_lora_rank": None}),
}


def _model(kind: str, seed: int = 0) -> KimiMini:
    """A 2-layer model whose heads have very different logit scales (so τ can split them)."""
    torch.manual_seed(seed)
    model = KimiMini(KimiConfig(d_model=32, n_layers=2, n_heads=4, max_seq_len=64, **KINDS[kind]))
    with torch.no_grad():
        for attn in attention_modules(model):
            for name, p in attn.named_parameters():
                if p.dim() == 2 and not name.startswith("wo"):
                    p.normal_(std=0.5)
    return model


def head_logits(attn, x):
    """Every scaled logit ``[B, H, T, T]`` of one attention module on its input x, from the weights."""
    if isinstance(attn, MultiHeadLatentAttention):
        return mla_logits_reference(attn, x)
    B, T, _ = x.shape
    H, H_kv, D = attn.n_heads, attn.n_kv_heads, attn.head_dim
    q = attn.rotary.apply(attn.wq(x).view(B, T, H, D).transpose(1, 2))
    k = attn.rotary.apply(attn.wk(x).view(B, T, H_kv, D).transpose(1, 2)).repeat_interleave(H // H_kv, 1)
    s = q @ k.transpose(-1, -2) / math.sqrt(D)
    return s.masked_fill(~causal_mask(T, T), float("-inf"))


def _attention_inputs(model, tokens):
    """The input of each attention module on ``tokens`` (captured with forward hooks)."""
    inputs = []
    def keep(mod, args, kw, out):
        inputs.append(args[0].detach())

    hooks = [m.register_forward_hook(keep, with_kwargs=True) for m in attention_modules(model)]
    model(tokens)
    for h in hooks:
        h.remove()
    return inputs


def _tau_between(s: torch.Tensor) -> float:
    """A τ with some heads above and some below it."""
    v = s.flatten().sort().values
    return float((v[len(v) // 2 - 1] + v[len(v) // 2]) / 2)


TOKENS = torch.randint(0, 256, (2, 40), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("kind", list(KINDS))
def test_max_logits_matches_reference(kind):
    model = _model(kind)
    track_max_logits(model)
    inputs = _attention_inputs(model, TOKENS)
    s = max_logits(model)
    assert s.shape == (2, 4)
    expected = torch.stack([head_logits(a, x).amax(dim=(0, 2, 3)) for a, x in
                            zip(attention_modules(model), inputs, strict=True)])
    assert_close(s, expected, rtol=1e-5, what="max_logits")


@pytest.mark.parametrize("kind", list(KINDS))
def test_clip_invariants(kind):
    model = _model(kind)
    track_max_logits(model)
    inputs = _attention_inputs(model, TOKENS)
    s_before = max_logits(model)
    tau = _tau_between(s_before)
    before = copy.deepcopy(model.state_dict())
    logits_before = [head_logits(a, x).detach()
                     for a, x in zip(attention_modules(model), inputs, strict=True)]

    clipped = qk_clip_(model, tau=tau, alpha=0.5)

    assert len(clipped) == 2 and sum(len(c) for c in clipped) > 0
    group = 2 if kind == "gqa" else 1  # GQA clips a whole kv group: the max over its query heads decides γ
    for layer, (attn, x, old) in enumerate(zip(attention_modules(model), inputs, logits_before, strict=True)):
        s_group = s_before[layer].view(-1, group).amax(-1).repeat_interleave(group)
        new = head_logits(attn, x).detach()
        for h in range(4):
            if s_group[h] > tau:
                gamma = tau / s_group[h]
                assert clipped[layer][h] == pytest.approx(float(gamma), rel=1e-6)
                finite = torch.isfinite(old[:, h])
                assert_close(new[:, h][finite], gamma * old[:, h][finite], rtol=2e-5,
                             what=f"γ-scaled head {h}")
                assert float(new[:, h].amax()) <= tau * (1 + 2e-5)
            else:
                assert h not in clipped[layer]
                assert torch.equal(new[:, h], old[:, h]), f"layer {layer} head {h} changed"
        assert float(new.amax(dim=(0, 2, 3)).max()) == pytest.approx(min(tau, float(s_before[layer].max())),
                                                                     rel=2e-5)
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    if kind in ("mha", "gqa"):
        allowed = {"wq.weight", "wk.weight"}
    else:
        allowed = {"wq_b.weight", "wq.weight", "wkv_b.weight"}
    assert changed and {k.split(".", 3)[-1] for k in changed} <= allowed, changed
    if kind.startswith("mla"):  # the shared rotary key (in wkv_a) and V (rows of wkv_b) are never touched
        for layer, attn in enumerate(attention_modules(model)):
            pre = f"blocks.{layer}.attn."
            assert torch.equal(before[pre + "wkv_a.weight"], attn.wkv_a.weight)
            v_rows = attn.wkv_b.weight.view(4, 8 + 6, -1)[:, 8:]
            assert torch.equal(before[pre + "wkv_b.weight"].view(4, 8 + 6, -1)[:, 8:], v_rows)

    # idempotent: clipping again with the same statistics changes nothing
    snapshot = copy.deepcopy(model.state_dict())
    assert all(not c for c in qk_clip_(model, tau=tau))
    assert all(torch.equal(snapshot[k], v) for k, v in model.state_dict().items())
    # (a fresh forward of the whole model would see other inputs in layer 1 — layer 0 changed — so the
    # "recomputed S_max = τ" check above feeds each layer the inputs it saw when the statistics were taken)


def test_mla_rope_and_nope_factors():
    """MLA: q_nope rows × √γ, q_rope rows × γ, k_nope rows × √γ (α = 0.5), exactly."""
    model = _model("mla")
    track_max_logits(model)
    model(TOKENS)
    attn = attention_modules(model)[0]
    s = attn.max_logit.clone()
    tau = float(s.min()) * 0.5  # every head clipped
    wq = attn.wq_b.weight.detach().clone().view(4, 12, -1)
    wkv = attn.wkv_b.weight.detach().clone().view(4, 14, -1)
    qk_clip_(model, tau=tau)
    g = (tau / s)[:, None, None]
    new_q, new_kv = attn.wq_b.weight.view(4, 12, -1), attn.wkv_b.weight.view(4, 14, -1)
    assert_close(new_q[:, :8], wq[:, :8] * g.sqrt(), rtol=1e-6, what="q_nope")
    assert_close(new_q[:, 8:], wq[:, 8:] * g, rtol=1e-6, what="q_rope")
    assert_close(new_kv[:, :8], wkv[:, :8] * g.sqrt(), rtol=1e-6, what="k_nope")
    assert torch.equal(new_kv[:, 8:], wkv[:, 8:])


@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_alpha_splits_gamma_between_query_and_key(alpha):
    model = _model("mha")
    track_max_logits(model)
    inputs = _attention_inputs(model, TOKENS)
    attn = attention_modules(model)[0]
    s = attn.max_logit.clone()
    wq, wk = attn.wq.weight.detach().clone(), attn.wk.weight.detach().clone()
    tau = float(s.max()) * 0.5
    qk_clip_(model, tau=tau, alpha=alpha)
    g = qk_clip_gamma(s, tau).repeat_interleave(8)[:, None]
    assert_close(attn.wq.weight, wq * g**alpha, rtol=1e-6, what="W_q")
    assert_close(attn.wk.weight, wk * g ** (1 - alpha), rtol=1e-6, what="W_k")
    assert float(head_logits(attn, inputs[0]).detach().max()) == pytest.approx(tau, rel=2e-5)


def test_gamma():
    s = torch.tensor([50.0, 100.0, 200.0, 400.0])
    assert torch.equal(qk_clip_gamma(s, 100.0), torch.tensor([1.0, 1.0, 0.5, 0.25]))


@pytest.mark.parametrize("tau, alpha, match", [
    (0.0, 0.5, "tau"), (-3.0, 0.5, "tau"), (float("inf"), 0.5, "tau"),
    (100.0, -0.1, "alpha"), (100.0, 1.5, "alpha"),
])
def test_bad_tau_alpha(tau, alpha, match):
    model = _model("mha")
    track_max_logits(model)
    model(TOKENS)
    with pytest.raises(ValueError, match=match):
        qk_clip_(model, tau=tau, alpha=alpha)
    with pytest.raises(ValueError, match=match):
        build_optimizer(model, "muonclip", lr=0.01, tau=tau, alpha=alpha)


def test_muonclip_distributed_is_refused():
    with pytest.raises(ValueError, match="distributed"):
        build_optimizer(_model("mha"), "muonclip", lr=0.01, distributed=True)


def test_clip_before_tracked_forward_raises():
    model = _model("mla")
    with pytest.raises(ValueError, match="no max logit recorded"):
        qk_clip_(model)
    with pytest.raises(ValueError, match="no max logit recorded"):
        max_logits(model)
    track_max_logits(model)  # on, but no forward yet
    with pytest.raises(ValueError, match="forward pass"):
        qk_clip_(model)


def _train_steps(model, opt, steps: int, callback=None):
    gen = torch.Generator().manual_seed(1)
    records = []
    for step in range(steps):
        tokens = torch.randint(0, 256, (2, 33), generator=gen)
        _, loss = model(tokens[:, :-1], tokens[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
        record = {"loss": loss.item()}
        if callback:
            callback(step + 1, model, opt, record)
        records.append(record)
    return records


@pytest.mark.parametrize("kind", ["gqa", "mla"])
def test_muonclip_is_muon_then_qk_clip(kind):
    model = _model(kind)
    twin = copy.deepcopy(model)
    tau = 0.5 * float(_max_logit_of(model))
    opt = build_optimizer(model, "muonclip", lr=0.02, weight_decay=0.1, tau=tau)
    assert isinstance(opt, MuonClip) and isinstance(opt, Muon)
    twin_opt = build_optimizer(twin, "muon", lr=0.02, weight_decay=0.1)
    track_max_logits(twin)
    records = _train_steps(model, opt, 2, callback=max_logit_callback)
    gen = torch.Generator().manual_seed(1)
    for _ in range(2):
        tokens = torch.randint(0, 256, (2, 33), generator=gen)
        _, loss = twin(tokens[:, :-1], tokens[:, 1:])
        twin_opt.zero_grad()
        loss.backward()
        twin_opt.step()
        qk_clip_(twin, tau=tau)
    for (name, p), p2 in zip(model.named_parameters(), twin.parameters(), strict=True):
        assert torch.equal(p, p2), name
    assert records[0]["n_clipped"] > 0 and 0 < records[0]["clipped_fraction"] <= 1
    assert records[0]["max_logit"] > tau
    assert opt.last_stats["max_logits"].shape == (2, 4)


def test_muonclip_with_a_high_tau_is_muon():
    model = _model("mla")
    twin = copy.deepcopy(model)
    opt = build_optimizer(model, "muonclip", lr=0.02, weight_decay=0.1, tau=1e9)
    twin_opt = build_optimizer(twin, "muon", lr=0.02, weight_decay=0.1)
    records = _train_steps(model, opt, 2, callback=max_logit_callback)
    _train_steps(twin, twin_opt, 2)
    assert all(torch.equal(p, p2) for p, p2 in zip(model.parameters(), twin.parameters(), strict=True))
    assert records[-1]["n_clipped"] == 0 and len(records[-1]["max_logit_layers"]) == 2


def test_muonclip_state_dict_round_trip():
    model = _model("mha")
    opt = build_optimizer(model, "muonclip", lr=0.02, weight_decay=0.1, tau=5.0)
    _train_steps(model, opt, 1)
    opt2 = build_optimizer(copy.deepcopy(model), "muonclip", lr=0.02, weight_decay=0.1, tau=5.0)
    opt2.load_state_dict(opt.state_dict())
    assert opt2.state_dict()["param_groups"][0]["lr"] == 0.02


def _max_logit_of(model) -> float:
    track_max_logits(model)
    model(TOKENS)
    s = float(max_logits(model).max())
    track_max_logits(model, enabled=False)
    return s


def test_attention_modules_are_found_in_layer_order():
    model = _model("gqa")
    mods = attention_modules(model)
    assert [m.layer_idx for m in mods] == [0, 1] and all(isinstance(m, MultiHeadAttention) for m in mods)

"""Multi-head latent attention: shapes, options, implementations agree, decode = prefill, latent-only
cache, max-logit tracking."""

from __future__ import annotations

import pytest
import torch

from kimi_mini import KimiConfig, KimiMini
from kimi_mini.mla import (
    MultiHeadLatentAttention,
    mha_cache_numel_per_token,
    mla_cache_numel_per_token,
    mla_logits_reference,
)
from kimi_mini.testing import assert_close

OPTS = dict(q_lora_rank=24, kv_lora_rank=20, qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=6)


def _config(**opts) -> KimiConfig:
    return KimiConfig(d_model=32, n_layers=2, n_heads=4, max_seq_len=160, attention="mla",
                      attention_options={**OPTS, **opts})


def _mla(seed: int = 0, **opts) -> MultiHeadLatentAttention:
    torch.manual_seed(seed)
    m = MultiHeadLatentAttention(_config(**opts))
    for p in m.parameters():
        if p.dim() == 2:
            torch.nn.init.normal_(p, std=0.3)
    return m


def test_shapes_and_parameters():
    m = _mla()
    x = torch.randn(2, 11, 32)
    assert m(x).shape == (2, 11, 32)
    assert m.wq_a.weight.shape == (24, 32) and m.wq_b.weight.shape == (4 * 12, 24)
    assert m.wkv_a.weight.shape == (20 + 4, 32) and m.wkv_b.weight.shape == (4 * (8 + 6), 20)
    assert m.wo.weight.shape == (32, 4 * 6)
    full_rank = _mla(q_lora_rank=None)
    assert full_rank.wq.weight.shape == (48, 32) and not hasattr(full_rank, "wq_a")
    assert full_rank(x).shape == (2, 11, 32)


def test_defaults_follow_k2_ratios():
    m = MultiHeadLatentAttention(KimiConfig(d_model=64, n_heads=4, attention="mla"))
    dims = (m.qk_nope_head_dim, m.qk_rope_head_dim, m.v_head_dim, m.kv_lora_rank, m.q_lora_rank)
    assert dims == (16, 8, 16, 64, None)


@pytest.mark.parametrize("bad, match", [
    (dict(kv_rank=3), "unknown MLA option"),
    (dict(qk_rope_head_dim=5), "qk_rope_head_dim"),
    (dict(kv_lora_rank=0), "kv_lora_rank"),
    (dict(q_lora_rank=2.5), "q_lora_rank"),
    (dict(impl="flash"), "impl"),
], ids=["unknown-key", "odd-rope", "zero-rank", "float-rank", "bad-impl"])
def test_bad_options(bad, match):
    with pytest.raises(ValueError, match=match):
        MultiHeadLatentAttention(_config(**bad))


@pytest.mark.parametrize("T", [63, 130])
def test_sdpa_matches_naive(T):
    m = _mla()
    x = torch.randn(2, T, 32)
    ref = _mla(impl="naive")
    ref.load_state_dict(m.state_dict())
    assert_close(m(x), ref(x), rtol=1e-5, what="sdpa vs naive MLA")


def test_triton_matches_sdpa_with_gradients(device):
    m = _mla().to(device)
    tri = _mla(impl="triton").to(device)
    tri.load_state_dict(m.state_dict())
    x = torch.randn(2, 63, 32, device=device, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    y, y2 = m(x), tri(x2)
    assert_close(y2, y, rtol=1e-5, what="triton vs sdpa MLA")
    g = torch.randn_like(y)
    y.backward(g)
    y2.backward(g)
    assert_close(x2.grad, x.grad, rtol=1e-4, what="dx")
    for (name, p), p2 in zip(m.named_parameters(), tri.parameters(), strict=True):
        assert_close(p2.grad, p.grad, rtol=1e-4, atol=1e-6, what=f"grad {name}")


@pytest.mark.parametrize("q_lora_rank", [24, None], ids=["q-lora", "full-rank-q"])
def test_decode_equals_prefill(q_lora_rank):
    torch.manual_seed(1)
    model = KimiMini(_config(q_lora_rank=q_lora_rank)).eval()
    tokens = torch.randint(0, 256, (2, 21))
    full, _ = model(tokens)
    cache = model.new_cache()
    outs = [model(tokens[:, :8], cache=cache)[0]]
    for t in range(8, 21):
        outs.append(model(tokens[:, t : t + 1], cache=cache)[0])
    assert_close(torch.cat(outs, 1), full, rtol=1e-5, what="decode vs prefill")
    # generation with and without the cache agrees token for token
    prompt = tokens[:, :5]
    assert torch.equal(model.generate(prompt, 12, temperature=0),
                       model.generate(prompt, 12, temperature=0, use_cache=False))


def test_cache_holds_only_latent_and_shared_rope_key():
    torch.manual_seed(2)
    model = KimiMini(_config()).eval()
    cache = model.new_cache()
    model(torch.randint(0, 256, (3, 10)), cache=cache)
    for state in cache.layers:
        assert set(state) == {"c_kv", "k_rope"}
        assert state["c_kv"].shape == (3, 10, 20)  # [B, T, kv_lora_rank]
        assert state["k_rope"].shape == (3, 10, 4)  # [B, T, qk_rope]: one rotary key for all heads
    per_token = mla_cache_numel_per_token(20, 4)
    assert cache.nbytes() == 2 * 3 * 10 * per_token * 4  # 2 layers, fp32
    # K2: 512 + 64 = 576 numbers per token and layer, vs 2·64·128 = 16384 for MHA of the same heads
    assert mla_cache_numel_per_token(512, 64) == 576
    assert mha_cache_numel_per_token(64, 128) == 16384


@pytest.mark.parametrize("impl", ["torch", "naive", "triton"])
def test_max_logit_tracking(impl, device):
    m = _mla(impl=impl).to(device)
    x = torch.randn(2, 63, 32, device=device)
    m(x)
    assert m.max_logit is None  # off by default
    m.track_max_logit = True
    m(x)
    expected = mla_logits_reference(m, x).amax(dim=(0, 2, 3))
    assert m.max_logit.shape == (4,)
    assert_close(m.max_logit, expected, rtol=1e-5, what=f"max logit ({impl})")


def test_tracking_does_not_change_outputs_or_gradients():
    m = _mla()
    x = torch.randn(2, 30, 32)
    y0 = m(x)
    y0.sum().backward()
    g0 = [p.grad.clone() for p in m.parameters()]
    m.zero_grad()
    m.track_max_logit = True
    y1 = m(x)
    y1.sum().backward()
    assert torch.equal(y0, y1)
    assert all(torch.equal(a, p.grad) for a, p in zip(g0, m.parameters(), strict=True))


def test_decode_tracks_max_logit_over_cached_keys():
    m = _mla().eval()
    m.track_max_logit = True
    x = torch.randn(1, 12, 32)
    state: dict = {}
    m(x[:, :11], state=state)
    m(x[:, 11:], state=state, start_pos=11)
    expected = mla_logits_reference(m, x)[:, :, 11:].amax(dim=(0, 2, 3))  # the last query row only
    assert_close(m.max_logit, expected, rtol=1e-5, what="decode max logit")

"""KimiMini: config validation, causality, KV-cache decoding, parameter counting, registries."""

import pytest
import torch

from kimi_mini.layers import blockwise_max_logit, causal_attention
from kimi_mini.model import KimiConfig, KimiMini, count_params, sampling_probs
from kimi_mini.registry import register_ffn
from kimi_mini.testing import assert_close

SMALL = dict(d_model=32, n_layers=2, n_heads=4, d_ff=64, max_seq_len=64)


@pytest.mark.parametrize("field,value,match", [
    ("d_model", 0, "d_model"),
    ("n_layers", -1, "n_layers"),
    ("n_heads", 5, "n_heads"),  # 32 % 5 != 0
    ("n_kv_heads", 3, "n_kv_heads"),  # 4 % 3 != 0
    ("head_dim", 7, "head_dim"),  # odd: RoPE rotates pairs
    ("attention", "nope", "attention"),
    ("ffn", "sparse?", "ffn"),
    ("rope_theta", 0.0, "rope_theta"),
    ("vocab_size", 2.5, "vocab_size"),
    ("ffn_options", [1], "ffn_options"),
])
def test_config_rejects_bad_values_naming_the_field(field, value, match):
    with pytest.raises(ValueError, match=match):
        KimiConfig(**{**SMALL, field: value})


def test_unknown_attention_error_lists_the_registered_names():
    with pytest.raises(ValueError, match="mha"):
        KimiConfig(attention="flash9")


@pytest.mark.parametrize("n_kv_heads", [None, 2, 1], ids=["mha", "gqa2", "mqa"])
def test_changing_a_future_token_never_changes_past_logits(n_kv_heads):
    torch.manual_seed(0)
    model = KimiMini(KimiConfig(**SMALL, n_kv_heads=n_kv_heads)).eval()
    x = torch.randint(0, 256, (2, 40))
    t = 17
    y = x.clone()
    y[:, t + 1:] = torch.randint(0, 256, y[:, t + 1:].shape)
    a, _ = model(x)
    b, _ = model(y)
    assert torch.equal(a[:, : t + 1], b[:, : t + 1])
    assert not torch.allclose(a[:, t + 1:], b[:, t + 1:])  # the test can see a change when there is one


def test_loss_is_mean_next_token_cross_entropy():
    torch.manual_seed(0)
    model = KimiMini(KimiConfig(**SMALL))
    x = torch.randint(0, 256, (2, 10))
    logits, loss = model(x, x)
    manual = -logits.log_softmax(-1).gather(-1, x[..., None]).mean()
    assert_close(loss, manual, rtol=1e-6)
    with pytest.raises(ValueError, match="targets"):
        model(x, x[:, :5])
    with pytest.raises(ValueError, match="tokens"):
        model(x.float())


@pytest.mark.parametrize("n_kv_heads", [None, 2], ids=["mha", "gqa"])
def test_kv_cache_decoding_equals_prefill(n_kv_heads):
    torch.manual_seed(0)
    model = KimiMini(KimiConfig(**SMALL, n_kv_heads=n_kv_heads)).eval()
    x = torch.randint(0, 256, (2, 23))
    full, _ = model(x)
    cache = model.new_cache()
    parts = [model(x[:, :9], cache=cache)[0]]  # prefill 9, then decode one token at a time
    parts += [model(x[:, t : t + 1], cache=cache)[0] for t in range(9, 23)]
    assert cache.pos == 23
    assert_close(torch.cat(parts, dim=1), full, rtol=1e-5, atol=1e-5, what="decode vs prefill")


def test_generate_cached_equals_uncached_greedy():
    torch.manual_seed(0)
    model = KimiMini(KimiConfig(**SMALL))
    prompt = torch.randint(0, 256, (1, 5))
    a = model.generate(prompt, 12, temperature=0)
    b = model.generate(prompt, 12, temperature=0, use_cache=False)
    assert a.shape == (1, 17) and torch.equal(a, b) and torch.equal(a[:, :5], prompt)
    with pytest.raises(ValueError, match="max_new_tokens"):
        model.generate(prompt, 100)


def test_sampling_probs_temperature_and_top_k():
    logits = torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0], [0.0, 3.0, 3.0, 1.0, 2.0]])
    p = sampling_probs(logits, 1.0)
    assert_close(p, logits.softmax(-1), what="τ=1, no top-k: the softmax")
    p = sampling_probs(logits, 0.5, top_k=2)
    expected = torch.tensor([[2.0, 1.0], [3.0, 3.0]]).div(0.5).softmax(-1)
    assert_close(p[0, :2], expected[0], what="top-2 of row 0")
    assert_close(p[1, 1:3], expected[1], what="top-2 of row 1 (a tie)")
    assert (p[0, 2:] == 0).all() and p[1, 0] == 0 and (p[1, 3:] == 0).all()
    assert torch.equal(sampling_probs(logits, 0.0), torch.tensor([[1.0, 0, 0, 0, 0], [0, 1.0, 0, 0, 0]]))
    # lower temperature sharpens: the entropy falls monotonically
    probs = [sampling_probs(logits[0], t) for t in (2.0, 1.0, 0.5)]
    ent = [float(-(q * q.log()).sum()) for q in probs]
    assert ent[0] > ent[1] > ent[2]
    assert_close(sampling_probs(logits, 1.0, top_k=99), logits.softmax(-1), what="top_k >= V keeps every token")
    for kwargs, match in [(dict(temperature=-1.0), "temperature"), (dict(top_k=0), "top_k")]:
        with pytest.raises(ValueError, match=match):
            sampling_probs(logits, **kwargs)


def test_generate_with_top_k_1_is_greedy_and_samples_only_top_k():
    torch.manual_seed(0)
    model = KimiMini(KimiConfig(**SMALL))
    prompt = torch.randint(0, 256, (2, 5))
    greedy = model.generate(prompt, 8, temperature=0)
    top1 = model.generate(prompt, 8, temperature=1.5, top_k=1, generator=torch.Generator().manual_seed(0))
    assert torch.equal(top1, greedy)
    out = model.generate(prompt, 1, temperature=2.0, top_k=3, generator=torch.Generator().manual_seed(1))
    allowed = model(prompt)[0][:, -1].topk(3, dim=-1).indices  # [B, 3]
    assert (allowed == out[:, -1:]).any(-1).all()


def test_count_params_matches_a_hand_count():
    cfg = KimiConfig(vocab_size=256, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=64)
    C, V, D, H, Hkv, F = 32, 256, 8, 4, 2, 64
    attn = C * H * D + 2 * C * Hkv * D + H * D * C  # wq, wk, wv, wo
    ffn = 3 * C * F
    per_layer = attn + ffn + 2 * C  # + two RMSNorm gains
    total = V * C + 2 * per_layer + C + C * V  # embedding, blocks, final norm, untied head
    n = count_params(cfg)
    assert n.total == total == sum(p.numel() for p in KimiMini(cfg).parameters())
    assert n.activated == total  # dense: every weight is used by every token


def test_activated_numel_overrides_what_a_module_counts():
    class HalfUsed(torch.nn.Module):
        def __init__(self, config, layer_idx):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(10, 10))

        def activated_numel(self):
            return 50

        def forward(self, x):
            return x

    register_ffn("test_half_used")(HalfUsed)
    n = count_params(KimiConfig(**SMALL, ffn="test_half_used"))
    assert n.total - n.activated == 2 * 50


def test_attention_core_naive_equals_sdpa_with_gqa_and_offset():
    torch.manual_seed(0)
    q = torch.randn(2, 4, 5, 16)
    k, v = torch.randn(2, 2, 13, 16), torch.randn(2, 2, 13, 16)  # the 5 queries are the last of 13
    assert_close(causal_attention(q, k, v, "naive"), causal_attention(q, k, v, "torch"), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="impl"):
        causal_attention(q, k, v, "fast")


def test_blockwise_max_logit_equals_dense_max_over_causal_pairs():
    torch.manual_seed(0)
    q, k = torch.randn(2, 4, 37, 8), torch.randn(2, 2, 37, 8)
    kk = k.repeat_interleave(2, dim=1)
    s = (q @ kk.transpose(-1, -2)) * 0.3
    s = s.masked_fill(~torch.ones(37, 37, dtype=torch.bool).tril(), float("-inf"))
    assert_close(blockwise_max_logit(q, k, 0.3, block=8), s.amax(dim=(0, 2, 3)), rtol=1e-6)


def test_mha_records_max_logit_only_when_tracking():
    torch.manual_seed(0)
    model = KimiMini(KimiConfig(**SMALL))
    attn = model.blocks[0].attn
    model(torch.randint(0, 256, (1, 8)))
    assert attn.max_logit is None
    attn.track_max_logit = True
    model(torch.randint(0, 256, (1, 8)))
    assert attn.max_logit.shape == (4,) and torch.isfinite(attn.max_logit).all()

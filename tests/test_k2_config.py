"""Kimi K2's configuration counts to the published 1T total / 32B activated; k2_mini keeps its shape."""

from __future__ import annotations

import pytest
import torch

from kimi_mini.k2 import K2_PAPER_ACTIVATED, K2_PAPER_TOTAL, config_table, k2_config, k2_mini
from kimi_mini.mla import MultiHeadLatentAttention
from kimi_mini.model import KimiMini, count_params
from kimi_mini.moe import MoE


@pytest.fixture(scope="module")
def k2_count():
    return count_params(k2_config())


def test_k2_counts_to_1t_total_32b_activated(k2_count):
    assert abs(k2_count.total / K2_PAPER_TOTAL - 1) < 0.01, k2_count
    assert abs(k2_count.activated / K2_PAPER_ACTIVATED - 1) < 0.01, k2_count


def test_k2_count_by_hand(k2_count):
    """The same number from the config's fields alone (every weight: embeddings, head, norms)."""
    d, L, H, V = 7168, 61, 64, 163_840
    attn = (d * 1536 + 1536 + 1536 * H * (128 + 64)  # query path: wq_a, q_norm, wq_b
            + d * (512 + 64) + 512 + 512 * H * (128 + 128)  # kv path: wkv_a, kv_norm, wkv_b
            + H * 128 * d)  # wo
    expert = 3 * d * 2048
    moe_total = d * 384 + 384 * expert + expert  # router + routed + shared
    moe_active = d * 384 + 8 * expert + expert
    dense = 3 * d * 18_432
    common = 2 * V * d + d + L * (attn + 2 * d)  # embedding, head, final norm, per-layer attention + 2 norms
    assert k2_count.total == common + dense + (L - 1) * moe_total
    assert k2_count.activated == common + dense + (L - 1) * moe_active


def test_k2_config_fields():
    c = k2_config()
    assert (c.n_layers, c.d_model, c.n_heads, c.vocab_size, c.d_ff) == (61, 7168, 64, 163_840, 18_432)
    assert c.attention == "mla" and c.attention_options == dict(
        q_lora_rank=1536, kv_lora_rank=512, qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128)
    assert c.ffn == "moe" and c.ffn_options["n_experts"] // c.ffn_options["top_k"] == 48
    assert c.ffn_options["first_k_dense_replace"] == 1
    assert k2_config(max_seq_len=4096).max_seq_len == 4096


# ids avoid the word "gpu": conftest would take it for the gpu marker and skip the case
@pytest.mark.parametrize("preset", ["toy", "gpu"], ids=["mini-toy", "mini-h100"])
def test_k2_mini_keeps_the_shape(preset):
    c = k2_mini(preset)
    assert c.attention == "mla" and c.ffn == "moe"
    assert c.ffn_options["n_experts"] // c.ffn_options["top_k"] == 48  # K2's sparsity
    o = c.attention_options
    assert o["qk_nope_head_dim"] == 2 * o["qk_rope_head_dim"] == o["v_head_dim"]
    n = count_params(c)
    assert n.activated < n.total


def test_k2_mini_trains_one_step():
    torch.manual_seed(0)
    model = KimiMini(k2_mini(n_layers=2))
    assert isinstance(model.blocks[0].attn, MultiHeadLatentAttention)
    assert not isinstance(model.blocks[0].ffn, MoE) and isinstance(model.blocks[1].ffn, MoE)  # first dense
    tokens = torch.randint(0, 256, (2, 17))
    _, loss = model(tokens[:, :-1], tokens[:, 1:])
    loss.backward()
    assert 5.0 < loss.item() < 6.0  # ≈ ln 256 = 5.55 at initialisation
    assert all(p.grad is not None for n, p in model.named_parameters() if "router" not in n)


def test_k2_mini_rejects_unknown_preset():
    with pytest.raises(ValueError, match="preset"):
        k2_mini("huge")


def test_config_table():
    rows = config_table(k2_config(), k2_mini(), names=("K2", "k2_mini"))
    by_field = {r["field"]: r for r in rows}
    assert by_field["d_model"]["K2"] == 7168 and by_field["d_model"]["k2_mini"] == 128
    assert by_field["ffn.n_experts"]["K2"] == 384
    with pytest.raises(ValueError, match="names"):
        config_table(k2_config(), names=("a", "b"))

"""Kimi K2's configuration, and K2 in miniature.

Paper: *Kimi K2: Open Agentic Intelligence* (arXiv 2507.20534), §2.2 and the public model config.
K2 is a DeepSeek-V3-shaped decoder: 61 layers (the first dense), hidden size 7168, MLA with 64 heads
(q_lora_rank 1536, kv_lora_rank 512, qk_nope 128, qk_rope 64, v 128), MoE with 384 routed experts,
top-8, one shared expert of width 2048, dense FFN width 18432, a 163,840-token vocabulary and an
untied LM head. Counting every weight of that config gives the published "1T total / 32B activated":

    total     = embeddings + head + Σ_layers (attention + norms + FFN)               ≈ 1.03·10¹²
    activated = the same with each MoE layer counted as router + shared + 8 of 384   ≈ 32.9·10⁹

:func:`k2_config` is that configuration (count it with ``count_params``, which builds on the meta
device — never instantiate it). :func:`k2_mini` keeps K2's *shape* at a size a CPU can train.
"""

from __future__ import annotations

from typing import Any

from kimi_mini.model import KimiConfig

__all__ = ["K2_PAPER_TOTAL", "K2_PAPER_ACTIVATED", "k2_config", "k2_mini", "config_table"]

K2_PAPER_TOTAL = 1.03e12  # the report's "1T", counted exactly from the config
K2_PAPER_ACTIVATED = 32.9e9  # the report's "32B"


def k2_config(**overrides: Any) -> KimiConfig:
    """The full Kimi K2 configuration (about 1.03T parameters: count it, do not build it).

    ``overrides`` replace fields (e.g. ``max_seq_len``). Returns a validated :class:`KimiConfig` with
    ``attention="mla"`` and ``ffn="moe"``.
    """
    import kimi_mini.mla  # noqa: F401  (registers "mla")
    import kimi_mini.moe  # noqa: F401  (registers "moe")

    fields: dict[str, Any] = dict(
        vocab_size=163_840,
        d_model=7168,
        n_layers=61,
        n_heads=64,
        head_dim=128,
        d_ff=18_432,  # the dense first layer's SwiGLU width
        max_seq_len=131_072,  # 128K after YaRN (pre-trained at 4K)
        rope_theta=50_000.0,
        norm_eps=1e-6,
        attention="mla",
        attention_options=dict(q_lora_rank=1536, kv_lora_rank=512, qk_nope_head_dim=128,
                               qk_rope_head_dim=64, v_head_dim=128),
        ffn="moe",
        ffn_options=dict(n_experts=384, top_k=8, d_expert=2048, n_shared=1, route_scale=2.827,
                         first_k_dense_replace=1),
    )
    fields.update(overrides)
    return KimiConfig(**fields)


_MINI = {
    # d_model, layers, heads, q_lora, kv_lora, nope, rope, v, dense ffn, experts, top_k, expert width
    "toy": dict(d_model=128, n_layers=4, n_heads=4, q_lora_rank=64, kv_lora_rank=32, qk_nope_head_dim=32,
                qk_rope_head_dim=16, v_head_dim=32, d_ff=320, n_experts=96, top_k=2, d_expert=32),
    "gpu": dict(d_model=512, n_layers=8, n_heads=8, q_lora_rank=192, kv_lora_rank=64, qk_nope_head_dim=64,
                qk_rope_head_dim=32, v_head_dim=64, d_ff=1280, n_experts=96, top_k=2, d_expert=128),
}


def k2_mini(preset: str = "toy", **overrides: Any) -> KimiConfig:
    """Kimi K2 in miniature: the same architecture with every width scaled down.

    Kept from K2: MLA with a low-rank query path, qk_nope : qk_rope : v = 2 : 1 : 2, one shared
    rotary key, RMSNorm on the latents; the first layer dense, then MoE with a sigmoid top-k router,
    one shared expert and the aux-loss-free bias; **sparsity 48** (96 experts top-2 on both presets:
    with top-1 the renormalised weight s/s·ρ is a constant and the router would get no gradient);
    dense FFN width = 2.5 × d_model (K2: 18432 / 7168 ≈ 2.57); an untied head.
    Changed: byte vocabulary (256, not 163,840); far fewer layers and heads; the latent ranks are
    larger *fractions* of d_model (q_lora 0.5·d, kv_lora 0.25·d vs K2's 0.21·d and 0.07·d — a
    64-wide latent would starve 128-wide attention); expert width 0.25·d (K2: 0.29·d); top-2 of 96
    (K2: top-8 of 384 — top-8 of 384 tiny experts is not trainable in a 90 s CPU budget).
    ``overrides``: any :class:`KimiConfig` field, replacing the preset's value.
    """
    import kimi_mini.mla  # noqa: F401
    import kimi_mini.moe  # noqa: F401

    if preset not in _MINI:
        raise ValueError(f"preset: expected one of {sorted(_MINI)}, got {preset!r}")
    m = _MINI[preset]
    fields: dict[str, Any] = dict(
        vocab_size=256,
        d_model=m["d_model"],
        n_layers=m["n_layers"],
        n_heads=m["n_heads"],
        head_dim=m["qk_nope_head_dim"],
        d_ff=m["d_ff"],
        max_seq_len=512,
        rope_theta=10_000.0,
        attention="mla",
        attention_options=dict(q_lora_rank=m["q_lora_rank"], kv_lora_rank=m["kv_lora_rank"],
                               qk_nope_head_dim=m["qk_nope_head_dim"], qk_rope_head_dim=m["qk_rope_head_dim"],
                               v_head_dim=m["v_head_dim"]),
        ffn="moe",
        ffn_options=dict(n_experts=m["n_experts"], top_k=m["top_k"], d_expert=m["d_expert"], n_shared=1,
                         first_k_dense_replace=1),
    )
    fields.update(overrides)
    return KimiConfig(**fields)


def config_table(*configs: KimiConfig, names: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
    """Rows ``{"field": ..., name: value, ...}`` comparing configs side by side (options flattened)."""
    names = names or tuple(f"config {i}" for i in range(len(configs)))
    if len(names) != len(configs):
        raise ValueError(f"names: expected {len(configs)} names, got {len(names)}")
    flat = []
    for c in configs:
        d = {k: v for k, v in c.to_dict().items() if not k.endswith("_options")}
        d.update({f"attn.{k}": v for k, v in c.attention_options.items()})
        d.update({f"ffn.{k}": v for k, v in c.ffn_options.items()})
        flat.append(d)
    keys = list(dict.fromkeys(k for d in flat for k in d))
    return [{"field": k, **{n: d.get(k, "") for n, d in zip(names, flat, strict=True)}} for k in keys]

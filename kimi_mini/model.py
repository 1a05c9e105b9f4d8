"""KimiMini: a small decoder-only language model with swappable attention and feed-forward parts.

The shape follows Kimi K2 (arXiv 2507.20534) and the Llama family it descends from: token embedding,
``n_layers`` pre-norm blocks ``x ← x + Attn(RMSNorm(x)); x ← x + FFN(RMSNorm(x))``, a final RMSNorm and
an *untied* LM head. Positions enter through RoPE inside attention. The loss is the mean next-token
cross-entropy (nats per token).

Attention and FFN are looked up by name in :mod:`kimi_mini.registry` (``"mha"``, ``"dense"`` here;
``"mla"``, ``"moba"``, ``"moe"`` from their own modules), so the model never changes when a component
is added.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from kimi_mini.checks import check_int, check_number, check_tensor, describe
from kimi_mini.layers import RMSNorm
from kimi_mini.registry import ATTENTION, FFN, build_attention, build_ffn, declared_parameters

__all__ = ["KimiConfig", "KimiMini", "KVCache", "ParamCount", "count_params", "sampling_probs"]


@dataclass
class KimiConfig:
    """Hyper-parameters of a :class:`KimiMini`. Validated on construction (``ValueError`` naming the field).

    ``attention_options`` / ``ffn_options`` hold component-specific settings (e.g. MoBA's
    ``block_size``/``top_k``, MoE's ``n_experts``); the component validates them when it is built.
    """

    vocab_size: int = 256
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    n_kv_heads: int | None = None  # None: same as n_heads (MHA); fewer: GQA
    head_dim: int | None = None  # None: d_model // n_heads
    d_ff: int = 352  # SwiGLU hidden width (≈ 8/3 · d_model, rounded to a multiple of 32)
    max_seq_len: int = 256
    rope_theta: float = 10000.0
    norm_eps: float = 1e-6
    init_std: float = 0.02
    attention: str = "mha"
    ffn: str = "dense"
    attention_options: dict[str, Any] = field(default_factory=dict)
    ffn_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "d_ff", "max_seq_len"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}: expected a positive int, got {value!r}")
        if self.head_dim is None and self.d_model % self.n_heads:
            raise ValueError(
                f"n_heads: d_model={self.d_model} is not divisible by n_heads={self.n_heads}; "
                "choose n_heads dividing d_model or set head_dim"
            )
        if self.head_dim is not None and (not isinstance(self.head_dim, int) or self.head_dim < 2
                                          or self.head_dim % 2):
            raise ValueError(f"head_dim: expected a positive even int (RoPE rotates pairs), got {self.head_dim!r}")
        if self.head_dim is None and (self.d_model // self.n_heads) % 2:
            raise ValueError(f"n_heads: head dimension d_model/n_heads={self.d_model // self.n_heads} must be even")
        if self.n_kv_heads is not None and (
            not isinstance(self.n_kv_heads, int) or self.n_kv_heads < 1 or self.n_heads % self.n_kv_heads
        ):
            raise ValueError(
                f"n_kv_heads: expected a positive divisor of n_heads={self.n_heads}, got {self.n_kv_heads!r}")
        for name in ("rope_theta", "norm_eps", "init_std"):
            check_number(name, getattr(self, name), 0, lo_open=True)
        if self.attention not in ATTENTION:
            raise ValueError(f"attention: unknown attention {self.attention!r}; expected one of {sorted(ATTENTION)}")
        if self.ffn not in FFN:
            raise ValueError(f"ffn: unknown ffn {self.ffn!r}; expected one of {sorted(FFN)}")
        for name in ("attention_options", "ffn_options"):
            if not isinstance(getattr(self, name), dict):
                raise ValueError(f"{name}: expected a dict, got {type(getattr(self, name)).__name__}")

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    @property
    def dim_head(self) -> int:
        return self.head_dim or self.d_model // self.n_heads

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> KimiConfig:
        return cls(**d)

    def replace(self, **changes: Any) -> KimiConfig:
        """A copy with some fields changed (re-validated)."""
        return dataclasses.replace(self, **changes)


class KVCache:
    """Per-layer decoding state. ``layers[i]`` is a dict owned by layer i's attention module
    (MHA keeps ``k``/``v``; MLA its latent; MoBA its blocks); ``pos`` counts the tokens seen so far."""

    def __init__(self, n_layers: int):
        self.layers: list[dict[str, Tensor]] = [{} for _ in range(n_layers)]
        self.pos = 0

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for d in self.layers for t in d.values() if torch.is_tensor(t))

    def __repr__(self) -> str:
        return f"KVCache(layers={len(self.layers)}, pos={self.pos}, bytes={self.nbytes()})"


class Block(nn.Module):
    """Pre-norm residual block: ``x + Attn(norm(x))`` then ``x + FFN(norm(x))``."""

    def __init__(self, config: KimiConfig, layer_idx: int):
        super().__init__()
        self.attn_norm = RMSNorm(config.d_model, config.norm_eps)
        self.attn = build_attention(config, layer_idx)
        self.ffn_norm = RMSNorm(config.d_model, config.norm_eps)
        self.ffn = build_ffn(config, layer_idx)

    def forward(self, x: Tensor, state: dict | None = None, start_pos: int = 0) -> Tensor:
        x = x + self.attn(self.attn_norm(x), state=state, start_pos=start_pos)
        return x + self.ffn(self.ffn_norm(x))


class KimiMini(nn.Module):
    """Decoder-only LM. ``forward(tokens [B, T] int64, targets [B, T] | None, cache | None)``
    returns ``(logits [B, T, vocab] fp32, loss scalar | None)``."""

    non_muon_parameters = ("tok_emb", "lm_head")  # input and output layers: AdamW inside Muon (Moonlight)

    def __init__(self, config: KimiConfig):
        super().__init__()
        if not isinstance(config, KimiConfig):
            raise ValueError(f"config: expected a KimiConfig, got {type(config).__name__}")
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.d_model)
        self.blocks = nn.ModuleList(Block(config, i) for i in range(config.n_layers))
        self.norm = RMSNorm(config.d_model, config.norm_eps)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """N(0, init_std) for every matrix; output projections of the residual branches scaled by
        1/√(2·n_layers) (GPT-2) so the residual stream's variance does not grow with depth."""
        std = self.config.init_std
        residual = declared_parameters(self, "residual_projections")  # what each component declares
        for p in self.parameters():
            if p.is_meta or p.dim() < 2:  # meta: shapes only (count_params), nothing to initialise
                continue  # norm gains keep their ones, biases their zeros
            if id(p) in residual:
                nn.init.normal_(p, std=std / math.sqrt(2 * self.config.n_layers))
            else:
                nn.init.normal_(p, std=std)

    def forward(self, tokens: Tensor, targets: Tensor | None = None,
                cache: KVCache | None = None) -> tuple[Tensor, Tensor | None]:
        if not isinstance(tokens, Tensor) or tokens.dim() != 2 or tokens.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"tokens: expected int64 [B, T], got {describe(tokens)}")
        device = self.tok_emb.weight.device
        check_tensor("tokens", tokens, device=device)
        if tokens.numel() and not device.type == "meta" and (int(tokens.min()) < 0
                                                              or int(tokens.max()) >= self.config.vocab_size):
            raise ValueError(f"tokens: expected ids in [0, {self.config.vocab_size - 1}], got values in "
                             f"[{int(tokens.min())}, {int(tokens.max())}]")
        T = tokens.shape[1]
        start = cache.pos if cache is not None else 0
        if start + T > self.config.max_seq_len:
            raise ValueError(f"tokens: {start + T} positions exceed max_seq_len={self.config.max_seq_len}")
        x = self.tok_emb(tokens)  # [B, T, C]
        for i, block in enumerate(self.blocks):
            x = block(x, state=cache.layers[i] if cache is not None else None, start_pos=start)
        if cache is not None:
            cache.pos += T
        logits = self.lm_head(self.norm(x)).float()  # [B, T, V]
        loss = None
        if targets is not None:
            if not isinstance(targets, Tensor) or targets.shape != tokens.shape or targets.is_floating_point():
                raise ValueError(f"targets: expected integer ids of shape {tuple(tokens.shape)}, got "
                                 f"{describe(targets)}")
            check_tensor("targets", targets, device=device)
            # the mean over every (sequence, position) pair: one row of logits per predicted token
            loss = F.cross_entropy(rearrange(logits, "b t v -> (b t) v"), rearrange(targets, "b t -> (b t)"))
        return logits, loss

    def new_cache(self) -> KVCache:
        return KVCache(self.config.n_layers)

    @torch.no_grad()
    def generate(self, prompt: Tensor, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, generator: torch.Generator | None = None,
                 use_cache: bool = True) -> Tensor:
        """Sample ``max_new_tokens`` after ``prompt [B, T0]``; returns ``[B, T0 + max_new_tokens]``.

        With ``use_cache`` the prompt is prefilled once and each new token costs one position
        (KV cache); without it the whole sequence is re-run every step (the reference).
        ``temperature=0`` is greedy decoding.
        """
        check_int("max_new_tokens", max_new_tokens, 0)
        check_number("temperature", temperature, 0)
        if top_k is not None:
            check_int("top_k", top_k, 1)
        if not isinstance(prompt, Tensor) or prompt.dim() != 2 or prompt.shape[1] < 1 or prompt.is_floating_point():
            raise ValueError(f"prompt: expected int64 [B, T0] with T0 >= 1, got {describe(prompt)}")
        if prompt.shape[1] + max_new_tokens > self.config.max_seq_len:
            raise ValueError(f"max_new_tokens: prompt + new tokens exceed max_seq_len={self.config.max_seq_len}")
        was_training = self.training
        self.eval()
        out = prompt
        cache = self.new_cache() if use_cache else None
        next_input = prompt
        for _ in range(max_new_tokens):
            logits, _ = self(next_input if use_cache else out, cache=cache)
            logits = logits[:, -1]  # [B, V]
            if temperature == 0:
                nxt = logits.argmax(-1, keepdim=True)
            else:
                nxt = torch.multinomial(sampling_probs(logits, temperature, top_k), 1, generator=generator)
            out = torch.cat([out, nxt], dim=1)
            next_input = nxt
        self.train(was_training)
        return out

    def extra_repr(self) -> str:
        n = count_params_of(self)
        return f"params={n.total:,} (activated per token {n.activated:,})"


def sampling_probs(logits: Tensor, temperature: float = 1.0, top_k: int | None = None) -> Tensor:
    """The distribution :meth:`KimiMini.generate` samples the next token from.

    ``p(x) ∝ exp(z_x / τ)`` over the ``top_k`` largest logits ``z`` (ties with the k-th are kept), 0 elsewhere;
    ``top_k=None`` keeps every token. ``temperature=0`` is greedy: all the mass on the arg-max (the first one
    on ties). Args: ``logits [..., V]`` (any float dtype), ``temperature`` τ ≥ 0, ``top_k`` ≥ 1 or None.
    Returns fp32 (or the logits' wider dtype) ``[..., V]`` summing to 1 along the last axis.
    """
    check_number("temperature", temperature, 0)
    if top_k is not None:
        check_int("top_k", top_k, 1)
    if not isinstance(logits, Tensor) or logits.dim() < 1 or not logits.is_floating_point():
        raise ValueError(f"logits: expected a float tensor [..., V], got {describe(logits)}")
    if temperature == 0:
        return F.one_hot(logits.argmax(-1), logits.shape[-1]).to(torch.promote_types(logits.dtype, torch.float32))
    logits = logits / temperature
    if top_k is not None:  # the k-th largest scaled logit is the cut-off: smaller ones can never be drawn
        kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return logits.softmax(-1)


class ParamCount(NamedTuple):
    """Total parameters and the parameters one token actually uses (they differ for MoE)."""

    total: int
    activated: int


def _activated(module: nn.Module) -> int:
    if hasattr(module, "activated_numel"):
        return int(module.activated_numel())
    own = sum(p.numel() for p in module.parameters(recurse=False))
    return own + sum(_activated(child) for child in module.children())


def count_params_of(model: nn.Module) -> ParamCount:
    return ParamCount(sum(p.numel() for p in model.parameters()), _activated(model))


def count_params(config: KimiConfig) -> ParamCount:
    """Count the parameters of ``KimiMini(config)`` without allocating them (meta device).

    Every weight counts, embedding and LM head included. ``activated`` replaces each module that
    defines ``activated_numel()`` (a sparse MoE layer: shared experts + router + top_k/E of the
    routed experts) by that number.
    """
    with torch.device("meta"):
        model = KimiMini(config)
    return count_params_of(model)



"""Exercises of notebook 04 (MoBA): the gate of one head, and the log-sum-exp merge."""

from __future__ import annotations

import torch
from torch import Tensor

from kimi_mini.exercises import register_exercise
from kimi_mini.moba import merge_attention, moba_decode_attention, moba_gate


def gate_one_head(q: Tensor, k: Tensor, block_size: int, top_k: int) -> Tensor:
    """Exercise solution. ``q, k [T, D]`` of one head → bool ``[T, n_blocks]``: the current block and
    the top-(k−1) blocks that end before it, ranked by ``q_t · mean(K_block)``."""
    return moba_gate(q[None, None], k[None, None], block_size, top_k)[0, 0]


def _wrong_gate_one_head(q: Tensor, k: Tensor, block_size: int, top_k: int) -> Tensor:
    # The classic slip: top_k *history* blocks on top of the current one (k+1 blocks in all).
    return moba_gate(q[None, None], k[None, None], block_size, top_k + 1)[0, 0]


def _check_gate_one_head(candidate) -> None:
    g = torch.Generator().manual_seed(11)
    for T, bs, top_k in ((40, 8, 3), (37, 8, 2), (50, 10, 1), (33, 16, 6)):
        q, k = torch.randn(T, 8, generator=g), torch.randn(T, 8, generator=g)
        got = candidate(q, k, bs, top_k)
        want = gate_one_head(q, k, bs, top_k)
        assert torch.is_tensor(got) and got.shape == want.shape, (
            f"T={T}, block_size={bs}: expected a [T, n_blocks] = {tuple(want.shape)} tensor, got "
            f"{tuple(got.shape) if torch.is_tensor(got) else type(got).__name__}")
        got = got.bool()
        cur = torch.arange(T) // bs
        assert got[torch.arange(T), cur].all(), "every query must attend its own (current) block"
        future = torch.arange(want.shape[1])[None, :] > cur[:, None]
        assert not (got & future).any(), "a query selected a block that starts after it: causality is broken"
        counts, want_counts = got.sum(1), want.sum(1)
        bad = (counts != want_counts).nonzero()
        if len(bad):
            t = int(bad[0])
            raise AssertionError(f"query {t} (block {t // bs}, top_k={top_k}) selects {int(counts[t])} "
                                 f"blocks, expected {int(want_counts[t])} = min(block index + 1, top_k): "
                                 "top_k counts the current block")
        assert torch.equal(got, want), (f"right number of blocks, wrong choice (T={T}, block_size={bs}, "
                                        f"top_k={top_k}): rank eligible blocks by q_t · mean(K_block), "
                                        "no 1/√D")


def merge_two_parts(o1: Tensor, lse1: Tensor, o2: Tensor, lse2: Tensor) -> tuple[Tensor, Tensor]:
    """Exercise solution: :func:`merge_attention` (``o [..., D]``, ``lse [...]``)."""
    return merge_attention(o1, lse1, o2, lse2)


def _wrong_merge_two_parts(o1, lse1, o2, lse2):
    # Right algebra, unstable arithmetic: exp(lse) overflows for large logits.
    w1, w2 = torch.exp(lse1), torch.exp(lse2)
    return (o1 * w1[..., None] + o2 * w2[..., None]) / (w1 + w2)[..., None], torch.log(w1 + w2)


def _check_merge_two_parts(candidate) -> None:
    g = torch.Generator().manual_seed(12)
    for shift, what in ((0.0, "ordinary logits"), (200.0, "large logits (exp(lse) overflows fp32)")):
        s = torch.randn(6, 20, generator=g) * 3 + shift
        v = torch.randn(20, 4, generator=g)
        cut = 7
        parts = [(torch.softmax(s[:, sl], -1) @ v[sl], torch.logsumexp(s[:, sl], -1))
                 for sl in (slice(0, cut), slice(cut, 20))]
        res = candidate(*parts[0], *parts[1])
        assert isinstance(res, tuple) and len(res) == 2, "return a pair (o, lse)"
        o, lse = res
        want_o, want_lse = torch.softmax(s, -1) @ v, torch.logsumexp(s, -1)
        assert torch.isfinite(o).all() and torch.isfinite(lse).all(), (
            f"non-finite result with {what}: subtract the larger lse before exponentiating")
        assert torch.allclose(lse, want_lse, rtol=1e-5, atol=1e-4), (
            f"lse wrong with {what}: lse = log(e^lse1 + e^lse2)")
        assert torch.allclose(o, want_o, rtol=1e-4, atol=1e-5), (
            f"o wrong with {what}: o = e^(lse1 − lse)·o1 + e^(lse2 − lse)·o2")


register_exercise("moba_gate", solution=gate_one_head, wrong=_wrong_gate_one_head,
                  checker=_check_gate_one_head,
                  description="MoBA's gate for one head: current block + top-(k-1) past blocks by q·mean(K)")
register_exercise("moba_merge_lse", solution=merge_two_parts, wrong=_wrong_merge_two_parts,
                  checker=_check_merge_two_parts,
                  description="merge two partial attentions over disjoint keys by their log-sum-exps")


# ------------------------------------------------------- predict, then run: one sparse MoBA decode step
def measured_decode_keys(t: int, block_size: int, top_k: int) -> int:
    """What the checker runs: one MoBA decode step for a new token at position ``t`` (0-based) with the
    cache holding positions 0..t. With q = 0 every attended key gets the same weight, and with one-hot
    values ``v_j = e_j`` the output is ``(1/L)·Σ_{j attended} e_j`` — so the keys it attends are the non-zero
    entries of the output."""
    T = t + 1
    k = torch.randn(1, 1, T, T, generator=torch.Generator().manual_seed(t))
    v = torch.eye(T)[None, None]
    q = torch.zeros(1, 1, 1, T)
    out = moba_decode_attention(q, k, v, t, block_size, top_k)
    return int((out[0, 0, 0] > 0).sum())


def decode_keys_prediction(t: int, block_size: int, top_k: int) -> int:
    """Exercise solution: the token's own block up to itself (t mod B + 1 keys) plus min(k − 1, ⌊t/B⌋) whole
    history blocks of B keys — O(k·B) per token however long the cache is."""
    return (t % block_size + 1) + min(top_k - 1, t // block_size) * block_size


def _check_decode_keys(candidate) -> None:
    for t, bs, top_k in ((5, 8, 3), (70, 16, 3), (200, 32, 2), (40, 16, 8), (63, 64, 4)):
        predicted = candidate(t, bs, top_k)
        measured = measured_decode_keys(t, bs, top_k)
        assert predicted == measured, (
            f"token at position {t}, block_size {bs}, top_k {top_k}: you predicted {predicted} keys, the decode "
            f"step attended {measured}. Hint: its own block counts only up to itself; history blocks are whole; "
            "top_k counts the current block; early tokens have fewer history blocks than slots")


register_exercise("moba_decode_keys", solution=decode_keys_prediction,
                  wrong=lambda t, block_size, top_k: top_k * block_size,  # every block whole, even the current
                  checker=_check_decode_keys,
                  description="predict, then run: how many keys one sparse MoBA decode step attends")

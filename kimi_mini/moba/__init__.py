"""MoBA: Mixture of Block Attention for Long-Context LLMs (Lu et al., arXiv 2502.13189).

MoBA treats the blocks of the key sequence as "experts" and lets every query pick the few that look
most relevant, with a parameter-free gate. Per head, for a sequence of length T cut into blocks of
``B = block_size`` positions (block i holds positions [iB, min((i+1)B, T)); the last may be partial):

    gate score      s(t, i) = q_t · mean(K[block i])                 (fp32, no 1/√D)
    eligible        i < ⌊t / B⌋                                       (block i lies wholly in the past)
    selected        I_t = {⌊t / B⌋} ∪ top-(k−1)_{eligible i} s(t, i)  (k = ``top_k`` counts the current block)
    attention       o_t = Σ_{j ∈ ∪_{i∈I_t} block i, j ≤ t} softmax_j(q_t · k_j / √D) v_j

A query with fewer than k−1 eligible blocks takes all of them, so when T ≤ B·k MoBA *is* causal
attention, and ``top_k = 1`` is block-diagonal causal attention.

Three implementations, one signature (``moba_attention(..., impl=)``), layout ``[B, H, T, D]``:

- ``"naive"``: the reference. A dense ``[T, T]`` mask from :func:`moba_gate`, softmax in fp32. O(T²).
- ``"torch"``: the efficient form of the paper, vectorised PyTorch. The attention over the current
  block (block-diagonal causal) and the attention over each selected history block are computed
  separately and merged with their log-sum-exps,

      lse = log Σ_parts exp(lse_part),      o = Σ_parts exp(lse_part − lse) · o_part,

  the history part *key-block-centric* as in the authors' varlen version: the queries that chose key
  block i are gathered and attend to block i alone (a block chosen by many queries is cut into pieces
  of ≤ 1024 of them; pieces of similar size are batched into one dense call), so the work is
  O(T·k·B·D) and no T×T tensor ever exists. The current block is computed as two causal half-blocks
  plus the second half's queries over the first half's keys — 3/4 of a full block's score pairs, where
  a CPU kernel tiling keys by 512 would compute the masked half of a 512-block anyway. Each part is one call
  of :func:`attend_part` — PyTorch's fused CPU flash kernel, which returns the lse, or three explicit
  lines elsewhere — and the output is merged in place, so the peak memory stays near the output's
  size. The backward pass is custom (flash-attention style): each part's probabilities are recomputed
  from the *final* lse, ``P = exp(S − lse)``, and with ``δ_t = do_t · o_t`` the part's
  ``dS = P ⊙ (dO Vᵀ − δ)`` is exactly its share of the dense gradient — summing the parts gives dq,
  dk, dv.
- ``"triton"``: ``kimi_mini.kernels.moba`` (the gate on the device; kernels scheduled by key block).

Beyond the released code (which decodes with full attention), :class:`MobaAttention` also *decodes
sparsely*: a new token gates over the mean keys of the cached, completed blocks and attends only to
its chosen blocks, and the decoded output at position t equals the prefill output at t.

Layout of this package: :mod:`.naive` (the gate and the dense-mask reference), :mod:`.efficient` (the
LSE-merge path with its custom backward), :mod:`.layer` (``moba_attention`` dispatch, sparse decoding,
the ``"moba"`` model component).
"""

from kimi_mini.impl import IMPLS
from kimi_mini.moba.efficient import attend_part, attend_part_backward, moba_attention_torch
from kimi_mini.moba.layer import MobaAttention, build_moba_attention, moba_attention, moba_decode_attention
from kimi_mini.moba.naive import (
    block_means,
    merge_attention,
    moba_attention_naive,
    moba_gate,
    moba_select,
    moba_sparsity,
)

__all__ = [
    "moba_gate",
    "moba_select",
    "moba_attention",
    "moba_attention_naive",
    "moba_attention_torch",
    "moba_sparsity",
    "merge_attention",
    "attend_part",
    "attend_part_backward",
    "block_means",
    "moba_decode_attention",
    "MobaAttention",
    "build_moba_attention",
    "IMPLS",
]

"""Rationale quality against human (here: known) rationales, as the rationalization papers report it.

Token-level, micro-averaged over every real token of every review (DMR, arXiv 2106.00320, Table 2):
precision = |S ∩ G| / |S|, recall = |S ∩ G| / |G|, F1 their harmonic mean, sparsity = |S| / #tokens,
with S the selected and G the gold tokens, padding excluded.
"""

from __future__ import annotations

import html

import torch
from torch import Tensor

__all__ = ["rationale_metrics", "aspect_shares", "highlight"]


def _as_bool(name: str, t, shape=None) -> Tensor:
    if not torch.is_tensor(t):
        raise ValueError(f"{name}: expected a tensor, got {type(t).__name__}")
    if shape is not None and t.shape != shape:
        raise ValueError(f"{name}: expected shape {tuple(shape)} like selected, got {tuple(t.shape)}")
    if t.dtype != torch.bool:
        if t.is_floating_point() or t.dtype in (torch.long, torch.int, torch.int16, torch.int8, torch.uint8):
            if not ((t == 0) | (t == 1)).all():
                raise ValueError(f"{name}: expected a 0/1 or boolean mask, got values outside {{0, 1}}")
            t = t.bool()
        else:
            raise ValueError(f"{name}: expected a boolean mask, got dtype {t.dtype}")
    return t


def rationale_metrics(selected: Tensor, gold: Tensor, mask: Tensor | None = None) -> dict[str, float]:
    """``selected``, ``gold``, ``mask`` (real tokens; default all) — boolean (or 0/1) masks of one shape
    → ``{"precision", "recall", "f1", "sparsity"}`` as fractions in [0, 1]. An empty selection has
    precision 0; a review set without gold tokens has recall 0."""
    selected = _as_bool("selected", selected)
    gold = _as_bool("gold", gold, selected.shape)
    mask = torch.ones_like(selected) if mask is None else _as_bool("mask", mask, selected.shape)
    s, g = selected & mask, gold & mask
    hit = float((s & g).sum())
    n_sel, n_gold, n_tok = float(s.sum()), float(g.sum()), float(mask.sum())
    p = hit / n_sel if n_sel else 0.0
    r = hit / n_gold if n_gold else 0.0
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    return {"precision": p, "recall": r, "f1": f1, "sparsity": n_sel / n_tok if n_tok else 0.0}


def aspect_shares(selected: Tensor, aspect: Tensor, n_aspects: int) -> list[float]:
    """Where the selection lands: the fraction of selected tokens that belong to each aspect
    (``aspect [N, T]`` long, −1 on padding)."""
    selected = _as_bool("selected", selected)
    if isinstance(n_aspects, bool) or not isinstance(n_aspects, int) or not 1 <= n_aspects <= 10**4:
        raise ValueError(f"n_aspects: expected an int in [1, 10000], got {n_aspects!r}")
    if not torch.is_tensor(aspect) or aspect.shape != selected.shape or aspect.is_floating_point() or \
            aspect.dtype == torch.bool:
        raise ValueError(f"aspect: expected a tensor of shape {tuple(selected.shape)}, got "
                         f"{tuple(aspect.shape) if torch.is_tensor(aspect) else type(aspect).__name__}")
    if aspect.numel() and int(aspect.max()) >= n_aspects:
        raise ValueError(f"aspect: expected ids in [-1, {n_aspects}) (-1 = padding), got up to {int(aspect.max())}")
    total = float((selected & (aspect >= 0)).sum())
    return [float((selected & (aspect == a)).sum()) / total if total else 0.0 for a in range(n_aspects)]


def highlight(tokens: list[str], selected, gold) -> str:
    """HTML for one review: selected tokens on a yellow background, gold tokens underlined in green
    (both = a correct pick). ``selected``/``gold``: per-token booleans (lists or 1-D tensors, ≥ len(tokens);
    padding beyond the tokens is ignored)."""
    if not isinstance(tokens, (list, tuple)) or not all(isinstance(t, str) for t in tokens):
        raise ValueError("tokens: expected a list of strings")
    for name, v in (("selected", selected), ("gold", gold)):
        if isinstance(v, (str, bytes)) or not (torch.is_tensor(v) or isinstance(v, (list, tuple))):
            raise ValueError(f"{name}: expected a list or 1-D tensor of per-token booleans, got {type(v).__name__}")
    sel = [bool(v) for v in (selected.tolist() if torch.is_tensor(selected) else selected)]
    gol = [bool(v) for v in (gold.tolist() if torch.is_tensor(gold) else gold)]
    if len(sel) < len(tokens) or len(gol) < len(tokens):
        raise ValueError(f"selected, gold: expected at least {len(tokens)} entries, got {len(sel)}, {len(gol)}")
    out = []
    for word, s, g in zip(tokens, sel, gol, strict=False):
        style = []
        if s:
            style.append("background:#ffe066")
        if g:
            style.append("border-bottom:2px solid #2b8a3e")
        w = html.escape(word)
        out.append(f'<span style="{";".join(style)}">{w}</span>' if style else w)
    return " ".join(out)

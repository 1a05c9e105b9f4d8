"""The StoryWars metrics that can be computed offline (arXiv 2305.08152, §5).

- **F1** (classification task types): macro F1 over the labels seen in gold or predictions,
  ``F1_c = 2·P_c·R_c / (P_c + R_c)``.
- **Spearman's ρ** (story scoring): Pearson correlation of the rank vectors, ties given their mean rank.
- **Boundary similarity** B (story segmentation; Fournier 2013, *Evaluating Text Segmentation using
  Boundary Edit Distance*): boundaries are aligned by a boundary edit distance — exact *matches* M,
  *near misses* (n-wise transpositions, |i − j| < n_t, weighted |i − j| / n_t) and *additions/deletions*
  A (weight 1 each); then ``B = 1 − (|A| + Σ_T |i − j| / n_t) / (|A| + |T| + |M|)``, and B = 1 when neither
  segmentation has a boundary.
- **ROUGE-L** (generation): F1 of the longest common subsequence of words,
  ``P = LCS / |candidate|, R = LCS / |reference|, F = 2PR / (P + R)``.
- **Candidate-ranking accuracy** (generation): the share of examples where the true output scores highest
  among the distractors (the substitute for BERTScore, which needs a pretrained model we cannot have
  offline).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

__all__ = ["macro_f1", "spearman", "boundary_similarity", "rouge_l", "ranking_accuracy", "boundaries_from_masses"]


def _same_length(a: Sequence, b: Sequence, names: str) -> None:
    for name, v in zip(names.split(", "), (a, b), strict=True):
        if isinstance(v, (str, bytes)) or not hasattr(v, "__len__"):
            raise ValueError(f"{name}: expected a sequence, got {type(v).__name__}")
    if len(a) != len(b) or not len(a):
        raise ValueError(f"{names}: expected two non-empty sequences of the same length, got {len(a)} and {len(b)}")


def macro_f1(gold: Sequence, pred: Sequence) -> float:
    """Macro-averaged F1 over the union of gold and predicted labels (sklearn's ``average="macro"``)."""
    _same_length(gold, pred, "gold, pred")
    scores = []
    for label in sorted(set(gold) | set(pred), key=str):
        tp = sum(g == label and p == label for g, p in zip(gold, pred, strict=True))
        fp = sum(g != label and p == label for g, p in zip(gold, pred, strict=True))
        fn = sum(g == label and p != label for g, p in zip(gold, pred, strict=True))
        scores.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return sum(scores) / len(scores)


def _ranks(x: Sequence[float]) -> list[float]:
    order = sorted(range(len(x)), key=lambda i: x[i])
    ranks = [0.0] * len(x)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and x[order[j + 1]] == x[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (ties: mean ranks). A constant input has no ranking: returns 0.0."""
    _same_length(x, y, "x, y")
    for name, v in (("x", x), ("y", y)):
        bad = [e for e in v if isinstance(e, bool) or not isinstance(e, (int, float)) or not math.isfinite(e)]
        if bad:  # a NaN compares false to everything: its rank, and so rho, would be meaningless
            raise ValueError(f"{name}: expected finite numbers, got {bad[:3]!r}")
    rx, ry = _ranks(list(x)), _ranks(list(y))
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    sxx, syy = sum((a - mx) ** 2 for a in rx), sum((b - my) ** 2 for b in ry)
    return 0.0 if sxx == 0 or syy == 0 else sxy / math.sqrt(sxx * syy)


def boundaries_from_masses(masses: Sequence[int]) -> list[int]:
    """Segment sizes → boundary positions: ``[2, 3, 6]`` (11 units) → ``[2, 5]``."""
    if not masses or any(isinstance(m, bool) or not isinstance(m, int) or m < 1 for m in masses):
        raise ValueError(f"masses: expected positive segment sizes, got {masses!r}")
    out, pos = [], 0
    for m in masses[:-1]:
        pos += m
        out.append(pos)
    return out


def boundary_similarity(reference: Sequence[int], hypothesis: Sequence[int], n_t: int = 2) -> float:
    """Boundary similarity B of two segmentations given as boundary positions (sorted, distinct).

    Matches are exact agreements; the remaining boundaries are aligned in order so that the weighted edit
    cost is minimal, where pairing ``r`` with ``h`` (a near miss, allowed when ``|r - h| < n_t``) costs
    ``|r - h| / n_t`` and leaving a boundary unpaired costs 1 (an addition/deletion).
    """
    if not isinstance(n_t, int) or isinstance(n_t, bool) or n_t < 2:
        raise ValueError(f"n_t: expected an int >= 2 (transposition window), got {n_t!r}")
    for name, b in (("reference", reference), ("hypothesis", hypothesis)):
        if isinstance(b, (str, bytes)) or not isinstance(b, Sequence):
            raise ValueError(f"{name}: expected a list of boundary positions, got {b!r}")
        if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in b):
            raise ValueError(f"{name}: expected boundary positions as ints >= 1, got {list(b)!r}")
        if list(b) != sorted(set(b)):
            raise ValueError(f"{name}: expected sorted distinct boundary positions, got {list(b)!r}")
    ref, hyp = set(reference), set(hypothesis)
    matches = len(ref & hyp)
    r, h = sorted(ref - hyp), sorted(hyp - ref)
    # best[i][j] = (weighted cost, number of edit operations) to align r[i:] with h[j:], filled from the end
    # (a table, not recursion: a thousand boundaries must not reach Python's recursion limit)
    nr, nh = len(r), len(h)
    nxt = [(float(nh - j), nh - j) for j in range(nh + 1)]  # row i = nr
    for i in range(nr - 1, -1, -1):
        row = [None] * (nh + 1)
        row[nh] = (float(nr - i), nr - i)
        for j in range(nh - 1, -1, -1):
            down, right = nxt[j], row[j + 1]
            options = [(down[0] + 1, down[1] + 1), (right[0] + 1, right[1] + 1)]
            span = abs(r[i] - h[j])
            if span < n_t:
                c, k = nxt[j + 1]
                options.append((c + span / n_t, k + 1))
            row[j] = min(options)
        nxt = row
    cost, edits = nxt[0]
    denominator = edits + matches
    return 1.0 if denominator == 0 else 1.0 - cost / denominator


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def rouge_l(candidate: str, reference: str) -> float:
    """ROUGE-L F1 between two texts (lower-cased word tokens)."""
    if not isinstance(candidate, str) or not isinstance(reference, str):
        raise ValueError(f"candidate, reference: expected strings, got {type(candidate).__name__}, "
                         f"{type(reference).__name__}")
    c, r = _words(candidate), _words(reference)
    if not c or not r:
        return 0.0
    prev = [0] * (len(r) + 1)
    for a in c:
        cur = [0]
        for j, b in enumerate(r):
            cur.append(prev[j] + 1 if a == b else max(prev[j + 1], cur[j]))
        prev = cur
    lcs = prev[-1]
    if lcs == 0:
        return 0.0
    p, rec = lcs / len(c), lcs / len(r)
    return 2 * p * rec / (p + rec)


def ranking_accuracy(gold: Sequence, pred: Sequence) -> float:
    """Share of examples whose top-scored candidate is the true one."""
    _same_length(gold, pred, "gold, pred")
    return sum(g == p for g, p in zip(gold, pred, strict=True)) / len(gold)

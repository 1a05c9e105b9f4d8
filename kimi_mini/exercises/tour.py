"""Exercises of notebook 00 (the tour): the unigram entropy of a token stream."""

from __future__ import annotations

import torch

from kimi_mini.data import unigram_entropy
from kimi_mini.exercises import register_exercise


def _check_unigram_entropy(candidate) -> None:
    import math

    cases = [torch.tensor([7, 7, 7, 7]), torch.tensor([0, 1]), torch.tensor([1, 2, 2, 3, 3, 3, 255]),
             torch.randint(0, 256, (5000,), generator=torch.Generator().manual_seed(0))]
    for tokens in cases:
        got = float(candidate(tokens))
        want = unigram_entropy(tokens)
        assert math.isfinite(got), f"got {got} for {tokens[:8].tolist()}...: expected a finite number of nats"
        assert abs(got - want) < 1e-6, (f"for tokens {tokens[:8].tolist()}... expected {want:.6f} nats, got "
                                        f"{got:.6f} (natural log; p(x) = count/total; skip zero counts)")


def _wrong_unigram_entropy(tokens):
    counts = torch.bincount(tokens.flatten().long(), minlength=256).double()
    p = counts[counts > 0] / counts.sum()
    return float(-(p * p.log2()).sum())  # bits, not nats


register_exercise("unigram_entropy", solution=unigram_entropy, wrong=_wrong_unigram_entropy,
                  checker=_check_unigram_entropy,
                  description="entropy of the byte-frequency distribution, in nats")

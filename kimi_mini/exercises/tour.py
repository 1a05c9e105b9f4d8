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


# ---------------------------------------------------------------- predict, then run: the loss at init
def init_loss_prediction() -> float:
    """Exercise solution: an untrained KimiMini (weights N(0, 0.02)) gives nearly uniform next-byte
    probabilities, so its cross-entropy is ≈ ln 256 = 5.545 nats."""
    import math

    return math.log(256)


def measured_init_loss(seed: int = 0) -> float:
    """What the checker runs: the loss of a freshly initialised KimiMini on random bytes."""
    from kimi_mini.model import KimiConfig, KimiMini

    torch.manual_seed(seed)
    model = KimiMini(KimiConfig(d_model=64, n_layers=2, n_heads=2, d_ff=160, max_seq_len=64))
    tokens = torch.randint(0, 256, (8, 64), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return float(model(tokens, tokens)[1])


def _check_init_loss_prediction(candidate) -> None:
    predicted = float(candidate())
    measured = measured_init_loss()
    assert abs(predicted - measured) <= 0.03 * measured, (
        f"you predicted {predicted:.3f} nats; an untrained model measured {measured:.3f}. Hint: with tiny "
        "random weights the logits are all ≈ 0 — what is the cross-entropy of a uniform guess over 256 bytes?")


register_exercise("init_loss_prediction", solution=init_loss_prediction, wrong=lambda: 8.0,  # log2(256): bits
                  checker=_check_init_loss_prediction,
                  description="predict, then run: the cross-entropy of an untrained byte-level model")

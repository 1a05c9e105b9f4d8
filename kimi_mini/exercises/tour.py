"""Exercises of notebook 00 (the tour): the unigram entropy, the loss at init (predict, then run), and the
RMSNorm input gradient (derive)."""

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


# ---------------------------------------------------------------- derive: the RMSNorm backward (00, "A kernel")
def rmsnorm_backward_dx(x: torch.Tensor, weight: torch.Tensor, dy: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Exercise solution: dx of y = x·rstd·g, rstd = (mean(x²) + ε)^(−1/2), over the last dim [..., N]:
    dx = rstd·(dy·g − x·rstd²·mean(dy·g·x)) — the formula `_rmsnorm_bwd_kernel` implements."""
    rstd = (x.pow(2).mean(-1, keepdim=True) + eps).rsqrt()
    dyw = dy * weight
    return rstd * (dyw - x * rstd.pow(2) * (dyw * x).mean(-1, keepdim=True))


def _wrong_rmsnorm_backward_dx(x, weight, dy, eps=1e-6):
    return (x.pow(2).mean(-1, keepdim=True) + eps).rsqrt() * dy * weight  # treats rstd as a constant


def _check_rmsnorm_backward_dx(candidate) -> None:
    from kimi_mini.layers import rmsnorm_reference

    g = torch.Generator().manual_seed(0)
    for shape in [(1, 4), (3, 5), (2, 7, 63)]:
        x = torch.randn(*shape, generator=g, dtype=torch.float64, requires_grad=True)
        w = torch.rand(shape[-1], generator=g, dtype=torch.float64)
        dy = torch.randn(*shape, generator=g, dtype=torch.float64)
        (want,) = torch.autograd.grad(rmsnorm_reference(x, w, 1e-6), x, dy)
        got = candidate(x.detach().clone(), w.clone(), dy.clone(), 1e-6)
        assert torch.is_tensor(got) and got.shape == want.shape, f"return dx with x's shape {tuple(shape)}"
        err = float((got - want).abs().max())
        assert err < 1e-5 * max(1.0, float(want.abs().max())), (
            f"x {tuple(shape)}: dx off by {err:.2e}. rstd depends on x too: differentiate mean(x²) as well "
            "(chain rule), not only the x in x·rstd")


register_exercise("rmsnorm_backward_dx", solution=rmsnorm_backward_dx, wrong=_wrong_rmsnorm_backward_dx,
                  checker=_check_rmsnorm_backward_dx,
                  description="derive: the input gradient of RMSNorm (what the backward kernel computes)")

"""Exercises of notebook 10 (controllable invariance, arXiv 1705.11122): the discriminator's loss (warm-up), the
encoder's loss (its sign is the whole game), a "predict, then run" question on the s-probe at large γ, and why an
MLP probe can read what a logistic one cannot."""

from __future__ import annotations

from collections.abc import Callable

import torch

from kimi_mini.exercises import register_exercise, register_prediction
from kimi_mini.invariance.model import discriminator_loss, encoder_loss


def _cases():
    gen = torch.Generator().manual_seed(0)
    for n, n_y, n_s in ((7, 2, 2), (16, 3, 5), (1, 2, 2)):
        yield (torch.randn(n, n_y, generator=gen), torch.randint(0, n_y, (n,), generator=gen),
               torch.randn(n, n_s, generator=gen), torch.randint(0, n_s, (n,), generator=gen))


# --- 1. warm-up: the discriminator's loss ------------------------------------------------------------------------

def _check_discriminator_loss(candidate: Callable) -> None:
    for _, _, s_logits, s in _cases():
        got, want = candidate(s_logits, s), discriminator_loss(s_logits, s)
        assert torch.is_tensor(got) and got.ndim == 0, f"expected a scalar tensor, got {got!r}"
        assert torch.allclose(got, want, atol=1e-5), (
            f"for {len(s)} rows expected {want.item():.5f}, got {got.item():.5f}: D maximises log q_D(s|h), so its "
            "loss is the mean of −log softmax(s_logits)[s]")


def _wrong_discriminator_loss(s_logits, s):
    return -torch.log_softmax(s_logits, -1).gather(1, s[:, None]).sum()  # a sum, not a mean


register_exercise("invariance_discriminator_loss", solution=discriminator_loss, wrong=_wrong_discriminator_loss,
                  checker=_check_discriminator_loss, description="D's loss −E[log q_D(s|h)]")


# --- 2. the encoder/predictor loss: which sign? -------------------------------------------------------------------

def _check_encoder_loss(candidate: Callable) -> None:
    for gamma in (0.0, 0.5, 3.0):
        for y_logits, y, s_logits, s in _cases():
            got, want = candidate(y_logits, y, s_logits, s, gamma), encoder_loss(y_logits, y, s_logits, s, gamma)
            assert torch.is_tensor(got) and got.ndim == 0, f"expected a scalar tensor, got {got!r}"
            assert torch.allclose(got, want, atol=1e-5), (
                f"γ = {gamma}: expected {want.item():.5f}, got {got.item():.5f}. E and M minimise "
                "−log q_M(y|h) + γ·log q_D(s|h), averaged over the batch: which way must the s-term push?")


def _wrong_encoder_loss(y_logits, y, s_logits, s, gamma):
    ce = torch.nn.functional.cross_entropy
    return ce(y_logits, y) + gamma * ce(s_logits, s)  # helps D instead of fighting it


register_exercise("invariance_encoder_loss", solution=encoder_loss, wrong=_wrong_encoder_loss,
                  checker=_check_encoder_loss, description="E, M's loss −log q_M(y|h) + γ·log q_D(s|h)")


# --- 3. predict, then run: the logistic s-probe at the largest γ ---------------------------------------------------

PROBE_CHOICES = ("near the majority rate", "in between", "as high as at gamma 0")
# What notebook 10 measured at the toy preset on Adult (mean logistic-probe accuracy at γ = 0, at the largest γ,
# and the majority rate); the notebook replaces it with its own run through `set_measured_probe`.
MEASURED = {"gamma0": 0.94, "largest": 0.72, "majority": 0.674}


def set_measured_probe(gamma0: float, largest: float, majority: float) -> None:
    """Called by the notebook after its sweep: mean logistic s-probe accuracy at γ = 0 and at the largest γ."""
    for name, v in (("gamma0", gamma0), ("largest", largest), ("majority", majority)):
        if not isinstance(v, float) or not 0 <= v <= 1:
            raise ValueError(f"{name}: expected a float in [0, 1], got {v!r}")
    MEASURED.update(gamma0=gamma0, largest=largest, majority=majority)


def probe_prediction() -> str:
    """Exercise "solution": where the largest-γ probe landed on the way from the γ = 0 value to the majority
    rate, as the measured run gives it."""
    span = MEASURED["gamma0"] - MEASURED["majority"]
    left = (MEASURED["largest"] - MEASURED["majority"]) / span if span > 0 else 0.0
    return "near the majority rate" if left <= 0.25 else ("as high as at gamma 0" if left >= 0.85 else "in between")


register_prediction("invariance_probe_prediction", choices=PROBE_CHOICES, measured=probe_prediction,
                    evidence=lambda: (f"{MEASURED['gamma0']:.3f} at γ = 0, {MEASURED['largest']:.3f} at the largest γ, "
                                      f"majority {MEASURED['majority']:.3f}"),
                    question="Which features of Adult carry sex *and* income, so that removing one costs the other?",
                    description="predict, then run: the logistic s-probe at the largest γ on Adult")


# --- 4. why can an MLP probe beat the logistic one? ----------------------------------------------------------------

MLP_REASONS = {
    "a": "the MLP probe was trained on more data than the logistic probe",
    "b": "the adversary only removes what its own discriminator can read; s can stay in h in a form a different, "
         "nonlinear reader decodes (e.g. in interactions of units), and a linear probe cannot",
    "c": "an MLP always beats logistic regression, whatever the representation",
    "d": "the encoder copies s into h at γ > 0 because s is one of its inputs",
}


def mlp_probe_reason() -> str:
    """Exercise "solution": the key of :data:`MLP_REASONS` that explains the gap."""
    return "b"


def _wrong_mlp_reason() -> str:
    return "c"


def _check_mlp_reason(candidate: Callable) -> None:
    key = candidate()
    assert key in MLP_REASONS, f"answer one of {sorted(MLP_REASONS)}, got {key!r}"
    assert key == "b", (f"{key!r}: {MLP_REASONS[key]} — not so: both probes see the same rows, and on a random h "
                        "both sit at the majority rate. What did the encoder actually train against?")


register_exercise("invariance_mlp_probe", solution=mlp_probe_reason, wrong=_wrong_mlp_reason,
                  checker=_check_mlp_reason, description="why an MLP probe can recover s that a logistic probe cannot")

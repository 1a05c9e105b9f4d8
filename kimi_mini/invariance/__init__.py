"""Controllable invariance through adversarial feature learning (Xie, Dai, Du, Hovy & Neubig, NeurIPS 2017,
arXiv 1705.11122): an encoder E(x, s) → h, a predictor q_M(y | h) and a discriminator q_D(s | h) playing

    min_{E,M} max_D  E[ γ · log q_D(s | h) − log q_M(y | h) ]

on real UCI Adult and German credit, scikit-learn's digits under synthetic lighting, and a miniature
language-independent translation task. Modules: ``data`` (loaders), ``model`` (the three players and their
losses), ``game`` (training variants and the γ sweep, through :func:`kimi_mini.train.run_steps`), ``probe``
(fresh probes on frozen h, the demographic-parity gap), ``translation`` (the multilingual miniature).
"""

from kimi_mini.invariance.data import (
    InvarianceData,
    load_adult,
    load_german,
    load_invariance_dataset,
    load_lit_digits,
)
from kimi_mini.invariance.game import VARIANTS, evaluate_invariance, gamma_sweep, train_invariant
from kimi_mini.invariance.model import InvariantModel, discriminator_loss, encoder_loss, grad_reverse
from kimi_mini.invariance.probe import ProbeResult, demographic_parity_gap, probe_accuracy

__all__ = ["InvarianceData", "load_adult", "load_german", "load_lit_digits", "load_invariance_dataset", "VARIANTS",
           "train_invariant",
           "evaluate_invariance", "gamma_sweep", "InvariantModel", "discriminator_loss", "encoder_loss",
           "grad_reverse", "ProbeResult", "demographic_parity_gap", "probe_accuracy"]

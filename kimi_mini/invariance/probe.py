"""Measuring invariance after training: a fresh probe on frozen h, and the demographic-parity gap.

Xie et al. (arXiv 1705.11122), Section 4.1: "to test how much information about s is left in h, we train a
classifier to predict s from h" — a logistic regression (and, stricter, an MLP), trained on the frozen
*train* representations and scored on the *test* ones. An invariant h leaves the probe at the majority-class
rate. The in-game discriminator's accuracy is no such measure: the encoder was trained against that very
network and may only have learnt to fool it.

The demographic-parity gap |P(ŷ = 1 | s = 1) − P(ŷ = 1 | s = 0)| is not in the paper; it is the fairness
figure users ask for, and it can stay large even when h is invariant (the label itself depends on s).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from kimi_mini.checks import check_int

__all__ = ["ProbeResult", "probe_accuracy", "demographic_parity_gap"]

PROBE_KINDS = ("logistic", "mlp")


@dataclass(frozen=True)
class ProbeResult:
    """``accuracy`` of the probe on the test representations and the test ``majority`` rate."""

    accuracy: float
    majority: float
    kind: str

    @property
    def above_majority(self) -> float:
        return self.accuracy - self.majority


def _as_numpy(name: str, value, ndim: int) -> np.ndarray:
    arr = value.detach().cpu().numpy() if torch.is_tensor(value) else np.asarray(value)
    if arr.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-d array, got shape {arr.shape}")
    return arr


def probe_accuracy(h_train: Tensor, s_train: Tensor, h_test: Tensor, s_test: Tensor, *, kind: str = "logistic",
                   seed: int = 0, max_train: int | None = 20_000) -> ProbeResult:
    """Train a fresh ``kind`` classifier (``"logistic"``: L2-regularised logistic regression; ``"mlp"``: one
    hidden layer of 64 ReLUs, Adam, up to 500 epochs with early stopping on a held-out 10 % of its rows) to
    predict ``s_train`` ``[N]`` from ``h_train`` ``[N, H]``,
    and score it on ``(h_test, s_test)``. ``max_train`` caps the probe's training rows (a seeded subsample) to
    bound its cost on Adult; None uses all."""
    if kind not in PROBE_KINDS:
        raise ValueError(f"kind: expected one of {PROBE_KINDS}, got {kind!r}")
    htr, str_ = _as_numpy("h_train", h_train, 2), _as_numpy("s_train", s_train, 1)
    hte, ste = _as_numpy("h_test", h_test, 2), _as_numpy("s_test", s_test, 1)
    if len(htr) != len(str_) or len(hte) != len(ste):
        raise ValueError(f"h_train, s_train, h_test, s_test: expected matching lengths, got {len(htr)}, "
                         f"{len(str_)}, {len(hte)}, {len(ste)}")
    for name, arr in (("h_train", htr), ("h_test", hte)):
        if not np.issubdtype(arr.dtype, np.number) or not np.isfinite(arr).all():
            raise ValueError(f"{name}: expected finite numbers, got dtype {arr.dtype} with non-finite or "
                             f"non-numeric values")
    for name, arr in (("s_train", str_), ("s_test", ste)):
        if not np.issubdtype(arr.dtype, np.integer) or (arr.size and arr.min() < 0):
            raise ValueError(f"{name}: expected class ids (non-negative integers), got dtype {arr.dtype} "
                             f"(values like {arr[:4].tolist()})")
    if max_train is not None:
        check_int("max_train", max_train, 2)
    if htr.shape[1] != hte.shape[1]:
        raise ValueError(f"h_test: expected {htr.shape[1]} features like h_train, got {hte.shape[1]}")
    if len(htr) < 2 or len(hte) < 1:
        raise ValueError(f"h_train, h_test: expected >= 2 and >= 1 rows, got {len(htr)}, {len(hte)}")
    rng = np.random.default_rng(seed)
    if max_train is not None and len(htr) > max_train:
        keep = rng.choice(len(htr), max_train, replace=False)
        htr, str_ = htr[keep], str_[keep]
    majority = float(np.bincount(ste).max() / len(ste))
    if len(np.unique(str_)) < 2:  # nothing to learn: the probe can only guess the one class it saw
        return ProbeResult(float(np.mean(ste == str_[0])), majority, kind)
    # standardise on the probe's training rows: an h squashed towards 0 must not hide s from a regularised probe
    mean, sd = htr.mean(0), htr.std(0) + 1e-6
    htr, hte = (htr - mean) / sd, (hte - mean) / sd
    if kind == "logistic":
        from sklearn.linear_model import LogisticRegression

        clf = LogisticRegression(C=1.0, max_iter=300)
    else:
        from sklearn.neural_network import MLPClassifier

        # trained to convergence: up to 500 epochs, stopped when the held-out 10 % of its own training rows has
        # not improved for 10 epochs — a fair "more capacity" probe, not one cut short (60 epochs read less
        # than the logistic probe on German and digits)
        clf = MLPClassifier(hidden_layer_sizes=(64,), early_stopping=True, validation_fraction=0.1, max_iter=500,
                            batch_size=256, random_state=seed, n_iter_no_change=10)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a max_iter warning from the logistic probe is not an error here
        clf.fit(htr, str_)
    return ProbeResult(float((clf.predict(hte) == ste).mean()), majority, kind)


def demographic_parity_gap(y_pred: Tensor, s: Tensor) -> float:
    """|P(ŷ = 1 | s = 1) − P(ŷ = 1 | s = 0)| for binary predictions ``y_pred`` ``[N]`` and binary ``s`` ``[N]``."""
    yp, sv = _as_numpy("y_pred", y_pred, 1), _as_numpy("s", s, 1)
    if len(yp) != len(sv):
        raise ValueError(f"y_pred, s: expected the same length, got {len(yp)} and {len(sv)}")
    if not set(np.unique(yp)) <= {0, 1} or not set(np.unique(sv)) <= {0, 1}:
        raise ValueError("y_pred, s: expected binary values 0/1")
    if (sv == 1).sum() == 0 or (sv == 0).sum() == 0:
        raise ValueError("s: expected both groups (0 and 1) to be present")
    return float(abs(yp[sv == 1].mean() - yp[sv == 0].mean()))

"""Training the invariance game, and the γ sweep that shows its control knob.

Xie et al., "Controllable Invariance through Adversarial Feature Learning" (NeurIPS 2017, arXiv 1705.11122),
Section 2, trained GAN-style by alternation:

    k steps of D:      min_D   −log q_D(s | E(x, s))               (h frozen)
    one step of E, M:  min_E,M −log q_M(y | h) + γ · log q_D(s | h) (D frozen)

At D's optimum q_D(s|h) = p(s|h), so E, M minimise H(y|h) − γ · H(s|h): γ trades certainty about y against
uncertainty about s. Variants through one :func:`train_invariant`:

- ``"adversarial"`` — the alternation above (the paper);
- ``"gradient_reversal"`` — Ganin & Lempitsky's one-pass version: D fits s through a layer that flips the
  gradient (×−γ) on its way into E;
- ``"none"`` — no adversary (γ ignored): E, M fit y alone; D is still fitted on the frozen h so the history
  shows how readable s is.

Everything runs through :func:`kimi_mini.train.run_steps`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from kimi_mini.checks import check_int, check_number
from kimi_mini.invariance.data import InvarianceData
from kimi_mini.invariance.model import InvariantModel, discriminator_loss, encoder_loss, grad_reverse
from kimi_mini.invariance.probe import demographic_parity_gap, probe_accuracy
from kimi_mini.train import run_steps

__all__ = ["VARIANTS", "train_invariant", "InvarianceResult", "evaluate_invariance", "gamma_sweep"]

VARIANTS = ("adversarial", "gradient_reversal", "none")


def _check_data(data) -> None:
    for attr in ("x", "y", "s"):
        if not torch.is_tensor(getattr(data, attr, None)):
            raise ValueError(f"data: expected an object with tensors x, y, s (e.g. load_adult()), "
                             f"got {type(data).__name__} without {attr!r}")
    if data.x.ndim != 2 or len(data.y) != len(data.x) or len(data.s) != len(data.x):
        raise ValueError(f"data: expected x [N, F], y [N], s [N] of one length, got {tuple(data.x.shape)}, "
                         f"{tuple(data.y.shape)}, {tuple(data.s.shape)}")


def train_invariant(data: InvarianceData, gamma: float, *, variant: str = "adversarial", steps: int = 300,
                    seed: int = 0, k: int = 1, hidden: int = 64, h_dim: int = 32, lr: float = 1e-3,
                    d_lr: float | None = None,
                    batch_size: int | None = 512, s_in_encoder: bool = True, device: str | torch.device = "cpu",
                    progress: bool = False) -> tuple[InvariantModel, list[dict]]:
    """Train an :class:`InvariantModel` on ``data`` (``x`` ``[N, F]``, ``y``, ``s`` ``[N]``) for ``steps``
    (E, M) steps, each preceded by ``k`` D steps (``"adversarial"``). Adam (lr ``lr``) for both sides;
    minibatches of ``batch_size`` rows drawn from the step's seeded generator (None: full batch).
    Returns the model (eval mode) and one record per step: ``y_loss``, ``d_loss``, ``d_acc`` (the in-game
    discriminator's batch accuracy) and ``loss`` (E, M's objective)."""
    _check_data(data)
    if variant not in VARIANTS:
        raise ValueError(f"variant: expected one of {VARIANTS}, got {variant!r}")
    if not isinstance(gamma, (int, float)) or isinstance(gamma, bool) or not math.isfinite(gamma) or gamma < 0:
        raise ValueError(f"gamma: expected a finite number >= 0, got {gamma!r}")
    check_int("k", k, 1, 1000)
    check_int("steps", steps, 1, 10**7)
    check_int("seed", seed)
    check_int("hidden", hidden, 1, 1 << 16)
    check_int("h_dim", h_dim, 1, 1 << 16)
    check_number("lr", lr, 0, lo_open=True)
    if d_lr is not None:  # None means "as lr"; an explicit 0 is not silently replaced by lr
        check_number("d_lr", d_lr, 0, lo_open=True)
    if batch_size is not None and (not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1):
        raise ValueError(f"batch_size: expected an integer >= 1 or None, got {batch_size!r}")
    n_y = int(getattr(data, "n_y", int(data.y.max()) + 1))
    n_s = int(getattr(data, "n_s", int(data.s.max()) + 1))
    torch.manual_seed(seed)
    model = InvariantModel(data.x.shape[1], n_s if s_in_encoder else 0, hidden, h_dim, n_y, n_s).to(device)
    x, y, s = data.x.to(device), data.y.to(device), data.s.to(device)
    opt_em = torch.optim.Adam(model.encoder_predictor_parameters(), lr=lr)
    opt_d = torch.optim.Adam(model.discriminator.parameters(), lr=lr if d_lr is None else d_lr)
    opt_all = torch.optim.Adam(model.parameters(), lr=lr)
    n = len(x)

    def batch(gen: torch.Generator) -> Tensor | slice:
        if batch_size is None or batch_size >= n:
            return slice(None)
        return torch.randint(0, n, (batch_size,), generator=gen).to(device)

    def d_step(xb, sb) -> tuple[float, float]:
        with torch.no_grad():
            h = model.encode(xb, sb)
        logits = model.discriminator(h)
        loss = discriminator_loss(logits, sb)
        opt_d.zero_grad(set_to_none=True)
        loss.backward()
        opt_d.step()
        return loss.item(), (logits.argmax(-1) == sb).float().mean().item()

    def step_fn(step: int, gen: torch.Generator) -> dict:
        if variant == "gradient_reversal":
            idx = batch(gen)
            xb, yb, sb = x[idx], y[idx], s[idx]
            h = model.encode(xb, sb)
            y_loss = torch.nn.functional.cross_entropy(model.predictor(h), yb)
            s_logits = model.discriminator(grad_reverse(h, float(gamma)))
            d_loss = discriminator_loss(s_logits, sb)
            loss = y_loss + d_loss
            opt_all.zero_grad(set_to_none=True)
            loss.backward()
            opt_all.step()
            return {"loss": y_loss.item() - gamma * d_loss.item(), "y_loss": y_loss.item(), "d_loss": d_loss.item(),
                    "d_acc": (s_logits.argmax(-1) == sb).float().mean().item()}
        for _ in range(k):
            idx = batch(gen)
            d_loss, d_acc = d_step(x[idx], s[idx])
        idx = batch(gen)
        xb, yb, sb = x[idx], y[idx], s[idx]
        h, y_logits, s_logits = model(xb, sb)
        g = 0.0 if variant == "none" else float(gamma)
        loss = encoder_loss(y_logits, yb, s_logits, sb, g)
        opt_em.zero_grad(set_to_none=True)
        loss.backward()  # D's parameters get gradients too, but opt_em does not step them (cleared by d_step)
        opt_em.step()
        y_loss = torch.nn.functional.cross_entropy(y_logits.detach(), yb).item()
        return {"loss": loss.item(), "y_loss": y_loss, "d_loss": d_loss, "d_acc": d_acc}

    history = run_steps(step_fn, steps, seed=seed, progress=progress, desc=f"{variant} γ={gamma:g}",
                        postfix=("y_loss", "d_acc"))
    model.eval()
    return model, history


@dataclass(frozen=True)
class InvarianceResult:
    """Test-set figures of one trained model: y accuracy, s-probe accuracies, DP gap (binary y, s only)."""

    y_acc: float
    probe_logistic: float
    probe_mlp: float
    majority: float
    dp_gap: float | None

    def as_dict(self) -> dict:
        return {"y_acc": self.y_acc, "probe_logistic": self.probe_logistic, "probe_mlp": self.probe_mlp,
                "majority": self.majority, "dp_gap": self.dp_gap}


@torch.no_grad()
def evaluate_invariance(model: InvariantModel, train: InvarianceData, test: InvarianceData, *, seed: int = 0,
                        probes: tuple[str, ...] = ("logistic", "mlp"), max_probe_train: int | None = 20_000
                        ) -> InvarianceResult:
    """y accuracy of M on ``test``; accuracy of fresh probes trained on E's frozen ``train`` representations
    and scored on ``test``'s (NaN for a probe not in ``probes``); the DP gap of M's predictions."""
    _check_data(train)
    _check_data(test)
    if isinstance(probes, str) or not isinstance(probes, (tuple, list)) or \
            any(p not in ("logistic", "mlp") for p in probes):  # a typo must not turn into NaN metrics
        raise ValueError(f"probes: expected a tuple of names from ('logistic', 'mlp'), got {probes!r}")
    device = next(model.parameters()).device
    h_tr = model.encode(train.x.to(device), train.s.to(device)).cpu()
    h_te = model.encode(test.x.to(device), test.s.to(device)).cpu()
    y_pred = model.predictor(h_te.to(device)).argmax(-1).cpu()
    acc = {}
    majority = float("nan")
    for kind in ("logistic", "mlp"):
        if kind in probes:
            r = probe_accuracy(h_tr, train.s, h_te, test.s, kind=kind, seed=seed, max_train=max_probe_train)
            acc[kind], majority = r.accuracy, r.majority
        else:
            acc[kind] = float("nan")
    binary = int(test.y.max()) <= 1 and int(test.s.max()) <= 1
    dp = demographic_parity_gap(y_pred, test.s) if binary else None
    return InvarianceResult(float((y_pred == test.y).float().mean()), acc["logistic"], acc["mlp"], majority, dp)


def gamma_sweep(train: InvarianceData, test: InvarianceData, gammas, seeds, *, variant: str = "adversarial",
                max_probe_train: int | None = 20_000, **train_kwargs) -> list[dict]:
    """Train and evaluate one model per (γ, seed): one row per run with ``gamma``, ``seed`` and the fields of
    :class:`InvarianceResult`."""
    gammas, seeds = list(gammas), list(seeds)
    if not gammas or not seeds:
        raise ValueError(f"gammas, seeds: expected non-empty lists, got {gammas!r}, {seeds!r}")
    for g in gammas:
        check_number("gammas", g, 0)
    for s in seeds:
        check_int("seeds", s)
    rows = []
    for gamma in gammas:
        for seed in seeds:
            model, _ = train_invariant(train, gamma, variant=variant, seed=seed, **train_kwargs)
            result = evaluate_invariance(model, train, test, seed=seed, max_probe_train=max_probe_train)
            rows.append({"gamma": gamma, "seed": seed, **result.as_dict()})
    return rows

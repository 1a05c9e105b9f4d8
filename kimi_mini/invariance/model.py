"""The three players of adversarial invariant feature learning: encoder E, predictor M, discriminator D.

Xie et al., "Controllable Invariance through Adversarial Feature Learning" (NeurIPS 2017, arXiv 1705.11122),
Section 2: h = E(x, s) (the encoder sees s, so it can *undo* s's effect on x rather than only hide it),
q_M(y | h) and q_D(s | h). The losses of the minimax game

    min_{E,M} max_D  E_{x,s,y} [ γ · log q_D(s | h) − log q_M(y | h) ]

are :func:`discriminator_loss` (D maximises log q_D(s|h): it minimises −log q_D(s|h) on a *frozen* h) and
:func:`encoder_loss` (E and M minimise −log q_M(y|h) + γ · log q_D(s|h)).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kimi_mini.checks import check_number, describe

__all__ = ["InvariantModel", "discriminator_loss", "encoder_loss", "GradientReversal", "grad_reverse"]


def _mlp(d_in: int, hidden: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, d_out))


class InvariantModel(nn.Module):
    """E(x, s) → h, M(h) → y logits, D(h) → s logits; one hidden ReLU layer each.

    ``x_dim`` features; ``s_dim`` the size of s's one-hot input to the encoder (0: the encoder does not see s;
    otherwise ≥ the number of s values); ``hidden`` width of every hidden layer; ``h_dim`` the representation;
    ``n_y`` / ``n_s`` the numbers of classes of y and s.
    """

    def __init__(self, x_dim: int, s_dim: int, hidden: int, h_dim: int, n_y: int, n_s: int):
        super().__init__()
        for name, value, low in (("x_dim", x_dim, 1), ("s_dim", s_dim, 0), ("hidden", hidden, 1),
                                 ("h_dim", h_dim, 1), ("n_y", n_y, 2), ("n_s", n_s, 2)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name}: expected an integer >= {low}, got {value!r}")
        if s_dim and s_dim < n_s:
            raise ValueError(f"s_dim: expected 0 or >= n_s={n_s} (s is one-hot encoded), got {s_dim}")
        self.x_dim, self.s_dim, self.n_y, self.n_s = x_dim, s_dim, n_y, n_s
        self.encoder = nn.Sequential(nn.Linear(x_dim + s_dim, hidden), nn.ReLU(), nn.Linear(hidden, h_dim), nn.ReLU())
        self.predictor = _mlp(h_dim, hidden, n_y)
        self.discriminator = _mlp(h_dim, hidden, n_s)

    def encode(self, x: Tensor, s: Tensor) -> Tensor:
        """h = E(x, s): ``x`` float ``[N, x_dim]``, ``s`` int64 ``[N]`` → h ``[N, h_dim]``."""
        if not torch.is_tensor(x) or x.ndim != 2 or x.shape[1] != self.x_dim or not x.is_floating_point():
            raise ValueError(f"x: expected a float [N, {self.x_dim}] tensor, got {describe(x)}")
        if not torch.is_tensor(s) or s.shape != (x.shape[0],) or s.is_floating_point() or s.dtype == torch.bool:
            raise ValueError(f"s: expected int64 of shape [{x.shape[0]}] (one value per row of x), got {describe(s)}")
        if s.numel() and (int(s.min()) < 0 or int(s.max()) >= self.n_s):
            raise ValueError(f"s: expected values in [0, {self.n_s}), got [{int(s.min())}, {int(s.max())}]")
        if self.s_dim:
            x = torch.cat([x, F.one_hot(s, self.s_dim).to(x.dtype)], dim=1)  # [N, x_dim + s_dim]
        return self.encoder(x)

    def forward(self, x: Tensor, s: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(h [N, h_dim], y logits [N, n_y], s logits [N, n_s])``."""
        h = self.encode(x, s)
        return h, self.predictor(h), self.discriminator(h)

    def encoder_predictor_parameters(self) -> list[nn.Parameter]:
        return [*self.encoder.parameters(), *self.predictor.parameters()]


def discriminator_loss(s_logits: Tensor, s: Tensor) -> Tensor:
    """D's loss, −E[log q_D(s | h)] (D *maximises* the log-likelihood). Call on D(h.detach())."""
    _check_labels("s", s, s_logits)
    return F.cross_entropy(s_logits, s)


def encoder_loss(y_logits: Tensor, y: Tensor, s_logits: Tensor, s: Tensor, gamma: float) -> Tensor:
    """E and M's loss, E[−log q_M(y | h) + γ · log q_D(s | h)]: fit y, and make D's guess of s *unlikely*."""
    _check_labels("y", y, y_logits)
    _check_labels("s", s, s_logits)
    check_number("gamma", gamma)
    return F.cross_entropy(y_logits, y) - gamma * F.cross_entropy(s_logits, s)


class GradientReversal(torch.autograd.Function):
    """Identity forward, −λ · grad backward (Ganin & Lempitsky, ICML 2015): one backward pass trains D to
    predict s and pushes E the opposite way."""

    @staticmethod
    def forward(ctx, x: Tensor, lam: float) -> Tensor:
        ctx.lam = lam
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        return -ctx.lam * grad, None


def _check_labels(name: str, t, logits: Tensor) -> None:
    if not torch.is_tensor(t) or t.dim() != 1 or t.is_floating_point() or t.dtype == torch.bool or \
            not torch.is_tensor(logits) or logits.dim() != 2 or len(t) != len(logits):
        raise ValueError(f"{name}: expected int64 class ids [N] matching logits [N, C], got {describe(t)} and "
                         f"{describe(logits)}")
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= logits.shape[1]):
        raise ValueError(f"{name}: expected class ids in [0, {logits.shape[1]}), got [{int(t.min())}, {int(t.max())}]")


def grad_reverse(x: Tensor, lam: float) -> Tensor:
    check_number("lam", lam)
    return GradientReversal.apply(x, lam)

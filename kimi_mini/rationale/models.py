"""Selective rationalization models: generator, predictor, teacher (RNP, Lei et al. 2016; DMR, arXiv 2106.00320).

``encoder="conv"`` swaps every BiGRU for a width-5 1-D convolution with tanh (same ``[B, T, 2H]`` output).

- **Generator** g: frozen embeddings → BiGRU → per-token 2-way logits → hard selection z ∈ {0, 1}^T with
  a straight-through estimator: forward the argmax (one-hot), backward the softmax's gradient,
  z = onehot(argmax ℓ) − stopgrad(softmax ℓ) + softmax ℓ (channel 1 = keep). With ``tau`` set, training
  *samples* the selection, as RNP's generator samples z ~ p(z | x): the logits get Gumbel(0, 1) noise and are
  divided by τ before the argmax (the Gumbel-max trick; its straight-through form is the "hard" Gumbel-softmax).
  The noise explores selections the current argmax would never try; evaluation (``eval()``) stays deterministic.
- **Predictor** p: frozen embeddings masked by the rationale, z ⊙ x → BiGRU → max-pool over the
  review's real tokens → φ(z ⊙ x) ``[B, 2H]`` (DMR's feature space) → linear → class logits.
- **Teacher** t: the predictor's architecture on the full text (z = 1), trained first, then frozen;
  its softened outputs softmax(t(x)/T) are DMR's output-space target.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kimi_mini.checks import check_int, check_number, describe

__all__ = ["ENCODERS", "straight_through_select", "Generator", "Predictor"]


def straight_through_select(logits: Tensor) -> Tensor:
    """``logits [..., 2]`` (drop, keep) → ``z [...]`` in {0., 1.}: argmax forward, ∂softmax backward."""
    if not torch.is_tensor(logits) or logits.dim() < 1 or logits.shape[-1] != 2 or not logits.is_floating_point():
        raise ValueError(f"logits: expected a tensor [..., 2] (drop, keep), got "
                         f"{tuple(logits.shape) if torch.is_tensor(logits) else type(logits).__name__}")
    soft = logits.softmax(-1)
    hard = F.one_hot(logits.argmax(-1), 2).to(soft.dtype)
    return (hard - soft.detach() + soft)[..., 1]


def _check_batch(ids: Tensor, mask: Tensor) -> None:
    if not torch.is_tensor(ids) or ids.dim() != 2 or ids.dtype != torch.long:
        raise ValueError(f"ids: expected a long tensor [B, T], got "
                         f"{(ids.dtype, tuple(ids.shape)) if torch.is_tensor(ids) else type(ids).__name__}")
    if not torch.is_tensor(mask) or mask.shape != ids.shape or mask.dtype != torch.bool:
        raise ValueError(f"mask: expected a bool tensor of ids' shape {tuple(ids.shape)}, got "
                         f"{(mask.dtype, tuple(mask.shape)) if torch.is_tensor(mask) else type(mask).__name__}")


def _check_ids(ids: Tensor, vocab: int) -> None:
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab):
        raise ValueError(f"ids: expected token ids in [0, {vocab}), got values in [{int(ids.min())}, {int(ids.max())}]")


ENCODERS = ("gru", "conv")


class _Conv(nn.Module):
    """A drop-in for the BiGRU: ``[B, T, E] → ([B, T, 2H], None)``, tanh-bounded like the GRU's states, from a
    width-``kernel`` 1-D convolution (each token sees ±kernel//2 neighbours). Cheap and parallel over T, so it
    trains to convergence on a CPU where the recurrent encoder does not."""

    def __init__(self, in_features: int, hidden: int, kernel: int = 5):
        super().__init__()
        self.conv = nn.Conv1d(in_features, 2 * hidden, kernel, padding=kernel // 2)

    def forward(self, e: Tensor):
        return torch.tanh(self.conv(e.transpose(1, 2)).transpose(1, 2)), None


class _Encoder(nn.Module):
    def __init__(self, embeddings: Tensor, hidden: int, encoder: str = "gru"):
        super().__init__()
        if encoder not in ENCODERS:
            raise ValueError(f"encoder: expected one of {ENCODERS}, got {encoder!r}")
        if not torch.is_tensor(embeddings) or embeddings.dim() != 2 or not embeddings.is_floating_point() or \
                min(embeddings.shape) < 1:
            raise ValueError(f"embeddings: expected a non-empty floating-point [V, E] tensor, got "
                             f"{describe(embeddings)}")
        check_int("hidden", hidden, 1, 1 << 16)
        self.embed = nn.Embedding.from_pretrained(embeddings.float(), freeze=True)  # frozen word2vec
        self.gru = (nn.GRU(embeddings.shape[1], hidden, batch_first=True, bidirectional=True) if encoder == "gru"
                    else _Conv(embeddings.shape[1], hidden))
        self.hidden = hidden


class Generator(_Encoder):
    """Selects a rationale: ``(ids [B, T], mask [B, T] bool) → z [B, T]`` float in {0, 1} (0 on padding),
    differentiable through the straight-through estimator, sampled in training when ``tau`` is set; ``logits``
    (``[B, T, 2]``, before any noise) are kept on ``self.last_logits`` for inspection."""

    def __init__(self, embeddings: Tensor, hidden: int = 16, encoder: str = "gru", tau: float | None = None):
        super().__init__(embeddings, hidden, encoder)
        if tau is not None:
            check_number("tau", tau, 0, lo_open=True)
        self.head = nn.Linear(2 * hidden, 2)
        self.tau = tau

    def forward(self, ids: Tensor, mask: Tensor) -> Tensor:
        _check_batch(ids, mask)
        _check_ids(ids, self.embed.num_embeddings)
        h, _ = self.gru(self.embed(ids))  # [B, T, 2H]
        logits = self.head(h)  # [B, T, 2]
        self.last_logits = logits
        if self.training and self.tau is not None:  # sample z (Gumbel-max), from the global torch RNG
            gumbel = -torch.empty_like(logits).exponential_().log()
            logits = (logits + gumbel) / self.tau
        return straight_through_select(logits) * mask


class Predictor(_Encoder):
    """Classifies from a rationale: ``(ids, mask, z=None) → (logits [B, C], φ [B, 2H])``; ``z [B, T]``
    multiplies the embeddings (``None`` = the full text, as the teacher sees it)."""

    def __init__(self, embeddings: Tensor, hidden: int = 16, n_classes: int = 2, encoder: str = "gru"):
        super().__init__(embeddings, hidden, encoder)
        check_int("n_classes", n_classes, 2)
        self.out = nn.Linear(2 * hidden, n_classes)

    def features(self, ids: Tensor, mask: Tensor, z: Tensor | None = None) -> Tensor:
        _check_batch(ids, mask)
        _check_ids(ids, self.embed.num_embeddings)
        e = self.embed(ids)  # [B, T, E]
        if z is not None:
            if z.shape != ids.shape:
                raise ValueError(f"z: expected shape {tuple(ids.shape)} like ids, got {tuple(z.shape)}")
            e = e * z[..., None]
        h, _ = self.gru(e)  # [B, T, 2H], tanh-bounded
        return h.masked_fill(~mask[..., None], -2.0).amax(1)  # max-pool over real tokens: [B, 2H]

    def forward(self, ids: Tensor, mask: Tensor, z: Tensor | None = None) -> tuple[Tensor, Tensor]:
        phi = self.features(ids, mask, z)
        return self.out(phi), phi

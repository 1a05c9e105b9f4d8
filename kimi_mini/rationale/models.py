"""Selective rationalization models: generator, predictor, teacher (RNP, Lei et al. 2016; DMR, arXiv 2106.00320).

- **Generator** g: frozen embeddings → BiGRU → per-token 2-way logits → hard selection z ∈ {0, 1}^T with
  a straight-through estimator: forward the argmax (one-hot), backward the softmax's gradient,
  z = onehot(argmax ℓ) − stopgrad(softmax ℓ) + softmax ℓ (channel 1 = keep).
- **Predictor** p: frozen embeddings masked by the rationale, z ⊙ x → BiGRU → max-pool over the
  review's real tokens → φ(z ⊙ x) ``[B, 2H]`` (DMR's feature space) → linear → class logits.
- **Teacher** t: the predictor's architecture on the full text (z = 1), trained first, then frozen;
  its softened outputs softmax(t(x)/T) are DMR's output-space target.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["straight_through_select", "Generator", "Predictor"]


def straight_through_select(logits: Tensor) -> Tensor:
    """``logits [..., 2]`` (drop, keep) → ``z [...]`` in {0., 1.}: argmax forward, ∂softmax backward."""
    if not torch.is_tensor(logits) or logits.shape[-1] != 2:
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


class _Encoder(nn.Module):
    def __init__(self, embeddings: Tensor, hidden: int):
        super().__init__()
        if not torch.is_tensor(embeddings) or embeddings.dim() != 2:
            raise ValueError(f"embeddings: expected a [V, E] tensor, got {type(embeddings).__name__}")
        if not isinstance(hidden, int) or hidden < 1:
            raise ValueError(f"hidden: expected an integer >= 1, got {hidden!r}")
        self.embed = nn.Embedding.from_pretrained(embeddings.float(), freeze=True)  # frozen word2vec
        self.gru = nn.GRU(embeddings.shape[1], hidden, batch_first=True, bidirectional=True)
        self.hidden = hidden


class Generator(_Encoder):
    """Selects a rationale: ``(ids [B, T], mask [B, T] bool) → z [B, T]`` float in {0, 1} (0 on padding),
    differentiable through the straight-through estimator; ``logits`` (``[B, T, 2]``) are kept on
    ``self.last_logits`` for inspection."""

    def __init__(self, embeddings: Tensor, hidden: int = 16):
        super().__init__(embeddings, hidden)
        self.head = nn.Linear(2 * hidden, 2)

    def forward(self, ids: Tensor, mask: Tensor) -> Tensor:
        _check_batch(ids, mask)
        h, _ = self.gru(self.embed(ids))  # [B, T, 2H]
        logits = self.head(h)  # [B, T, 2]
        self.last_logits = logits
        return straight_through_select(logits) * mask


class Predictor(_Encoder):
    """Classifies from a rationale: ``(ids, mask, z=None) → (logits [B, C], φ [B, 2H])``; ``z [B, T]``
    multiplies the embeddings (``None`` = the full text, as the teacher sees it)."""

    def __init__(self, embeddings: Tensor, hidden: int = 16, n_classes: int = 2):
        super().__init__(embeddings, hidden)
        self.out = nn.Linear(2 * hidden, n_classes)

    def features(self, ids: Tensor, mask: Tensor, z: Tensor | None = None) -> Tensor:
        _check_batch(ids, mask)
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

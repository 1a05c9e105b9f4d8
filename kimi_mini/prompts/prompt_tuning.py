"""Prompt tuning (Lester et al., "The Power of Scale for Parameter-Efficient Prompt Tuning", arXiv 2104.08691)
on a frozen KimiMini: the baseline GPS (arXiv 2210.17041, Table 2) reports beating with 32 examples.

P trainable vectors E ∈ R^{P×d} are prepended to the token embeddings of the (templated) input; every model
weight stays frozen. Training minimises the LM loss of the correct answer's tokens,

    L(E) = −(1/|D|) Σ_{(x, y) ∈ D} (1/|c_y|) Σ_j log p_θ(c_{y,j} | [E; emb(x)], c_{y,<j})          (θ frozen)

on the same 32 dev examples GPS scores with; prediction is rank classification with E in front. E starts
as the embeddings of P random printable bytes (Lester's "sampled vocabulary" initialisation).

KimiMini's ``forward`` takes token ids only, so :func:`forward_embeds` runs the model's own submodules
(``tok_emb``, ``blocks``, ``norm``, ``lm_head``) on the concatenated embeddings — the model file is unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from kimi_mini.model import KimiMini
from kimi_mini.prompts.rank import encode_pairs
from kimi_mini.prompts.tasks import Example, Task, render

__all__ = ["forward_embeds", "SoftPrompt", "soft_rank_classify", "tune_soft_prompt", "soft_prompt_accuracy"]


def forward_embeds(model: KimiMini, soft: Tensor | None, tokens: Tensor) -> Tensor:
    """Logits ``[B, P + T, V]`` fp32 of ``model`` on ``[soft; tok_emb(tokens)]``: ``soft [P, d]`` (or None),
    ``tokens [B, T]`` int64. With ``soft=None`` this equals ``model(tokens)[0]``."""
    x = model.tok_emb(tokens)  # [B, T, d]
    if soft is not None:
        if soft.dim() != 2 or soft.shape[1] != x.shape[-1]:
            raise ValueError(f"soft: expected [P, {x.shape[-1]}], got {tuple(soft.shape)}")
        x = torch.cat([soft.to(x.dtype).expand(x.shape[0], -1, -1), x], dim=1)
    if x.shape[1] > model.config.max_seq_len:
        raise ValueError(f"tokens: {x.shape[1]} positions (soft prompt included) exceed "
                         f"max_seq_len={model.config.max_seq_len}")
    for block in model.blocks:
        x = block(x)
    return model.lm_head(model.norm(x)).float()


class SoftPrompt(nn.Module):
    """``P`` trainable embedding vectors, initialised from the model's embeddings of random printable bytes."""

    def __init__(self, model: KimiMini, n_tokens: int = 8, seed: int = 0):
        super().__init__()
        if not isinstance(n_tokens, int) or n_tokens < 1:
            raise ValueError(f"n_tokens: expected an int >= 1, got {n_tokens!r}")
        ids = torch.randint(32, 127, (n_tokens,), generator=torch.Generator().manual_seed(seed))
        self.embeds = nn.Parameter(model.tok_emb.weight.detach()[ids.to(model.tok_emb.weight.device)].clone())


def _option_sums(model: KimiMini, soft: Tensor | None, prompts: Sequence[str], options: Sequence[Sequence[str]]
                 ) -> Tensor:
    """``[S]`` summed option log-probabilities for every (prompt, option) pair (S = total options)."""
    P = 0 if soft is None else soft.shape[0]
    tokens, targets, _ = encode_pairs(prompts, options, model.config.max_seq_len - P)
    device = model.tok_emb.weight.device
    logits = forward_embeds(model, soft, tokens.to(device))[:, P:]  # [S, L, V]
    y = targets.to(device)
    keep = y >= 0
    lp = torch.log_softmax(logits, -1).gather(2, y.clamp(min=0)[..., None])[..., 0]
    return (lp * keep).sum(1)


def soft_rank_classify(model: KimiMini, soft: Tensor | None, prompts: Sequence[str],
                       options: Sequence[Sequence[str]]) -> Tensor:
    """Rank classification with ``soft`` prepended: predictions ``[len(prompts)]`` int64."""
    with torch.no_grad():
        sums = _option_sums(model, soft, prompts, options).cpu()
    return torch.tensor([int(s.argmax()) for s in torch.split(sums, [len(o) for o in options])])


def soft_prompt_accuracy(model: KimiMini, soft: Tensor | None, task: Task, examples: Sequence[Example],
                         template: str) -> float:
    rendered = [render(task, ex, template) for ex in examples]
    preds = soft_rank_classify(model, soft, [p for p, _ in rendered], [o for _, o in rendered])
    return float((preds == torch.tensor([ex.label for ex in examples])).float().mean())


def tune_soft_prompt(model: KimiMini, task: Task, dev: Sequence[Example], template: str, *, n_tokens: int = 8,
                     steps: int = 60, lr: float = 3e-2, seed: int = 0) -> tuple[Tensor, list[float]]:
    """Train a :class:`SoftPrompt` on ``dev`` (full batch, Adam) with ``model`` frozen; returns the soft
    prompt ``[P, d]`` (detached) and the loss per step. The model's ``requires_grad`` flags are restored."""
    if not isinstance(model, KimiMini):
        raise ValueError(f"model: expected a KimiMini, got {type(model).__name__}")
    if not dev:
        raise ValueError("dev: expected at least one example")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps: expected an int >= 1, got {steps!r}")
    flags = [p.requires_grad for p in model.parameters()]
    was_training = model.training
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    soft = SoftPrompt(model, n_tokens, seed)
    opt = torch.optim.Adam(soft.parameters(), lr=lr)
    rendered = [render(task, ex, template) for ex in dev]
    prompts = [p for p, _ in rendered]
    answers = [[opts[ex.label]] for (_, opts), ex in zip(rendered, dev, strict=True)]
    n_tok = torch.tensor([len(a[0].encode()) for a in answers], dtype=torch.float32)
    losses = []
    try:
        for _ in range(steps):
            loss = -(_option_sums(model, soft.embeds, prompts, answers) / n_tok.to(soft.embeds.device)).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
    finally:
        for p, f in zip(model.parameters(), flags, strict=True):
            p.requires_grad_(f)
        model.train(was_training)
    return soft.embeds.detach(), losses

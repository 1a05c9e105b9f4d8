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

from kimi_mini.checks import check_int, check_number, check_tensor
from kimi_mini.model import KimiMini
from kimi_mini.prompts.rank import encode_pairs
from kimi_mini.prompts.tasks import Example, Task, render

__all__ = ["forward_embeds", "SoftPrompt", "soft_rank_classify", "tune_soft_prompt", "soft_prompt_accuracy",
           "options_loss", "select_soft_prompt"]


def forward_embeds(model: KimiMini, soft: Tensor | None, tokens: Tensor) -> Tensor:
    """Logits ``[B, P + T, V]`` fp32 of ``model`` on ``[soft; tok_emb(tokens)]``: ``soft [P, d]`` (or None),
    ``tokens [B, T]`` int64. With ``soft=None`` this equals ``model(tokens)[0]``."""
    check_tensor("tokens", tokens, dims=2, kind="int")
    V = model.config.vocab_size
    if tokens.numel() and not (0 <= int(tokens.min()) and int(tokens.max()) < V):
        raise ValueError(f"tokens: expected ids in [0, {V}), got values in [{int(tokens.min())}, {int(tokens.max())}]")
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
        if not isinstance(model, KimiMini):
            raise ValueError(f"model: expected a KimiMini, got {type(model).__name__}")
        check_int("n_tokens", n_tokens, 1, model.config.max_seq_len - 1)
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
    check_int("steps", steps, 1, 10**6)
    check_number("lr", lr, 0, lo_open=True)
    check_int("n_tokens", n_tokens, 1, model.config.max_seq_len - 1)
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


def options_loss(model: KimiMini, soft: Tensor | None, prompts: Sequence[str], options: Sequence[Sequence[str]],
                 labels: Sequence[int]) -> Tensor:
    """Cross-entropy of a softmax over each prompt's options, the options' summed log-probabilities as logits:

        L(E) = −(1/|D|) Σ log softmax_k( s_k(E) )[y],   s_k = Σ_j log p_θ(c_{k,j} | [E; emb(x)], c_{k,<j})

    — the training signal that matches rank classification (the gold option's likelihood alone can rise while
    a wrong option's rises faster, and the soft prompt then collapses to one answer)."""
    sums = _option_sums(model, soft, prompts, options)
    per = torch.split(sums, [len(o) for o in options])
    logits = torch.stack([s for s in per]) if len({len(o) for o in options}) == 1 else None
    y = torch.tensor(list(labels), device=sums.device)
    if logits is not None:
        return torch.nn.functional.cross_entropy(logits, y)
    return torch.stack([-torch.log_softmax(s, 0)[int(t)] for s, t in zip(per, labels, strict=True)]).mean()


def _halves(dev: Sequence[Example], seed: int) -> tuple[list[Example], list[Example]]:
    """Split ``dev`` in two, stratified by label (train half, validation half)."""
    import random

    rng = random.Random(seed)
    by: dict[int, list[Example]] = {}
    for ex in dev:
        by.setdefault(ex.label, []).append(ex)
    a, b = [], []
    for label in sorted(by):
        xs = by[label][:]
        rng.shuffle(xs)
        a += xs[: (len(xs) + 1) // 2]
        b += xs[(len(xs) + 1) // 2:]
    return a, b


def select_soft_prompt(model: KimiMini, task: Task, dev: Sequence[Example], template: str, *,
                       lrs: Sequence[float] = (1e-2, 3e-2, 1e-1), steps: int = 40, eval_every: int = 5,
                       n_tokens: int = 8, seed: int = 0) -> tuple[Tensor, dict]:
    """Prompt tuning with its learning rate chosen and its training stopped on the dev set only: ``dev`` is split
    in two halves stratified by label; for every lr a soft prompt is trained (full batch, Adam, the softmax over
    the options of :func:`options_loss`) on the first half and checked every ``eval_every`` steps on the second;
    the (lr, step) with the best validation accuracy (ties: lower validation loss, then fewer steps) wins.
    Returns that soft prompt ``[P, d]`` and ``{"lr", "step", "val_acc", "curves"}``."""
    if not isinstance(model, KimiMini):
        raise ValueError(f"model: expected a KimiMini, got {type(model).__name__}")
    if len(dev) < 4:
        raise ValueError(f"dev: expected at least 4 examples (two halves), got {len(dev)}")
    if not lrs or not all(isinstance(v, (int, float)) and v > 0 for v in lrs):
        raise ValueError(f"lrs: expected positive learning rates, got {lrs!r}")
    for name, v in (("steps", steps), ("eval_every", eval_every)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name}: expected an int >= 1, got {v!r}")
    fit, val = _halves(dev, seed)
    r_fit = [render(task, ex, template) for ex in fit]
    r_val = [render(task, ex, template) for ex in val]
    y_fit, y_val = [ex.label for ex in fit], [ex.label for ex in val]
    flags = [p.requires_grad for p in model.parameters()]
    was_training = model.training
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    best, best_key, curves = None, None, {}
    try:
        for lr in lrs:
            soft = SoftPrompt(model, n_tokens, seed)
            opt = torch.optim.Adam(soft.parameters(), lr=lr)
            curve = []
            for step in range(steps + 1):
                if step % eval_every == 0:
                    with torch.no_grad():
                        v_loss = float(options_loss(model, soft.embeds, [p for p, _ in r_val], [o for _, o in r_val],
                                                    y_val))
                        preds = soft_rank_classify(model, soft.embeds, [p for p, _ in r_val], [o for _, o in r_val])
                        v_acc = float((preds == torch.tensor(y_val)).float().mean())
                    curve.append((step, v_acc, v_loss))
                    key = (-v_acc, v_loss, step)
                    if best_key is None or key < best_key:
                        best_key, best = key, (soft.embeds.detach().clone(), {"lr": lr, "step": step, "val_acc": v_acc})
                if step == steps:
                    break
                loss = options_loss(model, soft.embeds, [p for p, _ in r_fit], [o for _, o in r_fit], y_fit)
                opt.zero_grad()
                loss.backward()
                opt.step()
            curves[lr] = curve
    finally:
        for p, f in zip(model.parameters(), flags, strict=True):
            p.requires_grad_(f)
        model.train(was_training)
    soft, info = best
    return soft, {**info, "curves": curves}

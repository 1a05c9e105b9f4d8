"""SFT and RL for the agent: Kimi K2's post-training recipe with Kimi K1.5's policy objective, in miniature.

Papers: *Kimi K2: Open Agentic Intelligence* (arXiv 2507.20534) §3.2, and *Kimi k1.5: Scaling Reinforcement
Learning with LLMs* (arXiv 2501.12599) §2.3, whose objective K2 keeps. For a task x, sample K responses
y_1..y_K from the old policy π_old, score them with the verifiable reward r (the task's rubric), and minimise

    L(θ) = 1/K · Σ_i ( r(x, y_i) − r̄(x) − τ · log(π_θ(y_i | x) / π_old(y_i | x)) )²,    r̄(x) = 1/K · Σ_i r(x, y_i)

(:func:`k15_policy_loss`; log π(y|x) is the sum of the log-probabilities of the tokens the *agent* wrote —
tool results and user turns are the environment's and are not scored). K2's additions, all here:

* a per-sample **token budget**: a response longer than its budget loses reward (:func:`budget_penalty`);
* a **PTX loss** — next-token loss on pre-training data (the stdlib corpus) mixed in against forgetting;
* **temperature decay**: sample exploratively early, conservatively late (:func:`temperature_schedule`).

SFT (:func:`sft_loss`) is the mean cross-entropy on the agent's tokens only. Rollouts (:func:`rollout`) run a
batch of episodes in lock-step through ``KimiMini``'s KV cache: every step appends one token to every
episode — sampled where the agent is writing, forced where the user or the tool simulator speaks.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from kimi_mini.agentic.synthesis import MAX_LINE, Episode, Task, judge
from kimi_mini.checks import check_int, check_number, check_tensor, describe

__all__ = ["encode_episode", "collate", "sequence_logprob", "sft_loss", "k15_policy_loss", "budget_penalty",
           "temperature_schedule", "Rollout", "rollout", "sample_next"]

NEWLINE, PAD = 10, 0


def encode_episode(ep: Episode) -> tuple[list[int], list[int]]:
    """The trajectory as byte tokens and a 0/1 mask marking the bytes the agent wrote."""
    tokens, mask = [], []
    for role, text in ep.segments:
        b = list(text.encode())
        tokens += b
        mask += [int(role == "agent")] * len(b)
    return tokens, mask


def collate(seqs: list[tuple[list[int], list[int]]], max_len: int | None = None) -> tuple[Tensor, Tensor]:
    """Right-pad ``(tokens, mask)`` pairs into ``tokens [B, T]`` int64 and ``mask [B, T]`` float (pads masked)."""
    if not seqs:
        raise ValueError("seqs: expected at least one sequence")
    if max_len is not None:
        check_int("max_len", max_len, 1)
    for t, m in seqs:
        if len(t) != len(m) or any(isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 256 for v in t):
            raise ValueError(f"seqs: expected (tokens, mask) pairs of one length with byte tokens in [0, 256), got "
                             f"lengths {len(t)} and {len(m)}")
    T = max(len(t) for t, _ in seqs) if max_len is None else max_len
    tokens = torch.full((len(seqs), T), PAD, dtype=torch.int64)
    mask = torch.zeros(len(seqs), T)
    for i, (t, m) in enumerate(seqs):
        t, m = t[:T], m[:T]
        tokens[i, :len(t)] = torch.tensor(t)
        mask[i, :len(m)] = torch.tensor(m, dtype=torch.float32)
    return tokens, mask


def _check_tokens(tokens) -> None:
    check_tensor("tokens", tokens, dims=2, kind="int")
    if tokens.shape[1] < 2:  # one token predicts nothing: the sum would be a silent 0
        raise ValueError(f"tokens: expected [B, T] with T >= 2 (a token and its successor), got {describe(tokens)}")


def _token_logprobs(model: nn.Module, tokens: Tensor) -> Tensor:
    logits, _ = model(tokens[:, :-1])  # [B, T-1, V]
    return logits.log_softmax(-1).gather(-1, tokens[:, 1:, None]).squeeze(-1)  # [B, T-1]


def sequence_logprob(model: nn.Module, tokens: Tensor, mask: Tensor) -> Tensor:
    """log π(y|x) per sequence [B]: the sum of log-probabilities of the masked (agent) tokens of ``tokens [B, T]``."""
    _check_tokens(tokens)
    if tokens.shape != mask.shape:
        raise ValueError(f"mask: expected shape {tuple(tokens.shape)}, got {tuple(mask.shape)}")
    return (_token_logprobs(model, tokens) * mask[:, 1:]).sum(-1)


def sft_loss(model: nn.Module, tokens: Tensor, mask: Tensor) -> Tensor:
    """Mean next-token cross-entropy over the agent's tokens only (nats per agent token)."""
    _check_tokens(tokens)
    if tokens.shape != mask.shape:
        raise ValueError(f"mask: expected shape {tuple(tokens.shape)}, got {tuple(mask.shape)}")
    m = mask[:, 1:]
    return -(_token_logprobs(model, tokens) * m).sum() / m.sum().clamp_min(1)


def k15_policy_loss(logp_new: Tensor, logp_old: Tensor, rewards: Tensor, tau: float) -> Tensor:
    """Kimi K1.5's objective: mean over tasks of 1/K · Σ_i (r_i − r̄ − τ·(log π_θ(y_i) − log π_old(y_i)))².

    ``logp_new`` (with grad), ``logp_old`` (treated as constants) and ``rewards``: ``[K]`` for one task or
    ``[N, K]`` for N tasks with K samples each; r̄ is the mean reward over the K samples of each task.
    At θ = θ_old the gradient is −2τ/K · Σ_i (r_i − r̄) ∇log π_θ(y_i): log-probability goes up for above-mean
    rewards, down for below-mean ones; the squared term keeps π_θ near π_old (a KL-like leash of strength τ).
    """
    if not (isinstance(tau, (int, float)) and not isinstance(tau, bool) and tau > 0 and math.isfinite(tau)):
        raise ValueError(f"tau: expected a positive finite number, got {tau!r}")
    check_tensor("logp_new", logp_new, kind="float")
    for name, t in (("logp_old", logp_old), ("rewards", rewards)):
        if not torch.is_tensor(t) or t.shape != logp_new.shape:
            raise ValueError(f"{name}: expected a tensor of shape {tuple(logp_new.shape)} like logp_new, "
                             f"got {tuple(t.shape) if torch.is_tensor(t) else type(t).__name__}")
    if logp_new.dim() not in (1, 2) or logp_new.shape[-1] < 2:
        raise ValueError(f"logp_new: expected [K] or [N, K] with K >= 2 samples per task, got {tuple(logp_new.shape)}")
    r = rewards.float()
    advantage = r - r.mean(-1, keepdim=True)  # r_i − r̄(x)
    residual = advantage - tau * (logp_new - logp_old.detach())
    return residual.pow(2).mean(-1).mean()


def budget_penalty(n_tokens: Tensor, budget: Tensor, weight: float = 0.5) -> Tensor:
    """The token-budget penalty (≤ 0) added to the reward: −weight · min(1, max(0, n − budget) / budget).

    Zero within the budget, then linear in the overshoot, capped at −weight (a response twice its budget)."""
    check_number("weight", weight, 0)
    try:
        n = torch.as_tensor(n_tokens, dtype=torch.float32)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"n_tokens: expected a tensor of token counts, got {describe(n_tokens)}") from None
    if not bool(torch.isfinite(n).all()) or bool((n < 0).any()):
        raise ValueError(f"n_tokens: expected finite counts >= 0, got {n.flatten()[:4].tolist()}")
    b = torch.as_tensor(budget, dtype=torch.float32)
    if n.shape != b.shape:
        raise ValueError(f"budget: expected shape {tuple(n.shape)} like n_tokens, got {tuple(b.shape)}")
    if not bool(torch.isfinite(b).all()) or bool((b <= 0).any()):
        raise ValueError(f"budget: expected positive finite budgets, got {b.flatten()[:4].tolist()}")
    return -weight * ((n - b).clamp_min(0) / b).clamp_max(1.0)


def temperature_schedule(step: int, steps: int, t_start: float = 1.0, t_end: float = 0.5) -> float:
    """Temperature decay: geometric from ``t_start`` (step 0) to ``t_end`` (step ``steps − 1``)."""
    check_number("t_start", t_start, 0, lo_open=True)
    check_number("t_end", t_end, 0, lo_open=True)
    if not 0 < t_end <= t_start:
        raise ValueError(f"t_start, t_end: expected 0 < t_end <= t_start, got {t_start!r}, {t_end!r}")
    check_int("steps", steps, 1)
    check_int("step", step, 0, steps - 1)
    return t_start * (t_end / t_start) ** (step / max(1, steps - 1))


def sample_next(logits: Tensor, temperature: float, generator: torch.Generator | None = None) -> Tensor:
    """One token per row of ``logits [B, V]``, exactly as :meth:`KimiMini.generate` draws it (``0`` = greedy)."""
    check_number("temperature", temperature, 0)
    check_tensor("logits", logits, dims=2, kind="float")
    if logits.shape[1] < 1:
        raise ValueError(f"logits: expected [B, V] with V >= 1, got {describe(logits)}")
    if temperature == 0:
        return logits.argmax(-1)
    return torch.multinomial((logits / temperature).softmax(-1), 1, generator=generator)[:, 0]


@dataclass
class Rollout:
    """A batch of finished episodes: ``tokens``/``mask [B, T]`` (mask = agent bytes), ``passed [B]`` (the judge),
    ``agent_bytes [B]`` (agent bytes, retries of failed tool calls excluded)."""

    episodes: list[Episode]
    tokens: Tensor
    mask: Tensor
    passed: Tensor
    agent_bytes: Tensor


@torch.no_grad()
def rollout(model: nn.Module, tasks: list[Task], *, seeds: list[int], temperature: float,
            generator: torch.Generator | None = None, max_len: int | None = None) -> Rollout:
    """Play ``tasks`` (one episode each, world seeds ``seeds``) with ``model`` as the agent, in lock-step.

    Every iteration appends tokens to every episode through the KV cache: when all live episodes have forced
    text queued (system, user, tool results) the shortest common chunk is fed at once; otherwise one token —
    sampled (:func:`sample_next`) where the agent writes, forced elsewhere, a pad once an episode is over. An
    agent line ends at ``\\n`` (or is cut at ``MAX_LINE`` bytes and counts as malformed); an episode still
    running at ``max_len`` tokens (default: the model's ``max_seq_len``) fails.
    """
    if not isinstance(seeds, (list, tuple)) or len(tasks) != len(seeds) or not tasks or \
            any(isinstance(s, bool) or not isinstance(s, int) for s in seeds):
        raise ValueError(f"seeds: expected one int seed per task ({len(tasks)}), got {describe(seeds)}")
    check_number("temperature", temperature, 0)
    if max_len is None:  # None means the model's context; 0 is an error, not "the maximum"
        max_len = model.config.max_seq_len
    check_int("max_len", max_len, 1, model.config.max_seq_len)
    B = len(tasks)
    eps = [Episode(t, seed=s) for t, s in zip(tasks, seeds, strict=True)]
    queues = [deque(ep.text.encode()) for ep in eps]
    seqs = [([], []) for _ in range(B)]
    lines = [bytearray() for _ in range(B)]
    was_training = model.training
    model.eval()
    cache, length, logits = model.new_cache(), 0, None
    while True:
        live = [b for b in range(B) if not eps[b].done]
        if not live:
            break
        m = min(len(queues[b]) for b in live) if all(queues[b] for b in live) else 1
        if length + max(m, 1) > max_len:
            for b in live:
                eps[b].done = eps[b].malformed = True
            break
        sampled = sample_next(logits, temperature, generator).tolist() if m == 1 and logits is not None and \
            not all(queues[b] for b in live) else None
        col = torch.full((B, m), PAD, dtype=torch.int64)
        for b in live:
            if queues[b]:
                chunk = [queues[b].popleft() for _ in range(m)]
                seqs[b][0].extend(chunk)
                seqs[b][1].extend([0] * m)
                col[b] = torch.tensor(chunk)
                continue
            tok = sampled[b]
            col[b, 0] = tok
            seqs[b][0].append(tok)
            seqs[b][1].append(1)
            lines[b].append(tok)
            if tok == NEWLINE or len(lines[b]) >= MAX_LINE:
                queues[b].extend(eps[b].step(lines[b].decode(errors="replace")).encode())
                lines[b].clear()
        logits = model(col, cache=cache)[0][:, -1]
        length += m
    model.train(was_training)
    tokens, mask = collate(seqs)
    passed = torch.tensor([judge(ep)[0] for ep in eps], dtype=torch.float32)
    agent_bytes = torch.tensor([sum(s[1]) - ep.retry_bytes for s, ep in zip(seqs, eps, strict=True)],
                               dtype=torch.float32)
    return Rollout(eps, tokens, mask, passed, agent_bytes)

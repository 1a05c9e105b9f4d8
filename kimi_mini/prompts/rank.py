"""Rank classification: zero-shot prediction by scoring every answer option under a frozen LM.

As in ZeroPrompt (arXiv 2201.06910) and GPS (arXiv 2210.17041, after T0): for prompt x and answer options
c_1 … c_K, the score of option k is the sum of the log-probabilities of its tokens given the prompt,

    s_k = Σ_{j=1..|c_k|} log p(c_k,j | x, c_k,<j),        prediction = argmax_k s_k.

Length is handled as those papers do: the plain sum, no length normalisation (an option with more tokens pays
for each of them; the zoo's verbalisers are short words, and per-example options are strings of similar length).

:func:`token_logprobs` is the one per-token primitive (log-softmax + gather); the GPS topic slots a fused Triton
kernel in behind ``impl="triton"``. :func:`option_logprobs` is the reference, one forward per (prompt, option);
:func:`rank_classify` the batched path: every (prompt, option) sequence of a batch in one padded forward.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kimi_mini.checks import check_int, describe
from kimi_mini.data import ByteTokenizer

__all__ = ["token_logprobs", "option_logprobs", "rank_classify", "encode_pairs"]

_TOK = ByteTokenizer()


def token_logprobs(logits: Tensor, targets: Tensor, impl: str = "torch") -> Tensor:
    """``log softmax(logits)[i, targets[i]]`` for each row: logits ``[N, V]`` float, targets ``[N]`` int64 →
    ``[N]`` fp32. ``impl="torch"`` computes it with ``F.log_softmax`` + ``gather``; ``impl="triton"`` with the
    fused kernel :func:`kimi_mini.kernels.logprob.token_logprobs` (no ``[N, V]`` log-probabilities; on a CPU it
    runs in Triton's interpreter: correct, slow)."""
    if not torch.is_tensor(logits) or logits.dim() != 2 or not logits.is_floating_point() or logits.shape[1] < 1:
        raise ValueError(f"logits: expected a float [N, V] tensor with V >= 1, got {describe(logits)}")
    if not torch.is_tensor(targets) or targets.shape != logits.shape[:1] or targets.dtype not in (torch.int64,
                                                                                                   torch.int32):
        raise ValueError(f"targets: expected int64 [{logits.shape[0]}], got {describe(targets)}")
    if impl not in ("torch", "triton"):
        raise ValueError(f"impl: expected 'torch' or 'triton', got {impl!r}")
    if impl == "torch" and targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= logits.shape[1]):
        raise ValueError(f"targets: expected ids in [0, {logits.shape[1]}), got values in "
                         f"[{int(targets.min())}, {int(targets.max())}]")  # as the triton path checks
    if impl == "triton":
        from kimi_mini.kernels.logprob import token_logprobs as fused_token_logprobs

        return fused_token_logprobs(logits if logits.stride(-1) == 1 else logits.contiguous(), targets.long())
    return F.log_softmax(logits.float(), dim=-1).gather(1, targets.long()[:, None])[:, 0]


def _check(prompts: Sequence[str], options: Sequence[Sequence[str]]) -> None:
    if isinstance(prompts, str) or not isinstance(prompts, Sequence) or not prompts:
        raise ValueError(f"prompts: expected a non-empty list of strings, got {type(prompts).__name__}")
    if isinstance(options, str) or len(options) != len(prompts):
        raise ValueError(f"options: expected one list of options per prompt ({len(prompts)}), got "
                         f"{len(options) if not isinstance(options, str) else 'a string'}")
    for i, (p, opts) in enumerate(zip(prompts, options, strict=True)):
        if not isinstance(p, str) or not p:
            raise ValueError(f"prompts: entry {i} must be a non-empty string, got {p!r}")
        if isinstance(opts, str) or len(opts) < 1 or any(not isinstance(o, str) or not o for o in opts):
            raise ValueError(f"options: entry {i} must be a list of non-empty strings, got {opts!r}")


def encode_pairs(prompts: Sequence[str], options: Sequence[Sequence[str]], max_len: int
                 ) -> tuple[Tensor, Tensor, Tensor]:
    """Every (prompt, option) pair as one right-padded byte sequence.

    Returns ``tokens [S, L]`` int64 (S = total options, pad 0), ``targets [S, L]`` int64 (the next byte where it
    belongs to the option, else −100) and ``owner [S]`` (index of the prompt)."""
    _check(prompts, options)
    check_int("max_len", max_len, 1)
    seqs, tgts, owner = [], [], []
    for i, (p, opts) in enumerate(zip(prompts, options, strict=True)):
        pb = _TOK.encode(p)
        for o in opts:
            ob = _TOK.encode(o)
            seq = pb + ob
            if len(seq) > max_len:
                raise ValueError(f"prompts: prompt {i} + option {o!r} is {len(seq)} bytes, over the model's "
                                 f"max_seq_len={max_len}; shorten the prompt")
            seqs.append(seq)
            tgts.append([-100] * (len(pb) - 1) + ob + [-100])  # position t predicts seq[t + 1]
            owner.append(i)
    L = max(map(len, seqs))
    tokens = torch.tensor([s + [0] * (L - len(s)) for s in seqs], dtype=torch.long)
    targets = torch.tensor([t + [-100] * (L - len(t)) for t in tgts], dtype=torch.long)
    return tokens, targets, torch.tensor(owner, dtype=torch.long)


@torch.no_grad()
def option_logprobs(model: nn.Module, prompt: str, options: Sequence[str]) -> Tensor:
    """Reference: ``[K]`` summed log-probabilities of each option after ``prompt``, one forward per option."""
    _check([prompt], [options])
    device = next(model.parameters()).device
    out = []
    for o in options:
        pb, ob = _TOK.encode(prompt), _TOK.encode(o)
        x = torch.tensor([pb + ob], device=device)
        logp = F.log_softmax(model(x)[0][0].float(), dim=-1)  # [T, V]
        out.append(sum(float(logp[len(pb) - 1 + j, b]) for j, b in enumerate(ob)))
    return torch.tensor(out)


@torch.no_grad()
def rank_classify(model: nn.Module, prompts: Sequence[str], options: Sequence[Sequence[str]], *,
                  batch_size: int = 256, impl: str = "torch") -> tuple[Tensor, list[Tensor]]:
    """Predict one option per prompt by rank classification under the frozen ``model``.

    ``prompts`` — P strings (e.g. from :func:`kimi_mini.prompts.render`); ``options`` — P lists of option strings
    (K_i ≥ 1 each). Returns ``predictions [P]`` int64 (index into each prompt's options) and ``scores``: P fp32
    tensors ``[K_i]``, the summed option log-probabilities. Sequences are batched ``batch_size`` at a time
    (all options of all prompts together); ``impl`` selects :func:`token_logprobs`'s implementation."""
    _check(prompts, options)
    if not isinstance(model, nn.Module):
        raise ValueError(f"model: expected an nn.Module (a KimiMini), got {type(model).__name__}")
    check_int("batch_size", batch_size, 1)
    if impl not in ("torch", "triton"):
        raise ValueError(f"impl: expected 'torch' or 'triton', got {impl!r}")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    max_len = getattr(getattr(model, "config", None), "max_seq_len", 10**9)
    tokens, targets, owner = encode_pairs(prompts, options, max_len)
    sums = torch.empty(len(tokens))
    for s in range(0, len(tokens), batch_size):
        x, y = tokens[s:s + batch_size].to(device), targets[s:s + batch_size].to(device)
        logits = model(x)[0]  # [B, L, V]
        keep = y >= 0  # [B, L] option positions
        lp = torch.zeros(y.shape, device=device)
        lp[keep] = token_logprobs(logits[keep], y[keep], impl=impl)
        sums[s:s + batch_size] = lp.sum(1).float().cpu()
    model.train(was_training)
    scores = list(torch.split(sums, [len(o) for o in options]))  # pairs are in prompt order
    preds = torch.tensor([int(torch.argmax(sc)) for sc in scores], dtype=torch.long)
    return preds, scores

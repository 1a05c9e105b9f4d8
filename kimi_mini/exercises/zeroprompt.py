"""Exercises for notebook 06 (ZeroPrompt, arXiv 2201.06910): render a prompt, rank-classify one example, predict
the task-scaling curve before it is measured."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kimi_mini.exercises import register_exercise, register_prediction
from kimi_mini.model import KimiConfig, KimiMini
from kimi_mini.prompts import ANSWER_SEP, Example, Task, option_logprobs, render

# --- 1. warm-up: the text-to-text format -----------------------------------------------------------------------

def render_prompt(template: str, slots: dict, options: list[str]) -> str:
    """The prompt text for ``template`` filled with ``slots`` and ``{options}`` as ``"yes/no"``, then ``ANSWER_SEP``."""
    return template.format(**slots, options="/".join(options)) + ANSWER_SEP


def _wrong_render_prompt(template, slots, options):
    return template.format(**slots, options="/".join(options))  # forgets where the answer starts


_TASK = Task("demo:47", "demo", ("Is {text} > 47?", "{text} greater than 47? {options}", "Over 47: {text}"),
             ("yes", "no"), (Example({"text": "52"}, 0), Example({"text": "9"}, 1)))


def _check_render_prompt(candidate) -> None:
    for template in _TASK.templates + ("Q {options} A {text}",):
        for ex in _TASK.examples:
            want, options = render(_TASK, ex, template)
            got = candidate(template, dict(ex.slots), list(options))
            assert got == want, f"template {template!r}, input {ex.slots}: expected {want!r}, got {got!r}"


# --- 2. rank classification for one example --------------------------------------------------------------------

def score_options(model, prompt: str, options: list[str]) -> torch.Tensor:
    """``[K]``: for each option, Σ_j log p(option byte j | prompt, earlier option bytes) under ``model``."""
    scores = []
    for o in options:
        p, a = list(prompt.encode()), list(o.encode())
        logp = F.log_softmax(model(torch.tensor([p + a]))[0][0], dim=-1)  # [T, 256]
        scores.append(sum(logp[len(p) - 1 + j, b] for j, b in enumerate(a)))
    return torch.stack(scores)


def _wrong_score_options(model, prompt, options):
    scores = []
    for o in options:  # off by one: reads the log-prob of each byte at its own position, not the one before
        p, a = list(prompt.encode()), list(o.encode())
        logp = F.log_softmax(model(torch.tensor([p + a]))[0][0], dim=-1)
        scores.append(sum(logp[len(p) + j, b] for j, b in enumerate(a)))
    return torch.stack(scores)


def _check_score_options(candidate) -> None:
    torch.manual_seed(0)
    model = KimiMini(KimiConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64, max_seq_len=64)).eval()
    with torch.no_grad():
        for prompt, options in [("Is 52 > 47? =>", ["yes", "no"]), ("Pick: =>", ["abc", "b", "zz"])]:
            want = option_logprobs(model, prompt, options)
            got = torch.as_tensor(candidate(model, prompt, options), dtype=torch.float32).flatten()
            assert got.shape == want.shape, f"expected {len(options)} scores, got shape {tuple(got.shape)}"
            assert torch.allclose(got, want, atol=1e-4), (
                f"{prompt!r} {options}: expected {want.tolist()}, got {got.tolist()} (sum log-probs of the option's "
                f"bytes, each read at the position *before* it; no length normalisation)")


# --- 3. predict, then run: the shape of the task-scaling curve -------------------------------------------------

SHAPES = ("rises", "flat", "falls")
MEASURED: dict = {}
"""The notebook stores what its run measured here: ``MEASURED["seen"] = {N: accuracy}`` (the small model)."""
REFERENCE = {8: 0.545, 512: 0.663}  # the toy preset's measurement (2026-11-30), used when no run is stored


def curve_shape(acc_by_n: dict) -> str:
    """``"rises"`` / ``"falls"`` if accuracy at the largest N is ≥ 0.02 above / below the smallest N, else
    ``"flat"``."""
    ns = sorted(acc_by_n)
    gap = acc_by_n[ns[-1]] - acc_by_n[ns[0]]
    return "rises" if gap >= 0.02 else "falls" if gap <= -0.02 else "flat"


def predict_curve() -> str:
    """Exercise "solution": the shape of the measured curve (the toy preset's reference when no run is stored)."""
    return curve_shape(MEASURED.get("seen") or REFERENCE)


def _curve_evidence() -> str:
    return ", ".join(f"N={n}: {a:.3f}" for n, a in sorted((MEASURED.get("seen") or REFERENCE).items()))


register_exercise("zeroprompt_render", solution=render_prompt, wrong=_wrong_render_prompt,
                  checker=_check_render_prompt, description="fill a template, add the options and the answer marker")
register_exercise("zeroprompt_rank_one", solution=score_options, wrong=_wrong_score_options,
                  checker=_check_score_options, description="summed option log-probabilities for one prompt")
register_prediction("zeroprompt_predict_curve", choices=SHAPES, measured=predict_curve, evidence=_curve_evidence,
                    description="predict how held-out accuracy changes with N")

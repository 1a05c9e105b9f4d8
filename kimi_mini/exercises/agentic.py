"""Exercises of notebook 05 (agentic post-training): a rubric check, K1.5's policy loss, and a "predict, then run"
question on what the token budget does to response length."""

from __future__ import annotations

import torch

from kimi_mini.agentic.rl import k15_policy_loss
from kimi_mini.exercises import register_exercise, register_prediction

# --- 1. warm-up: a rubric check ------------------------------------------------------------------------------


def rubric_passes(expected_calls, expected_tree, expected_answer, log, tree, answers) -> bool:
    """Exercise solution. True iff every expected call ``(name, args)`` is in the simulator's ``log`` (entries
    ``(name, args, result)``), the file system ``tree`` equals ``expected_tree``, and there is an answer whose
    last one contains ``expected_answer`` as a whole word (``None``: any answer will do)."""
    done = {(n, a) for n, a, _ in log}
    return (all(c in done for c in expected_calls) and tree == expected_tree and bool(answers)
            and (expected_answer is None or expected_answer in answers[-1].split()))


def _wrong_rubric_passes(expected_calls, expected_tree, expected_answer, log, tree, answers) -> bool:
    # The classic slip: substring match — "7" is "in" "17", so a wrong answer passes.
    done = {(n, a) for n, a, _ in log}
    return (all(c in done for c in expected_calls) and tree == expected_tree and bool(answers)
            and (expected_answer is None or expected_answer in answers[-1]))


def _check_rubric_passes(candidate) -> None:
    log = [("add", (3, 4), "7"), ("mkdir", ("docs",), "ok")]
    cases = [  # (calls, tree, answer, log, tree, answers, expected, why)
        ((("add", (3, 4)),), {}, "7", log, {}, ["7"], True, "a correct episode"),
        ((("add", (3, 4)),), {}, "7", log, {}, ["the answer is 7"], True, "a wordy but correct answer"),
        ((("add", (3, 4)),), {}, "7", log, {}, ["17"], False, "the answer 17 when 7 is expected"),
        ((("add", (3, 4)),), {}, "7", log, {}, [], False, "no answer at all"),
        ((("add", (3, 5)),), {}, "8", log, {}, ["8"], False, "an expected call that never ran (a guessed answer)"),
        ((("mkdir", ("docs",)),), {"docs": {}}, None, log, {"docs": {}}, ["ok"], True, "a state task"),
        ((("mkdir", ("docs",)),), {"docs": {}}, None, log, {"docs": {}, "x": ""}, ["ok"], False,
         "a file system with an extra file"),
        ((("add", (3, 4)),), {}, "7", log, {}, ["7", "9"], False, "a user who changed their mind: the LAST answer"),
    ]
    for calls, etree, eans, lg, tr, ans, want, why in cases:
        got = candidate(calls, etree, eans, lg, tr, ans)
        assert isinstance(got, bool), f"return a bool, got {type(got).__name__}"
        assert got == want, f"{why}: expected {want}, got {got}"


register_exercise("agentic_rubric", solution=rubric_passes, wrong=_wrong_rubric_passes, checker=_check_rubric_passes,
                  description="a rubric check over the simulator's log, the file system and the last answer")


# --- 2. K1.5's policy loss ----------------------------------------------------------------------------------


def k15_loss(logp_new, logp_old, rewards, tau):
    """Exercise solution: :func:`kimi_mini.agentic.rl.k15_policy_loss` (``[N, K]`` tensors)."""
    return k15_policy_loss(logp_new, logp_old, rewards, tau)


def _wrong_k15_loss(logp_new, logp_old, rewards, tau):
    # The slip: one baseline for the whole batch instead of one per task.
    residual = rewards - rewards.mean() - tau * (logp_new - logp_old.detach())
    return residual.pow(2).mean()


def _check_k15_loss(candidate) -> None:
    g = torch.Generator().manual_seed(5)
    for N, K, tau in ((1, 2, 0.5), (3, 4, 0.1), (5, 8, 1.0)):
        lp_old = -5 * torch.rand(N, K, generator=g)
        lp_new = (lp_old + 0.3 * torch.randn(N, K, generator=g)).requires_grad_(True)
        r = (torch.rand(N, K, generator=g) > 0.5).float() + 2 * torch.arange(N)[:, None]  # tasks differ in level
        got = candidate(lp_new, lp_old, r, tau)
        assert torch.is_tensor(got) and got.dim() == 0, "return a scalar tensor"
        want = k15_policy_loss(lp_new, lp_old, r, tau)
        assert torch.allclose(got, want, rtol=1e-5, atol=1e-7), (
            f"N={N}, K={K}, τ={tau}: expected {want.item():.6f}, got {got.item():.6f} — r̄ is the mean over the K "
            "samples of each task; average the K squared residuals (1/K · Σ_i) and then over tasks")
        (grad,) = torch.autograd.grad(got, lp_new)
        (want_grad,) = torch.autograd.grad(want, lp_new)
        assert torch.allclose(grad, want_grad, rtol=1e-5, atol=1e-7), "right value, wrong gradient: π_old is a constant"


register_exercise("agentic_k15_loss", solution=k15_loss, wrong=_wrong_k15_loss, checker=_check_k15_loss,
                  description="Kimi K1.5's squared-residual policy objective with a per-task mean-reward baseline")


# --- 3. predict, then run: response length without the token budget ----------------------------------------

CHOICES = ("longer", "about the same", "shorter")
# Placeholder lengths (mean, sd of agent bytes per held-out dialogue after RL, sampled at temperature 1); notebook 05
# replaces them with its own run's values through `set_measured_lengths` before the checker runs.
MEASURED = {"with_budget": (30.0, 1.0), "without_budget": (33.0, 1.0)}


def set_measured_lengths(with_budget: tuple[float, float], without_budget: tuple[float, float]) -> None:
    """Called by the notebook after its RL runs: ``(mean, sd)`` over seeds of the agent bytes per held-out dialogue
    sampled at temperature 1, with and without the budget."""
    for name, v in (("with_budget", with_budget), ("without_budget", without_budget)):
        if not (isinstance(v, tuple) and len(v) == 2 and all(isinstance(x, float) for x in v)):
            raise ValueError(f"{name}: expected a (mean, sd) pair of floats, got {v!r}")
    MEASURED.update(with_budget=with_budget, without_budget=without_budget)


def measured_length_effect() -> str:
    """Exercise "solution": without the budget responses are ``longer`` / ``shorter`` when the means differ by more
    than the larger of the two sds, else ``about the same``."""
    (m1, s1), (m0, s0) = MEASURED["with_budget"], MEASURED["without_budget"]
    if abs(m0 - m1) <= max(s0, s1):
        return "about the same"
    return "longer" if m0 > m1 else "shorter"


def _length_evidence() -> str:
    (m1, s1), (m0, s0) = MEASURED["with_budget"], MEASURED["without_budget"]
    return (f"{m0:.1f} ± {s0:.1f} agent bytes per sampled dialogue without the budget vs {m1:.1f} ± {s1:.1f} "
            "with it")


register_prediction("agentic_budget_length", choices=CHOICES, measured=measured_length_effect,
                    evidence=_length_evidence,
                    question="What does the reward say about a correct answer that takes twice the bytes, with and "
                             "without the budget?",
                    description="predict, then run: sampled response length after RL without the token budget")

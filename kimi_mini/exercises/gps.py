"""Exercises of notebook 07 (GPS, arXiv 2210.17041): the slot-once filter, one generation's selection, a
"predict, then run" question on the dev–test gap of the prompts GPS returns, and a Triton kernel: the online
log-sum-exp at the heart of the fused log-prob kernel (``kernels/logprob.py``)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from kimi_mini.exercises import register_exercise, register_prediction
from kimi_mini.prompts.operators import filter_reason

# --- 1. warm-up: the slot-once filter ------------------------------------------------------------------------


def slots_once(template: str, slots: list[str]) -> bool:
    """Exercise solution: True iff every input slot appears exactly once and no other field but at most one
    ``{options}`` (what GPS's first filter keeps)."""
    return filter_reason(template, template, slots, [], set()) != "slot"


def _wrong_slots_once(template: str, slots: list[str]) -> bool:
    return all("{" + s + "}" in template for s in slots)  # present, but maybe twice


def _check_slots_once(candidate: Callable) -> None:
    cases = [("Nice? {text}", ["text"], True), ("{text} nice? {options}", ["text"], True),
             ("Nice? text", ["text"], False), ("{text} or {text}?", ["text"], False),
             ("{a} vs {b}?", ["a", "b"], True), ("{a} vs {a}?", ["a", "b"], False),
             ("{text} {options} {options}", ["text"], False), ("Nice {txt}? {text}", ["text"], False)]
    for template, slots, want in cases:
        got = candidate(template, list(slots))
        assert got is want, f"slots_once({template!r}, {slots}) should be {want}, got {got!r}"


register_exercise("gps_slots_once", solution=slots_once, wrong=_wrong_slots_once, checker=_check_slots_once,
                  description="warm-up: every input slot exactly once")


# --- 2. one generation's selection ---------------------------------------------------------------------------


def select_and_breed(population: list[tuple[str, float]], k: int,
                     breed: Callable[[str], list[str]]) -> tuple[list[str], list[str]]:
    """Exercise solution: ``(kept, next_generation)``. ``kept``: the top-``k`` templates by score (ties: the earlier
    one), best first. ``next_generation``: the children ``breed(parent)`` of each kept parent in order, without
    any template already in ``population`` and without repeats — and no parent carried over."""
    order = sorted(range(len(population)), key=lambda i: (-population[i][1], i))
    kept = [population[i][0] for i in order[:k]]
    seen = {t for t, _ in population}
    children = []
    for parent in kept:
        for child in breed(parent):
            if child not in seen:
                seen.add(child)
                children.append(child)
    return kept, children


def _wrong_select_and_breed(population, k, breed):
    kept, children = select_and_breed(population, k, breed)
    return kept, kept + children  # elitism: the parents survive — not what GPS does


def _check_select_and_breed(candidate: Callable) -> None:
    pop = [("A {x}", 0.5), ("B {x}", 0.75), ("C {x}", 0.5), ("D {x}", 0.25)]

    def breed(t):
        return [t + " 1", t + " 2", "A {x}"]

    kept, nxt = candidate(list(pop), 2, breed)
    assert list(kept) == ["B {x}", "A {x}"], (f"kept should be the top 2 by score, ties to the earlier prompt: "
                                              f"['B {{x}}', 'A {{x}}'], got {kept!r}")
    assert not set(nxt) & {t for t, _ in pop}, "the next generation holds only new children: no parent, no old prompt"
    assert list(nxt) == ["B {x} 1", "B {x} 2", "A {x} 1", "A {x} 2"], f"children of the kept, in order; got {nxt!r}"
    kept, nxt = candidate([("A {x}", 1.0)], 3, lambda t: [t + "!", t + "!"])
    assert list(kept) == ["A {x}"] and list(nxt) == ["A {x}!"], "k larger than the population; repeats dropped"


register_exercise("gps_select_and_breed", solution=select_and_breed, wrong=_wrong_select_and_breed,
                  checker=_check_select_and_breed, description="one GPS generation: keep top-K, children only")


# --- 3. predict, then run: the dev–test gap -------------------------------------------------------------------

GAP_CHOICES = ("dev higher", "about equal", "test higher")
GAP_BAND = 0.02  # |dev − test| within 2 points is "about equal"
# What notebook 07 measured at the toy preset (mean over tasks and seeds of dev − test accuracy of GPS's final
# top-K); the notebook replaces it with its own run's value through `set_measured_gap`.
MEASURED = {"gap": 0.05}


def set_measured_gap(gap: float) -> None:
    """Called by the notebook after its GPS runs: mean (dev accuracy − test accuracy) of the returned prompts."""
    if not isinstance(gap, float) or not -1 <= gap <= 1:
        raise ValueError(f"gap: expected a float in [-1, 1], got {gap!r}")
    MEASURED["gap"] = gap


def dev_test_gap_prediction() -> str:
    """Exercise "solution": the answer the measured run gives."""
    gap = MEASURED["gap"]
    return "about equal" if abs(gap) <= GAP_BAND else ("dev higher" if gap > 0 else "test higher")


register_prediction("gps_dev_test_gap", choices=GAP_CHOICES, measured=dev_test_gap_prediction,
                    evidence=lambda: f"dev − test = {MEASURED['gap']:+.3f}",
                    question="Which prompts does a selection by dev score favour, and how noisy is a 32-example score?",
                    description="predict, then run: is GPS's returned prompt better on dev than on test?")


# --- 4. Triton: the online log-sum-exp of the fused log-prob kernel ------------------------------------------
LSE_BLOCK_V = 64


def launch_row_lse(kernel, X: Tensor) -> Tensor:
    """Run a learner's row kernel over ``X [N, V]`` (grid ``(N,)``): program ``row`` streams its row in
    ``BLOCK_V``-wide chunks and stores ``log Σ_v exp(X[row, v])`` at ``LSE[row]``.

    ``kernel(X, LSE, V, stride_x, BLOCK_V: tl.constexpr)``. LSE starts as NaN; a kernel that stores nothing
    raises ``NotImplementedError`` (the checker reports "not attempted")."""
    X = X.contiguous()
    N, V = X.shape
    lse = torch.full((N,), float("nan"), dtype=torch.float32, device=X.device)
    kernel[(N,)](X, lse, V, X.stride(0), BLOCK_V=LSE_BLOCK_V)
    if bool(lse.isnan().all()):
        raise NotImplementedError("the kernel stored nothing")
    return lse


def _lse_solution_kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def row_lse_kernel(X, LSE, V, stride_x, BLOCK_V: tl.constexpr):
        row = tl.program_id(0)
        x_row = X + row.to(tl.int64) * stride_x
        cols = tl.arange(0, BLOCK_V)
        m = tl.max(tl.full([BLOCK_V], float("-inf"), tl.float32), axis=0)  # running max (a scalar)
        s = tl.sum(tl.zeros([BLOCK_V], tl.float32), axis=0)  # running Σ exp(x − m)
        for start in range(0, V, BLOCK_V):
            x = tl.load(x_row + start + cols, mask=start + cols < V, other=float("-inf")).to(tl.float32)
            m_new = tl.maximum(m, tl.max(x, axis=0))
            s = s * tl.exp(m - m_new) + tl.sum(tl.exp(x - m_new), axis=0)  # rescale the old sum to the new max
            m = m_new
        tl.store(LSE + row, m + tl.log(s))

    return row_lse_kernel


def _lse_wrong_kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def row_lse_no_max(X, LSE, V, stride_x, BLOCK_V: tl.constexpr):
        row = tl.program_id(0)
        x_row = X + row.to(tl.int64) * stride_x
        cols = tl.arange(0, BLOCK_V)
        s = tl.sum(tl.zeros([BLOCK_V], tl.float32), axis=0)
        for start in range(0, V, BLOCK_V):  # exp without the running max: overflows for large logits
            x = tl.load(x_row + start + cols, mask=start + cols < V, other=float("-inf")).to(tl.float32)
            s += tl.sum(tl.exp(x), axis=0)
        tl.store(LSE + row, tl.log(s))

    return row_lse_no_max


def row_lse_solution(X: Tensor) -> Tensor:
    """Exercise solution: ``torch.logsumexp(X, -1)`` from the streaming kernel above."""
    return launch_row_lse(_lse_solution_kernel(), X)


def _check_row_lse(candidate) -> None:
    g = torch.Generator().manual_seed(7)
    for N, V, scale in ((3, 64, 1.0), (5, 300, 3.0), (2, 1000, 60.0)):  # one chunk; ragged last chunk; big logits
        X = torch.randn(N, V, generator=g) * scale
        got = candidate(X)
        want = torch.logsumexp(X.double(), -1)
        assert torch.is_tensor(got) and tuple(got.shape) == (N,), f"expected [{N}] log-sum-exps"
        assert bool(torch.isfinite(got).all()), (
            f"X [{N}, {V}] × {scale}: non-finite log-sum-exp — exp(x) overflows float32 above x ≈ 88: subtract the "
            "running max before exp, and rescale the running sum when the max grows")
        err = float((got.double() - want).abs().max())
        assert err < 1e-4 * (1 + float(want.abs().max())), (
            f"X [{N}, {V}]: max error {err:.3g} vs torch.logsumexp — every chunk must count (loop over V in "
            "BLOCK_V steps, masked loads reading -inf past V)")


register_exercise("triton_online_lse", solution=row_lse_solution,
                  wrong=lambda X: launch_row_lse(_lse_wrong_kernel(), X), checker=_check_row_lse,
                  description="Triton: a row's log-sum-exp streamed over vocabulary chunks (online max and sum)")

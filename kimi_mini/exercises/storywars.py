"""Exercises of notebook 08 (StoryWars, arXiv 2305.08152): boundary similarity on a toy segmentation, an
instruction for a new task that shares an input format, and a "predict, then run" question on which task
type gains most from instruction tuning zero-shot."""

from __future__ import annotations

from collections.abc import Callable

from kimi_mini.exercises import register_exercise, register_prediction
from kimi_mini.storywars.metrics import boundary_similarity
from kimi_mini.storywars.tasks import TASK_TYPES

# --- 1. warm-up → real thought: boundary similarity -----------------------------------------------------------


def _wrong_boundary_similarity(reference, hypothesis, n_t=2):
    # exact matches only: a near miss counts as two full errors
    ref, hyp = set(reference), set(hypothesis)
    m, a = len(ref & hyp), len(ref ^ hyp)
    return 1.0 if m + a == 0 else m / (m + a)


def _check_boundary_similarity(candidate: Callable) -> None:
    cases = [([2, 5], [5], 2), ([2, 5], [2, 5, 8], 2), ([2, 5], [2, 4], 2), ([2, 5], [1, 2, 5, 6], 2),
             ([], [], 2), ([3], [], 2), ([4], [6], 3), ([3, 6, 9], [4, 6, 10], 2), ([2, 7], [3, 8], 2)]
    for ref, hyp, n_t in cases:
        want = boundary_similarity(ref, hyp, n_t)
        got = candidate(list(ref), list(hyp), n_t)
        assert isinstance(got, float | int), f"expected a number, got {type(got).__name__}"
        assert abs(float(got) - want) < 1e-9, (
            f"B(reference={ref}, hypothesis={hyp}, n_t={n_t}): expected {want:.4f}, got {float(got):.4f}. Count "
            "exact matches first; a boundary within n_t − 1 units of an unmatched one is a near miss that costs "
            "|i − j| / n_t and counts once in the denominator.")


register_exercise("boundary_similarity", solution=boundary_similarity, wrong=_wrong_boundary_similarity,
                  checker=_check_boundary_similarity,
                  description="Fournier's boundary similarity B with near misses (n-wise transpositions)")


# --- 2. an instruction for a new task ------------------------------------------------------------------------
# The new task type "same_story": two chapters A and B (the pair format that authorship verification,
# connectivity inference and temporal inference already use) -> were they taken from the same story?

PAIR_TYPES = ("authorship_verification", "connectivity_inference", "temporal_inference")


def same_story_instruction() -> str:
    """Exercise solution: an instruction template for "are chapters A and B from the same story?"."""
    return "Are A and B two chapters of the same {genre} story?"


def _wrong_instruction() -> str:
    return TASK_TYPES.get("connectivity_inference").instruction  # says "right after": another task


def _check_instruction(candidate: Callable) -> None:
    text = candidate()
    assert isinstance(text, str), f"return the template as a string, got {type(text).__name__}"
    assert text.count("{genre}") == 1 and text.count("{") == 1, (
        "the template needs exactly one {genre} slot (tasks are instantiated per genre) and no other field")
    filled = text.format(genre="western")
    assert len(filled) <= 80, f"keep it short: the model reads every byte ({len(filled)} > 80)"
    low = filled.lower()
    assert "same" in low and "story" in low, "say what is asked: the *same story*"
    others = {t: TASK_TYPES.get(t).instruction.format(genre="western").lower() for t in PAIR_TYPES}
    assert low not in others.values(), "that is an existing task's instruction: the model could not tell them apart"
    for word, task in (("author", "authorship verification"), ("after", "connectivity inference"),
                       ("before", "temporal inference"), ("follow", "connectivity inference")):
        assert word not in low, (f"'{word}' belongs to {task}: with the same input format the instruction is the "
                                 "only thing that tells the tasks apart")


register_exercise("same_story_instruction", solution=same_story_instruction, wrong=_wrong_instruction,
                  checker=_check_instruction,
                  description="write an instruction that tells a new pair task apart from the existing ones")


# --- 3. predict, then run: which task type gains most zero-shot ----------------------------------------------
# The notebook stores its measured zero-shot gains (InstructStory − no-instruction, per task type) here.
# Defaults: the toy preset's measured gains when the notebook was written (3 seeds).
MEASURED: dict[str, float] = {"chapter_a_genre": -5.1, "chapter_b_genre": -4.3}


def set_measured_gains(gains: dict[str, float]) -> None:
    """Called by the notebook after its run: zero-shot metric of InstructStory minus the no-instruction model."""
    if not gains or any(t not in TASK_TYPES for t in gains):
        raise ValueError(f"gains: expected task-type names from the registry, got {sorted(gains)}")
    MEASURED.clear()
    MEASURED.update({t: float(v) for t, v in gains.items()})


def largest_gain_prediction() -> str:
    """Exercise "solution": the type the run measured."""
    return max(MEASURED, key=MEASURED.get)


register_prediction("storywars_zero_shot_gain", choices=lambda: sorted(MEASURED), measured=largest_gain_prediction,
                    evidence=lambda: "zero-shot gains " + ", ".join(
                        f"{t} {v:+.1f}" for t, v in sorted(MEASURED.items(), key=lambda kv: -kv[1])),
                    question="Both held-out types name the genre skill: where in the prompt does the named chapter "
                             "sit, and what would a model that reads the genre word but not 'A'/'B' answer?",
                    description="predict, then run: which task type gains most from instructions zero-shot")

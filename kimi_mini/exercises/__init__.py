"""Exercises: the learner writes a function, a checker says pass / fail / not attempted.

Every exercise is registered with its checker, the library's solution and a deliberately wrong
answer; the test suite proves each checker accepts the solution and rejects the wrong answer, so a
checker can never silently pass everything. In a notebook::

    def unigram_entropy(tokens):
        raise NotImplementedError  # your code here

    check("unigram_entropy", unigram_entropy)   # prints PASS / FAIL / NOT ATTEMPTED, never raises
"""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import traceback
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Exercise", "EXERCISES", "register_exercise", "register_prediction", "check", "load_all"]


@dataclass(frozen=True)
class Exercise:
    name: str
    checker: Callable[[Callable], None]  # raises AssertionError (with a hint) when the candidate is wrong
    solution: Callable
    wrong: Callable
    description: str = ""


EXERCISES: dict[str, Exercise] = {}


def register_exercise(name: str, *, solution: Callable, wrong: Callable,
                      checker: Callable[[Callable], None], description: str = "") -> Exercise:
    if name in EXERCISES and EXERCISES[name].checker is not checker:
        raise ValueError(f"name: exercise {name!r} is already registered")
    EXERCISES[name] = Exercise(name, checker, solution, wrong, description)
    return EXERCISES[name]


def register_prediction(name: str, *, choices, measured: Callable[[], str], evidence: Callable[[], str],
                        question: str = "", description: str = "") -> Exercise:
    """A "predict, then run" exercise: the learner's function returns one of ``choices`` (a tuple, or a
    callable returning them when checked) and passes when it equals ``measured()`` — what the notebook's own
    run measured, so the answer is not known before the cell that measures it. On a wrong guess the hint
    shows ``evidence()`` (the measured numbers) and ``question``. Solution: ``measured``; the wrong answer:
    any other choice."""
    def options() -> tuple:
        return tuple(choices() if callable(choices) else choices)

    def checker(candidate: Callable) -> None:
        guess = candidate()
        assert guess in options(), f"predict one of {options()}, got {guess!r}"
        got = measured()
        assert guess == got, f"you predicted {guess!r}; the run measured {got!r}: {evidence()}. {question}".rstrip()

    def wrong() -> str:
        return next(c for c in options() if c != measured())

    checker.__qualname__ = f"register_prediction.<checker of {name}>"
    return register_exercise(name, solution=measured, wrong=wrong, checker=checker, description=description)


def load_all() -> dict[str, Exercise]:
    """Import every topic module of this package so that its exercises register; returns the table."""
    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")
    return EXERCISES


def check(name: str, candidate: Callable, quiet: bool = False) -> str:
    """Run exercise ``name``'s checker on ``candidate``; returns ``"pass"``, ``"fail"`` or
    ``"not attempted"`` and prints a one-line verdict (with the checker's hint on failure)."""
    if name not in EXERCISES:
        load_all()
    if name not in EXERCISES:
        raise ValueError(f"name: unknown exercise {name!r}; expected one of {sorted(EXERCISES)}")
    try:
        EXERCISES[name].checker(candidate)
        status, detail = "pass", "well done."
    except NotImplementedError:
        status, detail = "not attempted", "replace the `raise NotImplementedError` with your code."
    except AssertionError as exc:
        status, detail = "fail", str(exc) or "a check did not hold."
    except Exception as exc:  # a learner's bug must not crash the notebook
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        status, detail = "fail", f"{type(exc).__name__}: {exc} (line {frame.lineno})"
    if not quiet:
        print(f"[{name}] {status.upper()}: {detail}")
    _record_grade(name, status, detail)
    return status


def _record_grade(name: str, status: str, detail: str) -> None:
    """Under ``kimi-mini grade`` (``KIMI_MINI_GRADES`` names a JSON-lines file) every checked exercise is
    appended there, so the grader reads the checkers' own verdicts rather than parsing printed output."""
    path = os.environ.get("KIMI_MINI_GRADES")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"exercise": name, "status": status, "detail": detail}) + "\n")

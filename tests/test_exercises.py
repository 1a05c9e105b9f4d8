"""Every registered exercise: the library's solution passes, the registered wrong answer fails,
a stub counts as not attempted, and a crashing attempt fails without raising."""

import pytest

import kimi_mini  # noqa: F401
from kimi_mini.exercises import check, load_all

EXERCISES = load_all()  # every topic module of kimi_mini.exercises registers its exercises
NAMES = sorted(EXERCISES)


def test_exercises_are_registered():
    assert "unigram_entropy" in NAMES


@pytest.mark.parametrize("name", NAMES)
def test_solution_passes_and_wrong_answer_fails(name):
    ex = EXERCISES[name]
    assert check(name, ex.solution, quiet=True) == "pass"
    assert check(name, ex.wrong, quiet=True) == "fail"


@pytest.mark.parametrize("name", NAMES)
def test_stub_is_not_attempted_and_crash_is_a_fail(name, capsys):
    def stub(*args, **kwargs):
        raise NotImplementedError

    def crash(*args, **kwargs):
        return 1 / 0

    assert check(name, stub) == "not attempted"
    assert check(name, crash) == "fail"
    out = capsys.readouterr().out
    assert "NOT ATTEMPTED" in out and "ZeroDivisionError" in out


def test_unknown_exercise_is_a_value_error():
    with pytest.raises(ValueError, match="unknown exercise"):
        check("no_such_exercise", print)

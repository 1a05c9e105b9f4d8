"""Number task families for the ZeroPrompt zoo (arXiv 2201.06910): thresholds and relations the instruction names.

A family is one relation (``>``, ``<``, between, sum, product, difference, …) on one input format (a two- or
three-digit number, ``a+b``, a year, a price, an age); a task fixes the relation's parameter and writes it into the
instruction (``"Is {text} > 47?"``). A model can only answer a held-out threshold if it reads the number in the
instruction — the skill task scaling is meant to teach — and a tiny byte-level model learns such order relations
within seconds of CPU training, where identity-matching skills ("does the text contain q?") take it far longer.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from kimi_mini.prompts.families import make_tasks
from kimi_mini.prompts.tasks import Task, register_family

__all__ = ["threshold_family"]


def threshold_family(family: str, params: list, templates: Callable, sample: Callable[[random.Random], object],
                     holds: Callable[..., bool], fmt: Callable[[object], str], n: int, seed: int) -> list[Task]:
    """Tasks whose label is ``holds(value, *param)`` for ``value = sample(rng)`` shown as ``fmt(value)``;
    balanced by rejection sampling."""
    def make(r, pos, *p):
        for _ in range(10_000):
            v = sample(r)
            if holds(v, *p) == pos:
                return {"text": fmt(v)}
        raise ValueError(f"params: {family}{p} cannot produce a {'positive' if pos else 'negative'} example")
    return make_tasks(family, params, templates, make, n, seed)


def _num(lo: int, hi: int) -> Callable[[random.Random], int]:
    return lambda r: r.randint(lo, hi)


def _pair(r: random.Random) -> tuple[int, int]:
    return r.randint(0, 9), r.randint(0, 9)


def _plus(v: tuple[int, int]) -> str:
    return f"{v[0]}+{v[1]}"


@register_family("number_greater")
def number_greater(n: int, seed: int) -> list[Task]:
    """Is the number (0–99) greater than k (k = 5 … 94)? (90 tasks)"""
    return threshold_family("number_greater", list(range(5, 95)),
                            lambda k: [f"Is {{text}} > {k}?", f"{{text}} greater than {k}?",
                                       f"Over {k}: {{text}}? {{options}}"],
                            _num(0, 99), lambda v, k: v > k, str, n, seed)


@register_family("number_less")
def number_less(n: int, seed: int) -> list[Task]:
    """Is the number (0–99) less than k (k = 5 … 94)? (90 tasks)"""
    return threshold_family("number_less", list(range(5, 95)),
                            lambda k: [f"Is {{text}} < {k}?", f"{{text}} less than {k}?",
                                       f"Under {k}: {{text}}? {{options}}"],
                            _num(0, 99), lambda v, k: v < k, str, n, seed)


@register_family("three_digit_greater")
def three_digit_greater(n: int, seed: int) -> list[Task]:
    """Is the three-digit number greater than k (k = 100, 110, … 990)? (90 tasks)"""
    return threshold_family("three_digit_greater", list(range(100, 1000, 10)),
                            lambda k: [f"{{text}} > {k}?", f"Is {{text}} above {k}?",
                                       f"{{text}} bigger than {k}? {{options}}"],
                            _num(100, 999), lambda v, k: v > k, str, n, seed)


@register_family("three_digit_less")
def three_digit_less(n: int, seed: int) -> list[Task]:
    """Is the three-digit number less than k (k = 100, 110, … 990)? (90 tasks)"""
    return threshold_family("three_digit_less", list(range(110, 1000, 10)) + [995],
                            lambda k: [f"{{text}} < {k}?", f"Is {{text}} below {k}?",
                                       f"{{text}} smaller than {k}? {{options}}"],
                            _num(100, 999), lambda v, k: v < k, str, n, seed)


@register_family("sum_greater")
def sum_greater(n: int, seed: int) -> list[Task]:
    """Is a + b (one-digit numbers) greater than k (k = 1 … 17)? (17 tasks)"""
    return threshold_family("sum_greater", list(range(1, 18)),
                            lambda k: [f"Is {{text}} > {k}?", f"{{text}} sums over {k}?",
                                       f"Sum {{text}} above {k}? {{options}}"],
                            _pair, lambda v, k: v[0] + v[1] > k, _plus, n, seed)


@register_family("sum_less")
def sum_less(n: int, seed: int) -> list[Task]:
    """Is a + b (one-digit numbers) less than k (k = 2 … 18)? (17 tasks)"""
    return threshold_family("sum_less", list(range(2, 19)),
                            lambda k: [f"Is {{text}} < {k}?", f"{{text}} sums under {k}?",
                                       f"Sum {{text}} below {k}? {{options}}"],
                            _pair, lambda v, k: v[0] + v[1] < k, _plus, n, seed)


@register_family("product_greater")
def product_greater(n: int, seed: int) -> list[Task]:
    """Is a × b (one-digit numbers 1–9) greater than k (k = 2, 4, … 78)? (39 tasks)"""
    return threshold_family("product_greater", list(range(2, 80, 2)),
                            lambda k: [f"Is {{text}} > {k}?", f"Product {{text}} over {k}?",
                                       f"{{text}} above {k}? {{options}}"],
                            lambda r: (r.randint(1, 9), r.randint(1, 9)), lambda v, k: v[0] * v[1] > k,
                            lambda v: f"{v[0]}*{v[1]}", n, seed)


@register_family("diff_greater")
def diff_greater(n: int, seed: int) -> list[Task]:
    """Do the two digits differ by more than k (k = 0 … 7)? (8 tasks)"""
    return threshold_family("diff_greater", list(range(8)),
                            lambda k: [f"Gap of {{text}} > {k}?", f"Do {{text}} differ by over {k}?",
                                       f"{{text}}: distance above {k}? {{options}}"],
                            _pair, lambda v, k: abs(v[0] - v[1]) > k, lambda v: f"{v[0]},{v[1]}", n, seed)


@register_family("between")
def between(n: int, seed: int) -> list[Task]:
    """Is the number (0–99) between lo and hi (windows of width 10 or 20)? (30 tasks)"""
    params = [(lo, lo + w) for w in (10, 20) for lo in range(10, 100 - w, 5)]
    return threshold_family("between", params,
                            lambda lo, hi: [f"Is {{text}} in {lo}-{hi}?", f"{{text}} between {lo} and {hi}?",
                                            f"{lo} <= {{text}} <= {hi}? {{options}}"],
                            _num(0, 99), lambda v, lo, hi: lo <= v <= hi, str, n, seed)


@register_family("digits_more")
def digits_more(n: int, seed: int) -> list[Task]:
    """Does the digit string have more than k digits (k = 1 … 9)? (9 tasks)"""
    return threshold_family("digits_more", list(range(1, 10)),
                            lambda k: [f"More than {k} digits? {{text}}", f"Has {{text}} over {k} digits?",
                                       f"{{text}}: {k}+ digits? {{options}}"],
                            lambda r: "".join(r.choice("0123456789") for _ in range(r.randint(1, 12))),
                            lambda v, k: len(v) > k, str, n, seed)


@register_family("year_before")
def year_before(n: int, seed: int) -> list[Task]:
    """Is the year (1900–2020) before y (y = 1905, 1907, … 2015)? (56 tasks)"""
    return threshold_family("year_before", list(range(1905, 2016, 2)),
                            lambda y: [f"Before {y}? {{text}}", f"Was {{text}} earlier than {y}?",
                                       f"Year {{text}} < {y}? {{options}}"],
                            _num(1900, 2020), lambda v, y: v < y, str, n, seed)


@register_family("year_after")
def year_after(n: int, seed: int) -> list[Task]:
    """Is the year (1900–2020) after y (y = 1905, 1907, … 2015)? (56 tasks)"""
    return threshold_family("year_after", list(range(1905, 2016, 2)),
                            lambda y: [f"After {y}? {{text}}", f"Was {{text}} later than {y}?",
                                       f"Year {{text}} > {y}? {{options}}"],
                            _num(1900, 2020), lambda v, y: v > y, str, n, seed)


@register_family("price_above")
def price_above(n: int, seed: int) -> list[Task]:
    """Does the price ($1–$99) exceed $k (k = 5, 10, … 95)? (19 tasks)"""
    return threshold_family("price_above", list(range(5, 100, 5)),
                            lambda k: [f"Costs over ${k}? {{text}}", f"Is {{text}} more than ${k}?",
                                       f"Price {{text}} > ${k}? {{options}}"],
                            _num(1, 99), lambda v, k: v > k, lambda v: f"${v}", n, seed)


@register_family("age_older")
def age_older(n: int, seed: int) -> list[Task]:
    """Is someone of the given age (1–99) older than k (k = 10, 15, … 80)? (15 tasks)"""
    return threshold_family("age_older", list(range(10, 85, 5)),
                            lambda k: [f"Older than {k}? {{text}}", f"Is age {{text}} over {k}?",
                                       f"{{text}} years > {k}? {{options}}"],
                            _num(1, 99), lambda v, k: v > k, str, n, seed)


@register_family("divisible")
def divisible(n: int, seed: int) -> list[Task]:
    """Is the two-digit number divisible by d (d = 2 … 9)? (8 tasks)"""
    return threshold_family("divisible", list(range(2, 10)),
                            lambda d: [f"Is {{text}} divisible by {d}?", f"{d} divides {{text}}?",
                                       f"{{text}} mod {d} = 0? {{options}}"],
                            _num(10, 99), lambda v, d: v % d == 0, str, n, seed)

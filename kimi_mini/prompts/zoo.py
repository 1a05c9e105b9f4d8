"""The ZeroPrompt task zoo (arXiv 2201.06910): every task of every registered family, and its splits.

The families register themselves with :func:`kimi_mini.prompts.tasks.register_family` when imported; this module
imports them (registration runs one way: families → tasks, zoo → families), builds the zoo from the registry
and splits it into a nested training pool, held-out tasks of trained families and held-out families.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Mapping, Sequence
from typing import NamedTuple

from kimi_mini.checks import check_int
from kimi_mini.prompts import families, numeric, real  # noqa: F401  (registers the task families)
from kimi_mini.prompts.tasks import FAMILIES, Task

__all__ = ["task_zoo", "Splits", "splits", "nested_training_tasks", "HELDOUT_FAMILIES"]


@functools.cache
def task_zoo(n_examples: int = 96, seed: int = 0, include_real: bool = True) -> dict[str, Task]:
    """Every task of every registered family, name → :class:`Task` (deterministic in ``seed``).
    Generated tasks get ``n_examples`` balanced examples each; real tasks keep what their data gives."""
    if not isinstance(n_examples, int) or isinstance(n_examples, bool) or not 2 <= n_examples <= 10**5 or \
            n_examples % 2:  # bounded by design (README): a typo must not generate for hours
        raise ValueError(f"n_examples: expected an even integer in [2, 100000], got {n_examples!r}")
    zoo: dict[str, Task] = {}
    for name in FAMILIES.names():
        spec = FAMILIES.get(name)
        if spec.kind == "real" and not include_real:
            continue
        for task in spec.build(n_examples, seed):
            if task.name in zoo:
                raise ValueError(f"task: duplicate task name {task.name!r} (family {name!r})")
            if task.family != name:
                raise ValueError(f"task: {task.name!r} built by family {name!r} says family {task.family!r}")
            zoo[task.name] = task
    return zoo


# --- splits ------------------------------------------------------------------------------------------------

HELDOUT_FAMILIES = ("price_above", "diff_greater", "sentiment", "subjectivity", "party")
"""Task types never trained on: two generated ones (a price threshold — a seen skill in an unseen format and
wording; the gap between two digits — an unseen relation) and every real one (sentence sentiment — near the
trained word-level lexicon sentiment; movie plot vs review; Democrat vs Republican speaker). Training prompts
are thus all short (≤ ~48 bytes), which keeps the toy preset's training cheap."""


class Splits(NamedTuple):
    """Task names: ``train`` (the pool the N training tasks are drawn from, in draw order), ``heldout_seen``
    (held-out tasks of trained families) and ``heldout_family`` (every task of :data:`HELDOUT_FAMILIES`)."""

    train: list[str]
    heldout_seen: list[str]
    heldout_family: list[str]


def splits(zoo: Mapping[str, Task], heldout_fraction: float = 0.2, seed: int = 0,
           heldout_families: Sequence[str] = HELDOUT_FAMILIES) -> Splits:
    """Split ``zoo`` into disjoint task sets. In each trained family a ``heldout_fraction`` of its tasks (at
    least one when the family has ≥ 2) is held out; the training pool is ordered round-robin over families
    (families and tasks shuffled with ``seed``), so its first N tasks spread over as many families as possible
    and the N-task sets are nested."""
    check_int("seed", seed)
    if not 0 < heldout_fraction < 1:
        raise ValueError(f"heldout_fraction: expected 0 < f < 1, got {heldout_fraction!r}")
    unknown = [f for f in heldout_families if f not in {t.family for t in zoo.values()}]
    if unknown:
        raise ValueError(f"heldout_families: {unknown} have no tasks in the zoo")
    rng = random.Random(seed)
    by_family: dict[str, list[str]] = {}
    for name in sorted(zoo):
        by_family.setdefault(zoo[name].family, []).append(name)
    heldout_family = [n for f in sorted(by_family) if f in heldout_families for n in by_family[f]]
    pools, heldout_seen = [], []
    for fam in sorted(by_family):
        if fam in heldout_families:
            continue
        names = by_family[fam][:]
        rng.shuffle(names)
        k = max(1, round(heldout_fraction * len(names))) if len(names) >= 2 else 0
        heldout_seen += names[:k]
        pools.append(names[k:])
    rng.shuffle(pools)
    train = []
    while any(pools):
        for pool in pools:
            if pool:
                train.append(pool.pop(0))
    return Splits(train, sorted(heldout_seen), heldout_family)


def nested_training_tasks(split: Splits, n_tasks: int) -> list[str]:
    """The first ``n_tasks`` of the training pool (so the sets for growing N are nested)."""
    if not isinstance(n_tasks, int) or not 1 <= n_tasks <= len(split.train):
        raise ValueError(f"n_tasks: expected 1 ≤ n ≤ {len(split.train)} (the training pool), got {n_tasks!r}")
    return split.train[:n_tasks]

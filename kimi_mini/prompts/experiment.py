"""The GPS experiment (Xu et al., arXiv 2210.17041, §4 and Table 2) on held-out tasks of the zoo: GPS against
manual prompts (their mean, and the one best on dev), prompt tuning, equal-budget random search and in-context
learning, all on one frozen model and the same 32 labelled dev examples per task and seed.

The plumbing lives here so that notebook 07 shows the method and reads the results:

- :func:`choose_tasks` — held-out tasks chosen by a rule fixed before the run, never by their test scores: the
  held-out tasks of each family are split alternately into *selection* and *evaluation* tasks; a family
  qualifies when the frozen model's manual prompts are above chance on its selection tasks (by > 2 binomial
  SE); the evaluation tasks of the qualifying families are taken round-robin across families.
- :func:`run_gps_experiment` — every method on every (task, seed): a stratified dev split of ``n_dev``
  examples (the only labels any method sees) and a disjoint test set.
- :func:`gps_claims` — the claims, as keyword arguments of ``record_claim``.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from kimi_mini.prompts.gps import accuracy, dev_split, genetic_prompt_search, icl_accuracy, random_search
from kimi_mini.prompts.pretrain import zero_shot_hits
from kimi_mini.prompts.prompt_tuning import select_soft_prompt, soft_prompt_accuracy
from kimi_mini.prompts.tasks import Task
from kimi_mini.report import Evidence, Precondition

__all__ = ["GPSConfig", "METHODS", "choose_tasks", "run_gps_experiment", "seed_means", "gps_claims"]

METHODS = ("manual (mean)", "manual (best dev)", "GPS", "random search", "prompt tuning", "in-context")


@dataclass(frozen=True)
class GPSConfig:
    """The experiment's settings (the notebook's preset picks them)."""

    generations: int = 3
    keep: int = 3
    children: int = 2
    n_dev: int = 32
    n_test: int = 80
    icl_k: int = 2
    pt_steps: int = 30
    pt_lrs: tuple[float, ...] = (3e-2, 1e-1)
    pt_eval_every: int = 5

    def __post_init__(self) -> None:
        for name in ("generations", "keep", "children", "n_dev", "n_test", "pt_steps", "pt_eval_every"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name}: expected an int >= 1, got {v!r}")
        if not isinstance(self.icl_k, int) or self.icl_k < 0:
            raise ValueError(f"icl_k: expected an int >= 0, got {self.icl_k!r}")


def choose_tasks(model, zoo: dict[str, Task], heldout: Sequence[str], n_tasks: int, *, n_select: int = 48,
                 min_examples: int = 64) -> tuple[list[str], list[dict]]:
    """Up to ``n_tasks`` evaluation tasks from ``heldout`` (task names, in split order), by the module docstring's
    rule. Tasks with fewer than ``min_examples`` examples are skipped (dev + test must fit). Returns the chosen
    names and one row per family: ``family``, ``selection`` and ``evaluation`` (task names), ``accuracy`` and
    ``n`` on the selection tasks (manual prompts, first ``n_select`` examples each) and ``qualifies``. When no
    family qualifies, the evaluation tasks of every family are taken (so the experiment still runs and its
    precondition reports the model at chance)."""
    if not isinstance(n_tasks, int) or n_tasks < 1:
        raise ValueError(f"n_tasks: expected an int >= 1, got {n_tasks!r}")
    by_family: dict[str, list[str]] = {}
    for name in heldout:
        if len(zoo[name].examples) >= min_examples:
            by_family.setdefault(zoo[name].family, []).append(name)
    rows, pools = [], []
    for family, names in by_family.items():
        selection, evaluation = names[0::2], names[1::2]
        if not evaluation:
            continue
        hits = [h for hs in zero_shot_hits(model, [zoo[n] for n in selection], n_select).values() for h in hs]
        acc = sum(hits) / len(hits)
        ok = acc > 0.5 + 2 * math.sqrt(acc * (1 - acc) / len(hits))
        rows.append({"family": family, "selection": selection, "accuracy": acc, "n": len(hits), "qualifies": ok,
                     "evaluation": list(evaluation)})
        if ok:
            pools.append(list(evaluation))
    if not pools:  # no family qualifies: take every family's evaluation tasks (the claims' precondition then fails)
        pools = [list(r["evaluation"]) for r in rows]
    chosen: list[str] = []
    while len(chosen) < n_tasks and any(pools):
        for pool in pools:
            if pool and len(chosen) < n_tasks:
                chosen.append(pool.pop(0))
    return chosen, rows


def run_gps_experiment(model, zoo: dict[str, Task], tasks: Sequence[str], seeds: Sequence[int],
                       operators: Sequence, cfg: GPSConfig, log: Callable[[str], None] | None = None) -> dict:
    """Every method of :data:`METHODS` on every (task, seed). Returns ``acc`` (method → (task, seed) → test
    accuracy), ``curves`` ((task, seed) → [(dev, test) of the top-K archive after each generation]),
    ``final_gap`` ((task, seed) → dev − test of the returned top-K), ``every_prompt`` (task → [(dev, test)] of
    every prompt GPS scored at the first seed), ``history`` (task → GPS's generations at the first seed),
    ``evals`` ([(GPS, random search) dev evaluations]),
    ``shortfall`` (random search's unspent evaluations, summed), ``pt`` ((task, seed) → chosen lr / step /
    validation accuracy) and ``n_test`` (task → test examples)."""
    say = log or (lambda s: None)
    out: dict = {"acc": {m: {} for m in METHODS}, "curves": {}, "final_gap": {}, "every_prompt": {}, "evals": [],
                 "shortfall": 0, "pt": {}, "n_test": {}, "history": {}}
    for name in tasks:
        task = zoo[name]
        for seed in seeds:
            dev, test = dev_split(task, cfg.n_dev, seed)
            test = test[:cfg.n_test]
            out["n_test"][name] = len(test)
            cache: dict[str, float] = {}

            def on_test(template, task=task, test=test, cache=cache):
                if template not in cache:
                    cache[template] = accuracy(model, task, test, template)
                return cache[template]

            key = (name, seed)
            acc = out["acc"]
            acc["manual (mean)"][key] = statistics.mean(on_test(t) for t in task.templates)
            gps = genetic_prompt_search(model, task, dev, task.templates, generations=cfg.generations, keep=cfg.keep,
                                        operators=operators, children_per_parent=cfg.children, seed=seed)
            g0 = sorted(gps.history[0], key=lambda c: -c.score)  # stable: ties keep the manual order
            acc["manual (best dev)"][key] = on_test(g0[0].template)
            acc["GPS"][key] = statistics.mean(on_test(c.template) for c in gps.top)
            rs = random_search(model, task, dev, task.templates, budget=gps.n_evaluations, keep=cfg.keep,
                               operators=operators, max_steps=cfg.generations, seed=seed)
            acc["random search"][key] = statistics.mean(on_test(c.template) for c in rs.top)
            out["evals"].append((gps.n_evaluations, rs.n_evaluations))
            out["shortfall"] += rs.shortfall
            soft, info = select_soft_prompt(model, task, dev, task.templates[0], lrs=cfg.pt_lrs, steps=cfg.pt_steps,
                                            eval_every=cfg.pt_eval_every, seed=seed)
            out["pt"][key] = {k: info[k] for k in ("lr", "step", "val_acc")}
            acc["prompt tuning"][key] = soft_prompt_accuracy(model, soft, task, test, task.templates[0])
            acc["in-context"][key] = icl_accuracy(model, task, dev, test, task.templates[0], k=cfg.icl_k, seed=seed)
            curve, archive = [], []
            for gen in gps.history:  # what GPS would return had it stopped after this generation
                archive += [c for c in gen if c.kept]
                top = sorted(archive, key=lambda c: -c.score)[:cfg.keep]
                curve.append((statistics.mean(c.score for c in top), statistics.mean(on_test(c.template) for c in top)))
            out["curves"][key] = curve
            out["final_gap"][key] = curve[-1][0] - curve[-1][1]
            if seed == seeds[0]:
                out["every_prompt"][name] = [(c.score, on_test(c.template)) for gen in gps.history for c in gen]
                out["history"][name] = gps.history
        say(f"{name}: " + ", ".join(f"{m} {statistics.mean(out['acc'][m][(name, s)] for s in seeds):.3f}"
                                    for m in METHODS))
    return out


def seed_means(res: dict, method: str, tasks: Sequence[str], seeds: Sequence[int]) -> list[float]:
    """Task-averaged test accuracy of ``method``, one number per seed."""
    return [statistics.mean(res["acc"][method][(n, s)] for n in tasks) for s in seeds]


def gps_claims(res: dict, tasks: Sequence[str], seeds: Sequence[int], setup: str, paper: str) -> list[dict]:
    """The claims of notebook 07 as ``record_claim`` keyword arguments. Method comparisons are paired by seed
    (same dev and test split); their precondition: the manual prompts are above chance on these tasks (binomial
    SE over every test example of every task and seed)."""
    n_total = sum(res["n_test"][n] for n in tasks) * len(seeds)
    manual = statistics.mean(seed_means(res, "manual (mean)", tasks, seeds))
    pre = Precondition.from_evidence(
        "the frozen model's manual prompts are above chance on the chosen held-out tasks",
        Evidence(manual, math.sqrt(max(manual * (1 - manual), 1e-12) / n_total), n_total, "examples", threshold=0.5,
                 what="manual-prompt test accuracy", fmt=".3f"))

    def gain(a, b):
        return Evidence.paired(seed_means(res, a, tasks, seeds), seed_means(res, b, tasks, seeds),
                               what=f"{a} − {b}, task-averaged", scale=100, fmt="+.1f", suffix=" points")

    claims = []
    for b, text, paper_value, why in (
        ("manual (mean)", "GPS beats the manual prompts on average over held-out tasks",
         "+2.6 points over the mean of the manual prompts on T0's held-out tasks (T0-3B frozen)",
         "the paper's comparison: the average manual prompt."),
        ("manual (best dev)", "GPS beats the manual prompt chosen on the same dev set",
         "not reported separately (the paper compares with the manual prompts' mean)",
         "the fair baseline: picking the best manual prompt by the same 32 dev examples costs 3 evaluations."),
        ("prompt tuning", "GPS beats prompt tuning trained on the same 32 examples",
         "GPS above prompt tuning (and black-box tuning) with 32 examples per task",
         "prompt tuning: 8 soft tokens, a softmax over the verbaliser's options, lr and early stopping chosen on a "
         "held-out half of the dev set; it gets gradients through the frozen model, GPS only its outputs."),
        ("random search", "GPS beats random search with the same number of dev evaluations",
         "not run in the paper (no equal-budget control)",
         "same operators, filters and final top-K by dev score; only GPS's selection differs; random search "
         + (f"left {res['shortfall']} of its evaluations unspent (operators ran dry)." if res["shortfall"]
            else "spent exactly GPS's number of evaluations.")),
    ):
        ev = gain("GPS", b)
        claims.append(dict(claim=text, paper_value=paper_value, ours=f"GPS − {b} = {ev.describe()}; {setup}",
                           evidence=ev, precondition=pre, explanation=f"paired by seed; {why}", paper=paper))
    gaps = [statistics.mean(res["final_gap"][(n, s)] for n in tasks) for s in seeds]
    ev = Evidence.mean(gaps, what="dev − test accuracy of the returned top-K", scale=100, fmt="+.1f", suffix=" points")
    claims.append(dict(
        claim="The prompts GPS returns score higher on the 32-example dev set than on test (they overfit the dev set)",
        paper_value="a risk the paper names (few-shot dev set) but does not measure",
        ours=f"dev − test = {ev.describe()}",
        evidence=ev, precondition="none",
        explanation="selecting the max of many noisy 32-example scores is biased upwards (winner's curse).",
        paper=paper))
    return claims

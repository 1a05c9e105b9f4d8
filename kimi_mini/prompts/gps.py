"""Genetic Prompt Search (Xu et al., "GPS: Genetic Prompt Search for Efficient Few-shot Learning",
arXiv 2210.17041, Algorithm 1) over a frozen model, and its equal-budget control, random search.

With a frozen model M, a dev set D_dev (32 labelled examples, stratified by label) and the fitness

    f(p) = (1/|D_dev|) Σ_{(x, y) ∈ D_dev} 1[ argmax_c Σ_j log p_M(c_j | p(x), c_<j) = y ]     (rank classification)

the search is, as released:

    G₀ = the manual prompts
    for t = 0 … T:   score every p ∈ G_t by f;   G*_t = top-K of G_t;   archive ← archive ∪ G*_t
                     if t < T:  G_{t+1} = filtered children of G*_t   (parents are NOT carried over)
    return top-K of the archive, re-ranked by f

so T = ``generations`` rounds of breeding after G₀ (9 in the release). Children come from the reproduction
operators of :mod:`kimi_mini.prompts.operators`, round-robin, ``children_per_parent`` per kept parent, and
pass the filters (slots once, no label leak, no duplicate of any prompt seen). Ties in f (a 32-example dev set
scores in steps of 1/32) keep the earlier prompt. The search only sees f through ``scorer``: a callable
template → dev accuracy, so it runs without a model in the tests.

:func:`random_search` is the control the paper lacks: the same operators and filters, no selection — each
candidate is a random walk of 1…T operator steps from a random manual prompt — with exactly the number of
dev evaluations GPS used, then the same top-K by f.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from kimi_mini.checks import check_int
from kimi_mini.prompts.operators import filter_reason
from kimi_mini.prompts.rank import rank_classify
from kimi_mini.prompts.tasks import Example, Task, check_template, render

__all__ = ["Candidate", "GPSResult", "genetic_prompt_search", "random_search", "dev_split", "accuracy",
           "dev_scorer", "task_label_words", "task_slots", "icl_accuracy"]

Operator = Callable[[str, random.Random], "str | None"]


@dataclass
class Candidate:
    """One scored prompt: its template, dev score, generation, parent template and the operator that made it
    (``None`` for a manual prompt), and whether it was kept (G*)."""

    template: str
    score: float
    generation: int
    parent: str | None = None
    operator: str | None = None
    kept: bool = False


@dataclass
class GPSResult:
    """``top``: the final K candidates (best first); ``history[t]``: every candidate of generation t;
    ``rejected``: ``(child, parent, operator, reason)`` for every child a filter removed;
    ``n_evaluations``: dev-set evaluations spent (one per distinct prompt scored); ``shortfall``: how many
    evaluations of a fixed budget were left unspent because the operators stopped producing new legal prompts
    (0 when the budget was spent exactly)."""

    top: list[Candidate]
    history: list[list[Candidate]]
    rejected: list[tuple[str, str, str, str]] = field(default_factory=list)
    n_evaluations: int = 0
    shortfall: int = 0

    @property
    def archive(self) -> list[Candidate]:
        return [c for gen in self.history for c in gen if c.kept]


def task_slots(task: Task) -> list[str]:
    return sorted(task.examples[0].slots)


def task_label_words(task: Task) -> list[str]:
    """The verbaliser's words (every example's options when the task has per-example options)."""
    words = set(task.verbalizer or ())
    for ex in task.examples:
        words |= set(ex.options or ())
    return sorted(words)


def dev_split(task: Task, n_dev: int = 32, seed: int = 0) -> tuple[list[Example], list[Example]]:
    """``(dev, test)``: ``n_dev`` examples stratified by label (as equal per label as ``n_dev`` allows), drawn
    with ``seed``; every other example is the test set (disjoint)."""
    if not isinstance(task, Task):
        raise ValueError(f"task: expected a Task, got {type(task).__name__}")
    if isinstance(n_dev, bool):
        raise ValueError(f"n_dev: expected an int, got {n_dev!r}")
    by_label: dict[int, list[Example]] = {}
    for ex in task.examples:
        by_label.setdefault(ex.label, []).append(ex)
    if not isinstance(n_dev, int) or n_dev < len(by_label):
        raise ValueError(f"n_dev: expected an int >= the number of labels ({len(by_label)}), got {n_dev!r}")
    if n_dev >= len(task.examples):
        raise ValueError(f"n_dev: expected fewer than the task's {len(task.examples)} examples, got {n_dev}")
    rng = random.Random(seed)
    labels = sorted(by_label)
    pools = {y: rng.sample(by_label[y], len(by_label[y])) for y in labels}
    dev = []
    for i in range(n_dev):
        y = labels[i % len(labels)]
        if not pools[y]:
            y = next(lab for lab in labels if pools[lab])
        dev.append(pools[y].pop())
    chosen = {id(e) for e in dev}
    return dev, [e for e in task.examples if id(e) not in chosen]


def accuracy(model, task: Task, examples: Sequence[Example], template: str, impl: str = "torch") -> float:
    """Rank-classification accuracy of ``model`` on ``examples`` rendered with ``template``."""
    if isinstance(examples, str) or not examples:
        raise ValueError(f"examples: expected at least one example, got {examples!r}")
    rendered = [render(task, ex, template) for ex in examples]
    preds, _ = rank_classify(model, [p for p, _ in rendered], [o for _, o in rendered], impl=impl)
    return float((preds == torch.tensor([ex.label for ex in examples])).float().mean())


def dev_scorer(model, task: Task, dev: Sequence[Example], impl: str = "torch") -> Callable[[str], float]:
    """f(p): dev accuracy of template p (the GPS fitness)."""
    return lambda template: accuracy(model, task, dev, template, impl)


MAX_SEARCH = 10_000  # bounded by design (README): generations, children, tries, keep, budget


def _check(manual_prompts, keep, generations, children_per_parent, operators, max_tries=1, scorer=None,
           generations_name="generations"):
    if isinstance(manual_prompts, str) or not manual_prompts or \
            any(not isinstance(p, str) or not p for p in manual_prompts):
        raise ValueError(f"manual_prompts: expected a non-empty list of template strings, got {manual_prompts!r}")
    check_int("keep", keep, 1, MAX_SEARCH)
    check_int(generations_name, generations, 0, MAX_SEARCH)
    check_int("children_per_parent", children_per_parent, 1, MAX_SEARCH)
    check_int("max_tries", max_tries, 1, MAX_SEARCH)
    if isinstance(operators, (str, bytes)) or not operators or any(not callable(op) for op in operators):
        raise ValueError(f"operators: expected at least one callable reproduction operator, got {operators!r}")
    if scorer is not None and not callable(scorer):
        raise ValueError(f"scorer: expected a callable template -> score or None, got {scorer!r}")


def _scorer(model, task: Task, dev, scorer):
    if not isinstance(task, Task):
        raise ValueError(f"task: expected a Task, got {type(task).__name__}")
    n_labels = len({ex.label for ex in task.examples})
    if (dev is None and scorer is None) or (dev is not None and len(dev) < n_labels):
        raise ValueError(f"dev: expected at least one example per label ({n_labels}), got "
                         f"{None if dev is None else len(dev)}")
    return scorer if scorer is not None else dev_scorer(model, task, dev)


def _check_manual(manual_prompts, slots) -> None:
    for p in manual_prompts:  # a seed prompt without the task's input slot would score a constant prompt
        try:
            check_template(p, slots)
        except ValueError as exc:
            raise ValueError(f"manual_prompts: {exc}") from None


def _op_name(op) -> str:
    return getattr(op, "name", getattr(op, "__name__", type(op).__name__))


def _breed(parent: str, op, rng: random.Random, slots, label_words, seen: set[str], rejected: list
           ) -> str | None:
    child = op(parent, rng)
    if child is None:
        return None
    reason = filter_reason(child, parent, slots, label_words, seen)
    if reason is not None:
        rejected.append((child, parent, _op_name(op), reason))
        return None
    return child


def genetic_prompt_search(model, task: Task, dev: Sequence[Example] | None, manual_prompts: Sequence[str], *,
                          generations: int = 9, keep: int = 4, operators: Sequence[Operator] = (), seed: int = 0,
                          children_per_parent: int = 4, max_tries: int = 4,
                          scorer: Callable[[str], float] | None = None) -> GPSResult:
    """GPS as released (module docstring). ``scorer`` (template → dev accuracy) defaults to rank classification
    of ``model`` on ``dev``; ``task`` gives the input slots and label words the filters check. Each kept parent
    gets ``children_per_parent`` operator calls (round-robin over ``operators``), each retried up to
    ``max_tries`` times while it yields nothing or a rejected child. Stops early if a generation is empty."""
    _check(manual_prompts, keep, generations, children_per_parent, operators, max_tries, scorer)
    scorer = _scorer(model, task, dev, scorer)
    slots, label_words = task_slots(task), task_label_words(task)
    _check_manual(manual_prompts, slots)
    rng = random.Random(seed)
    seen: set[str] = set()
    population = [Candidate(p, 0.0, 0) for p in dict.fromkeys(manual_prompts)]
    result = GPSResult([], [])
    for t in range(generations + 1):
        for c in population:
            c.score = float(scorer(c.template))
            seen.add(c.template)
        result.n_evaluations += len(population)
        ranked = sorted(range(len(population)), key=lambda i: (-population[i].score, i))
        for i in ranked[:keep]:
            population[i].kept = True
        result.history.append(population)
        if t == generations:
            break
        children: list[Candidate] = []
        for i in ranked[:keep]:
            parent = population[i].template
            for j in range(children_per_parent):
                op = operators[j % len(operators)]
                for _ in range(max_tries):
                    child = _breed(parent, op, rng, slots, label_words, seen, result.rejected)
                    if child is not None:
                        seen.add(child)
                        children.append(Candidate(child, 0.0, t + 1, parent, _op_name(op)))
                        break
        if not children:
            break
        population = children
    archive = result.archive
    order = sorted(range(len(archive)), key=lambda i: (-archive[i].score, i))
    result.top = [archive[i] for i in order[:keep]]
    return result


def random_search(model, task: Task, dev: Sequence[Example] | None, manual_prompts: Sequence[str], *,
                  budget: int, keep: int = 4, operators: Sequence[Operator] = (), max_steps: int = 9, seed: int = 0,
                  max_tries: int = 20, scorer: Callable[[str], float] | None = None) -> GPSResult:
    """Equal-budget control: the manual prompts plus random walks (1 … ``max_steps`` operator steps from a random
    manual prompt, each step filtered like GPS's), ``budget`` dev evaluations in all (pass GPS's
    ``n_evaluations``), then the top ``keep`` by dev score. ``history`` holds one list of every candidate."""
    _check(manual_prompts, keep, max_steps, 1, operators, max_tries, scorer, "max_steps")
    check_int("budget", budget, 1, 10**6)
    scorer = _scorer(model, task, dev, scorer)
    slots, label_words = task_slots(task), task_label_words(task)
    _check_manual(manual_prompts, slots)
    rng = random.Random(seed)
    manual = list(dict.fromkeys(manual_prompts))[:budget]
    seen = set(manual)
    cands = [Candidate(p, 0.0, 0) for p in manual]
    result = GPSResult([], [cands])
    misses = 0
    while len(cands) < budget and misses < max_tries * budget:
        start = rng.choice(manual)
        node, op = start, None
        for _ in range(rng.randint(1, max(1, max_steps))):
            op = rng.choice(operators)
            nxt = _breed(node, op, rng, slots, label_words, seen | {node}, result.rejected)
            if nxt is None:
                break
            node = nxt
        if node == start or node in seen:
            misses += 1
            continue
        seen.add(node)
        cands.append(Candidate(node, 0.0, 1, start, _op_name(op)))
    for c in cands:
        c.score = float(scorer(c.template))
    result.n_evaluations = len(cands)
    result.shortfall = budget - len(cands)  # > 0 only when max_tries · budget walks found nothing new
    order = sorted(range(len(cands)), key=lambda i: (-cands[i].score, i))
    for i in order[:keep]:
        cands[i].kept = True
    result.top = [cands[i] for i in order[:keep]]
    return result


def icl_accuracy(model, task: Task, demos: Sequence[Example], test: Sequence[Example], template: str, k: int,
                 seed: int = 0, impl: str = "torch") -> float:
    """In-context learning: ``k`` demonstrations (drawn from ``demos`` with ``seed``, balanced by label when
    possible, each rendered with its answer and a newline) before every test prompt; rank classification.
    Demonstrations that would overflow the model's context are dropped from the left."""
    check_int("k", k, 0, MAX_SEARCH)
    if isinstance(test, str) or not test:
        raise ValueError(f"test: expected at least one example, got {test!r}")
    rng = random.Random(seed)
    max_len = model.config.max_seq_len
    prompts, options = [], []
    for ex in test:
        shots = rng.sample(list(demos), min(k, len(demos)))
        blocks = []
        for d in shots:
            p, opts = render(task, d, template)
            blocks.append(f"{p}{opts[d.label]}\n")
        q, opts = render(task, ex, template)
        longest = max(len(o.encode()) for o in opts)
        while blocks and len(("".join(blocks) + q).encode()) + longest > max_len:
            blocks.pop(0)
        prompts.append("".join(blocks) + q)
        options.append(opts)
    preds, _ = rank_classify(model, prompts, options, impl=impl)
    return float((preds == torch.tensor([ex.label for ex in test])).float().mean())

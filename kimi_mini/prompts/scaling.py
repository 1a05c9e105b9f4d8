"""The task-scaling experiment of ZeroPrompt (arXiv 2201.06910, §4): N training tasks × model size → zero-shot
accuracy on held-out tasks, with training compute ``FLOPs = 6 · params · tokens``.

Every run of the grid trains (or loads from the cache) one :func:`~kimi_mini.prompts.pretrain.pretrain` model on
the first N tasks of the training pool, at the same number of training sequences for every N, and scores it by
rank classification on three held-out sets: held-out tasks of trained families (``seen``), generated tasks of
never-trained families (``unseen``) and the real tasks (all of never-trained families: ``real``).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Sequence

from kimi_mini.prompts.pretrain import PretrainConfig, pretrain, zero_shot_hits
from kimi_mini.prompts.tasks import Task
from kimi_mini.prompts.zoo import Splits
from kimi_mini.report import Evidence

__all__ = ["heldout_sets", "task_scaling", "mean_sd", "paired_gap", "gap_evidence", "pooled_hits"]


def heldout_sets(zoo: dict[str, Task], split: Splits) -> dict[str, list[str]]:
    """``{"seen": …, "unseen": …, "real": …}`` task names (see the module docstring)."""
    return {"seen": list(split.heldout_seen),
            "unseen": [n for n in split.heldout_family if not zoo[n].real],
            "real": [n for n in split.heldout_family if zoo[n].real]}


def task_scaling(zoo: dict[str, Task], split: Splits, runs: Sequence[tuple], base: PretrainConfig,
                 n_eval: int = 16, device: str = "cpu", autocast_dtype=None, progress: bool = False) -> list[dict]:
    """One row per ``(size, n_tasks, seed)`` or ``(size, n_tasks, seed, steps)`` in ``runs`` (``steps`` overrides
    ``base.steps`` for that run): ``size``, ``n_tasks``, ``seed``, ``steps``, ``params``, ``tokens``,
    ``flops``, ``cached``, ``seconds`` (process CPU time of training or loading), ``final_loss`` (mean of the last
    50 steps), ``loss_drop`` (relative drop of the mean loss from the second-last to the last tenth of training:
    near 0 at a plateau), ``acc`` (held-out set → mean accuracy over its tasks), ``per_task`` (task → accuracy),
    ``hits`` (task → 1/0 per scored example: the first ``n_eval`` of a generated task, every example of a real one) and
    ``sets`` (held-out set → task names)."""
    sets = heldout_sets(zoo, split)
    rows = []
    for size, n_tasks, seed, *rest in runs:
        steps = rest[0] if rest else base.steps
        t0 = time.process_time()
        run = pretrain(PretrainConfig.sized(size, **{**_base_overrides(base), "n_tasks": n_tasks, "seed": seed,
                                                     "steps": steps}),
                       zoo=zoo, device=device, autocast_dtype=autocast_dtype, progress=progress)
        seconds = time.process_time() - t0
        # generated held-out tasks on their first n_eval examples; every real example is scored (a few thousand)
        hits = zero_shot_hits(run.model, [zoo[n] for k in ("seen", "unseen") for n in sets[k]], n_eval)
        hits.update(zero_shot_hits(run.model, [zoo[n] for n in sets["real"]], None))
        per_task = {n: sum(h) / len(h) for n, h in hits.items()}
        losses = [h["loss"] for h in run.history[-50:]]
        tenth = max(1, len(run.history) // 10)
        prev = statistics.fmean(h["loss"] for h in run.history[-2 * tenth:-tenth]) if len(run.history) >= 2 * tenth \
            else math.nan
        last = statistics.fmean(h["loss"] for h in run.history[-tenth:])
        rows.append({"size": size, "n_tasks": n_tasks, "seed": seed, "steps": steps, "params": run.params,
                     "tokens": run.tokens, "flops": run.flops, "cached": run.cached, "seconds": seconds,
                     "final_loss": sum(losses) / len(losses),
                     "loss_drop": (prev - last) / prev if prev == prev and prev > 0 else math.nan,
                     "acc": {k: statistics.fmean(per_task[n] for n in names) for k, names in sets.items()},
                     "per_task": per_task, "hits": hits, "sets": sets})
    return rows


def _base_overrides(base: PretrainConfig) -> dict:
    skip = {"n_tasks", "seed", "d_model", "n_layers", "n_heads"}
    return {k: getattr(base, k) for k in base.__dataclass_fields__ if k not in skip}


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    values = list(values)
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def paired_gap(rows_a: Sequence[dict], rows_b: Sequence[dict], heldout: str) -> tuple[float, float]:
    """Mean accuracy gap ``b − a`` on ``heldout`` and its standard error: across seeds when both have ≥ 3 seeds
    (paired by seed), otherwise across the held-out tasks (paired by task, seeds averaged)."""
    if len(rows_a) >= 3 and len(rows_b) >= 3:
        by_seed_a = {r["seed"]: r["acc"][heldout] for r in rows_a}
        diffs = [r["acc"][heldout] - by_seed_a[r["seed"]] for r in rows_b if r["seed"] in by_seed_a]
    else:
        tasks = rows_a[0]["sets"][heldout]
        diffs = [statistics.fmean(r["per_task"][n] for r in rows_b) - statistics.fmean(r["per_task"][n] for r in rows_a)
                 for n in tasks]
    m, sd = mean_sd(diffs)
    return m, sd / math.sqrt(len(diffs)) if len(diffs) > 1 else math.inf



def pooled_hits(row: dict, heldout: str) -> list[int]:
    """Every scored example's hit (1/0) of ``row`` on held-out set ``heldout``, tasks in the set's order."""
    return [h for n in row["sets"][heldout] for h in row["hits"][n]]


def gap_evidence(rows_a: Sequence[dict], rows_b: Sequence[dict], heldout: str, *, threshold: float = 0.0,
                 direction: str = "above", what: str = "", **style) -> Evidence:
    """Evidence on the accuracy gap ``b − a`` on ``heldout``: paired by seed (Student t over seeds) when both
    cells share at least 2 seeds, otherwise paired by example — each held-out example scored by both models,
    the SE of the mean per-example difference (one seed: the seed-to-seed spread is then *not* in the SE)."""
    seeds_a = {r["seed"]: r for r in rows_a}
    common = [r["seed"] for r in rows_b if r["seed"] in seeds_a]
    if len(common) >= 2:
        by_b = {r["seed"]: r for r in rows_b}
        return Evidence.paired([by_b[s]["acc"][heldout] for s in common], [seeds_a[s]["acc"][heldout] for s in common],
                               threshold=threshold, direction=direction, what=what or f"{heldout} accuracy gap",
                               **style)
    if not rows_a or not rows_b:
        raise ValueError("rows_a, rows_b: expected at least one run in each cell")
    ha, hb = pooled_hits(rows_a[0], heldout), pooled_hits(rows_b[0], heldout)
    diffs = [b - a for a, b in zip(ha, hb, strict=True)]
    m, sd = mean_sd(diffs)
    return Evidence(m, sd / math.sqrt(len(diffs)), len(diffs), "examples", threshold, direction,
                    what or f"{heldout} accuracy gap, paired by example", **style)

"""The notebook's experiment: every fusion × modality subset × seed on one data set, and its summary.

A *task* is a function ``task(seed) -> Split`` that returns standardised train / validation / test
arrays per modality name (so the split itself may depend on the seed — new held-out subjects per seed
on the watch data). :func:`run_grid` trains a :class:`FusionClassifier` per (modalities, fusion, seed)
with early stopping on the validation part, fits the SVM baseline on train + validation, and returns
one record per run; :func:`summarize` turns the records into mean ± sd per cell and :func:`paired_gap`
compares two cells seed by seed (both used the same split and the same initial seed).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from kimi_mini.fusion.data import driver_simulator, standardize, watch_dataset, watch_splits
from kimi_mini.fusion.ops import FusionClassifier, accuracy, fit_fusion, n_params, svm_baseline

__all__ = ["Split", "watch_task", "simulator_task", "run_grid", "summarize", "paired_gap", "paired_gaps", "cell_values",
           "matched_width", "equal_parameter_grid"]


@dataclass
class Split:
    """Per-modality arrays ``{name: [n, f]}`` for train / val / test, labels, and the class count."""

    train: dict[str, np.ndarray]
    val: dict[str, np.ndarray]
    test: dict[str, np.ndarray]
    y_train: np.ndarray
    y_val: np.ndarray
    y_test: np.ndarray
    n_classes: int


def _standardized(parts: dict[str, list[np.ndarray]]) -> list[dict[str, np.ndarray]]:
    out = [{}, {}, {}]
    for name, arrays in parts.items():
        for i, a in enumerate(standardize(*arrays)):
            out[i][name] = a.astype(np.float32)
    return out


def watch_task(n_test: int = 3) -> Callable[[int], Split]:
    """Smartwatch windows split by subject: ``n_test`` test subjects and one validation subject drawn with
    the seed, the rest train (z-scored with the train statistics)."""
    n_classes = watch_dataset().features["label"].num_classes

    def task(seed: int) -> Split:
        dd = watch_splits(seed, n_test=n_test).with_format("numpy")
        cols = [dd[k][:] for k in ("train", "validation", "test")]
        tr, va, te = _standardized({m: [c[m] for c in cols] for m in ("accelerometer", "gyroscope")})
        return Split(tr, va, te, *(c["label"] for c in cols), n_classes)

    return task


def simulator_task(interactions: bool, n_train: int = 1000, n_test: int = 3000, val_fraction: float = 0.2,
                   **options) -> Callable[[int], Split]:
    """Driver-simulator samples (fresh ones per seed): ``n_train`` (of which ``val_fraction`` is
    validation) and ``n_test``; ``options`` go to :func:`driver_simulator`."""
    from kimi_mini.fusion.data import SIM_MODALITIES

    def task(seed: int) -> Split:
        xs, y = driver_simulator(n_train + n_test, interactions=interactions, seed=seed, **options)
        n_val = int(round(val_fraction * n_train))
        cut = [slice(0, n_train - n_val), slice(n_train - n_val, n_train), slice(n_train, None)]
        tr, va, te = _standardized({m: [x[c] for c in cut] for m, x in zip(SIM_MODALITIES, xs, strict=True)})
        return Split(tr, va, te, *(y[c] for c in cut), n_classes=2)

    return task


def run_grid(task: Callable[[int], Split], modality_sets: Sequence[Sequence[str]], fusions: Sequence[str],
             seeds: Sequence[int], *, steps: int = 150, lr: float = 1e-2, unimodal: Sequence[str] = ("early",),
             svm: bool = True, **model_options) -> list[dict]:
    """Train and test every (modality set, fusion, seed). With one modality only the fusions named in
    ``unimodal`` run (early, late, TFN and LMF of one modality are all the same MLP). Records:
    ``{"modalities": "a+b", "n_modalities", "fusion", "seed", "acc"}``; fusion ``"svm"`` for the baseline."""
    records = []
    for seed in seeds:
        split = task(seed)
        for mods in modality_sets:
            mods = list(mods)

            def pick(part: dict, mods=mods) -> list[np.ndarray]:
                return [part[m] for m in mods]

            names = list(unimodal) if len(mods) == 1 else list(fusions)
            for fusion in names:
                torch.manual_seed(seed)
                model = FusionClassifier([split.train[m].shape[1] for m in mods], split.n_classes, fusion=fusion,
                                         **model_options)
                fit_fusion(model, pick(split.train), split.y_train, steps=steps, lr=lr, seed=seed,
                           val=(pick(split.val), split.y_val))
                records.append({"modalities": "+".join(mods), "n_modalities": len(mods), "fusion": fusion,
                                "seed": seed, "acc": accuracy(model, pick(split.test), split.y_test)})
            if svm:
                x_fit = [np.concatenate([split.train[m], split.val[m]]) for m in mods]
                acc = svm_baseline(x_fit, np.concatenate([split.y_train, split.y_val]), pick(split.test), split.y_test)
                records.append({"modalities": "+".join(mods), "n_modalities": len(mods), "fusion": "svm",
                                "seed": seed, "acc": acc})
    return records


def summarize(records: Sequence[dict]) -> dict[tuple[str, str], tuple[float, float, int]]:
    """``{(modalities, fusion): (mean acc, sd over seeds, n seeds)}`` (sd with ddof=1)."""
    cells: dict[tuple[str, str], list[float]] = {}
    for r in records:
        cells.setdefault((r["modalities"], r["fusion"]), []).append(r["acc"])
    return {k: (float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0, len(v)) for k, v in cells.items()}


def cell_values(records: Sequence[dict], cell: tuple[str, str] | Sequence[tuple[str, str]]) -> list[float]:
    """Per-seed accuracies of ``cell`` (sorted by seed); several cells: the best of them in each seed."""
    cells = [cell] if isinstance(cell, tuple) and isinstance(cell[0], str) else list(cell)
    acc = {(r["modalities"], r["fusion"], r["seed"]): r["acc"] for r in records}
    seeds = sorted({r["seed"] for r in records if (r["modalities"], r["fusion"]) == tuple(cells[0])})
    if not seeds:
        raise ValueError(f"cell: no records for cell {cells[0]!r}")
    return [max(acc[(*c, s)] for c in cells) for s in seeds]


def paired_gaps(records: Sequence[dict], a: tuple[str, str], b: tuple[str, str] | Sequence[tuple[str, str]]
                ) -> list[float]:
    """Per-seed acc(a) − acc(b), matched by seed (sorted by seed); ``b`` may be several cells, then the best
    of them in each seed."""
    va = cell_values(records, a)
    vb = cell_values(records, b)
    if len(va) != len(vb):
        raise ValueError(f"b: expected the seeds of {a!r} ({len(va)}), got {len(vb)}")
    return [x - y for x, y in zip(va, vb, strict=True)]


def paired_gap(records: Sequence[dict], a: tuple[str, str], b: tuple[str, str] | Sequence[tuple[str, str]]
               ) -> tuple[float, float]:
    """Mean and sd (over seeds) of acc(a) − acc(b), matched by seed; ``b`` may be several cells, then the
    best of them in each seed."""
    gaps = paired_gaps(records, a, b)
    return float(np.mean(gaps)), float(np.std(gaps, ddof=1)) if len(gaps) > 1 else 0.0


def matched_width(in_dims: Sequence[int], n_classes: int, fusion: str, budget: int, **model_options) -> int:
    """The ``fused`` width at which a :class:`FusionClassifier` with ``fusion`` has the parameter count closest
    to ``budget`` (for early and late fusion the count grows linearly with it)."""
    check = dict(model_options)
    check.pop("fused", None)

    def count(w: int) -> int:
        return n_params(FusionClassifier(list(in_dims), n_classes, fusion=fusion, fused=w, **check))

    a, b = count(1), count(2)
    w = max(1, round(1 + (budget - a) / max(b - a, 1)))
    return min((w - 1, w, w + 1), key=lambda v: abs(count(max(v, 1)) - budget)) or 1


def equal_parameter_grid(task: Callable[[int], Split], modalities: Sequence[str], seeds: Sequence[int], *,
                         reference: str = "polynomial", early_widths: Sequence[int] = (16, 64), steps: int = 150,
                         lr: float = 1e-2, **model_options) -> list[dict]:
    """The paper's claim against baselines of the **same parameter count**: per seed, ``reference`` at
    ``model_options``; late fusion and TFN-free baselines widened (``fused``) to the reference's parameter
    count; early fusion at that matched width *and* at each of ``early_widths``, keeping the width with the
    best validation accuracy ("early, best width", chosen per seed on validation only). Records as in
    :func:`run_grid`, plus ``n_params`` and ``val_acc``; fusion names ``reference``, ``"late (matched)"``,
    ``"early (matched)"``, ``"early (best width)"``."""
    mods = list(modalities)
    records = []
    for seed in seeds:
        split = task(seed)
        dims = [split.train[m].shape[1] for m in mods]
        fit = functools.partial(_fit_one, split, mods, seed, steps=steps, lr=lr)

        def add(name: str, result: tuple[float, float, int], seed: int = seed) -> None:
            records.append({"modalities": "+".join(mods), "n_modalities": len(mods), "fusion": name, "seed": seed,
                            "acc": result[0], "val_acc": result[1], "n_params": result[2]})

        ref = fit(reference, **model_options)
        add(reference, ref)
        opts = {k: v for k, v in model_options.items() if k != "fused"}
        w_late = matched_width(dims, split.n_classes, "late", ref[2], **opts)
        add("late (matched)", fit("late", fused=w_late, **opts))
        w_early = matched_width(dims, split.n_classes, "early", ref[2], **opts)
        early = {w: fit("early", fused=w, **opts) for w in dict.fromkeys((*early_widths, w_early))}
        add("early (matched)", early[w_early])
        add("early (best width)", max(early.values(), key=lambda r: r[1]))
    return records


def _fit_one(split: Split, mods: list[str], seed: int, fusion: str, *, steps: int, lr: float, **opts
             ) -> tuple[float, float, int]:
    """Train one model with early stopping; (test accuracy, validation accuracy, parameter count)."""
    def pick(part: dict) -> list[np.ndarray]:
        return [part[m] for m in mods]

    torch.manual_seed(seed)
    model = FusionClassifier([split.train[m].shape[1] for m in mods], split.n_classes, fusion=fusion, **opts)
    fit_fusion(model, pick(split.train), split.y_train, steps=steps, lr=lr, seed=seed,
               val=(pick(split.val), split.y_val))
    return (accuracy(model, pick(split.test), split.y_test), accuracy(model, pick(split.val), split.y_val),
            n_params(model))

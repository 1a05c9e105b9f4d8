"""The StoryWars experiment: InstructStory vs single-task vs no-instruction models in three regimes.

Paper: *StoryWars* (Du & Chilton, ACL 2023, arXiv 2305.08152), §5, Tables 3–5. For one seed:

1. a byte-level KimiMini language model on the training stories (the shared "pretrained" start);
2. **InstructStory**: fine-tuned on every fully-supervised task at once, natural-language instructions;
   **no-instruction**: the same tasks and steps, each prompt headed by a task-id token ``<task NN>``;
   **single-task**: one model per task type, trained on that type's supervised tasks to its own plateau —
   ``single_task_steps`` steps (default: InstructStory's own step count, as the paper trains each single-task
   model fully rather than on a share of the multitask budget);
3. *fully supervised*: each model on the supervised tasks' test examples (held-out stories);
   *few-shot*: InstructStory and no-instruction each fine-tuned on ``k`` examples of each few-shot task
   (a new id token for the baseline), then evaluated on it;
   *zero-shot*: both evaluated directly on the zero-shot tasks (the baseline's id tokens were never seen), and
   the story LM of step 1 with the instructions (the paper's zero-shot T5 row: no instruction tuning).

Two designs of the zero-shot regime (:func:`regime_tasks`):

- ``zero_shot_types`` empty — the paper's per-genre split (:func:`~kimi_mini.storywars.tasks.task_splits`):
  zero-shot tasks are *trained* task types in a genre they were not trained in, except the types in
  ``zero_shot_exclude`` (genre classification in an unseen genre is built so that training priors invert its
  labels: that genre's stories were the *negatives* of every trained genre's task);
- ``zero_shot_types`` given (the toy preset) — zero-shot tasks are task types *never trained*
  (:data:`~kimi_mini.storywars.tasks.HELD_OUT`), whose instruction names the skill and whose labels are
  independent of every trained type's, in the genres every trained type is supervised in; the trained types'
  last genre is their few-shot genre and the rest are supervised.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field

from kimi_mini.storywars.corpus import Corpus, CorpusConfig, load_corpus
from kimi_mini.storywars.evaluate import chance_scores, evaluate_tasks
from kimi_mini.storywars.tasks import TASK_TYPES, Task, all_tasks, make_examples, task_splits
from kimi_mini.storywars.train import (
    TrainSpec,
    cached_model,
    id_renderer,
    instruct_renderer,
    pretrained_lm,
    sample_pool,
)

__all__ = ["ExperimentConfig", "run_seed", "run_experiment", "summarise", "regime_tasks", "REGIMES", "MODELS"]

REGIMES = ("supervised", "few_shot", "zero_shot")
MODELS = ("InstructStory", "single-task", "no-instruction", "story LM")


@dataclass(frozen=True)
class ExperimentConfig:
    """Everything the experiment depends on (sizes come from the notebook's preset)."""

    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    types: tuple[str, ...] = ("temporal_inference", "connectivity_inference", "authorship_verification")
    spec: TrainSpec = field(default_factory=TrainSpec)
    lm_steps: int = 200
    pool: int = 256  # training examples per supervised task
    n_eval: int = 48  # test examples per task
    k_shot: int = 16
    few_shot_steps: int = 20
    few_shot_lr_scale: float = 0.5  # few-shot fine-tuning lr = spec.lr × this (k examples are seen many times)
    seeds: tuple[int, ...] = (0, 1, 2)
    single_task_steps: int | None = None  # None: spec.steps (InstructStory's step count)
    zero_shot_exclude: tuple[str, ...] = ("genre_classification",)
    zero_shot_types: tuple[str, ...] = ()  # task types never trained: the zero-shot regime (see the module)

    def __post_init__(self) -> None:
        if self.single_task_steps is not None and (not isinstance(self.single_task_steps, int)
                                                   or self.single_task_steps < 1):
            raise ValueError(f"single_task_steps: expected an int >= 1 or None, got {self.single_task_steps!r}")
        for name in ("lm_steps", "pool", "n_eval", "k_shot", "few_shot_steps"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}: expected an int >= 1, got {v!r}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds: expected distinct seeds, got {self.seeds!r}")
        zs = self.zero_shot_types
        if not isinstance(zs, tuple) or any(t not in TASK_TYPES for t in zs) or set(zs) & set(self.types):
            raise ValueError(f"zero_shot_types: expected a tuple of task types not in types={self.types}, got {zs!r}")
        if self.k_shot > self.pool:
            raise ValueError(f"k_shot: expected <= pool={self.pool}, got {self.k_shot}")


def _by_type(tasks: list[Task]) -> dict[str, list[Task]]:
    out: dict[str, list[Task]] = {}
    for t in tasks:
        out.setdefault(t.type, []).append(t)
    return out


def regime_tasks(cfg: ExperimentConfig) -> dict[str, list[Task]]:
    """The supervised, few-shot and zero-shot task sets of ``cfg`` (disjoint; see the module docstring)."""
    genres = cfg.corpus.genres
    if not cfg.zero_shot_types:
        splits = task_splits(cfg.types, genres)
        splits["zero_shot"] = [t for t in splits["zero_shot"] if t.type not in cfg.zero_shot_exclude]
        return splits
    return {"supervised": all_tasks(cfg.types, genres[:-1]), "few_shot": all_tasks(cfg.types, genres[-1:]),
            "zero_shot": all_tasks(cfg.zero_shot_types, genres[:-1])}


def run_seed(cfg: ExperimentConfig, seed: int, corpus: Corpus | None = None, cache=None,
             log: Callable[[str], None] | None = None) -> dict:
    """One seed of the whole experiment. Returns ``{"scores": {regime: {model: {type: metric}}},
    "chance": {regime: {type: metric}}, "losses": {model: final loss}}`` (metrics on a 0–100 scale)."""
    corpus = corpus or load_corpus(cfg.corpus, cache=cache)
    say = log or (lambda s: None)
    splits = regime_tasks(cfg)
    ids = {t.name: i for i, t in enumerate(all_tasks(cfg.types + cfg.zero_shot_types, cfg.corpus.genres))}
    spec = dataclasses.replace(cfg.spec, seed=seed)
    pools = {t.name: make_examples(corpus, t, "train", cfg.pool) for t in splits["supervised"]}
    evals = {r: {t.name: make_examples(corpus, t, "test", cfg.n_eval) for t in splits[r]} for r in REGIMES}
    lm, _ = pretrained_lm([s.text for s in corpus.split("train")], dataclasses.replace(cfg.spec, seed=0),
                          cfg.lm_steps, cache=cache)
    nid = id_renderer(ids)
    scores: dict[str, dict[str, dict[str, float]]] = {r: {} for r in REGIMES}
    losses = {}
    models = {}
    for name, renderer, rname in (("InstructStory", instruct_renderer, "instruct"), ("no-instruction", nid, "id")):
        model, info = cached_model(f"{name}-s{seed}", pools, renderer, rname, spec, init=lm, cache=cache)
        models[name], losses[name] = (model, renderer), info["final_loss"]
        scores["supervised"][name] = evaluate_tasks(model, evals["supervised"], renderer)
        scores["zero_shot"][name] = evaluate_tasks(model, evals["zero_shot"], renderer)
        say(f"seed {seed} · {name}: loss {info['final_loss']:.3f} ({'cached' if info['loaded'] else 'trained'})")
    single: dict[str, float] = {}
    per_type_steps = cfg.single_task_steps or spec.steps
    for ttype, tasks in _by_type(splits["supervised"]).items():
        sub = {t.name: pools[t.name] for t in tasks}
        model, info = cached_model(f"single-{ttype}-s{seed}", sub, instruct_renderer, "instruct", spec,
                                   steps=per_type_steps, init=lm, cache=cache)
        single.update(evaluate_tasks(model, {t.name: evals["supervised"][t.name] for t in tasks}, instruct_renderer))
        losses[f"single-{ttype}"] = info["final_loss"]
    scores["supervised"]["single-task"] = single
    # the paper's zero-shot "T5" row: the pretrained story LM without instruction tuning, given the instructions
    scores["zero_shot"]["story LM"] = evaluate_tasks(lm, evals["zero_shot"], instruct_renderer)
    say(f"seed {seed} · single-task models: {per_type_steps} steps each")
    few_spec = dataclasses.replace(spec, steps=cfg.few_shot_steps, batch_size=min(spec.batch_size, cfg.k_shot),
                                   warmup=0, lr=spec.lr * cfg.few_shot_lr_scale)
    for name, (model, renderer) in models.items():
        res = {}
        for task in splits["few_shot"]:
            shots = sample_pool(make_examples(corpus, task, "train", cfg.pool), cfg.k_shot, seed)
            tuned, _ = cached_model(f"fewshot-{name}-{task.name}-s{seed}", {task.name: shots}, renderer,
                                    "instruct" if renderer is instruct_renderer else "id", few_spec, init=model,
                                    cache=cache)
            res.update(evaluate_tasks(tuned, {task.name: evals["few_shot"][task.name]}, renderer))
        scores["few_shot"][name] = res
    say(f"seed {seed} · few-shot: k={cfg.k_shot}, {cfg.few_shot_steps} steps per task")
    chance = {r: chance_scores(evals[r], seed=seed) for r in REGIMES}
    return {"scores": scores, "chance": chance, "losses": losses}


def run_experiment(cfg: ExperimentConfig, cache=None, log: Callable[[str], None] | None = None) -> list[dict]:
    """:func:`run_seed` for every seed of ``cfg``."""
    corpus = load_corpus(cfg.corpus, cache=cache)
    return [run_seed(cfg, s, corpus, cache=cache, log=log) for s in cfg.seeds]


def _mean_sd(xs: list[float]) -> tuple[float, float]:
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else math.nan)


def summarise(results: list[dict]) -> dict:
    """Mean ± sd over seeds: ``{"per_type": {regime: {model: {type: (mean, sd)}}}, "average": {regime:
    {model: (mean, sd, [per-seed averages])}}, "chance": {regime: {type: mean}, ...}}``. A model's average is
    the mean over task types of its metric, per seed."""
    per_type: dict = {}
    average: dict = {}
    chance: dict = {}
    for regime in REGIMES:
        per_type[regime], average[regime] = {}, {}
        for model in results[0]["scores"][regime]:
            runs = [r["scores"][regime][model] for r in results]
            types = sorted(runs[0])
            per_type[regime][model] = {t: _mean_sd([run[t] for run in runs]) for t in types}
            avgs = [statistics.fmean(run[t] for t in types) for run in runs]
            average[regime][model] = (*_mean_sd(avgs), avgs)
        ch = [r["chance"][regime] for r in results]
        chance[regime] = {t: statistics.fmean(c[t] for c in ch) for t in ch[0]}
        chance[regime]["average"] = statistics.fmean(chance[regime][t] for t in ch[0])
    return {"per_type": per_type, "average": average, "chance": chance}

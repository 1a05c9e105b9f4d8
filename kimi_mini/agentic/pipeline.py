"""The post-training pipeline end to end: pre-train → synthesise + judge → SFT → RL, and the held-out evaluation.

Paper: *Kimi K2: Open Agentic Intelligence* (arXiv 2507.20534) §3. Sizes live in one :class:`AgenticSetup`;
the pre-trained and the SFT checkpoints are cached under ``data/cache/agentic/`` by a hash of everything that
determines them (a fresh clone fits them in the notebook's budget; later runs load them).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import pickle
import random
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from kimi_mini.agentic import rl, synthesis
from kimi_mini.agentic.rl import (
    budget_penalty,
    collate,
    encode_episode,
    k15_policy_loss,
    rollout,
    sequence_logprob,
    sft_loss,
    temperature_schedule,
)
from kimi_mini.agentic.synthesis import Task, judge, make_agents, make_tasks, optimal_agent_bytes, synthesize
from kimi_mini.checks import check_int, check_number, describe
from kimi_mini.data import TokenData, atomic_path, cache_dir, code_key, load_corpus, save_atomically
from kimi_mini.model import KimiConfig, KimiMini
from kimi_mini.optim import build_optimizer
from kimi_mini.train import evaluate, run_steps, train

__all__ = ["AgenticSetup", "build_tasks", "task_dataset", "sft_dataset", "pretrained_model", "sft_model", "task_budget",
           "rl_finetune", "rl_model", "rl_sweep", "choose_rl", "success_rate", "stdlib_loss", "run_experiment",
           "VARIANTS"]

_VERSION = "agentic-v3"  # bump when the code that produces a cached checkpoint changes


@dataclass(frozen=True)
class AgenticSetup:
    """Every size of the experiment (toy defaults: the whole notebook ≈ 118 s of CPU from a fresh clone)."""

    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    d_ff: int = 176
    max_seq_len: int = 224
    pretrain_steps: int = 0  # 0: the base model is the random init (see the notebook for why)
    pretrain_batch: int = 16
    pretrain_seq: int = 128
    tasks_per_agent: int = 400
    max_operand: int = 30
    p_error: float = 0.3  # the teacher's mistake rate (what the judge filters out)
    p_long: float = 0.3  # the teacher's long-winded-but-right rate (what the token budget targets)
    sft_steps: int = 200  # Muon at lr 1e-2: 200 steps beat AdamW's 400 (0.63 vs 0.60 held-out success)
    sft_batch: int = 16
    sft_optimizer: str = "muon"  # kimi_mini.optim.build_optimizer name; Muon learns these tiny models far faster
    sft_lr: float = 1e-2  # decays linearly to 0 over the SFT steps
    sft_ptx_weight: float = 0.0  # > 0: next-byte loss on stdlib text in each SFT step (the SFT model knows the stdlib)
    lr: float = 3e-3  # pre-training (AdamW)
    rl_steps: int = 20
    rl_tasks: int = 6  # tasks per RL step
    rl_k: int = 4  # samples per task
    rl_lr: float = 1e-3  # a default: the notebook uses the lr chosen on validation tasks (rl_sweep, choose_rl)
    rl_inner: int = 2  # gradient steps per rollout batch (π_old fixed within them)
    tau: float = 0.1
    ptx_weight: float = 0.1
    ptx_batch: int = 8
    ptx_seq: int = 96
    budget_slack: float = 1.25  # per-sample budget = slack × the shortest correct response's bytes
    budget_weight: float = 0.5
    t_start: float = 1.0
    t_end: float = 0.5
    n_test: int = 128  # held-out test tasks of the trained agents
    n_evolved: int = 64  # test tasks of the never-trained tool
    n_val: int = 64  # validation tasks: RL's settings are chosen on these only

    def __post_init__(self) -> None:
        from kimi_mini.optim import OPTIMIZERS

        for name in ("d_model", "n_layers", "n_heads", "d_ff", "max_seq_len", "pretrain_batch", "pretrain_seq",
                     "sft_batch", "rl_tasks", "rl_inner", "ptx_batch", "ptx_seq"):
            check_int(name, getattr(self, name), 1, 1 << 20)
        check_int("rl_k", self.rl_k, 2, 1 << 20)  # K1.5's mean reward needs at least two samples per task
        for name in ("sft_steps", "rl_steps"):
            check_int(name, getattr(self, name), 1, 10**7)
        check_int("pretrain_steps", self.pretrain_steps, 0, 10**7)  # 0: the base model is the seeded init
        for name in ("tasks_per_agent", "n_test", "n_evolved", "n_val"):  # every split is measured: none empty
            check_int(name, getattr(self, name), 1, 10**6)
        check_int("max_operand", self.max_operand, 2, 10**6)
        if self.d_model % self.n_heads:
            raise ValueError(f"n_heads: expected a divisor of d_model={self.d_model}, got {self.n_heads}")
        for name in ("lr", "sft_lr", "rl_lr", "tau", "budget_slack", "t_start", "t_end"):
            check_number(name, getattr(self, name), 0, lo_open=True)
        for name in ("p_error", "p_long"):
            check_number(name, getattr(self, name), 0, 1)
        for name in ("sft_ptx_weight", "ptx_weight", "budget_weight"):
            check_number(name, getattr(self, name), 0)
        if self.t_end > self.t_start:
            raise ValueError(f"t_end: expected 0 < t_end <= t_start={self.t_start}, got {self.t_end!r}")
        if not isinstance(self.sft_optimizer, str) or self.sft_optimizer not in OPTIMIZERS:
            raise ValueError(f"sft_optimizer: expected one of {sorted(OPTIMIZERS)}, got {self.sft_optimizer!r}")

    def model_config(self) -> KimiConfig:
        return KimiConfig(d_model=self.d_model, n_layers=self.n_layers, n_heads=self.n_heads, d_ff=self.d_ff,
                          max_seq_len=self.max_seq_len)

    def key(self, *fields: str, **extra) -> str:
        d = {f: getattr(self, f) for f in fields} | extra | {"version": _VERSION}
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


_MODEL_FIELDS = ("d_model", "n_layers", "n_heads", "d_ff", "max_seq_len")
_PRETRAIN_FIELDS = _MODEL_FIELDS + ("pretrain_steps", "pretrain_batch", "pretrain_seq", "lr")
_SFT_FIELDS = _PRETRAIN_FIELDS + ("tasks_per_agent", "max_operand", "p_error", "p_long", "sft_steps", "sft_batch",
                                  "sft_optimizer", "sft_lr", "sft_ptx_weight", "ptx_batch", "ptx_seq")


_TASK_FIELDS = ("tasks_per_agent", "max_operand", "n_val", "n_test", "n_evolved")
_TASK_SPLITS = ("train", "val", "test_seen", "test_evolved")


def _task_row(t: Task) -> dict:
    return {"agent": t.agent.name, "level": t.level, "persona": t.persona, "requests": list(t.requests),
            "plans": json.dumps(t.plans), "files": json.dumps(t.files), "calls": json.dumps(t.rubric.calls),
            "tree": json.dumps(t.rubric.tree), "answer": t.rubric.answer}


def _task_from_row(row: dict, agents: dict) -> Task:
    plans = tuple(tuple((tool, tuple(args)) for tool, args in plan) for plan in json.loads(row["plans"]))
    calls = tuple((name, tuple(args)) for name, args in json.loads(row["calls"]))
    return Task(agents[row["agent"]], row["level"], row["persona"], tuple(row["requests"]), plans,
                json.loads(row["files"]), synthesis.Rubric(calls, json.loads(row["tree"]), row["answer"]))


def task_dataset(setup: AgenticSetup, seed: int = 0):
    """The tasks of :func:`build_tasks` as a ``datasets.DatasetDict`` with the splits ``train``, ``val``,
    ``test_seen`` and ``test_evolved``, one row per task: ``agent`` (its name), ``level``, ``persona``,
    ``requests`` (one per user turn), ``answer`` (the rubric's expected answer, None for any) and, as JSON text,
    ``plans`` (the calls that fulfil each request, ``"$"`` = the previous result), ``files`` (the initial file
    system), ``calls`` and ``tree`` (the rubric's expected calls and final file system).

    Generated once per (task sizes of ``setup``, ``seed``) and saved under ``data/cache/agentic/tasks-<hash>/``
    (the hash also covers the code that makes the tasks); :func:`build_tasks` reads the tasks back from it."""
    if not isinstance(setup, AgenticSetup):
        raise ValueError(f"setup: expected an AgenticSetup, got {describe(setup)}")
    check_int("seed", seed)
    import datasets

    datasets.disable_progress_bars()
    sizes = json.dumps({f: getattr(setup, f) for f in _TASK_FIELDS} | {"seed": seed}, sort_keys=True)
    key = hashlib.sha256(sizes.encode()).hexdigest()[:12]
    target = cache_dir() / "agentic" / f"tasks-{key}-{code_key(_generate_tasks, _task_row, synthesis)}"
    if not target.exists():
        tasks = _generate_tasks(setup, seed)
        features = datasets.Features({
            "agent": datasets.Value("string"), "level": datasets.Value("int64"), "persona": datasets.Value("string"),
            "requests": datasets.List(datasets.Value("string")), "plans": datasets.Value("string"),
            "files": datasets.Value("string"), "calls": datasets.Value("string"), "tree": datasets.Value("string"),
            "answer": datasets.Value("string")})
        dd = datasets.DatasetDict({k: datasets.Dataset.from_list([_task_row(t) for t in tasks[k]], features=features)
                                   for k in _TASK_SPLITS})
        target.parent.mkdir(parents=True, exist_ok=True)
        save_atomically(dd, target)
    return datasets.load_from_disk(str(target))


def build_tasks(setup: AgenticSetup, seed: int = 0) -> dict[str, list[Task]]:
    """``train`` (tasks of calc, calc2, calc3, fs on the train split); from the held-out plans of the same agents,
    ``val`` (``n_val`` tasks: every RL setting is chosen on these) and ``test_seen`` (``n_test`` other tasks:
    measured once, after every choice); ``test_evolved`` (tasks of the ``calc_evo`` agent that need its adder
    ``plus``, a tool never trained on). ``val`` and ``test_seen`` never share a plan. Read from the splits of
    :func:`task_dataset` (equal, task for task, to generating them)."""
    dd = task_dataset(setup, seed)
    agents = make_agents()
    return {k: [_task_from_row(row, agents) for row in dd[k]] for k in _TASK_SPLITS}


def _generate_tasks(setup: AgenticSetup, seed: int) -> dict[str, list[Task]]:
    agents, rng = make_agents(), random.Random(seed)
    out: dict[str, list[Task]] = {"train": [], "val": [], "test_seen": [], "test_evolved": []}
    seen = set()
    for name in ("calc", "calc2", "calc3", "fs", "calc_evo"):
        for t in make_tasks(agents[name], setup.tasks_per_agent, rng, max_operand=setup.max_operand):
            if (t.key, t.persona) in seen:
                continue
            seen.add((t.key, t.persona))
            if name == "calc_evo":  # only the tasks that need the never-trained tool
                if any(tool == "plus" for plan in t.plans for tool, _ in plan):
                    out["test_evolved"].append(t)
            else:
                out["train" if t.split == "train" else "test_seen"].append(t)
    test_rng = random.Random(seed + 1)
    held = out["test_seen"]
    keys = sorted({t.key for t in held})
    test_rng.shuffle(keys)
    val_keys = set(keys[: len(keys) // 4])  # a quarter of the held-out plans for validation
    out["val"] = [t for t in held if t.key in val_keys]
    out["test_seen"] = [t for t in held if t.key not in val_keys]
    for k, n in (("val", setup.n_val), ("test_seen", setup.n_test), ("test_evolved", setup.n_evolved)):
        test_rng.shuffle(out[k])
        out[k] = out[k][:n]
    return out


def sft_dataset(tasks: list[Task], setup: AgenticSetup, *, filtered: bool, seed: int = 0):
    """Teacher trajectories for ``tasks``, judged; with ``filtered`` only those that pass. Returns
    ``(sequences, pass_rate)`` — sequences are ``(tokens, agent_mask)`` pairs no longer than the model's context,
    ``pass_rate`` the judge's acceptance rate."""
    played = synthesize(tasks, seed=seed, p_error=setup.p_error, p_long=setup.p_long)
    seqs = [encode_episode(ep) for ep, ok in played if ok or not filtered]
    return [s for s in seqs if len(s[0]) <= setup.max_seq_len], sum(ok for _, ok in played) / len(played)


def _cached(path, build) -> nn.Module:
    # the key also hashes the code that builds the entry: an edit of the training code never serves stale models
    path = path.with_name(f"{path.stem}-{code_key(sys.modules[__name__], rl, synthesis)}{path.suffix}")
    if path.exists():
        model = build(None)
        try:
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        except (RuntimeError, EOFError, OSError, KeyError, pickle.UnpicklingError) as exc:
            raise ValueError(f"cache: {path} is damaged or another model's ({type(exc).__name__}); delete it "
                             f"and it will be trained again") from None
        return model
    model = build(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(model.state_dict(), tmp)
    return model


def pretrained_model(setup: AgenticSetup, corpus: TokenData, progress: bool = False) -> KimiMini:
    """The base model: ``KimiMini`` pre-trained on the stdlib corpus for ``pretrain_steps`` (cached; 0 steps: the
    seeded random initialisation)."""
    def build(path):
        torch.manual_seed(0)
        model = KimiMini(setup.model_config())
        if path is not None and setup.pretrain_steps > 0:
            opt = torch.optim.AdamW(model.parameters(), lr=setup.lr, weight_decay=0.1)
            train(model, opt, corpus, steps=setup.pretrain_steps, batch_size=setup.pretrain_batch,
                  seq_len=setup.pretrain_seq, eval_every=setup.pretrain_steps, eval_batches=1, progress=progress,
                  desc="pretrain")
        return model
    return _cached(cache_dir() / "agentic" / f"pretrain-{setup.key(*_PRETRAIN_FIELDS)}.pt", build)


def sft_model(setup: AgenticSetup, corpus: TokenData, tasks: list[Task], *, seed: int, filtered: bool = True,
              progress: bool = False) -> KimiMini:
    """SFT of the pre-trained model on judged (``filtered``) or all teacher trajectories of ``tasks`` (cached), with
    ``setup.sft_optimizer`` (Muon by default) at ``setup.sft_lr`` decaying linearly to 0."""
    base = pretrained_model(setup, corpus)

    def build(path):
        model = KimiMini(setup.model_config())
        model.load_state_dict(base.state_dict())
        if path is None:
            return model
        data, _ = sft_dataset(tasks, setup, filtered=filtered, seed=seed)
        opt = build_optimizer(model, setup.sft_optimizer, setup.sft_lr, weight_decay=0.1)

        def step_fn(step, gen):
            for group in opt.param_groups:  # linear decay to 0
                group["lr"] = setup.sft_lr * (1 - step / setup.sft_steps)
            idx = torch.randint(len(data), (setup.sft_batch,), generator=gen).tolist()
            tokens, mask = collate([data[i] for i in idx])
            loss = sft_loss(model, tokens, mask)
            total = loss
            if setup.sft_ptx_weight > 0:  # pre-training text in the SFT mix: the SFT model keeps the stdlib
                x, y = corpus.get_batch("train", setup.ptx_batch, setup.ptx_seq, gen)
                total = loss + setup.sft_ptx_weight * model(x, y)[1]
            opt.zero_grad(set_to_none=True)
            total.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            return {"loss": loss.item()}

        run_steps(step_fn, setup.sft_steps, seed=seed, progress=progress, desc="sft")
        return model
    key = setup.key(*_SFT_FIELDS, seed=seed, filtered=filtered, n_train=len(tasks))
    return _cached(cache_dir() / "agentic" / f"sft-{key}.pt", build)


def task_budget(setup: AgenticSetup, task: Task) -> int:
    """A task's token budget: ``budget_slack`` × the agent bytes of its shortest correct dialogue, rounded up."""
    return math.ceil(setup.budget_slack * optimal_agent_bytes(task))


def rl_finetune(model: KimiMini, setup: AgenticSetup, tasks: list[Task], corpus: TokenData, *, seed: int,
                ptx: bool = True, budget: bool = True, progress: bool = False, eval_fn=None,
                eval_every: int | None = None) -> list[dict]:
    """RL in place with K1.5's objective, rubric rewards, token budget, PTX loss and temperature decay: each of
    ``rl_steps`` steps samples ``rl_tasks × rl_k`` rollouts from π_old and takes ``rl_inner`` gradient steps on
    them. ``eval_fn() -> dict`` (e.g. validation success) is merged into the history every ``eval_every`` steps."""
    opt = torch.optim.AdamW(model.parameters(), lr=setup.rl_lr, weight_decay=0.0)
    budgets = {}

    def step_fn(step, gen):
        temperature = temperature_schedule(step, setup.rl_steps, setup.t_start, setup.t_end)
        picks = torch.randint(len(tasks), (setup.rl_tasks,), generator=gen).tolist()
        batch = [tasks[i] for i in picks for _ in range(setup.rl_k)]
        seeds = torch.randint(2**31 - 1, (len(batch),), generator=gen).tolist()
        ro = rollout(model, batch, seeds=seeds, temperature=temperature, generator=gen)
        for t in batch:
            if t not in budgets:
                budgets[t] = task_budget(setup, t)
        penalty = budget_penalty(ro.agent_bytes, torch.tensor([float(budgets[t]) for t in batch]),
                                 setup.budget_weight)
        rewards = ro.passed + (penalty if budget else 0.0)
        with torch.no_grad():
            logp_old = sequence_logprob(model, ro.tokens, ro.mask)
        shape = (setup.rl_tasks, setup.rl_k)
        for _ in range(setup.rl_inner):
            logp = sequence_logprob(model, ro.tokens, ro.mask)
            loss = k15_policy_loss(logp.view(shape), logp_old.view(shape), rewards.view(shape), setup.tau)
            ptx_loss = torch.zeros(())
            if ptx:
                x, y = corpus.get_batch("train", setup.ptx_batch, setup.ptx_seq, gen)
                ptx_loss = model(x, y)[1]
            opt.zero_grad(set_to_none=True)
            (loss + setup.ptx_weight * ptx_loss).backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
        return {"loss": loss.item(), "ptx": ptx_loss.item(), "reward": rewards.mean().item(),
                "success": ro.passed.mean().item(), "agent_bytes": ro.agent_bytes.mean().item(),
                "temperature": temperature}

    model.train()
    return run_steps(step_fn, setup.rl_steps, seed=seed, progress=progress, desc="rl",
                     postfix=("reward", "success"), eval_fn=eval_fn, eval_every=eval_every)


def success_rate(model: KimiMini, tasks: list[Task], seed: int = 0, examples: int = 0) -> dict:
    """Greedy episodes of ``tasks`` judged by their rubrics: ``success`` (fraction passed), ``agent_bytes``
    (mean bytes the agent wrote, tool-failure retries excluded) and the first ``examples`` dialogues as
    ``(text, passed)`` pairs."""
    if not isinstance(tasks, (list, tuple)) or not tasks or not all(isinstance(t, Task) for t in tasks):
        raise ValueError(f"tasks: expected a non-empty list of Task, got {describe(tasks)}")
    check_int("seed", seed)
    check_int("examples", examples, 0)
    ro = rollout(model, tasks, seeds=[seed * 7919 + i for i in range(len(tasks))], temperature=0.0)
    return {"success": ro.passed.mean().item(), "agent_bytes": ro.agent_bytes.mean().item(),
            "examples": [(ep.text, bool(ok)) for ep, ok in zip(ro.episodes[:examples], ro.passed.tolist(),
                                                                strict=False)]}


def stdlib_loss(model: KimiMini, corpus: TokenData, seq_len: int = 128, batches: int = 4) -> float:
    """The pre-training loss: mean cross-entropy on the stdlib validation split (fixed batches)."""
    check_int("batches", batches, 1, 10**6)
    return evaluate(model, corpus, batch_size=16, seq_len=seq_len, batches=batches)


def _copy(model: KimiMini) -> KimiMini:
    clone = KimiMini(model.config)
    clone.load_state_dict(model.state_dict())
    return clone


def _measure(model: KimiMini, setup: AgenticSetup, tasks: dict[str, list[Task]], corpus: TokenData,
             browse: int = 8) -> dict:
    """Greedy success on the held-out tasks, agent bytes greedy and sampled (temperature 1: the habits greedy
    decoding hides), the stdlib loss, and the first ``browse`` test dialogues for the rollout browser."""
    seen = rollout(model, tasks["test_seen"], seeds=list(range(len(tasks["test_seen"]))), temperature=0.0)
    evolved = success_rate(model, tasks["test_evolved"])
    sampled = rollout(model, tasks["test_seen"], seeds=list(range(len(tasks["test_seen"]))), temperature=1.0,
                      generator=torch.Generator().manual_seed(1234))
    budgets = torch.tensor([float(task_budget(setup, t)) for t in tasks["test_seen"]])
    dialogues = [{"segments": list(ep.segments), "passed": bool(ok), "items": judge(ep)[1]}
                 for ep, ok in zip(seen.episodes[:browse], seen.passed.tolist(), strict=False)]
    return {"seen": seen.passed.mean().item(), "n_seen": len(seen.episodes), "passed_seen": int(seen.passed.sum()),
            "evolved": evolved["success"], "bytes": seen.agent_bytes.mean().item(),
            "bytes_t1": sampled.agent_bytes.mean().item(), "success_t1": sampled.passed.mean().item(),
            "over_t1": (sampled.agent_bytes > budgets).float().mean().item(),
            "stdlib": stdlib_loss(model, corpus), "dialogues": dialogues,
            "examples": [(d["segments"], d["passed"]) for d in dialogues[:3]]}


def rl_sweep(setup: AgenticSetup, grid: list[dict], *, seed: int = 0, eval_every: int = 10, workers: int = 1
             ) -> list[dict]:
    """RL's settings chosen on **validation** tasks only: from the judged SFT model of ``seed``, full RL (PTX and
    budget on) with each setting of ``grid`` (dicts of :class:`AgenticSetup` fields, e.g. ``{"rl_lr": 1e-3,
    "tau": 0.1}``), greedy success on ``val`` at step 0 and every ``eval_every`` steps. Rows: ``{**setting,
    "step", "val_success"}``. Cached as JSON by the settings and the code."""
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers: expected an int >= 1, got {workers!r}")
    if not grid or not all(isinstance(g, dict) and g for g in grid):
        raise ValueError(f"grid: expected a non-empty list of non-empty dicts of AgenticSetup fields, got {grid!r}")
    for g in grid:
        unknown = [k for k in g if not hasattr(setup, k)]
        if unknown:
            raise ValueError(f"grid: {unknown} are not AgenticSetup fields")
    corpus, tasks = _context(setup)
    key = setup.key(*setup.__dataclass_fields__, seed=seed, grid=grid, every=eval_every,
                    code=code_key(sys.modules[__name__], rl, synthesis))
    path = cache_dir() / "agentic" / f"rl-sweep-{key}.json"
    if path.exists():
        return json.loads(path.read_text())
    sft_model(setup, corpus, tasks["train"], seed=seed, filtered=True)  # trained once, before the workers
    jobs = [(setup, seed, g, eval_every) for g in grid]
    if workers == 1:
        parts = [_sweep_job(*j) for j in jobs]
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
            parts = list(pool.map(_sweep_job, *zip(*jobs, strict=True)))
    rows = [r for part in parts for r in part]
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(rows))
    return rows


def _sweep_job(setup: AgenticSetup, seed: int, g: dict, eval_every: int) -> list[dict]:
    corpus, tasks = _context(setup)

    def val(model):
        return {"val_success": success_rate(model, tasks["val"])["success"]}

    rows = [{**g, "step": 0, **val(sft_model(setup, corpus, tasks["train"], seed=seed, filtered=True))}]
    _, hist = rl_model(dataclasses.replace(setup, **g), corpus, tasks, seed=seed, eval_fn=val, eval_every=eval_every)
    return rows + [{**g, "step": h["step"], "val_success": h["val_success"]} for h in hist if "val_success" in h]


def choose_rl(rows: list[dict], min_step: int = 1) -> dict:
    """The setting and step count with the highest validation success among ``rows`` of :func:`rl_sweep` (steps
    ≥ ``min_step``; ties: fewer steps, then the earlier setting)."""
    cands = [r for r in rows if r["step"] >= min_step]
    if not cands:
        raise ValueError(f"rows: expected sweep rows with step >= {min_step}")
    best = max(cands, key=lambda r: (r["val_success"], -r["step"], -rows.index(r)))
    return {k: v for k, v in best.items() if k != "val_success"} | {"val_success": best["val_success"]}


VARIANTS = {"rl": dict(ptx=True, budget=True), "rl_no_ptx": dict(ptx=False, budget=True),
            "rl_no_budget": dict(ptx=True, budget=False)}
_WORKER: dict = {}


def _context(setup: AgenticSetup):
    if _WORKER.get("setup") != setup:
        torch.set_num_threads(1)
        _WORKER.update(setup=setup, corpus=load_corpus(), tasks=build_tasks(setup))
    return _WORKER["corpus"], _WORKER["tasks"]


def _sft_job(setup: AgenticSetup, seed: int, filtered: bool) -> dict:
    corpus, tasks = _context(setup)
    return _measure(sft_model(setup, corpus, tasks["train"], seed=seed, filtered=filtered), setup, tasks, corpus)


def rl_model(setup: AgenticSetup, corpus: TokenData, tasks: dict[str, list[Task]], *, seed: int,
             variant: str = "rl", eval_fn=None, eval_every: int | None = None) -> tuple[KimiMini, list[dict]]:
    """The judged SFT model of ``seed`` after RL ``variant`` (a key of :data:`VARIANTS`), and its history; cached
    by every setting and the code, so the validation sweep's run of the chosen setting is the experiment's run for
    that seed (RL draws its randomness from ``(seed, step)`` alone: evaluating on the way changes nothing).
    ``eval_fn(model) -> dict`` is merged into the history every ``eval_every`` steps; with it, a cached run is
    used only when its history holds those evaluations."""
    if variant not in VARIANTS:
        raise ValueError(f"variant: expected one of {sorted(VARIANTS)}, got {variant!r}")
    model = sft_model(setup, corpus, tasks["train"], seed=seed, filtered=True)
    key = setup.key(*setup.__dataclass_fields__, seed=seed, variant=variant,
                    code=code_key(sys.modules[__name__], rl, synthesis))
    path = cache_dir() / "agentic" / f"rl-{key}.pt"
    if path.exists():
        saved = torch.load(path, map_location="cpu", weights_only=True)
        if eval_fn is None or any("val_success" in h for h in saved["history"]):
            model.load_state_dict(saved["model"])
            return model, saved["history"]
    torch.manual_seed(seed)
    history = rl_finetune(model, setup, tasks["train"], corpus, seed=seed, eval_every=eval_every,
                          eval_fn=None if eval_fn is None else lambda: eval_fn(model), **VARIANTS[variant])
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save({"model": model.state_dict(), "history": history}, tmp)
    return model, history


def _rl_job(setup: AgenticSetup, seed: int, variant: str) -> tuple[dict, list[dict]]:
    corpus, tasks = _context(setup)
    model, history = rl_model(setup, corpus, tasks, seed=seed, variant=variant)
    return _measure(model, setup, tasks, corpus), history


def run_experiment(setup: AgenticSetup, seeds=(0, 1, 2), workers: int = 1) -> dict:
    """The notebook's experiment. For each seed: SFT on judged and on unfiltered trajectories, then RL from the
    judged SFT model three ways (full; without PTX; without the token budget). Every model is measured on the
    held-out tasks (``seen``: unseen tasks of trained agents; ``evolved``: the never-trained ``plus`` agent),
    by its mean agent bytes on ``seen`` and by its stdlib validation loss. The jobs are independent: with
    ``workers > 1`` they run in that many processes: every SFT job is queued at once, and a seed's RL jobs are
    queued as soon as its judged SFT model is trained (they start from it), so no worker waits for the other
    seeds' SFT. Each job is deterministic on its own, so the results do not depend on the order. Returns ``{"tasks",
    "results" (variant → one dict per seed; "base" has one), "histories" (RL variant → one history per seed),
    "cpu_seconds" (CPU time of this process and its workers), "cpu_workers" (the workers' share)}``."""
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers: expected an int >= 1, got {workers!r}")
    own0, kids0 = _cpu_seconds()
    corpus, tasks = _context(setup)
    results: dict[str, list] = {"base": [_measure(pretrained_model(setup, corpus), setup, tasks, corpus)]}
    sft_jobs = [(seed, filtered) for seed in seeds for filtered in (True, False)]
    rl_jobs = [(seed, v) for seed in seeds for v in VARIANTS]
    if workers == 1:
        sft_out = [_sft_job(setup, *j) for j in sft_jobs]
        rl_out = [_rl_job(setup, *j) for j in rl_jobs]
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
            sft_f = {pool.submit(_sft_job, setup, *j): j for j in sft_jobs}
            rl_f = {}
            for fut in as_completed(sft_f):
                seed, filtered = sft_f[fut]
                fut.result()  # an error surfaces here, before anything depends on it
                if filtered:  # the judged SFT model of `seed` is cached: its RL runs can start
                    rl_f.update({(seed, v): pool.submit(_rl_job, setup, seed, v) for v in VARIANTS})
            by_job = {j: f for f, j in sft_f.items()}
            sft_out = [by_job[j].result() for j in sft_jobs]
            rl_out = [rl_f[j].result() for j in rl_jobs]
    for (_seed, filtered), r in zip(sft_jobs, sft_out, strict=True):
        results.setdefault("sft" if filtered else "sft_unfiltered", []).append(r)
    histories: dict[str, list] = {}
    for (_seed, v), (r, h) in zip(rl_jobs, rl_out, strict=True):
        results.setdefault(v, []).append(r)
        histories.setdefault(v, []).append(h)
    own, kids = _cpu_seconds()
    return {"tasks": tasks, "results": results, "histories": histories,
            "cpu_seconds": own - own0 + kids - kids0, "cpu_workers": kids - kids0}


def _cpu_seconds() -> tuple[float, float]:
    """User + system CPU seconds of this process and of its finished (waited-for) child processes."""
    import resource

    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, kids.ru_utime + kids.ru_stime

"""Multitask prompted pretraining (ZeroPrompt, arXiv 2201.06910) of ``KimiMini`` on N tasks of the zoo.

Each training sequence is one rendered prompt followed by its verbalised answer, ``render(task, ex, t)[0] +
option[label]``; the loss is the next-byte cross-entropy on the answer bytes only (prompt bytes get target −100):

    L = − Σ_{answer positions j} log p(y_j | prompt, y_<j) / #answer positions.

Tasks are drawn uniformly among the N training tasks, the example and template uniformly within the task; the
number of training sequences is fixed, so models trained on more tasks see the same number of training
examples (and about the same number of tokens) spread over more tasks. The optimiser is AdamW with β = (0.9, 0.95),
gradient-norm clipping at 1.0, 20 warmup steps and cosine decay to 10 % of the peak lr. β₂ was 0.98 until a pilot
of the small model on N = 512 tasks over seeds 0–5 (2,000 steps, held-out seen accuracy): with 0.98, seed 3
never left the constant-answer plateau (0.517, answer loss 0.335); with 0.95 it reached 0.653, and the other
seeds were not hurt (see notebook 06). Training compute is counted as
``FLOPs = 6 · params · tokens`` (every processed byte, padding included). Trained models are cached under
``data/cache/zeroprompt/<config hash>-<code hash>.pt`` (the code hash covers the functions that train the model,
so an edit of them never serves a stale model) so that later runs and the GPS notebook load the frozen model.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kimi_mini.checks import check_int, check_number, check_tensor, describe
from kimi_mini.data import ByteTokenizer, cache_dir, code_key
from kimi_mini.model import KimiConfig, KimiMini, count_params
from kimi_mini.prompts.rank import rank_classify
from kimi_mini.prompts.tasks import ZOO_VERSION, Task, render
from kimi_mini.prompts.zoo import HELDOUT_FAMILIES, nested_training_tasks, splits, task_zoo
from kimi_mini.train import load_checkpoint, train, warmup_cosine

__all__ = ["PretrainConfig", "SIZES", "Pretrained", "answer_logits", "answer_only_loss", "prompted_batch", "pretrain",
           "pretrained_model", "zero_shot_accuracy", "zero_shot_hits", "checkpoint_path"]

_TOK = ByteTokenizer()

SIZES = {"small": {"d_model": 32, "n_layers": 2, "n_heads": 2},
         "large": {"d_model": 64, "n_layers": 3, "n_heads": 4}}
"""Model sizes by name (the toy preset's two sizes): 43,168 and 192,960 parameters — the large one ≥ 4× the
small one, so that "a small model matches a larger one" compares two sizes, not one."""


@dataclass(frozen=True)
class PretrainConfig:
    """Everything a pretraining run depends on (its hash is the cache key)."""

    n_tasks: int = 32
    d_model: int = 32
    n_layers: int = 2
    n_heads: int = 2
    steps: int = 1000
    batch_size: int = 32
    lr: float = 3e-3
    warmup: int = 20
    lr_min_ratio: float = 0.1
    seed: int = 0
    zoo_seed: int = 0
    n_examples: int = 96
    max_seq_len: int = 128
    optimizer: str = "adamw"

    def __post_init__(self) -> None:
        for name in ("n_tasks", "d_model", "n_layers", "n_heads", "steps", "batch_size", "n_examples", "max_seq_len"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name}: expected an integer >= 1, got {v!r}")
        check_int("steps", self.steps, 1, 10**7)
        check_number("lr", self.lr, 0, lo_open=True)
        check_number("lr_min_ratio", self.lr_min_ratio, 0, 1)
        check_int("warmup", self.warmup, 0, self.steps)
        check_int("seed", self.seed)
        check_int("zoo_seed", self.zoo_seed)
        if self.d_model % self.n_heads:
            raise ValueError(f"n_heads: expected a divisor of d_model={self.d_model}, got {self.n_heads}")
        if self.optimizer not in ("adamw", "muon", "muonclip"):
            raise ValueError(f"optimizer: expected 'adamw', 'muon' or 'muonclip', got {self.optimizer!r}")

    @classmethod
    def sized(cls, size: str, **overrides) -> PretrainConfig:
        """``PretrainConfig.sized("large", n_tasks=128)``: a named size from :data:`SIZES` plus overrides."""
        if size not in SIZES:
            raise ValueError(f"size: unknown size {size!r}; expected one of {sorted(SIZES)}")
        return cls(**{**SIZES[size], **overrides})

    def model_config(self) -> KimiConfig:
        d_ff = max(32, (8 * self.d_model // 3 + 31) // 32 * 32)
        return KimiConfig(d_model=self.d_model, n_layers=self.n_layers, n_heads=self.n_heads, d_ff=d_ff,
                          max_seq_len=self.max_seq_len)

    def key(self) -> str:
        blob = json.dumps({**asdict(self), "zoo": ZOO_VERSION}, sort_keys=True)
        return hashlib.sha1(blob.encode()).hexdigest()[:12]

    def replace(self, **changes) -> PretrainConfig:
        return replace(self, **changes)


class Pretrained(NamedTuple):
    """A pretraining run: the frozen ``model``, its ``config``, the training task names, the per-step
    ``history``, ``params`` (total), ``tokens`` (processed) and ``flops`` = 6 · params · tokens."""

    model: KimiMini
    config: PretrainConfig
    tasks: list[str]
    history: list[dict]
    params: int
    tokens: int
    flops: float
    cached: bool


def checkpoint_path(config: PretrainConfig) -> Path:
    code = code_key(PretrainConfig, pretrain, prompted_batch, answer_only_loss, answer_logits, render)
    return cache_dir() / "zeroprompt" / f"{config.key()}-{code}.pt"


def answer_logits(model: nn.Module, x: Tensor, keep: Tensor) -> Tensor:
    """Logits ``[K, V]`` fp32 at the ``K`` positions where ``keep [B, T]`` is True. For a ``KimiMini`` the LM head
    runs only there (the answer is ~3 of ~40 positions: a quarter of a toy model's FLOPs saved); any other
    model goes through its full forward."""
    if isinstance(model, KimiMini):
        h = model.tok_emb(x)  # [B, T, C]
        for block in model.blocks:
            h = block(h)
        return model.lm_head(model.norm(h[keep])).float()
    return model(x)[0][keep].float()


def answer_only_loss(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """Mean next-byte cross-entropy over the positions whose target is not −100 (the answer bytes)."""
    check_tensor("x", x, dims=2, kind="int")
    check_tensor("y", y, dims=2, kind="int")
    if y.shape != x.shape:
        raise ValueError(f"y: expected the shape of x {tuple(x.shape)}, got {describe(y)}")
    V = getattr(getattr(model, "config", None), "vocab_size", 2**62)
    bad = (y != -100) & ((y < 0) | (y >= V))
    if bool(bad.any()):
        raise ValueError(f"y: expected targets in [0, {V}) or -100 (ignored), got {int(y[bad][0])}")
    keep = y >= 0
    if not keep.any():
        raise ValueError("y: no answer positions (every target is -100)")
    return F.cross_entropy(answer_logits(model, x, keep), y[keep])


def prompted_batch(tasks: Sequence[Task], batch_size: int, generator: torch.Generator, max_len: int
                   ) -> tuple[Tensor, Tensor]:
    """A training batch: ``x [B, L]`` prompt+answer bytes (right-padded with 0; L = longest sequence) and
    ``y [B, L]`` the next byte at answer positions, −100 elsewhere (prompt and padding masked). A prompt too
    long for ``max_len`` loses its first bytes (the answer always stays)."""
    if isinstance(tasks, (str, bytes)) or not tasks or not all(isinstance(t, Task) for t in tasks):
        raise ValueError(f"tasks: expected a non-empty sequence of Task, got {describe(tasks)}")
    check_int("batch_size", batch_size, 1, 1 << 20)
    check_int("max_len", max_len, 2, 1 << 20)  # at least one prompt byte before the answer
    t_idx = torch.randint(0, len(tasks), (batch_size,), generator=generator).tolist()
    u = torch.rand(batch_size, 2, generator=generator).tolist()
    seqs, starts = [], []
    for i, (a, b) in zip(t_idx, u, strict=True):
        task = tasks[i]
        ex = task.examples[int(a * len(task.examples))]
        prompt, options = render(task, ex, int(b * len(task.templates)))
        pb, ab = _TOK.encode(prompt), _TOK.encode(options[ex.label])
        if len(ab) + 1 > max_len:
            raise ValueError(f"max_len: {max_len} leaves no prompt byte before the {len(ab)}-byte answer "
                             f"{options[ex.label]!r} of {task.name!r}")
        pb = pb[max(0, len(pb) + len(ab) - max_len):]
        seqs.append(pb + ab)
        starts.append(len(pb))
    L = max(map(len, seqs))
    x = torch.zeros(batch_size, L, dtype=torch.long)
    y = torch.full((batch_size, L), -100, dtype=torch.long)
    for r, (s, k) in enumerate(zip(seqs, starts, strict=True)):
        x[r, :len(s)] = torch.tensor(s)
        y[r, k - 1:len(s) - 1] = torch.tensor(s[k:])  # position t predicts byte t + 1
    return x, y


def pretrain(config: PretrainConfig, *, zoo: dict[str, Task] | None = None, device: str | torch.device = "cpu",
             use_cache: bool = True, progress: bool = False, autocast_dtype: torch.dtype | None = None) -> Pretrained:
    """Train (or load from the cache) a ``KimiMini`` on the first ``config.n_tasks`` training tasks of
    :func:`~kimi_mini.prompts.zoo.splits` (nested across N). Returns a :class:`Pretrained` whose model is
    frozen (eval mode, no gradients)."""
    zoo = zoo if zoo is not None else task_zoo(config.n_examples, config.zoo_seed)
    present = {t.family for t in zoo.values()}
    split = splits(zoo, seed=config.zoo_seed, heldout_families=[f for f in HELDOUT_FAMILIES if f in present])
    names = nested_training_tasks(split, config.n_tasks)
    tasks = [zoo[n] for n in names]
    torch.manual_seed(config.seed)
    model = KimiMini(config.model_config()).to(device)
    path = checkpoint_path(config)
    cached = use_cache and path.exists()
    if cached:
        history = load_checkpoint(path, model, map_location=device)["history"]
    else:
        if config.optimizer == "adamw":
            opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.0, betas=(0.9, 0.95))
        else:
            from kimi_mini.optim import build_optimizer
            opt = build_optimizer(model, config.optimizer, lr=config.lr, weight_decay=0.0)
        schedule = warmup_cosine(config.steps, min(config.warmup, config.steps), config.lr_min_ratio)
        history = train(model, opt, None, steps=config.steps, batch_size=config.batch_size,
                        seq_len=config.max_seq_len, lr_schedule=schedule, seed=config.seed, progress=progress,
                        desc=f"N={config.n_tasks} d={config.d_model}", autocast_dtype=autocast_dtype,
                        checkpoint=path if use_cache else None, loss_fn=answer_only_loss,
                        batch_fn=lambda step, gen, dev: tuple(t.to(dev) for t in prompted_batch(
                            tasks, config.batch_size, gen, config.max_seq_len)))
    model.eval().requires_grad_(False)
    params = count_params(config.model_config()).total
    tokens = int(history[-1]["tokens"]) if history else 0
    return Pretrained(model, config, names, history, params, tokens, 6.0 * params * tokens, cached)


def pretrained_model(config: PretrainConfig | None = None, **overrides) -> KimiMini:
    """The frozen model of ``config`` (default :class:`PretrainConfig` with ``overrides``), trained once and then
    loaded from ``data/cache/zeroprompt/``. What GPS searches prompts for."""
    config = (config or PretrainConfig()).replace(**overrides) if overrides else (config or PretrainConfig())
    return pretrain(config).model


def zero_shot_hits(model: nn.Module, tasks: Sequence[Task], n_per_task: int | None = 32, *,
                   batch_size: int = 256) -> dict[str, list[int]]:
    """Rank-classification hits (1 right, 0 wrong) per task on its first ``n_per_task`` examples (every example
    when None), example i rendered with template ``i mod #templates`` (so every template is used). Returns task
    name → hits in example order, so that two models can be compared example by example (paired)."""
    if n_per_task is not None and (not isinstance(n_per_task, int) or isinstance(n_per_task, bool) or n_per_task < 1):
        raise ValueError(f"n_per_task: expected an integer >= 1 or None, got {n_per_task!r}")
    if not all(isinstance(t, Task) for t in tasks):
        raise ValueError(f"tasks: expected a sequence of Task, got {[type(t).__name__ for t in tasks]}")
    prompts, options, labels, owner = [], [], [], []
    for task in tasks:
        for i, ex in enumerate(task.examples[:n_per_task]):
            p, o = render(task, ex, i % len(task.templates))
            prompts.append(p)
            options.append(o)
            labels.append(ex.label)
            owner.append(task.name)
    if not prompts:
        raise ValueError("tasks: expected at least one task with examples")
    preds, _ = rank_classify(model, prompts, options, batch_size=batch_size)
    hits: dict[str, list[int]] = {}
    for name, p, y in zip(owner, preds.tolist(), labels, strict=True):
        hits.setdefault(name, []).append(int(p == y))
    return hits


def zero_shot_accuracy(model: nn.Module, tasks: Sequence[Task], n_per_task: int | None = 32, *,
                       batch_size: int = 256) -> dict[str, float]:
    """Rank-classification accuracy per task on its first ``n_per_task`` examples (all when None), example i
    rendered with template ``i mod #templates``. Returns task name → accuracy."""
    return {name: sum(h) / len(h) for name, h in zero_shot_hits(model, tasks, n_per_task,
                                                              batch_size=batch_size).items()}

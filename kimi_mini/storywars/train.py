"""Training InstructStory, single-task and no-instruction KimiMini models on StoryWars tasks.

Paper: *StoryWars* (Du & Chilton, ACL 2023, arXiv 2305.08152), §5: **InstructStory** is one model
instruction-tuned on all fully-supervised tasks at once (each example prefixed with its natural-language
instruction); the baselines are one model per task type trained on that type alone, and — as in the
issue this reproduces — one multitask model whose examples carry only a task-id token ``<task NN>``.
Few-shot: a trained model fine-tuned on k examples of an unseen task; zero-shot: evaluated directly.

Every model is a byte-level :class:`~kimi_mini.model.KimiMini` trained through
:func:`kimi_mini.train.train` with a ``batch_fn`` that samples a task uniformly, then an example, and an
answer-only loss: ``L = −Σ_{t ∈ answer} log p(x_t | x_<t) / |answer tokens|`` (prompt positions carry the
ignore index −100). Trained weights are cached under ``data/cache/storywars/`` by a hash of everything
that decides them, so a notebook re-run loads instead of training; a fresh clone trains.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from kimi_mini.data import ByteTokenizer, TokenData, cache_dir, code_key
from kimi_mini.model import KimiConfig, KimiMini
from kimi_mini.optim import build_optimizer
from kimi_mini.storywars.tasks import Example, render
from kimi_mini.train import load_checkpoint, save_checkpoint, train, warmup_cosine

__all__ = ["TrainSpec", "encode_example", "collate", "answer_only_loss", "make_batch_fn", "train_on_examples",
           "cached_model", "pretrained_lm", "sample_pool", "Renderer", "instruct_renderer", "id_renderer"]

IGNORE = -100
_TOK = ByteTokenizer()
Renderer = Callable[[Example], tuple[str, str]]


def instruct_renderer(ex: Example) -> tuple[str, str]:
    """InstructStory's format: the natural-language instruction heads the prompt."""
    return render(ex, instruction=True)


def id_renderer(task_ids: dict[str, int]) -> Renderer:
    """The no-instruction format: ``<task NN>`` (NN from ``task_ids``) heads the prompt instead."""
    def fn(ex: Example) -> tuple[str, str]:
        if ex.task not in task_ids:
            raise ValueError(f"ex: task {ex.task!r} has no id in task_ids")
        return render(ex, instruction=False, task_id=task_ids[ex.task])
    return fn


@dataclass(frozen=True)
class TrainSpec:
    """How one model is trained: the KimiMini sizes, steps, batch, learning rate and seed."""

    d_model: int = 48
    n_layers: int = 2
    n_heads: int = 2
    d_ff: int = 128
    max_seq_len: int = 256
    steps: int = 200
    batch_size: int = 16
    lr: float = 3e-3
    weight_decay: float = 0.01
    warmup: int = 10
    seed: int = 0
    device: str = "cpu"
    optimizer: str = "adamw"  # any name of kimi_mini.optim.build_optimizer ("adamw", "muon")

    def __post_init__(self) -> None:
        from kimi_mini.checks import check_int, check_number
        from kimi_mini.optim import OPTIMIZERS

        check_int("steps", self.steps, 1, 10**7)
        check_int("batch_size", self.batch_size, 1, 1 << 20)
        check_int("warmup", self.warmup, 0)
        check_int("seed", self.seed)
        check_number("lr", self.lr, 0, lo_open=True)
        check_number("weight_decay", self.weight_decay, 0)
        if not isinstance(self.optimizer, str) or self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer: expected one of {sorted(OPTIMIZERS)}, got {self.optimizer!r}")

    def config(self) -> KimiConfig:
        return KimiConfig(d_model=self.d_model, n_layers=self.n_layers, n_heads=self.n_heads, d_ff=self.d_ff,
                          max_seq_len=self.max_seq_len)


def encode_example(prompt: str, target: str, max_len: int) -> tuple[list[int], int]:
    """Bytes of ``prompt + target`` and the prompt's length; a prompt too long loses its *start* (the
    instruction's end, the input and the answer stay), so that the sequence fits ``max_len`` tokens."""
    p, t = _TOK.encode(prompt), _TOK.encode(target)
    if len(t) + 1 > max_len:
        raise ValueError(f"target: {len(t)} bytes do not fit max_len={max_len}")
    p = p[-(max_len - len(t)):]
    return p + t, len(p)


def collate(encoded: Sequence[tuple[list[int], int]], device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
    """Right-padded next-token batch: ``x [B, T]`` int64 and ``y [B, T]`` with −100 on the prompt and the
    padding, so only answer tokens are scored."""
    if not encoded:
        raise ValueError("encoded: expected at least one example")
    for ids, n_prompt in encoded:  # what encode_example returns: >= 2 bytes, a prompt and an answer
        if len(ids) < 2 or isinstance(n_prompt, bool) or not isinstance(n_prompt, int) or not 1 <= n_prompt < len(ids):
            raise ValueError(f"encoded: expected (byte ids, prompt length) pairs with >= 2 ids and "
                             f"1 <= prompt length < len(ids), got ({ids!r:.60}, {n_prompt!r})")
    T = max(len(ids) for ids, _ in encoded) - 1
    x = torch.zeros(len(encoded), T, dtype=torch.int64)
    y = torch.full((len(encoded), T), IGNORE, dtype=torch.int64)
    for i, (ids, n_prompt) in enumerate(encoded):
        seq = torch.tensor(ids)
        if seq.dtype != torch.int64 or int(seq.min()) < 0 or int(seq.max()) > 255:
            raise ValueError(f"encoded: expected byte ids (ints in [0, 256)), got {ids!r:.60}")
        x[i, :len(ids) - 1] = seq[:-1]
        y[i, n_prompt - 1:len(ids) - 1] = seq[n_prompt:]
    return x.to(device), y.to(device)


def answer_only_loss(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """Mean cross-entropy over answer tokens only (``y == -100`` elsewhere)."""
    logits, _ = model(x)
    return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), ignore_index=IGNORE)


def make_batch_fn(pools: dict[str, list[Example]], renderer: Renderer, batch_size: int, max_len: int):
    """``batch_fn(step, generator, device)`` for :func:`kimi_mini.train.train`: each row draws a task
    uniformly, then one of its examples (so every task gets the same share of tokens)."""
    from kimi_mini.checks import check_int

    check_int("batch_size", batch_size, 1, 1 << 20)
    check_int("max_len", max_len, 2, 1 << 20)
    names = sorted(k for k, v in pools.items() if v)
    if not names:
        raise ValueError("pools: expected at least one task with examples")
    encoded = {k: [encode_example(*renderer(ex), max_len) for ex in pools[k]] for k in names}

    def batch_fn(step: int, gen: torch.Generator, device: torch.device) -> tuple[Tensor, Tensor]:
        t = torch.randint(0, len(names), (batch_size,), generator=gen).tolist()
        rows = [encoded[names[i]][int(torch.randint(0, len(encoded[names[i]]), (1,), generator=gen))] for i in t]
        return collate(rows, device)

    return batch_fn


def train_on_examples(model: KimiMini, pools: dict[str, list[Example]], renderer: Renderer, spec: TrainSpec,
                      steps: int | None = None, progress: bool = False, desc: str = "storywars") -> list[dict]:
    """Train ``model`` in place with ``spec.optimizer``, warm-up + cosine, ``steps`` (default ``spec.steps``)."""
    steps = spec.steps if steps is None else steps
    opt = build_optimizer(model, spec.optimizer, lr=spec.lr, weight_decay=spec.weight_decay)
    batch_fn = make_batch_fn(pools, renderer, spec.batch_size, model.config.max_seq_len)
    return train(model, opt, None, steps=steps, batch_size=spec.batch_size, seq_len=model.config.max_seq_len,
                 lr_schedule=warmup_cosine(steps, min(spec.warmup, steps // 2)), seed=spec.seed,
                 batch_fn=batch_fn, loss_fn=answer_only_loss, progress=progress, desc=desc, eval_every=steps)


def _key(spec: TrainSpec, pools: dict[str, list[Example]], renderer_name: str, steps: int, base: str | None) -> str:
    h = hashlib.sha256(json.dumps(dataclasses.asdict(spec), sort_keys=True).encode())
    h.update(f"{renderer_name}|{steps}|{base}".encode())
    # the code that builds the entry: an edit of the training path never serves a stale model
    h.update(code_key(TrainSpec, train_on_examples, make_batch_fn, encode_example, collate, answer_only_loss,
                      render).encode())
    for k in sorted(pools):
        h.update(k.encode())
        for ex in pools[k]:
            h.update(repr((ex.input, ex.answer)).encode())
    return h.hexdigest()[:16]


def cached_model(name: str, pools: dict[str, list[Example]], renderer: Renderer, renderer_name: str,
                 spec: TrainSpec, steps: int | None = None, init: KimiMini | None = None,
                 cache: Path | None | bool = None, progress: bool = False) -> tuple[KimiMini, dict]:
    """A model trained on ``pools`` (from scratch, or fine-tuned from a copy of ``init``), loaded from
    ``data/cache/storywars/<name>-<hash>.pt`` when that exact training was done before. ``cache=False``
    never reads or writes. Returns ``(model, info)`` with ``info = {"loaded": bool, "final_loss": float}``."""
    steps = spec.steps if steps is None else steps
    base = None if init is None else _state_hash(init)
    path = None
    if cache is not False:
        folder = (cache if isinstance(cache, Path) else cache_dir()) / "storywars"
        path = folder / f"{name.replace('/', '_')}-{_key(spec, pools, renderer_name, steps, base)}.pt"
    if init is None:
        torch.manual_seed(spec.seed)
        model = KimiMini(spec.config()).to(spec.device)
    else:
        model = copy.deepcopy(init)
    if path is not None and path.exists():
        state = load_checkpoint(path, model, map_location=spec.device)
        model.eval()
        return model, {"loaded": True, "final_loss": state["extra"].get("final_loss", float("nan"))}
    history = train_on_examples(model, pools, renderer, spec, steps, progress=progress, desc=name)
    final = sum(r["loss"] for r in history[-10:]) / len(history[-10:])
    if path is not None:
        opt = torch.optim.SGD(model.parameters(), lr=0.0)  # the checkpoint format wants one; it is not reused
        save_checkpoint(path, model, opt, steps, extra={"final_loss": final})
    model.eval()
    return model, {"loaded": False, "final_loss": final}


def pretrained_lm(texts: Sequence[str], spec: TrainSpec, steps: int, seq_len: int = 128,
                  cache: Path | None | bool = None, progress: bool = False) -> tuple[KimiMini, dict]:
    """The shared starting point: a KimiMini trained as a plain language model on ``texts`` (the training
    stories, one per line) for ``steps`` steps — the stand-in for the pretrained T5 every StoryWars model
    starts from. Cached like :func:`cached_model`."""
    from kimi_mini.checks import check_int

    check_int("steps", steps, 1, 10**7)
    if not texts:
        raise ValueError("texts: expected at least one story text")
    h = hashlib.sha256(json.dumps(dataclasses.asdict(spec), sort_keys=True).encode())
    h.update(f"lm|{steps}|{seq_len}|{code_key(TrainSpec, pretrained_lm)}".encode())
    for t in texts:
        h.update(t.encode())
    path = None
    if cache is not False:
        path = (cache if isinstance(cache, Path) else cache_dir()) / "storywars" / f"lm-{h.hexdigest()[:16]}.pt"
    torch.manual_seed(spec.seed)
    model = KimiMini(spec.config()).to(spec.device)
    if path is not None and path.exists():
        state = load_checkpoint(path, model, map_location=spec.device)
        return model, {"loaded": True, "final_loss": state["extra"].get("final_loss", float("nan"))}
    blob = torch.frombuffer(bytearray("\n".join(texts).encode("utf-8")), dtype=torch.uint8)
    data = TokenData(train=blob, val=blob[: max(seq_len + 2, len(blob) // 10)])
    opt = build_optimizer(model, spec.optimizer, lr=spec.lr, weight_decay=spec.weight_decay)
    history = train(model, opt, data, steps=steps, batch_size=spec.batch_size, seq_len=seq_len,
                    lr_schedule=warmup_cosine(steps, min(spec.warmup, steps // 2)), seed=spec.seed,
                    eval_every=steps, eval_batches=1, progress=progress, desc="story LM")
    final = sum(r["loss"] for r in history[-10:]) / len(history[-10:])
    if path is not None:
        save_checkpoint(path, model, opt, steps, extra={"final_loss": final})
    return model, {"loaded": False, "final_loss": final}


def _state_hash(model: nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().float().numpy().tobytes())
    return h.hexdigest()[:16]


def sample_pool(examples: list[Example], k: int, seed: int) -> list[Example]:
    """``k`` examples of a few-shot task, drawn without replacement and stratified by answer (answers taken in
    turn, as in balanced k-shot sets), so that k examples of a binary task are not all one label."""
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= len(examples):
        raise ValueError(f"k: expected an int in [1, {len(examples)}], got {k!r}")
    rng = random.Random(seed)
    by_answer: dict[str, list[Example]] = {}
    for ex in rng.sample(examples, len(examples)):
        by_answer.setdefault(ex.answer, []).append(ex)
    groups = [by_answer[a] for a in sorted(by_answer)]
    out: list[Example] = []
    while len(out) < k:
        for g in groups:
            if g and len(out) < k:
                out.append(g.pop())
    return out

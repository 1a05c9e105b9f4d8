"""The training driver every notebook uses: :func:`run_steps` (generic) and :func:`train` (the LM).

Seeded and resumable: the batch of step s depends only on ``(seed, s)``, so a run resumed from a
checkpoint sees exactly the batches the uninterrupted run would have seen, and (no dropout, same
optimizer state) produces the same next loss. A callback hook after each optimizer step is where
methods that act between steps plug in — MoE's aux-loss-free bias update, QK-Clip.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from kimi_mini.data import TokenData

__all__ = ["train", "run_steps", "StateCheckpoint", "evaluate", "warmup_cosine", "save_checkpoint", "load_checkpoint",
           "Callback"]

Callback = Callable[[int, nn.Module, torch.optim.Optimizer, dict], None]


def warmup_cosine(steps: int, warmup: int = 0, min_ratio: float = 0.1) -> Callable[[int], float]:
    """LR multiplier: linear warm-up over ``warmup`` steps, then cosine decay to ``min_ratio``."""
    if steps < 1 or warmup < 0 or not 0 <= min_ratio <= 1:
        raise ValueError(f"steps, warmup, min_ratio: expected steps >= 1, warmup >= 0, 0 <= min_ratio <= 1; "
                         f"got {steps}, {warmup}, {min_ratio}")

    def multiplier(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, steps - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return multiplier


def progress_bar():
    """The tqdm class for progress bars: a live widget in an interactive notebook, plain text when a notebook
    runs headless (``kimi-mini reproduce``/papermill set ``KIMI_MINI_TEXT_PROGRESS=1`` through
    :func:`kimi_mini.notebooks.start_notebook`), where a widget would be saved frozen at "0/180 0%"."""
    if os.environ.get("KIMI_MINI_TEXT_PROGRESS") == "1":
        from tqdm.std import tqdm
    else:
        from tqdm.auto import tqdm
    return tqdm


def _batch_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def _autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None or dtype == torch.float32:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@torch.no_grad()
def evaluate(model: nn.Module, data: TokenData, *, batch_size: int, seq_len: int, batches: int = 8,
             seed: int = 0, split: str = "val", autocast_dtype: torch.dtype | None = None) -> float:
    """Mean cross-entropy (nats/token) over ``batches`` fixed batches of ``split``."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    gen = torch.Generator().manual_seed(10_007 + seed)
    total = 0.0
    for _ in range(batches):
        x, y = data.get_batch(split, batch_size, seq_len, gen, device)
        with _autocast(device, autocast_dtype):
            _, loss = model(x, y)
        total += float(loss)
    model.train(was_training)
    return total / batches


def save_checkpoint(path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer, step: int,
                    history: Sequence[dict] = (), extra: dict | None = None) -> None:
    """Model + optimizer + step (+ history) in one file that loads with ``weights_only=True``."""
    config = getattr(model, "config", None)
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "step": int(step),
        "history": list(history),
        "config": config.to_dict() if hasattr(config, "to_dict") else None,
        "extra": extra or {},
    }
    _atomic_save(state, path)


def _atomic_save(state: dict, path: str | Path) -> None:
    path = Path(path)
    if path.exists() and path.is_dir():
        raise ValueError(f"checkpoint: {path} is a directory; expected a file path")
    try:
        from kimi_mini.data import atomic_path  # the one cache writer: unique temp name, locked, atomic

        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            torch.save(state, tmp)
    except OSError as exc:
        raise ValueError(f"checkpoint: cannot write {path} ({exc.strerror or exc})") from None


def _load_file(path: Path, map_location="cpu") -> dict:
    """``torch.load`` with every way a file can be wrong turned into one ``ValueError`` naming it."""
    if not path.exists():
        raise ValueError(f"path: no checkpoint at {path}")
    if path.is_dir():
        raise ValueError(f"path: {path} is a directory, not a checkpoint file")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated, empty, garbage, foreign pickle: all one error for the caller
        raise ValueError(f"path: {path} is not a readable kimi-mini checkpoint ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else 'no detail'})") from None
    if not isinstance(state, dict) or "step" not in state or "history" not in state:
        raise ValueError(f"path: {path} is not a kimi-mini checkpoint (no step/history)")
    return state


def load_checkpoint(path: str | Path, model: nn.Module | None = None,
                    optimizer: torch.optim.Optimizer | None = None, map_location="cpu") -> dict[str, Any]:
    """Load a checkpoint (``weights_only=True``: no code is unpickled) into ``model``/``optimizer``."""
    path = Path(path)
    state = _load_file(path, map_location)
    if model is not None:
        if "model" not in state:
            raise ValueError(f"path: {path} holds no model state")
        config = getattr(model, "config", None)
        if state.get("config") is not None and hasattr(config, "to_dict") and state["config"] != config.to_dict():
            raise ValueError(f"path: {path} was written for another model config; expected {config.to_dict()}, "
                             f"found {state['config']}")
        try:
            model.load_state_dict(state["model"])
        except RuntimeError as exc:
            raise ValueError(f"path: {path} does not fit this model ({str(exc).splitlines()[0]})") from None
    if optimizer is not None:
        if "optimizer" not in state:
            raise ValueError(f"path: {path} holds no optimizer state")
        try:
            optimizer.load_state_dict(state["optimizer"])
        except (ValueError, KeyError, RuntimeError) as exc:
            raise ValueError(f"path: {path}'s optimizer state does not fit this optimizer ({exc})") from None
    return state


class StateCheckpoint:
    """Checkpointing for :func:`run_steps`: every object in ``objects`` (models, optimizers, anything with
    ``state_dict``/``load_state_dict``) plus the step, the history and ``extra`` in one file that loads with
    ``weights_only=True``. ``StateCheckpoint("run.pt", encoder=enc, disc=disc, opt_e=opt_e, opt_d=opt_d)``."""

    def __init__(self, path: str | Path, extra: dict | None = None, **objects: Any):
        if not objects:
            raise ValueError("objects: expected at least one object with state_dict()/load_state_dict()")
        for name, obj in objects.items():
            if not (hasattr(obj, "state_dict") and hasattr(obj, "load_state_dict")):
                raise ValueError(f"{name}: expected an object with state_dict() and load_state_dict(), "
                                 f"got {type(obj).__name__}")
        self.path, self.objects, self.extra = Path(path), objects, extra or {}

    def save(self, step: int, history: Sequence[dict]) -> None:
        state = {"objects": {k: v.state_dict() for k, v in self.objects.items()}, "step": int(step),
                 "history": list(history), "extra": self.extra}
        _atomic_save(state, self.path)

    def load(self) -> tuple[int, list[dict]] | None:
        if not self.path.exists():
            return None
        state = _load_file(self.path)
        missing = sorted(set(self.objects) - set(state.get("objects", {})))
        if missing:
            raise ValueError(f"checkpoint: {self.path} holds no state for {missing}; it was written for "
                             f"{sorted(state.get('objects', {}))}")
        for k, obj in self.objects.items():
            obj.load_state_dict(state["objects"][k])
        return int(state["step"]), list(state["history"])


class _ModelCheckpoint:
    """The LM's checkpoint format (model, optimizer, config): what :func:`save_checkpoint` writes."""

    def __init__(self, path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer):
        self.path, self.model, self.optimizer = Path(path), model, optimizer

    def save(self, step: int, history: Sequence[dict]) -> None:
        save_checkpoint(self.path, self.model, self.optimizer, step, history)

    def load(self) -> tuple[int, list[dict]] | None:
        if not self.path.exists():
            return None
        device = next(self.model.parameters()).device
        state = load_checkpoint(self.path, self.model, self.optimizer, map_location=device)
        return state["step"], list(state["history"])


StepCallback = Callable[[int, dict], None]


def run_steps(step_fn: Callable[[int, torch.Generator], dict], steps: int, *, seed: int = 0,
              callbacks: Sequence[StepCallback] = (), eval_fn: Callable[[], dict] | None = None,
              eval_every: int | None = None, checkpoint: StateCheckpoint | None = None,
              checkpoint_every: int | None = None, resume: bool = False, progress: bool = True,
              desc: str = "train", postfix: Sequence[str] = ("loss",)) -> list[dict]:
    """The generic training driver: call ``step_fn`` ``steps`` times and keep the records.

    ``step_fn(step, generator) -> dict`` does one optimisation step (0-based ``step``) and returns what it
    measured (e.g. ``{"loss": 0.7}``; floats, not tensors). ``generator`` is a CPU ``torch.Generator``
    seeded from ``(seed, step)`` alone: draw every random batch from it, and a resumed run sees exactly the
    batches the uninterrupted one would have seen. The driver adds ``step`` (1-based) and ``seconds``
    (wall time so far), runs each ``callback(step, record)`` (1-based step; it may add keys), merges
    ``eval_fn()``'s dict into the record every ``eval_every`` steps and at the last step, shows a tqdm bar
    with the ``postfix`` keys, saves ``checkpoint`` every ``checkpoint_every`` steps and at the end, and
    with ``resume=True`` continues from an existing checkpoint. Returns one record per step.

    A topic with two optimisers writes one ``step_fn`` and gets the rest — e.g. an adversarial game::

        def step_fn(step, gen):
            idx = torch.randint(0, len(x), (64,), generator=gen)
            for _ in range(k):                                # k discriminator steps
                d_loss = F.cross_entropy(disc(enc(x[idx]).detach()), s[idx])
                opt_d.zero_grad(); d_loss.backward(); opt_d.step()
            h = enc(x[idx])                                   # then one encoder/predictor step
            loss = F.cross_entropy(pred(h), y[idx]) - gamma * F.cross_entropy(disc(h), s[idx])
            opt_e.zero_grad(); loss.backward(); opt_e.step()
            return {"loss": loss.item(), "d_loss": d_loss.item()}

        history = run_steps(step_fn, 500, seed=0, eval_fn=lambda: {"val_acc": accuracy()}, eval_every=100,
                            checkpoint=StateCheckpoint("game.pt", enc=enc, disc=disc, opt_e=opt_e, opt_d=opt_d))
    """
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps: expected an integer >= 1, got {steps!r}")
    if eval_every is not None and (not isinstance(eval_every, int) or eval_every < 1):
        raise ValueError(f"eval_every: expected an integer >= 1 or None, got {eval_every!r}")
    if checkpoint_every is not None and (not isinstance(checkpoint_every, int) or checkpoint_every < 1):
        raise ValueError(f"checkpoint_every: expected an integer >= 1 or None, got {checkpoint_every!r}")
    if resume and checkpoint is None:
        raise ValueError("resume: resume=True needs a checkpoint to resume from")
    history: list[dict] = []
    start = 0
    if resume:
        loaded = checkpoint.load()
        if loaded is not None:
            start, history = loaded
            if start > steps:
                raise ValueError(f"steps: the checkpoint at {getattr(checkpoint, 'path', checkpoint)} is already at "
                                 f"step {start}, past steps={steps}; expected steps >= {start}")
    t0 = time.perf_counter() - (history[-1].get("seconds", 0.0) if history else 0.0)
    bar = progress_bar()(range(start, steps), desc=desc, disable=not progress, initial=start, total=steps,
               dynamic_ncols=True, leave=True)
    shown: dict[str, str] = {}
    for step in bar:
        out = step_fn(step, _batch_generator(seed, step))
        record: dict[str, Any] = {"step": step + 1, **(out or {})}
        for cb in callbacks:
            cb(step + 1, record)
        if eval_fn is not None and ((eval_every and (step + 1) % eval_every == 0) or step + 1 == steps):
            record.update(eval_fn())
        record["seconds"] = time.perf_counter() - t0
        history.append(record)
        for key in postfix:
            if isinstance(record.get(key), (int, float)):
                shown[key] = f"{record[key]:.3f}"
        if shown:
            bar.set_postfix(shown, refresh=False)
        if checkpoint is not None and checkpoint_every and (step + 1) % checkpoint_every == 0:
            checkpoint.save(step + 1, history)
    bar.close()
    if checkpoint is not None:
        checkpoint.save(steps, history)
    return history


def train(model: nn.Module, optimizer: torch.optim.Optimizer, data: TokenData, *, steps: int,
          batch_size: int, seq_len: int, lr_schedule: Callable[[int], float] | None = None,
          grad_clip: float | None = 1.0, eval_every: int = 50, eval_batches: int = 8, seed: int = 0,
          callbacks: Sequence[Callback] = (), progress: bool = True, desc: str = "train",
          autocast_dtype: torch.dtype | None = None, checkpoint: str | Path | None = None,
          checkpoint_every: int | None = None, resume: bool = False,
          loss_fn: Callable[[nn.Module, Tensor, Tensor], Tensor] | None = None,
          batch_fn: Callable[[int, torch.Generator, torch.device], tuple[Tensor, Tensor]] | None = None
          ) -> list[dict]:
    """Train a language model for ``steps`` optimizer steps on random windows of ``data.train``
    (a thin layer over :func:`run_steps`).

    Returns one plain record per step: ``step`` (1-based), ``loss``, ``lr``, ``grad_norm``, ``tokens``
    (seen so far), ``seconds`` (wall time so far), and ``val_loss`` every ``eval_every`` steps and at the
    last step. Callbacks run after each optimizer step as ``cb(step, model, optimizer, record)`` and may
    add keys to ``record``. With ``checkpoint`` the state is saved every ``checkpoint_every`` steps and at
    the end; with ``resume=True`` an existing checkpoint is loaded and training continues from its step.

    Hooks for other text tasks: ``batch_fn(step, generator, device) -> (x, y)`` replaces the random
    corpus windows (``data`` may then be None; no ``val_loss`` is computed), and ``loss_fn(model, x, y)``
    replaces ``model(x, y)[1]`` (e.g. a loss on answer tokens only).
    """
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps: expected an integer >= 1, got {steps!r}")
    if not isinstance(eval_every, int) or eval_every < 1 or not isinstance(eval_batches, int) or eval_batches < 1:
        raise ValueError(f"eval_every, eval_batches: expected integers >= 1, got {eval_every!r}, {eval_batches!r}")
    if grad_clip is not None and not (isinstance(grad_clip, (int, float)) and math.isfinite(grad_clip)
                                      and grad_clip > 0):
        raise ValueError(f"grad_clip: expected a finite number > 0 or None, got {grad_clip!r}")
    if batch_fn is None and data is None:
        raise ValueError("data: expected a TokenData (or a batch_fn), got None")
    if resume and checkpoint is None:
        raise ValueError("resume: resume=True needs a checkpoint path")
    device = next(model.parameters()).device
    for group in optimizer.param_groups:
        group.setdefault("base_lr", group["lr"])
    if batch_fn is None:
        def batch_fn(step, gen, device):
            return data.get_batch("train", batch_size, seq_len, gen, device)

    def step_fn(step: int, gen: torch.Generator) -> dict:
        if lr_schedule is not None:
            mult = lr_schedule(step)
            for group in optimizer.param_groups:
                group["lr"] = group["base_lr"] * mult
        x, y = batch_fn(step, gen, device)
        with _autocast(device, autocast_dtype):
            loss = loss_fn(model, x, y) if loss_fn is not None else model(x, y)[1]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip is not None:
            grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip))
        else:
            grads = [p.grad.norm() for p in model.parameters() if p.grad is not None]
            grad_norm = float(torch.linalg.vector_norm(torch.stack(grads))) if grads else 0.0
        optimizer.step()
        return {"loss": loss.item(), "lr": optimizer.param_groups[0]["lr"], "grad_norm": grad_norm,
                "tokens": (step + 1) * x.numel()}

    def lm_callbacks(step: int, record: dict) -> None:
        for cb in callbacks:
            cb(step, model, optimizer, record)

    def eval_fn() -> dict:
        if data is None:
            return {}
        return {"val_loss": evaluate(model, data, batch_size=batch_size, seq_len=seq_len, batches=eval_batches,
                                     seed=seed, autocast_dtype=autocast_dtype)}

    model.train()
    return run_steps(step_fn, steps, seed=seed, callbacks=[lm_callbacks], eval_fn=eval_fn, eval_every=eval_every,
                     checkpoint=_ModelCheckpoint(checkpoint, model, optimizer) if checkpoint is not None else None,
                     checkpoint_every=checkpoint_every, resume=resume, progress=progress, desc=desc,
                     postfix=("loss", "val_loss"))

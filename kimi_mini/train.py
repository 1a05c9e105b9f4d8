"""The one training loop every notebook uses.

Seeded and resumable: the batch of step s depends only on ``(seed, s)``, so a run resumed from a
checkpoint sees exactly the batches the uninterrupted run would have seen, and (no dropout, same
optimizer state) produces the same next loss. A callback hook after each optimizer step is where
methods that act between steps plug in — MoE's aux-loss-free bias update, QK-Clip.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from kimi_mini.data import TokenData

__all__ = ["train", "evaluate", "warmup_cosine", "save_checkpoint", "load_checkpoint", "Callback"]

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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def load_checkpoint(path: str | Path, model: nn.Module | None = None,
                    optimizer: torch.optim.Optimizer | None = None, map_location="cpu") -> dict[str, Any]:
    """Load a checkpoint (``weights_only=True``: no code is unpickled) into ``model``/``optimizer``."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"path: no checkpoint at {path}")
    state = torch.load(path, map_location=map_location, weights_only=True)
    if model is not None:
        model.load_state_dict(state["model"])
    if optimizer is not None:
        optimizer.load_state_dict(state["optimizer"])
    return state


def train(model: nn.Module, optimizer: torch.optim.Optimizer, data: TokenData, *, steps: int,
          batch_size: int, seq_len: int, lr_schedule: Callable[[int], float] | None = None,
          grad_clip: float | None = 1.0, eval_every: int = 50, eval_batches: int = 8, seed: int = 0,
          callbacks: Sequence[Callback] = (), progress: bool = True, desc: str = "train",
          autocast_dtype: torch.dtype | None = None, checkpoint: str | Path | None = None,
          checkpoint_every: int | None = None, resume: bool = False) -> list[dict]:
    """Train ``model`` for ``steps`` optimizer steps on random windows of ``data.train``.

    Returns one plain record per step: ``step`` (1-based), ``loss``, ``lr``, ``grad_norm``, ``tokens``
    (seen so far), ``seconds`` (wall time so far), and ``val_loss`` every ``eval_every`` steps and at the
    last step. Callbacks run after each optimizer step as ``cb(step, model, optimizer, record)`` and may
    add keys to ``record``. With ``checkpoint`` the state is saved every ``checkpoint_every`` steps and at
    the end; with ``resume=True`` an existing checkpoint is loaded and training continues from its step.
    """
    if steps < 1:
        raise ValueError(f"steps: expected >= 1, got {steps}")
    if eval_every < 1 or eval_batches < 1:
        raise ValueError(f"eval_every, eval_batches: expected >= 1, got {eval_every}, {eval_batches}")
    if grad_clip is not None and grad_clip <= 0:
        raise ValueError(f"grad_clip: expected > 0 or None, got {grad_clip}")
    device = next(model.parameters()).device
    for group in optimizer.param_groups:
        group.setdefault("base_lr", group["lr"])
    history: list[dict] = []
    start = 0
    if resume and checkpoint is not None and Path(checkpoint).exists():
        state = load_checkpoint(checkpoint, model, optimizer, map_location=device)
        start, history = state["step"], list(state["history"])
    model.train()
    t0 = time.perf_counter() - (history[-1]["seconds"] if history else 0.0)
    bar = tqdm(range(start, steps), desc=desc, disable=not progress, initial=start, total=steps,
               dynamic_ncols=True, leave=True)
    val_loss = None
    for step in bar:
        if lr_schedule is not None:
            mult = lr_schedule(step)
            for group in optimizer.param_groups:
                group["lr"] = group["base_lr"] * mult
        x, y = data.get_batch("train", batch_size, seq_len, _batch_generator(seed, step), device)
        with _autocast(device, autocast_dtype):
            _, loss = model(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip is not None:
            grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip))
        else:
            grad_norm = float(torch.linalg.vector_norm(
                torch.stack([p.grad.norm() for p in model.parameters() if p.grad is not None])))
        optimizer.step()
        record: dict[str, Any] = {
            "step": step + 1,
            "loss": loss.item(),
            "lr": optimizer.param_groups[0]["lr"],
            "grad_norm": grad_norm,
            "tokens": (step + 1) * batch_size * seq_len,
        }
        for cb in callbacks:
            cb(step + 1, model, optimizer, record)
        if (step + 1) % eval_every == 0 or step + 1 == steps:
            val_loss = evaluate(model, data, batch_size=batch_size, seq_len=seq_len, batches=eval_batches,
                                seed=seed, autocast_dtype=autocast_dtype)
            record["val_loss"] = val_loss
        record["seconds"] = time.perf_counter() - t0
        history.append(record)
        bar.set_postfix(loss=f"{record['loss']:.3f}", val=f"{val_loss:.3f}" if val_loss is not None else "-")
        if checkpoint is not None and checkpoint_every and (step + 1) % checkpoint_every == 0:
            save_checkpoint(checkpoint, model, optimizer, step + 1, history)
    bar.close()
    if checkpoint is not None:
        save_checkpoint(checkpoint, model, optimizer, steps, history)
    return history

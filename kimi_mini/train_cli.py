"""``kimi-mini train``: the foundation's training loop from the command line, on one process or many.

    kimi-mini train --optimizer muon --steps 200                        # one process
    torchrun --nproc_per_node=2 -m kimi_mini.cli train --optimizer muon  # data parallel, 2 ranks

Under ``torchrun`` (``WORLD_SIZE > 1``) every rank builds the same model (same seed), draws the same
*global* batch of ``--batch-size`` rows and trains on its own ``batch_size / N`` rows; the gradients
are averaged across ranks, so N processes compute what one process does on the global batch (up to
floating-point summation order). Backend: NCCL on CUDA, gloo on CPU.

- ``--optimizer muon``: Moonlight's Distributed Muon (ZeRO-1, :class:`kimi_mini.optim.DistributedMuon`)
  — its reduce-scatter *is* the gradient averaging, so the model is not wrapped in DDP, and gradient
  clipping happens inside the optimizer once the gradients are complete.
- ``--optimizer adamw``: ZeRO-1 AdamW, the same machinery without Muon — the baseline the paper
  compares with.
- any other registered optimizer (e.g. ``muonclip``): ``DistributedDataParallel`` gradients and the
  single-process optimizer on every rank.

Rank 0 prints the progress bar and the per-step loss (averaged over ranks) and writes the checkpoint;
the optimizer state in it is consolidated (single-process format), so a run can resume with any number
of processes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["add_parser", "run", "RankShard"]


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("train", help="train a KimiMini (one process, or many under torchrun)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="toy", help="toy (CPU, fp32) or gpu (CUDA, bf16 autocast)")
    p.add_argument("--optimizer", default="muon", help="a registered optimizer: adamw, muon, muonclip, ...")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=16, help="global batch (rows), split over ranks")
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-3, help="one lr for Muon and AdamW (RMS-matched)")
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--warmup", type=int, default=0, help="warm-up steps of the cosine schedule")
    p.add_argument("--grad-clip", type=float, default=1.0, help="max global grad norm; <= 0 disables")
    p.add_argument("--ns-impl", default="torch", choices=["torch", "triton"], help="Newton-Schulz path")
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--n-layers", type=int, default=4)
    p.add_argument("--n-heads", type=int, default=4)
    p.add_argument("--d-ff", type=int, default=352)
    p.add_argument("--attention", default="mha")
    p.add_argument("--ffn", default="dense")
    p.add_argument("--data", default="stdlib", choices=["stdlib", "synthetic"],
                   help="stdlib: the course corpus; synthetic: seeded random bytes (fast smoke tests)")
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--eval-batches", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint", help="checkpoint file (written by rank 0)")
    p.add_argument("--checkpoint-every", type=int, default=None)
    p.add_argument("--resume", action="store_true", help="continue from --checkpoint if it exists")
    p.add_argument("--history", help="write the per-step records as JSON here (rank 0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


class RankShard:
    """This rank's rows of the global batch: draws ``N·b`` rows exactly as a single process would, keeps
    rows ``[r·b, (r+1)·b)``. Validation batches are *not* split — every rank evaluates the whole global
    batch, so the logged ``val_loss`` equals the single-process one."""

    def __init__(self, data, rank: int, world_size: int):
        self.data, self.rank, self.world_size = data, rank, world_size

    def get_batch(self, split, batch_size, seq_len, generator=None, device="cpu"):
        x, y = self.data.get_batch(split, batch_size * self.world_size, seq_len, generator, device)
        if split != "train":
            return x, y
        rows = slice(self.rank * batch_size, (self.rank + 1) * batch_size)
        return x[rows], y[rows]

    def __repr__(self) -> str:
        return f"RankShard({self.data!r}, rank={self.rank}/{self.world_size})"


class _DataParallel(nn.Module):
    """``DistributedDataParallel`` for the training loop, with the inner model's state-dict keys and
    ``config`` (so checkpoints load into a plain :class:`KimiMini`)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.ddp = nn.parallel.DistributedDataParallel(model)
        self.config = getattr(model, "config", None)

    def forward(self, *args, **kwargs):
        return self.ddp(*args, **kwargs)

    def state_dict(self, *args, **kwargs):
        return self.ddp.module.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        return self.ddp.module.load_state_dict(state_dict, strict=strict, assign=assign)


def _synthetic_data(seed: int):
    from kimi_mini.data import TokenData

    g = torch.Generator().manual_seed(seed)
    return TokenData(train=torch.randint(0, 256, (200_000,), generator=g, dtype=torch.uint8),
                     val=torch.randint(0, 256, (20_000,), generator=g, dtype=torch.uint8))


def _writable(path: str) -> str | None:
    """Why ``path`` cannot be written (None when it can): checked before training, not after it."""
    target = Path(path)
    if target.is_dir():
        return f"{path} is a directory; expected a file path"
    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=parent, prefix=".kimi-mini-write-check-"):
            pass
    except OSError as exc:
        return f"cannot write to {parent} ({exc.strerror or exc})"
    return None


def _check_args(args: argparse.Namespace, world: int) -> str | None:
    """The first problem with the command line, as the one line to print (None: all fine)."""
    import math

    ints = (("--steps", args.steps, 1), ("--batch-size", args.batch_size, 1), ("--seq-len", args.seq_len, 1),
            ("--warmup", args.warmup, 0), ("--eval-every", args.eval_every, 1),
            ("--eval-batches", args.eval_batches, 1))
    for flag, value, lo in ints:
        if value < lo:
            return f"{flag}: expected an integer >= {lo}, got {value}"
    if args.checkpoint_every is not None and args.checkpoint_every < 1:
        return f"--checkpoint-every: expected an integer >= 1, got {args.checkpoint_every}"
    if args.warmup > args.steps:
        return f"--warmup: expected at most --steps={args.steps} warm-up steps, got {args.warmup}"
    for flag, value in (("--lr", args.lr), ("--weight-decay", args.weight_decay), ("--grad-clip", args.grad_clip)):
        if not math.isfinite(value):
            return f"{flag}: expected a finite number, got {value}"
    if args.lr <= 0:
        return f"--lr: expected a number > 0, got {args.lr}"
    if args.weight_decay < 0:
        return f"--weight-decay: expected a number >= 0, got {args.weight_decay}"
    if args.batch_size % world:
        return (f"--batch-size: {args.batch_size} does not split over {world} ranks; "
                "expected a multiple of the world size")
    if args.resume and not args.checkpoint:
        return "--resume: needs --checkpoint (the file to resume from)"
    for flag, path in (("--checkpoint", args.checkpoint), ("--history", args.history)):
        if path:
            why = _writable(path)
            if why:
                return f"{flag}: {why}"
    return None


def _fail(message: str) -> int:
    print(f"kimi-mini train: {message}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    from kimi_mini.model import KimiConfig, KimiMini
    from kimi_mini.optim import OPTIMIZERS, DistributedMuon, build_optimizer
    from kimi_mini.presets import get_preset
    from kimi_mini.train import train, warmup_cosine

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    try:
        preset = get_preset(args.preset)
        preset.check_device()
    except (ValueError, RuntimeError) as exc:
        return _fail(f"--preset: {exc}")
    if args.optimizer not in OPTIMIZERS:
        return _fail(f"--optimizer: unknown optimizer {args.optimizer!r}; "
                     f"expected one of {sorted(OPTIMIZERS)}")
    problem = _check_args(args, world)
    if problem:
        return _fail(problem)
    try:
        config = KimiConfig(d_model=args.d_model, n_layers=args.n_layers, n_heads=args.n_heads,
                            d_ff=args.d_ff, max_seq_len=args.seq_len, attention=args.attention, ffn=args.ffn)
    except ValueError as exc:
        return _fail(f"model: {exc}")

    device = torch.device(preset.device)
    if world > 1:
        if device.type == "cuda":
            torch.cuda.set_device(local_rank)
            device = torch.device("cuda", local_rank)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        torch.manual_seed(args.seed)
        model = KimiMini(config).to(device)
        if world > 1:  # same seed gives the same init; make it certain
            for t in list(model.parameters()) + list(model.buffers()):
                dist.broadcast(t.data, src=0)
        data = _synthetic_data(args.seed) if args.data == "synthetic" else _load_corpus()
        shortest = min(len(data.train), len(data.val))
        if args.seq_len + 2 > shortest:
            return _fail(f"--seq-len: {args.seq_len} is too long for the data (its shortest split has {shortest} "
                         f"tokens); expected at most {shortest - 2}")
        if args.resume and Path(args.checkpoint).exists():
            from kimi_mini.train import load_checkpoint

            try:  # a bad checkpoint is reported before any training, not after the first save
                load_checkpoint(args.checkpoint, KimiMini(config), map_location="cpu")
            except ValueError as exc:
                return _fail(f"--checkpoint: {exc}")
        grad_clip = args.grad_clip if args.grad_clip > 0 else None
        zero1 = world > 1 and args.optimizer in ("muon", "adamw")
        kwargs = {"impl": args.ns_impl} if args.optimizer in ("muon", "muonclip") else {}
        if zero1:
            optimizer = build_optimizer(model, args.optimizer, lr=args.lr, weight_decay=args.weight_decay,
                                        distributed=True, max_grad_norm=grad_clip, **kwargs)
            optimizer.consolidate_on_save = True
            loop_clip, loop_model = None, model
        else:
            optimizer = build_optimizer(model, args.optimizer, lr=args.lr, weight_decay=args.weight_decay,
                                        **kwargs)
            loop_clip, loop_model = grad_clip, (_DataParallel(model) if world > 1 else model)
        batch = args.batch_size // world
        loop_data = RankShard(data, rank, world) if world > 1 else data

        callbacks = []
        if world > 1:
            def average_over_ranks(step, _model, opt, record):
                loss = torch.tensor([record["loss"]], dtype=torch.float64, device=device)
                dist.all_reduce(loss)
                record["loss"] = float(loss) / world
                record["tokens"] *= world  # the loop counts this rank's rows
                if isinstance(opt, DistributedMuon):
                    record["grad_norm"] = opt.last_grad_norm
                    record["comm_bytes"] = dict(opt.comm_bytes)  # cumulative, per collective kind
            callbacks.append(average_over_ranks)

        # Rank 0 writes the checkpoint; other ranks get a private scratch copy (the loop saves in
        # lockstep on every rank, and DistributedMuon's consolidated state dict is a collective).
        checkpoint, scratch = args.checkpoint, None
        if checkpoint and rank > 0:
            scratch = tempfile.mkdtemp(prefix=f"kimi-mini-rank{rank}-")
            own = Path(scratch) / "checkpoint.pt"
            if args.resume and Path(checkpoint).exists():
                shutil.copyfile(checkpoint, own)
            checkpoint = str(own)
        try:
            history = train(loop_model, optimizer, loop_data, steps=args.steps, batch_size=batch,
                            seq_len=args.seq_len, lr_schedule=warmup_cosine(args.steps, args.warmup),
                            grad_clip=loop_clip, eval_every=args.eval_every, eval_batches=args.eval_batches,
                            seed=args.seed, callbacks=callbacks, progress=rank == 0 and not args.no_progress,
                            desc=f"train {args.optimizer}" + (f" ×{world}" if world > 1 else ""),
                            autocast_dtype=preset.dtype if device.type == "cuda" else None,
                            checkpoint=checkpoint, checkpoint_every=args.checkpoint_every, resume=args.resume)
        finally:
            if scratch:
                shutil.rmtree(scratch, ignore_errors=True)
        if rank == 0:
            last = history[-1]
            print(f"done: {len(history)} steps, loss {last['loss']:.4f}, "
                  f"val_loss {last.get('val_loss', float('nan')):.4f}, {last['tokens']:,} tokens")
            if args.history:
                Path(args.history).parent.mkdir(parents=True, exist_ok=True)
                Path(args.history).write_text(json.dumps(history))
        return 0
    finally:
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _load_corpus():
    from kimi_mini.data import load_corpus

    return load_corpus()

"""Distributed Muon (Moonlight, arXiv 2502.16982, Algorithm 1): ZeRO-1 on data-parallel ranks —
reduce-scatter the gradients, update the local momentum shard, all-gather the momentum-updated shards into
the full matrix, run Newton–Schulz, apply the local slice, all-gather the parameters. It produces the
same update as single-process :class:`~kimi_mini.optim.muon.Muon` on the same global batch.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from kimi_mini.checks import check_number
from kimi_mini.optim.muon import (
    ADAMW_BETAS,
    ADAMW_EPS,
    UPDATE_RMS,
    _adamw_update_,
    _check_hparams,
    _check_muon_group,
    _muon_apply_,
    _muon_momentum_,
    muon_update_scale,
    orthogonalize_by_shape,
)
from kimi_mini.optim.newton_schulz import default_ns_dtype

__all__ = ["DistributedMuon"]


def _collective(name: str):
    """``torch.distributed`` renamed the tensor collectives (``*_single``); use whichever exists."""
    new, old = {"all_gather": ("all_gather_single", "all_gather_into_tensor"),
                "reduce_scatter": ("reduce_scatter_single", "reduce_scatter_tensor")}[name]
    return getattr(dist, new, None) or getattr(dist, old)


class DistributedMuon(torch.optim.Optimizer):
    """Moonlight's Distributed Muon (Algorithm 1): ZeRO-1 data parallelism with Muon.

    Every rank holds the full parameters; the optimizer *state* is sharded: each parameter, flattened
    and padded to a multiple of the world size ``N``, is split into ``N`` contiguous shards and rank
    ``r`` owns shard ``r``. One step, for a Muon parameter:

    1. reduce-scatter the gradients (fp32, averaged over ranks) → local gradient shard;
    2. ``M_r ← μ·M_r + g_r`` on the local momentum shard;
    3. all-gather the momentum-updated shards ``μ·M_r + g_r`` into the full matrix (in the NS dtype:
       bf16 on CUDA, fp32 on CPU — ``gather_dtype`` overrides);
    4. NS on the full matrix (every rank computes it; it is cheap next to forward/backward);
    5. keep the local slice of the update, apply it with weight decay and the RMS scale;
    6. all-gather the updated parameter shards.

    AdamW groups (``use_muon=False``) skip steps 3–4: that is ZeRO-1 AdamW, so
    ``DistributedMuon`` with only AdamW groups is the baseline the paper compares communication with.

    Do **not** wrap the model in ``DistributedDataParallel``: gradient averaging is step 1. Because the
    gradients are only complete after step 1, clip them here (``max_grad_norm``), not before ``step()``.
    Every parameter must have a gradient on every rank (as with DDP's defaults); a missing one counts
    as zero. ``comm_bytes`` counts, per collective kind, the bytes of the full buffers communicated.

    Works without ``torch.distributed`` initialised (one rank, no collectives).
    """

    def __init__(self, params, lr: float, momentum: float = 0.95, nesterov: bool = True,
                 weight_decay: float = 0.1, ns_steps: int = 5, *, update_rms: float = UPDATE_RMS,
                 betas: tuple[float, float] = ADAMW_BETAS, eps: float = ADAMW_EPS, impl: str = "torch",
                 process_group=None, max_grad_norm: float | None = None,
                 gather_dtype: torch.dtype | None = None):
        _check_hparams(lr, momentum, weight_decay, ns_steps, update_rms, betas, eps, impl)
        if max_grad_norm is not None:
            check_number("max_grad_norm", max_grad_norm, 0, lo_open=True)
        defaults = dict(lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay,
                        ns_steps=ns_steps, update_rms=update_rms, betas=tuple(betas), eps=eps, impl=impl,
                        use_muon=True)
        self.process_group = process_group
        self.max_grad_norm = max_grad_norm
        self.gather_dtype = gather_dtype
        self.consolidate_on_save = False  # True: state_dict() is the (collective) consolidated one
        self.comm_bytes: Counter[str] = Counter()
        self.last_grad_norm: float | None = None
        if dist.is_available() and dist.is_initialized():
            self.world_size = dist.get_world_size(process_group)
            self.rank = dist.get_rank(process_group)
        else:
            self.world_size, self.rank = 1, 0
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict) -> None:
        super().add_param_group(param_group)
        _check_muon_group(self.param_groups[-1])

    # -- sharding -------------------------------------------------------------------------------
    def shard_numel(self, p: Tensor) -> int:
        """Elements of each rank's shard of ``p`` (``⌈numel / N⌉``; the last shard is zero-padded)."""
        return -(-p.numel() // self.world_size)

    def _local_slice(self, full_flat: Tensor, p: Tensor) -> Tensor:
        n = self.shard_numel(p)
        padded = torch.nn.functional.pad(full_flat, (0, n * self.world_size - full_flat.numel()))
        return padded[self.rank * n:(self.rank + 1) * n]

    def _all_params(self) -> list[tuple[dict, Tensor]]:
        return [(g, p) for g in self.param_groups for p in g["params"]]

    # -- collectives over one bucket ---------------------------------------------------------------
    def _reduce_scatter(self, tensors: list[Tensor], sizes: list[int], kind: str) -> list[Tensor]:
        """Average ``tensors`` (flattened, padded to ``N·size``) over ranks; return this rank's shards."""
        N = self.world_size
        # Rank-major layout [N, Σ sizes]: one collective for the whole bucket, rank r receives row r.
        rows = [torch.nn.functional.pad(t.reshape(-1), (0, N * s - t.numel())).view(N, s)
                for t, s in zip(tensors, sizes, strict=True)]
        bucket = torch.cat(rows, dim=1).reshape(-1)
        if N > 1:
            out = bucket.new_empty(bucket.numel() // N)
            _collective("reduce_scatter")(out, bucket, group=self.process_group)
            out.div_(N)
        else:
            out = bucket
        self.comm_bytes[kind] += bucket.numel() * bucket.element_size()
        return list(out.split(sizes))

    def _all_gather(self, shards: list[Tensor], sizes: list[int], kind: str) -> list[Tensor]:
        """Concatenate every rank's shards; return the full flat tensors (padding included)."""
        N = self.world_size
        local = torch.cat(shards)
        if N > 1:
            full = local.new_empty(N * local.numel())
            _collective("all_gather")(full, local, group=self.process_group)
        else:
            full = local
        self.comm_bytes[kind] += full.numel() * full.element_size()
        return [t.reshape(-1) for t in full.view(N, -1).split(sizes, dim=1)]  # each [N·size] rank-major

    # -- the step ------------------------------------------------------------------------------------
    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        items = self._all_params()
        if not items:
            return loss
        sizes = [self.shard_numel(p) for _, p in items]
        grads = [(p.grad if p.grad is not None else torch.zeros_like(p)).float() for _, p in items]
        # 1. reduce-scatter the gradients (fp32)
        g_shards = self._reduce_scatter(grads, sizes, "reduce_scatter_grad")
        # the global gradient norm (for logging, and clipping now that the gradients are complete)
        sq = torch.stack([g.square().sum() for g in g_shards]).sum()
        if self.world_size > 1:
            dist.all_reduce(sq, group=self.process_group)
            self.comm_bytes["all_reduce_grad_norm"] += sq.numel() * sq.element_size()
        self.last_grad_norm = norm = float(sq.sqrt())
        if self.max_grad_norm is not None:  # the rule of torch.nn.utils.clip_grad_norm_
            coef = min(1.0, self.max_grad_norm / (norm + 1e-6))
            if coef < 1.0:
                for g in g_shards:
                    g.mul_(coef)
        # 2. local updates of the state shards: momentum (Muon) or AdamW (ZeRO-1 AdamW, done here)
        p_shards, muon_items = [], []
        for (group, p), g in zip(items, g_shards, strict=True):
            state = self.state[p]
            p_shard = self._local_slice(p.detach().reshape(-1), p).clone()
            if group["use_muon"]:
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(g)
                m_eff = _muon_momentum_(state["momentum_buffer"], g, group["momentum"], group["nesterov"])
                muon_items.append((group, p, p_shard, m_eff))
            else:
                _adamw_update_(p_shard, g.to(p_shard.dtype), state, group["lr"], group["betas"],
                               group["eps"], group["weight_decay"])
            p_shards.append(p_shard)
        # 3. all-gather the momentum-updated shards into full matrices
        if muon_items:
            dtype = self.gather_dtype or default_ns_dtype(muon_items[0][1])
            m_sizes = [self.shard_numel(p) for _, p, _, _ in muon_items]
            full = self._all_gather([m.to(dtype) for *_, m in muon_items], m_sizes, "all_gather_momentum")
            # 4. NS on the full matrices (same input bits as single-process Muon; same-shape batching)
            matrices = [m_full[: p.numel()].view(p.shape).to(default_ns_dtype(p))
                        for (_, p, _, _), m_full in zip(muon_items, full, strict=True)]
            updates = orthogonalize_by_shape(matrices, [g for g, *_ in muon_items])
            for (group, p, p_shard, _), update in zip(muon_items, updates, strict=True):
                # 5. the local slice of the update, with weight decay and RMS scale
                u_shard = self._local_slice(update.reshape(-1), p)
                _muon_apply_(p_shard, u_shard, group["lr"], group["weight_decay"],
                             muon_update_scale(p.shape, group["update_rms"]))
        # 6. all-gather the updated parameters
        full_params = self._all_gather(p_shards, sizes, "all_gather_params")
        for (_, p), flat in zip(items, full_params, strict=True):
            p.copy_(flat[: p.numel()].view_as(p))
        return loss

    # -- checkpoints: consolidate the sharded state into single-process Muon's format ---------------
    @torch.no_grad()
    def consolidated_state_dict(self) -> dict[str, Any]:
        """The full optimizer state as single-process :class:`Muon` would hold it (a collective: every
        rank must call it; all get the same dict). Loads into ``Muon`` or ``DistributedMuon``."""
        sd = super().state_dict()
        sd["state"] = {k: dict(v) for k, v in sd["state"].items()}  # do not touch the live shards
        items = self._all_params()
        for key in ("momentum_buffer", "exp_avg", "exp_avg_sq"):
            idx = [i for i, (_, p) in enumerate(items) if key in self.state[p]]
            if not idx:
                continue
            sizes = [self.shard_numel(items[i][1]) for i in idx]
            full = self._all_gather([self.state[items[i][1]][key] for i in idx], sizes, "checkpoint")
            for i, flat in zip(idx, full, strict=True):
                p = items[i][1]
                sd["state"][i][key] = flat[: p.numel()].view(p.shape).clone()
        return sd

    def state_dict(self) -> dict[str, Any]:
        """This rank's sharded state; with ``consolidate_on_save = True`` the consolidated one (then a
        collective — what ``kimi-mini train`` uses so checkpoints resume on any number of ranks)."""
        return self.consolidated_state_dict() if self.consolidate_on_save else super().state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Accepts this rank's own (sharded) state dict or a consolidated / single-process one, whose
        full-size buffers are sliced to this rank's shard."""
        items = self._all_params()
        sharded = {"state": {}, "param_groups": state_dict["param_groups"]}
        for k, st in state_dict["state"].items():
            p = items[int(k)][1]
            new = {}
            for key, val in st.items():
                if isinstance(val, Tensor) and val.dim() > 0 and val.shape == p.shape:
                    val = self._local_slice(val.reshape(-1), p).clone()
                new[key] = val
            sharded["state"][k] = new
        super().load_state_dict(sharded)



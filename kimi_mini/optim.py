"""Muon, as made to scale by Moonlight: *Muon is Scalable for LLM Training* (Liu et al., arXiv 2502.16982).

Muon orthogonalises the momentum of each hidden weight matrix before applying it. For a matrix
``W ∈ ℝ^{A×B}`` with gradient ``G_t``, momentum ``μ`` and learning rate ``η`` (Nesterov variant)::

    M_t = μ·M_{t-1} + G_t
    O_t = NS5(μ·M_t + G_t)                                   ≈ U·Vᵀ   for  μ·M_t + G_t = U·Σ·Vᵀ
    W_t = W_{t-1}·(1 − η·λ) − η · 0.2·√max(A, B) · O_t

``NS5`` is five steps of the quintic Newton–Schulz iteration, started from the Frobenius-normalised
matrix ``X_0 = G / (‖G‖_F + ε)`` (transposed first when ``A > B`` so that ``X·Xᵀ`` is the small Gram
matrix)::

    X_{k+1} = a·X_k + (b·X_k X_kᵀ + c·(X_k X_kᵀ)²)·X_k,      (a, b, c) = (3.4445, −4.7750, 2.0315)

On each singular value ``σ`` this is the odd polynomial ``φ(σ) = aσ + bσ³ + cσ⁵``; five steps send every
``σ ∈ (0, 1]`` that is not tiny into roughly [0.68, 1.2] and keep the singular vectors.

Moonlight's two changes over the original Muon are both here: **weight decay** (``λ``, decoupled, as in
AdamW) and the **RMS-matching scale** ``0.2·√max(A, B)``: a full-rank orthogonal ``A×B`` matrix has
entry-RMS ``1/√max(A, B)``, so the scaled update has RMS ≈ 0.2, AdamW's typical update RMS — which lets
Muon reuse AdamW's learning rate and weight decay unchanged. Parameters that are not hidden matrices
(embeddings, the LM head, RMSNorm gains, biases) keep AdamW with β = (0.9, 0.95), ε = 1e-8, the *same*
lr and weight decay: :func:`build_optimizer` makes that split.

:class:`DistributedMuon` is the paper's Algorithm 1 (ZeRO-1 on data-parallel ranks): reduce-scatter the
gradients, update the local momentum shard, all-gather the momentum-updated shards into the full
matrix, run NS, apply the local slice, all-gather the parameters. It produces the same update as
single-process :class:`Muon` on the same global batch.

Precision: NS runs in bf16 on CUDA (as the paper) and in fp32 on CPU (bf16 matmuls are slow there, and
fp32 keeps the CPU tests exact); pass ``dtype=`` to choose.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from kimi_mini.registry import Registry

__all__ = [
    "NS_COEFFICIENTS",
    "ns_polynomial",
    "newton_schulz_step",
    "newton_schulz",
    "svd_orthogonalize",
    "orthogonalize_by_shape",
    "muon_update_scale",
    "Muon",
    "DistributedMuon",
    "muon_param_groups",
    "register_optimizer",
    "build_optimizer",
    "OPTIMIZERS",
]

NS_COEFFICIENTS: tuple[float, float, float] = (3.4445, -4.7750, 2.0315)
NS_IMPLS = ("torch", "triton")
ADAMW_BETAS: tuple[float, float] = (0.9, 0.95)
ADAMW_EPS = 1e-8
UPDATE_RMS = 0.2  # AdamW's typical update RMS, the target Moonlight matches


# ----------------------------------------------------------------------------------------------------
# Newton–Schulz
# ----------------------------------------------------------------------------------------------------


def ns_polynomial(sigma: Tensor | float, coefficients: tuple[float, float, float] = NS_COEFFICIENTS):
    """What one NS step does to a singular value: ``φ(σ) = a·σ + b·σ³ + c·σ⁵``."""
    a, b, c = coefficients
    return a * sigma + b * sigma**3 + c * sigma**5


def newton_schulz_step(X: Tensor, coefficients: tuple[float, float, float] = NS_COEFFICIENTS) -> Tensor:
    """One quintic step ``X ← a·X + (b·A + c·A·A)·X`` with ``A = X·Xᵀ``. ``X``: ``[..., m, n]``, m ≤ n."""
    a, b, c = coefficients
    A = X @ X.mT  # [..., m, m], the Gram matrix (symmetric)
    B = b * A + c * (A @ A)  # [..., m, m]
    return a * X + B @ X  # [..., m, n]


def _default_ns_dtype(G: Tensor) -> torch.dtype:
    return torch.bfloat16 if G.is_cuda else torch.float32


def newton_schulz(G: Tensor, steps: int = 5, eps: float = 1e-7, *, impl: str = "torch",
                  dtype: torch.dtype | None = None,
                  coefficients: tuple[float, float, float] = NS_COEFFICIENTS) -> Tensor:
    """Approximate ``U·Vᵀ`` of ``G = U·Σ·Vᵀ`` with ``steps`` quintic Newton–Schulz steps.

    Args:
        G: ``[..., A, B]`` float tensor; leading dims are a batch of independent matrices.
        steps: number of NS steps (Moonlight: 5).
        eps: added to the Frobenius norm before normalising (so a zero matrix maps to zero).
        impl: ``"torch"`` (matmuls) or ``"triton"`` (:mod:`kimi_mini.kernels.newton_schulz`: the
            symmetric ``X·Xᵀ`` computed on upper tiles only and the fused ``b·A + c·A·A``).
        dtype: compute dtype; default bf16 on CUDA, fp32 on CPU.
    Returns:
        ``[..., A, B]`` in ``G.dtype``; its singular values lie in ≈[0.68, 1.2] (except where ``G`` has
        singular values far below its largest one, which five steps cannot lift all the way).
    """
    if not isinstance(G, Tensor) or G.dim() < 2 or not G.is_floating_point():
        desc = f"{G.dtype} {tuple(G.shape)}" if isinstance(G, Tensor) else type(G).__name__
        raise ValueError(f"G: expected a floating tensor [..., A, B] with at least 2 dims, got {desc}")
    if not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps: expected an int >= 0, got {steps!r}")
    if impl not in NS_IMPLS:
        raise ValueError(f"impl: expected one of {NS_IMPLS}, got {impl!r}")
    if eps < 0:
        raise ValueError(f"eps: expected >= 0, got {eps}")
    X = G.to(dtype or _default_ns_dtype(G))
    transposed = X.size(-2) > X.size(-1)
    if transposed:  # keep the Gram matrix X·Xᵀ the small one: min(A, B)²
        X = X.mT
    norm = torch.linalg.matrix_norm(X.float() if X.itemsize < 4 else X, keepdim=True)  # fp32+ sum of squares
    X = X / (norm.to(X.dtype) + eps)
    if impl == "triton":
        from kimi_mini.kernels.newton_schulz import newton_schulz_step_triton

        for _ in range(steps):
            X = newton_schulz_step_triton(X, coefficients)
    else:
        shape = X.shape
        X = X.reshape(-1, *shape[-2:])  # [batch, m, n]: baddbmm fuses the scalings into the matmuls
        a, b, c = coefficients
        for _ in range(steps):  # newton_schulz_step, fused: two fewer passes over memory per step
            A = X @ X.mT
            B = torch.baddbmm(A, A, A, beta=b, alpha=c)
            X = torch.baddbmm(X, B, X, beta=a)
        X = X.reshape(shape)
    if transposed:
        X = X.mT
    return X.to(G.dtype)


def svd_orthogonalize(G: Tensor) -> Tensor:
    """The exact orthogonal factor ``U·Vᵀ`` of ``G = U·Σ·Vᵀ`` (fp64 SVD): what NS approximates."""
    U, _, Vh = torch.linalg.svd(G.double(), full_matrices=False)
    return (U @ Vh).to(G.dtype)


def muon_update_scale(shape: Iterable[int], update_rms: float = UPDATE_RMS) -> float:
    """Moonlight's RMS-matching factor for a matrix of shape ``[..., A, B]``: ``0.2·√max(A, B)``.

    An orthogonal ``A×B`` matrix of full rank ``min(A, B)`` has ``‖O‖_F² = min(A, B)``, so its entry RMS is
    ``√(min/(A·B)) = 1/√max(A, B)``; multiplying by ``update_rms·√max(A, B)`` gives RMS ``update_rms``.
    """
    shape = tuple(shape)
    if len(shape) < 2:
        raise ValueError(f"shape: expected a matrix shape [..., A, B], got {shape}")
    return update_rms * math.sqrt(max(shape[-2], shape[-1]))


# ----------------------------------------------------------------------------------------------------
# Element-wise pieces shared by Muon and DistributedMuon (so a shard updates exactly like the whole)
# ----------------------------------------------------------------------------------------------------


def _muon_momentum_(buf: Tensor, grad: Tensor, momentum: float, nesterov: bool) -> Tensor:
    """``M ← μ·M + g`` in place; returns what NS orthogonalises (``μ·M + g`` with Nesterov, else ``M``)."""
    buf.mul_(momentum).add_(grad)
    return grad.add(buf, alpha=momentum) if nesterov else buf


def _muon_apply_(p: Tensor, update: Tensor, lr: float, weight_decay: float, scale: float) -> None:
    """``W ← W·(1 − η·λ) − η·scale·O``."""
    p.mul_(1 - lr * weight_decay)
    p.add_(update.to(p.dtype), alpha=-lr * scale)


def _adamw_update_(p: Tensor, grad: Tensor, state: dict, lr: float, betas: tuple[float, float], eps: float,
                   weight_decay: float) -> None:
    """AdamW (Loshchilov & Hutter), the same arithmetic as ``torch.optim.AdamW``, element-wise."""
    if not state:
        state["step"] = 0
        state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
    state["step"] += 1
    beta1, beta2 = betas
    m, v = state["exp_avg"], state["exp_avg_sq"]
    p.mul_(1 - lr * weight_decay)
    m.lerp_(grad, 1 - beta1)
    v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    bias1 = 1 - beta1 ** state["step"]
    bias2 = 1 - beta2 ** state["step"]
    denom = (v.sqrt() / math.sqrt(bias2)).add_(eps)
    p.addcdiv_(m, denom, value=-lr / bias1)


def orthogonalize_by_shape(matrices: list[Tensor], groups: list[dict]) -> list[Tensor]:
    """``newton_schulz`` of each matrix, with the matrices of equal shape (and NS settings) stacked
    into one batched call — a model's many same-shaped projections cost a few large matmuls instead of
    many small ones. Same result as one call per matrix, up to matmul rounding."""
    # NS(Gᵀ) = NS(G)ᵀ, so a tall matrix joins the bucket of its wide transpose (w2 [C, F] with w1 [F, C])
    wide = [m.mT if m.size(-2) > m.size(-1) else m for m in matrices]
    buckets: dict[tuple, list[int]] = {}
    for i, (m, g) in enumerate(zip(wide, groups, strict=True)):
        buckets.setdefault((tuple(m.shape), m.dtype, g["ns_steps"], g["impl"]), []).append(i)
    out: list[Tensor | None] = [None] * len(matrices)
    for (_, _, steps, impl), idx in buckets.items():
        stacked = torch.stack([wide[i] for i in idx]) if len(idx) > 1 else wide[idx[0]]
        result = newton_schulz(stacked, steps, impl=impl)
        for j, i in enumerate(idx):
            r = result[j] if len(idx) > 1 else result
            out[i] = r.mT if wide[i] is not matrices[i] else r
    return out


def _check_hparams(lr, momentum, weight_decay, ns_steps, update_rms, betas, eps, impl) -> None:
    if not (isinstance(lr, (int, float)) and lr >= 0):
        raise ValueError(f"lr: expected a float >= 0, got {lr!r}")
    if not 0 <= momentum < 1:
        raise ValueError(f"momentum: expected 0 <= momentum < 1, got {momentum}")
    if weight_decay < 0:
        raise ValueError(f"weight_decay: expected >= 0, got {weight_decay}")
    if not isinstance(ns_steps, int) or ns_steps < 1:
        raise ValueError(f"ns_steps: expected an int >= 1, got {ns_steps!r}")
    if update_rms <= 0:
        raise ValueError(f"update_rms: expected > 0, got {update_rms}")
    if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
        raise ValueError(f"betas: expected two values in [0, 1), got {betas}")
    if eps < 0:
        raise ValueError(f"eps: expected >= 0, got {eps}")
    if impl not in NS_IMPLS:
        raise ValueError(f"impl: expected one of {NS_IMPLS}, got {impl!r}")


def _check_muon_group(group: dict) -> None:
    if not group.get("use_muon", True):
        return
    for i, p in enumerate(group["params"]):
        if p.dim() not in (2, 3):
            raise ValueError(
                f"params: Muon updates weight matrices [A, B] (or a stack [E, A, B] of them, e.g. MoE "
                f"experts); parameter {i} of a Muon group has shape {tuple(p.shape)}. Put it in an AdamW "
                f"group ({{'params': [...], 'use_muon': False}}) — build_optimizer does this split.")


# ----------------------------------------------------------------------------------------------------
# Muon (single process)
# ----------------------------------------------------------------------------------------------------


class Muon(torch.optim.Optimizer):
    """Moonlight's Muon: ``W ← W·(1 − η·λ) − η·0.2·√max(A, B)·NS5(μ·M + g)`` for each matrix.

    ``params`` are weight matrices ``[A, B]``; a 3-D parameter ``[E, A, B]`` is treated as ``E``
    independent matrices (each orthogonalised on its own, scale from ``A, B``); anything else raises
    ``ValueError``. Param groups may carry ``use_muon=False``: those parameters get AdamW with
    ``betas``/``eps`` and the group's (same) lr and weight decay — this is how :func:`build_optimizer`
    hands embeddings, the LM head and norm gains to AdamW inside one optimizer.

    State per Muon parameter: ``momentum_buffer`` (one buffer, vs AdamW's two).
    """

    def __init__(self, params, lr: float, momentum: float = 0.95, nesterov: bool = True,
                 weight_decay: float = 0.1, ns_steps: int = 5, *, update_rms: float = UPDATE_RMS,
                 betas: tuple[float, float] = ADAMW_BETAS, eps: float = ADAMW_EPS, impl: str = "torch"):
        _check_hparams(lr, momentum, weight_decay, ns_steps, update_rms, betas, eps, impl)
        defaults = dict(lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay,
                        ns_steps=ns_steps, update_rms=update_rms, betas=tuple(betas), eps=eps, impl=impl,
                        use_muon=True)
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict) -> None:
        super().add_param_group(param_group)
        _check_muon_group(self.param_groups[-1])

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        todo = []  # (group, param, momentum-updated matrix) for Muon
        for group in self.param_groups:
            lr, wd = group["lr"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not group["use_muon"]:
                    _adamw_update_(p, p.grad, state, lr, group["betas"], group["eps"], wd)
                    continue
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                m_eff = _muon_momentum_(state["momentum_buffer"], p.grad, group["momentum"],
                                        group["nesterov"])
                todo.append((group, p, m_eff))
        updates = orthogonalize_by_shape([m for *_, m in todo], [g for g, *_ in todo])
        for (group, p, _), update in zip(todo, updates, strict=True):
            _muon_apply_(p, update, group["lr"], group["weight_decay"],
                         muon_update_scale(p.shape, group["update_rms"]))
        return loss


# ----------------------------------------------------------------------------------------------------
# Distributed Muon (ZeRO-1, Algorithm 1)
# ----------------------------------------------------------------------------------------------------


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
        if max_grad_norm is not None and max_grad_norm <= 0:
            raise ValueError(f"max_grad_norm: expected > 0 or None, got {max_grad_norm}")
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
            dtype = self.gather_dtype or _default_ns_dtype(muon_items[0][1])
            m_sizes = [self.shard_numel(p) for _, p, _, _ in muon_items]
            full = self._all_gather([m.to(dtype) for *_, m in muon_items], m_sizes, "all_gather_momentum")
            # 4. NS on the full matrices (same input bits as single-process Muon; same-shape batching)
            matrices = [m_full[: p.numel()].view(p.shape).to(_default_ns_dtype(p))
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


# ----------------------------------------------------------------------------------------------------
# Which parameters go where, and a registry of named optimizers
# ----------------------------------------------------------------------------------------------------

NOT_MUON_NAMES = ("tok_emb", "lm_head")


def muon_param_groups(model: nn.Module, exclude: Iterable[str] = NOT_MUON_NAMES
                      ) -> tuple[list[tuple[str, Tensor]], list[tuple[str, Tensor]]]:
    """Split ``model``'s trainable parameters into ``(muon, adamw)`` lists of ``(name, param)``.

    Muon: hidden weight matrices (2-D) and stacks of them (3-D, e.g. MoE experts ``[E, d, h]``, which
    Muon orthogonalises expert by expert). AdamW: everything else — parameters of ``nn.Embedding``
    modules, any parameter whose name starts with one of ``exclude`` (the token embedding ``tok_emb``
    and the LM head ``lm_head``), norm gains, biases and other 1-D parameters. Shared (tied) parameters
    are listed once.
    """
    exclude = tuple(exclude)
    embedding_params = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    muon, adamw, seen = [], [], set()
    for name, p in model.named_parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        top = name.split(".")[0]
        is_io = id(p) in embedding_params or top in exclude or name.startswith(exclude)
        (muon if p.dim() in (2, 3) and not is_io else adamw).append((name, p))
    return muon, adamw


OptimizerBuilder = Callable[..., torch.optim.Optimizer]
OPTIMIZERS: Registry[OptimizerBuilder] = Registry("optimizer")


def register_optimizer(name: str) -> Callable[[OptimizerBuilder], OptimizerBuilder]:
    """Decorator: ``@register_optimizer("muonclip")`` on ``fn(model, lr, weight_decay, **kw) -> Optimizer``
    makes it available as ``build_optimizer(model, "muonclip", ...)``."""
    return OPTIMIZERS.register(name)


def build_optimizer(model: nn.Module, name: str, lr: float, weight_decay: float = 0.1,
                    **kwargs: Any) -> torch.optim.Optimizer:
    """The optimizer called ``name`` for ``model``: ``"adamw"``, ``"muon"`` (and later ``"muonclip"``).

    Keyword arguments go to the builder (e.g. ``momentum``, ``ns_steps``, ``impl``, ``betas``;
    ``distributed=True`` gives the ZeRO-1 :class:`DistributedMuon` for ``"muon"`` and ``"adamw"``).
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"name: unknown optimizer {name!r}; expected one of {sorted(OPTIMIZERS)}")
    return OPTIMIZERS[name](model, lr=lr, weight_decay=weight_decay, **kwargs)


def _groups(muon, adamw) -> list[dict]:
    groups = []
    if muon:
        groups.append({"params": [p for _, p in muon], "names": [n for n, _ in muon], "use_muon": True})
    if adamw:
        groups.append({"params": [p for _, p in adamw], "names": [n for n, _ in adamw], "use_muon": False})
    return groups


@register_optimizer("muon")
def _build_muon(model: nn.Module, lr: float, weight_decay: float, *, distributed: bool = False,
                **kwargs: Any) -> torch.optim.Optimizer:
    """Hidden matrices → Muon; embeddings, LM head, norm gains, biases → AdamW (β=(0.9, 0.95), ε=1e-8),
    same lr and weight decay. ``distributed=True``: :class:`DistributedMuon` (ZeRO-1)."""
    muon, adamw = muon_param_groups(model)
    cls = DistributedMuon if distributed else Muon
    return cls(_groups(muon, adamw), lr=lr, weight_decay=weight_decay, **kwargs)


@register_optimizer("adamw")
def _build_adamw(model: nn.Module, lr: float, weight_decay: float, *, distributed: bool = False,
                 betas: tuple[float, float] = ADAMW_BETAS, eps: float = ADAMW_EPS,
                 **kwargs: Any) -> torch.optim.Optimizer:
    """AdamW on every parameter (β=(0.9, 0.95), ε=1e-8), weight decay on all of them as Moonlight does.
    ``distributed=True``: ZeRO-1 AdamW (:class:`DistributedMuon` with AdamW groups only)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if distributed:
        return DistributedMuon([{"params": params, "use_muon": False}], lr=lr, weight_decay=weight_decay,
                               betas=betas, eps=eps, **kwargs)
    return torch.optim.AdamW(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, **kwargs)


# ----------------------------------------------------------------------------------------------------
# Exercises (notebook 02)
# ----------------------------------------------------------------------------------------------------


def _check_newton_schulz_step(candidate) -> None:
    g = torch.Generator().manual_seed(0)
    for shape in [(3, 5), (8, 20), (2, 4, 9)]:
        X = torch.randn(*shape, generator=g, dtype=torch.float64)
        X = X / torch.linalg.matrix_norm(X, keepdim=True)
        want = newton_schulz_step(X)
        got = candidate(X.clone())
        assert isinstance(got, Tensor) and got.shape == want.shape, (
            f"for X of shape {shape} expected a tensor of shape {tuple(want.shape)}, got "
            f"{getattr(got, 'shape', type(got).__name__)}")
        err = float((got - want).abs().max())
        assert err < 1e-9, (f"for X of shape {shape} the result is off by {err:.2e}: one step is "
                            f"a·X + (b·A + c·A·A)·X with A = X·Xᵀ (batched: use X.mT, not X.T) and "
                            f"(a, b, c) = {NS_COEFFICIENTS}")


def _wrong_newton_schulz_step(X: Tensor) -> Tensor:
    a, b, c = NS_COEFFICIENTS
    A = X @ X.mT
    return (b * A + c * A @ A) @ X  # forgets the linear term a·X


def _check_muon_update_scale(candidate) -> None:
    for shape in [(64, 64), (128, 512), (512, 128), (4, 96, 352)]:
        want = muon_update_scale(shape)
        got = candidate(shape)
        assert abs(float(got) - want) < 1e-9 * want, (
            f"for a matrix of shape {shape} expected {want:.6f}, got {got}: the orthogonalised update has "
            f"entry-RMS 1/sqrt(max(A, B)) and must end up with RMS 0.2 (use the last two dims)")


def _wrong_muon_update_scale(shape) -> float:
    A, B = shape[-2], shape[-1]
    return math.sqrt(max(1.0, A / B))  # Keller Jordan's original scale: RMS not matched to AdamW


from kimi_mini.exercises import register_exercise  # noqa: E402

register_exercise("newton_schulz_step", solution=newton_schulz_step, wrong=_wrong_newton_schulz_step,
                  checker=_check_newton_schulz_step,
                  description="one quintic Newton-Schulz step X <- aX + (bA + cA^2)X, A = X X^T")
register_exercise("muon_update_scale", solution=muon_update_scale, wrong=_wrong_muon_update_scale,
                  checker=_check_muon_update_scale,
                  description="Moonlight's RMS-matching factor 0.2*sqrt(max(A, B))")

from kimi_mini.qk_clip import max_logits, qk_clip_  # noqa: E402,F401

"""Fusion operators, fusion heads, the classifier around them, its training helper and the SVM baseline.

Papers: *Multimodal Polynomial Fusion for Detecting Driver Distraction* (Du et al., INTERSPEECH 2018,
arXiv 1810.10565), building on *Tensor Fusion Network* (Zadeh et al., EMNLP 2017, arXiv 1707.07250) and
*Efficient Low-rank Multimodal Fusion* (Liu et al., ACL 2018, arXiv 1806.00064). For M modality
embeddings h_m ``[N, d_m]`` and z_m = [h_m; 1]:

    early        y = W [h_1; …; h_M] + b
    late         logits = 1/M Σ_m head_m(h_m)
    tensor (TFN) y = W vec(z_1 ⊗ z_2 ⊗ … ⊗ z_M) + b              (Π_m (d_m + 1) inputs per output)
    low-rank     y_k = Σ_{r=1..R} Π_m ⟨W_m[r, :, k], z_m⟩ + b_k   (TFN's W as a rank-R CP decomposition)
    polynomial   z = [h_1; …; h_M; 1],  y_k = Σ_{r=1..R} Π_{p=1..P} ⟨factors[p, r, :, k], z⟩

The polynomial is the paper's order-P fusion in factorised form: expanding the product gives every
monomial of z up to degree P (the constant 1 inside z lets each factor pick it), cross- and intra-modal.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kimi_mini.checks import check_int, check_number, check_tensor, describe
from kimi_mini.registry import Registry
from kimi_mini.train import run_steps

__all__ = ["tensor_fusion", "polynomial_fusion", "EarlyFusion", "TensorFusion", "LowRankFusion",
           "PolynomialFusion", "LateFusion", "FUSIONS", "FusionClassifier", "fit_fusion", "accuracy", "svm_baseline",
           "n_params"]

FUSIONS: Registry[type] = Registry("fusion")


def _append_one(h: Tensor) -> Tensor:
    return torch.cat([h, h.new_ones(h.shape[0], 1)], dim=1)


def tensor_fusion(hs: Sequence[Tensor]) -> Tensor:
    """TFN's fused vector: hs, a list of ``[N, d_m]`` → ``[N, Π_m (d_m + 1)]``, the flattened outer product
    of the z_m = [h_m; 1] (first modality slowest). Contains 1, every h_m entry, and every cross product."""
    if isinstance(hs, (str, bytes, Tensor)) or not isinstance(hs, Sequence) or \
            any(not isinstance(h, Tensor) or not h.is_floating_point() for h in hs):
        raise ValueError(f"hs: expected a list of floating-point [N, d_m] tensors, got {describe(hs)}")
    if len(hs) < 1 or any(h.dim() != 2 or h.shape[0] != hs[0].shape[0] for h in hs):
        raise ValueError(f"hs: expected a non-empty list of [N, d_m] tensors with one N, got "
                         f"{[tuple(h.shape) for h in hs]}")
    out = _append_one(hs[0])
    for h in hs[1:]:
        z = _append_one(h)
        out = (out[:, :, None] * z[:, None, :]).reshape(out.shape[0], out.shape[1] * z.shape[1])  # -1 fails at N = 0
    return out


def _check_poly(z: Tensor, factors: Tensor) -> None:
    check_tensor("z", z, kind="float")
    check_tensor("factors", factors, kind="float")
    if factors.dtype != z.dtype or factors.device != z.device:
        raise ValueError(f"factors: expected z's dtype and device ({z.dtype}, {z.device}), got {describe(factors)}")
    if z.dim() != 2:
        raise ValueError(f"z: expected [N, D], got shape {tuple(z.shape)}")
    if factors.dim() != 4:
        raise ValueError(f"factors: expected [P, R, {z.shape[1]}, K], got shape {tuple(factors.shape)}")
    if factors.shape[2] != z.shape[1]:
        raise ValueError(f"z: expected [N, {factors.shape[2]}] (the D of factors {tuple(factors.shape)}), "
                         f"got shape {tuple(z.shape)}")
    if min(factors.shape) < 1:
        raise ValueError(f"factors: expected order P >= 1, rank R >= 1 and K >= 1, got shape {tuple(factors.shape)}")


def polynomial_fusion(z: Tensor, factors: Tensor, impl: str = "torch") -> Tensor:
    """y ``[N, K]`` with y_{n,k} = Σ_r Π_p ⟨factors[p, r, :, k], z_n⟩ for z ``[N, D]`` (modalities and the
    constant 1 concatenated), factors ``[P, R, D, K]``.

    ``impl="naive"`` builds the explicit order-P weight tensor W[k, i_1, …, i_P] = Σ_r Π_p factors[p, r, i_p, k]
    and contracts it with z ⊗ … ⊗ z (D^P numbers per output: tests only). ``"torch"`` is the factorised form
    (materialises the ``[N, P, R, K]`` projections). ``"triton"`` is the fused kernel of
    :mod:`kimi_mini.kernels.fusion` (no ``[N, P, R, K]`` buffer; forward and backward)."""
    _check_poly(z, factors)
    if impl not in ("naive", "torch", "triton"):
        raise ValueError(f"impl: expected 'naive', 'torch' or 'triton', got {impl!r}")
    if z.shape[0] == 0:  # empty in, empty out (README), whatever the impl: nothing to launch
        impl = "torch"
    if impl == "naive":
        P, R, D, K = factors.shape
        if D ** P > 2 ** 22:
            raise ValueError(f"z: the naive order-{P} tensor would hold {D}^{P} numbers per output; use impl='torch'")
        w = factors[0]  # [R, D, K] → grows to [R, D^p, K]
        zz = z  # [N, D^p]
        for p in range(1, P):
            w = (w[:, :, None, :] * factors[p][:, None, :, :]).reshape(R, -1, K)
            zz = (zz[:, :, None] * z[:, None, :]).reshape(z.shape[0], -1)
        return zz @ w.sum(0)  # [N, D^P] @ [D^P, K]
    if impl == "torch":
        proj = torch.einsum("nd,prdk->nprk", z, factors)  # [N, P, R, K]
        return proj.prod(dim=1).sum(dim=1)
    if impl == "triton":
        from kimi_mini.kernels.fusion import polynomial_fusion as polynomial_fusion_triton

        return polynomial_fusion_triton(z.contiguous(), factors.contiguous())  # the kernel reads dense rows
    raise ValueError(f"impl: expected 'naive', 'torch' or 'triton', got {impl!r}")


def _check_dims(dims: Sequence[int], out_features: int) -> None:
    if len(dims) < 1 or any(not isinstance(d, int) or d < 1 for d in dims):
        raise ValueError(f"dims: expected a non-empty list of positive modality widths, got {list(dims)!r}")
    if not isinstance(out_features, int) or out_features < 1:
        raise ValueError(f"out_features: expected a positive integer, got {out_features!r}")


class _Fusion(nn.Module):
    """Base: ``forward(hs)`` with hs a list of ``[N, d_m]`` → ``[N, out_features]``."""

    def __init__(self, dims: Sequence[int], out_features: int):
        super().__init__()
        _check_dims(dims, out_features)
        self.dims, self.out_features = tuple(dims), out_features

    def _check(self, hs: Sequence[Tensor]) -> None:
        if len(hs) != len(self.dims):
            raise ValueError(f"hs: expected {len(self.dims)} modalities, got {len(hs)}")
        widths = tuple(h.shape[-1] for h in hs)
        if widths != self.dims:
            raise ValueError(f"hs: expected widths {self.dims}, got {widths}")


@FUSIONS.register("early")
class EarlyFusion(_Fusion):
    """Concatenate, then one linear map: y = W [h_1; …; h_M] + b."""

    def __init__(self, dims: Sequence[int], out_features: int, **_):
        super().__init__(dims, out_features)
        self.linear = nn.Linear(sum(dims), out_features)

    def forward(self, hs: Sequence[Tensor]) -> Tensor:
        self._check(hs)
        return self.linear(torch.cat(list(hs), dim=1))


@FUSIONS.register("tfn")
class TensorFusion(_Fusion):
    """TFN: y = W vec(z_1 ⊗ … ⊗ z_M) + b with z_m = [h_m; 1]; W has Π_m (d_m + 1) · out_features entries."""

    def __init__(self, dims: Sequence[int], out_features: int, **_):
        super().__init__(dims, out_features)
        self.linear = nn.Linear(math.prod(d + 1 for d in dims), out_features)

    def forward(self, hs: Sequence[Tensor]) -> Tensor:
        self._check(hs)
        return self.linear(tensor_fusion(hs))


@FUSIONS.register("lmf")
class LowRankFusion(_Fusion):
    """LMF: y_k = Σ_r Π_m ⟨W_m[r, :, k], z_m⟩ + b_k — TFN whose weight is Σ_r W_1[r] ⊗ … ⊗ W_M[r]."""

    def __init__(self, dims: Sequence[int], out_features: int, rank: int = 4, **_):
        super().__init__(dims, out_features)
        if not isinstance(rank, int) or rank < 1:
            raise ValueError(f"rank: expected an integer >= 1, got {rank!r}")
        self.rank = rank
        # each projection ~ unit scale; the product of M of them summed over R ranks ~ unit scale too
        std = [rank ** (-0.5 / len(dims)) / math.sqrt(d + 1) for d in dims]
        self.factors = nn.ParameterList([nn.Parameter(torch.randn(rank, d + 1, out_features) * s)
                                         for d, s in zip(dims, std, strict=True)])
        self.bias = nn.Parameter(torch.zeros(out_features))

    def forward(self, hs: Sequence[Tensor]) -> Tensor:
        self._check(hs)
        prod = None
        for h, w in zip(hs, self.factors, strict=True):
            proj = torch.einsum("nd,rdk->nrk", _append_one(h), w)  # [N, R, K]
            prod = proj if prod is None else prod * proj
        return prod.sum(dim=1) + self.bias


@FUSIONS.register("polynomial")
class PolynomialFusion(_Fusion):
    """The paper's order-P polynomial fusion of z = [h_1; …; h_M; 1] in rank-R factorised form."""

    def __init__(self, dims: Sequence[int], out_features: int, rank: int = 4, order: int = 2,
                 impl: str = "torch", **_):
        super().__init__(dims, out_features)
        if not isinstance(rank, int) or rank < 1:
            raise ValueError(f"rank: expected an integer >= 1, got {rank!r}")
        if not isinstance(order, int) or order < 1:
            raise ValueError(f"order: expected an integer >= 1, got {order!r}")
        self.rank, self.order, self.impl = rank, order, impl
        D = sum(dims) + 1
        std = rank ** (-0.5 / order) / math.sqrt(D)
        self.factors = nn.Parameter(torch.randn(order, rank, D, out_features) * std)

    def forward(self, hs: Sequence[Tensor]) -> Tensor:
        self._check(hs)
        return polynomial_fusion(_append_one(torch.cat(list(hs), dim=1)), self.factors, self.impl)


@FUSIONS.register("late")
class LateFusion(_Fusion):
    """One small classifier per modality, outputs averaged: y = 1/M Σ_m W2_m relu(W1_m h_m + b1_m) + b2_m.
    Adds per-modality evidence, so it cannot represent any cross-modal product."""

    def __init__(self, dims: Sequence[int], out_features: int, hidden: int = 16, **_):
        super().__init__(dims, out_features)
        self.heads = nn.ModuleList([nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, out_features))
                                    for d in dims])

    def forward(self, hs: Sequence[Tensor]) -> Tensor:
        self._check(hs)
        return torch.stack([head(h) for head, h in zip(self.heads, hs, strict=True)]).mean(0)


class FusionClassifier(nn.Module):
    """Per-modality encoders → fusion → ReLU → linear classifier.

    ``in_dims``: input width of each modality; ``fusion``: one of :data:`FUSIONS` (``"early"``, ``"late"``,
    ``"tfn"``, ``"lmf"``, ``"polynomial"``); each encoder is Linear(in_m, ``hidden``) + ReLU; the fusion maps
    the encodings to ``fused`` features. ``"late"`` (:class:`LateFusion`) instead ends each modality in its
    own logits (hidden width ``fused``) and averages them.
    ``forward(xs)``: a list of ``[N, in_m]`` → ``[N, n_classes]``.
    """

    def __init__(self, in_dims: Sequence[int], n_classes: int, fusion: str = "early", hidden: int = 8,
                 fused: int = 16, rank: int = 4, order: int = 2, impl: str = "torch"):
        super().__init__()
        if isinstance(in_dims, (str, bytes)) or not isinstance(in_dims, Sequence):
            raise ValueError(f"in_dims: expected a list of modality widths, got {in_dims!r}")
        if len(in_dims) < 1 or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in in_dims):
            raise ValueError(f"in_dims: expected a non-empty list of positive modality widths, got {list(in_dims)!r}")
        check_int("n_classes", n_classes, 2)
        _check_dims(in_dims, n_classes)
        if fusion not in FUSIONS:
            raise ValueError(f"fusion: expected one of {sorted(FUSIONS)}, got {fusion!r}")
        self.n_classes = n_classes
        FUSIONS.get(fusion)  # ValueError listing the valid names
        self.fusion_name, self.in_dims = fusion, tuple(in_dims)
        self.encoders = nn.ModuleList([nn.Sequential(nn.Linear(d, hidden), nn.ReLU()) for d in in_dims])
        dims = [hidden] * len(in_dims)
        if fusion == "late":  # the heads already end in logits
            self.fusion = LateFusion(dims, n_classes, hidden=fused)
            self.classifier = None
        else:
            self.fusion = FUSIONS.get(fusion)(dims, fused, rank=rank, order=order, impl=impl)
            self.classifier = nn.Linear(fused, n_classes)

    def forward(self, xs: Sequence[Tensor]) -> Tensor:
        if len(xs) != len(self.in_dims):
            raise ValueError(f"xs: expected {len(self.in_dims)} modalities, got {len(xs)}")
        if any(not isinstance(x, Tensor) or x.dim() != 2 or x.shape[1] != d
               for x, d in zip(xs, self.in_dims, strict=True)) or len({x.shape[0] for x in xs}) != 1:
            raise ValueError(f"xs: expected [N, in_m] tensors with widths {list(self.in_dims)} and one N, got "
                             f"{[describe(x) for x in xs]}")
        fused = self.fusion([enc(x) for enc, x in zip(self.encoders, xs, strict=True)])
        return fused if self.classifier is None else self.classifier(F.relu(fused))


def n_params(module: nn.Module) -> int:
    if not isinstance(module, nn.Module):
        raise ValueError(f"module: expected an nn.Module, got {type(module).__name__}")
    return sum(p.numel() for p in module.parameters())


def _as_tensors(xs, y=None, model=None, names=("xs", "y")):
    """``xs`` (a list of ``[N, in_m]`` arrays) as float32 tensors and ``y`` (``[N]`` integer class ids) as int64,
    checked against each other and against ``model`` — never a float label truncated to a class id. ``names``: the
    caller's argument names for the messages."""
    xn, yn = names
    if isinstance(xs, (str, bytes, np.ndarray, Tensor)) or not isinstance(xs, Sequence) or not xs:
        raise ValueError(f"{xn}: expected a non-empty list of [N, in_m] arrays (one per modality), got {describe(xs)}")
    try:
        xs = [torch.as_tensor(np.asarray(x, dtype=np.float32)) for x in xs]
    except (TypeError, ValueError):
        raise ValueError(f"{xn}: expected numeric [N, in_m] arrays") from None
    if any(x.dim() != 2 for x in xs) or len({x.shape[0] for x in xs}) != 1:
        raise ValueError(f"{xn}: expected [N, in_m] arrays with one N, got shapes {[tuple(x.shape) for x in xs]}")
    if model is not None and (len(xs) != len(model.in_dims) or
                              any(x.shape[1] != d for x, d in zip(xs, model.in_dims, strict=False))):
        raise ValueError(f"{xn}: expected widths {list(model.in_dims)}, got {[x.shape[1] for x in xs]}")
    if y is None:
        return xs
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != xs[0].shape[0]:
        raise ValueError(f"{yn}: expected [N={xs[0].shape[0]}] class ids, got shape {y.shape}")
    if y.dtype.kind not in "iub" and not (y.dtype.kind == "f" and np.all(np.isfinite(y)) and np.all(y == np.round(y))):
        raise ValueError(f"{yn}: expected integer class ids, got dtype {y.dtype} (values like {y[:3].tolist()})")
    y = torch.as_tensor(y.astype(np.int64))
    if model is not None and len(y) and (int(y.min()) < 0 or int(y.max()) >= model.n_classes):
        raise ValueError(f"{yn}: expected class ids in [0, {model.n_classes}), got [{int(y.min())}, {int(y.max())}]")
    return xs, y


def fit_fusion(model: FusionClassifier, xs: Sequence, y, *, steps: int = 200, lr: float = 1e-2,
               weight_decay: float = 1e-4, seed: int = 0, val: tuple | None = None, eval_every: int = 10,
               progress: bool = False) -> list[dict]:
    """Full-batch AdamW on cross-entropy through :func:`kimi_mini.train.run_steps`; xs a list of
    ``[N, in_m]`` arrays, y ``[N]`` class ids. With ``val=(xs_val, y_val)`` the validation accuracy is
    measured every ``eval_every`` steps and the model ends with the weights of its best evaluation (early
    stopping: the same rule for every fusion). Returns the per-step records (``loss``, ``val_acc``)."""
    if not isinstance(model, FusionClassifier):
        raise ValueError(f"model: expected a FusionClassifier, got {type(model).__name__}")
    check_int("steps", steps, 1, 10**7)
    check_number("lr", lr, 0, lo_open=True)
    check_number("weight_decay", weight_decay, 0)
    check_int("eval_every", eval_every, 1)
    xs, y = _as_tensors(xs, y, model)
    if len(y) == 0:
        raise ValueError("y: expected at least one training row, got 0")
    if val is not None:
        if not isinstance(val, tuple) or len(val) != 2:
            raise ValueError(f"val: expected (xs_val, y_val), got {describe(val)}")
        val = _as_tensors(*val, model)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    best = {"acc": -1.0, "state": None}

    def step_fn(step: int, gen: torch.Generator) -> dict:
        model.train()
        loss = F.cross_entropy(model(xs), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return {"loss": loss.item()}

    def eval_fn() -> dict:
        acc = accuracy(model, *val)
        if acc > best["acc"]:
            best.update(acc=acc, state={k: v.clone() for k, v in model.state_dict().items()})
        return {"val_acc": acc}

    history = run_steps(step_fn, steps, seed=seed, progress=progress, desc=f"fit {model.fusion_name}",
                        eval_fn=eval_fn if val is not None else None, eval_every=eval_every)
    if best["state"] is not None:
        model.load_state_dict(best["state"])
    return history


@torch.no_grad()
def accuracy(model: FusionClassifier, xs: Sequence, y) -> float:
    """Fraction of rows whose arg-max logit is the label."""
    xs, y = _as_tensors(xs, y, model)
    if len(y) == 0:
        raise ValueError("y: expected at least one row to score, got 0")
    model.eval()
    return float((model(xs).argmax(-1) == y).float().mean())


def svm_baseline(xs_train: Sequence, y_train, xs_test: Sequence, y_test, C: float = 1.0) -> float:
    """The paper's baseline: an RBF support-vector machine (scikit-learn ``SVC``) on the concatenated
    (already standardised) features of all modalities. Returns test accuracy."""
    from sklearn.svm import SVC

    check_number("C", C, 0, lo_open=True)
    xs_train, y_train = _as_tensors(xs_train, y_train, names=("xs_train", "y_train"))
    xs_test, y_test = _as_tensors(xs_test, y_test, names=("xs_test", "y_test"))
    if [x.shape[1] for x in xs_train] != [x.shape[1] for x in xs_test]:
        raise ValueError(f"xs_test: expected widths {[x.shape[1] for x in xs_train]} like xs_train, got "
                         f"{[x.shape[1] for x in xs_test]}")
    xs_train, xs_test = [x.numpy() for x in xs_train], [x.numpy() for x in xs_test]
    y_train, y_test = y_train.numpy(), y_test.numpy()
    svm = SVC(C=C, kernel="rbf", gamma="scale").fit(np.concatenate(xs_train, axis=1), np.asarray(y_train))
    return float((svm.predict(np.concatenate(xs_test, axis=1)) == np.asarray(y_test)).mean())

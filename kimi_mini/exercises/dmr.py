"""Exercises of notebook 09 (DMR): CMD with true powers, the straight-through selection, and a
"predict, then run" question about where RNP's rationale lands."""

from __future__ import annotations

import torch
from torch import Tensor

from kimi_mini.exercises import register_exercise
from kimi_mini.rationale.cmd import cmd, cmd_released
from kimi_mini.rationale.models import straight_through_select

# --- 1. warm-up: CMD with true powers ---------------------------------------------------------------


def cmd_true_powers(x: Tensor, y: Tensor, K: int = 5) -> Tensor:
    """Exercise solution: CMD_K(x, y) = ‖E x − E y‖ + Σ_{k=2..K} ‖c_k(x) − c_k(y)‖ (:func:`cmd`)."""
    return cmd(x, y, K)


def _check_cmd(candidate) -> None:
    g = torch.Generator().manual_seed(5)
    cases = [(torch.randn(30, 4, generator=g), torch.randn(25, 4, generator=g) * 2 + 1, 5),
             (torch.randn(50, 3, generator=g), torch.randn(50, 3, generator=g) * 0.5, 3),
             (torch.rand(40, 2, generator=g), torch.rand(40, 2, generator=g) ** 3, 4),
             (torch.randn(20, 5, generator=g), torch.randn(20, 5, generator=g), 1)]
    for x, y, K in cases:
        got = float(candidate(x, y, K))
        want = float(cmd(x, y, K))
        if abs(got - float(cmd_released(x, y, K))) < 1e-4 and K > 1 and abs(got - want) > 1e-4:
            raise AssertionError("your moment terms are ~0: that is the released code's x*k typo; raise the "
                                 "centred values to the k-th power (x_c ** k)")
        assert abs(got - want) <= 1e-4 * max(1.0, abs(want)), (
            f"K={K}, x {tuple(x.shape)}, y {tuple(y.shape)}: expected {want:.5f}, got {got:.5f} (L2 norm of the "
            "difference of the means, plus the L2 norms of the differences of c_k = mean((x - mean x)^k), "
            "k = 2..K; per-feature moments, norm across features)")
    x = torch.randn(10, 3, generator=g)
    assert abs(float(candidate(x, x.clone(), 5))) < 1e-6, "CMD of a sample with itself must be 0"


def _wrong_cmd(x: Tensor, y: Tensor, K: int = 5) -> Tensor:
    return cmd_released(x, y, K)


register_exercise("dmr_cmd", solution=cmd_true_powers, wrong=_wrong_cmd, checker=_check_cmd,
                  description="central moment discrepancy with true powers (not the released x*k)")


# --- 2. the straight-through estimator --------------------------------------------------------------


def straight_through(logits: Tensor) -> Tensor:
    """Exercise solution: ``logits [..., 2]`` → z in {0, 1} forward, ∂softmax(logits)[..., 1] backward."""
    return straight_through_select(logits)


def _check_straight_through(candidate) -> None:
    g = torch.Generator().manual_seed(2)
    for shape in ((5, 2), (3, 4, 2)):
        logits = (torch.randn(shape, generator=g) * 2).requires_grad_()
        z = candidate(logits)
        want = logits.detach().argmax(-1).float()
        assert torch.is_tensor(z) and z.shape == want.shape, (
            f"expected z of shape {tuple(want.shape)} (one keep/drop value per token), got "
            f"{tuple(z.shape) if torch.is_tensor(z) else type(z).__name__}")
        assert torch.equal(z.detach().float(), want), (
            f"the forward value must be hard: 1.0 where the keep logit wins, 0.0 elsewhere — got "
            f"{z.detach().flatten()[:6].tolist()}")
        assert z.requires_grad, "z carries no gradient: the generator could never learn (argmax alone is flat)"
        w = torch.randn(want.shape, generator=g)
        (grad,) = torch.autograd.grad((z * w).sum(), logits)
        p = logits.detach().softmax(-1)[..., 1]
        expect = torch.stack([-p * (1 - p) * w, p * (1 - p) * w], -1)
        assert torch.allclose(grad, expect, atol=1e-5), (
            "the backward pass must be the softmax's: dz/dlogits = d softmax(logits)[..., 1] / dlogits")


def _wrong_straight_through(logits: Tensor) -> Tensor:
    return logits.softmax(-1)[..., 1]  # soft in the forward pass: not a selection


register_exercise("dmr_straight_through", solution=straight_through, wrong=_wrong_straight_through,
                  checker=_check_straight_through,
                  description="hard keep/drop forward, softmax gradient backward")


# --- 3. predict, then run: where does RNP's rationale land? -----------------------------------------

ASPECTS = ("movie", "amazon", "tweet")
# What notebook 09 measured at the toy preset (share of RNP's selected tokens per aspect, mean of 3
# seeds); the notebook replaces it with its own run's value through `set_measured_rnp_shares`.
MEASURED = {"rnp_shares": {"movie": 0.36, "amazon": 0.30, "tweet": 0.34}}


def set_measured_rnp_shares(shares: dict[str, float]) -> None:
    """Called by the notebook after its RNP runs: ``{aspect: share of selected tokens}``."""
    if set(shares) != set(ASPECTS) or not all(isinstance(v, float) for v in shares.values()):
        raise ValueError(f"shares: expected floats for exactly {ASPECTS}, got {shares!r}")
    MEASURED["rnp_shares"] = dict(shares)


def rnp_aspect_prediction() -> str:
    """Exercise "solution": the aspect holding the largest share of RNP's rationale in the measured run."""
    shares = MEASURED["rnp_shares"]
    return max(shares, key=shares.get)


def _check_rnp_aspect(candidate) -> None:
    guess = candidate()
    assert guess in ASPECTS, f"predict one of {ASPECTS}, got {guess!r}"
    shares = MEASURED["rnp_shares"]
    measured = max(shares, key=shares.get)
    table = ", ".join(f"{a} {shares[a]:.0%}" for a in ASPECTS)
    assert guess == measured, (f"you predicted {guess!r}; the run put most of RNP's rationale on {measured!r} "
                               f"({table}). Why would a label-driven selector prefer it?")


def _wrong_rnp_aspect() -> str:
    shares = MEASURED["rnp_shares"]
    return min(shares, key=shares.get)


register_exercise("dmr_rnp_aspect", solution=rnp_aspect_prediction, wrong=_wrong_rnp_aspect,
                  checker=_check_rnp_aspect,
                  description="predict, then run: which aspect RNP's rationale lands on")


# --- 4. Triton: the column mean and variance of one block of features -------------------------------
MOMENT_BLOCK_N, MOMENT_BLOCK_D = 16, 8


def launch_column_moments(kernel, X: Tensor) -> Tensor:
    """Run a learner's kernel that computes, per column of ``X [N, D]``, the mean and the central moment
    c_2 = mean((x − m)²); returns ``[2, D]`` (row 0 the means, row 1 c_2). Grid: one program per block of
    ``BLOCK_D`` columns.

    ``kernel(X, OUT, N, D, stride_x, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr)``: OUT is ``[2, D]``
    contiguous, starting as NaN; a kernel that stores nothing raises ``NotImplementedError`` (the checker
    reports "not attempted")."""
    import triton

    X = X.contiguous().float()
    N, D = X.shape
    out = torch.full((2, D), float("nan"), dtype=torch.float32, device=X.device)
    kernel[(triton.cdiv(D, MOMENT_BLOCK_D),)](X, out, N, D, X.stride(0), BLOCK_N=MOMENT_BLOCK_N,
                                              BLOCK_D=MOMENT_BLOCK_D)
    if bool(out.isnan().all()):
        raise NotImplementedError("the kernel stored nothing")
    return out


def _moments_solution_kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def column_moments_kernel(X, OUT, N, D, stride_x, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
        cols = tl.program_id(0) * BLOCK_D + tl.arange(0, BLOCK_D)
        cmask = cols < D
        acc = tl.zeros([BLOCK_D], dtype=tl.float32)
        for start in range(0, N, BLOCK_N):  # sweep 1: the mean
            rows = start + tl.arange(0, BLOCK_N)
            m2 = (rows[:, None] < N) & cmask[None, :]
            acc += tl.sum(tl.load(X + rows[:, None] * stride_x + cols[None, :], mask=m2, other=0.0), axis=0)
        mean = acc / N
        sq = tl.zeros([BLOCK_D], dtype=tl.float32)
        for start in range(0, N, BLOCK_N):  # sweep 2: centred squares; padded rows must add 0, not m²
            rows = start + tl.arange(0, BLOCK_N)
            m2 = (rows[:, None] < N) & cmask[None, :]
            x = tl.load(X + rows[:, None] * stride_x + cols[None, :], mask=m2, other=0.0)
            d = tl.where(m2, x - mean[None, :], 0.0)
            sq += tl.sum(d * d, axis=0)
        tl.store(OUT + cols, mean, mask=cmask)
        tl.store(OUT + D + cols, sq / N, mask=cmask)

    return column_moments_kernel


def _moments_wrong_kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def column_moments_unmasked_centring(X, OUT, N, D, stride_x, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
        cols = tl.program_id(0) * BLOCK_D + tl.arange(0, BLOCK_D)
        cmask = cols < D
        acc = tl.zeros([BLOCK_D], dtype=tl.float32)
        for start in range(0, N, BLOCK_N):
            rows = start + tl.arange(0, BLOCK_N)
            m2 = (rows[:, None] < N) & cmask[None, :]
            acc += tl.sum(tl.load(X + rows[:, None] * stride_x + cols[None, :], mask=m2, other=0.0), axis=0)
        mean = acc / N
        sq = tl.zeros([BLOCK_D], dtype=tl.float32)
        for start in range(0, N, BLOCK_N):
            rows = start + tl.arange(0, BLOCK_N)
            m2 = (rows[:, None] < N) & cmask[None, :]
            x = tl.load(X + rows[:, None] * stride_x + cols[None, :], mask=m2, other=0.0)
            d = x - mean[None, :]  # padded rows load 0 and add m² each: wrong whenever N % BLOCK_N != 0
            sq += tl.sum(d * d, axis=0)
        tl.store(OUT + cols, mean, mask=cmask)
        tl.store(OUT + D + cols, sq / N, mask=cmask)

    return column_moments_unmasked_centring


def column_moments_solution(X: Tensor) -> Tensor:
    """Exercise solution: ``[mean; c_2]`` per column from the kernel above (shown after the checker)."""
    return launch_column_moments(_moments_solution_kernel(), X)


def _check_column_moments(candidate) -> None:
    from kimi_mini.rationale.cmd import central_moments_torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    for N, D in ((16, 8), (70, 9), (33, 20)):  # one tile; ragged rows and columns
        X = (torch.randn(N, D, generator=torch.Generator().manual_seed(N * D)) + 0.7).to(device)
        got = candidate(X)
        want = central_moments_torch(X.double(), 2)  # [2, D]: mean, c_2
        assert torch.is_tensor(got) and tuple(got.shape) == (2, D), f"expected a [2, {D}] result"
        assert not bool(got.isnan().any()), (
            f"X [{N}, {D}]: some outputs were never stored — every program stores its BLOCK_D columns (masked "
            "at D) into row 0 (means) and row 1 (c_2) of OUT")
        err = (got.double() - want).abs().max(1).values
        assert float(err[0]) < 1e-5, f"X [{N}, {D}]: the means are off by {float(err[0]):.3g} — sum every row tile"
        assert float(err[1]) < 1e-4, (
            f"X [{N}, {D}]: c_2 is off by {float(err[1]):.3g} — a padded row loads 0, so (0 − m)² must be "
            "masked out of the second sweep")


register_exercise("triton_column_moments", solution=column_moments_solution,
                  wrong=lambda X: launch_column_moments(_moments_wrong_kernel(), X), checker=_check_column_moments,
                  description="Triton: per-column mean and central moment c_2 of X, rows in tiles, ragged edges")

"""Training RNP and DMR (Distribution Matching for Rationalization, Huang et al., AAAI 2021, arXiv 2106.00320).

With z = g(x) the generator's hard selection, p the predictor, φ its max-pooled features, t the frozen
teacher and T the temperature, DMR's released losses are

    predictor:  L_p = λ_cls·CE(y, p(z⊙x)) + λ_om·CE(softmax(t(x)/T), p(z⊙x)) + λ_fm·CMD_K(φ(z⊙x), φ(x))
    generator:  L_g = −p(y | z⊙x) + λ_s·| mean(z) − α | + λ_c·mean |z_t − z_{t−1}|

(likelihood, not log-likelihood, in L_g; the mean and the continuity run over real tokens only). Each
loss updates only its own player: L_p the predictor, L_g the generator, from one shared forward pass.
RNP (Lei et al., 2016) is the same game with L_p = CE(y, p(z⊙x)) alone (λ_cls = 1, λ_om = λ_fm = 0).
The released code inherits CAR's two class-wise generators; we keep one generator whose target is
the gold label, as RNP has — the comparison isolates the two matchings.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor

from kimi_mini.checks import check_int, check_number, check_tensor
from kimi_mini.rationale.cmd import cmd
from kimi_mini.rationale.data import ReviewTensors
from kimi_mini.rationale.metrics import aspect_shares, rationale_metrics
from kimi_mini.rationale.models import Generator, Predictor
from kimi_mini.train import run_steps

__all__ = ["RationaleConfig", "sparsity_loss", "continuity_loss", "train_teacher", "train_rnp", "train_dmr",
           "evaluate", "teacher_accuracy"]


@dataclass(frozen=True)
class RationaleConfig:
    """Hyper-parameters; defaults are the paper's beer-appearance values (α, λ's, T, K) at toy sizes."""

    hidden: int = 16
    steps: int = 200
    teacher_steps: int = 200
    batch_size: int = 64
    lr: float = 1e-3
    alpha: float = 0.08
    lambda_s: float = 5.0
    lambda_c: float = 10.0
    lambda_cls: float = 0.1
    lambda_om: float = 0.9
    lambda_fm: float = 0.01
    temperature: float = 3.0
    K: int = 5
    cmd_impl: str = "torch"
    encoder: str = "gru"  # "gru" (the paper's BiGRU) or "conv" (a width-5 convolution: CPU-cheap)
    gumbel_tau: float | None = None  # None: train on the argmax z; τ > 0: sample z (Gumbel-max, as RNP samples)

    def __post_init__(self):
        for name, hi in (("hidden", 1 << 16), ("steps", 10**7), ("teacher_steps", 10**7), ("batch_size", 1 << 20),
                         ("K", 64)):
            check_int(name, getattr(self, name), 1, hi)
        for name in ("lr", "temperature"):
            check_number(name, getattr(self, name), 0, lo_open=True)
        check_number("alpha", self.alpha, 0, 1, lo_open=True, hi_open=True)
        for name in ("lambda_s", "lambda_c", "lambda_cls", "lambda_om", "lambda_fm"):
            check_number(name, getattr(self, name), 0)
        if self.cmd_impl not in ("reference", "torch", "triton"):
            raise ValueError(f"cmd_impl: expected 'reference', 'torch' or 'triton', got {self.cmd_impl!r}")
        if self.gumbel_tau is not None:
            check_number("gumbel_tau", self.gumbel_tau, 0, lo_open=True)
        if self.encoder not in ("gru", "conv"):
            raise ValueError(f"encoder: expected 'gru' or 'conv', got {self.encoder!r}")


def sparsity_loss(z: Tensor, mask: Tensor, alpha: float) -> Tensor:
    """| (selected real tokens) / (real tokens) − α | over the batch. ``z [B, T]``, ``mask [B, T]`` bool."""
    check_tensor("z", z, kind="float")
    check_tensor("mask", mask)
    if mask.shape != z.shape:  # a [T] mask would broadcast against [B, T] and give a wrong ratio
        raise ValueError(f"mask: expected z's shape {tuple(z.shape)}, got {tuple(mask.shape)}")
    check_number("alpha", alpha, 0, 1)
    m = mask.float()
    if not m.sum() > 0:
        raise ValueError("mask: expected at least one real token, got an all-False mask")
    return ((z * m).sum() / m.sum() - alpha).abs()


def continuity_loss(z: Tensor, mask: Tensor) -> Tensor:
    """Mean |z_t − z_{t−1}| over adjacent pairs of real tokens: penalises fragmented rationales."""
    check_tensor("z", z, dims=2, kind="float")
    check_tensor("mask", mask)
    if mask.shape != z.shape or mask.dtype != torch.bool:
        raise ValueError(f"mask: expected a bool tensor of z's shape {tuple(z.shape)}, got {mask.dtype} "
                         f"{tuple(mask.shape)}")
    pair = (mask[:, 1:] & mask[:, :-1]).float()
    return ((z[:, 1:] - z[:, :-1]).abs() * pair).sum() / pair.sum().clamp_min(1.0)


def _check_data(data) -> None:
    if not isinstance(data, ReviewTensors):
        raise ValueError(f"data: expected ReviewTensors (ReviewBenchmark.tensors(split)), got {type(data).__name__}")


def _batch(data: ReviewTensors, n: int, gen: torch.Generator) -> tuple[ReviewTensors, Tensor]:
    idx = torch.randint(0, len(data), (n,), generator=gen)
    return data.take(idx), idx


def train_teacher(data: ReviewTensors, embeddings: Tensor, config: RationaleConfig = RationaleConfig(), *,
                  seed: int = 0, progress: bool = False) -> tuple[Predictor, list[dict]]:
    """The teacher: a :class:`Predictor` trained with CE on the full text, then frozen (``eval``,
    ``requires_grad=False``). Returns ``(teacher, history)``."""
    _check_data(data)
    torch.manual_seed(seed)
    teacher = Predictor(embeddings, config.hidden, encoder=config.encoder).to(data.ids.device)
    opt = torch.optim.Adam([p for p in teacher.parameters() if p.requires_grad], lr=config.lr)

    def step_fn(step: int, gen: torch.Generator) -> dict:
        b, _ = _batch(data, config.batch_size, gen)
        logits, _ = teacher(b.ids, b.mask)
        loss = F.cross_entropy(logits, b.label)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return {"loss": loss.item(), "acc": float((logits.argmax(-1) == b.label).float().mean())}

    history = run_steps(step_fn, config.teacher_steps, seed=seed, progress=progress, desc="teacher")
    teacher.eval().requires_grad_(False)
    return teacher, history


def _train(data: ReviewTensors, embeddings: Tensor, config: RationaleConfig, seed: int, teacher: Predictor | None,
           progress: bool, desc: str) -> tuple[Generator, Predictor, list[dict]]:
    _check_data(data)
    torch.manual_seed(seed)
    generator = Generator(embeddings, config.hidden, encoder=config.encoder, tau=config.gumbel_tau).to(data.ids.device)
    predictor = Predictor(embeddings, config.hidden, encoder=config.encoder).to(data.ids.device)
    g_params = [p for p in generator.parameters() if p.requires_grad]
    p_params = [p for p in predictor.parameters() if p.requires_grad]
    opt_g, opt_p = torch.optim.Adam(g_params, lr=config.lr), torch.optim.Adam(p_params, lr=config.lr)
    soft_targets = None
    if config.lambda_om > 0:
        with torch.no_grad():  # the teacher is frozen: its softened outputs are computed once
            soft_targets = (teacher(data.ids, data.mask)[0] / config.temperature).softmax(-1)
    feature_match = config.lambda_fm > 0

    def step_fn(step: int, gen: torch.Generator) -> dict:
        b, idx = _batch(data, config.batch_size, gen)
        z = generator(b.ids, b.mask)  # [B, T] hard 0/1, straight-through gradient
        idx = idx.to(z.device)
        if feature_match:  # rationale and full text through the predictor in one batched call
            logits2, phi2 = predictor(torch.cat([b.ids, b.ids]), torch.cat([b.mask, b.mask]),
                                      torch.cat([z, b.mask.float()]))
            logits, phi, phi_full = logits2[:len(z)], phi2[:len(z)], phi2[len(z):]
        else:
            logits, phi = predictor(b.ids, b.mask, z)
        rec = {}
        loss_p = config.lambda_cls * F.cross_entropy(logits, b.label)
        if soft_targets is not None:
            om = F.cross_entropy(logits, soft_targets[idx])
            loss_p = loss_p + config.lambda_om * om
            rec["om"] = om.item()
        if feature_match:
            fm = cmd(phi, phi_full, config.K, impl=config.cmd_impl)
            loss_p = loss_p + config.lambda_fm * fm
            rec["cmd"] = fm.item()
        likelihood = logits.softmax(-1).gather(1, b.label[:, None]).mean()
        sparse, cont = sparsity_loss(z, b.mask, config.alpha), continuity_loss(z, b.mask)
        loss_g = -likelihood + config.lambda_s * sparse + config.lambda_c * cont
        grads_p = torch.autograd.grad(loss_p, p_params, retain_graph=True)
        grads_g = torch.autograd.grad(loss_g, g_params)
        for params, grads, opt in ((p_params, grads_p, opt_p), (g_params, grads_g, opt_g)):
            for p, g in zip(params, grads, strict=True):
                p.grad = g
            opt.step()
        sel = float((z.detach() * b.mask).sum() / b.mask.sum())
        return {"loss_p": loss_p.item(), "loss_g": loss_g.item(), "sparsity": sel,
                "acc": float((logits.argmax(-1) == b.label).float().mean()), **rec}

    history = run_steps(step_fn, config.steps, seed=seed, progress=progress, desc=desc, postfix=("acc", "sparsity"))
    generator.eval()
    predictor.eval()
    return generator, predictor, history


def train_rnp(data: ReviewTensors, embeddings: Tensor, config: RationaleConfig = RationaleConfig(), *,
              seed: int = 0, progress: bool = False) -> tuple[Generator, Predictor, list[dict]]:
    """RNP: the predictor learns from the label alone (λ_cls = 1, no matching). ``config``'s λ_cls/λ_om/λ_fm
    are ignored. Returns ``(generator, predictor, history)``."""
    cfg = replace(config, lambda_cls=1.0, lambda_om=0.0, lambda_fm=0.0)
    return _train(data, embeddings, cfg, seed, None, progress, "rnp")


def train_dmr(data: ReviewTensors, embeddings: Tensor, teacher: Predictor, config: RationaleConfig = RationaleConfig(),
              *, seed: int = 0, progress: bool = False) -> tuple[Generator, Predictor, list[dict]]:
    """DMR with ``config``'s λ_cls/λ_om/λ_fm (the paper's 0.1/0.9/0.01 by default); set λ_om = 0 for
    feature-space matching only, λ_fm = 0 for output-space only. Returns ``(generator, predictor, history)``."""
    if config.lambda_om > 0 and not isinstance(teacher, Predictor):
        raise ValueError(f"teacher: expected a trained Predictor (train_teacher) when lambda_om > 0, got "
                         f"{type(teacher).__name__}")
    return _train(data, embeddings, config, seed, teacher, progress, "dmr")


@torch.no_grad()
def evaluate(generator: Generator, predictor: Predictor, data: ReviewTensors, teacher: Predictor | None = None,
             n_aspects: int = 3, temperature: float = 3.0) -> dict:
    """Test metrics of a trained rationalizer: token ``precision``/``recall``/``f1``/``sparsity`` against the
    gold rationale, ``acc`` of the predictor on its rationale, ``kl`` = mean KL(teacher(x) ‖ p(z⊙x)) at
    T = 1 and ``kl_T`` = mean KL(softmax(t(x)/T) ‖ p(z⊙x)) — the target DMR's output matching trains
    toward (``temperature`` = T, the config's 3 by default) — when a teacher is given, ``aspects`` (share of
    selected tokens per aspect, target first) and the selections ``z`` (bool ``[N, T]``)."""
    _check_data(data)
    if not temperature > 0:
        raise ValueError(f"temperature: expected > 0, got {temperature!r}")
    check_int("n_aspects", n_aspects, 1)
    z = generator(data.ids, data.mask)
    logits, _ = predictor(data.ids, data.mask, z)
    out = rationale_metrics(z.bool(), data.gold, data.mask)
    out["acc"] = float((logits.argmax(-1) == data.label).float().mean())
    if teacher is not None:
        t_logp = teacher(data.ids, data.mask)[0].log_softmax(-1)
        out["kl"] = float(F.kl_div(logits.log_softmax(-1), t_logp, log_target=True, reduction="batchmean"))
        t_logp_T = (teacher(data.ids, data.mask)[0] / temperature).log_softmax(-1)
        out["kl_T"] = float(F.kl_div(logits.log_softmax(-1), t_logp_T, log_target=True, reduction="batchmean"))
    out["aspects"] = aspect_shares(z.bool(), data.aspect, n_aspects)
    out["z"] = z.bool()
    return out


@torch.no_grad()
def teacher_accuracy(teacher: Predictor, data: ReviewTensors) -> float:
    """Accuracy of a full-text classifier on ``data``."""
    _check_data(data)
    return float((teacher(data.ids, data.mask)[0].argmax(-1) == data.label).float().mean())

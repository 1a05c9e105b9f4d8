"""The ``"moe"`` feed-forward component: router + routed experts + shared experts, the aux-loss-free bias
update after each optimizer step (a training callback), and K2's dense first layers."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kimi_mini.checks import check_number
from kimi_mini.impl import check_impl
from kimi_mini.layers import SwiGLU
from kimi_mini.moe.experts import RoutedExperts
from kimi_mini.moe.routing import (
    BIAS_RULES,
    _AttachAuxLoss,
    _check_top_k,
    bias_update,
    max_violation,
    sequence_aux_loss,
    sigmoid_topk_route,
)
from kimi_mini.registry import register_ffn

__all__ = ["MoE", "build_moe_ffn", "moe_layers", "moe_bias_update_callback"]


class MoE(nn.Module):
    """Kimi K2's MoE feed-forward layer: sigmoid top-k router, routed + shared SwiGLU experts,
    aux-loss-free bias balancing (and, optionally, DeepSeek-V3's sequence-wise auxiliary loss).

    Args:
        d_model: token width d.
        n_experts: routed experts E (K2: 384).
        top_k: experts per token k (K2: 8).
        d_expert: hidden width of each expert (K2: 2048).
        n_shared: shared experts, run on every token as one SwiGLU of width ``n_shared·d_expert`` (K2: 1).
        route_scale: ρ multiplying the renormalised routing weights (K2: 2.827).
        bias_update_speed: u of the balancing rule; 0 turns aux-loss-free balancing off.
        bias_rule: ``"moonlight"`` (zero-mean sign, default) or ``"deepseek"`` (plain sign).
        aux_loss_alpha: α of the sequence-wise auxiliary loss; 0 (default) turns it off.
        impl: ``"naive"``, ``"torch"`` (default) or ``"triton"``; may be changed on the instance.
    Shapes: ``forward(x [B, T, d]) -> [B, T, d]``.

    State beyond parameters: ``expert_bias [E]`` (fp32 buffer, saved with the model, never touched by
    gradients) and ``load_counts [E]`` (tokens routed per expert since the last :meth:`update_bias_`,
    counted in training mode only). ``last_indices`` holds the last forward's ``[B·T, k]`` choices.
    """

    def __init__(self, d_model: int, n_experts: int, top_k: int, d_expert: int, n_shared: int = 1,
                 route_scale: float = 1.0, bias_update_speed: float = 1e-3, bias_rule: str = "moonlight",
                 aux_loss_alpha: float = 0.0, impl: str = "torch"):
        super().__init__()
        for name, value in (("d_model", d_model), ("n_experts", n_experts), ("d_expert", d_expert)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}: expected a positive int, got {value!r}")
        _check_top_k(top_k, n_experts)
        if not isinstance(n_shared, int) or n_shared < 0:
            raise ValueError(f"n_shared: expected an int >= 0, got {n_shared!r}")
        check_number("route_scale", route_scale, 0, lo_open=True)
        check_number("bias_update_speed", bias_update_speed, 0)
        if bias_rule not in BIAS_RULES:
            raise ValueError(f"bias_rule: expected one of {BIAS_RULES}, got {bias_rule!r}")
        check_number("aux_loss_alpha", aux_loss_alpha, 0)
        check_impl(impl)
        self.d_model, self.n_experts, self.top_k, self.d_expert = d_model, n_experts, top_k, d_expert
        self.n_shared, self.route_scale, self.impl = n_shared, float(route_scale), impl
        self.bias_update_speed, self.bias_rule = float(bias_update_speed), bias_rule
        self.aux_loss_alpha = float(aux_loss_alpha)
        self.router = nn.Linear(d_model, n_experts, bias=False)  # W_r [E, d]; no bias term
        self.experts = RoutedExperts(n_experts, d_model, d_expert)
        self.shared = SwiGLU(d_model, n_shared * d_expert) if n_shared else None
        self.register_buffer("expert_bias", torch.zeros(n_experts, dtype=torch.float32))
        self.register_buffer("load_counts", torch.zeros(n_experts, dtype=torch.int64), persistent=False)
        self.last_indices: Tensor | None = None
        self.last_aux_loss: Tensor | None = None
        self.reset_parameters()

    def reset_parameters(self, std: float = 0.02) -> None:
        for p in self.parameters():
            nn.init.normal_(p, std=std)

    def _apply(self, fn, recurse=True):
        # model.to(torch.bfloat16) must not round the selection bias: updates of u = 1e-3 would vanish
        super()._apply(fn, recurse)
        self.expert_bias.data = self.expert_bias.data.float()
        self.load_counts.data = self.load_counts.data.long()
        return self

    def route(self, flat: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``flat [N, d]`` → ``(indices [N, k], weights [N, k] fp32, scores [N, E] fp32)``."""
        with torch.autocast(flat.device.type, enabled=False):  # K2 routes in fp32, even under autocast
            logits = F.linear(flat.float(), self.router.weight.float())  # [N, E]
        indices, weights = sigmoid_topk_route(logits, self.expert_bias, self.top_k, self.route_scale)
        return indices, weights, torch.sigmoid(logits)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"x: expected [B, T, {self.d_model}], got {tuple(x.shape)}")
        B, T, d = x.shape
        flat = x.reshape(B * T, d)
        indices, weights, scores = self.route(flat)
        self.last_indices = indices.detach()
        if self.training:
            with torch.no_grad():
                self.load_counts += torch.bincount(indices.reshape(-1), minlength=self.n_experts)
        out = self.experts(flat, indices, weights, self.impl)  # [N, d]
        if self.shared is not None:
            out = out + self.shared(flat)
        out = out.view(B, T, d)
        if self.training and self.aux_loss_alpha > 0 and torch.is_grad_enabled():
            aux = self.aux_loss_alpha * sequence_aux_loss(scores, indices, B)
            self.last_aux_loss = aux.detach()
            out = _AttachAuxLoss.apply(out, aux)
        return out

    @torch.no_grad()
    def update_bias_(self) -> Tensor:
        """Apply one balancing step from the loads counted since the last call, then reset them.

        Returns the counts used ``[E]`` (int64). With ``bias_update_speed == 0`` only the reset happens.
        Call after each optimizer step (:func:`moe_bias_update_callback` does it in the training loop).
        """
        counts = self.load_counts.clone()
        if self.bias_update_speed > 0 and counts.sum() > 0:
            self.expert_bias.copy_(bias_update(self.expert_bias, counts, self.bias_update_speed,
                                               self.bias_rule))
        self.load_counts.zero_()
        return counts

    def routed_expert_numel(self) -> int:
        """Parameters of one routed expert: 3·d·h."""
        return 3 * self.d_model * self.d_expert

    def activated_numel(self) -> int:
        """Parameters one token uses: router + shared experts + top_k of the E routed experts."""
        shared = sum(p.numel() for p in self.shared.parameters()) if self.shared is not None else 0
        return self.router.weight.numel() + shared + self.top_k * self.routed_expert_numel()

    def extra_repr(self) -> str:
        return (f"experts={self.n_experts}, top_k={self.top_k}, d_expert={self.d_expert}, "
                f"shared={self.n_shared}, route_scale={self.route_scale:g}, "
                f"u={self.bias_update_speed:g} ({self.bias_rule}), aux_alpha={self.aux_loss_alpha:g}, "
                f"impl={self.impl!r}")


# ------------------------------------------------------------------------- model registration
_MOE_OPTIONS = ("n_experts", "top_k", "d_expert", "n_shared", "route_scale", "bias_update_speed",
                "bias_rule", "aux_loss_alpha", "impl", "first_k_dense_replace")


@register_ffn("moe")
def build_moe_ffn(config, layer_idx: int) -> nn.Module:
    """FFN builder for ``KimiConfig(ffn="moe", ffn_options={...})``.

    ``ffn_options``: ``n_experts`` (default 8), ``top_k`` (2), ``d_expert`` (default
    ``d_ff // (top_k + n_shared)``, so a token activates as many FFN weights as the dense model),
    ``n_shared`` (1), ``route_scale`` (1.0), ``bias_update_speed`` (1e-3), ``bias_rule``
    ("moonlight"), ``aux_loss_alpha`` (0), ``impl`` ("torch") and ``first_k_dense_replace`` (0): the
    first that many layers keep a dense SwiGLU of width ``d_ff``, as in K2 (which uses 1).
    """
    opts = dict(config.ffn_options)
    unknown = sorted(set(opts) - set(_MOE_OPTIONS))
    if unknown:
        raise ValueError(f"ffn_options: unknown MoE option(s) {unknown}; "
                         f"expected some of {list(_MOE_OPTIONS)}")
    first_dense = opts.pop("first_k_dense_replace", 0)
    if not isinstance(first_dense, int) or first_dense < 0:
        raise ValueError(f"ffn_options['first_k_dense_replace']: expected an int >= 0, got {first_dense!r}")
    if layer_idx < first_dense:
        return SwiGLU(config.d_model, config.d_ff)
    n_experts = opts.pop("n_experts", 8)
    if not isinstance(n_experts, int) or n_experts < 1:
        raise ValueError(f"ffn_options['n_experts']: expected a positive int, got {n_experts!r}")
    top_k = opts.pop("top_k", min(2, n_experts))
    n_shared = opts.pop("n_shared", 1)
    if not isinstance(top_k, int) or not isinstance(n_shared, int):
        raise ValueError(f"ffn_options: top_k and n_shared must be ints, got {top_k!r}, {n_shared!r}")
    d_expert = opts.pop("d_expert", max(1, config.d_ff // max(1, top_k + n_shared)))
    return MoE(config.d_model, n_experts, top_k, d_expert, n_shared=n_shared, **opts)


def moe_layers(model: nn.Module) -> list[MoE]:
    """Every :class:`MoE` inside ``model``, in module order (layer order for KimiMini)."""
    return [m for m in model.modules() if isinstance(m, MoE)]


def moe_bias_update_callback(record_loads: bool = False) -> Callable:
    """A ``train(..., callbacks=[...])`` callback: after each optimizer step, every MoE layer applies
    :meth:`MoE.update_bias_` (a no-op on the bias when its speed is 0) and the step's load is logged.

    Adds to the step's record: ``maxvio`` (mean over MoE layers of the step's MaxVio),
    ``maxvio_layers`` (one float per layer), ``aux_loss`` (sum over layers, when enabled) and, with
    ``record_loads``, ``loads`` (per layer, the tokens per expert as a list of ints).
    """

    def callback(step: int, model: nn.Module, optimizer, record: dict) -> None:
        layers = moe_layers(model)
        if not layers:
            return
        counts = [m.update_bias_() for m in layers]
        vio = [max_violation(c).item() for c in counts]
        record["maxvio"] = sum(vio) / len(vio)
        record["maxvio_layers"] = vio
        aux = [m.last_aux_loss for m in layers if m.aux_loss_alpha > 0 and m.last_aux_loss is not None]
        if aux:
            record["aux_loss"] = float(sum(a.item() for a in aux))
        if record_loads:
            record["loads"] = [c.tolist() for c in counts]

    return callback

# %% [markdown]
# # 01 · Kimi K2's Mixture-of-Experts layer
#
# **Papers:** *Kimi K2: Open Agentic Intelligence* (arXiv 2507.20534), whose MoE layer is DeepSeek-V3's
# (arXiv 2412.19437), and *Muon is Scalable for LLM Training* (Moonlight, arXiv 2502.16982) for the
# routed scaling factor and the zero-mean balancing rule.
#
# K2 has about 1 T parameters but a token only uses 32 B of them: each of its 60 MoE layers holds 384
# routed experts (SwiGLU FFNs) and one shared expert, and a **router** sends each token to 8 of the 384.
# The report's *sparsity scaling law* says that at a fixed number of activated parameters, more experts
# keep lowering the loss — K2 runs at sparsity 384 / 8 = 48.
#
# **In this notebook you will**
# 1. take the router apart: sigmoid (not softmax) scores, a bias that *selects* but never *weights*,
#    and Moonlight's routed scaling factor ρ — reproducing 2.446 and K2's 2.827;
# 2. read the three implementations of the experts (a masked loop, sorted segments, a Triton grouped
#    GEMM) and check that their outputs and gradients agree;
# 3. train toy MoE models with the same activated parameters and 2 → 16 experts (sparsity scaling);
# 4. watch the load balance over training without balancing, with DeepSeek-V3's auxiliary loss and with
#    the aux-loss-free bias update (MaxVio curves), and explore which experts a snippet of code uses;
# 5. implement the routing weights and the bias update yourself.
#
# **Run time:** `toy` ≈ 1 minute on 2 CPU cores; `gpu` ≈ 10 minutes on one H100/H200.

# %% tags=["parameters"]
PRESET = "toy"  # "toy" (CPU, ≤ 90 s) or "gpu" (one H100/H200)
RUN_DIR = None  # set by `kimi-mini reproduce`: where claims and figures go

# %%
import inspect

import matplotlib.pyplot as plt
import torch

from kimi_mini.data import ByteTokenizer, load_corpus
from kimi_mini.exercises import check
from kimi_mini.model import KimiConfig, KimiMini, count_params
from kimi_mini.moe import (
    MoE,
    bias_update,
    expected_route_scale,
    max_violation,
    moe_bias_update_callback,
    moe_layers,
    sigmoid_topk_route,
)
from kimi_mini.notebooks import interactive_figure, start_notebook
from kimi_mini.testing import max_rel_error
from kimi_mini.train import train, warmup_cosine

nb = start_notebook("01_moe", PRESET, RUN_DIR)
P = nb.preset
if P.name == "toy":
    torch.set_num_threads(1)  # the toy matrices are tiny: one thread wastes less time waiting than two
K2 = "Kimi K2 (arXiv 2507.20534)"
MOONLIGHT = "Muon is Scalable for LLM Training (arXiv 2502.16982)"

# %%
SIZES = P.pick(
    toy=dict(d_model=64, n_layers=2, n_heads=4, seq_len=64, batch_size=16, steps=100, lr=3e-3,
             top_k=2, d_expert=64, experts=[2, 4, 8, 16], balance_experts=8, first_dense=0,
             bias_speed=1e-2, aux_alpha=1e-2, eval_batches=4, mc_samples=20_000, impl="torch"),
    gpu=dict(d_model=384, n_layers=4, n_heads=6, seq_len=256, batch_size=32, steps=1200, lr=2e-3,
             top_k=4, d_expert=192, experts=[4, 8, 16, 32, 64], balance_experts=32, first_dense=1,
             bias_speed=1e-3, aux_alpha=1e-2, eval_batches=16, mc_samples=200_000, impl="triton"),
)
print(SIZES)

# %% [markdown]
# ## 1 · The router
# For a token $x$ and router weights $W_r$ (one row per expert, no bias term), K2 computes in fp32
# $$s = \sigma(W_r x) \in (0,1)^E,\qquad \mathcal{I} = \operatorname{TopK}_k(s + b),\qquad
#   w_j = \rho\,\frac{s_{\mathcal{I}_j}}{\sum_{i\in\mathcal{I}} s_i},\qquad
#   y = \sum_{j} w_j\,\mathrm{FFN}_{\mathcal{I}_j}(x) + \mathrm{FFN}_{\text{shared}}(x).$$
#
# **Sigmoid, not softmax.** A softmax makes the experts compete for one unit of probability: adding an
# expert, or raising one logit, lowers every other score. Sigmoid scores are independent per expert;
# the weights are only normalised *after* the top-k choice, among the chosen.

# %%
logits = torch.tensor([[1.2, 0.3, -0.4, 0.9, -1.5, 0.0, 0.6, -0.8]])
sig, soft = torch.sigmoid(logits[0]), torch.softmax(logits[0], -1)
louder = logits.clone()
louder[0, 4] = 4.0  # expert 4 becomes very confident
print("sigmoid  :", [f"{v:.2f}" for v in sig.tolist()])
print("softmax  :", [f"{v:.2f}" for v in soft.tolist()])
print("after expert 4's logit rises to 4.0:")
print("sigmoid  :", [f"{v:.2f}" for v in torch.sigmoid(louder[0]).tolist()], "(others unchanged)")
print("softmax  :", [f"{v:.2f}" for v in torch.softmax(louder[0], -1).tolist()], "(all others shrink)")

# %% [markdown]
# **The bias only selects.** $b$ is a per-expert number that is *not* learned by gradient descent; the
# balancing rule of section 3 nudges it so that under-used experts get picked more. It enters the
# `TopK`, never the weights: the output of the layer stays a function of the router's own scores, so
# balancing does not fight the language-modelling gradient. Here a bias of +0.5 on expert 2 gets it
# selected, and its weight is still computed from its small unbiased score:

# %%
print(inspect.getsource(sigmoid_topk_route).split('    """')[0] + "    ...")
bias = torch.zeros(8)
bias[2] = 0.5
for b in (None, bias):
    idx, w = sigmoid_topk_route(logits, b, top_k=3, scale=1.0)
    print(f"bias {'off' if b is None else 'on '}: experts {idx[0].tolist()}, weights "
          f"{[round(v, 3) for v in w[0].tolist()]}")
idx, w = sigmoid_topk_route(logits, bias, top_k=3, scale=1.0)
s_chosen = torch.sigmoid(logits[0, idx[0]])
assert torch.allclose(w[0], s_chosen / s_chosen.sum()), "weights come from the unbiased scores"
assert idx.shape == (1, 3) and idx.dtype == torch.int64

# %% [markdown]
# **The routed scaling factor ρ.** Renormalising the chosen scores to sum 1 shrinks the routed output
# as $k$ grows (the weights are ≈ $1/k$ each). Moonlight picks ρ so that, for random logits, the
# weight vector $p$ (the renormalised top-k scores) is rescaled to unit length on average:
# $$\rho = \mathbb{E}\left[\frac{1}{\lVert p\rVert_2}\right],\qquad \text{logits} \sim \mathcal{N}(0, 1)^E.$$
# If all $k$ chosen scores were equal, $\lVert p\rVert_2 = 1/\sqrt{k}$ and ρ = √k; spread-out scores give
# a little less. A Monte-Carlo estimate reproduces both published values:

# %%
rho_moonlight = expected_route_scale(64, 6, samples=SIZES["mc_samples"])
rho_k2 = expected_route_scale(384, 8, samples=SIZES["mc_samples"])
print(f"(64 experts, top-6): ρ = {rho_moonlight:.4f}   (Moonlight: 2.446;  √6 = {6 ** 0.5:.3f})")
print(f"(384 experts, top-8): ρ = {rho_k2:.4f}   (K2: 2.827;  √8 = {8 ** 0.5:.3f})")
nb.record_claim("Moonlight's routed scaling factor E[1/||p||] for 64 experts, top-6", paper_value="2.446",
                ours=f"{rho_moonlight:.4f} ({SIZES['mc_samples']:,} Monte-Carlo samples)",
                holds=abs(rho_moonlight - 2.446) < 0.002,
                explanation="N(0,1) logits, sigmoid scores, top-6 renormalised; holds within ±0.002",
                paper=MOONLIGHT)
nb.record_claim("K2's routed scaling factor 2.827 is E[1/||p||] for 384 experts, top-8", paper_value="2.827",
                ours=f"{rho_k2:.4f} ({SIZES['mc_samples']:,} Monte-Carlo samples)",
                holds=abs(rho_k2 - 2.827) < 0.002,
                explanation="same estimator as Moonlight's at K2's (384, 8); holds within ±0.002",
                paper=K2)

# %%
fig, ax = plt.subplots(figsize=(6, 3.2))
n_exp = [8, 16, 32, 64, 128, 256, 384]
for k in (2, 6, 8):
    rhos = [expected_route_scale(E, k, samples=2000) for E in n_exp]
    ax.plot(n_exp, rhos, "o-", label=f"top-{k}")
    ax.axhline(k**0.5, color=ax.lines[-1].get_color(), ls=":", lw=1)
ax.set(xscale="log", xlabel="routed experts E", ylabel="ρ = E[1/‖p‖₂]",
       title="routed scaling factor (dotted: √k)")
ax.set_xticks(n_exp, [str(E) for E in n_exp])
ax.xaxis.set_minor_locator(plt.NullLocator())
ax.legend()
nb.savefig(fig, "route-scale")
plt.show()

# %% [markdown]
# ## 2 · The layer and its three implementations
# `MoE` stores the routed experts as three stacked tensors — `w1, w3 [E, d, h]` (gate, up) and
# `w2 [E, h, d]` (down) — so K2's 384-expert layer builds instantly on the meta device, and the kernel
# indexes them directly. On tiny tensors:

# %%
torch.manual_seed(0)
layer = MoE(d_model=32, n_experts=6, top_k=2, d_expert=24, n_shared=1, route_scale=2.0).to(nb.device)
x = torch.randn(2, 13, 32, device=nb.device)  # on a GPU the kernel below is compiled: CUDA tensors
y = layer(x)
print(layer)
print("x", tuple(x.shape), "→ y", tuple(y.shape), "; choices per token", tuple(layer.last_indices.shape))
print("tokens per expert in this batch:", layer.load_counts.tolist())
with torch.device("meta"):
    k2_layer = MoE(7168, 384, 8, 2048, n_shared=1, route_scale=2.827)
total = sum(p.numel() for p in k2_layer.parameters())
print(f"one K2 MoE layer: {total / 1e9:.2f} B parameters, "
      f"{k2_layer.activated_numel() / 1e6:.0f} M used per token")

# %% [markdown]
# The *reference* (`impl="naive"`) loops over experts and finds each one's tokens with a mask. The
# *fast path* (`impl="torch"`, the CPU default) sorts the $N·k$ token–expert pairs by expert so that each
# expert's tokens are one contiguous segment, runs one matmul chain per segment and scatter-adds the
# weighted rows back to their tokens:

# %%
from kimi_mini.moe import experts as moe_experts_module  # noqa: E402

print(inspect.getsource(moe_experts_module._experts_sorted))

# %% [markdown]
# The *kernel* (`impl="triton"`, `kernels/moe.py`) is a grouped GEMM in the style of vLLM's `fused_moe`:
# the sorted pairs are padded per expert to the tile height, each row tile belongs to one expert, a
# program gathers its rows by index, multiplies by that expert's weights and scatters the (weighted)
# rows out — all experts in one launch, forward and backward. Without a GPU it runs in Triton's
# interpreter: correct, not fast. All three agree, outputs and every gradient:

# %%
dy = torch.randn_like(x)
results = {}
for impl in ("naive", "torch", "triton"):
    layer.impl = impl
    layer.zero_grad()
    xi = x.clone().requires_grad_()
    out = layer(xi)
    out.backward(dy)
    results[impl] = [out.detach(), xi.grad] + [p.grad.clone() for p in layer.parameters()]
names = ["output", "dx"] + [n for n, _ in layer.named_parameters()]
print(f"{'tensor':<22}{'torch vs naive':>16}{'triton vs naive':>17}")
for i, name in enumerate(names):
    e_t, e_k = (max_rel_error(results[impl][i], results["naive"][i]) for impl in ("torch", "triton"))
    print(f"{name:<22}{e_t:>16.1e}{e_k:>17.1e}")
    assert e_t < 1e-5 and e_k < 1e-5, name
layer.impl = "torch"

# %% [markdown]
# ## 3 · Sparsity scaling at toy size
# K2's report trains models with the **same activated parameters** (8 experts per token) and more and
# more total experts, and finds the loss keeps falling up to sparsity 48. Our miniature: a KimiMini whose
# FFNs are MoE layers with top-k and expert width fixed, one shared expert, and 2 → 16 routed experts —
# every model multiplies a token by the same number of weights; only the pool it chooses from grows.
# All runs use the aux-loss-free bias update, as K2 does.

# %%
data = load_corpus()


def moe_config(n_experts: int, bias_speed: float, aux_alpha: float = 0.0) -> KimiConfig:
    return KimiConfig(
        d_model=SIZES["d_model"], n_layers=SIZES["n_layers"], n_heads=SIZES["n_heads"],
        d_ff=(SIZES["top_k"] + 1) * SIZES["d_expert"], max_seq_len=SIZES["seq_len"], ffn="moe",
        ffn_options=dict(n_experts=n_experts, top_k=min(SIZES["top_k"], n_experts), n_shared=1,
                         d_expert=SIZES["d_expert"], route_scale=1.0, bias_update_speed=bias_speed,
                         aux_loss_alpha=aux_alpha, first_k_dense_replace=SIZES["first_dense"],
                         impl=SIZES["impl"]))


def run(config: KimiConfig, desc: str):
    torch.manual_seed(0)
    model = KimiMini(config).to(nb.device)
    opt = torch.optim.AdamW(model.parameters(), lr=SIZES["lr"], betas=(0.9, 0.95), weight_decay=0.1)
    steps = SIZES["steps"]
    hist = train(model, opt, data, steps=steps, batch_size=SIZES["batch_size"], seq_len=SIZES["seq_len"],
                 lr_schedule=warmup_cosine(steps, warmup=steps // 10), eval_every=steps,
                 eval_batches=SIZES["eval_batches"], autocast_dtype=P.dtype, progress=False, desc=desc,
                 callbacks=[moe_bias_update_callback(record_loads=True)])
    print(f"{desc:<28} val loss {hist[-1]['val_loss']:.3f}   final MaxVio "
          f"{sum(r['maxvio'] for r in hist[-10:]) / 10:.2f}   ({hist[-1]['seconds']:.1f} s)")
    return model, hist


sparsity = {}
for E in SIZES["experts"]:
    cfg = moe_config(E, SIZES["bias_speed"])
    n = count_params(cfg)
    sparsity[E] = run(cfg, f"E={E:>3} ({n.total / 1e3:.0f}K total, {n.activated / 1e3:.0f}K act.)")

# %%
experts = SIZES["experts"]
val = [sparsity[E][1][-1]["val_loss"] for E in experts]
acts = {count_params(moe_config(E, 0.0)).activated for E in experts}
fig, ax = plt.subplots(figsize=(5.5, 3.2))
ax.plot(experts, val, "o-")
for E, v in zip(experts, val, strict=True):
    ax.annotate(f"{E // min(SIZES['top_k'], E)}×", (E, v), textcoords="offset points", xytext=(4, 4))
ax.set(xscale="log", xlabel="routed experts (label: sparsity E/k)", ylabel="validation loss",
       title=f"same activated params, {SIZES['steps']} steps")
ax.set_xticks(experts, [str(E) for E in experts])
ax.xaxis.set_minor_locator(plt.NullLocator())
nb.savefig(fig, "sparsity")
plt.show()
print("activated parameters per token:", sorted(acts))

# %%
falls = all(b < a for a, b in zip(val, val[1:], strict=False))
trend = val[-1] - val[0]  # most sparse minus least sparse
nb.record_claim(
    "At fixed activated parameters, more total experts (higher sparsity) lower the loss",
    paper_value="loss keeps falling up to sparsity 48 (K2's 384 experts, top-8)",
    ours="val loss " + ", ".join(f"E={E}: {v:.3f}" for E, v in zip(experts, val, strict=True)),
    holds=True if falls else None,
    explanation=(f"val loss falls monotonically with the number of experts ({trend:+.3f} nats from "
                 f"E={experts[0]} to E={experts[-1]}) at equal activated parameters, one seed, "
                 f"{SIZES['steps']} steps"
                 if falls else
                 f"not monotone at this scale: E={experts[-1]} vs E={experts[0]} differs by {trend:+.3f} "
                 f"nats after {SIZES['steps']} steps, but neighbouring points differ by amounts comparable "
                 "to seed noise, and with many experts each one sees few tokens in so short a run; the gpu "
                 "preset trains long enough to test the trend"),
    paper=K2,
)

# %% [markdown]
# ## 4 · Load balance: nothing, an auxiliary loss, or the bias
# Left alone, a router tends to collapse onto a few experts (they get more gradient, improve, and get
# picked even more). Load is measured per step by **MaxVio** $= \max_i c_i / \bar c - 1$ over the
# tokens-per-expert counts $c_i$ (0 = perfect balance). Two remedies:
# - DeepSeek-V3's **sequence-wise auxiliary loss** $\alpha\sum_i f_i P_i$ (`aux_loss_alpha`), which pushes
#   the router's probabilities towards balance — through the same gradient that trains the model;
# - the **aux-loss-free bias update**, after each optimizer step, with Moonlight's zero-mean rule
#   $b_i \leftarrow b_i + u\,(\operatorname{sign}(e_i) - \overline{\operatorname{sign}(e)})$,
#   $e_i = \bar c - c_i$:

# %%
print(inspect.getsource(bias_update))
print(inspect.getsource(MoE.update_bias_))

# %%
E_bal = SIZES["balance_experts"]
balance = {
    "no balancing": run(moe_config(E_bal, 0.0), "no balancing"),
    f"aux loss (α={SIZES['aux_alpha']:g})": run(moe_config(E_bal, 0.0, SIZES["aux_alpha"]), "aux loss"),
    f"bias (u={SIZES['bias_speed']:g})": sparsity[E_bal],  # the sparsity run with E_bal experts
}


def smooth(values, width=9):
    kernel = torch.ones(width) / width
    v = torch.tensor(values, dtype=torch.float32)
    padded = torch.cat([v[:1].repeat(width // 2), v, v[-1:].repeat(width // 2)])
    return torch.nn.functional.conv1d(padded[None, None], kernel[None, None])[0, 0].tolist()


fig, ax = plt.subplots(figsize=(6.5, 3.4))
final = {}
for name, (_, hist) in balance.items():
    mv = [r["maxvio"] for r in hist]
    final[name] = (sum(mv[-10:]) / 10, hist[-1]["val_loss"])
    ax.plot([r["step"] for r in hist], smooth(mv), label=f"{name}: val {final[name][1]:.3f}")
ax.set(xlabel="step", ylabel="MaxVio (mean over MoE layers)",
       title=f"load balance, {E_bal} experts top-{SIZES['top_k']}")
ax.legend()
nb.savefig(fig, "maxvio")
plt.show()
for name, (mv, v) in final.items():
    print(f"{name:<20} MaxVio over the last 10 steps {mv:.2f}   val loss {v:.3f}")

# %%
(mv_none, loss_none), (mv_aux, loss_aux), (mv_bias, loss_bias) = final.values()
balanced = mv_bias < 0.5 * mv_none
no_cost = loss_bias <= loss_aux + 0.02
nb.record_claim(
    "Aux-loss-free bias balancing keeps expert load balanced at no loss cost compared with an aux loss",
    paper_value="DeepSeek-V3 / K2: balanced load (low MaxVio) without the quality cost of an auxiliary loss",
    ours=(f"MaxVio (last 10 steps) none {mv_none:.2f}, aux {mv_aux:.2f}, bias {mv_bias:.2f}; "
          f"val loss none {loss_none:.3f}, aux {loss_aux:.3f}, bias {loss_bias:.3f}"),
    holds=balanced and no_cost,
    explanation=("'balanced' = bias MaxVio below half of the unbalanced run's; 'no cost' = bias val loss "
                 f"within 0.02 nats of the aux-loss run's ({E_bal} experts, {SIZES['steps']} steps, one seed)"
                 + ("" if balanced and no_cost else
                    f"; here balanced={balanced}, no cost={no_cost}")),
    paper=K2,
)

# %% [markdown]
# ## 5 · Looking inside: which expert gets what
# The bias-balanced run recorded, at every step, how many tokens each expert of each layer received. The
# static view below shows the load over training (each row a step, normalised by the mean load) and which
# experts the bytes of a code snippet are sent to. In JupyterLab, the sliders and text box under it let
# you pick the layer, the step and your own snippet.

# %%
model_b, hist_b = balance[f"bias (u={SIZES['bias_speed']:g})"]
loads = torch.tensor([r["loads"] for r in hist_b], dtype=torch.float32)  # [steps, layers, E]
layers = moe_layers(model_b)
tok = ByteTokenizer()


def route_snippet(text: str):
    ids = torch.tensor([tok.encode(text)[: SIZES["seq_len"]]], device=nb.device)
    model_b.eval()
    with torch.no_grad():
        model_b(ids)
    return [m.last_indices.cpu() for m in layers]  # per MoE layer [T, k]


def draw(layer_idx: int, step: int, snippet: str):
    snippet = snippet or " "  # an empty text box routes one space rather than an empty batch
    fig, (a0, a1) = plt.subplots(1, 2, figsize=(11, 3.4), gridspec_kw={"width_ratios": [1, 1.6]})
    rel = loads[:, layer_idx] / loads[:, layer_idx].mean(-1, keepdim=True)
    im = a0.imshow(rel.T, aspect="auto", cmap="magma", vmin=0, vmax=max(2.0, float(rel.max())),
                   interpolation="nearest")
    a0.axvline(step - 1, color="cyan", lw=1)
    a0.set(xlabel="step", ylabel="expert", title=f"MoE layer {layer_idx}: load / mean load")
    fig.colorbar(im, ax=a0)
    chosen = route_snippet(snippet)[layer_idx]  # [T, k]
    grid = torch.zeros(loads.shape[-1], chosen.shape[0])
    grid.scatter_(0, chosen.T, 1.0)
    a1.imshow(grid, aspect="auto", cmap="Greens", interpolation="nearest")
    a1.set_xticks(range(chosen.shape[0]), [repr(c)[1:-1] or " " for c in snippet[: chosen.shape[0]]],
                  fontsize=7)
    a1.set(ylabel="expert", title=f"experts chosen per byte (layer {layer_idx}, after training)")
    fig.tight_layout()
    counts = loads[step - 1, layer_idx]
    print(f"step {step}, layer {layer_idx}: tokens per expert {counts.int().tolist()} "
          f"(MaxVio {max_violation(counts).item():.2f})")
    return fig


SNIPPET = "def area(r):\n    return 3.14 * r ** 2  # circle"
fig = draw(len(layers) - 1, len(hist_b), SNIPPET)
nb.savefig(fig, "routing")
plt.show()

# %%
import ipywidgets as widgets  # noqa: E402

interactive_figure(
    draw,
    layer_idx=widgets.IntSlider(value=0, min=0, max=len(layers) - 1, description="layer"),
    step=widgets.IntSlider(value=len(hist_b), min=1, max=len(hist_b), description="step"),
    snippet=widgets.Text(value="for i in range(10):", description="snippet"),
)  # the static figure above is the fallback where widgets do not render (papermill, GitHub)

# %% [markdown]
# ## Exercises
# **1 · The routing weights.** Given `logits [N, E]`, `bias [E]`, `top_k` and `scale`, return
# `(indices [N, top_k], weights [N, top_k])`: select the top-k of `sigmoid(logits) + bias`, and weight
# with the *unbiased* sigmoid scores of the chosen experts, renormalised to sum 1 and multiplied by
# `scale`. (Solution: `kimi_mini.moe.sigmoid_topk_route`.)

# %%
def my_routing_weights(logits, bias, top_k, scale):
    raise NotImplementedError  # your code here


check("moe_routing_weights", my_routing_weights)

# %% [markdown]
# **2 · The bias update.** Given `bias [E]`, this step's `counts [E]` and the speed `u`, return the new
# bias with Moonlight's rule: $e_i = \bar c - c_i$, $b_i \leftarrow b_i + u\,(\operatorname{sign}(e_i) -
# \operatorname{mean}_j \operatorname{sign}(e_j))$. (Solution: `kimi_mini.moe.bias_update`.)

# %%
def my_bias_update(bias, counts, u):
    raise NotImplementedError  # your code here


check("moe_bias_update", my_bias_update)
print(f"notebook time: {nb.elapsed():.0f} s")

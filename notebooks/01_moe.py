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
# 3. train toy MoE models with the same activated parameters and 2 → 16 experts (sparsity scaling),
#    three seeds each;
# 4. watch the load balance over training without balancing, with DeepSeek-V3's auxiliary loss and with
#    the aux-loss-free bias update (MaxVio curves, three seeds), and explore which experts a snippet of
#    code uses;
# 5. on the way, three exercises, each asked before its answer appears: the routing weights (warm-up),
#    the bias update (derive it), and the MaxVio of a router that never balances (predict, then run).
#
# **Run time:** `toy` ≈ 1 minute of CPU time (65 s measured; 2 CPU cores); `gpu` ≈ 30 minutes on one
# H100/H200 (an estimate: 21 training runs since the three-seed claims, not yet measured).

# %% tags=["parameters"]
PRESET = "toy"  # "toy" (CPU, ≤ 90 s) or "gpu" (one H100/H200)
RUN_DIR = None  # set by `kimi-mini reproduce`: where claims and figures go
SEEDS = (0, 1, 2)  # the seed set of every repeated run; `kimi-mini reproduce --seeds 3,4,5` passes another

# %%
# Setup, only where kimi_mini is not installed (Colab, a fresh Jupyter): install it from the checkout this
# notebook sits in (notebooks/setup_kimi_mini.py), or say how to get one. Elsewhere this cell does nothing.
import importlib.util
import runpy
from pathlib import Path

if importlib.util.find_spec("kimi_mini") is None:
    _near = [Path.cwd(), *Path.cwd().parents, *Path.cwd().glob("*")]
    _setup = [p for p in (d / "notebooks" / "setup_kimi_mini.py" for d in _near) if p.is_file()]
    if _setup:
        runpy.run_path(str(_setup[0]))["main"]()
    else:
        print("kimi_mini is not installed and no checkout is in sight: run `!git clone <the repository> kimi-mini`"
              " in a cell (or upload a copy of the repository), then this cell again.")

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
from kimi_mini.report import Evidence, Precondition
from kimi_mini.testing import max_rel_error
from kimi_mini.train import train, warmup_cosine

nb = start_notebook("01_moe", PRESET, RUN_DIR, SEEDS)
P = nb.preset
if P.name == "toy":
    torch.set_num_threads(1)  # the toy matrices are tiny: one thread wastes less time waiting than two
K2 = "Kimi K2 (arXiv 2507.20534)"
MOONLIGHT = "Muon is Scalable for LLM Training (arXiv 2502.16982)"

# %%
SIZES = P.pick(
    toy=dict(d_model=64, n_layers=2, n_heads=4, seq_len=64, batch_size=16, steps=100, lr=3e-3,
             top_k=2, d_expert=64, experts=[2, 8, 16], balance_experts=8, first_dense=0,
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
# balancing rule of section 4 nudges it so that under-used experts get picked more. It enters the
# `TopK`, never the weights: the output of the layer stays a function of the router's own scores, so
# balancing does not fight the language-modelling gradient.
#
# ### Exercise 1 (warm-up) · the routing weights
# Given `logits [N, E]`, `bias [E]`, `top_k` and `scale` (ρ), return `(indices [N, top_k], weights
# [N, top_k])` following the equations above: select with the biased scores, weight with the unbiased
# ones, renormalise among the chosen, multiply by `scale`.

# %%
def my_routing_weights(logits, bias, top_k, scale):
    raise NotImplementedError  # your code here


_ = check("moe_routing_weights", my_routing_weights)

# %% [markdown]
# The library's router (`kimi_mini.moe.sigmoid_topk_route`, the docstring cut), and the effect of the
# bias: +0.5 on expert 2 gets it selected, and its weight is still computed from its small unbiased
# score.

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
nb.record_check("Moonlight's routed scaling factor E[1/||p||] for 64 experts, top-6", paper_value="2.446",
                ours=f"{rho_moonlight:.4f} ({SIZES['mc_samples']:,} Monte-Carlo samples)",
                passed=abs(rho_moonlight - 2.446) < 0.002,
                explanation="N(0,1) logits, sigmoid scores, top-6 renormalised; holds within ±0.002",
                paper=MOONLIGHT)
nb.record_check("K2's routed scaling factor 2.827 is E[1/||p||] for 384 experts, top-8", paper_value="2.827",
                ours=f"{rho_k2:.4f} ({SIZES['mc_samples']:,} Monte-Carlo samples)",
                passed=abs(rho_k2 - 2.827) < 0.002,
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
# **Which ρ do our toy models use?** The same rule, at their own (E, k): the training runs below set
# `route_scale = expected_route_scale(E, top_k)` for each E — about 1.4 for top-2 — rather than 2.446 or
# 2.827, which belong to top-6 and top-8. ρ matters for the *balance between the routed and the shared
# expert* (whose output is not rescaled): with ρ = 1 the routed sum of top-2 would be ~30 % smaller than
# the shared expert's on random logits, and the ratio would change with k.

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
ROUTE_SCALE = {}


def route_scale(n_experts: int) -> float:
    """ρ = E[1/‖p‖₂] at this model's (E, k), as Moonlight and K2 choose theirs (cached per E)."""
    k = min(SIZES["top_k"], n_experts)
    if n_experts not in ROUTE_SCALE:
        ROUTE_SCALE[n_experts] = expected_route_scale(n_experts, k, samples=SIZES["mc_samples"])
    return ROUTE_SCALE[n_experts]


def moe_config(n_experts: int, bias_speed: float, aux_alpha: float = 0.0) -> KimiConfig:
    return KimiConfig(
        d_model=SIZES["d_model"], n_layers=SIZES["n_layers"], n_heads=SIZES["n_heads"],
        d_ff=(SIZES["top_k"] + 1) * SIZES["d_expert"], max_seq_len=SIZES["seq_len"], ffn="moe",
        ffn_options=dict(n_experts=n_experts, top_k=min(SIZES["top_k"], n_experts), n_shared=1,
                         d_expert=SIZES["d_expert"], route_scale=route_scale(n_experts),
                         bias_update_speed=bias_speed,
                         aux_loss_alpha=aux_alpha, first_k_dense_replace=SIZES["first_dense"],
                         impl=SIZES["impl"]))


def run(config: KimiConfig, desc: str, seed: int = 0):
    torch.manual_seed(seed)
    model = KimiMini(config).to(nb.device)
    opt = torch.optim.AdamW(model.parameters(), lr=SIZES["lr"], betas=(0.9, 0.95), weight_decay=0.1)
    steps = SIZES["steps"]
    hist = train(model, opt, data, steps=steps, batch_size=SIZES["batch_size"], seq_len=SIZES["seq_len"],
                 lr_schedule=warmup_cosine(steps, warmup=steps // 10), eval_every=steps,
                 eval_batches=SIZES["eval_batches"], autocast_dtype=P.dtype, progress=False, desc=desc,
                 seed=seed, callbacks=[moe_bias_update_callback(record_loads=True)])
    print(f"{desc:<30} seed {seed}  val loss {hist[-1]['val_loss']:.3f}   final MaxVio "
          f"{sum(r['maxvio'] for r in hist[-10:]) / 10:.2f}   ({hist[-1]['seconds']:.1f} s)")
    return model, hist


def mean_sd(values):
    t = torch.tensor(values, dtype=torch.float64)
    return float(t.mean()), float(t.std()) if len(values) > 1 else 0.0


SEEDS = nb.seeds
sparsity = {}  # E -> [(model, history) per seed]
for E in SIZES["experts"]:
    cfg = moe_config(E, SIZES["bias_speed"])
    n = count_params(cfg)
    sparsity[E] = [run(cfg, f"E={E:>3} ({n.total / 1e3:.0f}K total, {n.activated / 1e3:.0f}K act.)", seed)
                   for seed in SEEDS]

# %% [markdown]
# **The claim and its rule, fixed before the runs.** "More experts lower the loss" is *yes* here if the
# paired per-seed difference val(least sparse) − val(most sparse) (each seed shares its data order and
# initialisation stream across E) is above 0 with its whole 95 % interval, *no* if the whole interval is
# below 0, and *inconclusive* when it straddles 0 — the seed noise then hides any gain. Toy runs are short
# (each of E = 16 experts sees ~1/8 of the tokens), so a "no" at `toy`
# is a statement about this scale, not about K2's.

# %%
experts = SIZES["experts"]
val = {E: [h[-1]["val_loss"] for _, h in sparsity[E]] for E in experts}
stats = {E: mean_sd(val[E]) for E in experts}
acts = {count_params(moe_config(E, 0.0)).activated for E in experts}
fig, ax = plt.subplots(figsize=(5.5, 3.2))
ax.errorbar(experts, [stats[E][0] for E in experts], yerr=[stats[E][1] for E in experts], fmt="o-", capsize=3)
for E in experts:
    ax.annotate(f"{E // min(SIZES['top_k'], E)}×", (E, stats[E][0]), textcoords="offset points", xytext=(4, 4))
ax.set(xscale="log", xlabel="routed experts (label: sparsity E/k)", ylabel="validation loss",
       title=f"same activated params, {SIZES['steps']} steps (mean ± sd, {len(SEEDS)} seeds)")
ax.set_xticks(experts, [str(E) for E in experts])
ax.xaxis.set_minor_locator(plt.NullLocator())
nb.savefig(fig, "sparsity")
plt.show()
print("activated parameters per token:", sorted(acts), "; ρ per E:", {E: round(r, 3) for E, r in ROUTE_SCALE.items()})

# %%
E_lo, E_hi = experts[0], experts[-1]
diff_mean, diff_sd = mean_sd([a - b for a, b in zip(val[E_lo], val[E_hi], strict=True)])
gain = Evidence.paired(val[E_lo], val[E_hi], what=f"val(E={E_lo}) − val(E={E_hi})", suffix=" nats")
nb.record_claim(
    "At fixed activated parameters, more total experts (higher sparsity) lower the loss",
    paper_value="loss keeps falling up to sparsity 48 (K2's 384 experts, top-8)",
    ours=("val loss " + ", ".join(f"E={E}: {stats[E][0]:.3f} ± {stats[E][1]:.3f}" for E in experts)
          + f"; E={E_lo} − E={E_hi}: {diff_mean:+.3f} ± {diff_sd:.3f} nats ({len(SEEDS)} seeds)"),
    evidence=gain,
    precondition="none",
    explanation=(f"equal activated parameters, {SIZES['steps']} steps"
                 + ("" if gain.verdict == "yes" else
                    "; not shown at this scale: with many experts each sees few tokens in so short a run "
                    "(the gpu preset trains 12× longer)")),
    paper=K2,
)

# %% [markdown]
# ## 4 · Load balance: nothing, an auxiliary loss, or the bias
# Left alone, a router tends to collapse onto a few experts (they get more gradient, improve, and get
# picked even more). Load is measured per step by **MaxVio** $= \max_i c_i / \bar c - 1$ over the
# tokens-per-expert counts $c_i$ (0 = perfect balance). Two remedies:
# - DeepSeek-V3's **sequence-wise auxiliary loss** $\alpha\sum_i f_i P_i$ (`aux_loss_alpha`), which pushes
#   the router's probabilities towards balance — through the same gradient that trains the model;
# - the **aux-loss-free bias update**, after each optimizer step: each expert's load error
#   $e_i = \bar c - c_i$ (positive when expert $i$ is under-used) moves its bias by a fixed step $u$ in
#   the direction of $\operatorname{sign}(e_i)$. DeepSeek-V3 uses $b_i \leftarrow b_i + u\,\operatorname{sign}(e_i)$;
#   Moonlight also subtracts the mean step, so that the biases never drift together.
#
# ### Exercise 2 (derive) · Moonlight's bias update
# Given `bias [E]`, this step's `counts [E]` (tokens per expert) and the speed `u`, return the new bias
# under Moonlight's zero-mean rule. Derive it from the description: which sign does an over-loaded expert
# get, and what must $\sum_i \Delta b_i$ be?

# %%
def my_bias_update(bias, counts, u):
    raise NotImplementedError  # your code here


_ = check("moe_bias_update", my_bias_update)

# %% [markdown]
# The library's rule, and where a layer applies it (after the optimizer step, outside autograd):
# $b_i \leftarrow b_i + u\,(\operatorname{sign}(e_i) - \overline{\operatorname{sign}(e)})$.

# %%
print(inspect.getsource(bias_update))
print(inspect.getsource(MoE.update_bias_))

# %% [markdown]
# ### Exercise 3 (predict, then run) · MaxVio when the bias never moves
# A router whose logits favour experts 0 and 1 by +4 (so every token's top-2 starts as {0, 1}) routes
# 512 tokens per step over 8 experts, top-2, for 60 steps, with Moonlight's update at speed $u$. Predict
# MaxVio at the last step for **u = 0**, and return it. The checker runs
# `kimi_mini.exercises.moe.simulate_bias_balancing(0.0)` and compares.

# %%
def my_maxvio_prediction() -> float:
    raise NotImplementedError  # your prediction, a number


_ = check("maxvio_without_bias", my_maxvio_prediction)

# %% [markdown]
# The run, for u = 0, Moonlight's u = 1e-3 and this notebook's toy u = 1e-2:

# %%
from kimi_mini.exercises.moe import simulate_bias_balancing  # noqa: E402

for u in (0.0, 1e-3, 1e-2):
    print(f"u = {u:<6g} MaxVio after 60 steps: {simulate_bias_balancing(u):.2f}")

# %% [markdown]
# **Why u = 1e-2 here, when Moonlight uses 1e-3.** The bias moves by at most $2u$ per step, whatever the
# imbalance (a sign, not a proportional step). To rebalance, it has to close the gap between the
# over- and under-used experts' sigmoid scores — above, from σ(4) ≈ 0.98 down to σ(0) = 0.5, a distance
# of ~0.5, i.e. ≳ 250 steps at u = 1e-3 and ≳ 25 at 1e-2. Moonlight trains for hundreds of thousands of
# steps, so 1e-3 rebalances within a tiny fraction of training and then jitters only ±1e-3; our toy run
# has 100 steps, where 1e-3 would still be catching up at the end. The `gpu` preset (1 200 steps) uses
# Moonlight's 1e-3.

# %% [markdown]
# **The balancing claim and its rule, fixed before the runs** (one run per seed each, MaxVio = mean over
# the last 10 steps, validation loss at the end): *balanced* if the paired per-seed MaxVio(bias) −
# ½·MaxVio(none) is below 0; *no cost* if the paired per-seed val(bias) − val(aux) is below 0.01 nats —
# each with its whole 95 % interval. Both must hold. **Precondition:** without balancing the router is
# imbalanced (MaxVio above 0.5, interval included: the busiest expert gets 1.5× the mean load), else the
# bias has nothing to fix.

# %%
E_bal = SIZES["balance_experts"]
AUX, BIAS = f"aux loss (α={SIZES['aux_alpha']:g})", f"bias (u={SIZES['bias_speed']:g})"
balance = {
    "no balancing": [run(moe_config(E_bal, 0.0), "no balancing", seed) for seed in SEEDS],
    AUX: [run(moe_config(E_bal, 0.0, SIZES["aux_alpha"]), "aux loss", seed) for seed in SEEDS],
    BIAS: sparsity[E_bal],  # the sparsity runs with E_bal experts
}


def smooth(values, width=9):
    """Centred moving average over `width` steps (edges padded with the end values)."""
    kernel = torch.ones(width) / width
    v = torch.tensor(values, dtype=torch.float32)
    padded = torch.cat([v[:1].repeat(width // 2), v, v[-1:].repeat(width // 2)])
    return torch.nn.functional.conv1d(padded[None, None], kernel[None, None])[0, 0].tolist()


fig, ax = plt.subplots(figsize=(6.5, 3.4))
final_mv, final_val = {}, {}
for name, runs_ in balance.items():
    curves = torch.tensor([smooth([r["maxvio"] for r in hist]) for _, hist in runs_])  # [seeds, steps]
    final_mv[name] = [sum(r["maxvio"] for r in hist[-10:]) / 10 for _, hist in runs_]
    final_val[name] = [hist[-1]["val_loss"] for _, hist in runs_]
    steps_axis = [r["step"] for r in runs_[0][1]]
    line, = ax.plot(steps_axis, curves.mean(0), label=f"{name}: val {mean_sd(final_val[name])[0]:.3f}")
    ax.fill_between(steps_axis, curves.min(0).values, curves.max(0).values, color=line.get_color(), alpha=0.15)
ax.set(xlabel="step", ylabel="MaxVio (mean over MoE layers)",
       title=f"load balance, {E_bal} experts top-{SIZES['top_k']} (9-step moving average; "
             f"line: mean, band: min–max of {len(SEEDS)} seeds)")
ax.title.set_fontsize(9)
ax.legend(fontsize=8, loc="center right")
nb.savefig(fig, "maxvio")
plt.show()
for name in balance:
    (m, sd), (v, vsd) = mean_sd(final_mv[name]), mean_sd(final_val[name])
    print(f"{name:<20} MaxVio over the last 10 steps {m:.2f} ± {sd:.2f}   val loss {v:.3f} ± {vsd:.3f}")

# %%
(mv_none, sd_none), (mv_bias, sd_bias) = mean_sd(final_mv["no balancing"]), mean_sd(final_mv[BIAS])
cost_mean, cost_sd = mean_sd([b - a for a, b in zip(final_val[AUX], final_val[BIAS], strict=True)])
balanced = Evidence.paired(final_mv[BIAS], [0.5 * v for v in final_mv["no balancing"]], direction="below",
                           what="MaxVio(bias) − ½·MaxVio(none)", fmt="+.2f")
no_cost = Evidence.paired(final_val[BIAS], final_val[AUX], threshold=0.01, direction="below",
                          what="val(bias) − val(aux)", suffix=" nats")
imbalanced = Precondition.from_evidence("without balancing the load is imbalanced (MaxVio > 0.5)",
                                        Evidence.mean(final_mv["no balancing"], threshold=0.5, what="MaxVio(none)",
                                                      fmt=".2f"))
nb.record_claim(
    "Aux-loss-free bias balancing keeps expert load balanced at no loss cost compared with an aux loss",
    paper_value="DeepSeek-V3 / K2: balanced load (low MaxVio) without the quality cost of an auxiliary loss",
    ours=("MaxVio (last 10 steps) " + ", ".join(f"{k} {mean_sd(v)[0]:.2f} ± {mean_sd(v)[1]:.2f}"
                                                 for k, v in final_mv.items())
          + "; val loss " + ", ".join(f"{k} {mean_sd(v)[0]:.3f} ± {mean_sd(v)[1]:.3f}" for k, v in final_val.items())
          + f"; val(bias) − val(aux) {cost_mean:+.3f} ± {cost_sd:.3f} ({len(SEEDS)} seeds)"),
    evidence=[balanced, no_cost],
    precondition=imbalanced,
    explanation=(f"{E_bal} experts, {SIZES['steps']} steps; balanced: {balanced.verdict}, no cost: {no_cost.verdict}"),
    paper=K2,
)

# %% [markdown]
# What the claim does *not* say: that balancing is free compared with no balancing at all. In a 100-step
# run on one device an unbalanced router loses little or nothing in loss (compare the numbers above) —
# its cost shows at scale: with experts spread over GPUs the busiest expert sets the step time, and
# experts that never receive tokens are parameters wasted.

# %% [markdown]
# ## 5 · Looking inside: which expert gets what
# The bias-balanced run recorded, at every step, how many tokens each expert of each layer received. The
# static view below shows the load over training (each row a step, normalised by the mean load) and which
# experts the bytes of a code snippet are sent to. In JupyterLab, the sliders and text box under it let
# you pick the layer, the step and your own snippet.

# %%
model_b, hist_b = balance[BIAS][0]  # seed 0
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
    a0.grid(False)  # no grid lines over a heatmap
    a0.set(xlabel="step", ylabel="expert", title=f"MoE layer {layer_idx}: load / mean load")
    fig.colorbar(im, ax=a0)
    chosen = route_snippet(snippet)[layer_idx]  # [T, k]
    grid = torch.zeros(loads.shape[-1], chosen.shape[0])
    grid.scatter_(0, chosen.T, 1.0)
    a1.imshow(grid, aspect="auto", cmap="Greens", interpolation="nearest")
    a1.grid(False)
    a1.set_xticks(range(chosen.shape[0]), [repr(c)[1:-1] or " " for c in snippet[: chosen.shape[0]]],
                  fontsize=7)
    a1.set(ylabel="expert", title=f"experts chosen per byte (layer {layer_idx}, after training)")
    fig.tight_layout()
    counts = loads[step - 1, layer_idx]
    print(f"step {step}, layer {layer_idx}: tokens per expert {counts.int().tolist()} "
          f"(MaxVio {max_violation(counts).item():.2f})")
    return fig


SNIPPET = "def area(r):\n    return 3.14 * r ** 2  # circle"

# %%
import ipywidgets as widgets  # noqa: E402

# The first figure is a regular output (what papermill and GitHub show); the controls redraw it in place.
_ = interactive_figure(
    draw,
    save=lambda fig: nb.savefig(fig, "routing"),
    layer_idx=widgets.IntSlider(value=len(layers) - 1, min=0, max=len(layers) - 1, description="layer"),
    step=widgets.IntSlider(value=len(hist_b), min=1, max=len(hist_b), description="step"),
    snippet=widgets.Text(value=SNIPPET, description="snippet"),
)

# %% [markdown]
# ## Recap
# **What you learnt.** K2's router scores experts with independent sigmoids, selects the top-k of
# score + bias and weights the chosen by their *unbiased* scores, renormalised and multiplied by ρ; ρ =
# E[1/‖p‖₂] is a property of (E, k), which is why Moonlight's 64/top-6 gives 2.446 and K2's 384/top-8
# gives 2.827. Three implementations of the experts — a masked loop, sorted segments, a Triton grouped
# GEMM — agree in outputs and gradients. Load balance is kept not by a loss but by a bias that moves a
# fixed step per optimizer step; its speed u sets how many steps rebalancing takes, which is why a
# 100-step toy run needs a larger u than a 5.7 T-token run. Toy runs, three seeds, show what can be
# told apart from seed noise at this size and what cannot (the claims above say which).
#
# **Where this sits in the papers.** K2 (arXiv 2507.20534): the model-architecture section (384 experts,
# 8 active + 1 shared, sparsity 48) and its sparsity-scaling figure; the router and the aux-loss-free
# bias are DeepSeek-V3's (arXiv 2412.19437, "DeepSeekMoE with auxiliary-loss-free load balancing", and
# its MaxVio comparison). Moonlight (arXiv 2502.16982) gives the zero-mean bias rule with u = 1e-3 and
# the routed scaling factor 2.446 for its 64-expert top-6 MoE.
#
# **What changes at scale.** Experts live on different GPUs (expert parallelism), so imbalance costs
# time as well as quality: the busiest expert sets the step time, which is why MaxVio is watched. K2's
# per-layer token count per step is ~10⁷, so the load counts are far less noisy than our 1 024 tokens;
# the sparsity gain needs long runs in which every one of many experts sees enough tokens — the toy
# sparsity claim tests the direction, not K2's size of effect. The Triton grouped GEMM is what makes 384
# experts affordable; at `toy` it runs in the interpreter only to show agreement.
#
# **Where to go next.** [02 · Muon](02_muon.ipynb) trains these matrices with Moonlight's optimizer (a 3-D
# `[E, A, B]` expert weight is orthogonalised expert by expert); [03 · MuonClip](03_muonclip.ipynb) puts
# MoE, MLA and Muon together in `k2_mini` and adds QK-Clip.

# %%
print(f"notebook time: {nb.elapsed():.0f} s")

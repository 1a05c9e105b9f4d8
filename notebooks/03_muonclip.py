# %% [markdown]
# # 03 · Kimi K2 in miniature: MLA and MuonClip
#
# **Paper:** *Kimi K2: Open Agentic Intelligence* (arXiv 2507.20534), §2.1 MuonClip and §2.2 architecture;
# MLA comes from DeepSeek-V2 (arXiv 2405.04434).
#
# Kimi K2 is a 1T-parameter Mixture-of-Experts model trained on 15.5T tokens with **MuonClip** — Muon
# plus **QK-Clip**, a per-head rescaling of the query/key weights that keeps attention logits from
# exploding — "with zero loss spike". Its attention is **multi-head latent attention (MLA)**, which caches
# a small latent per token instead of per-head keys and values.
#
# **In this notebook you will**
# 1. see what MLA caches and compute K2's KV-cache bytes per token against multi-head attention;
# 2. understand *decoupled* RoPE and why QK-Clip must leave MLA's shared rotary key alone;
# 3. rebuild K2's configuration and count it: 1.03T parameters, 32.9B per token;
# 4. check the Triton flash-attention kernel that reports the max logit for free;
# 5. watch vanilla Muon's max logit climb past a threshold τ at an aggressive learning rate — and
#    MuonClip hold it at τ with no worse loss;
# 6. do two exercises: apply QK-Clip to an MHA layer, and decide which MLA parts get √γ or γ.
#
# **Run time:** `toy` ≈ 1 minute on 2 CPU cores; `gpu` a few minutes on one H100/H200.

# %% tags=["parameters"]
PRESET = "toy"  # "toy" (CPU, ≤ 90 s) or "gpu" (one H100/H200)
RUN_DIR = None  # set by `kimi-mini reproduce`: where claims and figures go

# %%
import inspect
import math

import matplotlib.pyplot as plt
import torch

from kimi_mini.data import load_corpus
from kimi_mini.exercises import check
from kimi_mini.k2 import K2_PAPER_ACTIVATED, K2_PAPER_TOTAL, config_table, k2_config, k2_mini
from kimi_mini.kernels.flash_attention import flash_attention
from kimi_mini.layers import blockwise_max_logit
from kimi_mini.mla import MultiHeadLatentAttention, mha_cache_numel_per_token, mla_cache_numel_per_token
from kimi_mini.model import KimiMini, count_params
from kimi_mini.moe import moe_bias_update_callback
from kimi_mini.notebooks import start_notebook
from kimi_mini.optim import build_optimizer
from kimi_mini.qk_clip import max_logit_callback, max_logits, mla_clip_factors, qk_clip_, track_max_logits
from kimi_mini.testing import max_rel_error
from kimi_mini.train import train

nb = start_notebook("03_muonclip", PRESET, RUN_DIR)
P = nb.preset

# %% [markdown]
# ## 1 · Multi-head latent attention
#
# Multi-head attention caches, per token and layer, a key and a value for every head: $2 H d_h$
# numbers. MLA compresses the keys and values of token $t$ into one latent
# $c_t^{KV} = \mathrm{RMSNorm}(W^{DKV} h_t)$ of $d_c$ numbers and re-expands it per head,
# $[k^C_{t,i}; v_{t,i}] = W^{UKV}_i c_t^{KV}$. Queries take a low-rank path too (rank $d_c'$).
#
# Position enters through a small **decoupled** rotary part: each head gets a rotary query
# $q^R_{t,i}$ ($d_r$ numbers) but there is only **one** rotary key $k^R_t = \mathrm{RoPE}(W^{KR} h_t)$,
# shared by all heads. The logit of head $i$ is
# $$ s_{t,j,i} = \frac{q^C_{t,i}\cdot k^C_{j,i} + q^R_{t,i}\cdot k^R_j}{\sqrt{d_h + d_r}} .$$
# Why decoupled? Without RoPE, $q^C\cdot k^C = (W^{UQ}c^Q)^\top W^{UK} c^{KV}$ and $W^{UK}$ can be folded
# into the query at inference, so attention runs directly on the cached latents. A rotation between
# them (which depends on the position) would block that fold, so the positional signal lives in extra
# channels. The cache is $c^{KV}_t$ and $k^R_t$: $d_c + d_r$ numbers per token and layer.

# %%
K2 = k2_config()
o = K2.attention_options
mla_numel = mla_cache_numel_per_token(o["kv_lora_rank"], o["qk_rope_head_dim"])
mha_numel = mha_cache_numel_per_token(K2.n_heads, o["v_head_dim"])  # MHA with K2's 64 heads of 128
bytes_bf16 = 2
ctx = 128 * 1024
print(f"K2 MLA: {o['kv_lora_rank']} + {o['qk_rope_head_dim']} = {mla_numel} numbers per token and layer "
      f"= {mla_numel * bytes_bf16:,} bytes in bf16")
print(f"MHA, 64 heads × 128: 2·64·128 = {mha_numel} numbers = {mha_numel * bytes_bf16:,} bytes "
      f"({mha_numel / mla_numel:.1f}× more)")
per_seq = bytes_bf16 * K2.n_layers * ctx / 2**30  # GiB per number cached per token and layer
print(f"one 128K-token sequence, {K2.n_layers} layers: MLA {mla_numel * per_seq:.1f} GiB vs MHA "
      f"{mha_numel * per_seq:.0f} GiB")

# %% [markdown]
# The library's MLA (`kimi_mini.mla.MultiHeadLatentAttention`, registered as `attention="mla"`):

# %%
print(inspect.getsource(MultiHeadLatentAttention.forward))

# %% [markdown]
# On a tiny `k2_mini` model: shapes, the cache holding only the latent and the shared rotary key, and
# decoding token by token reproducing the full forward pass.

# %%
torch.manual_seed(0)
mini = k2_mini(n_layers=2)
model = KimiMini(mini).eval()
tokens = torch.randint(0, 256, (2, 24))
full, _ = model(tokens)
cache = model.new_cache()
steps = [model(tokens[:, :16], cache=cache)[0]]  # prefill 16 tokens, then decode one at a time
steps += [model(tokens[:, t : t + 1], cache=cache)[0] for t in range(16, 24)]
decoded = torch.cat(steps, 1)
state = cache.layers[0]
print({k: tuple(v.shape) for k, v in state.items()}, " ← [B, T, kv_lora_rank], [B, T, qk_rope]: no head axis")
print(f"decode vs prefill: max rel. error {max_rel_error(decoded, full):.1e}")
assert max_rel_error(decoded, full) < 1e-4

# %% [markdown]
# The same MLA layer three ways — `impl="naive"` (softmax(QKᵀ)V in fp32, the reference), `"torch"`
# (PyTorch's fused attention, the default) and `"triton"` (the flash kernel of section 3; on a CPU it runs
# in Triton's interpreter) — and their max logits:

# %%
x_small = torch.randn(2, 40, mini.d_model, device=nb.device)
layers = {}
for impl in ("naive", "torch", "triton"):
    layers[impl] = MultiHeadLatentAttention(mini.replace(attention_options={**mini.attention_options,
                                                                           "impl": impl})).to(nb.device)
    layers[impl].load_state_dict(layers["naive"].state_dict())
    layers[impl].track_max_logit = True
outs = {impl: layer(x_small) for impl, layer in layers.items()}
for impl in ("torch", "triton"):
    print(f"{impl:>6} vs naive: output max rel. error {max_rel_error(outs[impl], outs['naive']):.1e}, "
          f"max logits {layers[impl].max_logit.tolist()}")

# %% [markdown]
# ## 2 · K2 in miniature, and the 1T / 32B count
#
# `k2_config()` is K2's public configuration; `count_params` builds it on PyTorch's *meta* device (shapes,
# no memory) and counts every weight — embedding and untied head included. An MoE layer counts in full
# for the total but only as router + shared expert + 8 of 384 routed experts per token.

# %%
rows = config_table(K2, k2_mini("toy"), k2_mini("gpu"), names=("K2", "k2_mini toy", "k2_mini gpu"))
print(f"{'field':<26}{'K2':>14}{'k2_mini toy':>14}{'k2_mini gpu':>14}")
for r in rows:
    print(f"{r['field']:<26}{r['K2']!s:>14}{r['k2_mini toy']!s:>14}{r['k2_mini gpu']!s:>14}")

# %%
n_k2 = count_params(K2)
n_mini = count_params(k2_mini(P.name))
print(f"K2:      {n_k2.total / 1e12:.3f}T total, {n_k2.activated / 1e9:.2f}B activated per token "
      f"(sparsity {K2.ffn_options['n_experts'] // K2.ffn_options['top_k']})")
print(f"k2_mini: {n_mini.total / 1e6:.2f}M total, {n_mini.activated / 1e6:.2f}M activated per token")
err_total = n_k2.total / K2_PAPER_TOTAL - 1
err_act = n_k2.activated / K2_PAPER_ACTIVATED - 1
nb.record_claim(
    "Kimi K2's configuration has 1T total and 32B activated parameters",
    paper_value="1.03T total / 32.9B activated (the published '1T / 32B')",
    ours=f"{n_k2.total / 1e12:.4f}T total ({err_total:+.2%}), {n_k2.activated / 1e9:.2f}B activated "
         f"({err_act:+.2%}), counted from k2_config() on the meta device",
    holds=abs(err_total) < 0.01 and abs(err_act) < 0.01,
    explanation="every weight counted (embeddings, untied head, norms); MoE layers count router + shared "
                "+ 8/384 routed experts per token",
    paper="Kimi K2 (arXiv 2507.20534)",
)

# %% [markdown]
# ## 3 · The max logit, from a flash-attention kernel's running max
#
# QK-Clip needs, per head, $S_{\max}^h = \max_{b,\,i,\,j\le i} q_i^h\cdot k_j^h/\sqrt{d}$ of each training
# step. Computing it naively costs a $T\times T$ matrix. A flash-attention kernel already has it: its
# online softmax keeps a running row maximum $m_i$ to keep $\exp$ from overflowing, and after the last
# key block $m_i$ *is* the row's largest logit. `kernels/flash_attention.py` writes $\max_i m_i$ per
# block; the PyTorch path computes it in query blocks (`blockwise_max_logit`). Both against the naive
# $T\times T$ computation (on a CPU the kernel runs in Triton's interpreter: correct, not fast):

# %%
g = torch.Generator().manual_seed(0)
q, k, v = ((torch.randn(1, 2, 63, 16, generator=g) * 2).to(nb.device) for _ in range(3))
out, m_kernel = flash_attention(q, k, v)  # out [1, 2, 63, 16], max logit [1, 2] = [batch, head]
scores = (q @ k.transpose(-1, -2)) / 4.0  # the naive way: the whole T×T matrix (1/√16 = 1/4)
causal = torch.ones(63, 63, dtype=torch.bool, device=nb.device).tril()
naive = scores.masked_fill(~causal, -math.inf).amax(dim=(-1, -2))
sdpa = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
print(f"kernel out vs SDPA: max rel. error {max_rel_error(out, sdpa):.1e}")
print("max logit  naive  ", naive.flatten().tolist())
print("           kernel ", m_kernel.flatten().tolist())
print("           blocks ", blockwise_max_logit(q, k, 0.25, block=16).tolist(), "(max over the batch)")

# %% [markdown]
# ## 4 · QK-Clip
#
# After the optimizer step, for every head with $S^h_{\max} > \tau$ and $\gamma_h = \tau / S^h_{\max}$:
# - MHA/GQA: $W_q^h \leftarrow \gamma^{\alpha} W_q^h$, $W_k^h \leftarrow \gamma^{1-\alpha} W_k^h$
#   ($\alpha = 0.5$; with GQA the kv group is the unit: its max decides γ for all its heads);
# - MLA: $q^C$ and $k^C$ get $\sqrt\gamma$ each, $q^R$ gets $\gamma$; the shared $k^R$ and $V$ are not
#   touched.
#
# Every logit of a clipped head is multiplied by exactly $\gamma_h$ — so the same batch would now
# reach exactly $\tau$ — and the other heads do not change at all. Why does $q^R$ take all of $\gamma$?
# $k^R$ is one vector shared by every head: scaling it would shrink the heads that were fine.

# %%
print({part: round(float(f), 4) for part, f in mla_clip_factors(0.25).items()}, " for γ = 0.25")
torch.manual_seed(0)
demo = KimiMini(k2_mini(n_layers=2)).eval()
with torch.no_grad():  # blow up the attention weights so that some heads' logits are large
    for name, p in demo.named_parameters():
        if ".attn.w" in name and not name.endswith("wo.weight"):
            p.mul_(8)
track_max_logits(demo)
demo(tokens)
before = max_logits(demo)
tau_demo = float(before.median())
clipped = qk_clip_(demo, tau=tau_demo)
demo(tokens)  # the same batch again (layer 1 sees layer 0's new outputs, so only layer 0 is exactly τ)
print(f"τ = {tau_demo:.2f}\nmax logits before [layer, head]\n{before}")
print("clipped (layer: {head: γ}):", {i: {h: round(g, 3) for h, g in c.items()}
                                      for i, c in enumerate(clipped)})
print(f"after, same batch\n{max_logits(demo)}")

# %% [markdown]
# ## 5 · The failure MuonClip fixes
#
# K2's report: with plain Muon the max attention logit of some heads keeps growing (past 1000 in a
# mid-scale run), which destabilises training; MuonClip caps it at $\tau = 100$, it stays at the cap for
# a while, then decays on its own after ~30 % of training. A toy run is far too short for logits to grow
# on their own, so we provoke the effect with an aggressive Muon learning rate (0.1 on the toy preset,
# hundreds of times K2's): within 100 steps vanilla Muon's max logit passes **K2's own τ = 100**, which
# both presets use.
#
# The model is the whole `k2_mini`: MLA attention, a dense first layer, then MoE layers with 48 experts
# top-1 (K2's sparsity 48), trained with the aux-loss-free bias update after every step. Two runs, same
# seed and batches: Muon, and MuonClip = the same Muon + QK-Clip.

# %%
EXP = P.pick(
    toy=dict(config=k2_mini("toy"), steps=100, batch_size=8, seq_len=64, lr=0.1, tau=100.0),
    gpu=dict(config=k2_mini("gpu"), steps=1500, batch_size=32, seq_len=512, lr=0.05, tau=100.0),
)
data = load_corpus()


def run(optimizer_name: str, **kw):
    torch.manual_seed(0)
    model = KimiMini(EXP["config"]).to(nb.device)
    opt = build_optimizer(model, optimizer_name, lr=EXP["lr"], weight_decay=0.1, **kw)
    track_max_logits(model)
    hist = train(model, opt, data, steps=EXP["steps"], batch_size=EXP["batch_size"], seq_len=EXP["seq_len"],
                 eval_every=EXP["steps"], eval_batches=8, autocast_dtype=P.dtype, desc=optimizer_name,
                 callbacks=[max_logit_callback, moe_bias_update_callback()])
    return hist


TAU = EXP["tau"]
vanilla = run("muon")
clip = run("muonclip", tau=TAU)

# %%
steps_ = [r["step"] for r in vanilla]
fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
axes[0].plot(steps_, [r["max_logit"] for r in vanilla], label="Muon")
axes[0].plot(steps_, [r["max_logit"] for r in clip], label="MuonClip")
axes[0].axhline(TAU, color="gray", ls="--", label=f"τ = {TAU:g}")
axes[0].set(xlabel="step", ylabel="max logit (all layers and heads)", title="max attention logit")
axes[0].legend()
axes[1].plot(steps_, [r["loss"] for r in vanilla], lw=0.8, label="Muon")
axes[1].plot(steps_, [r["loss"] for r in clip], lw=0.8, label="MuonClip")
zoom = max(r["loss"] for r in vanilla + clip if r["step"] > 20) * 1.05  # the first steps spike at this lr
axes[1].set(xlabel="step", ylabel="train loss (nats / byte)", title="loss (after step 20)", ylim=(None, zoom))
axes[1].legend()
axes[2].plot(steps_, [r["clipped_fraction"] for r in clip], color="C1")
axes[2].set(xlabel="step", ylabel="fraction of heads clipped", title="MuonClip: heads clipped per step")
fig.tight_layout()
nb.savefig(fig, "max-logit")
plt.show()

# %% [markdown]
# Every point is the max logit of the step's own forward pass. K2's order of operations is: forward
# (record $S_{\max}$) → optimizer update → clip with $\gamma = \tau / S_{\max}$. The statistic is taken
# *before* the update, so the clip removes everything accumulated up to the step but not what that
# step's update adds. At K2's learning rate one update barely moves a logit and the max sits at τ; at
# our aggressive toy learning rate one update raises a clipped head's logits by 10–40 % (Muon's
# momentum keeps pushing the heads the clip holds back), so the toy cap is "τ plus one step", not τ.
# The claim below allows exactly that (`TOL`), and the curve shows the difference that matters: vanilla
# keeps climbing, MuonClip stops. (Both runs' losses jump in the first steps: that is the aggressive
# learning rate without warm-up, before any logit is large — not what QK-Clip addresses.)

# %%
vanilla_max = max(r["max_logit"] for r in vanilla)
first_clip = next((r["step"] for r in clip if r["n_clipped"] > 0), None)
after = [r["max_logit"] for r in clip if first_clip is not None and r["step"] > first_clip]
clip_max_after = max(after) if after else float("nan")
clip_median_after = sorted(after)[len(after) // 2] if after else float("nan")
TOL = P.pick(toy=0.5, gpu=0.25)  # one update's growth at lr 0.1 (toy) / 0.05 (gpu), see above
loss_v = sum(r["loss"] for r in vanilla[-10:]) / 10
loss_c = sum(r["loss"] for r in clip[-10:]) / 10
val_v, val_c = vanilla[-1]["val_loss"], clip[-1]["val_loss"]
print(f"vanilla Muon: max logit {vanilla_max:.1f} (τ = {TAU:g}); MuonClip after its first clip (step "
      f"{first_clip}): max {clip_max_after:.1f}, median {clip_median_after:.1f}")
print(f"final train loss (mean of last 10 steps): Muon {loss_v:.4f}, MuonClip {loss_c:.4f}; "
      f"val loss: Muon {val_v:.4f}, MuonClip {val_c:.4f}")

nb.record_claim(
    "Without QK-Clip, Muon's max attention logit grows past the threshold",
    paper_value="max logits > 1000 in a mid-scale Muon run (τ = 100)",
    ours=f"vanilla Muon max logit {vanilla_max:.1f} vs τ = {TAU:g} (k2_mini MLA, lr {EXP['lr']}, "
         f"{EXP['steps']} steps)",
    holds=vanilla_max > TAU,
    explanation="provoked with an aggressive Muon lr (far above K2's) so that a short run gets there",
    paper="Kimi K2 (arXiv 2507.20534)",
)
nb.record_claim(
    "MuonClip caps the max logit at τ (up to one update's growth) once it has clipped",
    paper_value="max logit capped at τ = 100 throughout K2's pre-training",
    ours=f"after the first clip (step {first_clip}) max logit ≤ {clip_max_after:.1f} (median "
         f"{clip_median_after:.1f}) vs vanilla's {vanilla_max:.1f}; bound τ·(1 + {TOL:.0%}) = "
         f"{TAU * (1 + TOL):.0f}",
    holds=first_clip is not None and clip_max_after <= TAU * (1 + TOL),
    explanation="capped, but only to τ plus one update's growth: the statistic precedes the update it is "
                "applied after, and at the toy lr one update adds 10-40 % (negligible at K2's lr)",
    paper="Kimi K2 (arXiv 2507.20534)",
)
nb.record_claim(
    "QK-Clip does not hurt the loss",
    paper_value="no loss spike, loss not degraded (K2: 15.5T tokens without a spike)",
    ours=f"final train loss Muon {loss_v:.4f} vs MuonClip {loss_c:.4f} ({loss_c / loss_v - 1:+.2%}); "
         f"val {val_v:.4f} vs {val_c:.4f}",
    holds=loss_c <= loss_v * 1.01 and val_c <= val_v * 1.01,
    explanation="train: mean of the last 10 steps; val: 8 held-out batches; same seed and batches; both "
                "within 1 % of Muon (or better) counts",
    paper="Kimi K2 (arXiv 2507.20534)",
)

# %% [markdown]
# ## Exercises
#
# **1 · QK-Clip of an MHA layer.** `wq`, `wk` are `[H·D, C]` (head h owns rows `h·D … h·D+D−1`),
# `max_logit` is `[H]`. Return new `(wq, wk)`: for each head with `max_logit > tau`, γ = τ / max_logit,
# multiply its query rows by γ**alpha and its key rows by γ**(1 − alpha); leave every other row
# bit-identical. (Solution: `kimi_mini.qk_clip.qk_clip_mha_weights`.)

# %%
def my_qk_clip_mha_weights(wq, wk, max_logit, tau, alpha=0.5):
    raise NotImplementedError  # your code here


check("qk_clip_mha_weights", my_qk_clip_mha_weights)

# %% [markdown]
# **2 · Which MLA parts get √γ, which γ?** Return a dict with the factor QK-Clip multiplies each part of
# a clipped MLA head by: keys `"q_nope"`, `"k_nope"`, `"q_rope"`, `"k_rope"`, `"v"`. Think about which parts
# belong to the head alone and which are shared by all heads, and keep the logit scaling by exactly γ.
# (Solution: `kimi_mini.qk_clip.mla_clip_factors`.)

# %%
def my_mla_clip_factors(gamma, alpha=0.5):
    raise NotImplementedError  # your code here


check("mla_clip_factors", my_mla_clip_factors)
print(f"notebook time: {nb.elapsed():.0f} s")

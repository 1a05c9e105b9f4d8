# %% [markdown]
# # 00 · A tour of kimi-mini
#
# **kimi-mini** reproduces, at a size a laptop can run, the methods of the Kimi (Moonshot AI) team's
# papers — Kimi K2 (arXiv 2507.20534), Muon is Scalable (arXiv 2502.16982), MoBA (arXiv 2502.13189) and
# earlier work by its authors — with readable PyTorch references and Triton kernels you can check.
#
# **In this notebook you will**
# 1. see how every notebook is parameterised by a *preset* (`toy` on a CPU, `gpu` on one H100/H200);
# 2. meet the data: a byte-level tokenizer and a real corpus that needs no download (the Python
#    standard library's own source code);
# 3. read and run `KimiMini`, the small decoder-only model that later notebooks modify
#    (MoE feed-forward, MLA and MoBA attention, the Muon optimizer);
# 4. read a Triton kernel line by line, then check it against its PyTorch reference;
# 5. train the model, look at its loss curve and its samples, explore how temperature and top-k shape
#    sampling (sliders), and record the notebook's claim;
# 6. do the first exercises, asked *before* the answer appears: compute the unigram entropy (warm-up)
#    and predict an untrained model's loss, then measure it (predict, then run).
#
# Exercises print **PASS**, **FAIL** (with a hint) or **NOT ATTEMPTED**, and never stop the notebook;
# the library's solution is shown right after each checker.
#
# **Run time:** `toy` ≈ 1 minute on 2 CPU cores; `gpu` a few minutes.

# %% tags=["parameters"]
PRESET = "toy"  # "toy" (CPU, ≤ 90 s) or "gpu" (one H100/H200)
RUN_DIR = None  # set by `kimi-mini reproduce`: where claims and figures go
SEEDS = (0,)  # the training run's seed; `kimi-mini reproduce --seeds 3` trains another

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
import math

import matplotlib.pyplot as plt
import torch

from kimi_mini.data import ByteTokenizer, load_corpus, load_corpus_dataset, unigram_entropy
from kimi_mini.exercises import check
from kimi_mini.model import Block, KimiConfig, KimiMini, count_params
from kimi_mini.notebooks import start_notebook
from kimi_mini.report import Evidence
from kimi_mini.train import evaluate, train, warmup_cosine

nb = start_notebook("00_tour", PRESET, RUN_DIR, SEEDS)
P = nb.preset

# %% [markdown]
# ## Presets
# Every size in a notebook comes from `P.pick(toy=..., gpu=...)`, so both settings sit side by side and
# nothing else changes between a CPU run and a GPU run. An unknown preset is an error that lists the
# valid ones.

# %%
SIZES = P.pick(
    toy=dict(d_model=128, n_layers=4, n_heads=4, seq_len=128, batch_size=16, steps=180, lr=3e-3),
    gpu=dict(d_model=512, n_layers=8, n_heads=8, seq_len=512, batch_size=64, steps=3000, lr=1.5e-3),
)
print(SIZES)

# %% [markdown]
# ## Data: bytes in, bytes out
# The tokenizer is the simplest one that is exactly reversible: a token is one UTF-8 byte, so the
# vocabulary has 256 entries and any text round-trips.

# %%
tok = ByteTokenizer()
sample = "def área(r): return π·r² 🚀"
ids = tok.encode(sample)
print(len(sample), "characters →", len(ids), "byte tokens:", ids[:12], "...")
assert tok.decode(ids) == sample

# %% [markdown]
# The corpus is the `.py` sources of the standard library of the Python running this notebook: real
# code, comments and docstrings, licensed under the PSF licence, present on every machine (see
# `data/README.md`). Files are split into train and validation *by file*, so validation code is unseen.
# `load_corpus_dataset()` is the corpus as a Hugging Face `DatasetDict` (splits `train` / `val`, one row per
# file, its bytes as a torch tensor); `load_corpus()` joins each split's files into one token stream to
# cut training windows from.
#
# A useful yardstick is the **unigram entropy** $H = -\sum_x p(x)\ln p(x)$ of the byte frequencies, with
# $p(x)$ = (count of byte $x$) / (number of bytes): the loss of the best model that ignores context. A
# language model has to get well below it.
#
# ### Exercise 1 (warm-up) · the unigram entropy
# Write it: `tokens` is a 1-D integer tensor of byte values (0–255); return $H$ in **nats** (natural
# log), summing only over the byte values that occur.

# %%
def my_unigram_entropy(tokens: torch.Tensor) -> float:
    raise NotImplementedError  # your code here


_ = check("unigram_entropy", my_unigram_entropy)

# %% [markdown]
# The library's version (`kimi_mini.data.unigram_entropy`), used from here on:

# %%
print(inspect.getsource(unigram_entropy))
corpus_ds = load_corpus_dataset()
print(corpus_ds)
print(corpus_ds["val"][0]["path"], "→", corpus_ds["val"][0]["input_ids"][:12], "...")
data = load_corpus()
H_unigram = unigram_entropy(data.val)
print(data)
print(f"unigram entropy of the validation bytes: {H_unigram:.3f} nats ({H_unigram / math.log(2):.2f} bits)")
print(tok.decode(data.val[:300]))

# %% [markdown]
# ## The model
# `KimiMini` is a pre-norm decoder: for each of the $L$ blocks
# $$x \leftarrow x + \mathrm{Attn}(\mathrm{RMSNorm}(x)),\qquad x \leftarrow x + \mathrm{FFN}(\mathrm{RMSNorm}(x)),$$
# with rotary position embeddings inside attention, a SwiGLU feed-forward
# $\mathrm{FFN}(x) = W_2(\mathrm{silu}(W_1x)\odot W_3x)$, and an untied LM head — the skeleton of Kimi K2.
# Attention and FFN are looked up by name (`"mha"`, `"dense"`; later `"mla"`, `"moba"`, `"moe"`), so the
# block never changes when a new component arrives:

# %%
print(inspect.getsource(Block))

# %%
config = KimiConfig(d_model=SIZES["d_model"], n_layers=SIZES["n_layers"], n_heads=SIZES["n_heads"],
                    d_ff=SIZES["d_model"] * 8 // 3 // 32 * 32, max_seq_len=SIZES["seq_len"])
n = count_params(config)
print(config)
print(f"{n.total:,} parameters ({n.activated:,} used per token — the same for a dense model)")

# %% [markdown]
# ### Exercise 2 (predict, then run) · the loss before training
# The weights start as small Gaussians (std 0.02). Before running the next cell, predict the
# cross-entropy (in nats per byte) of this *untrained* model on random bytes, and return it. The checker
# builds a fresh model, measures it and compares (within 3 %).

# %%
def my_init_loss_prediction() -> float:
    raise NotImplementedError  # your prediction, a number


_ = check("init_loss_prediction", my_init_loss_prediction)

# %% [markdown]
# The run: shapes on a tiny batch, the loss at initialisation, and the property that makes it a
# *language* model — changing a future token never changes the logits of earlier positions (causality).

# %%
torch.manual_seed(0)
model = KimiMini(config).to(nb.device)
x = torch.randint(0, 256, (2, 16), device=nb.device)
logits, loss = model(x, x)
print("tokens", tuple(x.shape), "→ logits", tuple(logits.shape), f"; loss at init {loss.item():.3f} "
      f"(ln 256 = {math.log(256):.3f}: tiny weights give logits ≈ 0, a uniform guess over 256 bytes)")
y = x.clone()
y[:, 9:] = 0
assert torch.equal(model(y)[0][:, :9], logits[:, :9]), "positions ≤ 8 must not see tokens ≥ 9"

# %% [markdown]
# ## A kernel, checked
# Each technique in the course comes as a reference, a fast PyTorch path and a Triton kernel, and the
# course shows that they agree. The first kernel is a fused RMSNorm (`kernels/rmsnorm.py`),
# $y = x\cdot\mathrm{rstd}\cdot g$ with $\mathrm{rstd} = 1/\sqrt{\operatorname{mean}(x^2) + \varepsilon}$,
# one row of $x$ per program. Without a GPU it runs in Triton's CPU interpreter — correct, not fast.
# Its forward kernel, read line by line:

# %%
from kimi_mini.kernels import rmsnorm as rmsnorm_module  # noqa: E402
from kimi_mini.kernels.rmsnorm import rmsnorm  # noqa: E402
from kimi_mini.layers import rmsnorm_reference  # noqa: E402
from kimi_mini.testing import max_rel_error  # noqa: E402

kernel_src = inspect.getsource(rmsnorm_module._rmsnorm_fwd_kernel.fn).splitlines()  # .fn: the Python under @triton.jit
for i, line in enumerate(kernel_src, 1):
    print(f"{i:>2} │ {line}")

# %% [markdown]
# 1. `@triton.jit` compiles the function for the GPU (or, with `TRITON_INTERPRET=1`, runs it with NumPy
#    on the CPU).
# 2. The signature: `X, W, Y, RSTD` are *pointers* to first elements; `stride_x` is how far apart rows
#    are; `BLOCK_N` is a compile-time constant (a power of two ≥ N).
# 3. `row = tl.program_id(0).to(tl.int64)`: the host launches one program per row (grid `(M,)`); 64-bit
#    so that `row * stride_x` cannot overflow at 10⁹ elements.
# 4. `cols = tl.arange(0, BLOCK_N)`: a vector of column indices — every line below works on a whole row.
# 5. `mask = cols < N`: the block is a power of two, the row may not be (N = 63 below); lanes ≥ N must
#    neither read nor write.
# 6. `tl.load(X + row * stride_x + cols, mask=mask, other=0.0).to(tl.float32)`: pointer arithmetic gives
#    the row's addresses; masked lanes read 0, which adds nothing to Σx²; upcast to fp32 right away.
# 7. `tl.load(W + cols, ...)`: the gain vector, shared by all rows.
# 8. `rstd = 1 / sqrt(sum(x * x) / N + eps)`: the reduction over the row — divide by the true N, not by
#    `BLOCK_N`.
# 9. `tl.store(RSTD + row, rstd)`: saved for the backward kernel, so it need not recompute it.
# 10. `tl.store(Y + row * stride_y + cols, (x * rstd * w).to(Y.dtype.element_ty), mask=mask)`: normalise,
#     scale, cast back to the output's dtype, write only the valid lanes.
#
# The host wrapper (`rmsnorm_fwd`) flattens `[..., N]` into rows, allocates `y` and `rstd`, and launches
# `_rmsnorm_fwd_kernel[(M,)](...)`. Launched by hand on 3 rows of 5, against the formula:

# %%
x3 = torch.randn(3, 5, device=nb.device)
g3 = torch.rand(5, device=nb.device)
y3, rstd3 = torch.empty_like(x3), torch.empty(3, device=nb.device)
rmsnorm_module._rmsnorm_fwd_kernel[(3,)](x3, g3, y3, rstd3, x3.stride(0), y3.stride(0), 5, 1e-6, BLOCK_N=8)
print("rstd  kernel", [f"{v:.4f}" for v in rstd3.tolist()])
print("rstd  torch ", [f"{v:.4f}" for v in x3.pow(2).mean(-1).add(1e-6).rsqrt().tolist()])
print(f"max |y_kernel − y_torch| = {(y3 - x3 * rstd3[:, None] * g3).abs().max():.1e}")

# %% [markdown]
# ### Exercise 3 (derive) · the RMSNorm backward
# The backward kernel needs $\partial L/\partial x$. For $y = x \cdot r \cdot g$ with
# $r = (\overline{x^2} + \varepsilon)^{-1/2}$ over a row of width $N$, derive $dx$ from $dy$ — remember that
# $r$ depends on every $x_j$ of the row. Return `dx` (same shape as `x`); the checker compares it with
# autograd on the reference, in fp64.

# %%
def my_rmsnorm_backward_dx(x, weight, dy, eps):
    raise NotImplementedError  # your code here


_ = check("rmsnorm_backward_dx", my_rmsnorm_backward_dx)

# %% [markdown]
# The backward kernel implements exactly that formula, $dx = r\,(dy \odot g - x\, r^2\, \overline{dy \odot g
# \odot x})$, walking the rows in a grid-stride loop and keeping its share of $dg$ in registers:

# %%
print(inspect.getsource(rmsnorm_module._rmsnorm_bwd_kernel.fn))

# %% [markdown]
# The full autograd function (forward *and* the backward kernel) against the PyTorch reference, on an
# odd width (63, so the mask matters):

# %%
xs = torch.randn(5, 63, device=nb.device, requires_grad=True)  # on the GPU the kernel is compiled: CUDA tensors
w = torch.rand(63, device=nb.device, requires_grad=True)
y_ref, y_ker = rmsnorm_reference(xs, w), rmsnorm(xs, w)
g_ref = torch.autograd.grad(y_ref.sum(), (xs, w))
g_ker = torch.autograd.grad(y_ker.sum(), (xs, w))
print(f"forward max rel. error {max_rel_error(y_ker, y_ref):.1e}; "
      f"dx {max_rel_error(g_ker[0], g_ref[0]):.1e}; dw {max_rel_error(g_ker[1], g_ref[1]):.1e}")

# %% [markdown]
# ## Training
# One loop (`kimi_mini.train.train`) serves every notebook: seeded batches, warm-up + cosine learning
# rate, gradient clipping, periodic validation, callbacks after each step (later: MoE bias updates,
# QK-Clip), exact resume from checkpoints.

# %%
SEED = nb.seeds[0]
torch.manual_seed(SEED)
model = KimiMini(config).to(nb.device)
opt = torch.optim.AdamW(model.parameters(), lr=SIZES["lr"], betas=(0.9, 0.95), weight_decay=0.1)
history = train(model, opt, data, steps=SIZES["steps"], batch_size=SIZES["batch_size"], seq_len=SIZES["seq_len"],
                lr_schedule=warmup_cosine(SIZES["steps"], warmup=SIZES["steps"] // 10), eval_every=SIZES["steps"] // 5,
                autocast_dtype=P.dtype, desc="00 tour", seed=SEED)
val = [(r["step"], r["val_loss"]) for r in history if "val_loss" in r]
final_val = val[-1][1]

# %%
fig, ax = plt.subplots()
ax.plot([r["step"] for r in history], [r["loss"] for r in history], lw=0.8, alpha=0.6, label="train")
ax.plot(*zip(*val, strict=True), "o-", label="validation")
ax.axhline(H_unigram, color="gray", ls="--", label=f"unigram entropy {H_unigram:.2f}")
ax.set(xlabel="step", ylabel="cross-entropy (nats / byte)", title="KimiMini on the stdlib corpus")
ax.legend()
nb.savefig(fig, "loss")
plt.show()

# %% [markdown]
# Samples from the trained model (temperature 0.8, KV-cache decoding). At the toy size expect code-shaped
# text — indentation, `def`, `self.` — rather than working programs.

# %%
prompt = torch.tensor([tok.encode("def ")], device=nb.device)
out = model.generate(prompt, max_new_tokens=P.pick(toy=120, gpu=400), temperature=0.8,
                     generator=torch.Generator(device=nb.device).manual_seed(0))
print(tok.decode(out[0]))

# %% [markdown]
# ### Explore: temperature and top-k
# Sampling turns the logits $z$ of the next byte into probabilities in two steps: divide by a
# **temperature** $\tau$, then keep only the **top-k** bytes,
# $$p_{\tau,k}(x) \propto \exp(z_x/\tau)\ \text{if } x \text{ is among the } k \text{ largest } z,\ \text{else } 0.$$
# $\tau \to 0$ is greedy decoding (all the mass on one byte), $\tau > 1$ flattens the distribution toward
# uniform; top-k cuts off the long tail of unlikely bytes that a high temperature would otherwise let
# through. `kimi_mini.model.sampling_probs` is that formula, and `generate` draws from it:

# %%
import ipywidgets as widgets  # noqa: E402

from kimi_mini.model import sampling_probs  # noqa: E402
from kimi_mini.notebooks import interactive_figure  # noqa: E402

print(inspect.getsource(sampling_probs))

# %% [markdown]
# Move the sliders: the bars are the trained model's next-byte distribution after the prompt (grey outline:
# plain softmax, $\tau = 1$ and no top-k), and the text under them is a short sample drawn with the same
# settings — from the same random seed each time, so a change you see comes from $\tau$ and $k$ alone.

# %%
EXPLORE_PROMPT = "        return self."
explore_ids = torch.tensor([tok.encode(EXPLORE_PROMPT)], device=nb.device)
with torch.no_grad():
    next_logits = model(explore_ids)[0][0, -1].cpu()  # [256]: logits of the byte after the prompt
raw = sampling_probs(next_logits, 1.0)
shown = raw.topk(20).indices  # the 20 bytes the model finds likeliest, in that order on the x-axis


def byte_label(b: int) -> str:
    return {32: "␣", 10: "\\n", 9: "\\t"}.get(b, chr(b) if 33 <= b < 127 else f"x{b:02x}")


def draw_sampling(temperature: float, top_k: int):
    p = sampling_probs(next_logits, temperature, top_k or None)  # top_k 0: no cut-off
    sample = model.generate(explore_ids, 48, temperature=temperature, top_k=top_k or None,
                            generator=torch.Generator(device=nb.device).manual_seed(0))[0, len(explore_ids[0]):]
    fig, ax = plt.subplots(figsize=(9, 4.2))
    xs = range(len(shown))
    ax.bar(xs, raw[shown], fill=False, edgecolor="gray", label="τ = 1, no top-k")
    ax.bar(xs, p[shown], width=0.6, color="C0", label=f"τ = {temperature:.1f}, top-k = {top_k or 'off'}")
    ax.set_xticks(list(xs), [byte_label(int(b)) for b in shown], family="monospace")
    entropy = float(-(p[p > 0] * p[p > 0].log()).sum())
    ax.set(ylim=(0, 1), ylabel="p(next byte)", title=f"after {EXPLORE_PROMPT.strip()!r}: entropy {entropy:.2f} nats, "
           f"{int((p > 0).sum())} bytes possible")
    ax.legend(loc="upper right")
    text = "".join(c if c.isascii() and c.isprintable() else "⏎" if c == "\n" else "·"  # no missing glyphs
                   for c in EXPLORE_PROMPT.strip() + tok.decode(sample))
    fig.text(0.02, 0.02, "sample: " + text, family="monospace", fontsize=8, parse_math=False)
    fig.subplots_adjust(bottom=0.22)
    return fig


_ = interactive_figure(
    draw_sampling,
    save=lambda fig: nb.savefig(fig, "sampling"),
    temperature=widgets.FloatSlider(value=0.8, min=0.0, max=2.0, step=0.1, description="temperature"),
    top_k=widgets.IntSlider(value=0, min=0, max=20, description="top-k (0 off)"),
)

# %% [markdown]
# ## The claim
# A sanity claim every later notebook relies on: the model learns structure beyond byte frequencies.
# We call it *well below* when the validation loss is under 75 % of the unigram entropy — judged on 32
# held-out batches scored one by one, so the verdict carries its own uncertainty (the 95 % interval over
# batches must lie below 0.75).

# %%
ratio = final_val / H_unigram
per_batch = [evaluate(model, data, batch_size=SIZES["batch_size"], seq_len=SIZES["seq_len"], batches=1, seed=100 + i,
                      autocast_dtype=P.dtype) / H_unigram for i in range(32)]
m = sum(per_batch) / len(per_batch)
se = (sum((r - m) ** 2 for r in per_batch) / (len(per_batch) - 1) / len(per_batch)) ** 0.5
below = Evidence(m, se, len(per_batch), "examples", threshold=0.75, direction="below",
                 what="val loss / unigram entropy over held-out batches", fmt=".3f")
nb.record_claim(
    "A trained KimiMini's validation loss falls well below the corpus's unigram entropy",
    paper_value="a language model must beat the context-free baseline",
    ours=f"val loss {final_val:.3f} vs unigram entropy {H_unigram:.3f} nats (ratio {ratio:.2f}) after "
         f"{SIZES['steps']} steps",
    evidence=below,
    precondition="none",
    explanation="measured on held-out stdlib files; 'well below' means ratio < 0.75; the interval is over 32 "
                "held-out batches of this one model (a second seed set trains another)",
    paper="course baseline (byte-level LM sanity check)",
)

# %% [markdown]
# ## Recap
# **What you learnt.** Every notebook is a preset (`toy`/`gpu`) plus code from the `kimi_mini` library;
# the data is bytes (a 256-token vocabulary, exactly reversible) from real Python source; `KimiMini` is
# K2's skeleton — pre-norm blocks of RoPE attention and a SwiGLU FFN, looked up by name so later
# notebooks can swap in MoE, MLA and MoBA; an untrained model's loss is ln 256 ≈ 5.55 nats; the unigram
# entropy is the bar a model must clear to show it uses context; sampling divides the logits by a
# temperature and keeps the top-k bytes — lower τ or smaller k trade variety for the model's favourite
# continuation; and a Triton kernel is a per-program
# function over a block of indices, with masks for the ragged edge, checked against a PyTorch reference
# in outputs and gradients.
#
# **Where this sits in the papers.** The block structure is K2's architecture (arXiv 2507.20534, its
# model-architecture section: a pre-norm decoder with RMSNorm and SwiGLU experts; here with a dense FFN
# and MHA). The warm-up + cosine schedule and AdamW (β = (0.9, 0.95), weight decay 0.1) are the
# baseline Moonlight compares Muon against (arXiv 2502.16982).
#
# **What changes at scale.** K2 uses a 160K-token BPE vocabulary rather than bytes (4× fewer tokens per
# text), 61 layers of width 7168, MLA attention with 64 heads and 384-expert MoE FFNs, 15.5 T tokens,
# bf16 compute — and the RMSNorm kernel's 64-bit row offsets stop being a formality at 10⁹-element
# activations. The `gpu` preset here is ~4× wider and trains ~15× longer than `toy`.
#
# **Where to go next.** [01 · MoE](01_moe.ipynb) replaces the dense FFN with K2's routed experts;
# [02 · Muon](02_muon.ipynb) replaces AdamW with Moonlight's Muon (and has a Triton exercise in the
# style of the kernel above).

# %%
print(f"notebook time: {nb.elapsed():.0f} s")

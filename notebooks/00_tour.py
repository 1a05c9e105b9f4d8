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
# 4. check a Triton kernel against its PyTorch reference;
# 5. train the model, look at its loss curve and its samples, and record the notebook's claim;
# 6. do the first exercise.
#
# **Run time:** `toy` ≈ 1 minute on 2 CPU cores; `gpu` a few minutes.

# %% tags=["parameters"]
PRESET = "toy"  # "toy" (CPU, ≤ 90 s) or "gpu" (one H100/H200)
RUN_DIR = None  # set by `kimi-mini reproduce`: where claims and figures go

# %%
import inspect
import math

import matplotlib.pyplot as plt
import torch

from kimi_mini.data import ByteTokenizer, load_corpus, unigram_entropy
from kimi_mini.exercises import check
from kimi_mini.model import Block, KimiConfig, KimiMini, count_params
from kimi_mini.notebooks import start_notebook
from kimi_mini.train import train, warmup_cosine

nb = start_notebook("00_tour", PRESET, RUN_DIR)
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
SIZES

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
#
# A useful yardstick is the **unigram entropy** $H = -\sum_x p(x)\ln p(x)$ of the byte frequencies: the
# loss of the best model that ignores context. A language model has to get well below it.

# %%
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
# Shapes on a tiny batch, and the property that makes it a *language* model: changing a future token
# never changes the logits of earlier positions (causality).

# %%
torch.manual_seed(0)
model = KimiMini(config).to(nb.device)
x = torch.randint(0, 256, (2, 16), device=nb.device)
logits, loss = model(x, x)
print("tokens", tuple(x.shape), "→ logits", tuple(logits.shape), f"; loss at init {loss.item():.3f} "
      f"(ln 256 = {math.log(256):.3f})")
y = x.clone()
y[:, 9:] = 0
assert torch.equal(model(y)[0][:, :9], logits[:, :9]), "positions ≤ 8 must not see tokens ≥ 9"

# %% [markdown]
# ## A kernel, checked
# Each technique in the course comes as a reference, a fast PyTorch path and a Triton kernel, and the
# course shows that they agree. The first kernel is a fused RMSNorm (`kernels/rmsnorm.py`); without a GPU
# it runs in Triton's CPU interpreter — correct, not fast.

# %%
from kimi_mini.kernels.rmsnorm import rmsnorm  # noqa: E402
from kimi_mini.layers import rmsnorm_reference  # noqa: E402
from kimi_mini.testing import max_rel_error  # noqa: E402

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
torch.manual_seed(0)
model = KimiMini(config).to(nb.device)
opt = torch.optim.AdamW(model.parameters(), lr=SIZES["lr"], betas=(0.9, 0.95), weight_decay=0.1)
history = train(model, opt, data, steps=SIZES["steps"], batch_size=SIZES["batch_size"], seq_len=SIZES["seq_len"],
                lr_schedule=warmup_cosine(SIZES["steps"], warmup=SIZES["steps"] // 10), eval_every=SIZES["steps"] // 5,
                autocast_dtype=P.dtype, desc="00 tour")
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
                     generator=torch.Generator().manual_seed(0))
print(tok.decode(out[0]))

# %% [markdown]
# ## The claim
# A sanity claim every later notebook relies on: the model learns structure beyond byte frequencies.
# We call it *well below* when the validation loss is at most 75 % of the unigram entropy.

# %%
ratio = final_val / H_unigram
nb.record_claim(
    "A trained KimiMini's validation loss falls well below the corpus's unigram entropy",
    paper_value="a language model must beat the context-free baseline",
    ours=f"val loss {final_val:.3f} vs unigram entropy {H_unigram:.3f} nats (ratio {ratio:.2f}) after "
         f"{SIZES['steps']} steps",
    holds=ratio <= 0.75,
    explanation="measured on held-out stdlib files; 'well below' means ratio ≤ 0.75",
    paper="course baseline (byte-level LM sanity check)",
)

# %% [markdown]
# ## Exercise: the unigram entropy
# Every notebook ends with exercises. Write the function below, then run the checker: it prints
# **PASS**, **FAIL** (with a hint) or **NOT ATTEMPTED**, and never stops the notebook. The solution is
# `kimi_mini.data.unigram_entropy`.
#
# *Compute* $H = -\sum_x p(x) \ln p(x)$ over the byte values that occur in `tokens`, in nats.

# %%
def my_unigram_entropy(tokens: torch.Tensor) -> float:
    raise NotImplementedError  # your code here


check("unigram_entropy", my_unigram_entropy)
print(f"notebook time: {nb.elapsed():.0f} s")

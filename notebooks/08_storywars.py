# %% [markdown]
# # 08 · StoryWars in miniature: instruction tuning on collaborative stories
#
# **Paper:** *StoryWars: A Dataset and Instruction Tuning Baselines for Collaborative Story Understanding and
# Generation* — Du & Chilton, ACL 2023 (arXiv 2305.08152).
#
# StoryWars is 40,135 stories written *together* on an online platform: each chapter by a possibly different
# author. The paper turns it into **12 task types** (7 understanding, 5 generation), instantiated per genre
# into 101 tasks split into disjoint *fully-supervised*, *few-shot* and *zero-shot* sets, and trains
# **InstructStory** — one T5 instruction-tuned on all supervised tasks at once. Its finding: instructions help
# in every regime, most of all zero-shot (60.00 vs 32.09 for plain T5).
#
# **In this notebook you will**
# 1. generate collaborative stories whose every hidden variable is known — authors with measurable styles,
#    genres with plot templates, temporal cues, popularity — and see one story coloured by author;
# 2. meet all 12 task types as text-to-text examples with ground truth recomputed from story structure;
# 3. compute the paper's metrics offline: F1, Spearman, **boundary similarity**, ROUGE-L and
#    candidate-ranking accuracy (and see why BERTScore is out of reach);
# 4. train InstructStory, single-task models and a no-instruction multitask model (KimiMini, bytes), and
#    compare them fully supervised, few-shot and zero-shot — zero-shot on task types no model was trained on —
#    over 3 seeds;
# 5. implement boundary similarity, write an instruction for a new task, predict which type gains most.
#
# **Run time:** `toy` ≈ 100–110 s of CPU time on one core from a fresh clone (3 task types × 4 genres, 3 seeds; the
# weights are then cached under `data/cache/storywars/` and a re-run skips training); `gpu` all 12 task types ×
# 6 genres, larger model — sized for minutes on one H100/H200 but not yet run there.

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
import dataclasses
import statistics
import textwrap
import time

import matplotlib.pyplot as plt
import torch

from kimi_mini.exercises import check
from kimi_mini.exercises.storywars import set_measured_gains
from kimi_mini.notebooks import interactive_figure, start_notebook
from kimi_mini.report import Evidence, Precondition
from kimi_mini.storywars.corpus import CorpusConfig, author_style_stats, generate_corpus, load_corpus
from kimi_mini.storywars.evaluate import generate_answer, predict, score_type
from kimi_mini.storywars.experiment import REGIMES, ExperimentConfig, regime_tasks, run_experiment, summarise
from kimi_mini.storywars.metrics import boundaries_from_masses, boundary_similarity, rouge_l, spearman
from kimi_mini.storywars.plots import draw_chapters, story_view_figure
from kimi_mini.storywars.tasks import (
    GENERATION,
    HELD_OUT,
    TASK_TYPES,
    UNDERSTANDING,
    Task,
    ground_truth,
    make_examples,
    render,
    task_splits,
)
from kimi_mini.storywars.train import TrainSpec, collate, encode_example, pretrained_lm

nb = start_notebook("08_storywars", PRESET, RUN_DIR, SEEDS)
T_START = time.process_time()
P = nb.preset
if P.name == "toy":
    torch.set_num_threads(1)  # tiny matrices: a second thread only waits
PAPER = "StoryWars (arXiv 2305.08152)"

# %% [markdown]
# ## 1 · The corpus: stories whose every label is known
# The real corpus cannot be had offline, so `kimi_mini.storywars.corpus` writes stories from a generator. It
# controls exactly what the 12 tasks ask about:
#
# | hidden variable | how it shows in the text | tasks that read it |
# |---|---|---|
# | genre | cast, places, objects, plot clauses | genre classification |
# | author | connective, sentence ending, sentence length, favourite phrase, vivid words | attribution, verification |
# | chapter order | plot stage (setup → … → ending), optional "On day d," | temporal, connectivity, ordering |
# | popularity | `log likes = 2 + 1.5·vivid rate + 0.25·chapters + noise`, normalised to 0–10 | story scoring |
#
# The toy preset writes shorter stories (one sentence per chapter, one clause per sentence, 4 genres) so that a
# byte-level model reads a whole example within its 192-byte context; the gpu preset uses the full generator.

# %%
FULL = CorpusConfig()  # the full generator: 6 genres, 12 authors, 3–4 chapters of 1–2 sentences
TOY_CORPUS = CorpusConfig(n_stories=480, n_authors=8, genres=("fantasy", "scifi", "mystery", "romance"),
                          chapters=(3, 3), sentences=(1, 1), max_clauses=1)
showcase = generate_corpus(FULL)
story = next(s for s in showcase.stories if len(s.chapters) == 4 and len(set(s.authors)) >= 3)
colours = dict(zip(sorted(set(story.authors)), plt.cm.tab10.colors, strict=False))
fig, ax = plt.subplots(figsize=(9, 2.4))
ax.axis("off")
draw_chapters(ax, story, colours, y=0.95, width=105, fontsize=8.5, line=0.085, gap=0.07)
ax.set_title(f"story {story.id} · {story.genre} · {story.likes} likes (score {story.score}/10) · "
             "one colour per author", fontsize=9)
nb.savefig(fig, "story-by-author")
plt.show()

# %% [markdown]
# Authors' styles are *measurable*: the generator's parameters show up as frequencies in the text.

# %%
stats = author_style_stats(showcase)
cols = ["clauses/sentence", "ends '.'", "ends '!'", "ends '...'", "ends ';'", "phrase", "vivid/sentence"]
print(f"{'author':6s}" + "".join(f"{c:>17s}" for c in cols))
for name, row in list(stats.items())[:8]:
    print(f"{name:6s}" + "".join(f"{row[c]:17.2f}" for c in cols))
likes_rho = spearman([sum(c.vivid for c in s.chapters) / sum(len(c.sentences) for c in s.chapters)
                      for s in showcase.stories], [s.likes for s in showcase.stories])
print(f"\nSpearman(vivid words per sentence, likes) over {len(showcase.stories)} stories: {likes_rho:.2f}")

# %% [markdown]
# ## 2 · Twelve task types, one text-to-text format
# A task is a (task type, genre) pair. Each example is *instruction + input → answer*, scored by ranking the
# answer options (for generation types: the true output among distractors — chapters at the same plot stage of
# other stories of the genre). `ground_truth` recomputes every answer from the story structure alone.

# %%
for t in UNDERSTANDING + GENERATION:
    ex = make_examples(showcase, Task(t, "western"), "train", 1, seed=3)[0]
    prompt, target = render(ex)
    assert ground_truth(showcase, ex) == ex.answer
    kind = TASK_TYPES.get(t)
    print(f"── {t} ({kind.kind}, metric: {kind.metric}, {len(ex.options)} options)")
    print(textwrap.shorten(prompt.replace("\n", " ⏎ "), 200) + " →" + target.rstrip("\n"))

# %% [markdown]
# The three regimes hold disjoint tasks. The paper's split is per genre: for the i-th type, genre i is zero-shot,
# genre i+1 few-shot, the rest fully supervised — every type is trained in some genres, every genre in some types.

# %%
splits_full = task_splits(UNDERSTANDING + GENERATION, FULL.genres)
print({r: len(v) for r, v in splits_full.items()}, "tasks (the paper: 101 tasks over the same 12 types)")
print("zero-shot:", ", ".join(t.name for t in splits_full["zero_shot"][:4]), "…")

# %% [markdown]
# In that split a zero-shot task is a *known* task type in a new genre, and a model that ignores the instruction
# can answer it from what it learnt on the type's other genres — it does not test whether instructions are read.
# The toy preset therefore holds out two task **types** of our own (`HELD_OUT`), never trained by any model, whose
# instruction names the skill in the words genre classification is trained with, on an input format that skill was
# not trained on: two chapters A and B → "Is chapter **A** from a {genre} story?" (`chapter_a_genre`) or "… chapter
# **B** …" (`chapter_b_genre`); the other chapter comes from a story of any genre.
#
# Neither label can be read from training priors: a model that does not read *which genre* is asked sees a chapter
# of genre x answered "yes" exactly as often as "no" over the held-out tasks (the test suite checks it), and the
# asked genre is never the trained types' few-shot genre, whose stories were only ever negatives in training (that
# would invert the labels). They are evaluated in the genres every trained type is supervised in.
#
# *Setting changed after a pilot:* the first design held out `story_in_order` ("does each chapter happen before the
# next?" on a possibly shuffled story) beside `chapter_genre` (A only, negatives from every other genre). In that
# pilot (seeds 0–2) the no-instruction model answered `story_in_order` from its priors (85.6 F1 against chance
# 49.6 — an in-order story simply looks like the stories it was trained on) and beat chance on `chapter_genre`
# from the negatives' genre (56.1), so the precondition below could not be met; both were replaced by the design
# above before the run you see.

# %%
for t in HELD_OUT:
    exs = make_examples(showcase, Task(t, "western"), "test", 200, seed=3)
    assert all(ground_truth(showcase, e) == e.answer for e in exs)
    prompt, target = render(exs[0])
    print(f"── {t} (held out; {sum(e.answer == 'yes' for e in exs)}/200 'yes')")
    print(textwrap.shorten(prompt.replace("\n", " ⏎ "), 200) + " →" + target.rstrip("\n"))

# %% [markdown]
# **Browse a story.** Pick a story and a task type: the story's chapters, coloured by author, and below them what
# that task makes of the story — the instruction, the input and the label the model is trained or scored on
# (`story_view`: a seeded example of that type that reads this story; pair tasks may set it beside another
# story's chapter). In Jupyter the controls redraw the figure; elsewhere it shows story 0's first task type.

# %%
import ipywidgets as widgets  # noqa: E402

VIEW_TYPES = UNDERSTANDING + GENERATION + HELD_OUT
_ = interactive_figure(
    lambda story_id, task_type: story_view_figure(showcase, story_id, task_type),
    save=lambda fig: nb.savefig(fig, "story-browser"),
    story_id=widgets.IntSlider(0, 0, len(showcase.stories) - 1, description="story"),
    task_type=widgets.Dropdown(options=VIEW_TYPES, value=VIEW_TYPES[0], description="task"),
)

# %% [markdown]
# ## 3 · Metrics that can be computed offline
# - **F1** (classification types), **Spearman's ρ** (story scoring) — as in the paper.
# - **Boundary similarity** (segmentation; Fournier 2013). Align two boundary sets by an edit distance: exact
#   matches $M$, near misses (transpositions within $n_t$ units, weight $|i-j|/n_t$) and additions/deletions $A$
#   (weight 1): $$B = 1 - \frac{|A| + \sum_{T} |i-j|/n_t}{|A| + |T| + |M|}.$$
# - **Generation.** The paper scores generated text with BERTScore — cosine similarity of contextual embeddings
#   from a pretrained RoBERTa. That model is a download we cannot make offline, and a byte-level toy has no
#   embedding worth trusting in its place. We use two substitutes: **ROUGE-L** (longest common subsequence F1
#   of words against the reference) and **candidate-ranking accuracy** (does the model's log-probability put the
#   true continuation above distractors?). Neither measures meaning as BERTScore does; what the paper's comparisons
#   need is that a metric *ranks systems* the right way. Whether the two substitutes agree on that is checked on
#   two systems at the end of section 6 (one pair of systems: evidence, not proof).

# %%
seg_ref, seg_hyp = boundaries_from_masses([2, 3, 6]), boundaries_from_masses([2, 2, 7])
print(f"boundaries {seg_ref} vs {seg_hyp}: B = {boundary_similarity(seg_ref, seg_hyp):.3f} (one near miss)")
print(f"boundaries {seg_ref} vs [5]:    B = {boundary_similarity(seg_ref, [5]):.3f} (one boundary missed)")
print(f"ROUGE-L('Cody drew the pistol', 'Cody drew the old pistol!') = "
      f"{rouge_l('Cody drew the pistol', 'Cody drew the old pistol!'):.3f}")

# %% [markdown]
# ## 4 · Models
# Every model is a byte-level `KimiMini`. All start from one **story language model** trained on the training
# stories (the stand-in for the pretrained T5 of the paper), then:
# - **InstructStory** fine-tunes on all fully-supervised tasks at once, each prompt headed by its instruction;
# - **no-instruction**: same tasks, same steps, the prompt headed only by a task-id token `<task NN>`;
# - **single-task**: one model per task type, trained on that type's supervised tasks for InstructStory's own step
#   count (as the paper trains each single-task T5 fully, not on a share of the multitask budget);
# - **story LM**: the story language model itself, given the instructions (the paper's zero-shot T5 row).
#
# All are trained with Muon (notebook 02).
#
# The loss is on answer tokens only: $L = -\frac{1}{|a|}\sum_{t\in a}\log p(x_t\mid x_{<t})$; prompt positions
# carry the ignore index −100.

# %%
ex = make_examples(showcase, Task("temporal_inference", "scifi"), "train", 1)[0]
print(render(ex)[0].split("\n")[0], "   vs   ", render(ex, instruction=False, task_id=17)[0].split("\n")[0])
x, y = collate([encode_example(*render(ex), 512)])
scored = (y[0] != -100).nonzero().flatten()
print(f"x {tuple(x.shape)}; scored positions {scored.tolist()} predict {bytes(y[0, scored].tolist())!r}")

# %%
SIZES = P.pick(
    toy=dict(corpus=TOY_CORPUS, types=("temporal_inference", "connectivity_inference", "genre_classification"),
             spec=TrainSpec(d_model=48, n_layers=2, n_heads=2, d_ff=128, max_seq_len=192, steps=200,
                            batch_size=12, lr=4e-3, optimizer="muon"),
             lm_steps=200, pool=256, n_eval=48, k_shot=12, few_shot_steps=12, seeds=nb.seeds,
             zero_shot_types=HELD_OUT),
    gpu=dict(corpus=FULL, types=UNDERSTANDING + GENERATION,
             spec=TrainSpec(d_model=256, n_layers=6, n_heads=8, d_ff=704, max_seq_len=768, steps=3000,
                            batch_size=64, lr=2e-3, warmup=100, device="cuda", optimizer="muon"),
             lm_steps=1500, pool=2000, n_eval=200, k_shot=32, few_shot_steps=60, seeds=nb.seeds,
             zero_shot_types=HELD_OUT),
)
cfg = ExperimentConfig(**SIZES)
print(cfg.spec, f"\n{len(cfg.types)} task types × {len(cfg.corpus.genres)} genres, seeds {cfg.seeds}")
for regime, tasks in regime_tasks(cfg).items():
    print(f"{regime:10s} {len(tasks):2d} tasks: {', '.join(t.name for t in tasks)}")

# %% [markdown]
# ## 5 · The experiment: three regimes, three seeds
# **Predict first (exercise 3).** Of the two held-out task types, which will gain most *zero-shot* from
# instructions — InstructStory minus the no-instruction model? Both name the genre skill; think about where in the
# prompt the named chapter sits, and what a model that reads the genre word but not "A"/"B" would answer. Write
# your answer now; it is checked at the end.

# %%
def my_prediction():
    raise NotImplementedError  # return one task-type name, e.g. "temporal_inference"


# %% [markdown]
# **Before measuring** (the preconditions and thresholds of section 6 were fixed here): the zero-shot comparison
# means something only if InstructStory has learnt its trained tasks (above chance on them) and the
# no-instruction model cannot answer the held-out types from its training priors (not above chance on them).
#
# Trained weights are cached by a hash of everything that decides them, so only the first run trains.

# %%
results = run_experiment(cfg, log=print)
summary = summarise(results)

# %%
def fmt(ms):
    return f"{ms[0]:6.1f} ± {ms[1]:4.1f}"


PAPER_AVG = {"supervised": {"InstructStory": "+1.53 over single-task T5"},
             "few_shot": {"InstructStory": "61.44", "no-instruction": "59.45 (FLAN-T5)"},
             "zero_shot": {"InstructStory": "60.00", "no-instruction": "47.79 (FLAN-T5)", "story LM": "32.09 (T5)"}}
print(f"{'regime':11s} {'model':15s} {'average (0–100)':>16s}   paper")
for regime in REGIMES:
    for model, (mean, sd, _) in summary["average"][regime].items():
        print(f"{regime:11s} {model:15s} {fmt((mean, sd)):>16s}   {PAPER_AVG[regime].get(model, '')}")
    print(f"{regime:11s} {'chance':15s} {summary['chance'][regime]['average']:6.1f}")

# %% [markdown]
# Per task type (mean ± sd over seeds; F1 ×100 for these types). The paper reports per-type scores in its
# Tables 3–5; the summary we work from quotes only the regime averages, so those stand beside ours.

# %%
types = sorted(summary["per_type"]["supervised"]["InstructStory"])
zs_types = sorted(summary["per_type"]["zero_shot"]["InstructStory"])
for regime in REGIMES:
    cols = zs_types if regime == "zero_shot" else types
    print(f"{regime:11s} {'model':15s}" + "".join(f"{t[:22]:>24s}" for t in cols))
    for model, per in summary["per_type"][regime].items():
        print(f"{regime:11s} {model:15s}" + "".join(f"{fmt(per[t]):>24s}" for t in cols))
    print(f"{regime:11s} {'chance':15s}" + "".join(f"{summary['chance'][regime][t]:24.1f}" for t in cols))

# %% [markdown]
# Each model against chance, per task type and regime: the mean paired difference over seeds and its 95 % interval
# (Student t) — "above" / "below" when the interval clears 0, "≈" when it straddles it. Chance is a uniform random
# guesser; macro F1 also punishes a model that answers mostly one option without reading anything wrong (a
# constant answer scores ≈ 33 on a balanced yes/no task), so "below" alone does not mean inverted labels.

# %%
for regime in REGIMES:
    for model in summary["per_type"][regime]:
        row = []
        for t in sorted(summary["per_type"][regime][model]):
            ev = Evidence.paired([r["scores"][regime][model][t] for r in results],
                                 [r["chance"][regime][t] for r in results], fmt="+.1f")
            word = {"yes": "above", "no": "below"}.get(ev.verdict, "≈")
            name = t.rsplit("_", 1)[0] if t in HELD_OUT else t.split("_")[0]
            row.append(f"{name} {ev.estimate:+.1f} ± {ev.margin:.1f} ({word})")
        print(f"{regime:11s} {model:15s} " + "; ".join(row))

# %%
fig, axes = plt.subplots(1, 3, figsize=(11, 3.4), sharey=True)
palette = {"InstructStory": "tab:blue", "single-task": "tab:green", "no-instruction": "tab:orange",
           "story LM": "tab:grey"}
for ax, regime in zip(axes, REGIMES, strict=True):
    models = list(summary["per_type"][regime])
    types_r = zs_types if regime == "zero_shot" else types
    width = 0.8 / len(models)
    for m_i, model in enumerate(models):
        per = summary["per_type"][regime][model]
        ax.bar([i + m_i * width for i in range(len(types_r))], [per[t][0] for t in types_r], width,
               yerr=[per[t][1] for t in types_r], label=model, color=palette[model], capsize=2)
    for i, t in enumerate(types_r):
        ax.hlines(summary["chance"][regime][t], i - width / 2, i + 0.8 - width / 2, colors="k", linestyles=":")
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(types_r))],
                  [t.rsplit("_", 1)[0] if t in HELD_OUT else t.split("_")[0] for t in types_r], fontsize=8)
    ax.set_title(regime.replace("_", "-") + (" (held-out types)" if regime == "zero_shot" else ""))
    ax.legend(fontsize=7, loc="lower left")
axes[0].set_ylabel("F1 × 100 (dotted: chance)")
nb.savefig(fig, "three-regimes")
plt.show()

# %% [markdown]
# ## 6 · Claims
# Thresholds fixed before the runs. Seeds change the initialisation and batch order of every fine-tuned model
# (the story LM and the corpus are shared); each claim compares the per-seed *paired* differences of the average
# over the claim's task types. Connectivity inference is left out of the supervised and few-shot claims' averages,
# decided from the measurement that prompted this design (an earlier run in which no model, not even the fully
# supervised single-task one, learnt it at toy scale): an unlearnable type adds only noise to every comparison. It
# stays in the tables. The zero-shot claim averages over both held-out types.

# %%
CLAIM_TYPES = tuple(t for t in cfg.types if t != "connectivity_inference")


def claim_types(regime):
    return zs_types if regime == "zero_shot" else CLAIM_TYPES


def per_seed(regime, model):
    return [statistics.fmean(r["scores"][regime][model][t] for t in claim_types(regime)) for r in results]


def chance_per_seed(regime):
    return [statistics.fmean(r["chance"][regime][t] for t in claim_types(regime)) for r in results]


def avg_sd(regime, model):
    return (statistics.fmean(per_seed(regime, model)), statistics.stdev(per_seed(regime, model)))


print("claims average over", list(CLAIM_TYPES), "(zero-shot: the held-out types", zs_types, ")")


def gain(regime, a, b):
    return Evidence.paired(per_seed(regime, a), per_seed(regime, b), what=f"{a} − {b}", fmt="+.1f",
                           suffix=" points")


def above_chance(regime, model):
    return Evidence.paired(per_seed(regime, model), chance_per_seed(regime), what=f"{model} − chance ({regime})",
                           fmt="+.1f", suffix=" points")


ev1 = gain("supervised", "InstructStory", "single-task")
nb.record_claim(
    "Fully supervised: InstructStory's average over task types is at least the single-task models' average",
    paper_value="+1.53 over single-task T5 (average over the supervised tasks)",
    ours=(f"InstructStory {fmt(avg_sd('supervised', 'InstructStory'))} vs single-task "
          f"{fmt(avg_sd('supervised', 'single-task'))}; {ev1.describe()}"),
    evidence=ev1,
    precondition=Precondition.from_evidence("the single-task baseline is above chance on its own tasks",
                                            above_chance("supervised", "single-task")),
    explanation=(f"{len(cfg.types)} task types in {len(regime_tasks(cfg)['supervised'])} supervised tasks; each "
                 f"single-task model gets InstructStory's own step count ({cfg.single_task_steps or cfg.spec.steps}), "
                 "as the paper trains each single-task T5 fully"),
    paper=PAPER,
)
ev2 = gain("few_shot", "InstructStory", "no-instruction")
nb.record_claim(
    "Few-shot: InstructStory fine-tuned on k examples of an unseen task beats the no-instruction model",
    paper_value="61.44 (InstructStory) vs 59.45 (FLAN-T5)",
    ours=(f"InstructStory {fmt(avg_sd('few_shot', 'InstructStory'))} vs no-instruction "
          f"{fmt(avg_sd('few_shot', 'no-instruction'))}; {ev2.describe()} (k = {cfg.k_shot})"),
    evidence=ev2,
    precondition=Precondition.from_evidence("InstructStory is above chance on the tasks it was trained on",
                                            above_chance("supervised", "InstructStory")),
    explanation="our baseline is a no-instruction multitask model (a task-id token), not FLAN-T5",
    paper=PAPER,
)
ev3 = gain("zero_shot", "InstructStory", "no-instruction")
ev3b = above_chance("zero_shot", "InstructStory")
chance0 = statistics.fmean(chance_per_seed("zero_shot"))
pre3a, pre3b = above_chance("supervised", "InstructStory"), above_chance("zero_shot", "no-instruction")
pre3 = Precondition("InstructStory is above chance on its trained tasks, and the no-instruction model is not above "
                    "chance on the held-out types (their labels cannot be read from training priors)",
                    f"{pre3a.describe()}; {pre3b.describe()}", pre3a.verdict == "yes" and pre3b.verdict != "yes")
nb.record_claim(
    "Zero-shot: InstructStory is well above the no-instruction model and above chance on unseen tasks",
    paper_value="60.00 (InstructStory) vs 32.09 (T5), 47.79 (FLAN-T5)",
    ours=(f"InstructStory {fmt(avg_sd('zero_shot', 'InstructStory'))} vs no-instruction "
          f"{fmt(avg_sd('zero_shot', 'no-instruction'))}; chance {chance0:.1f}; {ev3.describe()}; "
          f"{ev3b.describe()}"),
    evidence=[ev3, ev3b],
    precondition=pre3,
    explanation=(f"zero-shot tasks are task types no model was trained on ({', '.join(zs_types)}), whose "
                 "instruction names the skill; both parts must hold: a gain over the no-instruction model (whose "
                 "id tokens for these tasks were never trained) and a score above chance"),
    paper=PAPER,
)

# %% [markdown]
# **Reading the verdicts.** The numbers of this run, against the paper's:

# %%
for regime, a_, b_ in (("supervised", "InstructStory", "single-task"),
                       ("supervised", "no-instruction", "InstructStory"),
                       ("few_shot", "InstructStory", "no-instruction"),
                       ("zero_shot", "InstructStory", "no-instruction")):
    ev = gain(regime, a_, b_)
    print(f"{regime:10s} {a_} − {b_}: {ev.describe()} → {ev.verdict}")
print(f"zero_shot  InstructStory − chance: {ev3b.describe()} → {ev3b.verdict} (the zero-shot claim needs both "
      "zero-shot parts)")
print(f"zero-shot chance {chance0:.1f} over the held-out types {', '.join(zs_types)}; "
      "paper: supervised +1.53, few-shot 61.44 vs 59.45, zero-shot 60.00 vs 47.79 (FLAN-T5) / 32.09 (T5)")
n_sup = len(regime_tasks(cfg)["supervised"])
print(f"At this scale the model is trained on {len(cfg.types)} task types in {n_sup} supervised tasks (the paper: "
      "about 60 supervised tasks of 12 types): few instructions to learn to read a new one from — a likely reason "
      "for a zero-shot miss, not one this run tests.")

# %% [markdown]
# ### Do the substitutes for BERTScore rank systems?
# The toy run trains no generation task (it would not fit the CPU budget); the gpu preset trains all five. Here
# the two substitutes judge two systems on next-chapter generation — an untrained model and the story LM, both
# given the story so far as plain text (the LM's own format) — and we check whether they order them the same way.

# %%
gen_ex = make_examples(load_corpus(cfg.corpus), Task("next_chapter_generation", cfg.corpus.genres[0]), "test",
                       P.pick(toy=48, gpu=200))
n_gen = P.pick(toy=8, gpu=100)  # greedy decoding is one forward per byte: ROUGE-L on the first n_gen


def plain(ex):  # no instruction, no "Answer:": the story so far, then the chapter
    return ex.input, f" {ex.answer}\n"


story_lm, _ = pretrained_lm([s.text for s in load_corpus(cfg.corpus).split("train")],
                            dataclasses.replace(cfg.spec, seed=0), cfg.lm_steps)
torch.manual_seed(0)
untrained = type(story_lm)(story_lm.config).to(story_lm.lm_head.weight.device)
gen_scores = {}
for name, m in (("untrained", untrained), ("story LM", story_lm)):
    rank = score_type("next_chapter_generation", gen_ex, predict(m, gen_ex, plain))
    rl = statistics.fmean(100 * rouge_l(generate_answer(m, plain(e)[0], 48), e.answer) for e in gen_ex[:n_gen])
    gen_scores[name] = (rank, rl)
    print(f"{name:10s} candidate-ranking accuracy {rank:5.1f} (chance {100 / len(gen_ex[0].options):.0f}, "
          f"{len(gen_ex)} examples)   ROUGE-L {rl:5.1f} ({n_gen} generations)")
verdicts = ["story LM better" if gen_scores["story LM"][i] > gen_scores["untrained"][i] else
            "tie" if gen_scores["story LM"][i] == gen_scores["untrained"][i] else "untrained better" for i in (0, 1)]
print(f"ranking accuracy: {verdicts[0]}; ROUGE-L: {verdicts[1]} → the two substitutes "
      + ("agree" if verdicts[0] == verdicts[1] else "do not agree") + " on these two systems")
print("e.g.", repr(generate_answer(story_lm, plain(gen_ex[0])[0], 48)), "\n vs", repr(gen_ex[0].answer))

# %% [markdown]
# ## Exercises
# **1. Boundary similarity.** Write `B(reference, hypothesis, n_t)` for boundary positions (sorted ints): count
# exact matches, pair the remaining boundaries into near misses (|i − j| < n_t, cost |i − j|/n_t) or leave them
# as additions/deletions (cost 1), choosing the cheapest alignment. (Solution:
# `kimi_mini.storywars.metrics.boundary_similarity`.)

# %%
def my_boundary_similarity(reference, hypothesis, n_t=2):
    raise NotImplementedError  # your code here


_ = check("boundary_similarity", my_boundary_similarity)

# %% [markdown]
# **2. An instruction for a new task.** A new task type, *same story*: given chapters A and B, were they taken
# from the same story? Its input format is the one three existing task types already use. Return an
# instruction template with one `{genre}` slot that a model could tell apart from theirs.

# %%
def my_same_story_instruction():
    raise NotImplementedError  # your code here: return "...{genre}..."


_ = check("same_story_instruction", my_same_story_instruction)

# %% [markdown]
# **3. Predict, then run** (answered in section 5, checked here). Your prediction against the run's zero-shot
# gains (InstructStory minus the no-instruction model, per task type):

# %%
set_measured_gains({t: summary["per_type"]["zero_shot"]["InstructStory"][t][0]
                    - summary["per_type"]["zero_shot"]["no-instruction"][t][0] for t in zs_types})
_ = check("storywars_zero_shot_gain", my_prediction)

# %% [markdown]
# ## Recap
# - **What was built.** A generator of collaborative stories with controlled genres, author styles, chapter
#   order and popularity; all 12 StoryWars task types as instruction + input → answer with ground truth
#   recomputed from structure; F1, Spearman, boundary similarity, ROUGE-L and candidate ranking; InstructStory,
#   single-task and no-instruction KimiMini models in three disjoint regimes.
# - **Paper map.** §3 (dataset, 12 task types), §4 (task instantiation per genre, regimes), §5 and Tables 3–5
#   (InstructStory vs single-task T5, FLAN-T5 and T5).
# - **What differs.** A generator instead of 40k human stories (it cannot capture real authors' voices, plot
#   creativity or why readers like a story); a byte-level model started from a small story LM instead of T5
#   (its `TrainSpec` is printed in section 4); at the toy preset 3 of the 12 types in 9 supervised tasks (the paper:
#   101 tasks); the zero-shot regime on two held-out task types of our own rather than the paper's unseen
#   (type, genre) tasks; BERTScore replaced by ROUGE-L and candidate ranking.
# - **At scale.** More task types and genres give the model many instructions to generalise over; the paper's
#   zero-shot result rests on that, and the toy preset has few.
# - **What the mechanism is.** Tasks that share an input format (two chapters → yes/no) are told apart only by
#   their instruction: the paper's claim is that a model trained with instructions can run a new task from its
#   instruction, while a model that only saw task ids cannot know what a new id asks. The held-out types test
#   exactly that — their labels cannot be read from training priors. Whether the toy run shows it is in the
#   claims and the per-type table above, not in this sentence.

# %%
print(f"notebook CPU time: {time.process_time() - T_START:.0f} s; wall {nb.elapsed():.0f} s")

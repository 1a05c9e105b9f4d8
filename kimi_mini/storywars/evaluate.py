"""Scoring StoryWars models: rank classification over answer options, the paper's metrics per task type.

Paper: *StoryWars* (arXiv 2305.08152), §5. Every task is scored by ranking its options with the model's
log-probability ``s(o | prompt) = Σ_t log p(o_t | prompt, o_<t)`` (the ZeroPrompt/T0 rank classification):

- classification types (F1): the arg-max option;
- story scoring (Spearman): the expected score ``Σ_k k · softmax(s)_k`` over the options "0" … "10";
- story segmentation (boundary similarity): the arg-max among all boundary sets;
- generation types (candidate-ranking accuracy): the true output among distractors, scored by the
  *mean* log-probability per byte (candidates differ in length; a sum would favour the shortest).
ROUGE-L needs text from the model: :func:`generate_answer` decodes greedily up to the newline.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import torch
from torch import Tensor

from kimi_mini.model import KimiMini
from kimi_mini.prompts.rank import rank_classify
from kimi_mini.storywars.metrics import boundary_similarity, macro_f1, ranking_accuracy, rouge_l, spearman
from kimi_mini.storywars.tasks import TASK_TYPES, Example
from kimi_mini.storywars.train import Renderer

__all__ = ["option_logprobs", "predict", "score_type", "evaluate_tasks", "chance_scores", "generate_answer",
           "type_metric"]


def option_logprobs(model: KimiMini, prompts: Sequence[str], options: Sequence[Sequence[str]],
                    reduction: str = "sum", batch_size: int = 64) -> list[Tensor]:
    """Per prompt, a tensor ``[n_options]`` of ``Σ_t log p(option_t | prompt, option_<t)`` (``reduction="sum"``)
    or its mean per option byte (``"mean"``). Each option is scored as the target ``" " + option + "\\n"`` of
    :func:`~kimi_mini.storywars.tasks.render`, through the shared scorer
    :func:`kimi_mini.prompts.rank_classify` (ZeroPrompt's batched rank classification); a prompt too long for
    the model loses its start, as in training (:func:`~kimi_mini.storywars.train.encode_example`)."""
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction: expected 'sum' or 'mean', got {reduction!r}")
    if len(prompts) != len(options):
        raise ValueError(f"prompts, options: expected equal lengths, got {len(prompts)} and {len(options)}")
    targets = [[f" {o}\n" for o in opts] for opts in options]
    room = [model.config.max_seq_len - max(len(t.encode()) for t in ts) for ts in targets]
    if min(room) < 1:
        raise ValueError(f"options: an option does not fit max_seq_len={model.config.max_seq_len}")
    cut = [p.encode()[-r:].decode("utf-8", errors="ignore") for p, r in zip(prompts, room, strict=True)]
    _, scores = rank_classify(model, cut, targets, batch_size=batch_size)
    if reduction == "mean":
        scores = [s / torch.tensor([float(len(t.encode())) for t in ts]) for s, ts in zip(scores, targets, strict=True)]
    return [s.float() for s in scores]


def type_metric(type_name: str) -> str:
    if not isinstance(type_name, str) or type_name not in TASK_TYPES:
        raise ValueError(f"type_name: expected one of {TASK_TYPES.names()}, got {type_name!r}")
    return TASK_TYPES.get(type_name).metric


def _reduction(type_name: str) -> str:
    return "mean" if TASK_TYPES.get(type_name).kind == "generation" else "sum"


def predict(model: KimiMini, examples: Sequence[Example], renderer: Renderer) -> list[str | float]:
    """The model's answer per example (option string; for story scoring the expected score)."""
    if not examples:
        raise ValueError("examples: expected at least one example")
    types = {ex.type for ex in examples}
    if len(types) != 1:
        raise ValueError(f"examples: expected one task type per call, got {sorted(types)}")
    t = types.pop()
    prompts = [renderer(ex)[0] for ex in examples]
    scores = option_logprobs(model, prompts, [ex.options for ex in examples], reduction=_reduction(t))
    if t == "story_scoring":
        return [float((torch.softmax(s, 0) * torch.tensor([float(o) for o in ex.options])).sum())
                for s, ex in zip(scores, examples, strict=True)]
    return [ex.options[int(s.argmax())] for s, ex in zip(scores, examples, strict=True)]


def _scores(predictions: Sequence, type_name: str) -> list[float]:
    """Scores (numbers or option strings like ``"7"``) as finite floats; ``ValueError`` naming ``predictions``."""
    try:
        out = [float(p) if not isinstance(p, bool) else math.nan for p in predictions]
    except (TypeError, ValueError):
        out = [math.nan]
    if not all(math.isfinite(v) for v in out):
        raise ValueError(f"predictions: expected finite scores for {type_name}, got {list(predictions)[:4]!r}")
    return out


def score_type(type_name: str, examples: Sequence[Example], predictions: Sequence) -> float:
    """The paper's metric for one task type, on a 0–100 scale (Spearman ×100 can be negative)."""
    metric = type_metric(type_name)
    gold = [ex.answer for ex in examples]
    if isinstance(predictions, (str, bytes)) or not isinstance(predictions, Sequence) or \
            len(predictions) != len(gold):
        raise ValueError(f"predictions: expected one prediction per example ({len(gold)}), got {predictions!r:.80}")
    if metric == "f1":
        return 100 * macro_f1(gold, list(predictions))
    if metric == "spearman":
        return 100 * spearman([float(g) for g in gold], _scores(predictions, type_name))
    if metric == "boundary":
        def parse(s):
            return [int(v) for v in str(s).split()]
        pairs = zip(gold, predictions, strict=True)
        return 100 * sum(boundary_similarity(parse(g), parse(p)) for g, p in pairs) / len(gold)
    return 100 * ranking_accuracy(gold, list(predictions))


def evaluate_tasks(model: KimiMini, examples: dict[str, list[Example]], renderer: Renderer) -> dict[str, float]:
    """Metric per *task type* over the given tasks' examples (tasks of one type are pooled)."""
    by_type: dict[str, list[Example]] = {}
    for exs in examples.values():
        for ex in exs:
            by_type.setdefault(ex.type, []).append(ex)
    return {t: score_type(t, exs, predict(model, exs, renderer)) for t, exs in by_type.items()}


def chance_scores(examples: dict[str, list[Example]], draws: int = 50, seed: int = 0) -> dict[str, float]:
    """Expected metric per task type of a predictor that picks an option uniformly at random (mean of
    ``draws`` seeded draws; story scoring: a random score, Spearman ≈ 0)."""
    if isinstance(draws, bool) or not isinstance(draws, int) or not 1 <= draws <= 10**5:
        raise ValueError(f"draws: expected an int in [1, 100000], got {draws!r}")
    rng = random.Random(seed)
    by_type: dict[str, list[Example]] = {}
    for exs in examples.values():
        for ex in exs:
            by_type.setdefault(ex.type, []).append(ex)
    out = {}
    for t, exs in by_type.items():
        vals = [score_type(t, exs, [rng.choice(ex.options) for ex in exs]) for _ in range(draws)]
        out[t] = sum(vals) / len(vals)
    return out


@torch.no_grad()
def generate_answer(model: KimiMini, prompt: str, max_new_tokens: int = 96) -> str:
    """Greedy decoding of the answer after ``prompt`` until the newline that ends every target."""
    from kimi_mini.data import ByteTokenizer

    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens: expected an int >= 1, got {max_new_tokens!r}")
    tok = ByteTokenizer()
    ids = tok.encode(prompt)
    room = model.config.max_seq_len - max_new_tokens
    if room < 1:
        raise ValueError(f"max_new_tokens: {max_new_tokens} leaves no room for a prompt in "
                         f"max_seq_len={model.config.max_seq_len}")
    ids = ids[-room:]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    cache = model.new_cache()
    logits, _ = model(torch.tensor([ids], device=device), cache=cache)
    out: list[int] = []
    for _ in range(max_new_tokens):
        nxt = int(logits[0, -1].argmax())
        if nxt == ord("\n"):
            break
        out.append(nxt)
        logits, _ = model(torch.tensor([[nxt]], device=device), cache=cache)
    model.train(was_training)
    return tok.decode(out).strip()


def rouge_l_of(model: KimiMini, examples: Sequence[Example], renderer: Renderer, max_new_tokens: int = 96) -> float:
    """Mean ROUGE-L (×100) of greedy generations against the true outputs."""
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens: expected an int >= 1, got {max_new_tokens!r}")
    if not examples:
        return math.nan
    vals = [rouge_l(generate_answer(model, renderer(ex)[0], max_new_tokens), ex.answer) for ex in examples]
    return 100 * sum(vals) / len(vals)

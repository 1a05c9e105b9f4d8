"""Genetic Prompt Search: selection (exactly K kept, parents never carried over, archive re-ranked), the filters,
equal-budget random search, the dev split, the operators, prompt tuning's embedding path, in-context learning."""

import random

import pytest
import torch

from kimi_mini.model import KimiConfig, KimiMini
from kimi_mini.prompts.gps import (
    accuracy,
    dev_split,
    genetic_prompt_search,
    icl_accuracy,
    random_search,
    task_label_words,
)
from kimi_mini.prompts.operators import (
    ClozeRewrite,
    Continuation,
    GeneratorLM,
    WordSubstitution,
    filter_reason,
    literal_spans,
)
from kimi_mini.prompts.prompt_tuning import (
    _option_sums,
    forward_embeds,
    options_loss,
    select_soft_prompt,
    soft_prompt_accuracy,
    tune_soft_prompt,
)
from kimi_mini.prompts.tasks import Example, Task

MANUAL = ["Nice? {text}", "Is {text} nice?", "{text} nice? {options}"]


def _task(n=40):
    words = ["good fun", "bad day", "great joy", "awful mess", "lovely", "horrid"]
    exs = tuple(Example({"text": f"{words[i % 6]} {i}"}, i % 2) for i in range(n))
    return Task("toy:nice", "toy", tuple(MANUAL), ("yes", "no"), exs)


def _append_op(tag):
    def op(template, rng):
        return template.replace("?", f" {tag}{rng.randrange(10**6)}?", 1)
    op.name = tag
    return op


def _score(template):  # deterministic, arbitrary, with ties (steps of 1/32, like a 32-example dev set)
    return (sum(map(ord, template)) * 2654435761 % 33) / 32


class Counting:
    def __init__(self, fn):
        self.fn, self.calls = fn, []

    def __call__(self, t):
        self.calls.append(t)
        return self.fn(t)


def test_gps_keeps_exactly_k_never_carries_parents_and_reranks_the_archive():
    scorer = Counting(_score)
    ops = [_append_op("a"), _append_op("b")]
    res = genetic_prompt_search(None, _task(), None, MANUAL, generations=4, keep=2, operators=ops,
                                children_per_parent=3, scorer=scorer)
    assert len(res.history) == 5 and [c.template for c in res.history[0]] == MANUAL
    for t, gen in enumerate(res.history):
        kept = [c for c in gen if c.kept]
        assert len(kept) == 2, f"generation {t} keeps exactly K"
        assert sorted(c.score for c in gen)[-2:] == sorted(c.score for c in kept), "the kept are the top K"
        if t:
            parents = {c.template for c in res.history[t - 1] if c.kept}
            assert all(c.parent in parents for c in gen), "children only of the kept"
            assert not {c.template for c in gen} & {c.template for c in res.history[t - 1]}, "no parent carried over"
            assert len(gen) == 2 * 3
    archive = res.archive
    assert len(archive) == 2 * 5
    best = sorted(archive, key=lambda c: -c.score)[:2]
    assert [c.score for c in res.top] == [c.score for c in best]
    assert res.n_evaluations == len(scorer.calls) == len(set(scorer.calls)) == 3 + 4 * 6


def test_gps_returns_an_early_prompt_when_later_generations_get_worse():
    # every child scores lower than its parent: the archive re-ranking must return the manual prompts
    def scorer(t):
        return 1.0 - 0.1 * t.count("?") - 0.01 * len(t)
    res = genetic_prompt_search(None, _task(), None, MANUAL, generations=3, keep=2, operators=[_append_op("x")],
                                scorer=scorer, children_per_parent=2)
    assert all(c.generation == 0 for c in res.top)
    assert {c.template for c in res.top} == set(sorted(MANUAL, key=lambda t: -scorer(t))[:2])


def test_random_search_spends_exactly_the_gps_budget():
    ops = [_append_op("a"), _append_op("b")]
    gps = genetic_prompt_search(None, _task(), None, MANUAL, generations=3, keep=2, operators=ops, scorer=_score)
    scorer = Counting(_score)
    rs = random_search(None, _task(), None, MANUAL, budget=gps.n_evaluations, keep=2, operators=ops, seed=1,
                       scorer=scorer, max_steps=3)
    assert rs.n_evaluations == len(scorer.calls) == len(set(scorer.calls)) == gps.n_evaluations
    assert len(rs.top) == 2 and rs.top[0].score == max(scorer.fn(t) for t in scorer.calls)
    assert set(MANUAL) <= set(scorer.calls)


@pytest.mark.parametrize("child,reason", [
    ("Nice? {text} {text}", "slot"), ("Nice? text", "slot"), ("Nice? {txt} {text}", "slot"), ("Nice? {text", "slot"),
    ("Nice, yes? {text}", "label leak"), ("No way, nice? {text}", "label leak"), ("Nice? {text}", "duplicate"),
    ("Really nice? {text}", None), ("Nice? {text} {options}", None), ("Nicely? {text} Yesterday", None),
], ids=lambda v: str(v))
def test_filters(child, reason):
    assert filter_reason(child, "Nice? {text}", ["text"], ["yes", "no"], seen={"Nice? {text}"}) == reason


def test_label_word_already_in_the_parent_is_not_a_leak():
    parent = "Good or bad: {text}"
    assert filter_reason("Good or bad here: {text}", parent, ["text"], ["good", "bad"], set()) is None
    assert filter_reason("Good or bad, good: {text}", parent, ["text"], ["good", "bad"], set()) == "label leak"


def test_dev_split_is_stratified_disjoint_and_seeded():
    task = _task(41)
    dev, test = dev_split(task, 32, seed=3)
    assert len(dev) == 32 and len(test) == 9
    assert sum(e.label for e in dev) == 16
    assert not {id(e) for e in dev} & {id(e) for e in test}
    assert dev == dev_split(task, 32, seed=3)[0] and dev != dev_split(task, 32, seed=4)[0]


def test_bad_input_raises_value_error():
    task, ops = _task(), [_append_op("a")]
    with pytest.raises(ValueError, match="keep"):
        genetic_prompt_search(None, task, None, MANUAL, keep=0, operators=ops, scorer=_score)
    with pytest.raises(ValueError, match="manual_prompts"):
        genetic_prompt_search(None, task, None, [], operators=ops, scorer=_score)
    with pytest.raises(ValueError, match="dev"):
        genetic_prompt_search(None, task, task.examples[:1], MANUAL, operators=ops)
    with pytest.raises(ValueError, match="n_dev"):
        dev_split(task, 1)
    with pytest.raises(ValueError, match="budget"):
        random_search(None, task, None, MANUAL, budget=0, operators=ops, scorer=_score)


class _FakeVectors:
    table = {"nice": [("pleasant", 0.8), ("lovely", 0.7)], "is": []}

    def __contains__(self, w):
        return w in self.table

    def nearest(self, w, k=5):
        return self.table[w][:k]


def test_word_substitution_replaces_one_word_by_a_neighbour_and_keeps_slots():
    op = WordSubstitution(_FakeVectors(), k=2)
    outs = {op("Is {text} nice?", random.Random(s)) for s in range(20)}
    assert outs == {"Is {text} pleasant?", "Is {text} lovely?"}
    assert op("Nice? {text}", random.Random(0)) in {"Pleasant? {text}", "Lovely? {text}"}
    assert op("{text} {options}", random.Random(0)) is None


def _tiny_lm(seed=0):
    torch.manual_seed(seed)
    return KimiMini(KimiConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64, max_seq_len=128))


def test_lm_operators_edit_only_after_the_cut_and_cloze_picks_the_likeliest():
    lm = GeneratorLM(_tiny_lm())
    cont = Continuation(lm)
    for s in range(5):
        child = cont("Is the review nice: {text}", random.Random(s))
        assert child.startswith("Is ") and child != "Is the review nice: {text}"
    cloze = ClozeRewrite(lm, n_candidates=3)
    for s in range(5):
        child = cloze("Is the review nice: {text}", random.Random(s))
        if child is not None:
            assert [f for _, f in literal_spans(child) if f] == ["text"]
    texts = ["Is it nice? {text}", "zzzz qqqq {text}"]
    ll = lm.loglik(texts)
    ref = []
    for t in texts:  # direct sum over bytes, one sequence at a time
        ids = torch.tensor([[10] + list(t.encode()) + [10]])
        with torch.no_grad():
            logp = torch.log_softmax(lm.model(ids)[0][0, :-1], -1)
        ref.append(float(logp.gather(1, ids[0, 1:, None]).sum()))
    assert ll == pytest.approx(ref, rel=1e-4)


def test_forward_embeds_equals_the_model_and_soft_prompt_trains_only_itself():
    model = _tiny_lm(1)
    x = torch.randint(0, 256, (2, 9))
    torch.testing.assert_close(forward_embeds(model, None, x), model(x)[0])
    task = _task(16)
    dev = list(task.examples[:8])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    soft, losses = tune_soft_prompt(model, task, dev, MANUAL[0], n_tokens=4, steps=15, lr=0.05)
    assert soft.shape == (4, 32) and losses[-1] < losses[0]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), "the model stays frozen"
    assert all(p.requires_grad for p in model.parameters()), "requires_grad flags restored"
    assert soft_prompt_accuracy(model, None, task, dev, MANUAL[0]) == accuracy(model, task, dev, MANUAL[0])


def test_icl_with_zero_shots_is_zero_shot_accuracy():
    model, task = _tiny_lm(2), _task(20)
    test = list(task.examples[10:])
    assert icl_accuracy(model, task, task.examples[:10], test, MANUAL[1], k=0) == accuracy(model, task, test, MANUAL[1])
    assert 0.0 <= icl_accuracy(model, task, task.examples[:10], test, MANUAL[1], k=2) <= 1.0
    assert task_label_words(task) == ["no", "yes"]


def test_random_search_reports_the_budget_it_could_not_spend():
    def dry(template, rng):  # an operator that never makes a new prompt
        return template

    rs = random_search(None, _task(), None, MANUAL, budget=10, keep=2, operators=[dry], seed=0, scorer=_score,
                       max_tries=2)
    assert rs.n_evaluations == len(MANUAL) and rs.shortfall == 10 - len(MANUAL)
    ok = random_search(None, _task(), None, MANUAL, budget=8, keep=2, operators=[_append_op("a")], scorer=_score)
    assert ok.n_evaluations == 8 and ok.shortfall == 0


def test_options_loss_is_cross_entropy_over_the_options_sums():
    model, task = _tiny_lm(3), _task(6)
    from kimi_mini.prompts.tasks import render
    rendered = [render(task, ex, MANUAL[0]) for ex in task.examples]
    prompts, options = [p for p, _ in rendered], [o for _, o in rendered]
    labels = [ex.label for ex in task.examples]
    sums = _option_sums(model, None, prompts, options).view(len(prompts), 2)
    want = -torch.log_softmax(sums, -1)[torch.arange(len(labels)), torch.tensor(labels)].mean()
    torch.testing.assert_close(options_loss(model, None, prompts, options, labels), want)


def test_select_soft_prompt_chooses_lr_and_step_on_the_held_out_half_only():
    model, task = _tiny_lm(4), _task(16)
    dev = list(task.examples[:12])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    soft, info = select_soft_prompt(model, task, dev, MANUAL[0], lrs=(1e-2, 1e-1), steps=10, eval_every=5,
                                    n_tokens=4, seed=0)
    assert soft.shape == (4, 32) and info["lr"] in (1e-2, 1e-1) and info["step"] in (0, 5, 10)
    best = max(acc for curve in info["curves"].values() for _, acc, _ in curve)
    assert info["val_acc"] == best  # the winner has the best validation accuracy of every (lr, step)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), "the model stays frozen"
    with pytest.raises(ValueError, match="lrs"):
        select_soft_prompt(model, task, dev, MANUAL[0], lrs=(0.0,))


def test_choose_tasks_never_picks_a_selection_task_and_always_returns_some():
    from kimi_mini.prompts.experiment import choose_tasks

    model = _tiny_lm(5)
    base = _task(64)
    zoo = {f"{fam}:{i}": Task(f"{fam}:{i}", fam, base.templates, base.verbalizer, base.examples)
           for fam in ("a", "b") for i in range(4)}
    chosen, rows = choose_tasks(model, zoo, list(zoo), 3, n_select=8)
    selection = {n for r in rows for n in r["selection"]}
    assert chosen and len(chosen) <= 3 and not set(chosen) & selection
    assert all(n in r["evaluation"] for n in chosen for r in rows if zoo[n].family == r["family"])
    with pytest.raises(ValueError, match="n_tasks"):
        choose_tasks(model, zoo, list(zoo), 0)

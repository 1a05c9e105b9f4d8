"""DMR / RNP library: CMD against a direct formula, metrics on hand-made masks, the straight-through
generator, the benchmark builder's gold rationale, and a tiny training run."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from kimi_mini.rationale.cmd import central_moments_torch, cmd, cmd_released
from kimi_mini.rationale.metrics import aspect_shares, highlight, rationale_metrics
from kimi_mini.rationale.models import Generator, Predictor, straight_through_select
from kimi_mini.rationale.train import RationaleConfig, continuity_loss, sparsity_loss
from kimi_mini.testing import assert_close


def _cmd_direct(x, y, K):
    """CMD written out element by element with Python floats."""
    N, D = x.shape
    total = 0.0
    cols = lambda t, j: [float(v) for v in t[:, j]]  # noqa: E731
    means_x = [sum(cols(x, j)) / len(x) for j in range(D)]
    means_y = [sum(cols(y, j)) / len(y) for j in range(D)]
    total += math.sqrt(sum((a - b) ** 2 for a, b in zip(means_x, means_y, strict=True)))
    for k in range(2, K + 1):
        cx = [sum((v - means_x[j]) ** k for v in cols(x, j)) / len(x) for j in range(D)]
        cy = [sum((v - means_y[j]) ** k for v in cols(y, j)) / len(y) for j in range(D)]
        total += math.sqrt(sum((a - b) ** 2 for a, b in zip(cx, cy, strict=True)))
    return total


@pytest.mark.parametrize("impl", ["reference", "torch"])
@pytest.mark.parametrize("K", [1, 2, 5])
def test_cmd_matches_direct_formula(impl, K):
    g = torch.Generator().manual_seed(K)
    x, y = torch.randn(13, 4, generator=g), torch.rand(9, 4, generator=g) * 3
    assert abs(float(cmd(x, y, K, impl=impl)) - _cmd_direct(x.double(), y.double(), K)) < 1e-4


def test_cmd_is_zero_for_identical_samples_and_symmetric():
    x = torch.randn(20, 6)
    assert float(cmd(x, x.clone())) == pytest.approx(0.0, abs=1e-6)
    assert float(cmd(x, x[torch.randperm(20)])) == pytest.approx(0.0, abs=1e-5)  # a set statistic
    y = torch.randn(15, 6) * 2
    assert float(cmd(x, y)) == pytest.approx(float(cmd(y, x)), rel=1e-6)


def test_cmd_sees_higher_moments_that_the_released_typo_misses():
    # same mean, different spread: true CMD > 0, the released x*k version sees (almost) nothing
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4000, 3, generator=g)
    y = torch.randn(4000, 3, generator=g) * 3
    y = y - y.mean(0) + x.mean(0)
    assert float(cmd(x, y)) > 50
    assert float(cmd_released(x, y)) < 1e-4


def test_central_moments_torch_values():
    x = torch.tensor([[0.0], [2.0], [4.0]])  # mean 2, deviations -2, 0, 2
    assert_close(central_moments_torch(x, 4)[:, 0], torch.tensor([2.0, 8 / 3, 0.0, 32 / 3]), what="moments")


def test_cmd_rejects_bad_input():
    with pytest.raises(ValueError, match="K"):
        cmd(torch.randn(3, 2), torch.randn(3, 2), K=0)
    with pytest.raises(ValueError, match="y"):
        cmd(torch.randn(3, 2), torch.randn(3, 4))
    with pytest.raises(ValueError, match="impl"):
        cmd(torch.randn(3, 2), torch.randn(3, 2), impl="cuda")
    with pytest.raises(ValueError, match="x"):
        cmd(torch.randn(3), torch.randn(3, 1))


def test_rationale_metrics_on_hand_made_masks():
    sel = torch.tensor([[1, 1, 0, 0, 1, 0], [0, 1, 1, 0, 0, 0]]).bool()
    gold = torch.tensor([[1, 1, 1, 0, 0, 0], [0, 0, 1, 1, 0, 0]]).bool()
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]]).bool()
    m = rationale_metrics(sel, gold, mask)
    # selected 5, gold 5, overlap 3 (2 + 1), real tokens 10
    assert m == pytest.approx({"precision": 3 / 5, "recall": 3 / 5, "f1": 3 / 5, "sparsity": 5 / 10})
    # selections on padding do not count
    sel_pad = sel.clone()
    sel_pad[1, 5] = True
    assert rationale_metrics(sel_pad, gold, mask) == pytest.approx(m)
    assert rationale_metrics(gold, gold, mask)["f1"] == 1.0
    empty = rationale_metrics(torch.zeros_like(sel), gold, mask)
    assert empty["precision"] == 0.0 and empty["f1"] == 0.0 and empty["sparsity"] == 0.0
    assert aspect_shares(sel, torch.tensor([[0, 0, 0, 1, 1, 2], [2, 2, 0, 0, -1, -1]]), 3) == pytest.approx(
        [3 / 5, 1 / 5, 1 / 5])


def test_rationale_metrics_rejects_bad_masks():
    with pytest.raises(ValueError, match="gold"):
        rationale_metrics(torch.zeros(2, 3).bool(), torch.zeros(2, 4).bool())
    with pytest.raises(ValueError, match="mask"):
        rationale_metrics(torch.zeros(2, 3).bool(), torch.zeros(2, 3).bool(), torch.ones(3, 2).bool())
    with pytest.raises(ValueError, match="selected"):
        rationale_metrics(torch.full((2, 3), 0.5), torch.zeros(2, 3).bool())


def test_highlight_marks_selected_and_gold():
    out = highlight(["a", "<b>", "c"], [True, False, True], [True, True, False])
    assert out.count("background") == 2 and out.count("border-bottom") == 2
    assert "&lt;b&gt;" in out and "<b>" not in out.replace('<span', '')


def test_draw_review_boxes_the_selection_and_underlines_the_gold():
    import matplotlib

    matplotlib.use("Agg")
    from kimi_mini.rationale.plots import draw_review

    tokens = ["a", "good", "film", "bad", "phone"] * 6  # 30 tokens: wraps at width 20
    sel = {"RNP": [i % 3 == 0 for i in range(30)], "DMR": torch.tensor([i < 4 for i in range(30)])}
    gold = [i < 5 for i in range(30)]
    fig = draw_review(tokens, sel, gold, width=20)
    ax = fig.axes[0]
    assert len(ax.patches) == 10 + 4  # one box per selected token
    assert len(ax.lines) == 2 * 5  # one underline per gold token, in each block
    assert "RNP: 10 tokens selected, 2 of them gold" in [t.get_text() for t in ax.texts][0]
    with pytest.raises(ValueError, match="gold"):
        draw_review(tokens, sel, gold[:3])
    with pytest.raises(ValueError, match="selections"):
        draw_review(tokens, {}, gold)


def test_straight_through_is_hard_forward_with_softmax_gradient():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [-1.0, 3.0]], requires_grad=True)
    z = straight_through_select(logits)
    assert z.tolist() == [0.0, 1.0, 1.0]
    (grad,) = torch.autograd.grad(z.sum(), logits)
    p = logits.detach().softmax(-1)[:, 1]
    want = torch.stack([-p * (1 - p), p * (1 - p)], -1)  # d softmax_1 / d logits
    assert_close(grad, want, what="grad")


def test_generator_selection_is_hard_masked_and_differentiable():
    torch.manual_seed(0)
    emb = torch.randn(20, 8)
    gen, pred = Generator(emb, 4), Predictor(emb, 4)
    ids = torch.randint(1, 20, (3, 7))
    mask = torch.ones(3, 7, dtype=torch.bool)
    mask[1, 5:] = False
    z = gen(ids, mask)
    assert set(z.unique().tolist()) <= {0.0, 1.0} and not z[1, 5:].any()
    logits, phi = pred(ids, mask, z)
    assert logits.shape == (3, 2) and phi.shape == (3, 8)
    logits.sum().backward()
    assert gen.head.weight.grad is not None and gen.head.weight.grad.abs().sum() > 0
    assert gen.embed.weight.grad is None  # frozen embeddings
    with pytest.raises(ValueError, match="mask"):
        gen(ids, mask.float())


def test_gumbel_generator_samples_in_training_and_is_the_argmax_in_eval():
    torch.manual_seed(0)
    emb = torch.randn(20, 8)
    gen = Generator(emb, 4, tau=1.0)
    ids = torch.randint(1, 20, (64, 9))
    mask = torch.ones(64, 9, dtype=torch.bool)
    with torch.no_grad():
        gen.head.bias.copy_(torch.tensor([0.3, 0.0]))  # argmax alone would drop every token
        gen.head.weight.zero_()
        gen.eval()
        assert not gen(ids, mask).any()
        gen.train()
        z = gen(ids, mask)
    # keep-probability of the Gumbel-max sample = softmax(0 − 0.3) = 0.43 per token
    assert set(z.unique().tolist()) == {0.0, 1.0} and abs(float(z.mean()) - 0.4256) < 0.05
    assert Generator(emb, 4).tau is None
    with pytest.raises(ValueError, match="tau"):
        Generator(emb, 4, tau=0.0)
    with pytest.raises(ValueError, match="gumbel_tau"):
        RationaleConfig(gumbel_tau=-1.0)


def test_sparsity_and_continuity_losses():
    z = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 1.0, 0.0, 1.0]])
    mask = torch.tensor([[True, True, True, True], [True, True, True, False]])
    assert float(sparsity_loss(z, mask, 0.5)) == pytest.approx(abs(3 / 7 - 0.5))
    assert float(continuity_loss(z, mask)) == pytest.approx(3 / 5)  # 1 + 2 changes over 3 + 2 real pairs


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="alpha"):
        RationaleConfig(alpha=1.5)
    with pytest.raises(ValueError, match="K"):
        RationaleConfig(K=0)


@pytest.fixture(scope="module")
def bench():
    from kimi_mini.rationale.data import build_reviews

    return build_reviews(dim=16)


def test_builder_gold_rationale_is_exactly_the_target_sentence(bench):
    from kimi_mini.rationale.data import tokenize
    from kimi_mini.realdata import vader_sentences

    sentences = {d: {} for d in bench.domains}
    for d in bench.domains:
        for s, r in vader_sentences(d):
            sentences[d].setdefault(tuple(tokenize(s)), set()).add(r)
    seen = {}
    for split in ("train", "test"):
        ds = bench.dataset[split]
        t = bench.tensors(split)
        for i in range(0, len(ds), 7):
            row = ds[i]
            aspect = torch.tensor(row["aspect"])
            for a, domain in enumerate(bench.domains):
                pos = (aspect == a).nonzero().flatten()
                assert len(pos) > 0 and int(pos[-1] - pos[0]) + 1 == len(pos)  # one contiguous sentence
                words = tuple(row["tokens"][int(pos[0]):int(pos[-1]) + 1])
                assert row["ratings"][a] in sentences[domain][words]  # a real sentence with its human rating
                if a == 0:
                    assert seen.setdefault(words, split) == split  # no target sentence in both splits
            gold_words = [w for w, g in zip(row["tokens"], t.gold[i].tolist(), strict=False) if g]
            assert tuple(gold_words) in sentences[bench.domains[0]]
            assert t.gold[i].sum() == (aspect == 0).sum() and not (t.gold[i] & ~t.mask[i]).any()
            assert abs(row["ratings"][0]) >= 0.5 and row["label"] == int(row["ratings"][0] > 0)


def test_tensors_come_from_the_datasetdict_by_map(bench):
    assert set(bench.dataset) == {"train", "test"}
    t = bench.tensors("test")
    row = bench.dataset["test"][4]  # the stored review: its words, per-token aspect, label
    n = len(row["tokens"])
    assert t.ids[4, :n].tolist() == [bench.vocab.index(w) for w in row["tokens"]] and not t.ids[4, n:].any()
    assert t.aspect[4, :n].tolist() == row["aspect"] and (t.aspect[4, n:] == -1).all()
    assert int(t.label[4]) == row["label"] and t.ids.dtype == t.aspect.dtype == t.label.dtype == torch.int64
    assert t.ids.shape == (bench.dataset["test"].num_rows, max(len(w) for w in bench.dataset["test"]["tokens"]))
    folder = Path(bench.dataset["test"].cache_files[0]["filename"]).parent  # the map's result is cached beside it
    assert any(f.name.startswith("cache-") and f.suffix == ".arrow" for f in folder.iterdir())


def test_builder_correlates_the_aspects_and_is_cached(bench):
    from kimi_mini.rationale.data import build_reviews

    rho = bench.aspect_correlation("train")
    assert all(0.55 <= r <= 0.8 for r in rho), rho
    again = build_reviews(dim=16)
    assert again.dataset["train"]["tokens"][:20] == bench.dataset["train"]["tokens"][:20]
    assert torch.equal(again.embeddings, bench.embeddings) and bench.embeddings.shape == (len(bench.vocab), 16)
    assert bench.embeddings[0].abs().sum() == 0  # padding row
    with pytest.raises(ValueError, match="rho"):
        build_reviews(rho=1.0)
    with pytest.raises(ValueError, match="distractors"):
        build_reviews(distractors=("movie",))


def test_shortcut_knob_makes_a_strong_label_tied_aspect_and_mild_targets():
    from kimi_mini.rationale.data import build_reviews

    sc = build_reviews(dim=16, shortcut_p=0.9, shortcut_min_abs=2.0, shortcut_max_tokens=6, max_abs_rating=2.0)
    for split in ("train", "test"):
        ds = sc.dataset[split]
        r = np.array(ds["ratings"])  # [N, 3], target first
        assert (np.abs(r[:, 1]) >= 2.0).all()  # the shortcut: strongly rated, short sentences only
        assert all(aspect.count(1) <= 6 for aspect in ds["aspect"][:200])
        assert ((np.abs(r[:, 0]) >= 0.5) & (np.abs(r[:, 0]) <= 2.0)).all()  # milder targets
    agree = sc.shortcut_agreement("train")
    assert 0.86 <= agree[0] <= 0.94, agree  # sign = label with probability 0.9
    assert sc.params["shortcut"] == [0.9, 2.0, 6] and "shortcut" not in build_reviews(dim=16).params
    for kw, name in ((dict(shortcut_p=1.5), "shortcut_p"), (dict(shortcut_p=0.9, shortcut_min_abs=float("nan")),
                     "shortcut_min_abs"), (dict(shortcut_p=0.9, shortcut_min_abs=3.9), "shortcut_min_abs"),
                     (dict(shortcut_p=0.9, shortcut_max_tokens=13), "shortcut_max_tokens"),
                     (dict(max_abs_rating=0.1), "max_abs_rating")):
        with pytest.raises(ValueError, match=name):
            build_reviews(dim=16, **kw)


def test_shortcut_with_repeats_is_drawn_afresh_for_each_copy_of_a_target():
    """09's build: every training target in 3 reviews, each with its own shortcut draw, so a full-text reader sees
    the same target with the shortcut agreeing and disagreeing (what lets the teacher prefer the target)."""
    from kimi_mini.rationale.data import build_reviews

    sc = build_reviews(dim=16, shortcut_p=0.8, shortcut_min_abs=2.0, shortcut_max_tokens=6, max_abs_rating=3.0,
                       train_repeats=3)
    ds = sc.dataset["train"]
    copies: dict[tuple, list[bool]] = {}
    for words, aspect, r, y in zip(ds["tokens"], ds["aspect"], ds["ratings"], ds["label"], strict=True):
        target = tuple(w for w, a in zip(words, aspect, strict=True) if a == 0)
        copies.setdefault((target, r[0]), []).append((r[1] > 0) == (y == 1))  # shortcut agrees with the label?
    assert len(copies) * 3 == len(ds) and all(len(v) == 3 for v in copies.values())
    mixed = sum(len(set(v)) == 2 for v in copies.values()) / len(copies)
    assert 0.38 <= mixed <= 0.58, mixed  # P(3 draws not all equal) = 1 − 0.8³ − 0.2³ = 0.48
    assert 0.77 <= sc.shortcut_agreement("train")[0] <= 0.83 and 0.74 <= sc.shortcut_agreement("test")[0] <= 0.86
    test = sc.dataset["test"]
    test_targets = {(tuple(w for w, a in zip(words, aspect, strict=True) if a == 0), r[0])
                    for words, aspect, r in zip(test["tokens"], test["aspect"], test["ratings"], strict=True)}
    assert len(test_targets) == len(test) and not test_targets & set(copies)  # once each, never a training target


def test_training_tiny_rnp_and_dmr_runs_and_selects_sparsely(bench):
    from kimi_mini.rationale.train import evaluate, teacher_accuracy, train_dmr, train_rnp, train_teacher

    tr = bench.tensors("train").take(torch.arange(256))
    te = bench.tensors("test").take(torch.arange(128))
    cfg = RationaleConfig(hidden=4, steps=30, teacher_steps=30, batch_size=32, lr=5e-3, alpha=0.3)
    teacher, hist = train_teacher(tr, bench.embeddings, cfg)
    assert not any(p.requires_grad for p in teacher.parameters())
    assert hist[-1]["loss"] < hist[0]["loss"] + 0.1
    assert 0.0 <= teacher_accuracy(teacher, te) <= 1.0
    rnp, dmr = train_rnp(tr, bench.embeddings, cfg), train_dmr(tr, bench.embeddings, teacher, cfg)
    for gen, pred, _ in (rnp, dmr):
        e = evaluate(gen, pred, te, teacher)
        assert e["z"].shape == te.mask.shape and not (e["z"] & ~te.mask).any()
        assert 0 <= e["f1"] <= 1 and e["kl"] >= 0 and sum(e["aspects"]) == pytest.approx(1.0, abs=1e-6)
    assert "cmd" in dmr[2][-1] and "om" in dmr[2][-1] and "cmd" not in rnp[2][-1]


def test_conv_encoder_has_the_gru_shapes_and_trains_the_generator():
    torch.manual_seed(0)
    emb = torch.randn(20, 8)
    gen, pred = Generator(emb, 4, encoder="conv"), Predictor(emb, 4, encoder="conv")
    ids = torch.randint(1, 20, (3, 7))
    mask = torch.ones(3, 7, dtype=torch.bool)
    mask[2, 4:] = False
    z = gen(ids, mask)
    assert set(z.unique().tolist()) <= {0.0, 1.0} and not z[2, 4:].any()
    logits, phi = pred(ids, mask, z)
    assert logits.shape == (3, 2) and phi.shape == (3, 8) and phi.abs().max() <= 1.0  # tanh-bounded like the GRU
    logits.sum().backward()
    assert gen.head.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="encoder"):
        Generator(emb, 4, encoder="lstm")
    with pytest.raises(ValueError, match="encoder"):
        RationaleConfig(encoder="lstm")


def test_kl_at_the_matching_temperature(bench):
    """kl_T at T = 1 is the plain KL; at DMR's T = 3 the teacher's target is softer, so a predictor that copies
    the teacher's logits is closer to it at T = 1 than at T = 3."""
    from kimi_mini.rationale.train import evaluate, train_rnp, train_teacher

    tr = bench.tensors("train").take(torch.arange(128))
    te = bench.tensors("test").take(torch.arange(64))
    cfg = RationaleConfig(hidden=4, steps=5, teacher_steps=20, batch_size=32, alpha=0.3, encoder="conv")
    teacher, _ = train_teacher(tr, bench.embeddings, cfg)
    gen, pred, _ = train_rnp(tr, bench.embeddings, cfg)
    e1 = evaluate(gen, pred, te, teacher, temperature=1.0)
    assert e1["kl_T"] == pytest.approx(e1["kl"], abs=1e-6)
    e3 = evaluate(gen, pred, te, teacher)
    assert e3["kl_T"] >= 0 and e3["kl"] == pytest.approx(e1["kl"], abs=1e-6)
    with pytest.raises(ValueError, match="temperature"):
        evaluate(gen, pred, te, teacher, temperature=0.0)

"""Controllable invariance (kimi_mini.invariance, arXiv 1705.11122): loaders, the game's losses, D's optimum,
probes, the DP gap, training variants, the translation miniature, bad input."""

import math

import pytest
import torch
import torch.nn.functional as F

from kimi_mini.invariance import (
    InvarianceData,
    InvariantModel,
    demographic_parity_gap,
    discriminator_loss,
    encoder_loss,
    evaluate_invariance,
    grad_reverse,
    load_adult,
    load_german,
    load_lit_digits,
    probe_accuracy,
    train_invariant,
)
from kimi_mini.invariance.data import light, load_invariance_dataset
from kimi_mini.invariance.translation import (
    LANGUAGES,
    encoder_states,
    load_translation,
    rewrite,
    token_accuracy,
    train_translation,
)
from kimi_mini.testing import assert_close


# ------------------------------------------------------------------------------------ loaders
def test_adult_counts_and_rates():
    tr, te = load_adult("train"), load_adult("test")
    assert (len(tr), len(te)) == (30_162, 15_060)  # UCI Adult without rows holding a "?"
    assert tr.x.dtype == torch.float32 and tr.y.dtype == torch.int64 and tr.s.dtype == torch.int64
    assert tr.x.shape[1] == te.x.shape[1] == len(tr.feature_names)
    assert abs(tr.y.float().mean().item() - 0.249) < 0.002  # 7,508 of 30,162 earn > 50K
    assert abs(te.y.float().mean().item() - 0.246) < 0.002
    assert abs(tr.s.float().mean().item() - 0.676) < 0.002  # s = 1 for male
    assert abs(te.majority_s - 0.675) < 0.002
    assert not any(n.startswith("sex") for n in tr.feature_names)  # s is not a feature
    # continuous columns standardised on train; one-hot columns are 0/1 with one 1 per categorical column
    assert_close(tr.x[:, :6].mean(0), torch.zeros(6), atol=1e-4, what="train means")
    assert_close(tr.x[:, :6].std(0), torch.ones(6), atol=1e-3, what="train sds")
    assert set(torch.unique(tr.x[:, 6:]).tolist()) == {0.0, 1.0}
    assert (tr.x[:, 6:].sum(1) == 7).all()  # workclass, education, marital, occupation, relationship, race, country


def test_german_counts_and_rates():
    tr, te = load_german("train"), load_german("test")
    assert (len(tr), len(te)) == (700, 300)
    y_all = torch.cat([tr.y, te.y])
    assert y_all.sum().item() == 700  # 700 good / 300 bad credits in german.data
    s_all = torch.cat([tr.s, te.s])
    assert s_all.sum().item() == 810  # 190 applicants are 25 or younger
    assert "age" not in tr.feature_names
    # a fixed split: loading again gives the same rows
    assert torch.equal(load_german("train").x, tr.x)


def test_lit_digits_counts_and_lighting():
    tr, te = load_lit_digits("train"), load_lit_digits("test")
    assert (len(tr), len(te)) == (1000, 797) and tr.x.shape[1] == 64
    assert (tr.n_y, tr.n_s) == (10, 5)
    assert torch.bincount(torch.cat([tr.s, te.s]), minlength=5).min() > 300  # every lighting well represented
    img = torch.full((1, 8, 8), 0.5)
    left, right = light(img, 1), light(img, 2)  # light from the upper left vs upper right
    assert left[0, 0, 0] > left[0, 0, -1] and right[0, 0, -1] > right[0, 0, 0]
    assert torch.allclose(light(img, 0), img + 0.175)  # front: uniform


@pytest.mark.parametrize("name,loader,sizes", [("german", load_german, (700, 300)),
                                               ("lit_digits", load_lit_digits, (1000, 797))], ids=["german", "digits"])
def test_invariance_dataset_dict(name, loader, sizes):
    dd = load_invariance_dataset(name)
    assert set(dd) == {"train", "test"} and (dd["train"].num_rows, dd["test"].num_rows) == sizes
    for split in ("train", "test"):
        cols, data = dd[split][:], loader(split)
        assert cols["x"].dtype == torch.float32 and cols["y"].dtype == cols["s"].dtype == torch.int64
        assert torch.equal(cols["x"], data.x) and torch.equal(cols["y"], data.y) and torch.equal(cols["s"], data.s)


def test_lit_digits_row_is_a_real_digit():
    from sklearn.datasets import load_digits

    digits = load_digits()
    row = next(r for r in load_invariance_dataset("lit_digits")["test"] if r["s"] == 0)  # front light: x/16 + 0.175
    pixels = ((row["x"] - 0.175) * 16).round()
    match = (torch.tensor(digits.data, dtype=torch.float32) == pixels).all(1).nonzero().flatten()
    assert len(match) and int(row["y"]) in digits.target[match.numpy()].tolist()


def test_invariance_dataset_rejects_unknown_name():
    with pytest.raises(ValueError, match="name"):
        load_invariance_dataset("yale_b")


@pytest.mark.parametrize("loader", [load_adult, load_german, load_lit_digits], ids=["adult", "german", "digits"])
def test_loaders_reject_bad_split(loader):
    with pytest.raises(ValueError, match="split"):
        loader("validation")


# ------------------------------------------------------------------------------------ the game's losses
def _tiny_batch(seed=0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(5, 2, generator=gen), torch.tensor([0, 1, 1, 0, 1]),
            torch.randn(5, 3, generator=gen), torch.tensor([2, 0, 1, 1, 0]))


def test_losses_match_their_formulas():
    y_logits, y, s_logits, s = _tiny_batch()
    log_qy = torch.log_softmax(y_logits, -1)[torch.arange(5), y]
    log_qs = torch.log_softmax(s_logits, -1)[torch.arange(5), s]
    assert_close(discriminator_loss(s_logits, s), -log_qs.mean(), rtol=1e-6, what="−E log q_D(s|h)")
    for gamma in (0.0, 0.5, 4.0):
        want = (-log_qy + gamma * log_qs).mean()  # −log q_M(y|h) + γ log q_D(s|h)
        assert_close(encoder_loss(y_logits, y, s_logits, s, gamma), want, rtol=1e-6, what=f"encoder loss γ={gamma}")


def test_gradient_reversal_equals_the_alternating_encoder_gradient():
    torch.manual_seed(0)
    model = InvariantModel(x_dim=7, s_dim=3, hidden=9, h_dim=5, n_y=2, n_s=3)
    x, y, s = torch.randn(11, 7), torch.randint(0, 2, (11,)), torch.randint(0, 3, (11,))
    grads = []
    for reverse in (False, True):
        model.zero_grad()
        h = model.encode(x, s)
        if reverse:
            s_logits = model.discriminator(grad_reverse(h, 1.3))
            loss = F.cross_entropy(model.predictor(h), y) + discriminator_loss(s_logits, s)
        else:
            loss = encoder_loss(model.predictor(h), y, model.discriminator(h), s, 1.3)
        loss.backward()
        grads.append([p.grad.clone() for p in model.encoder.parameters()])
    for a, b in zip(*grads, strict=True):
        assert_close(a, b, rtol=1e-5, atol=1e-7, what="encoder gradient")
    assert any(g.abs().sum() > 0 for g in grads[0])


def test_discriminator_reaches_p_s_given_h():
    """On a fixed h taking 3 values with known p(s=1|h), D fitted by its loss approaches p(s|h) (Sec. 2)."""
    gen = torch.Generator().manual_seed(0)
    n = 6000
    cell = torch.randint(0, 3, (n,), generator=gen)
    p_true = torch.tensor([0.2, 0.5, 0.9])
    s = (torch.rand(n, generator=gen) < p_true[cell]).long()
    h = F.one_hot(cell, 3).float()
    torch.manual_seed(0)
    model = InvariantModel(x_dim=1, s_dim=0, hidden=16, h_dim=3, n_y=2, n_s=2)
    opt = torch.optim.Adam(model.discriminator.parameters(), lr=0.05)
    for _ in range(300):
        loss = discriminator_loss(model.discriminator(h), s)
        opt.zero_grad()
        loss.backward()
        opt.step()
    q = model.discriminator(torch.eye(3)).softmax(-1)[:, 1].detach()
    empirical = torch.stack([s[cell == c].float().mean() for c in range(3)])
    assert_close(q, empirical, atol=0.02, what="q_D(s=1|h) vs the empirical p(s=1|h)")
    assert (q - p_true).abs().max() < 0.04


# ------------------------------------------------------------------------------------ probes and DP gap
def test_probe_on_random_h_is_at_majority():
    gen = torch.Generator().manual_seed(1)
    s_tr = (torch.rand(3000, generator=gen) < 0.7).long()
    s_te = (torch.rand(2000, generator=gen) < 0.7).long()
    for kind in ("logistic", "mlp"):
        r = probe_accuracy(torch.randn(3000, 8, generator=gen), s_tr, torch.randn(2000, 8, generator=gen), s_te,
                           kind=kind)
        assert abs(r.accuracy - r.majority) < 0.03, (kind, r)


def test_probe_reads_a_planted_attribute():
    gen = torch.Generator().manual_seed(2)
    s = torch.randint(0, 2, (2000,), generator=gen)
    h = torch.randn(2000, 4, generator=gen)
    h[:, 0] += 3.0 * s  # linearly readable
    r = probe_accuracy(h[:1000], s[:1000], h[1000:], s[1000:], kind="logistic")
    assert r.accuracy > 0.9 and r.majority < 0.6


def test_mlp_probe_reads_what_logistic_cannot():
    gen = torch.Generator().manual_seed(3)
    h = torch.randn(4000, 2, generator=gen)
    s = ((h[:, 0] * h[:, 1]) > 0).long()  # XOR of signs: invisible to a linear probe
    lin = probe_accuracy(h[:3000], s[:3000], h[3000:], s[3000:], kind="logistic")
    mlp = probe_accuracy(h[:3000], s[:3000], h[3000:], s[3000:], kind="mlp")
    assert lin.accuracy < 0.62 and mlp.accuracy > 0.85


def test_demographic_parity_gap():
    y_pred = torch.tensor([1, 1, 0, 0, 1, 0, 0, 0])
    s = torch.tensor([1, 1, 1, 1, 0, 0, 0, 0])
    assert math.isclose(demographic_parity_gap(y_pred, s), 0.5 - 0.25)
    assert demographic_parity_gap(torch.tensor([1, 0, 1, 0]), torch.tensor([1, 1, 0, 0])) == 0.0


@pytest.mark.parametrize("call, match", [
    (lambda: demographic_parity_gap(torch.tensor([1, 0, 1]), torch.tensor([1, 0])), "same length"),
    (lambda: demographic_parity_gap(torch.tensor([1, 2]), torch.tensor([1, 0])), "binary"),
    (lambda: demographic_parity_gap(torch.tensor([1, 0]), torch.tensor([1, 1])), "both groups"),
    (lambda: probe_accuracy(torch.randn(5, 2), torch.zeros(4).long(), torch.randn(3, 2), torch.zeros(3).long()),
     "matching lengths"),
    (lambda: probe_accuracy(torch.randn(5, 2), torch.zeros(5).long(), torch.randn(3, 2), torch.zeros(3).long(),
                            kind="svm"), "kind"),
    (lambda: probe_accuracy(torch.randn(5, 2), torch.zeros(5).long(), torch.randn(3, 4), torch.zeros(3).long()),
     "h_test"),
], ids=["dp-length", "dp-nonbinary", "dp-one-group", "probe-length", "probe-kind", "probe-width"])
def test_measures_reject_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ------------------------------------------------------------------------------------ training
def _planted(n=600, seed=0):
    """x = [signal for y, a copy of s, noise]; y and s independent."""
    gen = torch.Generator().manual_seed(seed)
    y, s = torch.randint(0, 2, (n,), generator=gen), torch.randint(0, 2, (n,), generator=gen)
    x = torch.cat([(2.0 * y - 1)[:, None] + 0.5 * torch.randn(n, 1, generator=gen),
                   (2.0 * s - 1)[:, None] + 0.3 * torch.randn(n, 1, generator=gen),
                   torch.randn(n, 3, generator=gen)], dim=1)
    return InvarianceData(x, y, s, ["signal", "s_copy", "n1", "n2", "n3"], "planted")


def test_adversary_removes_a_planted_attribute():
    train, test = _planted(1500, 0), _planted(800, 1)
    kw = dict(steps=250, batch_size=256, k=3, lr=3e-3, d_lr=5e-3, hidden=32, h_dim=8)
    plain, _ = train_invariant(train, 0.0, variant="none", seed=0, **kw)
    adv, hist = train_invariant(train, 3.0, seed=0, **kw)
    r0 = evaluate_invariance(plain, train, test, probes=("logistic",))
    r1 = evaluate_invariance(adv, train, test, probes=("logistic",))
    assert r0.y_acc > 0.9 and r1.y_acc > 0.85
    assert r0.probe_logistic > 0.8  # h of a plain classifier given s keeps s
    assert r1.probe_logistic < r0.probe_logistic - 0.2
    assert {"loss", "y_loss", "d_loss", "d_acc", "step"} <= set(hist[-1])


def test_training_is_seeded_and_none_ignores_the_adversary():
    data = _planted(300)
    a, ha = train_invariant(data, 1.0, steps=20, seed=5, batch_size=64)
    b, hb = train_invariant(data, 1.0, steps=20, seed=5, batch_size=64)
    assert [r["loss"] for r in ha] == [r["loss"] for r in hb]
    n1, h1 = train_invariant(data, 0.0, variant="none", steps=20, seed=5, batch_size=64)
    n2, h2 = train_invariant(data, 9.0, variant="none", steps=20, seed=5, batch_size=64)
    assert [r["y_loss"] for r in h1] == [r["y_loss"] for r in h2]


@pytest.mark.parametrize("kwargs, match", [
    (dict(gamma=-0.1), "gamma"),
    (dict(gamma=float("nan")), "gamma"),
    (dict(gamma=1.0, variant="wgan"), "variant"),
    (dict(gamma=1.0, k=0), "k"),
    (dict(gamma=1.0, batch_size=0), "batch_size"),
], ids=["negative-gamma", "nan-gamma", "unknown-variant", "k-zero", "batch-zero"])
def test_train_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        train_invariant(_planted(50), steps=1, **kwargs)


def test_train_rejects_mismatched_lengths():
    d = _planted(50)
    bad = InvarianceData.__new__(InvarianceData)
    bad.x, bad.y, bad.s = d.x, d.y[:-1], d.s
    with pytest.raises(ValueError, match="data"):
        train_invariant(bad, 1.0, steps=1)
    with pytest.raises(ValueError, match="x, y, s"):
        InvarianceData(d.x, d.y[:-1], d.s, d.feature_names)


def test_model_rejects_bad_shapes():
    with pytest.raises(ValueError, match="s_dim"):
        InvariantModel(4, 1, 8, 4, 2, 3)
    m = InvariantModel(4, 2, 8, 4, 2, 2)
    with pytest.raises(ValueError, match="x"):
        m.encode(torch.randn(3, 5), torch.zeros(3).long())
    with pytest.raises(ValueError, match="s"):
        m.encode(torch.randn(3, 4), torch.zeros(2).long())


# ------------------------------------------------------------------------------------ translation miniature
def test_rewrites_are_deterministic_word_order_and_vocabulary_rules():
    words = ["the", "movie", "is", "a", "great", "ride", "!"]
    assert rewrite(words, "rev") == ["!", "edir", "taerg", "a", "is", "eivom", "eht"]
    assert rewrite(words, "pig") == ["oviemay", "hetay", "a", "is", "ideray", "reatgay", "!"]
    with pytest.raises(ValueError, match="language"):
        rewrite(words, "fr")


def test_shared_vocabulary_languages_differ_only_in_word_order():
    words = ["the", "movie", "is", "a", "great", "ride", "!"]
    assert rewrite(words, "rev", "shared") == ["!", "edir", "taerg", "a", "is", "eivom", "eht"]
    assert rewrite(words, "pig", "shared") == ["eivom", "eht", "a", "is", "edir", "taerg", "!"]
    assert sorted(rewrite(words, "rev", "shared")) == sorted(rewrite(words, "pig", "shared"))
    assert not set(rewrite(words, "rev")) & set(rewrite(words, "pig")) - {"a", "is", "!"}
    train, _ = load_translation(60, 20, vocab_size=300, vocabulary="shared")
    src_of = {lang: {w for i in range(len(train)) if int(train.lang[i]) == li for w in train.example(i)[0].split()}
              for li, lang in enumerate(LANGUAGES)}
    shared = len(src_of["rev"] & src_of["pig"]) / len(src_of["rev"] | src_of["pig"])
    assert shared > 0.3  # disjoint sentences, one vocabulary
    with pytest.raises(ValueError, match="vocabulary"):
        rewrite(words, "rev", "mixed")
    with pytest.raises(ValueError, match="vocabulary"):
        load_translation(60, 20, vocabulary="mixed")


def test_dialects_differ_only_in_function_words_and_start_language_blind():
    from kimi_mini.invariance.translation import FUNCTION_WORDS, Seq2Seq

    words = ["the", "movie", "is", "not", "a", "great", "ride", "!"]
    rev, pig = rewrite(words, "rev", "dialects"), rewrite(words, "pig", "dialects")
    assert rev == ["!", "edir", "taerg", "a", "ton", "is", "eivom", "eht"]
    assert pig == ["!", "edir", "taerg", "a", "otnay", "is", "eivom", "hetay"]
    differ = {w for w, a, b in zip(words[::-1], rev, pig, strict=True) if a != b}
    assert differ == {"the", "not"} and differ <= FUNCTION_WORDS
    model = Seq2Seq(10, 10, d=8)
    assert not model.lang_emb.weight.any()  # s starts at zero: no state is marked by the language at init


def test_translation_data_and_a_short_run():
    train, test = load_translation(60, 20, vocab_size=300)
    assert len(train) == 120 and len(test) == 40
    assert torch.bincount(train.lang).tolist() == [60, 60]
    src, tgt = train.example(0)
    assert src.split() == rewrite(tgt.split(), LANGUAGES[int(train.lang[0])])
    model, hist = train_translation(train, gamma=1.0, adversary=True, steps=3, d=16, batch_size=8)
    acc = token_accuracy(model, test)
    assert 0.0 <= acc <= 1.0 and not math.isnan(hist[-1]["d_acc"])
    assert encoder_states(model, test).shape == (40, 16)
    with pytest.raises(ValueError, match="gamma"):
        train_translation(train, gamma=-1.0, steps=1)


def test_translation_discriminator_warmup_and_learning_rate():
    from kimi_mini.invariance.translation import Seq2Seq

    train, _ = load_translation(60, 20, vocab_size=300)  # own vocabularies: the language is readable at init
    kw = dict(gamma=1.0, adversary=True, steps=1, k=1, d=16, batch_size=128, seed=0)
    # d_warmup: D alone on the frozen initial encoder before the first game step -> it already reads s there
    # (seeds 0-4 measured: 0.44-0.61 cold, 0.75-0.81 after 300 warm-up steps)
    cold = train_translation(train, d_lr=1e-2, **kw)[1][0]["d_acc"]
    warm = train_translation(train, d_lr=1e-2, d_warmup=300, **kw)[1][0]["d_acc"]
    assert warm >= 0.7 and warm > cold + 0.15, (cold, warm)
    # d_lr is D's own learning rate: a vanishing one leaves D at its initialisation while E still moves
    torch.manual_seed(0)
    init = Seq2Seq(len(train.src_vocab), len(train.tgt_vocab), len(LANGUAGES), 16)
    frozen_d, _ = train_translation(train, d_lr=1e-12, d_warmup=20, **kw)
    moved_d, _ = train_translation(train, d_lr=1e-2, **kw)
    d_init = torch.cat([p.flatten() for p in init.discriminator.parameters()])
    d_of = lambda m: torch.cat([p.flatten() for p in m.discriminator.parameters()])  # noqa: E731
    assert torch.allclose(d_of(frozen_d), d_init, atol=1e-8)
    assert (d_of(moved_d) - d_init).abs().max() > 1e-3
    assert not torch.equal(frozen_d.src_emb.weight, init.src_emb.weight)
    # without the adversary there is no D to warm up: the option changes nothing
    plain = train_translation(train, gamma=1.0, steps=2, d=16, batch_size=8)[0]
    plain_w = train_translation(train, gamma=1.0, steps=2, d=16, batch_size=8, d_warmup=50)[0]
    assert all(torch.equal(a, b) for a, b in zip(plain.parameters(), plain_w.parameters(), strict=True))

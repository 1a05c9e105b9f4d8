"""Multimodal fusion (kimi_mini.fusion): the operators' algebra, the heads against each other, the data's
splits and the simulator's switch, training with early stopping, and bad input."""

import math

import numpy as np
import pytest
import torch

from kimi_mini.fusion import (
    FusionClassifier,
    LowRankFusion,
    PolynomialFusion,
    TensorFusion,
    driver_simulator,
    fit_fusion,
    paired_gap,
    polynomial_fusion,
    subject_split,
    summarize,
    svm_baseline,
    tensor_fusion,
    watch_dataset,
    watch_windows,
)
from kimi_mini.fusion.data import watch_splits
from kimi_mini.testing import assert_close


def test_tensor_fusion_holds_every_cross_product():
    torch.manual_seed(0)
    h1, h2, h3 = torch.randn(5, 2), torch.randn(5, 3), torch.randn(5, 1)
    z = tensor_fusion([h1, h2, h3])
    assert z.shape == (5, 3 * 4 * 2)
    zz = z.reshape(5, 3, 4, 2)  # [N, d1 + 1, d2 + 1, d3 + 1], first modality slowest
    assert torch.equal(zz[:, 2, 3, 1], torch.ones(5))  # the constant monomial
    assert_close(zz[:, 0, 3, 1], h1[:, 0])  # unimodal
    assert_close(zz[:, 1, 2, 1], h1[:, 1] * h2[:, 2])  # bimodal
    assert_close(zz[:, 1, 0, 0], h1[:, 1] * h2[:, 0] * h3[:, 0])  # trimodal


@pytest.mark.parametrize("P", [1, 2, 3])
def test_polynomial_naive_equals_torch_values_and_gradients(P):
    torch.manual_seed(P)
    N, D, R, K = 13, 5, 3, 4
    z = torch.randn(N, D, dtype=torch.float64, requires_grad=True)
    w = torch.randn(P, R, D, K, dtype=torch.float64, requires_grad=True)
    y_naive, y_torch = polynomial_fusion(z, w, "naive"), polynomial_fusion(z, w, "torch")
    assert_close(y_torch, y_naive, rtol=1e-10, what="y")
    dy = torch.randn_like(y_naive)
    for a, b, name in zip(torch.autograd.grad(y_torch, (z, w), dy), torch.autograd.grad(y_naive, (z, w), dy),
                          ("dz", "dfactors"), strict=True):
        assert_close(a, b, rtol=1e-10, what=name)


def test_polynomial_contains_the_intra_modal_square():
    """Order 2 with one factor picking z_0 twice is exactly z_0²: a monomial TFN never forms."""
    z = torch.tensor([[1.5, -2.0, 1.0], [0.5, 3.0, 1.0]])
    w = torch.zeros(2, 1, 3, 1)
    w[:, 0, 0, 0] = 1.0
    assert_close(polynomial_fusion(z, w, "torch")[:, 0], z[:, 0] ** 2)


def test_order_one_polynomial_is_a_linear_layer():
    torch.manual_seed(1)
    dims, K, R = [3, 4], 5, 2
    head = PolynomialFusion(dims, K, rank=R, order=1)
    linear = torch.nn.Linear(sum(dims), K)
    with torch.no_grad():  # Σ_r factors[0, r] = [Wᵀ; b]: the rank splits one linear map in two parts
        half = torch.cat([linear.weight.T, linear.bias[None]], dim=0) / R
        head.factors.copy_(half.expand(1, R, -1, -1))
    hs = [torch.randn(7, d) for d in dims]
    assert_close(head(hs), linear(torch.cat(hs, dim=1)), rtol=1e-5)


def test_lmf_equals_tfn_with_a_cp_decomposed_weight():
    torch.manual_seed(2)
    dims, K, R = [2, 3, 2], 4, 3
    lmf = LowRankFusion(dims, K, rank=R)
    tfn = TensorFusion(dims, K)
    f1, f2, f3 = (f.detach() for f in lmf.factors)  # [R, d_m + 1, K]
    # W[k, i, j, l] = Σ_r f1[r, i, k] f2[r, j, k] f3[r, l, k], flattened like tensor_fusion (first modality slowest)
    w = torch.einsum("rik,rjk,rlk->kijl", f1, f2, f3).reshape(K, -1)
    with torch.no_grad():
        tfn.linear.weight.copy_(w)
        tfn.linear.bias.copy_(lmf.bias)
    hs = [torch.randn(9, d) for d in dims]
    assert_close(lmf(hs), tfn(hs), rtol=1e-5)
    assert sum(p.numel() for p in tfn.parameters()) == K * math.prod(d + 1 for d in dims) + K


def test_watch_splits_are_subject_disjoint():
    d = watch_windows()
    ds = watch_dataset()  # the cached Hugging Face view the arrays come from
    assert ds.num_rows == len(d["y"]) and ds.features["label"].names == ["PEN", "ABD", "FEL", "IR", "ER", "TRAP", "ROW"]
    assert np.allclose(ds[5]["gyroscope"], d["gyroscope"][5]) and ds[5]["subject"] == d["subject"][5]
    assert d["accelerometer"].shape == d["gyroscope"].shape == (len(d["y"]), 17)
    assert sorted(np.unique(d["subject"])) == list(range(1, 11)) and sorted(np.unique(d["y"])) == list(range(7))
    assert np.isfinite(d["accelerometer"]).all() and np.isfinite(d["gyroscope"]).all()
    for seed in range(4):
        train, test = subject_split(d["subject"], n_test=3, seed=seed)
        assert not (train & test).any() and (train | test).all()
        assert set(d["subject"][train]).isdisjoint(d["subject"][test])
        assert len(np.unique(d["subject"][test])) == 3
    with pytest.raises(ValueError, match="n_test"):
        subject_split(d["subject"], n_test=10)


def test_watch_splits_dataset_dict():
    d = watch_windows()
    dd = watch_splits(seed=2)
    assert list(dd) == ["train", "validation", "test"]
    subjects = {k: set(dd[k][:]["subject"].tolist()) for k in dd}
    assert (len(subjects["test"]), len(subjects["validation"])) == (3, 1) and len(subjects["train"]) == 6
    assert not subjects["train"] & subjects["test"]
    assert not subjects["validation"] & (subjects["train"] | subjects["test"])
    assert sum(dd[k].num_rows for k in dd) == len(d["y"])
    _, test = subject_split(d["subject"], n_test=3, seed=2)  # the same subjects as subject_split draws
    assert subjects["test"] == set(d["subject"][test].tolist()) and dd["test"].num_rows == int(test.sum())
    cols = dd["test"][:]
    assert cols["gyroscope"].dtype == torch.float32 and cols["label"].dtype == torch.int64
    assert cols["gyroscope"].shape == (int(test.sum()), 17)
    first = int(np.flatnonzero(test)[0])  # rows keep the raw windows' order and values
    assert np.array_equal(cols["gyroscope"][0].numpy(), d["gyroscope"][first])
    assert int(cols["label"][0]) == d["y"][first]


def test_watch_task_reads_the_subject_split():
    """watch_task takes its arrays from watch_splits: the same rows as masking watch_windows by subject."""
    from kimi_mini.fusion.experiment import watch_task

    d, split = watch_windows(), watch_task()(1)
    train, test = subject_split(d["subject"], n_test=3, seed=1)
    val = train & (d["subject"] == np.random.default_rng(1001).choice(np.unique(d["subject"][train])))
    for labels, mask in ((split.y_train, train & ~val), (split.y_val, val), (split.y_test, test)):
        assert np.array_equal(labels, d["y"][mask])
    mean, sd = d["gyroscope"][train & ~val].mean(0), d["gyroscope"][train & ~val].std(0)
    assert_close(torch.from_numpy(split.test["gyroscope"]),
                 torch.from_numpy(((d["gyroscope"][test] - mean) / sd).astype(np.float32)), rtol=1e-4, atol=1e-4)


def test_simulator_interactions_switch():
    """With interactions a linear model of the concatenated features is weak and adding the cross-modal
    products of the features lifts it by > 0.05; in the control the linear model is already good and the
    products add nothing (they only add variance)."""
    from sklearn.linear_model import LogisticRegression

    def gain_from_products(interactions):
        xs, y = driver_simulator(3000, interactions=interactions, seed=0)
        assert 0.4 < y.mean() < 0.6 and [x.shape for x in xs] == [(3000, 8)] * 3
        x = np.concatenate(xs, 1)
        cross = np.concatenate([(xs[a][:, :, None] * xs[b][:, None, :]).reshape(3000, -1)
                                for a, b in ((0, 1), (1, 2), (0, 2))], 1)
        accs = [LogisticRegression(max_iter=500).fit(f[:1500], y[:1500]).score(f[1500:], y[1500:])
                for f in (x, np.concatenate([x, cross], 1))]
        return accs[0], accs[1] - accs[0]

    linear, gain = gain_from_products(True)
    assert linear < 0.75 and gain > 0.05
    linear, gain = gain_from_products(False)
    assert linear > 0.85 and gain < 0.01
    a, y = driver_simulator(50, seed=3)
    b, y2 = driver_simulator(50, seed=3)
    assert np.array_equal(y, y2) and np.array_equal(a[2], b[2])


@pytest.mark.parametrize("fusion", ["early", "late", "tfn", "lmf", "polynomial"])
def test_every_fusion_trains_and_early_stopping_keeps_the_best(fusion):
    xs, y = driver_simulator(400, interactions=False, seed=1)
    torch.manual_seed(0)
    model = FusionClassifier([8, 8], 2, fusion=fusion, order=2)
    val = ([x[300:] for x in xs[:2]], y[300:])
    history = fit_fusion(model, [x[:300] for x in xs[:2]], y[:300], steps=40, val=val, eval_every=5)
    assert history[-1]["loss"] < history[0]["loss"]
    from kimi_mini.fusion import accuracy

    assert accuracy(model, *val) == max(r["val_acc"] for r in history if "val_acc" in r)
    assert accuracy(model, *val) > 0.6


def test_svm_baseline_and_summaries():
    xs, y = driver_simulator(600, interactions=False, seed=2)
    acc = svm_baseline([x[:400] for x in xs], y[:400], [x[400:] for x in xs], y[400:])
    assert 0.75 < acc <= 1.0
    records = [{"modalities": "a", "fusion": f, "seed": s, "acc": a}
               for f, accs in (("x", [0.8, 0.7, 0.9]), ("y", [0.6, 0.65, 0.7])) for s, a in enumerate(accs)]
    mean, sd, n = summarize(records)[("a", "x")]
    assert (round(mean, 6), round(sd, 6), n) == (0.8, 0.1, 3)
    gap, gap_sd = paired_gap(records, ("a", "x"), ("a", "y"))
    assert round(gap, 6) == 0.15 and round(gap_sd, 6) == round(float(np.std([0.2, 0.05, 0.2], ddof=1)), 6)


def test_bad_input_is_a_value_error():
    with pytest.raises(ValueError, match="rank"):
        LowRankFusion([2, 3], 4, rank=0)
    with pytest.raises(ValueError, match="order"):
        PolynomialFusion([2, 3], 4, order=0)
    with pytest.raises(ValueError, match="fusion"):
        FusionClassifier([2, 3], 2, fusion="attention")
    model = FusionClassifier([2, 3], 2, fusion="tfn")
    with pytest.raises(ValueError, match="xs"):
        model([torch.randn(4, 2)])  # one modality for a two-modality model
    with pytest.raises(ValueError, match="hs"):
        TensorFusion([2, 3], 4)([torch.randn(4, 2), torch.randn(4, 3), torch.randn(4, 1)])
    with pytest.raises(ValueError, match="hs"):
        LowRankFusion([2, 3], 4)([torch.randn(4, 2), torch.randn(4, 5)])
    with pytest.raises(ValueError, match="factors"):
        polynomial_fusion(torch.randn(4, 3), torch.randn(2, 2, 5, 1))
    with pytest.raises(ValueError, match="impl"):
        polynomial_fusion(torch.randn(4, 3), torch.randn(2, 2, 3, 1), impl="cuda")
    with pytest.raises(ValueError, match="dims"):
        FusionClassifier([], 2)
    with pytest.raises(ValueError, match="n"):
        driver_simulator(1)


def test_matched_width_and_the_equal_parameter_grid():
    from kimi_mini.fusion import n_params
    from kimi_mini.fusion.experiment import equal_parameter_grid, matched_width, paired_gaps, simulator_task

    ref = n_params(FusionClassifier([8, 8, 8], 2, fusion="polynomial", hidden=4, fused=8, rank=2, order=3))
    for fusion in ("early", "late"):
        w = matched_width([8, 8, 8], 2, fusion, ref, hidden=4, rank=2, order=3)
        got = n_params(FusionClassifier([8, 8, 8], 2, fusion=fusion, hidden=4, fused=w))
        step = n_params(FusionClassifier([8, 8, 8], 2, fusion=fusion, hidden=4, fused=w + 1)) - got
        assert abs(got - ref) <= step  # the closest width
    recs = equal_parameter_grid(simulator_task(True, 120, 200, unimodal_weight=0.0), ["face", "speech", "car"],
                                (0, 1), early_widths=(4,), steps=5, hidden=4, fused=8, rank=2, order=3)
    names = {r["fusion"] for r in recs}
    assert names == {"polynomial", "late (matched)", "early (matched)", "early (best width)"}
    by = {(r["fusion"], r["seed"]): r for r in recs}
    for s in (0, 1):
        assert abs(by[("late (matched)", s)]["n_params"] - ref) < 0.05 * ref
        best = by[("early (best width)", s)]
        assert best["val_acc"] >= by[("early (matched)", s)]["val_acc"]
    gaps = paired_gaps(recs, ("face+speech+car", "polynomial"), ("face+speech+car", "late (matched)"))
    assert gaps == [by[("polynomial", s)]["acc"] - by[("late (matched)", s)]["acc"] for s in (0, 1)]

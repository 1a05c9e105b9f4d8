"""Launch-configuration tuning (kernels/tune.py) and its use by the MoE grouped GEMM (kernels/moe.py).

On a GPU the MoE wrappers time a few configurations once per shape and keep the fastest; the table's
configuration (the one compiled ahead of time) is always the first candidate and the only one used where
nothing can be timed (interpreter, compile-only builds, CPU tensors). Here, on the CPU, the tuner runs
with a stand-in timer: it picks the fastest, caches per key, skips a candidate that fails (but not the
table's), and — through the MoE wrapper in the interpreter — the output does not depend on which
configuration won, including the token-row mode whose atomic adds a re-run would double.
"""

import pytest
import torch

import kimi_mini.kernels as K
from kimi_mini.kernels import moe, tune
from kimi_mini.kernels.moe import ROWS_SORTED, ROWS_TOKEN, align_to_tiles, grouped_gemm, grouped_gemm_dw, swiglu_gemm


@pytest.fixture(autouse=True)
def _fresh_cache():
    tune.clear()
    yield
    tune.clear()


def test_pick_takes_the_fastest_and_caches_it_per_key():
    cands = [{"n": 1}, {"n": 2}, {"n": 3}]
    times = {1: 3.0, 2: 1.0, 3: 2.0}
    ran = []

    def run(cfg):
        ran.append(cfg["n"])

    def timer(fn):
        fn()
        return times[ran[-1]]

    assert tune.pick("k", cands, run, timer=timer) == {"n": 2}
    assert ran == [1, 2, 3]
    assert tune.pick("k", cands, run, timer=lambda fn: pytest.fail("re-timed a cached key")) == {"n": 2}
    assert tune.choices() == {"k": {"n": 2}}
    times[1] = 0.5  # another key is timed afresh
    assert tune.pick("k2", cands, run, timer=timer) == {"n": 1}


def test_pick_skips_a_failing_candidate_but_not_the_tables():
    def run(cfg):
        if cfg["n"] == 2:
            raise RuntimeError("out of shared memory")

    timer = lambda fn: (fn(), 1.0)[1]  # noqa: E731
    assert tune.pick("a", [{"n": 1}, {"n": 2}], run, timer=timer) == {"n": 1}
    with pytest.raises(RuntimeError, match="shared memory"):
        tune.pick("b", [{"n": 2}, {"n": 1}], run, timer=timer)
    for bad in ([], [1], "cfg", None):
        with pytest.raises(ValueError, match="^candidates:"):
            tune.pick("c", bad, run, timer=timer)


def test_candidates_start_with_the_table_and_differ_from_it():
    cfg = moe.gemm_config(torch.bfloat16)
    for kind in ("fwd", "swiglu", "dw"):
        cands = moe.tuning_candidates(cfg, kind)
        assert cands[0] == cfg and len(cands) >= 3
        assert all(c != cfg for c in cands[1:]) and len({tuple(sorted(c.items())) for c in cands}) == len(cands)
    with pytest.raises(ValueError, match="^kind:"):
        moe.tuning_candidates(cfg, "bwd")


def test_nothing_is_timed_on_cpu_tensors_or_in_a_compile_only_build(monkeypatch, device):
    assert not tune.can_time(torch.zeros(2, 2))  # a CPU tensor
    monkeypatch.setattr(K, "COMPILE_ONLY", True)
    assert not tune.can_time(torch.zeros(2, 2, device=device))
    monkeypatch.setattr(K, "COMPILE_ONLY", False)
    if K.INTERPRETED:  # the interpreter: the wrappers run the table's configuration, nothing is cached
        assert not tune.can_time(torch.zeros(2, 2, device=device))
        idx = torch.tensor([[0, 1], [1, 0], [0, 1]])
        plan = align_to_tiles(idx, 2, 16)
        grouped_gemm(torch.randn(3, 16), torch.randn(2, 16, 16), plan, ROWS_TOKEN, ROWS_TOKEN)
        assert tune.choices() == {}


@pytest.mark.skipif(not K.INTERPRETED, reason="drives the tuning path through the interpreter")
@pytest.mark.parametrize("winner", [0, 1, 2, 3])
def test_moe_outputs_do_not_depend_on_the_tuned_configuration(monkeypatch, winner):
    """With tuning forced on (a stand-in timer that makes candidate ``winner`` fastest), every wrapper
    gives the table configuration's result — token rows included: the timed runs go to scratch."""
    g = torch.Generator().manual_seed(0)
    N, d, h, E, k = 20, 16, 32, 3, 2
    idx = torch.rand(N, E, generator=g).topk(k, -1).indices
    plan = align_to_tiles(idx, E, 16)
    x = torch.randn(N, d, generator=g)
    w = torch.randn(E, d, h, generator=g)
    w3 = torch.randn(E, d, h, generator=g)
    rw = torch.rand(N * k, generator=g)
    hs = torch.randn(plan.padded_rows, h, generator=g)
    w2 = torch.randn(E, h, d, generator=g)
    ref = (grouped_gemm(hs, w2, plan, ROWS_SORTED, ROWS_TOKEN, route_weights=rw),
           *swiglu_gemm(x, w, w3, plan), grouped_gemm_dw(x, hs, plan, ROWS_TOKEN, ROWS_SORTED))

    real_pick, expected = tune.pick, {}

    def pick(key, cands, run, timer=None):  # the stand-in timer: candidate `winner` is the fastest
        i = min(winner, len(cands) - 1)
        expected[key] = cands[i]
        seen = []

        def stand_in(fn):
            fn()  # the run really launches (into scratch where a re-run would accumulate)
            seen.append(1)
            return 0.0 if len(seen) - 1 == i else 1.0

        return real_pick(key, cands, run, timer=stand_in)

    monkeypatch.setattr(tune, "can_time", lambda *t: True)
    monkeypatch.setattr(tune, "pick", pick)
    out = (grouped_gemm(hs, w2, plan, ROWS_SORTED, ROWS_TOKEN, route_weights=rw),
           *swiglu_gemm(x, w, w3, plan), grouped_gemm_dw(x, hs, plan, ROWS_TOKEN, ROWS_SORTED))
    assert len(tune.choices()) == 3 and tune.choices() == expected  # one key per wrapper, the winner kept
    assert {k[0] for k in expected} == {"fwd", "swiglu", "dw"}
    for name, a, b in zip(("down (token rows)", "h", "g", "u", "dW"), out, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=f"{name} with candidate {winner}")

"""Rank classification and answer-only prompted pretraining (kimi_mini.prompts.rank / pretrain)."""

import importlib

import pytest
import torch
import torch.nn.functional as F

from kimi_mini.model import KimiConfig, KimiMini
from kimi_mini.prompts import (
    Example,
    PretrainConfig,
    Task,
    answer_only_loss,
    encode_pairs,
    option_logprobs,
    pretrain,
    prompted_batch,
    rank_classify,
    render,
    token_logprobs,
    zero_shot_accuracy,
)
from kimi_mini.testing import assert_close

pretrain_module = importlib.import_module("kimi_mini.prompts.pretrain")  # the package's `pretrain` is the function


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return KimiMini(KimiConfig(d_model=32, n_layers=2, n_heads=2, d_ff=64, max_seq_len=64)).eval()


PROMPTS = ["Has 'q'? abqz =>", "Is 3+4 > 5? =>", "x =>"]
OPTIONS = [["yes", "no"], ["yes", "no", "maybe"], ["abc", "b", "cab"]]


def test_token_logprobs_is_log_softmax_gather():
    torch.manual_seed(1)
    logits, targets = torch.randn(13, 257), torch.randint(0, 257, (13,))
    want = torch.stack([torch.log(torch.softmax(logits[i].double(), 0)[targets[i]]) for i in range(13)]).float()
    assert_close(token_logprobs(logits, targets), want, rtol=1e-5, what="log p(target)")
    with pytest.raises(ValueError, match="targets"):
        token_logprobs(logits, targets[:-1])
    with pytest.raises(ValueError, match="logits"):
        token_logprobs(logits[0], targets)
    with pytest.raises(ValueError, match="impl"):
        token_logprobs(logits, targets, impl="cuda-magic")


@torch.no_grad()
def test_rank_classify_equals_a_direct_log_prob_sum(model):
    preds, scores = rank_classify(model, PROMPTS, OPTIONS)
    for p, opts, sc, pred in zip(PROMPTS, OPTIONS, scores, preds.tolist(), strict=True):
        direct = []
        for o in opts:  # by hand: one forward on prompt+option, sum log p of the option's bytes
            pb, ob = list(p.encode()), list(o.encode())
            logp = F.log_softmax(model(torch.tensor([pb + ob]))[0][0].double(), -1)
            direct.append(sum(logp[len(pb) - 1 + j, b] for j, b in enumerate(ob)))
        assert_close(sc, torch.tensor(direct).float(), rtol=1e-4, what=f"scores of {p!r}")
        assert_close(option_logprobs(model, p, opts), sc, rtol=1e-4, what="reference")
        assert pred == int(torch.tensor(direct).argmax())
        assert sc.shape == (len(opts),) and (sc < 0).all()


def test_rank_classify_does_not_depend_on_batching(model):
    p1, s1 = rank_classify(model, PROMPTS, OPTIONS, batch_size=1)
    p2, s2 = rank_classify(model, PROMPTS, OPTIONS, batch_size=100)
    assert torch.equal(p1, p2)
    for a, b in zip(s1, s2, strict=True):
        assert_close(a, b, rtol=1e-5, what="scores")


def test_rank_classify_validates(model):
    with pytest.raises(ValueError, match="options"):
        rank_classify(model, PROMPTS, OPTIONS[:2])
    with pytest.raises(ValueError, match="prompts"):
        rank_classify(model, "one string", OPTIONS[:1])
    with pytest.raises(ValueError, match="options"):
        rank_classify(model, ["p"], [["yes", ""]])
    with pytest.raises(ValueError, match="max_seq_len"):
        rank_classify(model, ["x" * 70], [["yes", "no"]])


def test_encode_pairs_targets_only_option_bytes():
    tokens, targets, owner = encode_pairs(["ab =>"], [["yes", "n"]], 64)
    assert owner.tolist() == [0, 0]
    assert tokens[0, :8].tolist() == list(b"ab =>yes")
    assert targets[0].tolist()[:8] == [-100] * 4 + list(b"yes") + [-100]
    assert targets[1].tolist()[:6] == [-100] * 4 + list(b"n") + [-100]


TASK = Task("toy:q", "toy", ("Has q? {text}", "{text} q? {options}"), ("yes", "no"),
            tuple(Example({"text": w}, int("q" not in w)) for w in ["aqb", "abc", "qqz", "zzz"]))


def test_prompted_batch_masks_the_prompt():
    x, y = prompted_batch([TASK], 6, torch.Generator().manual_seed(0), max_len=64)
    for r in range(6):
        answer = [t for t in y[r].tolist() if t != -100]
        assert bytes(answer).decode() in ("yes", "no")
        k = int((y[r] != -100).nonzero()[0])  # first answer target: predicted from the last prompt byte
        assert bytes(x[r, :k + 1].tolist()).decode().endswith("=>")
        assert bytes(x[r, k + 1:k + 1 + len(answer)].tolist()) == bytes(answer)
        assert (y[r, :k] == -100).all()


def test_answer_only_loss_ignores_prompt_positions(model):
    x, y = prompted_batch([TASK], 4, torch.Generator().manual_seed(1), max_len=64)
    logits = model(x)[0]
    keep = y != -100
    want = F.cross_entropy(logits[keep], y[keep])
    assert_close(answer_only_loss(model, x, y), want, rtol=1e-5, what="answer-only loss")
    logits = model(x)[0].detach().requires_grad_(True)  # no gradient reaches a prompt position
    F.cross_entropy(logits.reshape(-1, 256), y.reshape(-1), ignore_index=-100).backward()
    assert (logits.grad[~keep] == 0).all() and (logits.grad[keep] != 0).any()
    with pytest.raises(ValueError, match="answer"):
        answer_only_loss(model, x, torch.full_like(y, -100))


def test_pretrain_trains_caches_and_reloads(tmp_path, monkeypatch):
    monkeypatch.setattr(pretrain_module, "cache_dir", lambda: tmp_path)
    zoo = {"toy:q": TASK, **{f"toy:{i}": Task(f"toy:{i}", "toy", TASK.templates, TASK.verbalizer, TASK.examples)
                             for i in range(3)}}
    cfg = PretrainConfig(n_tasks=2, d_model=16, n_layers=1, n_heads=2, steps=3, warmup=1, batch_size=4, max_seq_len=32)
    first = pretrain(cfg, zoo=zoo)
    assert not first.cached and len(first.history) == 3 and len(first.tasks) == 2
    assert first.flops == 6.0 * first.params * first.tokens and first.tokens > 0
    assert not any(p.requires_grad for p in first.model.parameters()) and not first.model.training
    again = pretrain(cfg, zoo=zoo)
    assert again.cached and again.tasks == first.tasks
    for a, b in zip(first.model.parameters(), again.model.parameters(), strict=True):
        assert torch.equal(a, b)
    assert cfg.key() != cfg.replace(seed=1).key()
    acc = zero_shot_accuracy(again.model, [TASK], 4)
    assert set(acc) == {"toy:q"} and 0 <= acc["toy:q"] <= 1
    prompt, _ = render(TASK, TASK.examples[0], 0)
    assert prompt == "Has q? aqb =>"


def test_pretrain_config_validates():
    with pytest.raises(ValueError, match="n_tasks"):
        PretrainConfig(n_tasks=0)
    with pytest.raises(ValueError, match="size"):
        PretrainConfig.sized("huge")

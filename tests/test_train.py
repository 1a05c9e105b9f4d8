"""The training loop: learning, callbacks, schedules, and exact resume from a checkpoint."""

import pytest
import torch

from kimi_mini.data import TokenData
from kimi_mini.model import KimiConfig, KimiMini
from kimi_mini.train import load_checkpoint, save_checkpoint, train, warmup_cosine

CFG = KimiConfig(d_model=32, n_layers=2, n_heads=2, d_ff=64, max_seq_len=32)


@pytest.fixture(scope="module")
def data():
    # A tiny repetitive "corpus": learnable in a few steps, no file access.
    text = ("def add(a, b):\n    return a + b\n\n" * 200).encode()
    t = torch.frombuffer(bytearray(text), dtype=torch.uint8)
    return TokenData(train=t, val=t[:2000].clone())


def fresh(seed=0):
    torch.manual_seed(seed)
    model = KimiMini(CFG)
    return model, torch.optim.AdamW(model.parameters(), lr=3e-3)


def test_loss_falls_and_records_are_plain(data):
    model, opt = fresh()
    seen = []
    hist = train(model, opt, data, steps=30, batch_size=4, seq_len=16, eval_every=10, progress=False,
                 callbacks=[lambda step, m, o, rec: (seen.append(step), rec.update(extra=step * 2))])
    assert [r["step"] for r in hist] == list(range(1, 31)) and seen == list(range(1, 31))
    assert hist[-1]["extra"] == 60 and "val_loss" in hist[9] and "val_loss" not in hist[10]
    assert hist[-1]["val_loss"] < hist[9]["val_loss"] - 0.3
    assert all(isinstance(v, int | float) for r in hist for v in r.values())


def test_lr_schedule_is_applied(data):
    model, opt = fresh()
    hist = train(model, opt, data, steps=10, batch_size=2, seq_len=8, lr_schedule=warmup_cosine(10, 4, 0.1),
                 progress=False, eval_every=100)
    lrs = [r["lr"] for r in hist]
    assert lrs[0] == pytest.approx(3e-3 / 4) and lrs[3] == pytest.approx(3e-3)
    assert lrs[-1] == pytest.approx(3e-3 * (0.1 + 0.9 * 0.5 * (1 + torch.cos(torch.tensor(5 / 6 * torch.pi)).item())))


def test_resume_from_checkpoint_gives_the_same_next_losses(data, tmp_path):
    kw = dict(batch_size=4, seq_len=16, eval_every=100, progress=False)
    model, opt = fresh()
    straight = train(model, opt, data, steps=12, **kw)

    ckpt = tmp_path / "run.pt"
    model, opt = fresh()
    train(model, opt, data, steps=6, checkpoint=ckpt, **kw)  # "interrupted" after 6 steps
    model, opt = fresh(seed=123)  # a new process: different init, fresh optimizer
    resumed = train(model, opt, data, steps=12, checkpoint=ckpt, resume=True, **kw)
    assert [r["step"] for r in resumed] == list(range(1, 13))
    assert [r["loss"] for r in resumed[6:]] == [r["loss"] for r in straight[6:]]


def test_checkpoint_loads_with_weights_only(data, tmp_path):
    model, opt = fresh()
    train(model, opt, data, steps=2, batch_size=2, seq_len=8, progress=False)
    save_checkpoint(tmp_path / "c.pt", model, opt, step=2)
    state = torch.load(tmp_path / "c.pt", weights_only=True)
    assert state["step"] == 2 and KimiConfig.from_dict(state["config"]) == CFG
    other, other_opt = fresh(seed=5)
    load_checkpoint(tmp_path / "c.pt", other, other_opt)
    for a, b in zip(model.parameters(), other.parameters(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="path"):
        load_checkpoint(tmp_path / "missing.pt", other)


def test_train_rejects_bad_arguments(data):
    model, opt = fresh()
    with pytest.raises(ValueError, match="steps"):
        train(model, opt, data, steps=0, batch_size=2, seq_len=8)
    with pytest.raises(ValueError, match="grad_clip"):
        train(model, opt, data, steps=1, batch_size=2, seq_len=8, grad_clip=0)

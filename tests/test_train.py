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


# ------------------------------------------------------------------------------------ run_steps


def _toy_game(seed=0):
    """Two models, two optimisers (the shape of an adversarial topic's step_fn)."""
    torch.manual_seed(seed)
    a, b = torch.nn.Linear(3, 2), torch.nn.Linear(2, 1)
    oa, ob = torch.optim.SGD(a.parameters(), lr=0.1), torch.optim.Adam(b.parameters(), lr=0.01)
    x = torch.randn(64, 3, generator=torch.Generator().manual_seed(1))

    def step_fn(step, gen):
        idx = torch.randint(0, 64, (8,), generator=gen)
        loss_b = b(a(x[idx]).detach()).pow(2).mean()
        ob.zero_grad()
        loss_b.backward()
        ob.step()
        loss_a = -b(a(x[idx])).pow(2).mean() + a(x[idx]).pow(2).mean()
        oa.zero_grad()
        loss_a.backward()
        oa.step()
        return {"loss": loss_a.item(), "d_loss": loss_b.item()}

    return step_fn, dict(a=a, b=b, oa=oa, ob=ob)


def test_run_steps_records_callbacks_and_evaluation():
    from kimi_mini.train import run_steps

    step_fn, _ = _toy_game()
    evals, seen = [], []
    hist = run_steps(step_fn, 7, seed=3, progress=False, eval_every=3,
                     eval_fn=lambda: evals.append(1) or {"val": float(len(evals))},
                     callbacks=[lambda s, r: (seen.append(s), r.update(twice=2 * s))])
    assert [r["step"] for r in hist] == list(range(1, 8)) and seen == list(range(1, 8))
    assert [r.get("val") for r in hist] == [None, None, 1.0, None, None, 2.0, 3.0]  # every 3 and the last
    assert hist[-1]["twice"] == 14 and all("seconds" in r and "d_loss" in r for r in hist)


def test_run_steps_resumes_two_optimisers_exactly(tmp_path):
    from kimi_mini.train import StateCheckpoint, run_steps

    step_fn, objs = _toy_game()
    straight = run_steps(step_fn, 10, seed=4, progress=False)
    step_fn, objs = _toy_game()
    run_steps(step_fn, 5, seed=4, progress=False, checkpoint=StateCheckpoint(tmp_path / "g.pt", **objs))
    step_fn, objs = _toy_game(seed=99)  # a new process: other init, fresh optimiser states
    resumed = run_steps(step_fn, 10, seed=4, progress=False, resume=True,
                        checkpoint=StateCheckpoint(tmp_path / "g.pt", **objs))
    assert [r["loss"] for r in resumed] == [r["loss"] for r in straight]
    assert [r["d_loss"] for r in resumed[5:]] == [r["d_loss"] for r in straight[5:]]


def test_run_steps_rejects_bad_arguments(tmp_path):
    from kimi_mini.train import StateCheckpoint, run_steps

    step_fn, objs = _toy_game()
    for kw, arg in ((dict(steps=0), "steps"), (dict(steps=2, eval_every=0), "eval_every"),
                    (dict(steps=2, resume=True), "resume"), (dict(steps=2, checkpoint_every=-1), "checkpoint_every")):
        with pytest.raises(ValueError, match=arg):
            run_steps(step_fn, progress=False, **kw)
    ckpt = StateCheckpoint(tmp_path / "g.pt", **objs)
    run_steps(step_fn, 4, progress=False, checkpoint=ckpt)
    with pytest.raises(ValueError, match="steps: the checkpoint .* already at step 4"):
        run_steps(step_fn, 2, progress=False, checkpoint=ckpt, resume=True)
    with pytest.raises(ValueError, match="holds no state for"):
        StateCheckpoint(tmp_path / "g.pt", other=torch.nn.Linear(1, 1)).load()
    with pytest.raises(ValueError, match="a: expected an object with state_dict"):
        StateCheckpoint(tmp_path / "x.pt", a=3)
    with pytest.raises(ValueError, match="objects"):
        StateCheckpoint(tmp_path / "x.pt")


@pytest.mark.parametrize("content", [b"", b"garbage" * 10, "truncated", "directory", "other-config"])
def test_bad_checkpoint_files_are_one_clear_error(data, tmp_path, content):
    model, opt = fresh()
    path = tmp_path / "c.pt"
    if content == "directory":
        path.mkdir()
    elif content == "truncated":
        save_checkpoint(path, model, opt, step=1)
        path.write_bytes(path.read_bytes()[:200])
    elif content == "other-config":
        other = KimiMini(CFG.replace(d_model=16, n_heads=2))
        save_checkpoint(path, other, torch.optim.AdamW(other.parameters()), step=1)
    else:
        path.write_bytes(content)
    with pytest.raises(ValueError, match="path: .*c.pt"):
        load_checkpoint(path, model, opt)


def test_train_resume_with_fewer_steps_than_the_checkpoint_is_an_error(data, tmp_path):
    kw = dict(batch_size=2, seq_len=8, eval_every=100, progress=False, checkpoint=tmp_path / "r.pt")
    model, opt = fresh()
    train(model, opt, data, steps=4, **kw)
    with pytest.raises(ValueError, match="steps"):
        train(model, opt, data, steps=2, resume=True, **kw)

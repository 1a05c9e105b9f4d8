"""Distributed Muon (Moonlight's Algorithm 1, ZeRO-1) on 2 gloo processes on 127.0.0.1.

- DistributedMuon on 2 ranks equals single-process Muon on the same global batch (and ZeRO-1 AdamW equals
  torch's AdamW), its consolidated state equals Muon's, and its collectives move the bytes the
  algorithm says;
- ``kimi-mini train`` on 2 processes equals 1 process (losses, val loss, final weights) and rank 0's
  checkpoint holds the consolidated optimizer state.
"""

from __future__ import annotations

import math
import os
import socket
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from kimi_mini.model import KimiConfig, KimiMini
from kimi_mini.optim import build_optimizer
from kimi_mini.testing import assert_close

WORLD = 2
TIMEOUT_S = 240


def tiny_config() -> KimiConfig:
    # odd parameter sizes (d_model 25, d_ff 39): shards need padding
    return KimiConfig(d_model=25, n_layers=1, n_heads=2, head_dim=6, d_ff=39, max_seq_len=32)


def global_batch(step: int) -> torch.Tensor:
    return torch.randint(0, 256, (4, 13), generator=torch.Generator().manual_seed(100 + step))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(fns, rank: int, ports: list[int], args: tuple) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD),
                      OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo")
    torch.set_num_threads(1)
    for fn, port in zip(fns, ports, strict=True):  # one process group per function, each on its own port
        os.environ["MASTER_PORT"] = str(port)
        fn(rank, *args)


def launch(fns, *args) -> None:
    """Run each ``fn(rank, *args)`` of ``fns`` in turn on WORLD spawned processes (spawning is the slow
    part, so one launch serves all the tests); fail, and stop them, after TIMEOUT_S."""
    ctx = mp.get_context("spawn")
    ports = [_free_port() for _ in fns]
    procs = [ctx.Process(target=_entry, args=(fns, rank, ports, args), daemon=True) for rank in range(WORLD)]
    for p in procs:
        p.start()
    deadline = time.monotonic() + TIMEOUT_S
    for p in procs:
        p.join(max(1.0, deadline - time.monotonic()))
    hung = [p for p in procs if p.is_alive()]
    for p in hung:
        p.kill()
        p.join(5)
    assert not hung, f"{len(hung)} of {WORLD} ranks still running after {TIMEOUT_S} s"
    codes = [p.exitcode for p in procs]
    assert codes == [0] * WORLD, f"rank exit codes {codes}"


# ---------------------------------------------------------------------------------- the optimizer


def _optimizer_worker(rank: int, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{os.environ['MASTER_PORT']}", rank=rank,
                            world_size=WORLD)
    try:
        for name in ("muon", "adamw"):
            torch.manual_seed(0)
            model = KimiMini(tiny_config())
            opt = build_optimizer(model, name, lr=2e-2, weight_decay=0.1, distributed=True, max_grad_norm=1.0)
            for step in range(3):
                x = global_batch(step)
                rows = x[rank * 2:(rank + 1) * 2]  # this rank's half of the global batch
                opt.zero_grad()
                model(rows, rows)[1].backward()
                opt.step()
            state = opt.consolidated_state_dict()  # a collective: every rank calls it
            if rank == 0:
                torch.save({"model": model.state_dict(), "optimizer": state, "comm": dict(opt.comm_bytes),
                            "grad_norm": opt.last_grad_norm}, Path(out_dir) / f"{name}.pt")
    finally:
        dist.destroy_process_group()


def _single_process(name: str):
    torch.manual_seed(0)
    model = KimiMini(tiny_config())
    opt = build_optimizer(model, name, lr=2e-2, weight_decay=0.1)
    for step in range(3):
        x = global_batch(step)
        opt.zero_grad()
        model(x, x)[1].backward()
        norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0))
        opt.step()
    return model, opt, norm


@pytest.fixture(scope="module")
def two_rank_dir(tmp_path_factory):
    """Everything the 2-rank processes write: the optimizer checks, then a 2-process `kimi-mini train`."""
    out = tmp_path_factory.mktemp("dist_muon")
    launch([_optimizer_worker, _train_worker], str(out))
    return out


@pytest.fixture(scope="module")
def two_rank_optimizers(two_rank_dir):
    return {name: torch.load(two_rank_dir / f"{name}.pt", weights_only=True) for name in ("muon", "adamw")}


@pytest.mark.parametrize("name", ["muon", "adamw"])
def test_distributed_equals_single_process(two_rank_optimizers, name):
    got = two_rank_optimizers[name]
    model, opt, norm = _single_process(name)
    assert got["grad_norm"] == pytest.approx(norm, rel=1e-5)
    for key, expected in model.state_dict().items():
        assert_close(got["model"][key], expected, rtol=1e-5, atol=1e-6, what=f"{name}: {key}")
    # the consolidated (gathered) optimizer state is single-process Muon's / AdamW's
    params = [p for g in opt.param_groups for p in g["params"]]  # the state dict's numbering
    full = got["optimizer"]["state"]
    for i, p in enumerate(params):
        for key, val in opt.state[p].items():
            if isinstance(val, torch.Tensor) and val.dim() > 0:
                assert_close(full[i][key], val, rtol=1e-4, atol=1e-7, what=f"{name} state {i} {key}")


def test_communication_bytes_follow_algorithm_1(two_rank_optimizers):
    model = KimiMini(tiny_config())
    padded = lambda p: math.ceil(p.numel() / WORLD) * WORLD  # noqa: E731
    every = sum(padded(p) for p in model.parameters())
    muon_params = sum(padded(p) for n, p in model.named_parameters()
                      if p.dim() == 2 and not n.startswith(("tok_emb", "lm_head")))
    steps, fp32 = 3, 4
    muon, adamw = two_rank_optimizers["muon"]["comm"], two_rank_optimizers["adamw"]["comm"]
    # ZeRO-1 AdamW: reduce-scatter the gradients, all-gather the parameters (fp32 on CPU)
    assert adamw["reduce_scatter_grad"] == adamw["all_gather_params"] == steps * every * fp32
    assert "all_gather_momentum" not in adamw
    # Distributed Muon: the same two, plus the all-gather of the Muon matrices' momentum
    assert muon["reduce_scatter_grad"] == muon["all_gather_params"] == steps * every * fp32
    assert muon["all_gather_momentum"] == steps * muon_params * fp32
    ratio = sum(v for k, v in muon.items() if k != "checkpoint") / sum(
        v for k, v in adamw.items() if k != "checkpoint")
    assert 1.0 < ratio < 1.5


# ---------------------------------------------------------------------------------- kimi-mini train

TRAIN_ARGS = ["train", "--data", "synthetic", "--optimizer", "muon", "--steps", "4", "--batch-size", "4",
              "--seq-len", "16", "--d-model", "32", "--n-layers", "1", "--n-heads", "2", "--d-ff", "48",
              "--eval-every", "2", "--eval-batches", "1", "--lr", "1e-2", "--no-progress"]


def _train_worker(rank: int, out_dir: str) -> None:
    from kimi_mini.cli import main

    out = Path(out_dir)
    code = main(TRAIN_ARGS + ["--history", str(out / "history2.json"), "--checkpoint", str(out / "ckpt2.pt")])
    if code != 0:
        raise SystemExit(code)


def test_train_cli_two_processes_equal_one(tmp_path, two_rank_dir):
    import json

    from kimi_mini.cli import main

    assert main(TRAIN_ARGS + ["--history", str(tmp_path / "history1.json"),
                              "--checkpoint", str(tmp_path / "ckpt1.pt")]) == 0
    h1 = json.loads((tmp_path / "history1.json").read_text())
    h2 = json.loads((two_rank_dir / "history2.json").read_text())
    assert [r["step"] for r in h2] == [1, 2, 3, 4]
    assert [r["loss"] for r in h2] == pytest.approx([r["loss"] for r in h1], rel=1e-5)
    assert [r["step"] for r in h2 if "val_loss" in r] == [r["step"] for r in h1 if "val_loss" in r] == [2, 4]
    assert [r["val_loss"] for r in h2 if "val_loss" in r] == pytest.approx(
        [r["val_loss"] for r in h1 if "val_loss" in r], rel=1e-5)
    assert [r["tokens"] for r in h2] == [r["tokens"] for r in h1]
    c1 = torch.load(tmp_path / "ckpt1.pt", weights_only=True)
    c2 = torch.load(two_rank_dir / "ckpt2.pt", weights_only=True)
    assert c2["step"] == 4
    for key, val in c1["model"].items():
        assert_close(c2["model"][key], val, rtol=1e-5, atol=1e-6, what=key)
    for i, st in c1["optimizer"]["state"].items():  # consolidated: full shapes, same values
        for key, val in st.items():
            if isinstance(val, torch.Tensor) and val.dim() > 0:
                assert_close(c2["optimizer"]["state"][i][key], val, rtol=1e-4, atol=1e-7, what=f"{i} {key}")

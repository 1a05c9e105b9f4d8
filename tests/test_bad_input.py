"""The bad-input battery: every public entry point, fed what a careful user might get wrong, answers with a
``ValueError`` whose message names the argument (README, "Reliability") — never a raw internal exception,
a silent wrong result, a hang or a crash. CLI cases: exit code 2 and exactly one line on stderr.

Each case is ``(id, call, argument)``: ``call()`` must raise ``ValueError`` mentioning ``argument``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch

import kimi_mini  # noqa: F401  (registers the components and optimizers)
from kimi_mini import report
from kimi_mini.data import ByteTokenizer, TokenData
from kimi_mini.exercises import check
from kimi_mini.layers import causal_attention
from kimi_mini.moba import moba_attention, moba_decode_attention, moba_gate, moba_select
from kimi_mini.model import KimiConfig, KimiMini
from kimi_mini.moe import (
    MoE,
    bias_update,
    expected_route_scale,
    max_violation,
    moe_experts,
    sequence_aux_loss,
    sigmoid_topk_route,
)
from kimi_mini.notebooks import check_seeds
from kimi_mini.optim import Muon, build_optimizer, muon_update_scale, newton_schulz
from kimi_mini.presets import get_preset
from kimi_mini.qk_clip import qk_clip_, qk_clip_gamma, qk_clip_mha_weights
from kimi_mini.registry import Registry, register_attention
from kimi_mini.train import StateCheckpoint, load_checkpoint, run_steps, train, warmup_cosine

NAN, INF = float("nan"), float("inf")
torch.manual_seed(0)  # the random inputs below, and so the test ids, must be the same in every xdist worker


@dataclass(frozen=True)
class Case:
    id: str
    call: Callable[[], object]
    arg: str


CASES: list[Case] = []


def case(id: str, arg: str):
    def add(fn):
        CASES.append(Case(id, fn, arg))
        return fn
    return add


def _label(v: object) -> str:
    if isinstance(v, list) and v and all(type(e).__name__ == "ndarray" for e in v):
        return "[" + ", ".join(f"{e.dtype}{list(e.shape)}" for e in v) + "]"
    if isinstance(v, torch.Tensor):  # deterministic ids (xdist workers collect independently)
        values = f"={v.flatten()[:4].tolist()}" if not v.is_meta and v.dtype != torch.float32 or v.numel() <= 4 else ""
        return f"{str(v.dtype).removeprefix('torch.')}{list(v.shape)}{'@meta' if v.is_meta else ''}{values}"
    return repr(v)[:40]


def cases(prefix: str, arg: str, make: Callable[[object], object], values) -> None:
    for v in values:
        CASES.append(Case(f"{prefix}={_label(v)}", lambda v=v: make(v), arg))


# --------------------------------------------------------------------------------------- the model
SMALL = dict(d_model=16, n_layers=1, n_heads=2, d_ff=32, max_seq_len=16)
BAD_INTS = [0, -1, 1.5, "4", True, None]
BAD_POSITIVE = [0, -1.0, NAN, INF, -INF, "1e-6"]

for field in ("vocab_size", "d_model", "n_layers", "n_heads", "d_ff", "max_seq_len"):
    cases(f"KimiConfig.{field}", field, lambda v, f=field: KimiConfig(**{**SMALL, f: v}), BAD_INTS)
for field in ("rope_theta", "norm_eps", "init_std"):
    cases(f"KimiConfig.{field}", field, lambda v, f=field: KimiConfig(**{**SMALL, f: v}), BAD_POSITIVE)
cases("KimiConfig.n_kv_heads", "n_kv_heads", lambda v: KimiConfig(**{**SMALL, "n_kv_heads": v}), [0, 3, 1.5, -2])
cases("KimiConfig.head_dim", "head_dim", lambda v: KimiConfig(**{**SMALL, "head_dim": v}), [3, 0, -2, 2.0])
cases("KimiConfig.n_heads-indivisible", "n_heads", lambda v: KimiConfig(**{**SMALL, "n_heads": v}), [3, 5])
cases("KimiConfig.attention", "attention", lambda v: KimiConfig(**{**SMALL, "attention": v}), ["nope", "", 3])
cases("KimiConfig.ffn", "ffn", lambda v: KimiConfig(**{**SMALL, "ffn": v}), ["nope", None])
cases("KimiConfig.attention_options", "attention_options",
      lambda v: KimiConfig(**{**SMALL, "attention_options": v}), [[], "impl=torch"])


def _build(attention="mha", ffn="dense", aopts=None, fopts=None, **over):
    return KimiMini(KimiConfig(**{**SMALL, **over}, attention=attention, ffn=ffn, attention_options=aopts or {},
                               ffn_options=fopts or {}))


cases("mha.option", "attention_options", lambda v: _build(aopts=v), [{"block_size": 8}, {"top_k": 2}])
cases("mha.impl", "impl", lambda v: _build(aopts={"impl": v}), ["sdpa", "cuda", None])
cases("dense.option", "ffn_options", lambda v: _build(fopts=v), [{"n_experts": 4}])
cases("mla.option", "attention_options", lambda v: _build("mla", aopts=v), [{"blocksize": 2}])
cases("mla.impl", "impl", lambda v: _build("mla", aopts={"impl": v}), ["sdpa", 1])
cases("mla.kv_lora_rank", "kv_lora_rank", lambda v: _build("mla", aopts={"kv_lora_rank": v}), [0, -1, 2.5])
cases("mla.qk_rope_head_dim", "qk_rope_head_dim", lambda v: _build("mla", aopts={"qk_rope_head_dim": v}), [3, 0])
cases("moba.block_size", "block_size", lambda v: _build("moba", aopts={"block_size": v}), [0, -4, 1.5, True])
cases("moba.top_k", "top_k", lambda v: _build("moba", aopts={"top_k": v}), [0, -1, 2.0])
cases("moba.full_attention_layers", "full_attention_layers",
      lambda v: _build("moba", aopts={"full_attention_layers": v}), [-1, 0.5])
cases("moba.impl", "impl", lambda v: _build("moba", aopts={"impl": v}), ["sdpa", "fast"])
cases("moba.option", "attention_options", lambda v: _build("moba", aopts=v), [{"blocksize": 8}])
cases("moe.n_experts", "n_experts", lambda v: _build(ffn="moe", fopts={"n_experts": v}), [0, -2, 1.5])
cases("moe.top_k", "top_k", lambda v: _build(ffn="moe", fopts={"n_experts": 4, "top_k": v}), [0, 5, 1.5])
cases("moe.route_scale", "route_scale", lambda v: _build(ffn="moe", fopts={"route_scale": v}), [0, -1, NAN, INF])
cases("moe.bias_update_speed", "bias_update_speed",
      lambda v: _build(ffn="moe", fopts={"bias_update_speed": v}), [-1e-3, NAN, INF])
cases("moe.bias_rule", "bias_rule", lambda v: _build(ffn="moe", fopts={"bias_rule": v}), ["sign", None])
cases("moe.aux_loss_alpha", "aux_loss_alpha", lambda v: _build(ffn="moe", fopts={"aux_loss_alpha": v}), [-1, NAN])
cases("moe.impl", "impl", lambda v: _build(ffn="moe", fopts={"impl": v}), ["sdpa", "fast"])
cases("moe.option", "ffn_options", lambda v: _build(ffn="moe", fopts=v), [{"experts": 4}])
cases("MoE.d_model", "d_model", lambda v: MoE(v, 4, 2, 8), [0, -1])

_model = None


def model():
    global _model
    if _model is None:
        torch.manual_seed(0)
        _model = _build()
    return _model


cases("forward.tokens", "tokens", lambda v: model()(v), [
    torch.zeros(2, 4), torch.zeros(4, dtype=torch.long), torch.zeros(1, 2, 4, dtype=torch.long),
    torch.zeros(2, 4, dtype=torch.long, device="meta"), torch.full((1, 4), 256), torch.full((1, 4), -1),
    torch.zeros(1, 17, dtype=torch.long), [[1, 2]], torch.zeros(2, 4, dtype=torch.bool)])
cases("forward.targets", "targets", lambda v: model()(torch.zeros(2, 4, dtype=torch.long), v), [
    torch.zeros(2, 5, dtype=torch.long), torch.zeros(2, 4), torch.zeros(8, dtype=torch.long)])
PROMPT = torch.zeros(1, 3, dtype=torch.long)
cases("generate.max_new_tokens", "max_new_tokens", lambda v: model().generate(PROMPT, v), [-1, 1.5, 14, None])
cases("generate.temperature", "temperature", lambda v: model().generate(PROMPT, 2, temperature=v), [-1, NAN, INF])
cases("generate.top_k", "top_k", lambda v: model().generate(PROMPT, 2, top_k=v), [0, -3, 1.5])
cases("generate.prompt", "prompt", lambda v: model().generate(v, 2), [
    torch.zeros(3, dtype=torch.long), torch.zeros(1, 3), torch.zeros(1, 0, dtype=torch.long)])

# --------------------------------------------------------------------------------------- data
STREAM = torch.arange(200, dtype=torch.uint8)
cases("TokenData.train", "train", lambda v: TokenData(train=v, val=STREAM), [
    torch.rand(100), torch.zeros(4, 50, dtype=torch.uint8), torch.tensor([1, 300]), torch.tensor([-1, 2]),
    [1, 2, 3], torch.zeros(5, dtype=torch.bool)])
cases("TokenData.val", "val", lambda v: TokenData(train=STREAM, val=v), [torch.rand(100), None])
DATA = TokenData(train=STREAM, val=STREAM)
cases("get_batch.split", "split", lambda v: DATA.get_batch(v, 2, 8), ["test", "validation", None])
cases("get_batch.batch_size", "batch_size", lambda v: DATA.get_batch("train", v, 8), [0, -1, 1.5])
cases("get_batch.seq_len", "seq_len", lambda v: DATA.get_batch("train", 2, v), [0, 199, 1000, 2.5])
cases("ByteTokenizer.encode", "text", lambda v: ByteTokenizer().encode(v), [b"bytes", 3, "\ud800"])
cases("ByteTokenizer.decode", "ids", lambda v: ByteTokenizer().decode(v), [[256], [-1], [1.5]])

# --------------------------------------------------------------------------------------- training


def _train(**kw):
    m = _build()
    args = dict(steps=2, batch_size=2, seq_len=8, progress=False)
    args.update(kw)
    return train(m, torch.optim.SGD(m.parameters(), lr=0.1), kw.pop("data", DATA), **args)


cases("train.steps", "steps", lambda v: _train(steps=v), [0, -1, 1.5])
cases("train.eval_every", "eval_every", lambda v: _train(eval_every=v), [0, -5])
cases("train.eval_batches", "eval_batches", lambda v: _train(eval_batches=v), [0])
cases("train.grad_clip", "grad_clip", lambda v: _train(grad_clip=v), [0, -1.0, NAN, INF])
cases("train.resume", "resume", lambda v: _train(resume=v), [True])
cases("train.batch_size", "batch_size", lambda v: _train(batch_size=v), [0, -2])
cases("train.seq_len", "seq_len", lambda v: _train(seq_len=v), [0, 500])
cases("warmup_cosine.steps", "steps", lambda v: warmup_cosine(v), [0, -3])
cases("warmup_cosine.warmup", "warmup", lambda v: warmup_cosine(10, v), [-1])
cases("warmup_cosine.min_ratio", "min_ratio", lambda v: warmup_cosine(10, 0, v), [1.5, -0.1])
STEP = lambda step, gen: {"loss": 0.0}  # noqa: E731
cases("run_steps.steps", "steps", lambda v: run_steps(STEP, v, progress=False), [0, -1, 2.0, True])
cases("run_steps.eval_every", "eval_every", lambda v: run_steps(STEP, 2, eval_every=v, progress=False), [0, 1.5])
cases("run_steps.checkpoint_every", "checkpoint_every",
      lambda v: run_steps(STEP, 2, checkpoint_every=v, progress=False), [0, -1])
cases("run_steps.resume", "resume", lambda v: run_steps(STEP, 2, resume=v, progress=False), [True])
cases("StateCheckpoint.objects", "objects", lambda v: StateCheckpoint(v), ["run.pt"])
cases("StateCheckpoint.object", "model", lambda v: StateCheckpoint("run.pt", model=v), [3, "x", None])


@case("load_checkpoint.missing", "path")
def _missing(tmp="/nonexistent/kimi-mini/checkpoint.pt"):
    load_checkpoint(tmp, model())


@case("load_checkpoint.directory", "path")
def _directory():
    load_checkpoint("/", model())


for name, blob in (("empty", b""), ("garbage", b"not a checkpoint" * 5), ("zip-like", b"PK\x03\x04" + bytes(60))):
    def _bad_file(blob=blob, name=name):
        import tempfile

        with tempfile.NamedTemporaryFile(suffix=".pt") as f:
            f.write(blob)
            f.flush()
            load_checkpoint(f.name, model())
    CASES.append(Case(f"load_checkpoint.{name}", _bad_file, "path"))

# --------------------------------------------------------------------------------------- attention
QKV = [torch.randn(1, 2, 20, 8) for _ in range(3)]
cases("moba_attention.block_size", "block_size", lambda v: moba_attention(*QKV, v, 2), [0, -8, 1.5, True, None])
cases("moba_attention.top_k", "top_k", lambda v: moba_attention(*QKV, 4, v), [0, -1, 2.0, None])
cases("moba_attention.impl", "impl", lambda v: moba_attention(*QKV, 4, 2, impl=v), ["sdpa", "cuda", None, 1])
cases("moba_attention.q", "q", lambda v: moba_attention(v, *QKV[1:], 4, 2), [
    torch.randn(2, 20, 8), torch.zeros(1, 2, 20, 8, dtype=torch.long), [[1.0]], torch.randn(1, 2, 0, 8)])
cases("moba_attention.k", "k", lambda v: moba_attention(QKV[0], v, QKV[2], 4, 2), [
    torch.randn(1, 2, 19, 8), torch.randn(1, 2, 20, 8, dtype=torch.float64), torch.randn(1, 1, 20, 8)])
cases("moba_attention.v", "v", lambda v: moba_attention(*QKV[:2], v, 4, 2), [torch.randn(1, 2, 20, 4)])
cases("moba_select.top_k", "top_k", lambda v: moba_select(*QKV[:2], 4, v), [0, -2])
cases("moba_select.block_size", "block_size", lambda v: moba_select(*QKV[:2], v, 2), [0])
cases("moba_gate.q", "q", lambda v: moba_gate(v, QKV[1], 4, 2), [torch.randn(20, 8)])
DEC = [torch.randn(1, 2, 1, 8), torch.randn(1, 2, 20, 8), torch.randn(1, 2, 20, 8)]
cases("moba_decode.top_k", "top_k", lambda v: moba_decode_attention(*DEC, 19, 4, v), [0, -1, 1.5])
cases("moba_decode.block_size", "block_size", lambda v: moba_decode_attention(*DEC, 19, v, 2), [0, -1])
cases("moba_decode.start_pos", "start_pos", lambda v: moba_decode_attention(*DEC, v, 4, 2), [-1, 1.5])
cases("moba_decode.k", "k", lambda v: moba_decode_attention(DEC[0], v, v, 19, 4, 2), [
    torch.randn(1, 2, 25, 8), torch.randn(1, 1, 20, 8)])
cases("moba_decode.q", "q", lambda v: moba_decode_attention(v, *DEC[1:], 19, 4, 2), [
    torch.zeros(1, 2, 1, 8, dtype=torch.long), torch.randn(2, 1, 8)])
cases("moba_decode.means", "means", lambda v: moba_decode_attention(*DEC, 19, 4, 2, means=v), [torch.randn(1, 2, 4, 3)])
cases("causal_attention.impl", "impl", lambda v: causal_attention(*QKV, impl=v), ["sdpa", "triton", None])
cases("causal_attention.q", "q", lambda v: causal_attention(v, *QKV[1:]), [torch.randn(2, 20, 8)])
cases("causal_attention.k", "k", lambda v: causal_attention(QKV[0], v, v), [torch.randn(1, 2, 10, 8),
                                                                            torch.randn(1, 3, 20, 8)])

# --------------------------------------------------------------------------------------- MoE
LOGITS = torch.randn(6, 4)
cases("route.top_k", "top_k", lambda v: sigmoid_topk_route(LOGITS, None, v), [0, 5, -1, 1.5, None])
cases("route.scale", "scale", lambda v: sigmoid_topk_route(LOGITS, None, 2, v), [0, -1.0, NAN, INF, "2"])
cases("route.bias", "bias", lambda v: sigmoid_topk_route(LOGITS, v, 2), [
    torch.zeros(3), torch.zeros(4, dtype=torch.long), [0.0] * 4])
cases("route.logits", "logits", lambda v: sigmoid_topk_route(v, None, 1), [
    torch.randn(6), torch.zeros(6, 4, dtype=torch.long), torch.zeros(6, 0)])
cases("route_scale.n_experts", "n_experts", lambda v: expected_route_scale(v, 1), [0, -4, 1.5])
cases("route_scale.top_k", "top_k", lambda v: expected_route_scale(8, v), [0, 9])
cases("route_scale.samples", "samples", lambda v: expected_route_scale(8, 2, samples=v), [0, -1, 10**12, 1e5])
cases("route_scale.chunk", "chunk", lambda v: expected_route_scale(8, 2, samples=10, chunk=v), [0, -1])
cases("route_scale.seed", "seed", lambda v: expected_route_scale(8, 2, samples=10, seed=v), [1.5, None])
cases("max_violation.counts", "counts", max_violation, [
    torch.tensor([1.0, NAN]), torch.tensor([3, -1]), torch.tensor(4.0), torch.zeros(2, 0), [1, 2]])
cases("bias_update.rule", "rule", lambda v: bias_update(torch.zeros(4), torch.ones(4), 1e-3, v), ["sign", None])
cases("bias_update.counts", "counts", lambda v: bias_update(torch.zeros(4), v, 1e-3), [
    torch.ones(3), torch.tensor([1.0, -1.0, 2.0, 0.0]), torch.tensor([1.0, NAN, 2.0, 0.0])])
cases("bias_update.speed", "speed", lambda v: bias_update(torch.zeros(4), torch.ones(4), v), [-1.0, NAN, INF])
cases("bias_update.bias", "bias", lambda v: bias_update(v, torch.ones(4), 1e-3), [torch.zeros(2, 2)])
SCORES, IDX = torch.rand(8, 4), torch.randint(0, 4, (8, 2))
cases("aux_loss.n_seq", "n_seq", lambda v: sequence_aux_loss(SCORES, IDX, v), [0, 3, -1, 2.0])
cases("aux_loss.indices", "indices", lambda v: sequence_aux_loss(SCORES, v, 2), [IDX.float(), IDX[:4]])
X, W1, W2 = torch.randn(5, 6), torch.randn(3, 6, 4), torch.randn(3, 4, 6)
IDX5, WTS5 = torch.randint(0, 3, (5, 2)), torch.rand(5, 2)
for impl in ("naive", "torch"):
    cases(f"moe_experts[{impl}].indices", "indices", lambda v, impl=impl: moe_experts(X, v, WTS5, W1, W1, W2, impl), [
        torch.full((5, 2), 3), torch.full((5, 2), -1), IDX5.float(), IDX5[:4]])
    cases(f"moe_experts[{impl}].w", "w1", lambda v, impl=impl: moe_experts(X, IDX5, WTS5, v, v, W2, impl), [
        torch.randn(3, 5, 4), torch.randn(6, 4)])
cases("moe_experts.impl", "impl", lambda v: moe_experts(X, IDX5, WTS5, W1, W1, W2, v), ["sorted", None])
cases("moe_experts.x", "x", lambda v: moe_experts(v, IDX5, WTS5, W1, W1, W2), [torch.randn(1, 5, 6),
                                                                            torch.zeros(5, 6, dtype=torch.long)])

# --------------------------------------------------------------------------------------- optimizers
G = torch.randn(4, 6)
cases("newton_schulz.G", "G", newton_schulz, [torch.randn(5), torch.zeros(3, 3, dtype=torch.long), [[1.0]]])
cases("newton_schulz.steps", "steps", lambda v: newton_schulz(G, v), [-1, 10**9, 1.5, None])
cases("newton_schulz.eps", "eps", lambda v: newton_schulz(G, eps=v), [-1e-7, NAN, INF])
cases("newton_schulz.impl", "impl", lambda v: newton_schulz(G, impl=v), ["naive", "cuda", None])
P = [torch.nn.Parameter(torch.randn(4, 6))]
for name, values in (("lr", [-1, NAN, INF, "0.1"]), ("momentum", [1.0, -0.1, NAN]),
                     ("weight_decay", [-0.1, NAN, INF]), ("ns_steps", [0, 10**9, 2.5]),
                     ("update_rms", [0, -0.2, NAN]), ("betas", [(1.0, 0.9), (0.9,), (0.9, NAN)]),
                     ("eps", [-1.0, NAN]), ("impl", ["naive", None])):
    cases(f"Muon.{name}", name, lambda v, name=name: Muon(P, **{"lr": 0.1, name: v}), values)
cases("Muon.params", "params", lambda v: Muon([torch.nn.Parameter(v)], lr=0.1),
      [torch.randn(5), torch.randn(2, 2, 2, 2)])
cases("build_optimizer.name", "name", lambda v: build_optimizer(model(), v, lr=0.1), ["sgd", "", None, 3])
cases("muonclip.tau", "tau", lambda v: build_optimizer(model(), "muonclip", lr=0.1, tau=v), [0, -1, NAN, INF])
cases("muonclip.alpha", "alpha", lambda v: build_optimizer(model(), "muonclip", lr=0.1, alpha=v), [1.5, -0.5, NAN])
cases("adamw.lr", "lr", lambda v: build_optimizer(model(), "muon", lr=v), [-1, NAN])
cases("muon_update_scale.shape", "shape", muon_update_scale, [(3,), ()])
cases("qk_clip_gamma.tau", "tau", lambda v: qk_clip_gamma(torch.ones(2), v), [0, -1, NAN, INF])
cases("qk_clip_.tau", "tau", lambda v: qk_clip_(model(), v), [0, NAN])
cases("qk_clip_.alpha", "alpha", lambda v: qk_clip_(model(), 100.0, v), [2, -1])
cases("qk_clip_mha_weights.tau", "tau", lambda v: qk_clip_mha_weights(torch.randn(4, 3), torch.randn(4, 3),
                                                                      torch.ones(2), v), [0, NAN])

# --------------------------------------------------------------------------------------- harness
CLAIM = dict(claim="c", paper_value="p", ours="o", explanation="e", paper="x", precondition="none",
             evidence=report.Evidence.mean([1.0, 2.0, 3.0]))
for field, values in (("claim", ["", "  ", None]), ("paper_value", [""]), ("ours", [""]), ("explanation", [""]),
                      ("paper", ["", 3]), ("evidence", [True, [], [1.0], None]), ("precondition", ["", "yes", None]),
                      ("notebook", ["", "/", 3])):
    cases(f"record_claim.{field}", field, lambda v, field=field: report.record_claim(**{**CLAIM, field: v}), values)
cases("record_check.passed", "passed", lambda v: report.record_check("c", "p", "o", v, "e", paper="x"),
      ["yes", 1, None])
cases("Evidence.mean.values", "values", lambda v: report.Evidence.mean(v), [[1.0], [1.0, NAN], [1.0, "a"]])
cases("Evidence.paired.b", "b", lambda v: report.Evidence.paired([1.0, 2.0], v), [[1.0], [1.0, 2.0, 3.0]])
cases("Evidence.direction", "direction", lambda v: report.Evidence.mean([1.0, 2.0], direction=v), ["up", ""])
cases("Evidence.threshold", "threshold", lambda v: report.Evidence.mean([1.0, 2.0], threshold=v), [NAN, INF])
cases("Evidence.proportion.successes", "successes", lambda v: report.Evidence.proportion(v, 10), [-1, 11, 2.5])
cases("Evidence.proportion.n", "n", lambda v: report.Evidence.proportion(0, v), [0, -3, 1.5])
cases("Precondition.met", "met", lambda v: report.Precondition("t", "m", v), ["yes", 1, None])
cases("Precondition.text", "text", lambda v: report.Precondition(v, "m", True), ["", None])
cases("check_seeds.seeds", "seeds", check_seeds, [(), "012", (1, 1), (-1,), (1.5,), (True,), 3])
cases("get_preset.preset", "preset", get_preset, ["cpu", "", "GPU"])
cases("Preset.pick", "choices", lambda v: get_preset("toy").pick(**v), [{"toy": 1}, {"toy": 1, "gpu": 2, "tpu": 3}])
cases("register_attention.name", "name", register_attention, ["", 3])
cases("Registry.get", "thing", lambda v: Registry("thing").get(v), ["x", None])
cases("check.name", "name", lambda v: check(v, print), ["no_such_exercise"])


# ======================================================================================= topic packages (issue 29)
# Ids start with the package ("prompts:", "rationale:", ...). Fixtures are tiny and built on first use.
import random as _random  # noqa: E402
from functools import cache as _cache  # noqa: E402

import numpy as _np  # noqa: E402

from kimi_mini.agentic import rl as _rl  # noqa: E402
from kimi_mini.agentic import synthesis as _syn  # noqa: E402
from kimi_mini.agentic import tools as _tools  # noqa: E402
from kimi_mini.fusion import data as _fdata  # noqa: E402
from kimi_mini.fusion import ops as _fops  # noqa: E402
from kimi_mini.invariance import game as _game  # noqa: E402
from kimi_mini.invariance import model as _imodel  # noqa: E402
from kimi_mini.invariance import probe as _probe  # noqa: E402
from kimi_mini.invariance import translation as _tr  # noqa: E402
from kimi_mini.invariance.data import InvarianceData, light  # noqa: E402
from kimi_mini.kernels import fusion as _kfusion  # noqa: E402
from kimi_mini.kernels import logprob as _klogprob  # noqa: E402
from kimi_mini.kernels import moments as _kmoments  # noqa: E402
from kimi_mini.prompts import families as _families  # noqa: E402
from kimi_mini.prompts import gps as _gps  # noqa: E402

_pre = __import__("importlib").import_module("kimi_mini.prompts.pretrain")  # the package exports a pretrain()
from kimi_mini.prompts import prompt_tuning as _pt  # noqa: E402
from kimi_mini.prompts import rank as _rank  # noqa: E402
from kimi_mini.prompts import tasks as _ptasks  # noqa: E402
from kimi_mini.prompts import zoo as _pzoo  # noqa: E402
from kimi_mini.rationale import cmd as _cmd  # noqa: E402
from kimi_mini.rationale import metrics as _rmetrics  # noqa: E402
from kimi_mini.rationale import models as _rmodels  # noqa: E402
from kimi_mini.rationale import train as _rtrain  # noqa: E402
from kimi_mini.storywars import corpus as _corpus  # noqa: E402
from kimi_mini.storywars import evaluate as _sweval  # noqa: E402
from kimi_mini.storywars import metrics as _swm  # noqa: E402
from kimi_mini.storywars import tasks as _swtasks  # noqa: E402
from kimi_mini.storywars import train as _swtrain  # noqa: E402

BIG = 10**9


@_cache
def _ptask():
    return _families.longer_than(1, 0)[0]


@_cache
def _lm(max_seq_len=64):
    torch.manual_seed(0)
    return KimiMini(KimiConfig(d_model=16, n_layers=1, n_heads=2, d_ff=32, max_seq_len=max_seq_len))


def _gps_call(**kw):
    t = _ptask()
    args = dict(generations=1, keep=1, operators=(lambda p, r: p + " ok",), scorer=lambda p: 0.5)
    args.update(kw)
    return _gps.genetic_prompt_search(None, t, None, [t.templates[0]], **args)


def _rs_call(**kw):
    t = _ptask()
    args = dict(budget=2, keep=1, operators=(lambda p, r: p + " ok",), scorer=lambda p: 0.5)
    args.update(kw)
    return _gps.random_search(None, t, None, [t.templates[0]], **args)


# --- prompts
cases("prompts:PretrainConfig.lr", "lr", lambda v: _pre.PretrainConfig(lr=v), [INF, NAN, -1.0, "1e-3"])
cases("prompts:PretrainConfig.lr_min_ratio", "lr_min_ratio", lambda v: _pre.PretrainConfig(lr_min_ratio=v),
      [-0.1, 1.5, NAN])
cases("prompts:PretrainConfig.warmup", "warmup", lambda v: _pre.PretrainConfig(warmup=v), [-1, 1.5, 5000])
cases("prompts:PretrainConfig.optimizer", "optimizer", lambda v: _pre.PretrainConfig(optimizer=v), ["sgd", None])
cases("prompts:PretrainConfig.seed", "seed", lambda v: _pre.PretrainConfig(seed=v), [1.5, None])
cases("prompts:PretrainConfig.n_heads", "n_heads", lambda v: _pre.PretrainConfig(d_model=32, n_heads=v), [3, 5])
cases("prompts:PretrainConfig.steps", "steps", lambda v: _pre.PretrainConfig(steps=v), [0, 10**12, True])
cases("prompts:PretrainConfig.sized", "size", lambda v: _pre.PretrainConfig.sized(v), ["huge", None])
cases("prompts:gps.children_per_parent", "children_per_parent", lambda v: _gps_call(children_per_parent=v),
      [BIG, 0, 1.5])
cases("prompts:gps.generations", "generations", lambda v: _gps_call(generations=v), [BIG, -1, 1.5])
cases("prompts:gps.max_tries", "max_tries", lambda v: _gps_call(max_tries=v), [0, -1, BIG, 1.5])
cases("prompts:gps.keep", "keep", lambda v: _gps_call(keep=v), [0, True, BIG])
cases("prompts:gps.manual_prompts", "manual_prompts",
      lambda v: _gps.genetic_prompt_search(None, _ptask(), None, v, operators=(str,), scorer=lambda p: 0.5),
      ["{text}", [], [3], ["no slot here"]])
cases("prompts:gps.operators", "operators", lambda v: _gps_call(operators=v), [(), "abc", (3,)])
cases("prompts:gps.scorer", "scorer", lambda v: _gps_call(scorer=v), [3, "f"])
cases("prompts:gps.task", "task", lambda v: _gps.genetic_prompt_search(None, v, None, ["{text}"], operators=(str,),
                                                                       scorer=lambda p: 0.5), [None, "task"])
cases("prompts:random_search.budget", "budget", lambda v: _rs_call(budget=v), [BIG, 0, 1.5])
cases("prompts:random_search.max_steps", "max_steps", lambda v: _rs_call(max_steps=v), [BIG, -1])
cases("prompts:random_search.max_tries", "max_tries", lambda v: _rs_call(max_tries=v), [0, BIG])
cases("prompts:dev_split.n_dev", "n_dev", lambda v: _gps.dev_split(_ptask(), v), [0, True, 10**6])
cases("prompts:dev_split.task", "task", lambda v: _gps.dev_split(v, 2), [None, "x"])
cases("prompts:icl_accuracy.k", "k", lambda v: _gps.icl_accuracy(_lm(), _ptask(), _ptask().examples[:2],
                                                                 _ptask().examples[:1], _ptask().templates[0], v),
      [-1, 1.5, BIG])
cases("prompts:icl_accuracy.test", "test", lambda v: _gps.icl_accuracy(_lm(), _ptask(), _ptask().examples[:2], v,
                                                                       _ptask().templates[0], 1), [[], None])
cases("prompts:accuracy.examples", "examples", lambda v: _gps.accuracy(_lm(), _ptask(), v, _ptask().templates[0]),
      [[], None])
LG = torch.randn(4, 5)
cases("prompts:token_logprobs.targets", "targets", lambda v: _rank.token_logprobs(LG, v), [
    torch.tensor([0, 1, 5, 2]), torch.tensor([0, -1, 2, 3]), torch.tensor([0, -100, 2, 3]), torch.zeros(4),
    [0, 1, 2, 3]])
cases("prompts:token_logprobs.logits", "logits", lambda v: _rank.token_logprobs(v, torch.zeros(4, dtype=torch.long)),
      [torch.randn(4), [[1.0]], torch.zeros(4, 5, dtype=torch.long), torch.randn(4, 0)])
cases("prompts:token_logprobs.impl", "impl", lambda v: _rank.token_logprobs(LG, torch.zeros(4, dtype=torch.long),
                                                                            impl=v), ["naive", None])
cases("prompts:encode_pairs.max_len", "max_len", lambda v: _rank.encode_pairs(["a"], [["b"]], v), [0, -1, 1.5])
cases("prompts:encode_pairs.prompts", "prompts", lambda v: _rank.encode_pairs(v, [["b"]], 8), [[], "a", [3]])
cases("prompts:encode_pairs.options", "options", lambda v: _rank.encode_pairs(["a"], v, 8), [[], [[]], [[""]],
                                                                                            [["b"], ["c"]]])
cases("prompts:rank_classify.batch_size", "batch_size", lambda v: _rank.rank_classify(_lm(), ["a"], [["b", "c"]],
                                                                                      batch_size=v), [0, 1.5, True])
cases("prompts:rank_classify.impl", "impl", lambda v: _rank.rank_classify(_lm(), ["a"], [["b", "c"]], impl=v),
      ["naive", None])
cases("prompts:rank_classify.model", "model", lambda v: _rank.rank_classify(v, ["a"], [["b", "c"]]), [None, "lm"])
cases("prompts:option_logprobs.options", "options", lambda v: _rank.option_logprobs(_lm(), "a", v), [[], "b", [""]])
cases("prompts:zero_shot_accuracy.n_per_task", "n_per_task",
      lambda v: _pre.zero_shot_accuracy(_lm(), [_ptask()], v), [0, 1.5])
cases("prompts:zero_shot_accuracy.tasks", "tasks", lambda v: _pre.zero_shot_accuracy(_lm(), v, 2), [[], [None]])
cases("prompts:answer_only_loss.y", "y", lambda v: _pre.answer_only_loss(_lm(), torch.zeros(1, 4, dtype=torch.long),
                                                                         v),
      [torch.full((1, 4), -100), torch.full((1, 4), 300), torch.zeros(1, 3, dtype=torch.long), torch.zeros(1, 4),
       torch.full((1, 4), -5)])
cases("prompts:prompted_batch.batch_size", "batch_size",
      lambda v: _pre.prompted_batch([_ptask()], v, torch.Generator(), 64), [0, -1, 1.5])
cases("prompts:prompted_batch.tasks", "tasks", lambda v: _pre.prompted_batch(v, 2, torch.Generator(), 64), [[]])
cases("prompts:prompted_batch.max_len", "max_len",
      lambda v: _pre.prompted_batch([_ptask()], 2, torch.Generator(), v), [0, 1])
cases("prompts:render.template", "template", lambda v: _ptasks.render(_ptask(), _ptask().examples[0], v),
      [99, -99, "{nope}", None, 1.5])
cases("prompts:render.example", "example", lambda v: _ptasks.render(_ptask(), v, 0), [None, "ex"])
cases("prompts:template_slots.template", "template", _ptasks.template_slots, [3, "{"])
cases("prompts:splits.seed", "seed", lambda v: _pzoo.splits({t.name: t for t in [_ptask()]}, seed=v), [1.5, None])
cases("prompts:nested_training_tasks.n", "n", lambda v: _pzoo.nested_training_tasks(
    _pzoo.splits({t.name: t for t in _families.longer_than(4, 0)}, heldout_families=[]), v), [0, -1, 1.5, BIG])
cases("prompts:task_zoo.n_examples", "n_examples", lambda v: _pzoo.task_zoo(v), [0, -1, 1.5, 10**8])
cases("prompts:families.n", "n", lambda v: _families.longer_than(v, 0), [0, -1, 1.5])
cases("prompts:SoftPrompt.n_tokens", "n_tokens", lambda v: _pt.SoftPrompt(_lm(), v), [0, 1.5, 10**6])
cases("prompts:tune_soft_prompt.lr", "lr", lambda v: _pt.tune_soft_prompt(
    _lm(), _ptask(), _ptask().examples[:2], _ptask().templates[0], steps=1, lr=v), [INF, NAN, 0, -1.0])
cases("prompts:tune_soft_prompt.steps", "steps", lambda v: _pt.tune_soft_prompt(
    _lm(), _ptask(), _ptask().examples[:2], _ptask().templates[0], steps=v), [0, 10**12])
cases("prompts:tune_soft_prompt.n_tokens", "n_tokens", lambda v: _pt.tune_soft_prompt(
    _lm(), _ptask(), _ptask().examples[:2], _ptask().templates[0], steps=1, n_tokens=v), [0, 64])
cases("prompts:forward_embeds.tokens", "tokens", lambda v: _pt.forward_embeds(_lm(), None, v), [
    torch.zeros(4, dtype=torch.long), torch.zeros(1, 4), torch.full((1, 4), 256)])
cases("prompts:forward_embeds.soft", "soft", lambda v: _pt.forward_embeds(_lm(), v, torch.zeros(1, 4,
                                                                                                dtype=torch.long)),
      [torch.randn(2, 8), torch.randn(16)])
cases("prompts:soft_rank_classify.prompts", "prompts", lambda v: _pt.soft_rank_classify(_lm(), None, v, [["a"]]),
      [[], "a"])

# --- rationale
cases("rationale:RationaleConfig.lr", "lr", lambda v: _rtrain.RationaleConfig(lr=v), [INF, NAN, 0, "1e-3"])
cases("rationale:RationaleConfig.temperature", "temperature", lambda v: _rtrain.RationaleConfig(temperature=v),
      [INF, NAN, 0])
cases("rationale:RationaleConfig.alpha", "alpha", lambda v: _rtrain.RationaleConfig(alpha=v), [NAN, 0, 1.0, "0.1"])
for _f in ("lambda_s", "lambda_c", "lambda_cls", "lambda_om", "lambda_fm"):
    cases(f"rationale:RationaleConfig.{_f}", _f, lambda v, f=_f: _rtrain.RationaleConfig(**{f: v}), [INF, NAN, -1.0])
cases("rationale:RationaleConfig.steps", "steps", lambda v: _rtrain.RationaleConfig(steps=v), [0, 10**12, True])
cases("rationale:RationaleConfig.cmd_impl", "cmd_impl", lambda v: _rtrain.RationaleConfig(cmd_impl=v), ["naive", None])
cases("rationale:RationaleConfig.K", "K", lambda v: _rtrain.RationaleConfig(K=v), [0, 10**6])
Z5 = torch.rand(2, 5)
cases("rationale:sparsity_loss.mask", "mask", lambda v: _rtrain.sparsity_loss(Z5, v, 0.1), [
    torch.ones(5, dtype=torch.bool), torch.zeros(2, 5, dtype=torch.bool), torch.ones(2, 4, dtype=torch.bool)])
cases("rationale:sparsity_loss.alpha", "alpha", lambda v: _rtrain.sparsity_loss(Z5, Z5 > 0, v), [NAN, INF, -0.5])
cases("rationale:sparsity_loss.z", "z", lambda v: _rtrain.sparsity_loss(v, Z5 > 0, 0.1), [torch.rand(5), [0.1]])
cases("rationale:continuity_loss.mask", "mask", lambda v: _rtrain.continuity_loss(Z5, v), [
    torch.ones(5, dtype=torch.bool), torch.ones(2, 4, dtype=torch.bool), torch.ones(2, 5)])
XC, YC = torch.randn(6, 3), torch.randn(5, 3)
cases("rationale:cmd.K", "K", lambda v: _cmd.cmd(XC, YC, v), [0, 1.5, True, 10**6])
cases("rationale:cmd.impl", "impl", lambda v: _cmd.cmd(XC, YC, impl=v), ["naive", None])
cases("rationale:cmd.x", "x", lambda v: _cmd.cmd(v, YC), [torch.randn(3), torch.zeros(0, 3), [[1.0, 2.0, 3.0]]])
cases("rationale:cmd.y", "y", lambda v: _cmd.cmd(XC, v), [torch.randn(5, 4), torch.randn(5), None])
cases("rationale:central_moments_torch.x", "x", lambda v: _cmd.central_moments_torch(v), [
    torch.randn(5), torch.zeros(0, 3), [[1.0]]])
cases("rationale:central_moments_reference.x", "x", lambda v: _cmd.central_moments_reference(v), [
    torch.randn(5), torch.zeros(0, 3)])
cases("rationale:cmd_released.y", "y", lambda v: _cmd.cmd_released(XC, v), [torch.randn(5, 4), torch.zeros(0, 3)])
SEL = torch.tensor([[1, 0, 1], [0, 1, 1]], dtype=torch.bool)
cases("rationale:rationale_metrics.gold", "gold", lambda v: _rmetrics.rationale_metrics(SEL, v), [
    torch.ones(3, dtype=torch.bool), torch.full((2, 3), 2), torch.ones(2, 3, dtype=torch.complex64), [[1, 0, 1]]])
cases("rationale:rationale_metrics.mask", "mask", lambda v: _rmetrics.rationale_metrics(SEL, SEL, v), [
    torch.ones(3, dtype=torch.bool), torch.full((2, 3), 0.5)])
cases("rationale:rationale_metrics.selected", "selected", lambda v: _rmetrics.rationale_metrics(v, SEL), [
    None, torch.full((2, 3), NAN)])
cases("rationale:aspect_shares.n_aspects", "n_aspects", lambda v: _rmetrics.aspect_shares(
    SEL, torch.zeros(2, 3, dtype=torch.long), v), [0, -1, 1.5, BIG])
cases("rationale:aspect_shares.aspect", "aspect", lambda v: _rmetrics.aspect_shares(SEL, v, 2), [
    torch.zeros(3, dtype=torch.long), torch.zeros(2, 3), torch.full((2, 3), 5)])
cases("rationale:highlight.selected", "selected", lambda v: _rmetrics.highlight(["a", "b"], v, [1, 1]), [[1], None, 3])
cases("rationale:highlight.tokens", "tokens", lambda v: _rmetrics.highlight(v, [1], [1]), ["ab", [1]])
EMB = torch.randn(10, 4)
cases("rationale:Generator.hidden", "hidden", lambda v: _rmodels.Generator(EMB, v), [0, 1.5, BIG])
cases("rationale:Generator.embeddings", "embeddings", lambda v: _rmodels.Generator(v, 4), [
    torch.randn(10), None, torch.zeros(10, 4, dtype=torch.long), torch.zeros(0, 4)])
cases("rationale:Predictor.n_classes", "n_classes", lambda v: _rmodels.Predictor(EMB, 4, v), [0, 1, 1.5])
cases("rationale:straight_through_select.logits", "logits", _rmodels.straight_through_select, [
    torch.randn(3, 3), torch.randn(3), None])
cases("rationale:Generator.forward.ids", "ids", lambda v: _rmodels.Generator(EMB, 4)(v, torch.ones(1, 3,
                                                                                                   dtype=torch.bool)),
      [torch.full((1, 3), 10), torch.full((1, 3), -1), torch.zeros(1, 3)])
cases("rationale:train_teacher.data", "data", lambda v: _rtrain.train_teacher(v, EMB), [None, {"ids": 1}])
cases("rationale:evaluate.data", "data", lambda v: _rtrain.evaluate(_rmodels.Generator(EMB, 4),
                                                                    _rmodels.Predictor(EMB, 4), v), [None])
cases("rationale:evaluate.n_aspects", "n_aspects", lambda v: _rtrain.evaluate(
    _rmodels.Generator(EMB, 4), _rmodels.Predictor(EMB, 4), _review_tensors(), n_aspects=v), [0, -1, 1.5])


def _review_tensors():
    import dataclasses as _dc

    from kimi_mini.rationale.data import ReviewTensors
    names = [f.name for f in _dc.fields(ReviewTensors)]
    vals = {"ids": torch.zeros(2, 3, dtype=torch.long), "mask": torch.ones(2, 3, dtype=torch.bool),
            "gold": torch.zeros(2, 3, dtype=torch.bool), "label": torch.zeros(2, dtype=torch.long),
            "aspect": torch.zeros(2, 3, dtype=torch.long)}
    return ReviewTensors(**{n: vals.get(n, torch.zeros(2, dtype=torch.long)) for n in names})


# --- invariance
def _idata(n=12, f=3):
    g = torch.Generator().manual_seed(0)
    return InvarianceData(torch.randn(n, f, generator=g), torch.arange(n) % 2, (torch.arange(n) // 2) % 2,
                          ["a", "b", "c"])


def _ti(**kw):
    return _game.train_invariant(_idata(), kw.pop("gamma", 1.0), steps=kw.pop("steps", 2), hidden=4, h_dim=4, **kw)


cases("invariance:train_invariant.lr", "lr", lambda v: _ti(lr=v), [INF, NAN, 0, -1e-3])
cases("invariance:train_invariant.d_lr", "d_lr", lambda v: _ti(d_lr=v), [0.0, INF, NAN, -1.0])
cases("invariance:train_invariant.gamma", "gamma", lambda v: _ti(gamma=v), [NAN, INF, -1.0, "1"])
cases("invariance:train_invariant.steps", "steps", lambda v: _ti(steps=v), [0, 1.5, 10**12])
cases("invariance:train_invariant.k", "k", lambda v: _ti(k=v), [0, 1.5, BIG])
cases("invariance:train_invariant.hidden", "hidden", lambda v: _game.train_invariant(_idata(), 1.0, steps=2,
                                                                                     hidden=v), [0, 1.5])
cases("invariance:train_invariant.batch_size", "batch_size", lambda v: _ti(batch_size=v), [0, 1.5])
cases("invariance:train_invariant.variant", "variant", lambda v: _ti(variant=v), ["gan", None])
cases("invariance:train_invariant.data", "data", lambda v: _game.train_invariant(v, 1.0, steps=2), [None, "adult"])
cases("invariance:InvarianceData.y", "y", lambda v: InvarianceData(torch.randn(4, 3), v, torch.zeros(4,
                                                                                                     dtype=torch.long),
                                                                   ["a", "b", "c"]),
      [torch.tensor([0.5, 1.0, 0.0, 1.0]), torch.zeros(3, dtype=torch.long), torch.tensor([0, 1, -1, 0])])
cases("invariance:InvarianceData.x", "x", lambda v: InvarianceData(v, torch.zeros(4, dtype=torch.long),
                                                                   torch.zeros(4, dtype=torch.long), ["a"]),
      [torch.randn(4), torch.zeros(4, 3, dtype=torch.long), [[1.0]]])
cases("invariance:InvarianceData.s", "s", lambda v: InvarianceData(torch.randn(4, 3), torch.zeros(4, dtype=torch.long),
                                                                   v, ["a", "b", "c"]),
      [torch.tensor([0.0, 1.5, 0.0, 1.0]), torch.tensor([0, 2, 0, 1])])
cases("invariance:evaluate_invariance.probes", "probes", lambda v: _game.evaluate_invariance(
    _ti()[0], _idata(), _idata(), probes=v), [("logistc",), "mlp"])
cases("invariance:gamma_sweep.gammas", "gammas", lambda v: _game.gamma_sweep(_idata(), _idata(), v, [0], steps=1,
                                                                             hidden=4, h_dim=4), [[], [NAN], [-1.0]])
cases("invariance:gamma_sweep.seeds", "seeds", lambda v: _game.gamma_sweep(_idata(), _idata(), [0.0], v, steps=1),
      [[], [1.5]])
cases("invariance:probe_accuracy.kind", "kind", lambda v: _probe.probe_accuracy(
    torch.randn(4, 2), torch.tensor([0, 1, 0, 1]), torch.randn(2, 2), torch.tensor([0, 1]), kind=v), ["svm", None])
cases("invariance:probe_accuracy.s_train", "s_train", lambda v: _probe.probe_accuracy(
    torch.randn(4, 2), v, torch.randn(2, 2), torch.tensor([0, 1])), [torch.tensor([0.5, 1.0, 0.0, 1.0]),
                                                                      torch.tensor([0, 1, 0])])
cases("invariance:probe_accuracy.h_train", "h_train", lambda v: _probe.probe_accuracy(
    v, torch.tensor([0, 1, 0, 1]), torch.randn(2, 2), torch.tensor([0, 1])), [torch.full((4, 2), NAN),
                                                                              torch.randn(4)])
cases("invariance:probe_accuracy.max_train", "max_train", lambda v: _probe.probe_accuracy(
    torch.randn(4, 2), torch.tensor([0, 1, 0, 1]), torch.randn(2, 2), torch.tensor([0, 1]), max_train=v), [0, 1.5, -1])
cases("invariance:probe_accuracy.s_test", "s_test", lambda v: _probe.probe_accuracy(
    torch.randn(4, 2), torch.tensor([0, 1, 0, 1]), torch.randn(2, 2), v), [torch.tensor([0, -1]),
                                                                             torch.tensor([0.0, 1.0])])
cases("invariance:demographic_parity_gap.s", "s", lambda v: _probe.demographic_parity_gap(torch.tensor([0, 1, 1]), v),
      [torch.tensor([0, 0, 0]), torch.tensor([0, 1]), torch.tensor([0.0, 1.0, NAN])])
cases("invariance:demographic_parity_gap.y_pred", "y_pred", lambda v: _probe.demographic_parity_gap(
    v, torch.tensor([0, 1, 1])), [torch.tensor([0, 2, 1]), torch.tensor([]), torch.tensor([0.5, 1.0, 0.0])])
cases("invariance:InvariantModel.hidden", "hidden", lambda v: _imodel.InvariantModel(3, 2, v, 4, 2, 2), [0, 1.5])
cases("invariance:InvariantModel.encode.s", "s", lambda v: _imodel.InvariantModel(3, 2, 4, 4, 2, 2).encode(
    torch.randn(2, 3), v), [torch.tensor([0, 2]), torch.tensor([0, -1]), torch.tensor([0.5, 1.0])])
cases("invariance:InvariantModel.encode.x", "x", lambda v: _imodel.InvariantModel(3, 2, 4, 4, 2, 2).encode(
    v, torch.tensor([0, 1])), [torch.randn(2, 4), torch.zeros(2, 3, dtype=torch.long)])
cases("invariance:encoder_loss.gamma", "gamma", lambda v: _imodel.encoder_loss(
    torch.randn(2, 2), torch.tensor([0, 1]), torch.randn(2, 2), torch.tensor([0, 1]), v), [NAN, INF])
cases("invariance:discriminator_loss.s", "s", lambda v: _imodel.discriminator_loss(torch.randn(2, 2), v),
      [torch.tensor([0, 2]), torch.tensor([0.0, 1.0]), torch.tensor([0])])
cases("invariance:grad_reverse.lam", "lam", lambda v: _imodel.grad_reverse(torch.randn(2, requires_grad=True), v),
      [NAN, INF, "1"])
cases("invariance:light.direction", "direction", lambda v: light(torch.rand(2, 8, 8), v), [-1, 99, 1.5, None])
cases("invariance:light.images", "images", lambda v: light(v, 0), [torch.rand(8), None, torch.rand(2, 8, 7)])
cases("invariance:rewrite.language", "language", lambda v: _tr.rewrite(["a"], v), ["xx", None])
cases("invariance:rewrite.words", "words", lambda v: _tr.rewrite(v, _tr.LANGUAGES[0]), ["abc", [3]])
cases("invariance:load_translation.per_language", "per_language", lambda v: _tr.load_translation(v, 2, vocab_size=40,
                                                                                                 max_len=4),
      [0, 1.5, BIG])
cases("invariance:load_translation.vocab_size", "vocab_size", lambda v: _tr.load_translation(2, 2, vocab_size=v),
      [0, BIG])
cases("invariance:load_translation.max_len", "max_len", lambda v: _tr.load_translation(2, 2, vocab_size=40,
                                                                                       max_len=v), [0, BIG])


def _tdata():
    return _tr.load_translation(4, 2, vocab_size=40, max_len=4)[0]


cases("invariance:train_translation.gamma", "gamma", lambda v: _tr.train_translation(_tdata(), gamma=v, steps=1, d=8),
      [NAN, INF, -1.0])
cases("invariance:train_translation.lr", "lr", lambda v: _tr.train_translation(_tdata(), lr=v, steps=1, d=8),
      [INF, NAN, 0, -1.0])
cases("invariance:train_translation.steps", "steps", lambda v: _tr.train_translation(_tdata(), steps=v, d=8),
      [0, 1.5, 10**12])
cases("invariance:train_translation.batch_size", "batch_size", lambda v: _tr.train_translation(_tdata(), steps=1, d=8,
                                                                                               batch_size=v), [0, 1.5])
cases("invariance:train_translation.k", "k", lambda v: _tr.train_translation(_tdata(), steps=1, d=8, adversary=True,
                                                                             k=v), [0, BIG])
cases("invariance:train_translation.d", "d", lambda v: _tr.train_translation(_tdata(), steps=1, d=v), [0, 3, 1.5])
cases("invariance:train_translation.d_lr", "d_lr", lambda v: _tr.train_translation(_tdata(), steps=1, d=8,
                                                                                     adversary=True, d_lr=v),
      [0, -1.0, NAN, INF])
cases("invariance:train_translation.d_warmup", "d_warmup", lambda v: _tr.train_translation(_tdata(), steps=1, d=8,
                                                                                             adversary=True,
                                                                                             d_warmup=v), [-1, 1.5])
cases("invariance:TranslationData.subset", "language", lambda v: _tdata().subset(v), ["xx", None])

# --- fusion
ZF = torch.randn(3, 4)
FAC = torch.randn(2, 2, 4, 3)
cases("fusion:polynomial_fusion.impl", "impl", lambda v: _fops.polynomial_fusion(ZF, FAC, v), ["cuda", None])
cases("fusion:polynomial_fusion.z", "z", lambda v: _fops.polynomial_fusion(v, FAC), [
    torch.randn(4), torch.zeros(3, 4, dtype=torch.long), [[1.0] * 4], torch.randn(3, 5)])
cases("fusion:polynomial_fusion.factors", "factors", lambda v: _fops.polynomial_fusion(ZF, v), [
    torch.randn(2, 4, 3), torch.randn(0, 2, 4, 3), torch.randn(2, 2, 4, 3, dtype=torch.float64),
    torch.randn(2, 2, 4, 3).long()])
cases("fusion:tensor_fusion.hs", "hs", _fops.tensor_fusion, [[], [torch.randn(3)], [torch.randn(3, 2),
                                                                                    torch.randn(4, 2)],
                                                             "ab", [torch.zeros(3, 2, dtype=torch.long)]])
cases("fusion:FusionClassifier.fusion", "fusion", lambda v: _fops.FusionClassifier([3, 3], 2, v), ["nope", None])
cases("fusion:FusionClassifier.in_dims", "in_dims", lambda v: _fops.FusionClassifier(v, 2, "early"), [[], [0,
                                                                                                           3], [1.5]])
cases("fusion:FusionClassifier.n_classes", "n_classes", lambda v: _fops.FusionClassifier([3, 3], v, "early"),
      [0, 1.5])
cases("fusion:FusionClassifier.forward.xs", "xs", lambda v: _fops.FusionClassifier([3, 3], 2, "early")(v), [
    [torch.randn(2, 3)], [torch.randn(2, 3), torch.randn(2, 4)], [torch.randn(2, 3), torch.randn(3, 3)]])


def _fc():
    torch.manual_seed(0)
    return _fops.FusionClassifier([3, 3], 2, "early")


XS2, Y2 = [_np.random.default_rng(0).normal(size=(6, 3)) for _ in range(2)], _np.array([0, 1, 0, 1, 0, 1])
cases("fusion:fit_fusion.lr", "lr", lambda v: _fops.fit_fusion(_fc(), XS2, Y2, steps=1, lr=v), [INF, NAN, 0, -1.0])
cases("fusion:fit_fusion.weight_decay", "weight_decay", lambda v: _fops.fit_fusion(_fc(), XS2, Y2, steps=1,
                                                                                   weight_decay=v), [NAN, -1.0, INF])
cases("fusion:fit_fusion.steps", "steps", lambda v: _fops.fit_fusion(_fc(), XS2, Y2, steps=v), [0, 1.5, 10**12])
cases("fusion:fit_fusion.y", "y", lambda v: _fops.fit_fusion(_fc(), XS2, v, steps=1), [
    Y2 + 0.5, _np.array([0, 1, 2, 1, 0, 1]), _np.array([0, 1, -1, 1, 0, 1]), Y2[:4], _np.zeros((6, 2))])
cases("fusion:fit_fusion.xs", "xs", lambda v: _fops.fit_fusion(_fc(), v, Y2, steps=1), [
    [XS2[0]], [XS2[0], XS2[1][:, :2]], [XS2[0], _np.full((6, 3), "a")]])
cases("fusion:fit_fusion.val", "val", lambda v: _fops.fit_fusion(_fc(), XS2, Y2, steps=1, val=v), [(XS2,), "val"])
cases("fusion:fit_fusion.eval_every", "eval_every", lambda v: _fops.fit_fusion(_fc(), XS2, Y2, steps=1,
                                                                               val=(XS2, Y2), eval_every=v), [0, 1.5])
cases("fusion:accuracy.y", "y", lambda v: _fops.accuracy(_fc(), XS2, v), [Y2 + 0.5, Y2[:3], _np.array([])])
cases("fusion:accuracy.xs", "xs", lambda v: _fops.accuracy(_fc(), v, Y2), [[XS2[0]], [XS2[0], XS2[0][:3]]])
cases("fusion:svm_baseline.C", "C", lambda v: _fops.svm_baseline(XS2, Y2, XS2, Y2, C=v), [0, -1.0, NAN, INF])
cases("fusion:svm_baseline.y_train", "y_train", lambda v: _fops.svm_baseline(XS2, Y2, XS2, Y2, C=1.0) if v is None
      else _fops.svm_baseline(XS2, v, XS2, Y2), [Y2[:3], Y2 + 0.5])
cases("fusion:driver_simulator.sharpness", "sharpness", lambda v: _fdata.driver_simulator(20, sharpness=v),
      [NAN, INF, -1.0])
cases("fusion:driver_simulator.noise", "noise", lambda v: _fdata.driver_simulator(20, noise=v), [NAN, -1.0, INF])
cases("fusion:driver_simulator.unimodal_weight", "unimodal_weight",
      lambda v: _fdata.driver_simulator(20, unimodal_weight=v), [NAN, INF])
cases("fusion:driver_simulator.n", "n", lambda v: _fdata.driver_simulator(v), [0, -1, 1.5, 10**12])
cases("fusion:driver_simulator.dim", "dim", lambda v: _fdata.driver_simulator(20, dim=v), [0, 1.5, BIG])
cases("fusion:driver_simulator.latent", "latent", lambda v: _fdata.driver_simulator(20, latent=v), [0, 1.5, BIG])
cases("fusion:subject_split.n_test", "n_test", lambda v: _fdata.subject_split(_np.array([1, 2, 3]), v), [0, 3, 1.5])
cases("fusion:subject_split.subjects", "subjects", lambda v: _fdata.subject_split(v, 1), [_np.array([]), None])
cases("fusion:standardize.train", "train", lambda v: _fdata.standardize(v), [_np.zeros((0, 3)), None, _np.zeros(3)])
cases("fusion:standardize.others", "others", lambda v: _fdata.standardize(_np.ones((4, 3)), v), [_np.ones((4, 2))])
cases("fusion:watch_dataset.window", "window", lambda v: _fdata.watch_dataset(v), [0, 3, 1.5])
cases("fusion:n_params.module", "module", _fops.n_params, [None, 3])

# --- storywars


@_cache
def _sw_corpus():
    return _corpus.generate_corpus(_corpus.CorpusConfig(n_stories=12, seed=0))


cases("storywars:CorpusConfig.sentences", "sentences", lambda v: _corpus.CorpusConfig(sentences=v), [
    (BIG, BIG), (1, BIG), (0, 1), (2, 1), (1.5, 2), "12"])
cases("storywars:CorpusConfig.n_stories", "n_stories", lambda v: _corpus.CorpusConfig(n_stories=v), [0, True, 10**12])
cases("storywars:CorpusConfig.chapters", "chapters", lambda v: _corpus.CorpusConfig(chapters=v), [(1, 2), (2.0,
                                                                                                           3), (3,)])
cases("storywars:CorpusConfig.explicit_p", "explicit_p", lambda v: _corpus.CorpusConfig(explicit_p=v), [NAN,
                                                                                                        1.0, "0.5"])
cases("storywars:CorpusConfig.test_fraction", "test_fraction", lambda v: _corpus.CorpusConfig(test_fraction=v),
      [NAN, -0.1, None])
cases("storywars:CorpusConfig.seed", "seed", lambda v: _corpus.CorpusConfig(seed=v), [1.5, None])
cases("storywars:CorpusConfig.genres", "genres", lambda v: _corpus.CorpusConfig(genres=v), [("fantasy",), "fantasy",
                                                                                           ("a", "b", "c")])
cases("storywars:Corpus.story", "story_id", lambda v: _sw_corpus().story(v), [-1, 10**6, 1.5])
cases("storywars:Corpus.chapter", "index", lambda v: _sw_corpus().chapter(0, v), [99, -99])
cases("storywars:Corpus.split", "name", lambda v: _sw_corpus().split(v), ["dev", None])
cases("storywars:make_examples.n", "n", lambda v: _swtasks.make_examples(
    _sw_corpus(), _swtasks.Task("temporal_inference", "fantasy"), "train", v), [0, 1.5, 10**12])
cases("storywars:make_examples.split", "split", lambda v: _swtasks.make_examples(
    _sw_corpus(), _swtasks.Task("temporal_inference", "fantasy"), v, 1), ["dev", None])
cases("storywars:make_examples.task", "task", lambda v: _swtasks.make_examples(_sw_corpus(), v, "train", 1), [
    _swtasks.Task("nope", "fantasy"), _swtasks.Task("temporal_inference", "western_x"), None])
cases("storywars:make_examples.unsatisfiable", "task", lambda v: _swtasks.make_examples(
    _corpus.generate_corpus(_corpus.CorpusConfig(n_stories=8, test_fraction=0.0)), v, "test", 1),
      [_swtasks.Task("temporal_inference", "fantasy")])
cases("storywars:task_splits.types", "types", lambda v: _swtasks.task_splits(v, ("fantasy", "scifi", "mystery")),
      [("nope",), "genre_classification", ()])
cases("storywars:task_splits.genres", "genres", lambda v: _swtasks.task_splits(("genre_classification",), v),
      [("fantasy",), ("a", "b", "c"), ("fantasy", "fantasy", "fantasy")])
cases("storywars:all_tasks.types", "types", lambda v: _swtasks.all_tasks(v, ("fantasy",)), [("nope",)])
cases("storywars:render.task_id", "task_id", lambda v: _swtasks.render(_swtasks.make_examples(
    _sw_corpus(), _swtasks.Task("temporal_inference", "fantasy"), "train", 1)[0], instruction=False, task_id=v),
      [-1, None, 1.5])
cases("storywars:render.ex", "ex", lambda v: _swtasks.render(v), [None, "x"])
cases("storywars:ground_truth.ex", "ex", lambda v: _swtasks.ground_truth(_sw_corpus(), v), [None])
cases("storywars:spearman.x", "x", lambda v: _swm.spearman(v, [1.0, 2.0, 3.0]), [[NAN, 1.0, 2.0], [INF, 1.0, 2.0],
                                                                                  [], ["a", "b", "c"]])
cases("storywars:spearman.y", "y", lambda v: _swm.spearman([1.0, 2.0, 3.0], v), [[1.0, NAN, 3.0], [1.0, 2.0]])
cases("storywars:macro_f1.gold", "gold", lambda v: _swm.macro_f1(v, ["a"]), [[], ["a", "b"], "a"])
cases("storywars:ranking_accuracy.gold", "gold", lambda v: _swm.ranking_accuracy(v, ["a"]), [[], ["a", "b"]])
cases("storywars:boundary_similarity.n_t", "n_t", lambda v: _swm.boundary_similarity([1], [2], v), [1, 1.5, True])
cases("storywars:boundary_similarity.reference", "reference", lambda v: _swm.boundary_similarity(v, [2]), [
    [3, 1], [1, 1], [-1, 2], [1.5], None, "12"])
cases("storywars:boundary_similarity.hypothesis", "hypothesis", lambda v: _swm.boundary_similarity([1], v), [
    [2, 2], [True], [0]])
cases("storywars:boundaries_from_masses.masses", "masses", _swm.boundaries_from_masses, [[], [0, 2], [1.5], [True, 2]])
cases("storywars:rouge_l.candidate", "candidate", lambda v: _swm.rouge_l(v, "a b"), [None, 3, b"a"])
cases("storywars:sample_pool.k", "k", lambda v: _swtrain.sample_pool([1, 2, 3], v, 0), [0, 4, 1.5, True])
cases("storywars:encode_example.max_len", "max_len", lambda v: _swtrain.encode_example("p", "t\n", v), [0, -1, 1.5, 2])
cases("storywars:collate.encoded", "encoded", lambda v: _swtrain.collate(v), [[], [([], 0)], [([300], 0)],
                                                                              [([1, 2], 5)]])
cases("storywars:TrainSpec.lr", "lr", lambda v: _swtrain.TrainSpec(lr=v), [INF, NAN, 0, -1.0])
cases("storywars:TrainSpec.steps", "steps", lambda v: _swtrain.TrainSpec(steps=v), [0, 1.5, 10**12])
cases("storywars:TrainSpec.batch_size", "batch_size", lambda v: _swtrain.TrainSpec(batch_size=v), [0, 1.5])
cases("storywars:TrainSpec.warmup", "warmup", lambda v: _swtrain.TrainSpec(warmup=v), [-1, 1.5])
cases("storywars:TrainSpec.weight_decay", "weight_decay", lambda v: _swtrain.TrainSpec(weight_decay=v), [NAN, -1.0])
cases("storywars:TrainSpec.optimizer", "optimizer", lambda v: _swtrain.TrainSpec(optimizer=v), ["sgd", None])
cases("storywars:make_batch_fn.batch_size", "batch_size", lambda v: _swtrain.make_batch_fn(
    {"t": _swtasks.make_examples(_sw_corpus(), _swtasks.Task("temporal_inference", "fantasy"), "train", 1)},
    _swtrain.instruct_renderer, v, 256), [0, 1.5])
cases("storywars:make_batch_fn.max_len", "max_len", lambda v: _swtrain.make_batch_fn(
    {"t": _swtasks.make_examples(_sw_corpus(), _swtasks.Task("temporal_inference", "fantasy"), "train", 1)},
    _swtrain.instruct_renderer, 2, v), [0, 1, 1.5])
cases("storywars:make_batch_fn.pools", "pools", lambda v: _swtrain.make_batch_fn(v, _swtrain.instruct_renderer, 2, 256),
      [{}, {"t": []}])
cases("storywars:pretrained_lm.steps", "steps", lambda v: _swtrain.pretrained_lm(["a story"], _swtrain.TrainSpec(), v),
      [0, 1.5, 10**12])
cases("storywars:pretrained_lm.seq_len", "seq_len", lambda v: _swtrain.pretrained_lm(["a story"], _swtrain.TrainSpec(),
                                                                                     1, seq_len=v), [0, 10**6])
cases("storywars:option_logprobs.reduction", "reduction", lambda v: _sweval.option_logprobs(_lm(), ["p"], [["a"]], v),
      ["max", None])
cases("storywars:option_logprobs.prompts", "prompts", lambda v: _sweval.option_logprobs(_lm(), v, [["a"]]),
      [[], ["p", "q"]])
cases("storywars:option_logprobs.batch_size", "batch_size", lambda v: _sweval.option_logprobs(
    _lm(), ["p"], [["a"]], batch_size=v), [0, 1.5])
cases("storywars:generate_answer.max_new_tokens", "max_new_tokens", lambda v: _sweval.generate_answer(_lm(), "p", v),
      [0, -1, 1.5, 64])
cases("storywars:predict.examples", "examples", lambda v: _sweval.predict(_lm(), v, _swtrain.instruct_renderer), [[]])
cases("storywars:score_type.type_name", "type_name", lambda v: _sweval.score_type(v, [], []), ["nope", None])
cases("storywars:score_type.predictions", "predictions", lambda v: _sweval.score_type(
    "story_scoring", _swtasks.make_examples(_sw_corpus(), _swtasks.Task("story_scoring", "fantasy"), "train", 2), v),
      [[1.0], ["x", "y"], [NAN, 1.0]])
cases("storywars:chance_scores.draws", "draws", lambda v: _sweval.chance_scores({}, v), [0, -1, 1.5, 10**12])
cases("storywars:rouge_l_of.max_new_tokens", "max_new_tokens", lambda v: _sweval.rouge_l_of(
    _lm(), [], _swtrain.instruct_renderer, v), [0, -1])
cases("storywars:type_metric.type_name", "type_name", _sweval.type_metric, ["nope"])
cases("storywars:load_corpus.config", "config", lambda v: _corpus.load_corpus(v), ["cfg", 3])
cases("storywars:author_style_stats.corpus", "corpus", _corpus.author_style_stats, [None, "c"])

# --- agentic


@_cache
def _agents():
    return _syn.make_agents()


@_cache
def _atasks():
    return _syn.make_tasks(_agents()["calc"], 2, _random.Random(0))


cases("agentic:synthesize.p_error", "p_error", lambda v: _syn.synthesize(_atasks(), p_error=v), [1.5, -0.1, NAN, "0.3"])
cases("agentic:synthesize.p_long", "p_long", lambda v: _syn.synthesize(_atasks(), p_long=v), [1.5, -0.1, NAN])
cases("agentic:synthesize.tasks", "tasks", lambda v: _syn.synthesize(v), [None, [None], "tasks"])
cases("agentic:synthesize.seed", "seed", lambda v: _syn.synthesize(_atasks(), seed=v), [1.5, None])
cases("agentic:make_tasks.n", "n", lambda v: _syn.make_tasks(_agents()["calc"], v, _random.Random(0)), [-1,
                                                                                                        1.5, 10**12])
cases("agentic:make_tasks.levels", "levels", lambda v: _syn.make_tasks(_agents()["calc"], 2, _random.Random(0),
                                                                       levels=v), [(), (0,), (9,)])
cases("agentic:make_tasks.personas", "personas", lambda v: _syn.make_tasks(_agents()["calc"], 2, _random.Random(0),
                                                                           personas=v), [(), ("alien",)])
cases("agentic:make_tasks.max_operand", "max_operand", lambda v: _syn.make_tasks(_agents()["calc"], 2,
                                                                                 _random.Random(0), max_operand=v),
      [1, 1.5, 10**30])
cases("agentic:make_tasks.agent", "agent", lambda v: _syn.make_tasks(v, 2, _random.Random(0)), [None, "calc"])
cases("agentic:make_tasks.rng", "rng", lambda v: _syn.make_tasks(_agents()["calc"], 2, v), [None, 0])
cases("agentic:k15_policy_loss.tau", "tau", lambda v: _rl.k15_policy_loss(torch.zeros(4), torch.zeros(4),
                                                                           torch.zeros(4), v), [0, NAN, INF, True])
cases("agentic:k15_policy_loss.rewards", "rewards", lambda v: _rl.k15_policy_loss(torch.zeros(4), torch.zeros(4), v,
                                                                                   0.1), [torch.zeros(3), None])
cases("agentic:k15_policy_loss.logp_new", "logp_new", lambda v: _rl.k15_policy_loss(v, v, v, 0.1), [
    torch.zeros(1), torch.zeros(2, 2, 2), None])
cases("agentic:budget_penalty.weight", "weight", lambda v: _rl.budget_penalty(torch.ones(2), torch.ones(2), v),
      [NAN, INF, -1.0, "0.5"])
cases("agentic:budget_penalty.budget", "budget", lambda v: _rl.budget_penalty(torch.ones(2), v), [
    torch.zeros(2), torch.ones(3), torch.tensor([1.0, NAN]), torch.tensor([1.0, INF])])
cases("agentic:budget_penalty.n_tokens", "n_tokens", lambda v: _rl.budget_penalty(v, torch.ones(2)), [
    torch.tensor([1.0, NAN]), torch.tensor([-1.0, 1.0]), ["a", "b"]])
cases("agentic:temperature_schedule.t_end", "t_end", lambda v: _rl.temperature_schedule(0, 2, 1.0, v), [0, 2.0, NAN])
cases("agentic:temperature_schedule.t_start", "t_start", lambda v: _rl.temperature_schedule(0, 2, v, 0.5), [INF, NAN])
cases("agentic:temperature_schedule.step", "step", lambda v: _rl.temperature_schedule(v, 2), [2, -1, 1.5])
cases("agentic:sample_next.temperature", "temperature", lambda v: _rl.sample_next(torch.randn(2, 5), v),
      [-1.0, NAN, INF, None])
cases("agentic:sample_next.logits", "logits", lambda v: _rl.sample_next(v, 1.0), [torch.randn(5), None,
                                                                                    torch.zeros(2, 0)])
cases("agentic:collate.seqs", "seqs", lambda v: _rl.collate(v), [[], [([1, 2], [1])], [([300], [1])]])
cases("agentic:collate.max_len", "max_len", lambda v: _rl.collate([([1, 2], [1, 1])], v), [0, -1, 1.5])
cases("agentic:sequence_logprob.mask", "mask", lambda v: _rl.sequence_logprob(_lm(), torch.zeros(1, 4,
                                                                                                 dtype=torch.long),
                                                                               v), [torch.zeros(1, 3), torch.zeros(4)])
cases("agentic:sequence_logprob.tokens", "tokens", lambda v: _rl.sequence_logprob(_lm(), v, torch.zeros(1, 4)), [
    torch.zeros(1, 4), torch.full((1, 4), 300), torch.zeros(1, 1, dtype=torch.long)])
cases("agentic:sft_loss.tokens", "tokens", lambda v: _rl.sft_loss(_lm(), v, torch.ones(1, 4)), [
    torch.full((1, 4), -5), torch.zeros(1, 4)])
cases("agentic:rollout.max_len", "max_len", lambda v: _rl.rollout(_lm(), _atasks()[:1], seeds=[0], temperature=1.0,
                                                                   max_len=v), [0, -1, 1.5, 10**6])
cases("agentic:rollout.temperature", "temperature", lambda v: _rl.rollout(_lm(), _atasks()[:1], seeds=[0],
                                                                           temperature=v, max_len=8), [NAN, INF, -1.0])
cases("agentic:rollout.seeds", "seeds", lambda v: _rl.rollout(_lm(), _atasks()[:1], seeds=v, temperature=1.0,
                                                               max_len=8), [[], [1.5], None])
cases("agentic:ToolWorld.flaky", "flaky", lambda v: _tools.ToolWorld({}, flaky=v), [{"add": NAN}, {"add": 1.5},
                                                                                    {"add": "x"}])
cases("agentic:ToolWorld.tools", "tools", lambda v: _tools.ToolWorld(v), [None, [1]])
cases("agentic:evolve_tool.rule", "rule", lambda v: _tools.evolve_tool(_tools.real_tools()["add"], v, "add_v2"),
      ["nope", None])
cases("agentic:evolve_tool.name", "name", lambda v: _tools.evolve_tool(_tools.real_tools()["add"], "rename", v),
      ["Add V2", "", None])
cases("agentic:evolve_domain.n", "n", lambda v: _tools.evolve_domain(list(_tools.real_tools().values()), v,
                                                                     _random.Random(0)), [-1, 1.5, 10**12])
cases("agentic:evolve_domain.tools", "tools", lambda v: _tools.evolve_domain(v, 2, _random.Random(0)), [[], None])
cases("agentic:parse_call.line", "line", _tools.parse_call, [None, 3, b"add(1,2)"])
cases("agentic:load_specs.api", "api", _tools.load_specs, ["Math API", "", None])
cases("agentic:load_spec_dataset.apis", "apis", _tools.load_spec_dataset, ["math_api", [], ["no_such_api"]])
cases("agentic:AgenticSetup.sft_lr", "sft_lr", lambda v: _pipe().AgenticSetup(sft_lr=v), [INF, NAN, 0, -1.0])
cases("agentic:AgenticSetup.lr", "lr", lambda v: _pipe().AgenticSetup(lr=v), [INF, NAN, -1.0])
cases("agentic:AgenticSetup.rl_lr", "rl_lr", lambda v: _pipe().AgenticSetup(rl_lr=v), [INF, NAN, -1.0])
cases("agentic:AgenticSetup.p_error", "p_error", lambda v: _pipe().AgenticSetup(p_error=v), [1.5, -0.1, NAN])
cases("agentic:AgenticSetup.tau", "tau", lambda v: _pipe().AgenticSetup(tau=v), [0, NAN, INF])
cases("agentic:AgenticSetup.sft_steps", "sft_steps", lambda v: _pipe().AgenticSetup(sft_steps=v), [-1, 1.5, 10**12])
cases("agentic:AgenticSetup.n_heads", "n_heads", lambda v: _pipe().AgenticSetup(n_heads=v), [0, 3])
cases("agentic:AgenticSetup.budget_slack", "budget_slack", lambda v: _pipe().AgenticSetup(budget_slack=v),
      [0, NAN, INF])
cases("agentic:AgenticSetup.t_end", "t_end", lambda v: _pipe().AgenticSetup(t_end=v), [0, 2.0, NAN])
cases("agentic:AgenticSetup.sft_optimizer", "sft_optimizer", lambda v: _pipe().AgenticSetup(sft_optimizer=v),
      ["sgd", None])
cases("agentic:AgenticSetup.rl_k", "rl_k", lambda v: _pipe().AgenticSetup(rl_k=v), [1, 0, 2.0])
cases("agentic:AgenticSetup.rl_steps", "rl_steps", lambda v: _pipe().AgenticSetup(rl_steps=v), [0, 10**12])
cases("agentic:AgenticSetup.p_long", "p_long", lambda v: _pipe().AgenticSetup(p_long=v), [NAN, 1.5])
cases("agentic:AgenticSetup.max_operand", "max_operand", lambda v: _pipe().AgenticSetup(max_operand=v), [1, 10**30])
cases("agentic:AgenticSetup.budget_weight", "budget_weight", lambda v: _pipe().AgenticSetup(budget_weight=v),
      [-1.0, NAN])
cases("agentic:AgenticSetup.t_start", "t_start", lambda v: _pipe().AgenticSetup(t_start=v), [INF, 0.25])
cases("agentic:sft_loss.tokens[T=1]", "tokens", lambda v: _rl.sft_loss(_lm(), v, torch.ones(1, 1)),
      [torch.zeros(1, 1, dtype=torch.long)])
cases("agentic:success_rate.examples", "examples", lambda v: _pipe().success_rate(_lm(), _atasks(), examples=v),
      [-1, 1.5])
cases("agentic:success_rate.tasks", "tasks", lambda v: _pipe().success_rate(_lm(), v), [[], None])
cases("agentic:stdlib_loss.batches", "batches", lambda v: _pipe().stdlib_loss(_lm(), DATA, 8, v), [0, -1, 1.5])
cases("agentic:stdlib_loss.seq_len", "seq_len", lambda v: _pipe().stdlib_loss(_lm(), DATA, v), [0, 1000])
cases("agentic:build_tasks.setup", "setup", lambda v: _pipe().build_tasks(v), [None, "setup"])


def _pipe():
    from kimi_mini.agentic import pipeline
    return pipeline


# --- kernels (wrappers; the interpreter runs them on CPU)
LGK = torch.randn(3, 5)
cases("kernels:logprob.targets", "targets", lambda v: _klogprob.token_logprobs(LGK, v), [
    torch.tensor([0, 5, 1]), torch.tensor([0, -1, 1]), torch.zeros(3), torch.zeros(4, dtype=torch.long), None])
cases("kernels:logprob.logits", "logits", lambda v: _klogprob.token_logprobs(v, torch.zeros(3, dtype=torch.long)), [
    torch.randn(3), torch.randn(3, 5, dtype=torch.float64), torch.randn(5, 3).t(), torch.zeros(3, 0), None])
cases("kernels:logprob.ignore_index", "ignore_index", lambda v: _klogprob.token_logprobs(
    LGK, torch.zeros(3, dtype=torch.long), v), [1.5, None, "x"])
cases("kernels:logprob.block_v", "block_v", lambda v: _klogprob.token_logprobs(
    LGK, torch.zeros(3, dtype=torch.long), block_v=v), [0, 3, -4, 1.5, 2**40])
cases("kernels:cross_entropy.targets", "targets", lambda v: _klogprob.cross_entropy(LGK, v), [torch.tensor([0, 7, 1])])
cases("kernels:moments.x", "x", lambda v: _kmoments.central_moments(v), [
    torch.randn(5), torch.zeros(0, 3), torch.zeros(3, 0), torch.randn(3, 3, dtype=torch.float64), None,
    torch.zeros(3, 3, dtype=torch.long)])
cases("kernels:moments.K", "K", lambda v: _kmoments.central_moments(torch.randn(4, 3), v), [0, 1.5, True, 99, None])
cases("kernels:fusion.z", "z", lambda v: _kfusion.polynomial_fusion(v, FAC), [
    torch.randn(4), torch.randn(3, 5), torch.randn(3, 4, dtype=torch.float64), None])
cases("kernels:fusion.factors", "factors", lambda v: _kfusion.polynomial_fusion(ZF, v), [
    torch.randn(2, 4, 3), torch.randn(9, 1, 4, 3), torch.randn(2, 2, 4, 3, dtype=torch.float16), None,
    torch.randn(0, 2, 4, 3)])
cases("rationale:cmd[triton].x", "x", lambda v: _cmd.cmd(v, YC, impl="triton"), [torch.zeros(0, 3), torch.randn(3)])


# Valid edge calls that must work (README: empty in, empty out; no recursion limit on long inputs).
VALID: list[tuple[str, Callable[[], object], Callable[[object], bool]]] = [
    ("storywars:boundary_similarity.1000", lambda: _swm.boundary_similarity(list(range(3, 3003, 3)),
                                                                           list(range(4, 3004, 3))),
     lambda b: abs(b - (1 - 1000 * 0.5 / 1000)) < 1e-9),
    ("storywars:boundary_similarity.empty", lambda: _swm.boundary_similarity([], []), lambda b: b == 1.0),
    ("fusion:polynomial_fusion.empty[torch]", lambda: _fops.polynomial_fusion(torch.zeros(0, 4), FAC),
     lambda y: y.shape == (0, 3)),
    ("fusion:polynomial_fusion.empty[naive]", lambda: _fops.polynomial_fusion(torch.zeros(0, 4), FAC, "naive"),
     lambda y: y.shape == (0, 3)),
    ("fusion:polynomial_fusion.empty[triton]", lambda: _fops.polynomial_fusion(torch.zeros(0, 4), FAC, "triton"),
     lambda y: y.shape == (0, 3)),
    ("fusion:polynomial_fusion.noncontiguous[triton]",
     lambda: (_fops.polynomial_fusion(torch.randn(4, 3).t(), FAC, "triton"), None),
     lambda r: r[0].shape == (3, 3)),
    ("fusion:polynomial_fusion.noncontiguous-agrees",
     lambda: (lambda z: (_fops.polynomial_fusion(z, FAC, "triton"), _fops.polynomial_fusion(z, FAC)))(
         torch.randn(4, 3).t()), lambda r: torch.allclose(r[0], r[1], atol=1e-4)),
    ("fusion:tensor_fusion.empty", lambda: _fops.tensor_fusion([torch.zeros(0, 2), torch.zeros(0, 3)]),
     lambda y: y.shape == (0, 12)),
    ("kernels:fusion.empty", lambda: _kfusion.polynomial_fusion(torch.zeros(0, 4), FAC), lambda y: y.shape == (0, 3)),
    ("prompts:token_logprobs.empty", lambda: _rank.token_logprobs(torch.zeros(0, 5), torch.zeros(0, dtype=torch.long)),
     lambda y: y.shape == (0,)),
    ("prompts:token_logprobs.empty[triton]", lambda: _rank.token_logprobs(torch.zeros(0, 5),
                                                                          torch.zeros(0, dtype=torch.long), "triton"),
     lambda y: y.shape == (0,)),
    ("kernels:logprob.empty", lambda: _klogprob.token_logprobs(torch.zeros(0, 5), torch.zeros(0, dtype=torch.long)),
     lambda y: y.shape == (0,)),
    ("storywars:spearman.ties", lambda: _swm.spearman([1.0, 1.0, 2.0], [1.0, 2.0, 3.0]), lambda r: 0 < r < 1),
    ("agentic:make_tasks.zero", lambda: _syn.make_tasks(_agents()["calc"], 0, _random.Random(0)), lambda r: r == []),
    ("agentic:synthesize.empty", lambda: _syn.synthesize([]), lambda r: r == []),
    ("agentic:synthesize.p_error=1", lambda: _syn.synthesize(_atasks(), p_error=1.0), lambda r: len(r) == 2),
    ("rationale:rationale_metrics.empty", lambda: _rmetrics.rationale_metrics(torch.zeros(0, 3, dtype=torch.bool),
                                                                              torch.zeros(0, 3, dtype=torch.bool)),
     lambda r: r["f1"] == 0.0),
    ("storywars:chance_scores.empty", lambda: _sweval.chance_scores({}), lambda r: r == {}),
    ("invariance:train_invariant.d_lr", lambda: _ti(d_lr=1e-2), lambda r: len(r[1]) == 2),
]


def test_the_battery_is_large_and_ids_are_unique():
    assert len(CASES) >= 300, len(CASES)
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)), [i for i in ids if ids.count(i) > 1][:5]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])  # issue 29: no case is left open
def test_bad_input_is_a_value_error_naming_the_argument(case):
    with pytest.raises(ValueError) as err:
        case.call()
    assert case.arg in str(err.value), f"the message does not name {case.arg!r}: {err.value}"


@pytest.mark.parametrize("name, call, ok", VALID, ids=[v[0] for v in VALID])
def test_valid_edge_calls_of_the_topic_packages_work(name, call, ok):
    assert ok(call()), name


def test_record_claim_name_cannot_escape_the_claims_folder(tmp_path):
    report.record_claim(**CLAIM, notebook="../../escaped", run_dir=tmp_path / "run")
    written = list((tmp_path / "run").rglob("*.json"))
    assert len(written) == 1 and written[0].parent == tmp_path / "run" / "claims"
    assert not any(tmp_path.glob("escaped*"))


# --------------------------------------------------------------------------------------- CLI
CLI_CASES = [
    ("train", "--batch-size", "0"), ("train", "--batch-size", "-3"), ("train", "--lr", "-1"), ("train", "--lr", "nan"),
    ("train", "--lr", "inf"), ("train", "--lr", "0"), ("train", "--weight-decay", "-1"),
    ("train", "--weight-decay", "nan"), ("train", "--warmup", "-1"), ("train", "--warmup", "500"),
    ("train", "--eval-every", "0"), ("train", "--eval-batches", "0"), ("train", "--steps", "0"),
    ("train", "--seq-len", "0"), ("train", "--checkpoint-every", "0"), ("train", "--grad-clip", "nan"),
    ("train", "--resume"), ("train", "--checkpoint", "/proc/kimi-mini/nope.pt"),
    ("train", "--history", "/proc/kimi-mini/h.json"), ("train", "--checkpoint", "/"),
    ("train", "--optimizer", "sgd"), ("train", "--preset", "tpu"), ("train", "--preset", "gpu"),
    ("train", "--n-heads", "3"), ("train", "--attention", "nope"), ("train", "--batch-size", "abc"),
    ("train", "--ns-impl", "cuda"), ("train", "--data", "web"),
    ("reproduce", "--only", ""), ("reproduce", "--only", ","), ("reproduce", "--only", "99"),
    ("reproduce", "--preset", "tpu"), ("reproduce", "--preset", "gpu"), ("reproduce", "--out", "/etc/hostname"),
    ("reproduce", "--timeout", "0"), ("reproduce", "--notebooks", "/nonexistent"),
    ("bench", "nope"), ("bench",), ("nope",), (), ("train", "--unknown-flag"),
]


@pytest.mark.parametrize("argv", CLI_CASES, ids=[" ".join(a) or "(none)" for a in CLI_CASES])
def test_cli_bad_input_is_one_line_and_exit_2(argv, capsys):
    if argv == ("train", "--preset", "gpu") or argv == ("reproduce", "--preset", "gpu"):
        if torch.cuda.is_available():
            pytest.skip("a GPU is here: the gpu preset is valid")
    from kimi_mini.cli import main

    try:
        code = main(list(argv) + (["--data", "synthetic", "--steps", "1", "--no-progress"]
                                  if argv and argv[0] == "train" and "--steps" not in argv and "--data" not in argv
                                  else []))
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, f"exit code {code}, stderr {err}"
    assert len(err) == 1 and err[0].startswith("kimi-mini"), err


def test_cli_checks_come_before_any_training(capsys, tmp_path):
    """An unwritable --history is reported without training a single step (no progress, no checkpoint)."""
    from kimi_mini.cli import main

    ckpt = tmp_path / "c.pt"
    code = main(["train", "--data", "synthetic", "--steps", "3", "--no-progress", "--checkpoint", str(ckpt),
                 "--history", "/proc/kimi-mini/h.json"])
    assert code == 2 and not ckpt.exists()
    assert math.isfinite(len(capsys.readouterr().err))

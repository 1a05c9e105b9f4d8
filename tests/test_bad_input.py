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
CLAIM = dict(claim="c", paper_value="p", ours="o", holds=True, explanation="e", paper="x")
for field, values in (("claim", ["", "  ", None]), ("paper_value", [""]), ("ours", [""]), ("explanation", [""]),
                      ("paper", ["", 3]), ("holds", ["yes", 1.5]), ("notebook", ["", "/", 3])):
    cases(f"record_claim.{field}", field, lambda v, field=field: report.record_claim(**{**CLAIM, field: v}), values)
cases("get_preset.preset", "preset", get_preset, ["cpu", "", "GPU"])
cases("Preset.pick", "choices", lambda v: get_preset("toy").pick(**v), [{"toy": 1}, {"toy": 1, "gpu": 2, "tpu": 3}])
cases("register_attention.name", "name", register_attention, ["", 3])
cases("Registry.get", "thing", lambda v: Registry("thing").get(v), ["x", None])
cases("check.name", "name", lambda v: check(v, print), ["no_such_exercise"])


def test_the_battery_is_large_and_ids_are_unique():
    assert len(CASES) >= 300, len(CASES)
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)), [i for i in ids if ids.count(i) > 1][:5]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_a_value_error_naming_the_argument(case):
    with pytest.raises(ValueError) as err:
        case.call()
    assert case.arg in str(err.value), f"the message does not name {case.arg!r}: {err.value}"


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

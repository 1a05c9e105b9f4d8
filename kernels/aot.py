"""Ahead-of-time compilation of every kernel for a CUDA GPU, on a machine without one.

Triton compiles a kernel the first time it is launched: ``ttir → ttgir → llir → ptx → cubin``, the last
step by the ``ptxas`` shipped inside the triton wheel. None of it needs a GPU — only the *driver* is
asked which GPU it is (``get_current_target``) and then to launch. :func:`compile_only` swaps in a
stand-in driver that answers "sm_90" (or "sm_80") and turns every launch into a JIT warm-up (compile,
don't run), so the **real host wrappers** run with the exact dtypes, block sizes and constexprs the GPU
path uses — on ``meta`` tensors, which have shapes and strides but no memory. Each compiled kernel is
recorded with the shared memory a launch needs (``metadata.shared``), and the registers and spills
ptxas reports; the grid of each launch is checked against CUDA's limits (axis 0 < 2³¹, axes 1 and 2
≤ 65,535) on the way.

Run it as ``TRITON_INTERPRET=0 CUDA_VISIBLE_DEVICES= python -m kimi_mini.kernels.aot`` (what
``tests/test_kernels_compile.py`` does, in a subprocess: the test process itself interprets). A kernel
module joins the check with one entry in :data:`CONFIGS` (see :func:`config`).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch

import kimi_mini.kernels as K

# Shared memory a block may use (opt-in maximum, bytes): H100 227 KiB, A100 163 KiB.
ARCHS = {"sm_90": (90, 232_448), "sm_80": (80, 166_912)}
# A free Colab T4 (sm_75, 64 KiB of shared memory a block, no bf16): compiled only for the few cases in
# T4_CASES — fp16/fp32 builds of the kernels the toy preset can reach there.
T4 = {"sm_75": (75, 65_536)}
LIMITS = {**ARCHS, **T4}
T4_CASES = {
    "flash_attention": ("fp16 D64 fwd+bwd", "fp32 D64 fwd+bwd"),
    "moba": ("fp16 block 64 D64 fwd+bwd",),
    "moe": ("fp32 01 gpu d384 h192 E64 k4",),
    "newton_schulz": ("fp32 m=1024",),
    "rmsnorm": ("fp32 N=512",),
    "moments": ("fp32 N=8192 D=512 K=5",),
    "fusion": ("fp32 P=2 R=8 D=129 K=64",),
    "logprob": ("fp32 V=256",),
}
HEADROOM = 0.9  # a kernel may use at most 90 % of the limit: a compiler update can grow it by a few KB
MAX_GRID = (2**31 - 1, 65_535, 65_535)
REGISTERS_PER_SM = 65_536


@dataclass
class Compiled:
    """One kernel as compiled for one launch of one configuration."""

    kernel: str
    config: str
    arch: str
    shared: int
    registers: int | None
    spills: int | None
    num_warps: int
    grid: tuple
    hash: str = ""
    compiled: object = field(default=None, repr=False, compare=False)  # the CompiledKernel (asm, metadata)

    def problems(self) -> list[str]:
        limit = LIMITS[self.arch][1]
        out = []
        if self.shared > limit:
            out.append(f"shared memory {self.shared:,} B > {limit:,} B, the {self.arch} limit")
        elif self.shared > HEADROOM * limit:
            out.append(f"shared memory {self.shared:,} B leaves less than {1 - HEADROOM:.0%} headroom under "
                       f"the {self.arch} limit of {limit:,} B")
        if self.registers is not None and self.registers * 32 * self.num_warps > REGISTERS_PER_SM:
            out.append(f"{self.registers} registers × {32 * self.num_warps} threads > {REGISTERS_PER_SM}")
        return out


_PTXAS: dict[str, tuple[int | None, int | None]] = {}  # kernel hash → (registers, spill bytes)


def _parse_ptxas(log: str) -> tuple[int | None, int | None]:
    regs = re.search(r"Used (\d+) registers", log)
    spills = re.search(r"(\d+) bytes spill stores", log)
    return (int(regs.group(1)) if regs else None, int(spills.group(1)) if spills else None)


def _check_grid(name: str, grid) -> None:
    if callable(grid):
        return
    for axis, (n, limit) in enumerate(zip(grid, MAX_GRID, strict=False)):
        if n > limit:
            raise ValueError(f"grid: {name} launched with {n:,} programs on axis {axis}; CUDA allows {limit:,}")


class _StandInDriver:
    """Answers the questions Triton's JIT asks a CUDA driver, for a GPU that is not there."""

    def __init__(self, capability: int):
        self.capability = capability

    def get_current_target(self):
        from triton.backends.compiler import GPUTarget

        return GPUTarget("cuda", self.capability, 32)

    def get_current_device(self) -> int:
        return self.capability  # one JIT cache per target

    def get_current_stream(self, device=None) -> int:
        return 0

    def get_active_torch_device(self):
        return torch.device("meta")


@contextlib.contextmanager
def compile_only(arch: str, records: list[Compiled], config: Callable[[], str] = lambda: ""):
    """Within the block, every kernel launch compiles for ``arch`` ("sm_90"/"sm_80") and appends a
    :class:`Compiled` to ``records`` instead of running. Needs ``TRITON_INTERPRET=0``."""
    if K.INTERPRETED:
        raise RuntimeError("compile_only: the kernels are interpreted (TRITON_INTERPRET=1); "
                           "run with TRITON_INTERPRET=0 to compile them")
    import triton
    from triton.runtime import driver
    from triton.runtime.jit import KernelInterface

    def getitem(self, grid):
        def launch(*args, **kwargs):
            _check_grid(self.__name__ if hasattr(self, "__name__") else str(self), grid)
            log = io.StringIO()
            with contextlib.redirect_stdout(log):
                kernel = self.run(*args, grid=grid, warmup=True, **kwargs)
            if kernel.hash not in _PTXAS:
                _PTXAS[kernel.hash] = _parse_ptxas(log.getvalue())
            regs, spills = _PTXAS[kernel.hash]
            md = kernel.metadata
            records.append(Compiled(md.name, config(), arch, md.shared, regs, spills, md.num_warps,
                                    tuple(grid) if not callable(grid) else (), kernel.hash, kernel))
            return kernel
        return launch

    saved = KernelInterface.__getitem__, triton.knobs.nvidia.dump_ptxas_log, driver._active
    driver.set_active(_StandInDriver(LIMITS[arch][0]))
    KernelInterface.__getitem__ = getitem
    triton.knobs.nvidia.dump_ptxas_log = True  # ptxas -v output: registers and spills
    K.COMPILE_ONLY = True
    try:
        yield records
    finally:
        KernelInterface.__getitem__, triton.knobs.nvidia.dump_ptxas_log, previous = saved
        K.COMPILE_ONLY = False
        driver.set_active(previous)  # None: the real driver is created when first needed


# --------------------------------------------------------------------------------------------------
# The table: one entry per kernel module, yielding (configuration, thunk) pairs. A thunk calls the
# module's host wrappers on meta tensors; every kernel they launch is compiled and recorded.
# --------------------------------------------------------------------------------------------------
Entry = Callable[[], Iterator[tuple[str, Callable[[], object]]]]
CONFIGS: dict[str, Entry] = {}


def config(name: str) -> Callable[[Entry], Entry]:
    """Register a kernel module's compile configurations under ``name``."""
    def wrap(fn: Entry) -> Entry:
        CONFIGS[name] = fn
        return fn
    return wrap


def meta(*shape: int, dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    return torch.empty(*shape, dtype=dtype, device="meta")


_DT = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


@config("rmsnorm")
def _rmsnorm_configs():
    from kimi_mini.kernels.rmsnorm import rmsnorm_bwd, rmsnorm_fwd

    for dt in ("bf16", "fp32"):
        for n in (512, 7168):  # the gpu presets' widths, K2's d_model
            def run(dt=dt, n=n):
                x, w = meta(8192, n, dtype=_DT[dt]), meta(n, dtype=_DT[dt])
                _, rstd = rmsnorm_fwd(x, w, 1e-6)
                rmsnorm_bwd(x, x, w, rstd)
            yield f"{dt} N={n}", run


@config("flash_attention")
def _flash_configs():
    from kimi_mini.kernels.flash_attention import flash_attention_bwd, flash_attention_fwd

    dims = {"D64": (64, 64), "D128": (128, 128), "mla-k2-mini 96/64": (96, 64), "mla-K2 192/128": (192, 128)}
    for dt in ("bf16", "fp16", "fp32"):
        for label, (dqk, dv) in dims.items():
            def run(dt=dt, dqk=dqk, dv=dv):
                q, k, v = meta(4, 16, 4096, dqk, dtype=_DT[dt]), meta(4, 16, 4096, dqk, dtype=_DT[dt]), \
                    meta(4, 16, 4096, dv, dtype=_DT[dt])
                out, lse, _ = flash_attention_fwd(q, k, v, dqk**-0.5)
                flash_attention_bwd(q, k, v, out, lse, out, dqk**-0.5)
            yield f"{dt} {label} fwd+bwd", run
        def decode(dt=dt):  # t_q = 1 after a KV cache: T_Q specialises to the constant 1
            q, k = meta(8, 16, 1, 192, dtype=_DT[dt]), meta(8, 16, 8192, 192, dtype=_DT[dt])
            flash_attention_fwd(q, k, meta(8, 16, 8192, 128, dtype=_DT[dt]), 192**-0.5)
        yield f"{dt} decode t_q=1 192/128", decode


@config("moba")
def _moba_configs():
    from kimi_mini.kernels.moba import moba_bwd, moba_fwd, schedule_for

    for dt in ("bf16", "fp16", "fp32"):
        for bs in (64, 512):
            for d in (64, 128):
                def run(dt=dt, bs=bs, d=d):
                    T = 32768
                    q = meta(1, 8, T, d, dtype=_DT[dt])
                    sel = meta(8, T, 2, dtype=torch.int32)  # top-3: two history slots
                    sched = schedule_for(q, sel, bs)  # the key-block schedule, built on meta tensors
                    o, lse = moba_fwd(q, q, q, sched)
                    moba_bwd(o, q, q, q, o, lse, sched)
                yield f"{dt} block {bs} D{d} fwd+bwd", run


@config("moe")
def _moe_configs():
    from kimi_mini.kernels.moe import (
        ROWS_PAIR,
        ROWS_SORTED,
        ROWS_TOKEN,
        ExpertTiles,
        grouped_gemm,
        grouped_gemm_dw,
        max_tiles,
        swiglu_gemm,
    )

    sizes = {"01 gpu d384 h192 E64 k4": (8192, 384, 192, 64, 4),
             "k2-mini gpu d512 h128 E96 k2": (16384, 512, 128, 96, 2),
             "K2 d7168 h2048 E384 k8": (4096, 7168, 2048, 384, 8)}
    for dt in ("bf16", "fp32"):
        for label, (N, d, h, E, k) in sizes.items():
            def run(dt=dt, N=N, d=d, h=h, E=E, k=k):
                bm = 64
                n_tiles = max_tiles(N * k, E, bm)
                i32 = torch.int32
                plan = ExpertTiles(meta(n_tiles * bm, dtype=i32), meta(n_tiles, dtype=i32), meta(E, dtype=i32),
                                   meta(E, dtype=i32), N, k, E, bm)
                x, w1, w2 = meta(N, d, dtype=_DT[dt]), meta(E, d, h, dtype=_DT[dt]), meta(E, h, d, dtype=_DT[dt])
                rw = meta(N * k, dtype=_DT[dt])
                hid, g, u = swiglu_gemm(x, w1, w1, plan)  # fused gate/up projections, SwiGLU epilogue
                y = grouped_gemm(hid, w2, plan, ROWS_SORTED, ROWS_TOKEN, rw)  # weighted down, k pairs added
                grouped_gemm(y, w2.transpose(1, 2), plan, ROWS_TOKEN, ROWS_SORTED)  # backward d hidden
                w1t = w1.transpose(1, 2)
                grouped_gemm(g, w1t, plan, ROWS_SORTED, ROWS_TOKEN, x2=u, w2=w1t)  # backward dX: dg W1ᵀ + du W3ᵀ
                grouped_gemm(y, w2.transpose(1, 2), plan, ROWS_TOKEN, ROWS_PAIR)  # the pair layout too
                grouped_gemm_dw(x, g, plan, ROWS_TOKEN, ROWS_SORTED)  # backward dW1 / dW3
                grouped_gemm_dw(hid, y, plan, ROWS_SORTED, ROWS_TOKEN, rw)  # backward dW2
            yield f"{dt} {label}", run


@config("newton_schulz")
def _ns_configs():
    from kimi_mini.kernels.newton_schulz import newton_schulz_step_triton

    for dt in ("bf16", "fp32"):
        for m in (1024, 4096):  # block 64 (m ≤ 1024) and 128
            def run(dt=dt, m=m):  # X·Xᵀ, b·A + c·A·A, a·X + B·X
                newton_schulz_step_triton(meta(2, m, 2 * m, dtype=_DT[dt]), (3.4445, -4.775, 2.0315))
            yield f"{dt} m={m}", run


@config("moments")
def _moments_configs():
    from kimi_mini.kernels.moments import moments_bwd, moments_fwd

    for dt in ("bf16", "fp32"):
        def run(dt=dt):  # CMD's central moments of a batch of hidden features, K = 5
            x = meta(8192, 512, dtype=_DT[dt])
            mean, s = moments_fwd(x, 5)
            moments_bwd(meta(5, 512, dtype=torch.float32), x, mean, s)
        yield f"{dt} N=8192 D=512 K=5", run


@config("fusion")
def _fusion_configs():
    from kimi_mini.kernels.fusion import polynomial_fusion_bwd, polynomial_fusion_fwd

    for dt in ("bf16", "fp32"):
        for P in (2, 4):  # the order is a constexpr: the products are unrolled
            def run(dt=dt, P=P):
                z, w = meta(65536, 129, dtype=_DT[dt]), meta(P, 8, 129, 64, dtype=_DT[dt])
                y = polynomial_fusion_fwd(z, w)
                polynomial_fusion_bwd(y, z, w)
            yield f"{dt} P={P} R=8 D=129 K=64", run


@config("logprob")
def _logprob_configs():
    from kimi_mini.kernels.logprob import logprob_bwd, logprob_fwd

    for dt in ("bf16", "fp32"):
        for V in (256, 163_840):  # the byte vocabulary; K2's
            def run(dt=dt, V=V):
                x, t = meta(16384, V, dtype=_DT[dt]), meta(16384, dtype=torch.int64)
                logp, lse = logprob_fwd(x, t)
                logprob_bwd(logp, x, t, lse)
            yield f"{dt} V={V}", run


def compile_all(names: list[str] | None = None, archs: tuple[str, ...] = ("sm_90", "sm_80"),
                sample: int = 1) -> tuple[list[Compiled], list[str]]:
    """Compile every configuration of the named entries (all by default) for each arch; with
    ``sample`` = s > 1 only every s-th configuration per (entry, arch), offset by the arch so that each
    configuration is compiled for one of the archs at least (s ≤ number of archs). Returns the records
    and the failures (compile errors, grid or resource limits), one line each."""
    records: list[Compiled] = []
    failures: list[str] = []
    with tempfile.TemporaryDirectory() as cache:
        os.environ["TRITON_CACHE_DIR"] = cache  # a cold cache: every kernel goes through ptxas (its log)
        for name in names or list(CONFIGS):
            if name not in CONFIGS:
                importlib.import_module(name)  # a module that registers its own entry
            for a, arch in enumerate(archs):
                for i, (label, thunk) in enumerate(CONFIGS[name]()):
                    if (i + a) % sample:
                        continue
                    try:
                        with compile_only(arch, records, lambda label=label: label):
                            thunk()
                    except Exception as e:  # noqa: BLE001 — reported, the run fails
                        lines = str(e).strip().splitlines() or [""]
                        why = lines[0] if len(lines) == 1 else f"{lines[0]} … {lines[-1].strip()}"
                        failures.append(f"{name} [{label}] {arch}: {type(e).__name__}: {why}")
    for r in records:
        failures += [f"{r.kernel} [{r.config}] {r.arch}: {p}" for p in r.problems()]
    return records, failures


def compile_t4() -> tuple[list[Compiled], list[str]]:
    """Compile T4_CASES for sm_75 (a cold cache, as :func:`compile_all`); the records and the failures."""
    records: list[Compiled] = []
    failures: list[str] = []
    with tempfile.TemporaryDirectory() as cache:
        os.environ["TRITON_CACHE_DIR"] = cache
        for name, labels in T4_CASES.items():
            for label, thunk in CONFIGS[name]():
                if label not in labels:
                    continue
                try:
                    with compile_only("sm_75", records, lambda label=label: label):
                        thunk()
                except Exception as e:  # noqa: BLE001 — reported
                    lines = str(e).strip().splitlines() or [""]
                    failures.append(f"{name} [{label}] sm_75: {type(e).__name__}: {lines[0]}")
    for r in records:
        failures += [f"{r.kernel} [{r.config}] {r.arch}: {p}" for p in r.problems()]
    return records, failures


def format_records(records: list[Compiled]) -> str:
    head = f"{'kernel':<34} {'config':<32} {'arch':<6} {'shared B':>9} {'regs':>5} {'spills':>6} {'warps':>5}"
    lines = [head, "-" * len(head)]
    seen = set()
    for r in records:
        key = (r.hash, r.config, r.arch)  # one line per distinct compiled kernel
        if key in seen:
            continue
        seen.add(key)
        lines.append(f"{r.kernel:<34} {r.config:<32} {r.arch:<6} {r.shared:>9,} {r.registers!s:>5} "
                     f"{r.spills!s:>6} {r.num_warps:>5}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m kimi_mini.kernels.aot", description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="*", help="entries of CONFIGS (default: all), or modules registering one")
    p.add_argument("--arch", nargs="*", default=list(ARCHS), choices=list(LIMITS))
    p.add_argument("--t4", action="store_true", help="only T4_CASES, for sm_75 (a free Colab T4)")
    p.add_argument("--sample", type=int, default=1, help="compile every s-th configuration per arch")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    if args.t4:
        records, failures = compile_t4()
    else:
        records, failures = compile_all(args.only, tuple(args.arch), args.sample)
    print(format_records(records))
    print(f"\n{len(records)} kernel compilations in {time.perf_counter() - t0:.0f} s")
    for f in failures:
        print("FAIL", f)
    return 1 if failures else 0


if __name__ == "__main__":  # run the imported module's main: entries register into *its* CONFIGS
    from kimi_mini.kernels import aot

    sys.exit(aot.main())

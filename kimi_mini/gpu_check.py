"""``make gpu-check``: everything a GPU can tell us that a CPU cannot, in one go, into one report.

On one H100/H200 it runs, each step in a subprocess under its own time limit:

1. ``pytest -m gpu`` — the bf16 kernels against their fp32 references (compiled, not interpreted);
2. every notebook at ``PRESET = "gpu"`` (``kimi-mini reproduce --preset gpu --only NN``), each within a
   per-notebook limit — the ``gpu`` presets are sized so that the whole check fits in ten minutes;
3. the GPU rows of ``kimi-mini bench``: MoBA Triton vs SDPA up to 128K tokens (bf16), MoE Triton vs
   torch, Newton–Schulz kernel vs torch at 1024–8192 (``muon``), the flash kernel vs SDPA (``qk_clip``);

and writes ``runs/gpu/GPU_REPORT.md`` (step, verdict, seconds; the pytest summary; one row per notebook;
the benchmark tables). Without a CUDA GPU it stops at once with exit status 2 and one line saying so —
it never reports GPU numbers it did not measure. Run: ``python -m kimi_mini.gpu_check [--notebook-limit S]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH_TOPICS = ("moba", "moe", "muon", "qk_clip")


def _run(cmd: list[str], limit: float, env: dict | None = None) -> tuple[str, float, str]:
    """(verdict, seconds, output tail) of ``cmd`` run under a wall-clock ``limit``."""
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=limit,
                              env=dict(os.environ, **(env or {})))
        verdict = "pass" if proc.returncode == 0 else f"FAIL (exit {proc.returncode})"
        out = proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as e:
        verdict = f"FAIL (over the {limit:.0f} s limit)"
        out = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
    return verdict, time.perf_counter() - t0, out[-4000:]


def _machine() -> str:
    import torch
    import triton

    p = torch.cuda.get_device_properties(0)
    return (f"{p.name}, {p.total_memory / 2**30:.0f} GiB, sm_{p.major}{p.minor}, {p.multi_processor_count} SMs; "
            f"torch {torch.__version__}, CUDA {torch.version.cuda}, triton {triton.__version__}")


def _bench_section(topic: str, out: str) -> list[str]:
    from kimi_mini.bench import format_table

    for line in reversed(out.splitlines()):
        if line.startswith("{"):
            try:
                rows = json.loads(line)["rows"]
            except (ValueError, KeyError):
                break
            return [f"### bench {topic}", "", "```", format_table(rows), "```", ""]
    return [f"### bench {topic}", "", "```", out[-2000:], "```", ""]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m kimi_mini.gpu_check", description=__doc__.splitlines()[0])
    p.add_argument("--notebook-limit", type=float, default=45.0, help="seconds per notebook (default 45)")
    p.add_argument("--pytest-limit", type=float, default=120.0, help="seconds for pytest -m gpu (default 120)")
    p.add_argument("--bench-limit", type=float, default=60.0, help="seconds per benchmark topic (default 60)")
    p.add_argument("--only", help="notebooks, as for kimi-mini reproduce --only (default: all)")
    p.add_argument("--out", default=str(ROOT / "runs" / "gpu"), help="report folder (default runs/gpu)")
    args = p.parse_args(argv)

    import torch

    if not torch.cuda.is_available():
        print("gpu-check: needs a CUDA GPU and torch sees none (torch.cuda.is_available() is False); nothing was "
              "run. On a CPU, `make test` compiles every kernel for sm_80/sm_90 (tests/test_kernels_compile.py).",
              file=sys.stderr)
        return 2
    from kimi_mini.notebooks import list_notebooks

    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    py, t_start = sys.executable, time.perf_counter()
    steps: list[tuple[str, str, float]] = []
    body: list[str] = []

    verdict, secs, out = _run([py, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider"],
                              args.pytest_limit)
    steps.append(("pytest -m gpu", verdict, secs))
    body += ["## pytest -m gpu", "", "```", "\n".join(out.splitlines()[-25:]), "```", ""]

    notebooks = [nb.stem for nb in list_notebooks()]
    if args.only:
        keys = {k.strip() for k in args.only.split(",")}
        notebooks = [n for n in notebooks if n in keys or n[:2] in keys]
    rows = ["| notebook | verdict | seconds | limit |", "|---|---|---:|---:|"]
    failed_tail = []
    for name in notebooks:
        verdict, secs, out = _run([py, "-m", "kimi_mini.cli", "reproduce", "--preset", "gpu", "--only", name[:2],
                                   "--out", str(out_dir / "notebooks" / name)], args.notebook_limit)
        steps.append((f"notebook {name}", verdict, secs))
        rows.append(f"| {name} | {verdict} | {secs:.0f} | {args.notebook_limit:.0f} |")
        if verdict != "pass":
            failed_tail += [f"### {name}", "", "```", "\n".join(out.splitlines()[-15:]), "```", ""]
    body += ["## Notebooks at PRESET = \"gpu\"", "", *rows, "", *failed_tail]

    body += ["## Benchmarks (GPU rows)", ""]
    for topic in BENCH_TOPICS:
        verdict, secs, out = _run([py, "-m", "kimi_mini.cli", "bench", topic, "--json"], args.bench_limit)
        steps.append((f"bench {topic}", verdict, secs))
        body += _bench_section(topic, out)

    total = time.perf_counter() - t_start
    ok = all(v == "pass" for _, v, _ in steps)
    head = ["# GPU check", "", f"Machine: {_machine()}", "",
            f"**{'PASS' if ok else 'FAIL'}** — {sum(v == 'pass' for _, v, _ in steps)}/{len(steps)} steps passed "
            f"in {total / 60:.1f} min (budget: 10 min).", "",
            "| step | verdict | seconds |", "|---|---|---:|", *[f"| {s} | {v} | {t:.0f} |" for s, v, t in steps], ""]
    report = out_dir / "GPU_REPORT.md"
    report.write_text("\n".join(head + body) + "\n")
    print(f"gpu-check: {'PASS' if ok else 'FAIL'} in {total:.0f} s; report: {report}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""``make gpu-check``: everything a GPU can tell us that a CPU cannot, in one command, into one report.

Made for a bare GPU machine — the ones lent to this project have Python 3.12 with their own torch 2.11
(CUDA 13) and triton 3.6, and no network — and for one H100/H200 in at most eight minutes:

0. (``--wheels DIR``) install what the machine lacks — ``requirements-gpu.txt``, each package named and
   pinned, from the wheel folder ``make gpu-wheels`` builds on a networked machine — with ``--no-index
   --no-deps``, then kimi-mini itself (editable, ``--no-deps``): the machine's torch and triton are never
   replaced (pyproject.toml's ranges admit them);
1. the environment: each runtime dependency's installed version against pyproject.toml's range, ``pip check``;
2. the kernel tests (``tests/test_*kernel*.py``) on the GPU — compiled, not interpreted, bf16 included;
3. the GPU rows of ``kimi-mini bench``: MoBA Triton vs SDPA at 4K–128K, fwd+bwd and memory (``moba``), MoE
   vs dense (``moe``), Newton–Schulz kernel vs torch at 1024²–8192² (``muon``), fused log-prob fwd+bwd
   and memory (``logprob``), the flash kernel vs SDPA (``qk_clip``);
4. the notebooks at ``PRESET = "gpu"``, in course order, each within a per-notebook limit, while the
   budget lasts — the ones that do not fit are listed as not run;

and writes ``runs/gpu/GPU_REPORT.md`` (step, verdict, seconds; the pytest summary; one row per notebook;
the benchmark tables). Each step runs in a subprocess under its own limit.
Without a CUDA GPU it stops at once with exit status 2 and one line saying so — it never reports GPU
numbers it did not measure; ``--dry-run`` prints the plan (and checks the wheel folder) on any machine.

Run on the GPU machine, from the checkout (before the install ``kimi_mini`` cannot be imported, so the
file is run as a script): ``python3 kimi_mini/gpu_check.py --wheels wheels`` (= ``make gpu-check``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REQUIREMENTS = ROOT / "requirements-gpu.txt"
BENCH_TOPICS = ("moba", "moe", "muon", "logprob", "qk_clip")
WHEELS_LIMIT = 60 * 2**20  # bytes: the folder travels with the checkout to a machine without network
BUDGET = 480.0  # seconds for the whole check, the install included
KERNEL_TESTS = tuple(sorted(f"tests/{p.name}" for p in (ROOT / "tests").glob("test_*kernel*.py")
                            if p.name != "test_kernels_compile.py"))

# The Python packages of the GPU machines' image ('cuda'), as listed by this workplace on 2026-11-17 (the
# device tool's KINDS.md). requirements-gpu.txt is the runtime closure minus these; a test keeps it so.
GPU_IMAGE_PACKAGES = frozenset("""
    absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build
    certifi charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings
    cuda-core cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils
    execnet filelock flatbuffers flax fonttools formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet
    httpcore httpx huggingface-hub humanize hypothesis idna imageio iniconfig interface-meta jax
    jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib kiwisolver lazy-loader lightning
    lightning-utilities linear-operator lineax llvmlite lxml markdown markdown-it-py markupsafe matplotlib
    mdurl meson ml-dtypes mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind narwhals
    networkx ninja numba numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc
    nvidia-cuda-runtime nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver
    nvidia-cusparse nvidia-cusparselt-cu13 nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13
    nvidia-nvtx onnx onnx-ir onnxruntime onnxscript opencv-python-headless optax opt-einsum opt-einsum-fx
    optimistix orbax-checkpoint packaging pandas pathspec patsy peft pillow pip pluggy portalocker
    prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments pyparsing pyproject-hooks
    pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist python-dateutil
    pytorch-lightning pyyaml regex requests rich sacrebleu safetensors scikit-build-core scikit-image
    scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools shellingham simplejson six
    sortedcontainers statsmodels sympy tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl
    tifffile tiktoken timm tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics
    torchvision tqdm transformers treescope triton typer typing-extensions typing-inspect urllib3 uvloop
    wadler-lindig werkzeug wheel wrapt xarray xxhash yarl zipp
""".split())


def canonical(name: str) -> str:
    """A distribution name as pip compares them (PEP 503): lower case, runs of ``-_.`` as one ``-``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def gpu_requirements(path: Path = REQUIREMENTS) -> dict[str, str]:
    """``{canonical name: version}`` of ``requirements-gpu.txt`` (every line ``name==version``)."""
    reqs = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!-]+)", line)
        if not m:
            raise ValueError(f"{path.name}: expected 'name==version', got {line!r}")
        reqs[canonical(m[1])] = m[2]
    return reqs


def _cp312_compatible(tags: str) -> bool:
    """Whether a wheel's ``python-abi-platform`` tags install on CPython 3.12, Linux x86_64."""
    pys, abis, plats = tags.split("-")
    abi3 = "abi3" in abis.split(".")
    py_ok = any(t in ("py3", "py312", "cp312") or (abi3 and t.startswith("cp3") and int(t[3:]) <= 12)
                for t in pys.split("."))
    abi_ok = any(a in ("none", "abi3", "cp312") for a in abis.split("."))
    plat_ok = any(p == "any" or (p.startswith("manylinux") and p.endswith("x86_64")) for p in plats.split("."))
    return py_ok and abi_ok and plat_ok


def wheel_problems(wheels: Path, reqs: dict[str, str] | None = None) -> list[str]:
    """What is wrong with the wheel folder for ``reqs`` (default: requirements-gpu.txt): a requirement
    without a cp312/Linux x86_64 wheel of exactly its version, a wheel nobody asked for (two versions of
    one package stop pip's install), a folder over 60 MiB. Empty when it will do."""
    reqs = gpu_requirements() if reqs is None else reqs
    if not wheels.is_dir():
        return [f"no wheel folder {wheels} (build it with `make gpu-wheels` on a machine with network)"]
    problems, found = [], {}
    files = sorted(wheels.glob("*.whl"))
    for f in files:
        parts = f.name[:-4].split("-")
        name, version, tags = canonical(parts[0]), parts[1], "-".join(parts[-3:])
        if reqs.get(name) != version:
            problems.append(f"{f.name}: not in requirements-gpu.txt at this version")
        elif not _cp312_compatible(tags):
            problems.append(f"{f.name}: not installable on CPython 3.12 / Linux x86_64")
        else:
            found[name] = f
    problems += [f"{n}=={v}: no wheel in {wheels}" for n, v in reqs.items() if n not in found]
    size = sum(f.stat().st_size for f in files)
    if size > WHEELS_LIMIT:
        problems.append(f"{wheels}: {size / 2**20:.1f} MiB of wheels, over the {WHEELS_LIMIT / 2**20:.0f} MiB limit")
    return problems


def install_commands(py: str, wheels: Path, reqs: dict[str, str] | None = None) -> list[tuple[str, list[str]]]:
    """(label, command) of the offline install: the missing packages pinned, ``--no-index --no-deps`` (so
    nothing the machine has, torch and triton above all, is replaced); setuptools only if the machine's is
    older than the build needs; kimi-mini editable without dependencies; the ``python3`` Jupyter kernel."""
    reqs = gpu_requirements() if reqs is None else reqs
    pip = [py, "-m", "pip", "install", "--disable-pip-version-check", "-q", "--no-index", "--find-links",
           str(wheels), "--no-deps"]
    return [
        ("install the missing dependencies", pip + [f"{n}=={v}" for n, v in reqs.items() if n != "setuptools"]),
        ("setuptools >= 77 (kept if the machine's is new enough)", pip + ["setuptools>=77"]),
        ("install kimi-mini (editable, no dependencies)", pip + ["--no-build-isolation", "-e", str(ROOT)]),
        ("the python3 Jupyter kernel", [py, "-m", "ipykernel", "install", "--sys-prefix", "--name", "python3"]),
    ]


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


def _environment() -> list[str]:
    """Markdown: each runtime dependency's installed version beside pyproject.toml's range, judged by
    ``pip check`` (which reads kimi-mini's installed metadata); the tail of ``pip check`` (the image's own
    packages may disagree among themselves: shown, not judged)."""
    import importlib.metadata as md
    import tomllib

    proc = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True)
    check = (proc.stdout + proc.stderr).splitlines()
    ours = [line.lower() for line in check if canonical(line.split(" ", 1)[0]) == "kimi-mini"]
    rows = ["| dependency | range (pyproject.toml) | installed | in range (pip check) |", "|---|---|---|---|"]
    for spec in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]:
        name, rng = re.fullmatch(r"([A-Za-z0-9._-]+)(.*)", spec).groups()
        try:
            have = md.version(name)
        except md.PackageNotFoundError:
            have = "missing"
        bad = have == "missing" or any(re.search(rf"\b{re.escape(name.lower())}\b", line) for line in ours)
        rows.append(f"| {name} | {rng} | {have} | {'NO' if bad else 'yes'} |")
    return ["## Environment", "", *rows, "", "`pip check`:", "", "```", "\n".join(check[-15:]), "```", ""]


def plan(py: str, notebooks: list[str], args: argparse.Namespace) -> list[tuple[str, list[str], float]]:
    """(step, command, limit in seconds) of every step after the install, in order."""
    steps = [("kernel tests", [py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", str(args.workers),
                               *KERNEL_TESTS], args.pytest_limit)]
    steps += [(f"bench {t}", [py, "-m", "kimi_mini.cli", "bench", t, "--json"],
               args.bench_limit * (2 if t == "moba" else 1)) for t in BENCH_TOPICS]
    steps += [(f"notebook {n}", [py, "-m", "kimi_mini.cli", "reproduce", "--preset", "gpu", "--only", n[:2],
                                 "--out", str(Path(args.out) / "notebooks" / n)], args.notebook_limit)
              for n in notebooks]
    return steps


def _notebooks(only: str | None) -> list[str]:
    names = sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    if only:
        keys = {k.strip() for k in only.split(",")}
        names = [n for n in names if n in keys or n[:2] in keys]
    return names


def _install(args: argparse.Namespace, argv: list[str]) -> int:
    """Step 0 on the GPU machine, then the check itself in a fresh interpreter (which sees what was installed)."""
    wheels = Path(args.wheels)
    problems = wheel_problems(wheels)
    if problems:
        print("gpu-check: the wheel folder will not do:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    for label, cmd in install_commands(sys.executable, wheels):
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"gpu-check: {label} failed (exit {proc.returncode}):\n{(proc.stdout + proc.stderr)[-3000:]}",
                  file=sys.stderr)
            return 1
    secs = time.perf_counter() - t0
    rest, skip = [], False
    for a in argv:  # drop --wheels DIR / --wheels=DIR
        if skip:
            skip = False
        elif a == "--wheels":
            skip = True
        elif not a.startswith("--wheels="):
            rest.append(a)
    return subprocess.run([sys.executable, "-m", "kimi_mini.gpu_check", *rest, "--installed-in", f"{secs:.1f}"],
                          cwd=ROOT).returncode


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(prog="python -m kimi_mini.gpu_check", description=__doc__.splitlines()[0])
    p.add_argument("--wheels", help="install requirements-gpu.txt from this wheel folder (offline) and kimi-mini "
                                    "itself first (make gpu-check: wheels)")
    p.add_argument("--dry-run", action="store_true", help="print the plan (and check --wheels) on any machine")
    p.add_argument("--budget", type=float, default=BUDGET, help=f"seconds for everything (default {BUDGET:.0f})")
    p.add_argument("--notebook-limit", type=float, default=45.0, help="seconds per notebook (default 45)")
    p.add_argument("--pytest-limit", type=float, default=150.0, help="seconds for the kernel tests (default 150)")
    p.add_argument("--bench-limit", type=float, default=60.0,
                   help="seconds per benchmark topic, twice that for moba (default 60)")
    p.add_argument("--workers", type=int, default=4, help="pytest-xdist workers for the kernel tests (default 4)")
    p.add_argument("--only", help="notebooks, as for kimi-mini reproduce --only (default: all that fit)")
    p.add_argument("--out", default=str(ROOT / "runs" / "gpu"), help="report folder (default runs/gpu)")
    p.add_argument("--installed-in", type=float, default=0.0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    py, notebooks = sys.executable, _notebooks(args.only)

    if args.dry_run:
        problems = wheel_problems(Path(args.wheels)) if args.wheels else []
        if args.wheels:
            for label, cmd in install_commands(py, Path(args.wheels)):
                print(f"install | {label} | {' '.join(cmd)}")
        for step, cmd, limit in plan(py, notebooks, args):
            print(f"step | {step} | {limit:.0f} s | {' '.join(cmd)}")
        print(f"budget | {args.budget:.0f} s")
        for problem in problems:
            print(f"PROBLEM | {problem}")
        return 1 if problems else 0

    try:
        import torch
    except ImportError:
        torch = None
    if torch is None or not torch.cuda.is_available():
        print("gpu-check: needs a CUDA GPU and torch sees none (torch.cuda.is_available() is False); nothing was "
              "run. On a CPU, `make test` compiles every kernel for sm_80/sm_90 (tests/test_kernels_compile.py).",
              file=sys.stderr)
        return 2
    if args.wheels:
        return _install(args, argv)
    try:
        import kimi_mini.kernels  # noqa: F401  (installed: kernels/ is kimi_mini.kernels only once installed)
    except ImportError as e:
        print(f"gpu-check: kimi-mini is not installed in {sys.executable} ({e}); run with --wheels DIR (a folder "
              f"`make gpu-wheels` built) or install it first (pip install --no-deps -e .)", file=sys.stderr)
        return 2

    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter() - args.installed_in
    steps: list[tuple[str, str, float]] = []
    if args.installed_in:
        steps.append(("install (requirements-gpu.txt, kimi-mini)", "pass", args.installed_in))
    body: list[str] = _environment()
    rows = ["| notebook | verdict | seconds | limit |", "|---|---|---:|---:|"]
    failed_tail: list[str] = []
    benches: list[str] = ["## Benchmarks (GPU rows)", ""]
    for step, cmd, limit in plan(py, notebooks, args):
        left = args.budget - (time.perf_counter() - t_start)
        if left < limit:  # a step that could not have its whole limit is not started
            steps.append((step, "not run (the budget was spent)", 0.0))
            if step.startswith("notebook"):
                rows.append(f"| {step.split()[1]} | not run (budget) | – | {limit:.0f} |")
            continue
        verdict, secs, out = _run(cmd, limit)
        steps.append((step, verdict, secs))
        if step == "kernel tests":
            body += ["## Kernel tests on the GPU", "", "```", "\n".join(out.splitlines()[-25:]), "```", ""]
        elif step.startswith("bench"):
            benches += _bench_section(step.split()[1], out)
        else:
            name = step.split()[1]
            rows.append(f"| {name} | {verdict} | {secs:.0f} | {limit:.0f} |")
            if verdict != "pass":
                failed_tail += [f"### {name}", "", "```", "\n".join(out.splitlines()[-15:]), "```", ""]
    body += benches + ["## Notebooks at PRESET = \"gpu\"", "", *rows, "", *failed_tail]

    total = time.perf_counter() - t_start
    ran = [s for s in steps if not s[1].startswith("not run")]
    ok = all(v == "pass" for _, v, _ in ran)
    head = ["# GPU check", "", f"Machine: {_machine()}", "",
            f"**{'PASS' if ok else 'FAIL'}** — {sum(v == 'pass' for _, v, _ in ran)}/{len(ran)} steps passed, "
            f"{len(steps) - len(ran)} not run, in {total / 60:.1f} min (budget: {args.budget / 60:.0f} min).", "",
            "| step | verdict | seconds |", "|---|---|---:|", *[f"| {s} | {v} | {t:.0f} |" for s, v, t in steps], ""]
    report = out_dir / "GPU_REPORT.md"
    report.write_text("\n".join(head + body) + "\n")
    print(f"gpu-check: {'PASS' if ok else 'FAIL'} in {total:.0f} s; report: {report}")
    return 0 if ok else 1


if __name__ == "__main__":
    if not __package__:  # run as a script: the checkout's root, not kimi_mini/, on the path
        sys.path[0] = str(ROOT)
    sys.exit(main())
